# -*- test-case-name: dmq.test.test_usrloc_peer -*-
"""
The sending half of usrloc's sync (when to ask is L{dmq.peers.joins.Joins}):
L{Dump} sends a sync dump paced
by the replies, so that a large one neither floods the transaction table
nor blocks the reactor, and L{Dumps} keeps the dumps on their way within
bounds.

See C{doc/peers.md} (usrloc) for the whole design.
"""

from __future__ import annotations

from typing import Callable, Dict, Iterator, Optional

from twisted.internet.defer import Deferred
from twisted.logger import Logger

from dmq.node import Node

__all__ = ["Dump", "Dumps"]


class Dump:
    """
    One sync dump on its way: its bodies are sent as they are made, with at
    most C{window} requests awaiting their replies at any time.

    @ivar sent: how many bodies have been handed to C{send}.
    @ivar done: a L{Deferred} that fires with C{sent} once every body has
        been sent and answered (or could not be sent), or once cancelled.
    """

    def __init__(
        self,
        send: Callable[[bytes], Deferred[object]],
        bodies: Iterator[bytes],
        window: int,
        hopeless: Callable[[object], bool] = lambda outcome: False,
    ) -> None:
        """
        @param send: sends one body; its L{Deferred} fires (or fails) once
            the request has ended.
        @param bodies: the bodies, made lazily.
        @param window: the most requests awaiting replies at once.
        @param hopeless: tells from a request's outcome that the target is
            gone: the dump then stops.
        """
        if window < 1:
            raise ValueError("the window must be at least 1")
        self._send = send
        self._hopeless = hopeless
        self._bodies: Optional[Iterator[bytes]] = bodies
        self._window = window
        self._waiting = 0
        self._pumping = False
        self.sent = 0
        self.done: Deferred[int] = Deferred()

    def start(self) -> "Dump":
        """
        Send the first C{window} bodies now.

        @return: this dump.
        """
        self._pump()
        return self

    def cancel(self) -> None:
        """
        Send nothing more; replies still awaited are ignored.
        """
        self._bodies = None
        self._finish()

    def _pump(self) -> None:
        # A send whose Deferred fires at once re-enters through _ended:
        # the loop here goes on instead of recursing.
        if self._pumping:
            return
        self._pumping = True
        try:
            while self._bodies is not None and self._waiting < self._window:
                body = next(self._bodies, None)
                if body is None:
                    self._bodies = None
                    break
                self._waiting += 1
                self.sent += 1
                self._send(body).addBoth(self._ended)
        finally:
            self._pumping = False
        if self._bodies is None and not self._waiting:
            self._finish()

    def _ended(self, result: object) -> None:
        self._waiting -= 1
        if self._hopeless(result):
            self.cancel()
        else:
            self._pump()

    def _finish(self) -> None:
        if not self.done.called:
            self.done.callback(self.sent)


def _never(outcome: object) -> bool:
    return False


def _targetGone(outcome: object) -> bool:
    # A request to one node that timed out, or could not be sent: the rest
    # of its dump would wait Timer F each window.
    return outcome is None or getattr(outcome, "code", None) == 408


class Dumps:
    """
    The dumps on their way: one per target at most, and at most
    C{maxDumps} in all.  A dump to one node stops once one of its requests
    times out or cannot be sent.
    """

    _log = Logger()

    def __init__(self, send: Callable[[bytes, Optional[Node]], Deferred[object]], window: int, maxDumps: int) -> None:
        """
        @param send: sends one body to a node, or to every active node for
            C{None}; its L{Deferred} fires once the request has ended.
        @param window: each dump's L{Dump} window.
        @param maxDumps: the most dumps on their way at once.
        """
        if window < 1 or maxDumps < 1:
            raise ValueError("the window and maxDumps must be at least 1")
        self._send = send
        self._window = window
        self._maxDumps = maxDumps
        self._running: Dict[Optional[Node], Dump] = {}

    def __len__(self) -> int:
        return len(self._running)

    def start(self, node: Optional[Node], bodies: Callable[[], Iterator[bytes]]) -> bool:
        """
        Send a dump to C{node}, or to every active node for C{None}, unless
        one is on its way to it already.

        @param bodies: makes the dump's bodies, when it starts.
        @return: C{False} when C{maxDumps} dumps are on their way already.
        """
        if node in self._running:
            # The dump on its way sends what the store holds when it gets there.
            return True
        if len(self._running) >= self._maxDumps:
            return False
        target = node if node is not None else "every active node"
        self._log.info("Sending the usrloc contacts to {node}", node=target)

        def ended(sent: int) -> None:
            self._running.pop(node, None)
            self._log.info("Sent {sent} usrloc dump messages to {node}", sent=sent, node=target)

        dump = self._running[node] = Dump(
            lambda body: self._send(body, node), bodies(), self._window, _targetGone if node else _never
        )
        dump.done.addCallback(ended)
        dump.start()
        return True

    def cancel(self) -> None:
        """
        Stop every dump on its way.
        """
        for dump in list(self._running.values()):
            dump.cancel()
