# -*- test-case-name: dmq.test.test_htable_outbox -*-
"""
L{SyncDumps}: the sync dumps a node sends when asked (Kamailio's
C{ht_dmq_send_sync}), paced and bounded, so that one small sync request
cannot make a node send its whole tables at once, again and again.

  - A dump's bodies are made one at a time, when sent, and at most
    C{window} of them are unanswered at once; the reactor runs between
    two bodies.
  - A dump stops after C{maxBytes} octets of bodies (counted, and
    logged).
  - At most C{maxDumps} dumps run at once, and one target (a node, or
    every active node for a stranger's request) gets at most one dump at
    a time and one every C{interval} seconds: a request while its dump
    runs, or sooner than that after it, is counted and answered without a
    new dump then; one more dump follows when the time has come, so that
    a node that restarted and asked again still gets the tables.

Kamailio asks for a sync without waiting for the answer (its C{htable}
module sends the request with no reply callback), so answering before the
last body is sent changes nothing for it; the first body is still handed to
the transport before the answer, as before.
"""

from __future__ import annotations

from collections import Counter
from typing import Callable, Dict, Iterator, Optional, Set

import attr
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger

from dmq.node import Node
from dmq.peers.htable.outbox import Outbox
from dmq.ratelimit import RateLimitedWarnings

__all__ = ["SyncDumps", "MAX_DUMP_BYTES", "SYNC_INTERVAL", "SYNC_WINDOW", "MAX_DUMPS"]

MAX_DUMP_BYTES = 64 * 1024 * 1024
"""
The default cap on the octets of one dump's bodies.
"""

SYNC_INTERVAL = 10.0
"""
The default seconds between the end of one dump to a target and the start
of the next.
"""

SYNC_WINDOW = 4
"""
The default number of a dump's bodies sent and not yet answered.
"""

MAX_DUMPS = 2
"""
The default number of dumps sent at once.
"""

# What a dump is for: a node, or None for every active node.
Target = Optional[Node]


@attr.define(eq=False)
class _Dump:
    target: Target
    bodies: Iterator[bytes]
    sent: int = 0
    inFlight: int = 0
    exhausted: bool = False
    step: Optional[IDelayedCall] = None


class SyncDumps:
    """
    The dumps of one peer's replicated tables, sent through its L{Outbox}.

    @ivar statistics: counters: C{syncDumps} (started), C{syncCoalesced}
        (requests answered without a new dump then), C{syncDumpsTruncated}.
    """

    _log = Logger()

    def __init__(
        self,
        clock: IReactorTime,
        outbox: Outbox,
        bodies: Callable[[Optional[Set[str]]], Iterator[bytes]],
        maxBytes: int = MAX_DUMP_BYTES,
        interval: float = SYNC_INTERVAL,
        window: int = SYNC_WINDOW,
        maxDumps: int = MAX_DUMPS,
        statistics: Optional[Counter[str]] = None,
    ) -> None:
        """
        @param bodies: makes the bodies of a dump of the given tables (all
            the replicated ones for C{None}), one at a time.
        """
        self._clock = clock
        self._outbox = outbox
        self._bodies = bodies
        self._maxBytes = maxBytes
        self._interval = interval
        self._window = window
        self._maxDumps = maxDumps
        self.statistics: Counter[str] = statistics if statistics is not None else Counter()
        self._warnings = RateLimitedWarnings(clock, self._log)
        self._running: Dict[Target, _Dump] = {}
        # Targets owed a dump, with the tables asked for (None: all).
        self._owed: Dict[Target, Optional[Set[str]]] = {}
        self._lastDone: Dict[Target, float] = {}
        self._timer: Optional[IDelayedCall] = None

    @property
    def running(self) -> int:
        """
        How many dumps are being sent.
        """
        return len(self._running)

    def request(self, target: Target, table: Optional[str] = None) -> bool:
        """
        A sync request asks for a dump to C{target} of C{table}, or of
        every replicated table.

        @return: whether a dump started now; when not, one will.
        """
        tables = None if table is None else {table}
        if target in self._owed:
            owed = self._owed[target]
            self._owed[target] = None if owed is None or tables is None else owed | tables
        else:
            self._owed[target] = tables
        started = self._startOwed(target)
        if not started:
            self.statistics["syncCoalesced"] += 1
            self._warnings.warn(
                "syncCoalesced",
                "htable sync request for {target} while a dump to it runs or ran less than "
                "{interval} s ago: one more dump follows when its time comes",
                target=_describe(target),
                interval=self._interval,
            )
        return started

    def stop(self) -> None:
        """
        Send no more: forget the dumps running and owed.
        """
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None
        for dump in self._running.values():
            if dump.step is not None and dump.step.active():
                dump.step.cancel()
        self._running.clear()
        self._owed.clear()

    # Internals

    def _startOwed(self, first: Target = None) -> bool:
        """
        Start the dumps owed whose time has come, C{first} first.

        @return: whether C{first}'s started.
        """
        now = self._clock.seconds()
        for target, done in list(self._lastDone.items()):
            if now - done >= self._interval:
                del self._lastDone[target]
        order = [first] if first in self._owed else []
        order += [t for t in self._owed if t is not first or not order]
        started = False
        for target in order:
            if len(self._running) >= self._maxDumps:
                break
            if target in self._running or target in self._lastDone:
                continue
            self._start(target, self._owed.pop(target))
            started = started or (target is first)
        self._schedule()
        return started

    def _schedule(self) -> None:
        waiting = [self._lastDone[t] + self._interval for t in self._owed if t in self._lastDone]
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None
        if waiting and len(self._running) < self._maxDumps:
            delay = max(0.0, min(waiting) - self._clock.seconds())
            self._timer = self._clock.callLater(delay, self._timedOut)

    def _timedOut(self) -> None:
        self._timer = None
        self._startOwed()

    def _start(self, target: Target, tables: Optional[Set[str]]) -> None:
        self.statistics["syncDumps"] += 1
        dump = _Dump(target, self._bodies(tables))
        self._running[target] = dump
        self._log.info("Sending htable cells to {node}", node=_describe(target))
        self._send(dump)

    def _send(self, dump: _Dump) -> None:
        """
        Send one more body of C{dump}, and come back in the next reactor turn
        while the window has room.
        """
        dump.step = None
        if self._running.get(dump.target) is not dump or dump.exhausted:
            return
        body = next(dump.bodies, None)
        if body is not None and dump.sent + len(body) > self._maxBytes:
            self.statistics["syncDumpsTruncated"] += 1
            self._warnings.warn(
                "syncTruncated",
                "htable sync dump to {target} stopped after {sent} octets, the most allowed",
                target=_describe(dump.target),
                sent=dump.sent,
            )
            body = None
        if body is None:
            dump.exhausted = True
            self._bodyDone(None, dump, sent=False)
            return
        dump.sent += len(body)
        dump.inFlight += 1
        self._outbox.send(body, dump.target, "sync dump").addBoth(self._bodyDone, dump)
        self._next(dump)

    def _next(self, dump: _Dump) -> None:
        if (
            dump.step is None
            and not dump.exhausted
            and dump.inFlight < self._window
            and self._running.get(dump.target) is dump
        ):
            dump.step = self._clock.callLater(0, self._send, dump)

    def _bodyDone(self, ignored: object, dump: _Dump, sent: bool = True) -> None:
        if sent:
            dump.inFlight -= 1
        if self._running.get(dump.target) is not dump:
            return
        if dump.exhausted and not dump.inFlight:
            del self._running[dump.target]
            self._lastDone[dump.target] = self._clock.seconds()
            self._log.info(
                "Sent {octets} octets of htable cells to {node}", octets=dump.sent, node=_describe(dump.target)
            )
            self._startOwed()
        else:
            self._next(dump)


def _describe(target: Target) -> str:
    return "every active node" if target is None else target.uri.toString()
