# -*- test-case-name: dmq.test.test_bus -*-
"""
An in-memory datagram network for tests: protocols attached to it exchange
datagrams on one L{task.Clock <twisted.internet.task.Clock>}, with no sockets, and a test can take a node
off the network (a crash) or put it back.
"""

from __future__ import annotations

from typing import Callable, Dict, List, Optional, Tuple

import heapq

import attr
from twisted.internet.address import IPv4Address
from twisted.internet.interfaces import IUDPTransport
from twisted.internet.base import DelayedCall
from twisted.internet.protocol import AbstractDatagramProtocol
from twisted.internet.task import Clock
from zope.interface import implementer

Address = Tuple[str, int]


class HeapClock(Clock):
    """
    A L{Clock} whose calls are kept in a heap, for simulations with
    thousands of timers (a 100-node bus): Clock sorts its whole list at
    every call scheduled and every call run.  Cancelled and rescheduled
    calls are dropped lazily.
    """

    def __init__(self) -> None:
        Clock.__init__(self)
        self._heap: List[Tuple[float, int, DelayedCall]] = []
        self._count = 0

    def callLater(self, delay, callable, *args, **kw):
        call = DelayedCall(
            self.seconds() + delay, callable, args, kw, lambda call: None, self._push, self.seconds
        )
        self._push(call)
        return call

    def _push(self, call: DelayedCall) -> None:
        self._count += 1
        heapq.heappush(self._heap, (call.getTime(), self._count, call))

    def _top(self) -> Optional[Tuple[float, int, DelayedCall]]:
        heap = self._heap
        while heap:
            time, _, call = heap[0]
            if call.cancelled or call.called or time != call.getTime():
                heapq.heappop(heap)
                continue
            return heap[0]
        return None

    def nextCallTime(self) -> Optional[float]:
        """
        The time of the next call, or C{None} when none is scheduled.
        """
        top = self._top()
        return None if top is None else top[0]

    def getDelayedCalls(self):
        return sorted(
            {id(c): c for _, _, c in self._heap if not (c.cancelled or c.called)}.values(),
            key=lambda c: c.getTime(),
        )

    def advance(self, amount: float) -> None:
        self.advanceTo(self.rightNow + amount)

    def advanceTo(self, when: float) -> None:
        """
        Set the time to C{when} (never back), running the calls due by then;
        unlike L{advance}, no rounding leaves a call due at C{when} unrun.
        """
        self.rightNow = max(self.rightNow, when)
        while True:
            top = self._top()
            if top is None or top[0] > self.rightNow:
                return
            heapq.heappop(self._heap)
            call = top[2]
            call.called = 1
            call.func(*call.args, **call.kw)


@attr.frozen
class Datagram:
    time: float
    source: Address
    destination: Address
    data: bytes


@implementer(IUDPTransport)
class FakeDatagramTransport:
    """
    The transport of one protocol attached to a L{FakeNetwork}.
    """

    def __init__(self, network: "FakeNetwork", address: Address) -> None:
        self._network = network
        self.address = address
        self.connected = True

    def write(self, data: bytes, addr: Optional[Address] = None) -> None:
        if not self.connected:
            raise OSError("not connected")
        if addr is None:
            # IUDPTransport allows it for a connected port; this fake has none.
            raise OSError("no destination")
        self._network.send(self.address, addr, data)

    def getHost(self) -> IPv4Address:
        return IPv4Address("UDP", *self.address)

    def stopListening(self):
        self.connected = False
        self._network.detach(self.address)

    loseConnection = stopListening

    def connect(self, host, port):
        raise NotImplementedError()

    def setBroadcastAllowed(self, enabled):
        pass

    def getBroadcastAllowed(self):
        return False


class FakeNetwork:
    """
    Datagrams between attached protocols, delivered after C{latency} seconds
    of the clock.

    @ivar sent: every datagram sent, delivered or not.
    @ivar drop: a predicate on a L{Datagram}; when it says C{True} the
        datagram is lost.
    """

    def __init__(self, clock: Clock, latency: float = 0.001) -> None:
        self._clock = clock
        self._latency = latency
        self._endpoints: Dict[Address, AbstractDatagramProtocol] = {}
        self.sent: List[Datagram] = []
        self.drop: Optional[Callable[[Datagram], bool]] = None
        self.crashed: set = set()

    def attach(self, protocol, address: Address) -> FakeDatagramTransport:
        """
        Connect C{protocol} to the network at C{address}.
        """
        if address in self._endpoints:
            raise ValueError(f"{address} is taken")
        transport = FakeDatagramTransport(self, address)
        self._endpoints[address] = protocol
        self.crashed.discard(address)
        protocol.makeConnection(transport)
        return transport

    def detach(self, address: Address) -> None:
        """
        Take the protocol at C{address} off the network without telling it:
        datagrams to it are lost from now on.
        """
        self._endpoints.pop(address, None)

    def send(self, source: Address, destination: Address, data: bytes) -> None:
        datagram = Datagram(self._clock.seconds(), source, destination, data)
        self.sent.append(datagram)
        if source in self.crashed:
            return
        if self.drop is not None and self.drop(datagram):
            return
        self._clock.callLater(self._latency, self._deliver, datagram)

    def _deliver(self, datagram: Datagram) -> None:
        protocol = self._endpoints.get(datagram.destination)
        if protocol is not None:
            protocol.datagramReceived(datagram.data, datagram.source)

    def run(self, seconds: float) -> None:
        """
        Advance the clock by C{seconds}, stopping at every scheduled call on
        the way so that each runs at its own time.
        """
        end = self._clock.seconds() + seconds
        for _ in range(1_000_000):
            now = self._clock.seconds()
            if isinstance(self._clock, HeapClock):
                found = self._clock.nextCallTime()
                if found is None or found > end:
                    self._clock.advanceTo(end)
                    return
                self._clock.advanceTo(found)
                continue
            due = [call.getTime() for call in self._clock.getDelayedCalls()]
            nextTime = min([t for t in due if t <= end], default=end)
            self._clock.advance(max(nextTime - now, 0))
            if self._clock.seconds() >= end and not any(
                call.getTime() <= end for call in self._clock.getDelayedCalls()
            ):
                return
        raise RuntimeError("the clock never settled: a timer keeps rescheduling itself at once")


def makeNode(
    clock: Clock, network: FakeNetwork, host: str, seeds=(), port: int = 5060, resolver=None,
    random=None, **options
):
    """
    Build, attach and start a whole node (L{dmq.tap.makeNodeService}) on
    C{network} at C{host:port}, seeded with the nodes at C{seeds} (host
    strings or C{(host, port)} pairs).  C{random} is the C{random.Random}
    its ping and failure detector choose with.
    """
    from dmq import sip
    from dmq.config import NodeConfig
    from dmq.tap import makeNodeService

    seedURIs = []
    for seed in seeds:
        seedHost, seedPort = (seed, 5060) if isinstance(seed, str) else seed
        seedURIs.append(sip.URI(seedHost, seedPort))
    config = NodeConfig(serverAddress=sip.URI(host, port), notificationAddresses=tuple(seedURIs), **options)
    node = makeNodeService(clock, config, resolver=resolver, listen=False, random=random)
    network.attach(node.protocol, (host, port))
    node.startService()
    return node


def crashNode(network: FakeNetwork, node) -> None:
    """
    Crash C{node}: it leaves the network with no goodbye (nothing it still
    sends arrives), and its services are stopped so it leaves no timer behind.
    """
    address = tuple(node.protocol.sentBy)
    network.detach(address)
    network.crashed.add(address)
    node.stopService()

