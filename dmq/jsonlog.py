# -*- test-case-name: dmq.test.test_jsonlog -*-
"""
JSON logs for C{twistd}: C{twistd -n --logger=dmq.jsonlog.observer dmq ...}
writes each log event as one line of JSON on standard output (for journald,
or any collector that reads lines), instead of text.

An event is Twisted's own JSON form of it (L{twisted.logger.eventAsJSON}):
C{log_format} and its keyword fields (C{node}, C{status}, ...),
C{log_level}, C{log_namespace}, C{log_time}, and C{log_failure} for an
error; L{twisted.logger.eventFromJSON} reads it back, and C{log_text} holds
the formatted message.
"""

from __future__ import annotations

import sys
from typing import IO, Any, Dict, Optional

from twisted.logger import FileLogObserver, ILogObserver, eventAsJSON, formatEvent

__all__ = ["observer"]


def _line(event: Dict[str, Any]) -> str:
    """
    An event as one line of JSON, with its formatted text as C{log_text}.
    """
    return eventAsJSON(dict(event, log_text=formatEvent(event))) + "\n"


def observer(outFile: Optional[IO[str]] = None) -> ILogObserver:
    """
    The observer C{twistd --logger} calls for: one JSON object a line.

    @param outFile: where to write; by default the standard output as it
        is when twistd asks for the observer (before it redirects standard
        output to the log, which it does only without C{-n}).
    """
    return FileLogObserver(outFile if outFile is not None else sys.stdout, _line)
