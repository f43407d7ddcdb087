# -*- test-case-name: dmq.test.test_htable_outbox -*-
"""
Tests for L{dmq.peers.htable.outbox} (sending with backpressure: nothing
accepted is lost) and L{dmq.peers.htable.sync} (paced, bounded sync
dumps), on a L{Clock} with a bus that answers when told; and the same
through whole nodes on an in-memory network with a small transaction cap.
"""

from __future__ import annotations

import json

from twisted.internet.defer import Deferred, fail, succeed
from twisted.python.failure import Failure
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import implementer

from dmq import sip
from dmq.interfaces import IDMQBus
from dmq.node import Node, NodeStatus
from dmq.peers.htable import HTablePeer, HTableRPC, ReplicationRefused, RPCError
from dmq.peers.htable.outbox import Outbox
from dmq.peers.htable.sync import SyncDumps
from dmq.test.fakenet import FakeNetwork, makeNode
from dmq.transaction import TransactionLimitExceeded

KDMQ = "kdmq=>size=8;autoexpire=0;dmqreplicate=1"


@implementer(IDMQBus)
class ManualBus:
    """
    A bus of two other active nodes that answers what it sends only when
    told (L{answer}), or refuses it as a full transaction layer would.
    """

    def __init__(self):
        self.localNode = Node(sip.URI("127.0.0.11", 5060), NodeStatus.ACTIVE, local=True)
        self.others = [Node(sip.URI("127.0.0.12", 5060)), Node(sip.URI("127.0.0.13", 5060))]
        self.sent = []
        self.refuse = set()

    def nodes(self):
        return [self.localNode, *self.others]

    def registerPeer(self, peer):
        pass

    def unregisterPeer(self, peerId):
        pass

    def send(self, peerId, body, node, contentType="text/plain", maxForwards=1):
        if node in self.refuse:
            return fail(TransactionLimitExceeded("full"))
        d: Deferred[sip.Response] = Deferred()
        self.sent.append((body, node, d))
        return d

    def broadcast(self, peerId, body, contentType="text/plain", exclude=None, maxForwards=1):
        targets = [n for n in self.others if n.status is NodeStatus.ACTIVE]
        results: dict[Node, sip.Response | Failure] = {}
        waiting = []
        for node in targets:
            d = self.send(peerId, body, node, contentType)
            d.addBoth(lambda r, n=node: results.__setitem__(n, r))
            waiting.append(d)
        done: Deferred[dict[Node, sip.Response | Failure]] = Deferred()

        def check(_=None):
            if len(results) == len(targets) and not done.called:
                done.callback(dict(results))

        for d in waiting:
            d.addBoth(check)
        check()
        return done

    def answer(self, count=None):
        """
        Answer the first C{count} (or all) sends waiting with a 200.
        """
        waiting, self.sent = self.sent[: count or len(self.sent)], self.sent[count or len(self.sent):]
        for body, node, d in waiting:
            d.callback(200)
        return len(waiting)

    def handleRequest(self, request, source):
        raise NotImplementedError()


def fired(d):
    results: list[object] = []
    d.addBoth(results.append)
    return results


class OutboxTests(SynchronousTestCase):
    """
    L{Outbox} starts a send only while the transaction layer has room and
    fewer than C{maxInFlight} of its own are unanswered, in order; sends
    again what the layer refused; refuses up front when full.
    """

    def setUp(self):
        self.clock = Clock()
        self.bus = ManualBus()
        self.room = 10
        self.outbox = Outbox(
            self.clock, self.bus, "htable", "application/json", lambda: self.room - len(self.bus.sent),
            maxPending=5, maxPendingBytes=1000, maxInFlight=3,
        )

    def test_room(self):
        """
        A broadcast to two nodes starts only while two transactions are
        free; the others wait, in order, and start as answers free room.
        """
        self.room = 5
        results = [fired(self.outbox.send(b"%d" % i, None, "replication")) for i in range(4)]
        self.assertEqual([b for b, n, d in self.bus.sent], [b"0", b"0", b"1", b"1"])
        self.assertEqual(self.outbox.pending, 2)
        self.assertEqual(self.outbox.statistics["replicationQueued"], 2)
        self.bus.answer(2)
        self.assertEqual([b for b, n, d in self.bus.sent], [b"1", b"1", b"2", b"2"])
        self.assertEqual(len(results[0][0]), 2)
        self.bus.answer()
        self.bus.answer()
        self.assertEqual(self.outbox.pending, 0)
        self.assertEqual([len(r[0]) for r in results], [2, 2, 2, 2])

    def test_inFlight(self):
        """
        At most C{maxInFlight} sends of ours are unanswered at once.
        """
        self.room = 100
        for i in range(5):
            self.outbox.send(b"x", self.bus.others[0], "sync dump")
        self.assertEqual((len(self.bus.sent), self.outbox.inFlight, self.outbox.pending), (3, 3, 2))
        self.bus.answer(1)
        self.assertEqual(self.outbox.inFlight, 3)

    def test_noRoomAtAll(self):
        """
        With no room, nothing starts; the outbox looks again after its
        retry delay.
        """
        self.room = 0
        result = fired(self.outbox.send(b"x", None, "replication"))
        self.assertEqual(self.bus.sent, [])
        self.room = 10
        self.clock.advance(0.5)
        self.assertEqual(len(self.bus.sent), 2)
        self.bus.answer()
        self.assertEqual(len(result[0]), 2)

    def test_refusedByTransactionLayer(self):
        """
        A node whose send the transaction layer refuses gets it again later;
        the broadcast's result has both nodes' answers.
        """
        self.outbox = Outbox(self.clock, self.bus, "htable", "application/json")
        b, c = self.bus.others
        self.bus.refuse.add(c)
        result = fired(self.outbox.send(b"x", None, "replication"))
        self.assertEqual([(body, n) for body, n, d in self.bus.sent], [(b"x", b)])
        self.bus.answer()
        self.assertEqual(self.outbox.statistics["sendRetries"], 1)
        self.assertEqual((self.outbox.pending, result), (1, []))
        self.clock.advance(0.5)
        self.assertEqual(self.outbox.statistics["sendRetries"], 2)
        self.bus.refuse.clear()
        self.clock.advance(0.5)
        self.assertEqual([(body, n) for body, n, d in self.bus.sent], [(b"x", c)])
        self.bus.answer()
        self.assertEqual(result, [{b: 200, c: 200}])

    def test_lessRoomThanTargets(self):
        """
        With room for one of a broadcast's two transactions, it starts when
        nothing else of ours is in flight, and nothing overtakes it while
        the node refused waits.
        """
        self.room = 1
        b, c = self.bus.others
        self.bus.refuse.add(c)
        first = fired(self.outbox.send(b"x", None, "replication"))
        self.outbox.send(b"y", None, "replication")
        self.room = 10
        self.clock.advance(0.5)
        self.assertEqual([(body, n) for body, n, d in self.bus.sent], [(b"x", b)])
        self.bus.refuse.clear()
        self.bus.answer()
        self.clock.advance(0.5)
        self.assertEqual([(body, n) for body, n, d in self.bus.sent], [(b"x", c), (b"y", b), (b"y", c)])
        self.bus.answer(1)
        self.assertEqual(first, [{b: 200, c: 200}])

    def test_full(self):
        """
        When C{maxPending} sends or C{maxPendingBytes} octets wait, a new
        change is refused up front, and counted.
        """
        self.room = 0
        for i in range(5):
            self.outbox.check(10)
            self.outbox.send(b"x" * 10, None, "replication")
        e = self.assertRaises(ReplicationRefused, self.outbox.check, 10)
        self.assertIn("5 changes (50 octets) are waiting", str(e))
        outbox = Outbox(self.clock, self.bus, "htable", "application/json", lambda: 0, maxPendingBytes=100)
        outbox.send(b"x" * 60, None, "replication")
        self.assertRaises(ReplicationRefused, outbox.check, 41)
        outbox.check(40)
        self.assertEqual(self.outbox.statistics["replicationRefused"], 1)

    def test_synchronousSends(self):
        """
        Ten thousand sends answered at once do not grow the stack.
        """
        outbox = Outbox(self.clock, _AnsweringBus(), "htable", "application/json")
        results = [fired(outbox.send(b"x", None, "replication")) for i in range(10000)]
        self.assertEqual(sum(1 for r in results if r == [{}]), 10000)

    def test_stop(self):
        """
        Stopping fires the waiting sends' L{Deferred}s, and counts them.
        """
        self.room = 0
        result = fired(self.outbox.send(b"x", None, "replication"))
        self.outbox.stop()
        self.assertEqual(result, [{}])
        self.assertEqual(self.outbox.statistics["droppedAtStop"], 1)
        self.assertEqual(self.clock.getDelayedCalls(), [])


@implementer(IDMQBus)
class _AnsweringBus(ManualBus):
    def broadcast(self, peerId, body, contentType="text/plain", exclude=None, maxForwards=1):
        return succeed({})

    def send(self, peerId, body, node, contentType="text/plain", maxForwards=1):
        self.sent.append((body, node, None))
        return succeed(200)


class SyncDumpsTests(SynchronousTestCase):
    """
    L{SyncDumps} sends a dump's bodies one per reactor turn, at most
    C{window} unanswered, up to C{maxBytes}; one dump at a time to a
    target, and one every C{interval} seconds.
    """

    def setUp(self):
        self.clock = Clock()
        self.bus = ManualBus()
        self.outbox = Outbox(self.clock, self.bus, "htable", "application/json")
        self.made = []
        self.dumps = SyncDumps(self.clock, self.outbox, self.bodies, maxBytes=50, interval=10, window=2,
                               maxDumps=1)
        self.node = self.bus.others[0]

    def bodies(self, tables):
        self.made.append(tables)
        return iter([b"%d" % i * 10 for i in range(1, 5)])

    def test_paced(self):
        """
        The first body goes at once, the next in the next reactor turn, and
        no more while two are unanswered.
        """
        self.assertTrue(self.dumps.request(self.node))
        self.assertEqual([b for b, n, d in self.bus.sent], [b"1" * 10])
        self.clock.advance(0)
        self.clock.advance(0)
        self.assertEqual([b for b, n, d in self.bus.sent], [b"1" * 10, b"2" * 10])
        self.bus.answer(1)
        self.clock.advance(0)
        self.assertEqual(len(self.bus.sent), 2)
        self.bus.answer()
        for i in range(3):
            self.clock.advance(0)
        self.bus.answer()
        self.assertEqual(self.dumps.running, 0)
        self.assertEqual(self.dumps.statistics["syncDumps"], 1)

    def test_capped(self):
        """
        A dump stops before its bodies pass C{maxBytes}, and is counted.
        """
        self.dumps = SyncDumps(self.clock, self.outbox, self.bodies, maxBytes=35, window=10)
        self.dumps.request(self.node)
        for i in range(5):
            self.clock.advance(0)
        self.assertEqual([b for b, n, d in self.bus.sent], [b"1" * 10, b"2" * 10, b"3" * 10])
        self.assertEqual(self.dumps.statistics["syncDumpsTruncated"], 1)

    def test_coalesced(self):
        """
        Requests while a dump to that node runs, and within C{interval}
        seconds after, start no dump and are counted; one more dump follows
        when the interval has passed.
        """
        self.dumps.request(self.node, "kdmq")
        for i in range(3):
            self.assertFalse(self.dumps.request(self.node))
        self.assertEqual(self.dumps.statistics["syncCoalesced"], 3)
        for i in range(6):
            self.bus.answer()
            self.clock.advance(0)
        self.assertEqual(self.dumps.running, 0)
        self.clock.advance(5)
        self.assertFalse(self.dumps.request(self.node))
        self.assertEqual(self.made, [{"kdmq"}])
        self.clock.advance(5)
        self.assertEqual(self.made, [{"kdmq"}, None])
        self.assertEqual(self.dumps.statistics["syncDumps"], 2)

    def test_oneAtATime(self):
        """
        Past C{maxDumps}, a dump to another target waits for the running one.
        """
        self.assertTrue(self.dumps.request(self.node))
        self.assertFalse(self.dumps.request(None))
        self.assertEqual((self.made, self.dumps.running), ([None], 1))
        for i in range(6):
            self.bus.answer()
            self.clock.advance(0)
        self.assertEqual(self.made, [None, None])
        self.assertEqual(self.dumps.statistics["syncDumps"], 2)

    def test_stop(self):
        """
        Stopping leaves no timer.
        """
        self.dumps.request(self.node)
        self.dumps.request(self.node)
        self.dumps.stop()
        self.assertEqual(self.clock.getDelayedCalls(), [])


class TransactionCapTests(SynchronousTestCase):
    """
    Whole nodes on an in-memory network whose transaction layer allows few
    client transactions: every change accepted reaches the other node.
    """

    def setUp(self):
        self.clock = Clock()
        self.network = FakeNetwork(self.clock)
        self.nodes = [
            makeNode(self.clock, self.network, "127.0.0.11", htables=[KDMQ], maxTransactions=8),
            makeNode(self.clock, self.network, "127.0.0.12", seeds=["127.0.0.11"], htables=[KDMQ]),
        ]
        self.addCleanup(self.stop)
        self.network.run(3)

    def stop(self):
        for node in self.nodes:
            node.stopService()
        self.network.run(70)

    def test_batch(self):
        """
        Three hundred C{htable.sets} in a row all reach the other node,
        though only eight client transactions may be live at once (each
        lives on for Timer K after its answer); the answers say which
        changes were queued.
        """
        a, b = (node.htable for node in self.nodes)
        rpc = HTableRPC(a)
        answers = [rpc.sets("kdmq", "k%04d" % i, "v%d" % i) for i in range(300)]
        self.assertEqual(answers[0], "Ok. Key set to new value.")
        self.assertEqual(answers[-1], "Ok. Key set to new value; its replication is queued (294 waiting).")
        self.network.run(250)
        self.assertEqual(len(b.items("kdmq")), 300)
        self.assertEqual(b.items("kdmq"), a.items("kdmq"))
        transactions = self.nodes[0].protocol.transactions
        self.assertEqual(transactions.statistics["refusedOverCapacity"], 0)

    def test_full(self):
        """
        When too many changes wait, the next is refused up front (RPC
        C{503}), and nothing of it is applied.
        """
        a = self.nodes[0].htable
        a._outbox._maxPending = 20
        rpc = HTableRPC(a)
        refused = []
        for i in range(100):
            try:
                rpc.sets("kdmq", "k%04d" % i, "v")
            except RPCError as e:
                refused.append((i, e.code, e.message))
        self.assertTrue(refused)
        first, code, message = refused[0]
        self.assertEqual(code, 503)
        self.assertIn("Refused, nothing changed", message)
        self.assertIsNone(a.get("kdmq", "k%04d" % first))
        self.network.run(60)
        b = self.nodes[1].htable
        self.assertEqual(b.items("kdmq"), a.items("kdmq"))
        self.assertEqual(len(a.items("kdmq")), 100 - len(refused))

    def test_tooLarge(self):
        """
        A value whose change would not fit one datagram is refused up front:
        C{413} from RPC, L{ReplicationRefused} from the API, the table
        unchanged; one that fits reaches the other node.
        """
        a, b = (node.htable for node in self.nodes)
        e = self.assertRaises(RPCError, HTableRPC(a).sets, "kdmq", "big", "x" * 70000)
        self.assertEqual(e.code, 413)
        self.assertRaises(ReplicationRefused, a.set, "kdmq", "big", "x" * 60000)
        self.assertIsNone(a.get("kdmq", "big"))
        a.set("kdmq", "big", "x" * 59000)
        self.network.run(5)
        self.assertEqual(b.get("kdmq", "big"), "x" * 59000)

    def test_syncRequestsFlood(self):
        """
        A hundred sync requests from a node make one dump to it, and one
        more when the interval has passed, not a hundred.
        """
        a = self.nodes[0].htable
        for i in range(300):
            a.set("kdmq", "k%03d" % i, "v" * 400)
        self.network.run(250)
        self.assertEqual(a.replicationPending, 0)
        b = self.nodes[1]
        since = len(self.network.sent)
        for i in range(100):
            b.htable.requestSync(b.nodeManager.find(sip.URI("127.0.0.11", 5060)))
        self.network.run(60)
        dumps = {
            sip.parse(d.data).callID for d in self.network.sent[since:]
            if d.data.startswith(b"KDMQ") and b'{"cells":[' in d.data and d.source[0] == "127.0.0.11"
        }
        # Two dumps of three bodies each.
        self.assertEqual(len(dumps), 6)
        self.assertEqual(a.statistics["syncDumps"], 2)
        self.assertEqual(a.statistics["syncCoalesced"], 99)


class PeerWiringTests(SynchronousTestCase):
    """
    A node's htable peer is built with the configured caps.
    """

    def test_caps(self):
        """
        C{htableMaxCells} caps the peer's tables.
        """
        clock = Clock()
        network = FakeNetwork(clock)
        node = makeNode(clock, network, "127.0.0.11", htables=[KDMQ], htableMaxCells=2)
        self.addCleanup(node.stopService)
        self.assertIsInstance(node.htable, HTablePeer)
        node.htable.set("kdmq", "a", 1)
        node.htable.set("kdmq", "b", 1)
        e = self.assertRaises(RPCError, HTableRPC(node.htable).sets, "kdmq", "c", "v")
        self.assertEqual(e.code, 500)
        self.assertIn("is full", e.message)
