# -*- test-case-name: dmq.test.test_notification -*-
"""
The ping: every C{pingInterval} seconds, send our node list to every node we
know, inactive ones too, with Max-Forwards 1.  It checks liveness (the
outcome moves the node's state) and spreads membership (the reply is a list
to merge).
"""

from __future__ import annotations

import random as _random
from typing import Callable, Dict, List, Optional

from twisted.application import service
from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import LoopingCall
from twisted.logger import Logger

from dmq.node import Node, NodeManager
from dmq.notification import JOIN_MAX_FORWARDS, PING_MAX_FORWARDS, NotificationPeer
from dmq.ratelimit import RateLimitedWarnings

__all__ = ["PingService", "MIN_PING_INTERVAL"]

MIN_PING_INTERVAL = 1.0


class PingService(service.Service):
    """
    Ping every known node each C{pingInterval} seconds.

    When no other node is active (all of them timed out, or were removed),
    the tick re-joins through every known node and the notification addresses
    with Max-Forwards 2 instead, as Kamailio's does.  A node whose previous
    ping is still outstanding is not pinged again, so a dead node never has
    more than one ping in flight.

    A tick that fails (a bug: nothing received should make one fail) is
    logged, at most once a minute, and the next tick runs as usual: the
    ping is what times dead nodes out, and must not stop.

    @ivar pingTimeout: seconds after which an unanswered ping counts as a
        timeout; C{None} for the transaction's own Timer F (32 s).  A shorter
        one detects a dead node sooner than Kamailio can.
    @ivar covered: a predicate saying which nodes a failure detector
        (L{dmq.probe.ProbeDetector}) watches: of those, one a tick is pinged,
        to swap whole lists, rather than all of them, so that a node's pings
        grow with the nodes the detector does not watch (Kamailio nodes)
        and not with the bus.
    """

    _log = Logger()

    def __init__(
        self,
        clock: IReactorTime,
        notification: NotificationPeer,
        nodeManager: NodeManager,
        pingInterval: float = 60.0,
        pingTimeout: Optional[float] = None,
        covered: Optional[Callable[[Node], bool]] = None,
        random: Optional[_random.Random] = None,
    ) -> None:
        if pingInterval < MIN_PING_INTERVAL:
            raise ValueError(f"pingInterval must be at least {MIN_PING_INTERVAL} s")
        if pingTimeout is not None and pingTimeout <= 0:
            raise ValueError("pingTimeout must be positive")
        self._clock = clock
        self._notification = notification
        self._nodeManager = nodeManager
        self.pingInterval = pingInterval
        self.pingTimeout = pingTimeout
        self.covered = covered
        self._random = random if random is not None else _random.Random()
        self._warnings = RateLimitedWarnings(clock, self._log)
        self._loop: Optional[LoopingCall] = None
        self._outstanding: Dict[Node, Deferred[int]] = {}

    def startService(self) -> None:
        service.Service.startService(self)
        self._loop = LoopingCall(self._tick)
        self._loop.clock = self._clock
        # The join already announces us; the first ping is one interval later.
        self._loop.start(self.pingInterval, now=False)

    def stopService(self) -> Deferred[None]:
        service.Service.stopService(self)
        if self._loop is not None and self._loop.running:
            self._loop.stop()
        self._loop = None
        # The pings still in flight end with the bus's transactions.
        return succeed(None)

    def _tick(self) -> None:
        # A LoopingCall stops for good at the first exception.
        try:
            self.ping()
        except Exception:
            self._warnings.failure("pingTick", "A ping tick failed; the next one runs as usual")

    def ping(self) -> None:
        """
        One tick: announce our list to every known node not already being
        pinged.
        """
        if not self._nodeManager.pingTargets():
            # Only ourselves left (the seeds were removed by hand): start
            # again from the notification addresses, as Kamailio does.
            self._nodeManager.restoreSeeds()
        targets = self._targets()
        if not targets:
            return
        maxForwards = PING_MAX_FORWARDS
        if not self._nodeManager.activeNodes():
            maxForwards = JOIN_MAX_FORWARDS
        for node in targets:
            d = self._notification.announce([node], maxForwards, timeout=self.pingTimeout)
            self._outstanding[node] = d
            d.addBoth(self._pinged, node)

    def _targets(self) -> List[Node]:
        candidates = [
            node for node in self._nodeManager.pingTargets() if node not in self._outstanding
        ]
        if self.covered is None:
            return candidates
        covered = self.covered
        targets = [node for node in candidates if not covered(node)]
        watched = [node for node in candidates if covered(node)]
        if watched:
            targets.append(self._random.choice(watched))
        return targets

    def _pinged(self, result: object, node: Node) -> None:
        del self._outstanding[node]
