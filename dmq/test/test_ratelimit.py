# -*- test-case-name: dmq.test.test_ratelimit -*-
"""
Tests for L{dmq.ratelimit}.
"""

from __future__ import annotations

from twisted.internet.task import Clock
from twisted.logger import Logger, capturedLogs
from twisted.trial.unittest import SynchronousTestCase

from dmq.ratelimit import RateLimitedWarnings, loggable


class RateLimitedWarningsTests(SynchronousTestCase):
    """
    Tests for L{RateLimitedWarnings}.
    """

    def setUp(self) -> None:
        self.clock = Clock()
        self.log = Logger(namespace="dmq.test.ratelimit")
        self.warnings = RateLimitedWarnings(self.clock, self.log, interval=60.0)

    def test_oncePerCausePerInterval(self) -> None:
        """
        One warning per cause per interval; the next one says how many were
        left out, and goes to the given logger with its fields.
        """
        with capturedLogs() as events:
            for _ in range(5):
                self.warnings.warn("a", "bad {thing}", thing="x")
                self.warnings.warn("b", "worse {thing}", thing="y")
            self.clock.advance(59)
            self.warnings.warn("a", "bad {thing}", thing="x")
            self.clock.advance(1)
            self.warnings.warn("a", "bad {thing}", thing="z")
        self.assertEqual(
            [(e["cause"], e["thing"], e["suppressed"]) for e in events],
            [("a", "x", 0), ("b", "y", 0), ("a", "z", 5)],
        )
        self.assertEqual({e["log_namespace"] for e in events}, {"dmq.test.ratelimit"})
        self.assertEqual({e["log_level"].name for e in events}, {"warn"})
        self.assertIn("more like it not logged", events[2]["log_format"])
        self.assertFalse(any("log_failure" in e for e in events))

    def test_failure(self) -> None:
        """
        L{RateLimitedWarnings.failure} logs the exception being handled,
        with its traceback, at most once per interval for one cause.
        """
        for _ in range(3):
            try:
                raise RuntimeError("a bug")
            except RuntimeError:
                self.warnings.failure("tick", "A tick failed")
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)
        self.clock.advance(60)
        try:
            raise RuntimeError("a bug")
        except RuntimeError:
            with capturedLogs() as events:
                self.warnings.failure("tick", "A tick failed")
        self.flushLoggedErrors(RuntimeError)
        [event] = events
        self.assertEqual(event["suppressed"], 2)
        self.assertEqual(event["log_failure"].value.args, ("a bug",))


class LoggableTests(SynchronousTestCase):
    """
    Tests for L{loggable}: what input puts in a log event can be written to
    a UTF-8 log file.
    """

    def test_loneSurrogateEscaped(self) -> None:
        """
        A lone surrogate becomes its escape; the rest of the text stays.
        """
        self.assertEqual(loggable("m\ud800é"), "m\\ud800é")

    def test_othersUnchanged(self) -> None:
        """
        Text that UTF-8 can hold, and values that are not text, are given back
        as they are.
        """
        self.assertEqual(loggable("é ok"), "é ok")
        self.assertEqual(loggable(3), 3)
        self.assertIsNone(loggable(None))

    def test_warningFieldsLoggable(self) -> None:
        """
        A rate-limited warning's fields go out loggable, so a UTF-8 file
        observer writes the event instead of dropping it.
        """
        import io

        from twisted.logger import eventAsText

        warnings = RateLimitedWarnings(Clock(), Logger(namespace="dmq.test.ratelimit"))
        with capturedLogs() as events:
            warnings.warn("bad", "method {method}", method="\ud800x")
        text = eventAsText(events[0], includeTimestamp=False)
        io.TextIOWrapper(io.BytesIO(), encoding="utf-8").write(text)
        self.assertIn("\\ud800x", text)
