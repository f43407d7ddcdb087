# -*- test-case-name: dmq.test.test_jsonlog -*-
"""
L{dmq.jsonlog}: JSON log lines for C{twistd --logger}.
"""

from __future__ import annotations

import io
import json
import sys

from twisted.logger import Logger, LogLevel, eventFromJSON
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from dmq.jsonlog import observer


class ObserverTests(SynchronousTestCase):
    """
    L{observer} writes one JSON object a line.
    """

    def test_lines(self) -> None:
        """
        Each event is one line of JSON: its format, fields, level and text.
        """
        out = io.StringIO()
        log = Logger(namespace="dmq.node", observer=observer(out))
        log.info("node {node} is now {status}", node="sip:127.0.0.12:5060", status="active")
        log.warn("bad input from {peer}", peer="127.0.0.9")
        lines = out.getvalue().splitlines()
        self.assertEqual(len(lines), 2)
        first = json.loads(lines[0])
        self.assertEqual(first["log_format"], "node {node} is now {status}")
        self.assertEqual(first["node"], "sip:127.0.0.12:5060")
        self.assertEqual(first["log_text"], "node sip:127.0.0.12:5060 is now active")
        self.assertEqual(first["log_namespace"], "dmq.node")
        self.assertIs(eventFromJSON(lines[1])["log_level"], LogLevel.warn)

    def test_failure(self) -> None:
        """
        An error's traceback is kept in the one line, readable back.
        """
        out = io.StringIO()
        log = Logger(observer=observer(out))
        try:
            1 / 0
        except ZeroDivisionError:
            log.failure("a bug", Failure())
        [line] = out.getvalue().splitlines()
        event = eventFromJSON(line)
        self.assertTrue(event["log_failure"].check(ZeroDivisionError))

    def test_stdout(self) -> None:
        """
        By default, the standard output as it is when the observer is made.
        """
        out = io.StringIO()
        self.patch(sys, "stdout", out)
        made = observer()
        self.patch(sys, "stdout", io.StringIO())
        made({"log_format": "hello", "log_level": LogLevel.info, "log_time": 0.0})
        self.assertEqual(json.loads(out.getvalue())["log_text"], "hello")
