# -*- test-case-name: dmq.test.test_bus -*-
"""
Tests for L{dmq.bus}: peers, dispatch, the job queue, send and broadcast,
over an in-memory network on one clock, and once over real loopback UDP.
"""

from __future__ import annotations

import attr
from twisted.internet import defer, reactor
from twisted.internet.interfaces import IReactorFromThreads
from twisted.internet.task import Clock
from twisted.python.threadpool import ThreadPool
from twisted.trial.unittest import SynchronousTestCase, TestCase
from zope.interface import implementer
from zope.interface.verify import verifyObject

from dmq import sip
from dmq.interfaces import OK, IDMQBus, IDMQPeer, INodeObserver, PeerResponse
from dmq.node import NodeStatus
from dmq.sender import SendOutcome
from dmq.config import NodeConfig
from dmq.tap import makeNodeService
from dmq.test.captures import datagrams
from dmq.test.fakenet import Datagram, FakeNetwork, crashNode, makeNode
from dmq.test.test_sip import parseRequest, parseResponse
from dmq.threaded import ThreadedPeer


@implementer(IDMQPeer)
class RecordingPeer:
    """
    A peer that records what it gets and answers as told.
    """

    description = "records messages"

    def __init__(self, peerId="test", answer=None):
        self.peerId = peerId
        self.received = []
        self.added = []
        self.answer = answer or (lambda request, node: PeerResponse(200, "OK"))

    def messageReceived(self, request, node):
        self.received.append((request, node))
        return self.answer(request, node)

    def nodeAdded(self, node):
        self.added.append(node)


class Bus:
    """
    Several nodes on one in-memory network and clock.
    """

    def __init__(self, testCase, count=3, **options):
        self.clock = Clock()
        self.network = FakeNetwork(self.clock)
        self.hosts = [f"127.0.0.{11 + i}" for i in range(count)]
        self.nodes = [
            makeNode(self.clock, self.network, host, seeds=[self.hosts[0]] if i else [], **options)
            for i, host in enumerate(self.hosts)
        ]
        testCase.addCleanup(self.stop)
        self.network.run(3)

    def stop(self):
        for node in self.nodes:
            if node.running:
                node.stopService()
        self.network.run(70)

    def find(self, viewer, target):
        """
        The L{Node} for node index C{target} in the list of node C{viewer}.
        """
        return self.nodes[viewer].nodeManager.find(sip.URI(self.hosts[target], 5060))


def result(deferred):
    results: list[object] = []
    deferred.addBoth(results.append)
    return results


class PeerRegistryTests(SynchronousTestCase):
    """
    Registering and looking up peers.
    """

    def setUp(self):
        self.bus = Bus(self, count=1)
        self.dmq = self.bus.nodes[0].bus

    def test_interfaces(self):
        """
        The bus provides L{IDMQBus}; the peers provide L{IDMQPeer}.
        """
        self.assertTrue(verifyObject(IDMQBus, self.dmq))
        self.assertTrue(verifyObject(IDMQPeer, self.bus.nodes[0].notification))
        self.assertTrue(verifyObject(IDMQPeer, RecordingPeer()))
        self.assertTrue(verifyObject(IDMQPeer, ThreadedPeer(RecordingPeer(), IReactorFromThreads(reactor), ThreadPool())))

    def test_nodeObserver(self):
        """
        The bus provides L{INodeObserver}: the node manager tells it of
        nodes becoming active.
        """
        self.assertTrue(verifyObject(INodeObserver, self.dmq))

    def test_duplicatePeer(self):
        """
        A second peer with the same C{peerId} is refused.
        """
        self.dmq.registerPeer(RecordingPeer("x"))
        self.assertRaises(ValueError, self.dmq.registerPeer, RecordingPeer("x"))

    def test_notAPeer(self):
        """
        Only L{IDMQPeer} providers can be registered.
        """
        self.assertRaises(TypeError, self.dmq.registerPeer, object())

    def test_badPeerId(self):
        """
        A C{peerId} that cannot be a SIP user part is refused.
        """
        for bad in ["", "a b", "a@b", "a;b", "a:b"]:
            peer = RecordingPeer(bad)
            self.assertRaises(ValueError, self.dmq.registerPeer, peer)

    def test_unregister(self):
        """
        An unregistered peer's requests get 404; unregistering an unknown peer
        raises C{KeyError}.
        """
        self.dmq.registerPeer(RecordingPeer("x"))
        self.dmq.unregisterPeer("x")
        self.assertRaises(KeyError, self.dmq.unregisterPeer, "x")

    def test_localNode(self):
        """
        C{localNode} is the local node, listed first by C{nodes()}.
        """
        self.assertTrue(self.dmq.localNode.local)
        self.assertIs(self.dmq.nodes()[0], self.dmq.localNode)


class DispatchTests(SynchronousTestCase):
    """
    Incoming KDMQ requests reach their peer, and every one is answered.
    """

    def setUp(self):
        self.bus = Bus(self, count=2)
        self.a, self.b = self.bus.nodes

    def send(self, body=b"x", peerId="test", sender=None):
        sender = sender or self.b
        return result(sender.bus.send(peerId, body, self.bus.find(1 if sender is self.b else 0, 0)))

    def test_unicast(self):
        """
        C{send} reaches the peer with the sending node, and fires with the
        peer's answer.
        """
        peer = RecordingPeer(answer=lambda r, n: PeerResponse(200, "Fine", b"{}", "application/json"))
        self.a.bus.registerPeer(peer)
        outcome = self.send(b"hello")
        self.bus.network.run(1)
        [(request, node)] = peer.received
        self.assertEqual(request.body, b"hello")
        self.assertIs(node, self.bus.find(0, 1))
        [response] = outcome
        self.assertEqual((response.code, response.reason, response.body), (200, "Fine", b"{}"))
        self.assertEqual(response.contentType, "application/json")

    def test_answeredAtOnce(self):
        """
        A request to a peer that answers at once is answered as it arrives,
        with no Deferred and no timer of the job queue's: the node's
        delayed calls are the same before and after.
        """
        peer = RecordingPeer()
        self.a.bus.registerPeer(peer)
        request = self.b.bus.buildRequest("test", b"x", self.bus.find(1, 0))
        data = sip.serialise(
            sip.Request(
                request.method,
                request.uri,
                (("Via", "SIP/2.0/UDP 127.0.0.12:5060;branch=z9hG4bKatonce"),)
                + request.headers,
                request.body,
            )
        )
        # A first request, so that the transaction layer's one timer runs.
        self.a.protocol.datagramReceived(data, ("127.0.0.12", 5060))
        scheduled = []
        callLater = self.bus.clock.callLater

        def recordingCallLater(*a, **k):
            scheduled.append(a[1])
            return callLater(*a, **k)

        self.patch(self.bus.clock, "callLater", recordingCallLater)
        sent = len(self.bus.network.sent)
        self.a.protocol.datagramReceived(data.replace(b"atonce", b"again"), ("127.0.0.12", 5060))
        self.assertEqual(len(peer.received), 2)
        [reply] = self.bus.network.sent[sent:]
        response = parseResponse(reply.data)
        self.assertEqual(response.code, 200)
        self.assertEqual((response.header("Server") or "").split("/")[0], "dmq")
        # The one timer made is the network's, carrying the reply.
        self.assertEqual(scheduled, [self.bus.network._deliver])

    def test_unknownPeer(self):
        """
        A request for a peer nobody registered is answered C{404 User Not
        Found}, Kamailio 6.1's phrase.
        """
        outcome = self.send(peerId="nosuchpeer")
        self.bus.network.run(1)
        self.assertEqual((outcome[0].code, outcome[0].reason), (404, "User Not Found"))

    def test_noUser(self):
        """
        A request whose Request-URI has no user part is answered C{400}.
        """
        request = self.b.bus.buildRequest("test", b"", self.bus.find(1, 0))
        request = sip.Request(request.method, request.uri.replace(user=None), request.headers)
        d = self.a.bus.handleRequest(request, ("127.0.0.12", 5060))
        self.assertEqual(self.successResultOf(d).code, 400)

    def test_peerRaises(self):
        """
        A peer that raises is answered C{500}, and the failure is logged.
        """

        def answer(request, node):
            raise RuntimeError("broken peer")

        self.a.bus.registerPeer(RecordingPeer(answer=answer))
        outcome = self.send()
        self.bus.network.run(1)
        self.assertEqual(outcome[0].code, 500)
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)

    def test_peerAnswersNonsense(self):
        """
        A peer that answers something other than a L{PeerResponse} gets a
        C{500} sent for it.
        """
        self.a.bus.registerPeer(RecordingPeer(answer=lambda r, n: "yes"))
        outcome = self.send()
        self.bus.network.run(1)
        self.assertEqual(outcome[0].code, 500)

    def test_slowPeer(self):
        """
        A peer that has not answered within the handler timeout is answered
        C{500}, long before the sender's Timer F.
        """
        cancelled: list[defer.Deferred[PeerResponse]] = []
        pending: defer.Deferred[PeerResponse] = defer.Deferred(cancelled.append)
        self.a.bus.registerPeer(RecordingPeer(answer=lambda r, n: pending))
        outcome = self.send()
        self.bus.network.run(9.9)
        self.assertEqual(outcome, [])
        self.bus.network.run(0.2)
        self.assertEqual((outcome[0].code, outcome[0].reason), (500, "Peer Timed Out"))
        self.assertEqual(cancelled, [pending])

    def test_timeout(self):
        """
        A node that never answers makes C{send} fire with a C{408} after
        Timer F, 32 s, and not before.
        """
        target = self.bus.find(1, 0)
        crashNode(self.bus.network, self.a)
        outcome = result(self.b.bus.send("test", b"x", target))
        self.bus.network.run(31.9)
        self.assertEqual(outcome, [])
        self.bus.network.run(0.2)
        self.assertEqual(outcome[0].code, 408)

    def test_retransmissionHandledOnce(self):
        """
        When the reply is lost, the sender retransmits, and the peer still
        sees the request once.
        """
        peer = RecordingPeer()
        self.a.bus.registerPeer(peer)
        lost: list[Datagram] = []

        def drop(datagram):
            if datagram.data.startswith(b"SIP/2.0 200") and not lost:
                lost.append(datagram)
                return True
            return False

        self.bus.network.drop = drop
        outcome = self.send()
        self.bus.network.run(2)
        self.assertEqual(len(lost), 1)
        self.assertEqual(len(peer.received), 1)
        self.assertEqual(outcome[0].code, 200)

    def test_perSenderOrdering(self):
        """
        With four workers, requests from one node to one peer are handed
        over one after the other, in arrival order, while another sender's
        requests run beside them.
        """
        for node in self.bus.nodes:
            node.stopService()
        bus = Bus(self, count=3, numWorkers=4)
        a, b, c = bus.nodes
        pending: dict[bytes, defer.Deferred[PeerResponse]] = {}

        def answer(request, node):
            d = pending[request.body] = defer.Deferred()
            return d

        peer = RecordingPeer(answer=answer)
        a.bus.registerPeer(peer)
        outcomes = []
        for i in range(3):
            outcomes.append(result(b.bus.send("test", b"b%d" % i, bus.find(1, 0))))
            outcomes.append(result(c.bus.send("test", b"c%d" % i, bus.find(2, 0))))
        bus.network.run(0.1)
        self.assertEqual(sorted(pending), [b"b0", b"c0"])
        pending[b"b0"].callback(PeerResponse(200, "OK"))
        bus.network.run(0.1)
        self.assertEqual(sorted(pending), [b"b0", b"b1", b"c0"])
        pending[b"b1"].callback(PeerResponse(200, "OK"))
        pending[b"c0"].callback(PeerResponse(200, "OK"))
        bus.network.run(0.1)
        self.assertEqual([r.body for r, n in peer.received], [b"b0", b"c0", b"b1", b"b2", b"c1"])
        self.assertEqual([o[0].code for o in outcomes if o], [200, 200, 200])

    def test_queueFull(self):
        """
        When the workers are busy and the queue is full, a request is answered
        C{503} at once.
        """
        for node in self.bus.nodes:
            node.stopService()
        bus = Bus(self, count=2, numWorkers=1, maxQueue=2, maxQueuePerSource=2)
        a, b = bus.nodes
        a.bus.registerPeer(RecordingPeer(answer=lambda r, n: defer.Deferred()))
        outcomes = [result(b.bus.send("test", b"%d" % i, bus.find(1, 0))) for i in range(4)]
        bus.network.run(0.1)
        self.assertEqual([o[0].code for o in outcomes if o], [503])
        self.assertEqual(outcomes[3][0].reason, "Queue Full")
        self.assertEqual(a.bus.queueDepth, 2)
        bus.network.run(11)
        self.assertEqual([o[0].code for o in outcomes], [500, 500, 500, 503])
        self.assertEqual(a.bus.queueDepth, 0)

    def test_stopDrainsQueue(self):
        """
        Stopping the bus lets accepted requests finish and leaves no timer.
        """
        pending: defer.Deferred[PeerResponse] = defer.Deferred()
        self.a.bus.registerPeer(RecordingPeer(answer=lambda r, n: pending))
        outcome = self.send()
        self.bus.network.run(0.1)
        stopped = result(self.a.stopService())
        self.bus.network.run(0.1)
        self.assertEqual(stopped, [])
        pending.callback(PeerResponse(200, "OK"))
        self.bus.network.run(1)
        self.assertEqual(stopped, [None])
        self.assertEqual(outcome[0].code, 200)
        self.b.stopService()
        self.bus.network.run(70)
        self.assertEqual(self.bus.clock.getDelayedCalls(), [])

    def test_unsendablePeerResponse(self):
        """
        A peer answering with a body that is not bytes gets a C{500} sent for
        it, rather than nothing.
        """
        self.a.bus.registerPeer(RecordingPeer(answer=lambda r, n: PeerResponse(200, "OK", "text", "text/plain")))  # type: ignore[arg-type]  # str on purpose
        outcome = self.send()
        self.bus.network.run(1)
        self.assertEqual(outcome[0].code, 500)
        self.assertEqual(len(self.flushLoggedErrors(TypeError)), 1)

    def test_sharedOK(self):
        """
        L{OK}, one L{PeerResponse} that peers share, answers every request
        it is given for C{200 OK}, and cannot be changed by one of them.
        """
        self.a.bus.registerPeer(RecordingPeer(answer=lambda r, n: OK))
        first = self.send(b"1")
        second = self.send(b"2")
        self.bus.network.run(1)
        self.assertEqual([(o.code, o.reason) for o in first + second], [(200, "OK"), (200, "OK")])
        self.assertRaises(attr.exceptions.FrozenInstanceError, setattr, OK, "code", 500)
        self.assertEqual((OK.code, OK.reason, OK.body, OK.contentType), (200, "OK", b"", None))

    def test_deadlinesOutOfOrder(self):
        """
        When the deadline of a queued request fires before that of the one
        from the same sender that runs (equal times fire in any order), the
        queued one is answered C{500} and nothing breaks.
        """
        pending: defer.Deferred[PeerResponse] = defer.Deferred()
        self.a.bus.registerPeer(RecordingPeer(answer=lambda r, n: pending))
        first = self.send(b"1")
        second = self.send(b"2")
        self.bus.network.run(0.1)
        [queue] = self.a.bus._jobs._waiting.values()
        [waiting] = list(queue)
        waiting.deadline.cancel()
        self.a.bus._jobs._timedOut(waiting)
        self.bus.network.run(0.1)
        self.assertEqual((second[0].code, second[0].reason), (500, "Peer Timed Out"))
        pending.callback(PeerResponse(200, "OK"))
        self.bus.network.run(0.1)
        self.assertEqual(first[0].code, 200)
        self.assertEqual(self.a.bus.queueDepth, 0)


class OutcomeObserverTests(SynchronousTestCase):
    """
    L{DMQBus.addOutcomeObserver}: every send's outcome, on every channel.
    """

    def setUp(self):
        self.bus = Bus(self, count=3)
        self.a = self.bus.nodes[0]
        for node in self.bus.nodes:
            node.bus.registerPeer(RecordingPeer())
        self.outcomes: list[SendOutcome] = []
        self.a.bus.addOutcomeObserver(self.outcomes.append)

    def test_outcomes(self):
        """
        Each send's channel, node, status at send and response reach the
        observer before the sender's Deferred fires.
        """
        target = self.bus.find(0, 1)
        seen = []
        d = self.a.bus.send("test", b"x", target)
        d.addCallback(lambda response: seen.append(list(self.outcomes)))
        self.bus.network.run(1)
        [[outcome]] = seen
        self.assertEqual(
            (outcome.peerId, outcome.node, outcome.statusAtSend, outcome.response.code),
            ("test", target, NodeStatus.ACTIVE, 200),
        )

    def test_timeouts(self):
        """
        A node that never answers gives an outcome with a local C{408}.
        """
        crashNode(self.bus.network, self.bus.nodes[2])
        self.a.bus.send("test", b"x", self.bus.find(0, 2))
        self.bus.network.run(33)
        self.assertEqual([o.response.code for o in self.outcomes if o.peerId == "test"], [408])

    def test_failingObserver(self):
        """
        An observer that raises is logged; the others are still called, and
        the sender still gets its response.
        """

        def broken(outcome):
            if outcome.peerId == "test":
                raise RuntimeError("broken observer")

        self.a.bus.removeOutcomeObserver(self.outcomes.append)
        self.a.bus.addOutcomeObserver(broken)
        self.a.bus.addOutcomeObserver(self.outcomes.append)
        sent = result(self.a.bus.send("test", b"x", self.bus.find(0, 1)))
        self.bus.network.run(1)
        self.assertEqual(sent[0].code, 200)
        self.assertEqual([o.peerId for o in self.outcomes], ["test"])
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)

    def test_removed(self):
        """
        A removed observer hears nothing more.
        """
        self.a.bus.removeOutcomeObserver(self.outcomes.append)
        self.a.bus.send("test", b"x", self.bus.find(0, 1))
        self.bus.network.run(1)
        self.assertEqual(self.outcomes, [])


class BroadcastTests(SynchronousTestCase):
    """
    L{DMQBus.broadcast} and the requests the bus builds.
    """

    def test_broadcastSkipsExcludedAndInactive(self):
        """
        A broadcast goes to every active node except the local one and the
        excluded one, and fires with each target's response.
        """
        bus = Bus(self, count=4)
        peers = [RecordingPeer() for _ in bus.nodes]
        for node, peer in zip(bus.nodes, peers):
            node.bus.registerPeer(peer)
        a = bus.nodes[0]
        a.nodeManager.changeStatus(sip.URI(bus.hosts[3], 5060), NodeStatus.NOT_ACTIVE)
        outcome = result(a.bus.broadcast("test", b"all", exclude=bus.find(0, 2)))
        bus.network.run(1)
        [responses] = outcome
        self.assertEqual(list(responses), [bus.find(0, 1)])
        self.assertEqual(responses[bus.find(0, 1)].code, 200)
        self.assertEqual([len(p.received) for p in peers], [0, 1, 0, 0])

    def test_broadcastReportsTimeouts(self):
        """
        A node that never answers a broadcast is in the result with a C{408}.
        """
        bus = Bus(self, count=3)
        for node in bus.nodes:
            node.bus.registerPeer(RecordingPeer())
        crashNode(bus.network, bus.nodes[2])
        outcome = result(bus.nodes[0].bus.broadcast("test", b"all"))
        bus.network.run(33)
        codes = {node.uri.host: r.code for node, r in outcome[0].items()}
        self.assertEqual(codes, {bus.hosts[1]: 200, bus.hosts[2]: 408})

    def test_maxForwardsRefused(self):
        """
        Max-Forwards below 1 is refused: Kamailio rejects C{Max-Forwards: 0}.
        """
        bus = Bus(self, count=2)
        self.assertRaises(ValueError, bus.nodes[0].bus.send, "test", b"", bus.find(0, 1), maxForwards=0)
        self.assertRaises(ValueError, bus.nodes[0].bus.broadcast, "test", b"", maxForwards=0)

    def test_badHeaderValuesRefused(self):
        """
        A content type or peer id that would break the request's headers is
        refused before anything is sent.
        """
        bus = Bus(self, count=2)
        target = bus.find(0, 1)
        for contentType in ["text/plain\r\nX-Injected: 1", "", "a\x00b"]:
            self.assertRaises(ValueError, bus.nodes[0].bus.send, "test", b"", target, contentType)
        self.assertRaises(ValueError, bus.nodes[0].bus.send, "te st", b"", target)
        self.assertRaises(ValueError, PeerResponse, 200, "OK", b"x", "text/plain\r\nX: 1")

    def test_nodeAdded(self):
        """
        Every registered peer hears once of each node that becomes active,
        never of the local node.
        """
        clock = Clock()
        network = FakeNetwork(clock)
        a = makeNode(clock, network, "127.0.0.11")
        peer = RecordingPeer()
        a.bus.registerPeer(peer)
        b = makeNode(clock, network, "127.0.0.12", seeds=["127.0.0.11"])
        c = makeNode(clock, network, "127.0.0.13", seeds=["127.0.0.11"])
        network.run(130)
        self.assertEqual(sorted(n.uri.host for n in peer.added), ["127.0.0.12", "127.0.0.13"])
        for node in (a, b, c):
            node.stopService()
        network.run(70)

    def test_requestLikeKamailios(self):
        """
        A KDMQ request we build has the fields of one Kamailio builds, in
        Kamailio's order.
        """
        [kamailio] = [
            c for c in datagrams("01-bus-formation.txt")
            if c.data.startswith(b"KDMQ") and c.source == "127.0.0.1:5062"
        ][:1]
        theirs = parseRequest(kamailio.data)
        clock = Clock()
        network = FakeNetwork(clock)
        node = makeNodeService(
            clock,
            NodeConfig(
                serverAddress=sip.URI("127.0.0.1", 5062),
                notificationAddresses=(sip.URI("127.0.0.1", 5061),),
            ),
            listen=False,
        )
        network.attach(node.protocol, ("127.0.0.1", 5062))
        target = node.nodeManager.find(sip.URI("127.0.0.1", 5061))
        assert target is not None
        ours = node.bus.buildRequest("notification_peer", theirs.body, target, "text/plain", 2)
        node.protocol.sendRequest(ours, ("127.0.0.1", 5061)).addErrback(lambda f: None)
        # Now the request as it went out, parsed back.
        ours = parseRequest(network.sent[-1].data)
        self.addCleanup(node.protocol.stop)
        self.assertEqual(ours.method, theirs.method)
        self.assertEqual(ours.uri, theirs.uri)
        self.assertEqual(ours.header("To"), theirs.header("To"))
        self.assertEqual(ours.fromAddress.uri, theirs.fromAddress.uri)
        self.assertIsNotNone(ours.fromAddress.tag)
        self.assertEqual(ours.cseq, theirs.cseq)
        self.assertEqual(ours.maxForwards, theirs.maxForwards)
        self.assertEqual(ours.contentType, theirs.contentType)
        self.assertEqual(ours.body, theirs.body)
        self.assertEqual(ours.via[0].transport, theirs.via[0].transport)
        self.assertEqual((ours.via[0].host, ours.via[0].port), (theirs.via[0].host, theirs.via[0].port))
        self.assertTrue((ours.via[0].branch or "").startswith("z9hG4bK"))
        self.assertTrue(ours.callID.endswith("@127.0.0.1"))
        self.assertEqual(
            [name for name, _ in ours.headers if name != "User-Agent"],
            [name for name, _ in theirs.headers if name != "User-Agent"],
        )
        self.assertEqual(sip.serialise(ours)[-len(theirs.body) - 4 :], b"\r\n\r\n" + theirs.body)


class LoopbackBusIntegrationTests(TestCase):
    """
    Two buses in one reactor over real loopback UDP.
    """

    @defer.inlineCallbacks
    def test_sendOverLoopback(self):
        """
        Two nodes on 127.0.0.11 and 127.0.0.12 find each other and carry a
        message over real sockets.
        """
        a = makeNodeService(reactor, NodeConfig(serverAddress=sip.URI("127.0.0.11", 25060), pingInterval=1))
        b = makeNodeService(
            reactor,
            NodeConfig(
                serverAddress=sip.URI("127.0.0.12", 25060),
                notificationAddresses=(sip.URI("127.0.0.11", 25060),),
                pingInterval=1,
            ),
        )
        peer = RecordingPeer(answer=lambda r, n: PeerResponse(200, "OK", r.body.upper(), "text/plain"))
        a.bus.registerPeer(peer)
        for node in (a, b):
            node.startService()
            self.addCleanup(node.stopService)
        for _ in range(100):
            if b.nodeManager.activeNodes() and a.nodeManager.activeNodes():
                break
            yield deferLater(0.05)
        [target] = b.nodeManager.activeNodes()
        response = yield b.bus.send("test", b"hello", target)
        self.assertEqual((response.code, response.body), (200, b"HELLO"))
        self.assertEqual(peer.received[0][1].uri.host, "127.0.0.12")


def deferLater(seconds):
    from twisted.internet.task import deferLater as _deferLater

    return _deferLater(reactor, seconds, lambda: None)
