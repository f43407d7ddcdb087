# -*- test-case-name: dmq.test.test_htable_outbox -*-
"""
L{Outbox}: the htable requests waiting to be sent, and the sending of
them with backpressure, so that a change accepted locally is sent or
refused, never dropped.

A send is started only while the transaction layer has room for it (it is
asked through the C{clientRoom} callable) and fewer than C{maxInFlight} of
ours are unanswered; the others wait in order.  A send the transaction
layer still refuses (L{TransactionLimitExceeded}) waits again, at the head,
for the nodes that refused it; since room is checked first, that happens
only when the layer has less room than one broadcast needs, and then
nothing else is started until that send is done, so that changes reach
each node in the order they were made.  (Without C{clientRoom}, order is
kept only as far as the layer refuses at once.)  L{Outbox.check} says, before a change is
applied, whether it can be taken: when the waiting ones already fill the
outbox (C{maxPending} requests or C{maxPendingBytes} octets) it raises
L{ReplicationRefused}.
"""

from __future__ import annotations

from collections import Counter, deque
from typing import Any, Callable, Deque, Dict, List, Optional

import attr
from twisted.internet.defer import Deferred, DeferredList, maybeDeferred
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure

from dmq.interfaces import IDMQBus
from dmq.node import Node, NodeStatus
from dmq.transaction import TransactionLimitExceeded
from dmq.ratelimit import RateLimitedWarnings

__all__ = ["ReplicationRefused", "Outbox", "MAX_PENDING", "MAX_PENDING_BYTES", "MAX_IN_FLIGHT"]

MAX_PENDING = 10_000
"""
The default cap on requests waiting to be sent.
"""

MAX_PENDING_BYTES = 32 * 1024 * 1024
"""
The default cap on the octets of the bodies waiting to be sent.
"""

MAX_IN_FLIGHT = 256
"""
The default cap on our sends (a broadcast is one) not yet answered.
"""


class ReplicationRefused(Exception):
    """
    A local change that cannot be replicated now (the outbox is full, or its
    request would not fit in one datagram): it was refused before being
    applied.  The message says why.
    """


@attr.define(eq=False)
class _Send:
    body: bytes
    # The node to send to; None: every active node, or those of targets.
    node: Optional[Node]
    what: str
    result: Deferred[object]
    # For a broadcast sent again: the nodes still to send to, and what the
    # others answered.
    targets: Optional[List[Node]] = None
    outcomes: Dict[Node, object] = attr.Factory(dict)
    started: bool = False


class Outbox:
    """
    Requests of one peer waiting to be sent, sent in order as the
    transaction layer has room.

    @ivar statistics: counters: C{replicationQueued} (changes that had to
        wait), C{replicationRefused}, C{sendRetries} (sends the transaction
        layer refused, waiting again), C{sendFailures}, C{droppedAtStop}.
    """

    _log = Logger()

    def __init__(
        self,
        clock: IReactorTime,
        bus: IDMQBus,
        peerId: str,
        contentType: str,
        clientRoom: Optional[Callable[[], int]] = None,
        maxPending: int = MAX_PENDING,
        maxPendingBytes: int = MAX_PENDING_BYTES,
        maxInFlight: int = MAX_IN_FLIGHT,
        retryDelay: float = 0.5,
        statistics: Optional[Counter[str]] = None,
    ) -> None:
        """
        @param clientRoom: how many more client transactions the transaction
            layer would start now; C{None} when not known (sends are then
            still sent again when it refuses them).
        @param retryDelay: seconds between looks at the room while the
            first waiting send cannot start.
        @param statistics: the counter to count in.
        """
        self._clock = clock
        self._bus = bus
        self._peerId = peerId
        self._contentType = contentType
        self._clientRoom = clientRoom
        self._maxPending = maxPending
        self._maxPendingBytes = maxPendingBytes
        self._maxInFlight = maxInFlight
        self._retryDelay = retryDelay
        self.statistics: Counter[str] = statistics if statistics is not None else Counter()
        self._warnings = RateLimitedWarnings(clock, self._log)
        self._waiting: Deque[_Send] = deque()
        self._waitingBytes = 0
        self._inFlight = 0
        self._retry: Optional[IDelayedCall] = None
        self._pumping = False
        # Set when the transaction layer refused a send: nothing starts
        # before the retry timer.
        self._blocked = False
        # Set while a send started with less room than it needs is in
        # flight: nothing may overtake it if some of it must be sent again.
        self._exclusive = False

    @property
    def pending(self) -> int:
        """
        How many sends wait to be started.
        """
        return len(self._waiting)

    @property
    def inFlight(self) -> int:
        """
        How many of our sends are started and not yet answered.
        """
        return self._inFlight

    def check(self, size: int) -> None:
        """
        Check that a change of C{size} octets can be taken.

        @raise ReplicationRefused: when the waiting sends fill the outbox.
        """
        if len(self._waiting) >= self._maxPending or self._waitingBytes + size > self._maxPendingBytes:
            self.statistics["replicationRefused"] += 1
            raise ReplicationRefused(
                f"{len(self._waiting)} changes ({self._waitingBytes} octets) are waiting to be "
                "replicated, the most allowed: try again later"
            )

    def send(self, body: bytes, node: Optional[Node], what: str) -> Deferred[object]:
        """
        Send C{body} to C{node}, or to every active node, as soon as there
        is room.

        @return: a L{Deferred} that fires as L{IDMQBus.send} or
            L{IDMQBus.broadcast} does, with C{None} instead of failing.
        """
        item = _Send(body, node, what, Deferred())
        self._waiting.append(item)
        self._waitingBytes += len(body)
        self._pump()
        if not item.started:
            self.statistics["replicationQueued"] += 1
        return item.result

    def stop(self) -> None:
        """
        Forget the sends not started: their L{Deferred}s fire with C{None}
        (or C{{}}).
        """
        if self._retry is not None and self._retry.active():
            self._retry.cancel()
        self._retry = None
        self._blocked = False
        waiting, self._waiting = self._waiting, deque()
        self._waitingBytes = 0
        if waiting:
            self.statistics["droppedAtStop"] += len(waiting)
            self._log.warn("htable: {count} requests not sent: stopping", count=len(waiting))
        for item in waiting:
            item.result.callback(None if item.node is not None else dict(item.outcomes))

    # Internals

    def _needed(self, item: _Send) -> int:
        if item.node is not None:
            return 1
        if item.targets is not None:
            return len(item.targets)
        return sum(1 for n in self._bus.nodes() if not n.local and n.status is NodeStatus.ACTIVE)

    def _pump(self) -> None:
        # Sends that complete at once call this again: the loop running
        # goes on instead, and the stack does not grow.
        if self._pumping or self._blocked or self._exclusive:
            return
        self._pumping = True
        try:
            while (
                self._waiting
                and self._inFlight < self._maxInFlight
                and not self._blocked
                and not self._exclusive
            ):
                item = self._waiting[0]
                if self._clientRoom is not None:
                    room = self._clientRoom()
                    # Less room than targets: start anyway when nothing of
                    # ours is in flight, so that a broadcast to more nodes
                    # than the cap still goes (those refused get it again).
                    if room < self._needed(item):
                        if room <= 0 or self._inFlight:
                            self._retryLater()
                            return
                        self._exclusive = True
                self._waiting.popleft()
                self._waitingBytes -= len(item.body)
                item.started = True
                self._start(item)
        finally:
            self._pumping = False

    def _retryLater(self) -> None:
        if self._retry is None or not self._retry.active():
            self._retry = self._clock.callLater(self._retryDelay, self._retried)

    def _retried(self) -> None:
        self._retry = None
        self._blocked = False
        self._pump()

    def _start(self, item: _Send) -> None:
        self._inFlight += 1
        contentType = self._contentType
        # Any: a Response, or a broadcast's Responses by node.
        d: Deferred[Any]
        if item.node is not None:
            d = maybeDeferred(self._bus.send, self._peerId, item.body, item.node, contentType=contentType)
        elif item.targets is None:
            d = maybeDeferred(self._bus.broadcast, self._peerId, item.body, contentType=contentType)
        else:
            targets = item.targets
            d = DeferredList(
                [maybeDeferred(self._bus.send, self._peerId, item.body, n, contentType=contentType) for n in targets],
                consumeErrors=True,
            )
            d.addCallback(lambda results: {n: value for n, (ok, value) in zip(targets, results)})
        d.addBoth(self._done, item)

    def _done(self, outcome: object, item: _Send) -> None:
        self._inFlight -= 1
        self._exclusive = False
        if item.node is not None:
            if isinstance(outcome, Failure) and outcome.check(TransactionLimitExceeded) and self._active(item.node):
                self._again(item)
            elif isinstance(outcome, Failure):
                self._failed(item, outcome)
                item.result.callback(None)
            else:
                item.result.callback(outcome)
        elif isinstance(outcome, Failure):
            self._failed(item, outcome)
            item.result.callback(dict(item.outcomes))
        else:
            refused = []
            for node, result in outcome.items():  # type: ignore[attr-defined]
                if isinstance(result, Failure) and result.check(TransactionLimitExceeded):
                    refused.append(node)
                else:
                    item.outcomes[node] = result
            # A node that left meanwhile is not waited for.
            for node in [n for n in refused if not self._active(n)]:
                item.outcomes[node] = outcome[node]  # type: ignore[index]
                refused.remove(node)
            if refused:
                item.targets = refused
                self._again(item)
            else:
                item.result.callback(dict(item.outcomes))
        self._pump()

    def _active(self, node: Node) -> bool:
        return node.status is NodeStatus.ACTIVE and node in self._bus.nodes()

    def _again(self, item: _Send) -> None:
        self.statistics["sendRetries"] += 1
        self._warnings.warn(
            "transactionLimit",
            "htable {what} waits: the transaction layer has no room; sent again when it has",
            what=item.what,
        )
        item.started = False
        self._waiting.appendleft(item)
        self._waitingBytes += len(item.body)
        self._blocked = True
        self._retryLater()

    def _failed(self, item: _Send, failure: Failure) -> None:
        self.statistics["sendFailures"] += 1
        self._warnings.warn(
            f"failed:{item.what}",
            "htable {what} could not be sent: {error}",
            what=item.what,
            error=failure.getErrorMessage(),
        )
