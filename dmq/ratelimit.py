# -*- test-case-name: dmq.test.test_ratelimit -*-
"""
Warnings about bad input, rate-limited per cause, so that a stranger who
sends the same bad thing a million times gets it logged once a minute, with
a count of the ones left out, and not a million times.
"""

from __future__ import annotations

from collections import Counter
from typing import Dict, Optional

from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure

__all__ = ["RateLimitedWarnings", "loggable"]


def loggable(value: object) -> object:
    """
    C{value}, with any lone surrogate in it (which JSON's C{"\\ud800"} can
    carry in) written as an escape: a UTF-8 log file cannot hold one, and
    Twisted drops the event and disables the observer that tried.
    """
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return value.encode("utf-8", "backslashreplace").decode("utf-8")
    return value


def _loggable(fields: Dict[str, object]) -> Dict[str, object]:
    return {name: loggable(value) for name, value in fields.items()}


class RateLimitedWarnings:
    """
    Log at most one event per cause per C{interval} seconds, counting the
    ones left out and reporting that count with the next one logged.

    Causes are names fixed in the code (C{"badNodeLine"}, C{"send"}), never
    text from the input, so the memory kept per cause stays bounded.
    """

    def __init__(self, clock: IReactorTime, log: Logger, interval: float = 60.0) -> None:
        """
        @param log: the L{Logger} the events go to, so that they carry the
            namespace of the code that logs them.
        """
        self._clock = clock
        self._target = log
        self._interval = interval
        self._last: Dict[str, float] = {}
        self._suppressed: Counter[str] = Counter()

    def _due(self, cause: str) -> Optional[int]:
        """
        Whether an event of C{cause} may be logged now.

        @return: C{None} when not, else how many were left out since the
            last one logged.
        """
        now = self._clock.seconds()
        last = self._last.get(cause)
        if last is not None and now - last < self._interval:
            self._suppressed[cause] += 1
            return None
        self._last[cause] = now
        return self._suppressed.pop(cause, 0)

    def warn(self, cause: str, format: str, **fields: object) -> None:
        """
        Log a warning of C{cause}, unless one was logged less than
        C{interval} seconds ago.
        """
        suppressed = self._due(cause)
        if suppressed is None:
            return
        if suppressed:
            format += " ({suppressed} more like it not logged)"
        self._target.warn(format, cause=cause, suppressed=suppressed, **_loggable(fields))

    def failure(
        self, cause: str, format: str, failure: Optional[Failure] = None, **fields: object
    ) -> None:
        """
        Log C{failure} (by default, the exception being handled), with its
        traceback, as L{Logger.failure} does: for a bug, not for bad input,
        but still at most once per C{interval} for one C{cause}.
        """
        suppressed = self._due(cause)
        if suppressed is None:
            return
        if suppressed:
            format += " ({suppressed} more like it not logged)"
        # mypy takes **fields for failure()'s level argument too; the
        # callers pass log fields only.
        self._target.failure(format, failure, cause=cause, suppressed=suppressed, **_loggable(fields))  # type: ignore[arg-type]
