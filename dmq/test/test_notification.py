# -*- test-case-name: dmq.test.test_notification -*-
"""
Tests for membership: L{dmq.notification} and L{dmq.ping} running over the
bus, with whole nodes on an in-memory network and one clock, and once over
real loopback UDP.
"""

from __future__ import annotations

import itertools

from twisted.internet import defer, reactor
from twisted.internet.task import Clock, deferLater
from twisted.logger import capturedLogs
from twisted.names import dns
from twisted.trial.unittest import SynchronousTestCase, TestCase

from dmq import sip
from dmq.sender import SendOutcome
from dmq.node import NodeStatus
from dmq.nodelist import parseNodeList
from dmq.config import NodeConfig
from dmq.metrics import nodeRegistry
from dmq.tap import makeNodeService
from dmq.test.fakenet import FakeNetwork, crashNode, makeNode

HOSTS = ["127.0.0.11", "127.0.0.12", "127.0.0.13"]


def statuses(node):
    """
    What C{node} thinks of the others: C{{host: status}}.
    """
    return {
        n.uri.host: n.status.value for n in node.nodeManager.nodes() if not n.local
    }


def allActive(nodes):
    hosts = [n.protocol.sentBy[0] for n in nodes]
    return all(
        statuses(node) == {h: "active" for h in hosts if h != node.protocol.sentBy[0]}
        for node in nodes
    )


class Recorder:
    """
    A node observer that notes when nodes change.
    """

    def __init__(self, clock):
        self.clock = clock
        self.events = []

    def nodeActivated(self, node):
        self.events.append((self.clock.seconds(), "activated", node.uri.host))

    def nodeDeactivated(self, node):
        self.events.append((self.clock.seconds(), node.status.value, node.uri.host))


class Cluster:
    def __init__(self, testCase, **options):
        self.clock = Clock()
        self.network = FakeNetwork(self.clock)
        self.options = options
        self.nodes = {}
        testCase.addCleanup(self.stopAll)

    def start(self, host, seeds=()):
        node = makeNode(self.clock, self.network, host, seeds=seeds, **self.options)
        self.nodes[host] = node
        return node

    def stopAll(self):
        for node in self.nodes.values():
            if node.running:
                node.stopService()
        self.network.run(100)


class ConvergenceTests(SynchronousTestCase):
    """
    Nodes find each other whatever order they start in.
    """

    def test_everyStartOrder(self):
        """
        Three nodes, two of them seeded with the first, agree that all three
        are active within a few seconds of the last start, in every start
        order, including the seed starting last.
        """
        for order in itertools.permutations(HOSTS):
            cluster = Cluster(self, pingInterval=5)
            for host in order:
                cluster.start(host, seeds=[] if host == HOSTS[0] else [HOSTS[0]])
                cluster.network.run(2)
            cluster.network.run(5)
            self.assertTrue(
                allActive(list(cluster.nodes.values())),
                f"start order {order}: {[statuses(n) for n in cluster.nodes.values()]}",
            )
            cluster.stopAll()

    def test_seedsNamingEachOther(self):
        """
        Two nodes that name each other as their notification address form a
        bus.
        """
        cluster = Cluster(self, pingInterval=5)
        a = cluster.start(HOSTS[0], seeds=[HOSTS[1]])
        cluster.network.run(3)
        b = cluster.start(HOSTS[1], seeds=[HOSTS[0]])
        cluster.network.run(3)
        self.assertTrue(allActive([a, b]))

    def test_seedStartsMuchLater(self):
        """
        A node whose seed starts 100 s after it keeps trying and joins once
        the seed is up, without waiting for a ping.
        """
        cluster = Cluster(self, pingInterval=60)
        b = cluster.start(HOSTS[1], seeds=[HOSTS[0]])
        cluster.network.run(100)
        self.assertEqual(statuses(b), {HOSTS[0]: "not_active"})
        a = cluster.start(HOSTS[0])
        cluster.network.run(40)
        self.assertTrue(allActive([a, b]))

    def test_duplicateSeedsFolded(self):
        """
        The same seed given twice, and in another spelling, is one node.
        """
        cluster = Cluster(self)
        b = cluster.start(
            HOSTS[1],
            seeds=[HOSTS[0], HOSTS[0], ("127.0.0.11", 5060)],
        )
        b.nodeManager.addSeed(sip.parseURI("sip:127.0.0.11:5060;transport=udp"))
        self.assertEqual(len(b.nodeManager.pingTargets()), 1)

    def test_selfAsSeedIgnored(self):
        """
        A notification address that names ourselves adds no node.
        """
        cluster = Cluster(self)
        a = cluster.start(HOSTS[0], seeds=[HOSTS[0]])
        self.assertEqual(a.nodeManager.pingTargets(), [])


class FailureTests(SynchronousTestCase):
    """
    Nodes that crash, stop and come back.
    """

    def setUp(self):
        self.cluster = Cluster(self, pingInterval=5)
        self.a = self.cluster.start(HOSTS[0])
        self.b = self.cluster.start(HOSTS[1], seeds=[HOSTS[0]])
        self.c = self.cluster.start(HOSTS[2], seeds=[HOSTS[0]])
        self.cluster.network.run(10)
        self.assertTrue(allActive([self.a, self.b, self.c]))
        self.recorder = Recorder(self.cluster.clock)
        self.a.nodeManager.addObserver(self.recorder)

    def events(self, host):
        return [(t, what) for t, what, h in self.recorder.events if h == host]

    def test_crashedNodeDisabledThenRemoved(self):
        """
        A node killed without a goodbye is disabled by the others after at
        most one ping interval plus Timer F, and removed one interval plus
        Timer F later; nobody brings it back.
        """
        crashedAt = self.cluster.clock.seconds()
        crashNode(self.cluster.network, self.c)
        self.cluster.network.run(5 + 32 + 0.1)
        [(disabledAt, what)] = self.events(HOSTS[2])
        self.assertEqual(what, "disabled")
        self.assertTrue(32 <= disabledAt - crashedAt <= 5 + 32 + 0.1, disabledAt - crashedAt)
        self.assertEqual(statuses(self.b)[HOSTS[2]], "disabled")
        self.cluster.network.run(5 + 32)
        self.assertNotIn(HOSTS[2], statuses(self.a))
        self.assertNotIn(HOSTS[2], statuses(self.b))
        self.cluster.network.run(120)
        self.assertNotIn(HOSTS[2], statuses(self.a))
        self.assertEqual(statuses(self.a), {HOSTS[1]: "active"})

    def test_pingTimeoutDetectsSooner(self):
        """
        With C{pingTimeout}, a dead node is disabled within one interval plus
        that timeout.
        """
        cluster = Cluster(self, pingInterval=2, pingTimeout=1)
        a = cluster.start(HOSTS[0])
        c = cluster.start(HOSTS[2], seeds=[HOSTS[0]])
        cluster.network.run(5)
        recorder = Recorder(cluster.clock)
        a.nodeManager.addObserver(recorder)
        crashedAt = cluster.clock.seconds()
        crashNode(cluster.network, c)
        cluster.network.run(2 + 1 + 0.1)
        self.assertEqual([e[1] for e in recorder.events], ["disabled"])
        self.assertLessEqual(recorder.events[0][0] - crashedAt, 3.1)
        cluster.network.run(3.1)
        self.assertEqual(statuses(a), {})

    def test_restartRejoins(self):
        """
        A crashed node that starts again is active again for everyone.
        """
        crashNode(self.cluster.network, self.c)
        self.cluster.network.run(80)
        self.assertNotIn(HOSTS[2], statuses(self.a))
        self.c = self.cluster.start(HOSTS[2], seeds=[HOSTS[0]])
        self.cluster.network.run(3)
        self.assertTrue(allActive([self.a, self.b, self.c]))

    def test_gracefulStopSeenAtOnce(self):
        """
        A node that stops tells the others, who mark it disabled at once and
        do not wait for a timeout.
        """
        stopped: list[object] = []
        self.c.stopService().addCallback(stopped.append)
        self.cluster.network.run(0.1)
        self.assertEqual(stopped, [None])
        self.assertEqual(statuses(self.a)[HOSTS[2]], "disabled")
        self.assertEqual(statuses(self.b)[HOSTS[2]], "disabled")
        # The goodbye was a notification request saying we are disabled.
        goodbyes = [d for d in self.cluster.network.sent if b"status=disabled" in d.data]
        self.assertEqual({d.source for d in goodbyes}, {(HOSTS[2], 5060)})

    def test_deadSeedNotResurrected(self):
        """
        When the seed dies, its stale "active" lines from other nodes do not
        keep it alive: both survivors mark it not active and keep it so.
        """
        crashNode(self.cluster.network, self.a)
        self.cluster.network.run(5 + 32 + 1)
        self.assertEqual(statuses(self.b)[HOSTS[0]], "not_active")
        self.assertEqual(statuses(self.c)[HOSTS[0]], "not_active")
        for _ in range(10):
            self.cluster.network.run(12)
            self.assertEqual(statuses(self.b), {HOSTS[0]: "not_active", HOSTS[2]: "active"})
            self.assertEqual(statuses(self.c), {HOSTS[0]: "not_active", HOSTS[1]: "active"})
        # Nobody lists the dead seed in a body any more.
        recent = [d for d in self.cluster.network.sent if d.time > self.cluster.clock.seconds() - 20]
        self.assertFalse(any(b"sip:127.0.0.11:5060;status=active" in d.data for d in recent))
        self.a = self.cluster.start(HOSTS[0])
        self.cluster.network.run(6)
        self.assertTrue(allActive([self.a, self.b, self.c]))

    def test_noLeftoverTimers(self):
        """
        Stopping every node leaves nothing on the clock.
        """
        self.cluster.stopAll()
        self.assertEqual(self.cluster.clock.getDelayedCalls(), [])


class SendEndedTests(SynchronousTestCase):
    """
    L{NotificationPeer.sendEnded}: Kamailio's response callbacks, applied to
    the node manager for every send of the bus.
    """

    def setUp(self):
        self.cluster = Cluster(self, pingInterval=60)
        self.a = self.cluster.start(HOSTS[0])
        self.manager = self.a.nodeManager
        self.node = self.manager.add(sip.URI(HOSTS[1], 5060))

    def ended(self, peerId, code, statusAtSend=NodeStatus.ACTIVE):
        request = self.a.bus.buildRequest(peerId, b"", self.node)
        response = sip.responseFor(request, code, "Whatever")
        self.a.notification.sendEnded(SendOutcome(peerId, self.node, statusAtSend, response))

    def test_notificationTimeout(self):
        """
        A C{408} on the membership channel demotes the node, and removes it
        when it was C{disabled} at send.
        """
        self.ended("notification_peer", 408)
        self.assertIs(self.node.status, NodeStatus.DISABLED)
        self.ended("notification_peer", 408, NodeStatus.DISABLED)
        self.assertIsNone(self.manager.find(sip.URI(HOSTS[1], 5060)))

    def test_notificationSuccess(self):
        """
        A C{200} on the membership channel makes the node active.
        """
        self.manager.changeStatus(sip.URI(HOSTS[1], 5060), NodeStatus.DISABLED)
        self.ended("notification_peer", 200)
        self.assertIs(self.node.status, NodeStatus.ACTIVE)

    def test_otherChannels(self):
        """
        On another channel a C{200} changes nothing, and a C{408} counts
        only with fail counts (off by default); other codes never count.
        """
        self.manager.changeStatus(sip.URI(HOSTS[1], 5060), NodeStatus.NOT_ACTIVE)
        self.ended("htable", 200)
        self.ended("htable", 408)
        self.assertIs(self.node.status, NodeStatus.NOT_ACTIVE)
        self.assertEqual(self.node.failCount, 0)
        self.ended("notification_peer", 500)
        self.assertIs(self.node.status, NodeStatus.NOT_ACTIVE)

    def test_otherChannelFailCount(self):
        """
        With fail counts, a C{408} on another channel counts against an
        active node.
        """
        cluster = Cluster(self, pingInterval=60, failCountEnabled=True)
        a = cluster.start(HOSTS[0])
        node = a.nodeManager.add(sip.URI(HOSTS[1], 5060))
        request = a.bus.buildRequest("htable", b"", node)
        response = sip.responseFor(request, 408, "Request Timeout")
        a.notification.sendEnded(SendOutcome("htable", node, NodeStatus.ACTIVE, response))
        self.assertEqual(node.failCount, 1)
        self.assertIs(node.status, NodeStatus.NOT_ACTIVE)

    def test_wiredToTheBus(self):
        """
        The peer hears of the bus's sends from its creation.
        """
        crashNode(self.cluster.network, self.cluster.start(HOSTS[1]))
        self.a.bus.send("htable", b"", self.node)
        self.a.bus.send("notification_peer", b"", self.node)
        self.cluster.network.run(33)
        self.assertIs(self.node.status, NodeStatus.DISABLED)


def notify(cluster, node, body, maxForwards=1, sender=HOSTS[2]):
    """
    Have C{node} of C{cluster} receive a notification request with C{body}
    from C{sender}, and return the messages sent in the next 0.4 s.
    """
    host = node.protocol.sentBy[0]
    request = sip.Request(
        "KDMQ",
        sip.URI(host, 5060, "notification_peer"),
        (
            ("Via", f"SIP/2.0/UDP {sender}:5060;branch=z9hG4bK{len(cluster.network.sent)}x"),
            ("To", f"<sip:notification_peer@{host}:5060>"),
            ("From", f"<sip:notification_peer@{sender}:5060>;tag=1"),
            ("CSeq", "10 KDMQ"),
            ("Call-ID", f"c{len(cluster.network.sent)}@{sender}"),
            ("Max-Forwards", str(maxForwards)),
            ("Content-Type", "text/plain"),
        ),
        body,
    )
    sent = len(cluster.network.sent)
    node.protocol.datagramReceived(sip.serialise(request), (sender, 5060))
    # Less than T1, so that nothing is retransmitted yet.
    cluster.network.run(0.4)
    return [sip.parse(d.data) for d in cluster.network.sent[sent:]]


def replies(messages, sender=HOSTS[2]):
    """
    The responses among C{messages} to what L{notify} sent as C{sender}.
    """
    return [
        m for m in messages if isinstance(m, sip.Response) and m.callID.endswith(f"@{sender}")
    ]


class NotificationPeerTests(SynchronousTestCase):
    """
    What the notification peer does with one request.
    """

    def setUp(self):
        self.cluster = Cluster(self, pingInterval=60)
        self.a = self.cluster.start(HOSTS[0])
        self.b = self.cluster.start(HOSTS[1], seeds=[HOSTS[0]])
        self.cluster.network.run(1)

    def notify(self, body, maxForwards=1, sender=HOSTS[2]):
        return notify(self.cluster, self.a, body, maxForwards, sender)

    def test_badLineSkipped(self):
        """
        A line with an unknown status (which wedges Kamailio 5.6.3) is skipped,
        the rest is merged, and the request is answered 200 with our list.
        (The sender is a member: a stranger's other lines are not merged.)
        """
        messages = self.notify(
            b"sip:127.0.0.13:5060;status=bogus\r\nsip:127.0.0.14:5060;status=active\r\n",
            sender=HOSTS[1],
        )
        [reply] = [m for m in messages if isinstance(m, sip.Response)]
        self.assertEqual(reply.code, 200)
        self.assertEqual(
            reply.body,
            b"sip:127.0.0.14:5060;status=active\r\n"
            b"sip:127.0.0.12:5060;status=active\r\n"
            b"sip:127.0.0.11:5060;status=active\r\n",
        )
        self.assertIn(HOSTS[1], statuses(self.a))
        self.assertNotIn(HOSTS[2], statuses(self.a))
        self.assertEqual(self.a.nodeManager.statistics["nodeLineBadStatus"], 1)

    def test_rebroadcastWithMaxForwards(self):
        """
        A join (Max-Forwards 2) that brings news is passed on to the active
        nodes with Max-Forwards 1.
        """
        messages = self.notify(b"sip:127.0.0.13:5060;status=active\r\n", maxForwards=2)
        requests = [m for m in messages if isinstance(m, sip.Request)]
        self.assertEqual(
            sorted((r.uri.host, r.maxForwards) for r in requests),
            [("127.0.0.12", 1), ("127.0.0.13", 1)],
        )

    def test_pingNotRebroadcast(self):
        """
        A ping (Max-Forwards 1) is never passed on, even with news.
        """
        messages = self.notify(b"sip:127.0.0.13:5060;status=active\r\n", maxForwards=1)
        self.assertEqual([m for m in messages if isinstance(m, sip.Request)], [])

    def test_nothingNewNotRebroadcast(self):
        """
        A join that changes nothing is not passed on.
        """
        self.notify(b"sip:127.0.0.13:5060;status=active\r\n", maxForwards=1)
        messages = self.notify(b"sip:127.0.0.13:5060;status=active\r\n", maxForwards=2)
        self.assertEqual([m for m in messages if isinstance(m, sip.Request)], [])

    def test_emptyBody(self):
        """
        An empty node list (Kamailio's probe) is answered with our list.
        """
        [reply] = [m for m in self.notify(b"") if isinstance(m, sip.Response)]
        self.assertEqual(reply.code, 200)
        self.assertTrue(reply.body.endswith(b"sip:127.0.0.11:5060;status=active\r\n"))


class FakeResolver:
    """
    A resolver that knows one name.
    """

    def __init__(self, name, ipv4, ipv6=()):
        self.name = name
        self.ipv4 = ipv4
        self.ipv6 = ipv6
        self.queries = []

    def _answer(self, name, records):
        self.queries.append(name)
        if name != self.name:
            from twisted.names.error import DNSNameError

            return defer.fail(DNSNameError(name))
        answers = [dns.RRHeader(name, payload=record) for record in records]
        return defer.succeed((answers, [], []))

    def lookupAddress(self, name, timeout=None):
        return self._answer(name, [dns.Record_A(ip) for ip in self.ipv4])

    def lookupIPV6Address(self, name, timeout=None):
        return self._answer(name, [dns.Record_AAAA(ip) for ip in self.ipv6])


class MultiNotifyTests(SynchronousTestCase):
    """
    C{multiNotify} expands a notification address named by a host name.
    """

    def test_threeAddresses(self):
        """
        A name with three addresses gives three seeds, and the join goes to
        each of them.
        """
        clock = Clock()
        network = FakeNetwork(clock)
        resolver = FakeResolver("dmq.example", ["127.0.0.11", "127.0.0.12", "127.0.0.13"])
        peers = [makeNode(clock, network, host) for host in HOSTS]
        node = makeNode(
            clock, network, "127.0.0.14", seeds=["dmq.example"], multiNotify=True, resolver=resolver
        )
        network.run(2)
        self.assertEqual(sorted(resolver.queries), ["dmq.example", "dmq.example"])
        self.assertEqual(sorted(statuses(node)), HOSTS)
        self.assertEqual(set(statuses(node).values()), {"active"})
        for other in peers + [node]:
            other.stopService()
        network.run(70)

    def test_unresolvable(self):
        """
        A name that does not resolve is logged, and retried at the next join
        attempt.
        """
        clock = Clock()
        network = FakeNetwork(clock)
        resolver = FakeResolver("other.example", ["127.0.0.11"])
        node = makeNode(
            clock, network, "127.0.0.14", seeds=["dmq.example"], multiNotify=True, resolver=resolver
        )
        network.run(10)
        self.assertEqual(statuses(node), {})
        self.assertGreater(len(resolver.queries), 2)
        node.stopService()
        network.run(70)
        self.assertEqual(clock.getDelayedCalls(), [])


class LoopbackMembershipIntegrationTests(TestCase):
    """
    Three nodes over real loopback UDP.
    """

    @defer.inlineCallbacks
    def test_threeNodesAgree(self):
        """
        Three nodes on 127.0.0.11-13 form a bus and agree on their lists.
        """
        nodes = []
        for i, host in enumerate(HOSTS):
            seeds = (sip.URI(HOSTS[0], 35060),) if i else ()
            node = makeNodeService(
                reactor,
                NodeConfig(serverAddress=sip.URI(host, 35060), notificationAddresses=seeds, pingInterval=1),
            )
            node.startService()
            self.addCleanup(node.stopService)
            nodes.append(node)
        for _ in range(100):
            if allActive(nodes):
                break
            yield deferLater(reactor, 0.05, lambda: None)
        self.assertTrue(allActive(nodes), [statuses(n) for n in nodes])
        bodies = {n.nodeManager.nodeListBody().count(b"\r\n") for n in nodes}
        self.assertEqual(bodies, {3})


class SeedRestartTests(SynchronousTestCase):
    """
    A seed that leaves, and comes back.
    """

    def test_seedGracefulRestart(self):
        """
        A seed that says goodbye and stays away for a long time is still
        pinged by the others, and they take it back when it restarts.
        """
        cluster = Cluster(self, pingInterval=5)
        a = cluster.start(HOSTS[0])
        b = cluster.start(HOSTS[1], seeds=[HOSTS[0]])
        cluster.network.run(3)
        self.assertTrue(allActive([a, b]))
        a.stopService()
        cluster.network.run(1)
        cluster.network.detach((HOSTS[0], 5060))
        cluster.network.run(600)
        self.assertEqual(statuses(b), {HOSTS[0]: "disabled"})
        a = cluster.start(HOSTS[0])
        cluster.network.run(6)
        self.assertTrue(allActive([a, b]))

    def test_serviceRestart(self):
        """
        A node service stopped and started again rejoins.
        """
        cluster = Cluster(self, pingInterval=5)
        a = cluster.start(HOSTS[0])
        b = cluster.start(HOSTS[1], seeds=[HOSTS[0]])
        cluster.network.run(3)
        b.stopService()
        cluster.network.run(1)
        self.assertEqual(statuses(a), {HOSTS[1]: "disabled"})
        b.startService()
        cluster.network.run(3)
        self.assertTrue(allActive([a, b]))


class ResolvingClock(Clock):
    """
    A clock that also resolves host names, as a reactor does.
    """

    def __init__(self, names):
        Clock.__init__(self)
        self.names = names
        self.lookups = []

    def resolve(self, name, timeout=None):
        """
        Resolve C{name}: to its address in C{names}; when that is an
        exception, fail with it (a C{TypeError} is raised at once); when
        C{None}, never answer.
        """
        self.lookups.append(name)
        answer = self.names.get(name, KeyError)
        if answer is KeyError:
            from twisted.internet.error import DNSLookupError

            return defer.fail(DNSLookupError(name))
        if answer is None:
            return defer.Deferred()
        if isinstance(answer, TypeError):
            raise answer
        if isinstance(answer, Exception):
            return defer.fail(answer)
        return defer.succeed(answer)


class HostNameTests(SynchronousTestCase):
    """
    Nodes named by a host name in received lists.
    """

    def setUp(self):
        self.clock = ResolvingClock(
            {
                "me.example": "127.0.0.11",
                "b.example": "127.0.0.12",
                "unicode.example": UnicodeError("label too long"),
                "raises.example": TypeError("a resolver bug"),
                "hangs.example": None,
            }
        )
        self.network = FakeNetwork(self.clock)
        self.a = makeNode(self.clock, self.network, HOSTS[0], pingInterval=5)
        self.b = makeNode(self.clock, self.network, HOSTS[1], seeds=[HOSTS[0]], pingInterval=5)
        self.network.run(3)
        self.addCleanup(self.stop)

    def stop(self):
        for node in (self.a, self.b):
            node.stopService()
        self.network.run(70)

    def test_unresolvableRemoved(self):
        """
        A node whose name does not resolve counts as not answering: it is
        disabled, then removed, and nobody lists it meanwhile.
        """
        self.a.nodeManager.merge(parseNodeList(b"sip:ghost.invalid:5060;status=active\r\n").entries)
        self.network.run(6)
        self.assertEqual(statuses(self.a).get("ghost.invalid"), "disabled")
        self.network.run(5)
        self.assertNotIn("ghost.invalid", statuses(self.a))
        self.assertNotIn(b"ghost.invalid", self.a.nodeManager.nodeListBody())

    def test_anyResolverFailure(self):
        """
        Whatever the resolver does wrong (fails with any exception, raises,
        never answers), the send ends with a local 408: the node is
        disabled, then removed, as one that does not answer; each failure
        is one warning without a traceback.
        """
        names = ["unicode.example", "raises.example", "hangs.example"]
        body = b"".join(b"sip:%s:5060;status=active\r\n" % n.encode() for n in names)
        with capturedLogs() as events:
            self.a.nodeManager.merge(parseNodeList(body).entries)
            self.network.run(6)
            self.assertEqual(
                [statuses(self.a).get(n) for n in names], ["disabled", "disabled", "active"]
            )
            self.network.run(5)
            self.assertEqual(statuses(self.a), {HOSTS[1]: "active", "hangs.example": "active"})
            # The name that never resolves is given the resolver's 32 s.
            self.network.run(32)
            self.assertEqual(statuses(self.a)["hangs.example"], "disabled")
            self.network.run(5 + 32)
        self.assertEqual(statuses(self.a), {HOSTS[1]: "active"})
        self.assertFalse(any("log_failure" in e for e in events))
        # At most one a minute on each of a and b (a's list told b of the
        # names before they failed), of the ten failed resolutions.
        unresolved = [e for e in events if e.get("cause") == "unresolved"]
        self.assertLessEqual(len(unresolved), 2 * 2)
        self.assertGreaterEqual(len([n for n in self.clock.lookups if n in names]), 10)

    def test_nameOfOurselves(self):
        """
        A name that resolves to our own address is dropped, and we never
        send to ourselves.
        """
        self.a.nodeManager.merge(parseNodeList(b"sip:me.example:5060;status=active\r\n").entries)
        self.network.run(11)
        self.assertNotIn("me.example", statuses(self.a))
        toSelf = [d for d in self.network.sent if d.source == d.destination]
        self.assertEqual(toSelf, [])

    def test_nameOfKnownNode(self):
        """
        A name that resolves to a node known by its address is that node:
        the duplicate is dropped and a broadcast reaches it once.
        """
        self.a.nodeManager.merge(parseNodeList(b"sip:b.example:5060;status=active\r\n").entries)
        self.network.run(6)
        self.assertEqual(statuses(self.a), {HOSTS[1]: "active"})
        self.assertEqual(self.clock.lookups.count("b.example"), 1)


def membershipEvents(node):
    """
    The C{dmq_membership_events_total} counters of C{node}'s metrics:
    C{{event: count}}.
    """
    found = {}
    for family in nodeRegistry(node).collect():
        for sample in family.samples:
            if sample.name == "dmq_membership_events_total":
                found[sample.labels["event"]] = sample.value
    return found


def overlongLabel(i):
    # 64 characters: one more than a DNS label may have.
    return f"x{i:03d}" + "y" * 60


class HostileListTests(SynchronousTestCase):
    """
    Node lists made to break membership (issue 14, findings 1 and 2): each
    bad line is refused before it is stored, counted and logged at most
    once a minute per cause, and the bus goes on timing dead nodes out.
    """

    def setUp(self):
        self.cluster = Cluster(self, pingInterval=5)
        self.a = self.cluster.start(HOSTS[0])
        self.b = self.cluster.start(HOSTS[1], seeds=[HOSTS[0]])
        self.c = self.cluster.start(HOSTS[2], seeds=[HOSTS[0]])
        self.cluster.network.run(10)
        self.assertTrue(allActive([self.a, self.b, self.c]))

    def notify(self, body, sender="127.0.0.99"):
        """
        Have C{a} receive C{body} from C{sender}: the replies to it.
        """
        return replies(notify(self.cluster, self.a, body, sender=sender), sender)

    def assertKilledNodeRemoved(self):
        """
        Kill C{c} with no goodbye: the others disable it within one ping
        interval plus Timer F, and remove it one more later.
        """
        crashNode(self.cluster.network, self.c)
        self.cluster.network.run(5 + 32 + 0.1)
        self.assertEqual(statuses(self.a).get(HOSTS[2]), "disabled")
        self.cluster.network.run(5 + 32)
        self.assertEqual(statuses(self.a), {HOSTS[1]: "active"})
        self.assertEqual(statuses(self.b), {HOSTS[0]: "active"})

    def test_nonASCIIParameter(self):
        """
        The datagram of finding 1, a line with C{transport=é}, is answered
        C{200} with our list; the line is skipped and counted, and a node
        killed afterwards still times out and is removed.
        """
        body = "sip:127.0.3.45:5060;transport=\u00e9;status=active\r\n".encode("utf-8")
        [reply] = self.notify(body)
        self.assertEqual(reply.code, 200)
        self.assertNotIn("127.0.3.45", statuses(self.a))
        self.assertEqual(membershipEvents(self.a).get("node_line_not_ascii"), 1)
        self.assertKilledNodeRemoved()

    def test_pingSurvivesAFailingTick(self):
        """
        A ping tick that fails is logged once (a bug, so with its
        traceback), and the next ticks run: a node killed afterwards is
        still timed out and removed.
        """
        announce = self.a.notification.announce
        failed: list[tuple[object, ...]] = []

        def broken(*args, **kwargs):
            if len(failed) < 3:
                failed.append(args)
                raise RuntimeError("broken announce")
            return announce(*args, **kwargs)

        self.patch(self.a.notification, "announce", broken)
        self.cluster.network.run(16)
        self.assertEqual(len(failed), 3)
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)
        self.assertKilledNodeRemoved()

    def test_overlongLabels(self):
        """
        The datagram of finding 2: 127 lines (11.6 KB) whose host has a label
        of 64 characters add no node and pass nothing on; a real node still
        joins.
        """
        body = b"".join(
            f"sip:{overlongLabel(i)}.example:5060;status=active\r\n".encode("ascii")
            for i in range(127)
        )
        self.assertGreater(len(body), 11000)
        with capturedLogs() as events:
            messages = notify(self.cluster, self.a, body, maxForwards=2, sender="127.0.0.99")
        [reply] = replies(messages, "127.0.0.99")
        self.assertEqual(reply.code, 200)
        passedOn = [m for m in messages if isinstance(m, sip.Request) and b"example" in m.body]
        self.assertEqual(len(passedOn), 0)
        self.assertEqual(statuses(self.a), {HOSTS[1]: "active", HOSTS[2]: "active"})
        self.assertEqual(membershipEvents(self.a).get("node_line_bad_host"), 127)
        self.assertEqual(len([e for e in events if e["log_level"].name == "warn"]), 1)
        d = self.cluster.start("127.0.0.14", seeds=[HOSTS[0]])
        self.cluster.network.run(6)
        self.assertTrue(allActive([self.a, self.b, self.c, d]))

    def test_hugeLabels(self):
        """
        Lines with 4,700-character labels are refused as too long: our body
        stays small, and our pings go on.
        """
        for start in (0, 7):
            body = b"".join(
                f"sip:{i}{'z' * 4700}.example:5060;status=active\r\n".encode("ascii")
                for i in range(start, start + 7)
            )
            [reply] = self.notify(body)
            self.assertEqual(reply.code, 200)
        self.assertEqual(membershipEvents(self.a).get("node_line_too_long"), 14)
        self.assertLess(len(self.a.nodeManager.nodeListBody()), 200)
        self.assertKilledNodeRemoved()

    def test_numericShorthand(self):
        """
        Host names that resolvers read as other addresses (C{127.1},
        C{12}, C{0x7f000001}) are refused.
        """
        body = (
            b"sip:127.1:5060;status=active\r\n"
            b"sip:12:5060;status=active\r\n"
            b"sip:0x7f000001:5060;status=active\r\n"
        )
        [reply] = self.notify(body)
        self.assertEqual(reply.code, 200)
        self.assertEqual(statuses(self.a), {HOSTS[1]: "active", HOSTS[2]: "active"})
        self.assertEqual(membershipEvents(self.a).get("node_line_bad_host"), 3)

    def test_warningsRateLimited(self):
        """
        A flood of bad lines logs one warning per cause a minute, with no
        traceback, and counts every line.
        """
        body = (
            "sip:127.0.3.45:5060;transport=\u00e9;status=active\r\n"
            f"sip:{overlongLabel(1)}:5060;status=active\r\n"
            "sip:127.0.3.46:5060;status=bogus\r\n"
            "sip:127.0.3.47:5060;transport=a%20b\r\n"
        ).encode("utf-8")
        with capturedLogs() as events:
            for i in range(100):
                self.notify(body, sender=f"127.0.1.{i}")
        warnings = [e for e in events if e["log_level"].name in ("warn", "error", "critical")]
        self.assertEqual(
            sorted(e["cause"] for e in warnings),
            ["nodeLine.badHost", "nodeLine.badParameter", "nodeLine.badStatus", "nodeLine.notAscii"],
        )
        self.assertFalse(any("log_failure" in e for e in events))
        self.assertEqual(
            {k: v for k, v in membershipEvents(self.a).items() if k.startswith("node_line")},
            {
                "node_line_not_ascii": 100,
                "node_line_bad_host": 100,
                "node_line_bad_status": 100,
                "node_line_bad_parameter": 100,
            },
        )
        self.cluster.clock.advance(60)
        with capturedLogs() as events:
            self.notify(body)
        warnings = [e for e in events if e["log_level"].name == "warn"]
        self.assertEqual(len(warnings), 4)
        self.assertIn("more like it not logged", warnings[0]["log_format"])
