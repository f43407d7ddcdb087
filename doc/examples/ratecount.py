# -*- test-case-name: dmq.test.test_examples -*-
"""
A bus-wide rate counter: a complete Twisted program with a dmq peer of its
own.

Every node counts the hits of a key in one-second windows, and at the end
of each window tells every active node of the bus how many it counted.  Each
node then knows the hits of the whole bus in the last second: its own, and
what the others last said (an answer older than two windows no longer
counts, so a node that left stops counting).  A rate limit shared by a
cluster is this, plus a comparison.

Run a bus of three (each in its own terminal; the second and third join
through the first)::

    python ratecount.py sip:127.0.0.141:5060 --hits 1
    python ratecount.py sip:127.0.0.142:5060 --seed sip:127.0.0.141:5060 --hits 2
    python ratecount.py sip:127.0.0.143:5060 --seed sip:127.0.0.141:5060 --hits 3

and each prints, once a second, once the bus has formed::

    alice: 6 hits in the last second, from 3 nodes

C{dmq/test/test_examples.py} runs these three.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from typing import Dict, List, Optional, Tuple

from twisted.internet import task
from twisted.logger import Logger
from zope.interface import implementer

from dmq.interfaces import IDMQPeer, PeerResponse
from dmq.tap import NodeConfig, makeNodeService, parseNodeAddress, parseServerAddress

PEER_ID = "ratecount"


@implementer(IDMQPeer)
class RateCounter:
    """
    The peer: counts hits here, tells the bus, and adds up what the bus says.

    @ivar window: the length of a window, in seconds.
    """

    peerId = PEER_ID
    description = "hits per key and second, summed over the bus"
    _log = Logger()

    def __init__(self, bus, clock, window: float = 1.0) -> None:
        self._bus = bus
        self._clock = clock
        self.window = window
        self._current: Counter = Counter()
        self._last: Counter = Counter()
        # The others' last word: node URI -> (when it came, its counts).
        self._others: Dict[str, Tuple[float, Dict[str, int]]] = {}

    def hit(self, key: str) -> None:
        """
        Count one hit of C{key} in the current window.
        """
        self._current[key] += 1

    def endWindow(self):
        """
        End the current window and tell every active node what it counted.

        @return: the broadcast's Deferred.
        """
        self._last, self._current = self._current, Counter()
        body = json.dumps(dict(self._last), separators=(",", ":")).encode("utf-8")
        return self._bus.broadcast(PEER_ID, body, "application/json")

    def total(self, key: str) -> Tuple[int, int]:
        """
        @return: the hits of C{key} in the last window over the bus, and the
            number of nodes (this one included) whose counts are in it.
        """
        now = self._clock.seconds()
        fresh = [counts for when, counts in self._others.values() if now - when <= 2 * self.window]
        return self._last[key] + sum(counts.get(key, 0) for counts in fresh), 1 + len(fresh)

    def messageReceived(self, request, node):
        if node is None:
            # Only members of the bus count.
            return PeerResponse(403, "Forbidden")
        try:
            counts = json.loads(request.body.decode("utf-8"))
        except ValueError:
            counts = None
        if not isinstance(counts, dict) or not all(
            isinstance(key, str) and type(value) is int and value >= 0 for key, value in counts.items()
        ):
            return PeerResponse(400, "Bad Request")
        self._others[str(node)] = (self._clock.seconds(), counts)
        return PeerResponse(200, "OK")

    def nodeAdded(self, node) -> None:
        # Nothing to bring up to date: the next window's counts will do.
        pass


def main(argv: Optional[List[str]] = None, reactor=None) -> None:
    """
    Run one node with a L{RateCounter}, hitting C{--key} C{--hits} times a
    window, and print the bus's total once a window.
    """
    parser = argparse.ArgumentParser(description="A bus-wide rate counter on a dmq bus.")
    parser.add_argument("address", help="this node's SIP URI, sip:IP:PORT")
    parser.add_argument("--seed", action="append", default=[], help="a node to join through (repeatable)")
    parser.add_argument("--hits", type=int, default=1, help="hits counted here per window")
    parser.add_argument("--key", default="alice", help="the key hit")
    args = parser.parse_args(argv)
    if reactor is None:
        from twisted.internet import reactor
    node = makeNodeService(reactor, NodeConfig(
        serverAddress=parseServerAddress(args.address),
        notificationAddresses=[parseNodeAddress(seed) for seed in args.seed],
    ))
    counter = RateCounter(node.bus, reactor)
    node.bus.registerPeer(counter)

    def window():
        for _ in range(args.hits):
            counter.hit(args.key)
        counter.endWindow()
        total, nodes = counter.total(args.key)
        print(f"{args.key}: {total} hits in the last second, from {nodes} nodes", flush=True)

    ticks = task.LoopingCall(window)
    ticks.clock = reactor
    node.startService()
    ticks.start(counter.window, now=False)
    reactor.addSystemEventTrigger("before", "shutdown", ticks.stop)
    reactor.addSystemEventTrigger("before", "shutdown", node.stopService)
    reactor.run()


if __name__ == "__main__":
    main(sys.argv[1:])
