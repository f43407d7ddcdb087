# -*- test-case-name: dmq.test.test_htable_entropy -*-
"""
Tests for L{dmq.peers.htable.entropy}: three nodes split 1 | 2 and healed,
on one clock and a fake network; and what the channel refuses.
"""

from __future__ import annotations

import random
from typing import List, Tuple

from twisted.trial.unittest import SynchronousTestCase

from zope.interface.verify import verifyObject

from dmq.interfaces import IDMQPeer
from dmq.peers.htable.entropy import ENTROPY_PEER_ID, AntiEntropy
from dmq.test.fakenet import FakeNetwork, HeapClock, makeNode

TABLE = "kdmq=>size=8;autoexpire=0;dmqreplicate=1"
INTERVAL = 10.0


class Three:
    """
    Three nodes with the htable peer and anti-entropy (default interval).
    """

    def __init__(self, testCase: SynchronousTestCase, entropy: List[bool] = [True, True, True]) -> None:
        self.clock = HeapClock()
        self.network = FakeNetwork(self.clock)
        self.hosts = ["127.0.7.21", "127.0.7.22", "127.0.7.23"]
        self.nodes = [
            makeNode(
                self.clock, self.network, host, seeds=[self.hosts[0]] if i else [],
                random=random.Random(f"entropy:{i}"), htables=[TABLE], htableEntropy=entropy[i],
                pingInterval=5.0,
            )
            for i, host in enumerate(self.hosts)
        ]
        testCase.addCleanup(self.stop)
        self.network.run(3)

    def split(self, alone: int) -> None:
        lone = (self.hosts[alone], 5060)
        self.network.drop = lambda d: (d.source == lone) != (d.destination == lone)

    def heal(self) -> None:
        self.network.drop = None

    def cells(self, i: int) -> List[Tuple[str, object]]:
        return sorted(self.nodes[i].htable.items("kdmq"))

    def stop(self) -> None:
        for node in self.nodes:
            if node.running:
                node.stopService()
        self.network.drop = None
        self.network.run(40)


class InterfaceTests(SynchronousTestCase):
    """
    Anti-entropy is a peer.
    """

    def test_interface(self) -> None:
        """
        L{AntiEntropy} provides L{IDMQPeer}.
        """
        bus = Three(self)
        self.assertTrue(verifyObject(IDMQPeer, bus.nodes[0].entropy))
        self.assertIsInstance(bus.nodes[0].entropy, AntiEntropy)


class PartitionTests(SynchronousTestCase):
    """
    Issue 15's target: split 1 | 2 for 60 s with writes on both sides, the
    three agree on every cell within two rounds of healing.
    """

    def test_splitAndHeal(self) -> None:
        """
        Cells written on either side, a deletion on the lone side, and two
        conflicting writes (the later wins, whichever side it was on) are
        the same on all three nodes two rounds after the partition heals,
        when replication alone leaves them different.
        """
        bus = Three(self)
        x, b, c = (node.htable for node in bus.nodes)
        x.set("kdmq", "k0", "before")
        x.set("kdmq", "k1", "before")
        bus.network.run(2)
        self.assertEqual(bus.cells(0), bus.cells(1))
        self.assertEqual(bus.cells(0), bus.cells(2))
        bus.split(0)
        bus.network.run(5)
        x.set("kdmq", "k1", "x")          # older: loses
        x.set("kdmq", "k3", "x3")
        bus.network.run(5)
        x.delete("kdmq", "k0")
        b.set("kdmq", "k5", 5)            # older: loses
        bus.network.run(10)
        b.set("kdmq", "k1", "b")          # newer: wins
        c.set("kdmq", "k2", "c")
        for i in range(40):
            c.set("kdmq", f"many{i}", i)
        bus.network.run(10)
        x.set("kdmq", "k5", 6)            # newer: wins
        bus.network.run(30)
        bus.heal()
        # Replication alone never heals this (Timer F ran out long ago).
        self.assertNotEqual(bus.cells(0), bus.cells(1))
        bus.network.run(2 * INTERVAL)
        expected = sorted(
            [("k1", "b"), ("k2", "c"), ("k3", "x3"), ("k5", 6)] + [(f"many{i}", i) for i in range(40)]
        )
        for i in range(3):
            self.assertEqual(bus.cells(i), expected, f"node {i}")
        self.assertGreater(sum(node.entropy.statistics["cellsApplied"] for node in bus.nodes), 0)

    def test_restartedNodeHealed(self) -> None:
        """
        A node that was down while cells changed gets them from the others'
        rounds, without a sync request.
        """
        bus = Three(self)
        x = bus.nodes[0].htable
        x.set("kdmq", "a", "1")
        bus.network.run(2)
        bus.split(2)
        x.set("kdmq", "a", "2")
        x.set("kdmq", "b", "3")
        bus.network.run(40)
        self.assertNotEqual(bus.cells(2), bus.cells(0))
        bus.heal()
        bus.network.run(2 * INTERVAL)
        self.assertEqual(bus.cells(2), [("a", "2"), ("b", "3")])


class BoundsTests(SynchronousTestCase):
    """
    A difference too large for one datagram is settled over several rounds,
    each answer within one datagram.
    """

    def test_largeDifference(self) -> None:
        """
        2,000 cells written on one side of a split (about 130 KB) reach the
        other side within a few rounds of healing, every anti-entropy
        datagram under 60,000 octets.
        """
        bus = Three(self)
        bus.split(0)
        x = bus.nodes[0].htable
        for i in range(2000):
            x.set("kdmq", f"key-{i:05d}", "v" * 40)
        bus.network.run(40)
        bus.heal()
        sent = len(bus.network.sent)
        took = 0.0
        while bus.cells(1) != bus.cells(0) or bus.cells(2) != bus.cells(0):
            bus.network.run(INTERVAL)
            took += INTERVAL
            self.assertLess(took, 10 * INTERVAL)
        sizes = [
            len(d.data) for d in bus.network.sent[sent:] if ENTROPY_PEER_ID.encode() in d.data[:200]
        ]
        self.assertLess(max(sizes), 60000)
        self.assertGreater(len(sizes), 4)


class RefusalTests(SynchronousTestCase):
    """
    The channel takes nothing from strangers and nothing malformed, and
    leaves out nodes that do not speak it.
    """

    def request(self, bus: Three, body: bytes, source: Tuple[str, int]) -> bytes:
        me = f"{source[0]}:{source[1]}"
        target = f"{bus.hosts[0]}:5060"
        data = (
            f"KDMQ sip:{ENTROPY_PEER_ID}@{target} SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP {me};branch=z9hG4bKent{len(body)}\r\n"
            f"To: <sip:{ENTROPY_PEER_ID}@{target}>\r\n"
            f"From: <sip:{ENTROPY_PEER_ID}@{me}>;tag=ent\r\n"
            f"CSeq: 10 KDMQ\r\nCall-ID: ent{len(body)}@{source[0]}\r\nMax-Forwards: 1\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
        ).encode("ascii") + body
        sent = len(bus.network.sent)
        bus.nodes[0].protocol.datagramReceived(data, source)
        bus.network.run(0.1)
        return [d.data for d in bus.network.sent[sent:] if d.destination == source][0]

    def test_stranger(self) -> None:
        """
        Cells pushed by a node not in our list are refused (403) and not
        applied.
        """
        bus = Three(self)
        body = b'{"op":"cells","tables":{"kdmq":{"buckets":[1],"cells":[["evil","x",9e9]]}}}'
        reply = self.request(bus, body, ("127.0.7.99", 5060))
        self.assertTrue(reply.startswith(b"SIP/2.0 403 "))
        self.assertIsNone(bus.nodes[0].htable.get("kdmq", "evil"))

    def test_malformed(self) -> None:
        """
        Malformed bodies from a member are answered 400 and counted; none is
        applied.
        """
        bus = Three(self)
        member = (bus.hosts[1], 5060)
        for body in [
            b"{",
            b"[]",
            b'{"op":"nope","tables":{}}',
            b'{"op":"digest","tables":{"kdmq":{"x":"1"}}}',
            b'{"op":"cells","tables":{"kdmq":{"buckets":[1],"cells":[["k",true,1]]}}}',
            b'{"op":"cells","tables":{"kdmq":{"buckets":[1],"cells":[["k","v",NaN]]}}}',
            b'{"op":"cells","tables":{"kdmq":{"buckets":"1","cells":[]}}}',
        ]:
            reply = self.request(bus, body, member)
            self.assertTrue(reply.startswith(b"SIP/2.0 400 "), (body, reply[:40]))
        self.assertEqual(bus.nodes[0].entropy.statistics["badMessages"], 7)
        self.assertEqual(bus.nodes[0].htable.items("kdmq"), [])

    def test_kamailioLeftOut(self) -> None:
        """
        A node that answers the channel 404 (here, one without anti-entropy,
        as a Kamailio node) is asked once and then left out.
        """
        bus = Three(self, entropy=[True, False, False])
        bus.network.run(5 * INTERVAL)
        statistics = bus.nodes[0].entropy.statistics
        self.assertEqual(statistics["notDmq"], 2)
        self.assertEqual(statistics["rounds"], 2)

    def test_kamailioBodiesUnchanged(self) -> None:
        """
        The htable channel's bodies carry no time: what Kamailio parses is
        what it was.
        """
        bus = Three(self)
        sent = len(bus.network.sent)
        bus.nodes[0].htable.set("kdmq", "k", "v")
        bus.network.run(1)
        bodies = [
            d.data.split(b"\r\n\r\n", 1)[1] for d in bus.network.sent[sent:]
            if d.data.startswith(b"KDMQ sip:htable@")
        ]
        self.assertEqual(set(bodies), {b'{"action":2,"htname":"kdmq","cname":"k","type":2,"strval":"v","mode":1}'})
