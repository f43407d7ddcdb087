# -*- test-case-name: dmq.test.test_trust -*-
"""
Tests for L{dmq.trust} and the trust rules of the bus, on one clock over an
in-memory network: members decided by source address, strangers' node
lists, C{--allow-from}, signed buses (mixed with unsigned nodes), the
per-source share of the job queue, and the refusals counted and logged.
"""

from __future__ import annotations

import ipaddress

from twisted.internet import defer
from twisted.internet.task import Clock
from twisted.internet.testing import EventLoggingObserver
from twisted.logger import globalLogPublisher
from twisted.python import usage
from twisted.trial.unittest import SynchronousTestCase

from dmq import sip
from dmq.interfaces import IDMQPeer, PeerResponse
from dmq.metrics import nodeRegistry
from dmq.node import NodeManager, NodeStatus
from dmq.signing import SIGNATURE_HEADER, Keyring, signRequest
from dmq.tap import Options
from dmq.test.fakenet import FakeNetwork, makeNode
from dmq.test.test_sip import parseRequest
from dmq.trust import REFUSAL_CAUSES, Trust, parseNetwork
from zope.interface import implementer

KEY = b"bus-key-0123456789abcdef"
OTHER = b"other-key-0123456789abcd"
A, B, C, STRANGER = "127.0.0.11", "127.0.0.12", "127.0.0.13", "127.0.0.66"


def topBranch(data: bytes) -> bytes:
    """
    The branch of the top Via of the request in C{data}.
    """
    branch = parseRequest(data).via[0].branch
    assert branch is not None
    return branch.encode("ascii")


def keyringOf(options: Options) -> Keyring:
    """
    The keyring C{options} were given.
    """
    keyring = options.nodeConfig.keyring
    assert keyring is not None
    return keyring


@implementer(IDMQPeer)
class Peer:
    """
    A data peer (say, htable) that records what it gets.
    """

    peerId = "data"
    description = "records"
    acceptsStrangers = False

    def __init__(self, answer=None):
        self.received = []
        self.answer = answer

    def messageReceived(self, request, node):
        self.received.append((request, node))
        if self.answer is not None:
            return self.answer()
        return PeerResponse(200, "OK")

    def nodeAdded(self, node):
        pass


class Bus:
    """
    Nodes on one in-memory network and clock, the first the seed of the
    others, each with a data peer.
    """

    def __init__(self, testCase, hosts, options=None):
        self.clock = Clock()
        self.clock.advance(1_000_000)
        self.network = FakeNetwork(self.clock)
        self.nodes = {}
        self.peers = {}
        options = options or {}
        for i, host in enumerate(hosts):
            node = makeNode(
                self.clock, self.network, host, seeds=[hosts[0]] if i else [], **options.get(host, {})
            )
            self.peers[host] = Peer()
            node.bus.registerPeer(self.peers[host])
            self.nodes[host] = node
        testCase.addCleanup(self.stop)
        self.network.run(3)

    def stop(self):
        for node in self.nodes.values():
            if node.running:
                node.stopService()
        self.network.run(70)

    def statuses(self, host):
        return {
            n.uri.host: n.status.value for n in self.nodes[host].nodeManager.nodes() if not n.local
        }

    def send(self, source, target, peerId="data", body=b"x"):
        outcome: list[object] = []
        node = self.nodes[source]
        d = node.bus.send(peerId, body, node.nodeManager.find(sip.URI(target, 5060)))
        d.addBoth(outcome.append)
        self.network.run(1)
        return outcome[0]

    def inject(self, target, peerId, body, source=STRANGER, fromHost=None, keyring=None, callID=None):
        """
        A request as a stranger sends it to C{target}, from C{source}; the
        replies sent back.
        """
        fromHost = fromHost or source
        n = len(self.network.sent)
        request = sip.Request(
            "KDMQ",
            sip.URI(target, 5060, peerId),
            (
                ("Via", f"SIP/2.0/UDP {source}:5060;branch=z9hG4bK{n}s"),
                ("To", f"<sip:{peerId}@{target}:5060>"),
                ("From", f"<sip:{peerId}@{fromHost}:5060>;tag=s{n}"),
                ("CSeq", "10 KDMQ"),
                ("Call-ID", callID or f"s{n}@{source}"),
                ("Max-Forwards", "1"),
                ("Content-Type", "text/plain"),
            ),
            body,
        )
        if keyring is not None:
            value = signRequest(keyring, request, self.clock.seconds())
            request = sip.Request(
                request.method, request.uri, (*request.headers, (SIGNATURE_HEADER, value)), body
            )
        return self.deliver(target, request, source)

    def deliver(self, target, request, source=STRANGER):
        """
        Hand C{request} to C{target} as a datagram from C{source}; the
        replies sent back.
        """
        n = len(self.network.sent)
        self.nodes[target].protocol.datagramReceived(sip.serialise(request), (source, 5060))
        self.network.run(0.4)
        return [
            sip.parse(d.data)
            for d in self.network.sent[n:]
            if d.destination == (source, 5060)
        ]

    def refused(self, host):
        return {k: v for k, v in self.nodes[host].bus.refusals.counts.items() if v}


def codes(replies):
    return [(r.code, r.reason) for r in replies]


def holdAnswers(bus, host):
    """
    Make the test peer of C{host} answer only when told.

    @return: the L{defer.Deferred}s it answered with, in order: fire one to
        answer.
    """
    pending: list[defer.Deferred[PeerResponse]] = []

    def answer():
        pending.append(defer.Deferred())
        return pending[-1]

    bus.peers[host].answer = answer
    return pending


def sendMany(bus, source, target, count):
    """
    Send C{count} data messages from C{source} to C{target} at once.

    @return: the list their replies are appended to, as they come.
    """
    node = bus.nodes[source]
    to = node.nodeManager.find(sip.URI(target, 5060))
    replies: list[sip.Response] = []
    for i in range(count):
        node.bus.send("data", b"%d" % i, to).addCallback(replies.append)
    bus.network.run(0.1)
    return replies


class MemberIndexTests(SynchronousTestCase):
    """
    L{NodeManager.memberAt}: the members by source address, kept up to date.
    """

    def setUp(self):
        self.clock = Clock()
        self.manager = NodeManager(self.clock, sip.URI(A, 5060), [sip.URI(B, 5060)])

    def test_seedIsMember(self):
        """
        A seed is a member whatever its status; the local node never is.
        """
        seed = self.manager.find(sip.URI(B, 5060))
        assert seed is not None
        self.assertEqual(seed.status, NodeStatus.NOT_ACTIVE)
        self.assertIs(self.manager.memberAt(B, 5060), seed)
        self.assertIsNone(self.manager.memberAt(B, 5061))
        self.assertIsNone(self.manager.memberAt(A, 5060))

    def test_statusChanges(self):
        """
        A node is a member while active: a status change, however made,
        shows at once.
        """
        node = self.manager.add(sip.URI(C, 5070), NodeStatus.NOT_ACTIVE)
        self.assertIsNone(self.manager.memberAt(C, 5070))
        node.status = NodeStatus.ACTIVE
        self.assertIs(self.manager.memberAt(C, 5070), node)
        self.manager.changeStatus(node.uri, NodeStatus.DISABLED)
        self.assertIsNone(self.manager.memberAt(C, 5070))

    def test_removed(self):
        """
        A removed node is no member; neither is a seed no longer one.
        """
        node = self.manager.add(sip.URI(C, 5070))
        self.manager.remove(node.uri)
        self.assertIsNone(self.manager.memberAt(C, 5070))
        self.manager.dropSeed(sip.URI(B, 5060))
        self.assertIsNone(self.manager.memberAt(B, 5060))

    def test_noPort(self):
        """
        A node whose URI gives no port is a member from any port of its IP.
        """
        node = self.manager.add(sip.URI(C))
        self.assertIs(self.manager.memberAt(C, 40000), node)

    def test_streamNodeAnyPort(self):
        """
        A node over TCP or TLS is a member from any port of its IP: its
        connections come from ephemeral ports (Kamailio's
        C{dmq_is_from_node()} compares only the IP).  A node over UDP is
        still one from its own port only.
        """
        tls = self.manager.add(sip.URI(C, 5061, parameters=(("transport", "tls"),)), NodeStatus.ACTIVE)
        udp = self.manager.add(sip.URI("127.0.0.14", 5070), NodeStatus.ACTIVE)
        self.assertIs(self.manager.memberAt(C, 40000), tls)
        self.assertIs(self.manager.memberAt("127.0.0.14", 5070), udp)
        self.assertIsNone(self.manager.memberAt("127.0.0.14", 40000))

    def test_strangerLineOverStream(self):
        """
        A stranger's own line, for a node over TCP or TLS, names it whatever
        the source port of its connection; over UDP the port must match.
        """
        from dmq.notification import _at
        from dmq.nodelist import NodeLine

        tls = NodeLine(sip.URI(C, 5061, parameters=(("transport", "tls"),)), NodeStatus.ACTIVE)
        udp = NodeLine(sip.URI(C, 5060), NodeStatus.ACTIVE)
        self.assertTrue(_at(tls, (C, 40000)))
        self.assertFalse(_at(tls, ("127.0.0.14", 40000)))
        self.assertTrue(_at(udp, (C, 5060)))
        self.assertFalse(_at(udp, (C, 40000)))

    def test_hostName(self):
        """
        A node named by a host name is a member from its address once that
        is known, and at its new address when it changes.
        """
        node = self.manager.add(sip.URI("c.example", 5060))
        self.assertIsNone(self.manager.memberAt(C, 5060))
        self.manager.setResolvedIP(node, C)
        self.assertIs(self.manager.memberAt(C, 5060), node)
        self.manager.setResolvedIP(node, "127.0.0.14")
        self.assertIsNone(self.manager.memberAt(C, 5060))
        self.assertIs(self.manager.memberAt("127.0.0.14", 5060), node)


class MembershipBySourceTests(SynchronousTestCase):
    """
    With open admission: a request is from a member by its source address,
    and non-members reach only the notification peer.
    """

    def setUp(self):
        self.bus = Bus(self, [A, B])

    def test_memberPassed(self):
        """
        A member's request reaches the peer with the member's node.
        """
        self.assertEqual(self.bus.send(B, A).code, 200)
        [(request, node)] = self.bus.peers[A].received
        self.assertEqual(node.uri, sip.URI(B, 5060))

    def test_strangerData(self):
        """
        A non-member's request to a data peer gets 403, even with a member's
        From URI, and is counted and logged with its source.
        """
        logged = EventLoggingObserver()
        globalLogPublisher.addObserver(logged)
        self.addCleanup(globalLogPublisher.removeObserver, logged)
        replies = self.bus.inject(A, "data", b"x", fromHost=B)
        self.assertEqual(codes(replies), [(403, "Not A Member")])
        self.assertEqual(self.bus.peers[A].received, [])
        self.assertEqual(self.bus.refused(A), {"notMember": 1})
        [event] = [e for e in logged if e.get("refusal") == "notMember"]
        self.assertEqual(event["source"], (STRANGER, 5060))

    def test_acceptsStrangers(self):
        """
        A peer that says it accepts strangers gets their requests, with
        C{None} for the node.
        """
        peer = Peer()
        peer.peerId = "open"
        peer.acceptsStrangers = True
        self.bus.nodes[A].bus.registerPeer(peer)
        self.assertEqual(codes(self.bus.inject(A, "open", b"x")), [(200, "OK")])
        self.assertIsNone(peer.received[0][1])

    def test_strangerJoins(self):
        """
        A stranger's node list adds its sender (its own line), and nothing
        else: its other lines are ignored and counted.
        """
        body = (
            f"sip:{STRANGER}:5060;status=active\r\n"
            f"sip:127.0.0.77:5060;status=active\r\n"
            f"sip:{B}:5060;status=disabled\r\n"
        ).encode()
        replies = self.bus.inject(A, "notification_peer", body)
        self.assertEqual(replies[0].code, 200)
        self.assertEqual(self.bus.statuses(A), {B: "active", STRANGER: "active"})
        self.assertEqual(self.bus.refused(A), {"strangerLines": 2})

    def test_strangerDisables(self):
        """
        A stranger cannot disable a member, even writing the member's From
        URI, whatever the Max-Forwards.
        """
        for _ in range(10):
            self.bus.inject(A, "notification_peer", f"sip:{B}:5060;status=disabled\r\n".encode(), fromHost=B)
        self.assertEqual(self.bus.statuses(A), {B: "active"})
        self.assertEqual(self.bus.refused(A), {"strangerLines": 10})
        self.assertEqual(self.bus.send(A, B).code, 200)

    def test_lineAboutUs(self):
        """
        No line changes our own entry, even a member's.
        """
        self.bus.network.run(0)
        node = self.bus.nodes[A].nodeManager.find(sip.URI(B, 5060))
        body = f"sip:{A}:5060;status=disabled\r\n".encode()
        self.bus.nodes[A].notification.messageReceivedFrom(
            self.bus.nodes[B].bus.buildRequest("notification_peer", body, node), node, (B, 5060)
        )
        self.assertIs(self.bus.nodes[A].nodeManager.localNode.status, NodeStatus.ACTIVE)


class AllowFromTests(SynchronousTestCase):
    """
    C{--allow-from}: only its networks (and the seeds) are admitted.
    """

    def setUp(self):
        allow = {"allowFrom": (parseNetwork("127.0.0.8/29"),)}
        self.bus = Bus(self, [A, B], {A: allow, B: allow})

    def test_inside(self):
        """
        Nodes inside the networks join and send.
        """
        self.assertEqual(self.bus.statuses(A), {B: "active"})
        self.assertEqual(self.bus.send(B, A).code, 200)
        self.assertEqual(self.bus.refused(A), {})

    def test_outside(self):
        """
        A sender outside gets 403 for every request, the join included, and
        is never added.
        """
        for peerId in ["notification_peer", "data", "nobody"]:
            replies = self.bus.inject(A, peerId, f"sip:{STRANGER}:5060\r\n".encode())
            self.assertEqual(codes(replies), [(403, "Not Allowed")])
        self.assertEqual(self.bus.statuses(A), {B: "active"})
        self.assertEqual(self.bus.refused(A), {"notAllowed": 3})

    def test_listedOutside(self):
        """
        A member's list adds no node outside the networks; the line is
        counted.
        """
        body = b"sip:10.9.9.9:5060;status=active\r\nsip:127.0.0.14:5060;status=active\r\n"
        replies = self.bus.inject(A, "notification_peer", body, source=B)
        self.assertEqual(replies[0].code, 200)
        self.assertEqual(self.bus.statuses(A), {B: "active", "127.0.0.14": "active"})
        self.assertEqual(self.bus.nodes[A].nodeManager.statistics["nodesRefusedNotAllowed"], 1)

    def test_seedOutside(self):
        """
        A configured seed is admitted from outside the networks.
        """
        clock = Clock()
        manager = NodeManager(clock, sip.URI(A, 5060), [sip.URI(STRANGER, 5060)])
        # As dmq.service does: Trust, below dmq.node, types a member as object.
        trust = Trust(clock, (parseNetwork("10.0.0.0/8"),), isSeed=manager.isSeed)  # type: ignore[arg-type]
        seed = manager.memberAt(STRANGER, 5060)
        request = sip.Request("KDMQ", sip.URI(A, 5060, "data"))
        self.assertIsNone(trust.check(request, (STRANGER, 5060), seed))
        self.assertEqual(trust.check(request, ("127.0.0.67", 5060), None), "notAllowed")

    def test_options(self):
        """
        C{--allow-from} is repeatable and takes addresses and networks; a
        bad one is a usage error.
        """
        options = Options()
        options.parseOptions(["--allow-from", "10.0.0.0/8", "--allow-from", "::1"])
        self.assertEqual(
            options.nodeConfig.allowFrom,
            (ipaddress.ip_network("10.0.0.0/8"), ipaddress.ip_network("::1/128")),
        )
        self.assertRaises(usage.UsageError, Options().parseOptions, ["--allow-from", "10.0.0.300/8"])


class SignedBusTests(SynchronousTestCase):
    """
    A bus whose nodes share a keyring, with an unsigned node admitted by
    C{--allow-from} (a Kamailio node, in a mixed bus).
    """

    def setUp(self):
        signed = {"keyring": Keyring([KEY]), "allowFrom": (parseNetwork(C + "/32"),)}
        self.bus = Bus(self, [A, B, C], {A: signed, B: signed})

    def test_signedBus(self):
        """
        Signed nodes and the unsigned node allowed by network all join, and
        requests between any two are answered.
        """
        self.bus.network.run(3)
        self.assertEqual(self.bus.statuses(A), {B: "active", C: "active"})
        for source, target in [(A, B), (B, A), (C, A), (A, C)]:
            self.assertEqual(self.bus.send(source, target).code, 200, (source, target))
        self.assertEqual(self.bus.refused(A), {})

    def test_signedOnTheWire(self):
        """
        Requests between signed nodes and their replies carry the signature.
        """
        sent = len(self.bus.network.sent)
        self.bus.send(A, B)
        messages = [sip.parse(d.data) for d in self.bus.network.sent[sent:]]
        self.assertTrue(messages)
        for message in messages:
            self.assertIsNotNone(message.header(SIGNATURE_HEADER))

    def test_unsigned(self):
        """
        An unsigned request from outside the networks gets 403, even from
        a member's address.
        """
        replies = self.bus.inject(A, "data", b"x", source=STRANGER)
        self.assertEqual(codes(replies), [(403, "Signature Required")])
        self.assertEqual(self.bus.refused(A), {"unsigned": 1})

    def test_wrongKey(self):
        """
        A request signed with another key gets 403.
        """
        replies = self.bus.inject(A, "notification_peer", b"", keyring=Keyring([OTHER]))
        self.assertEqual(codes(replies), [(403, "Bad Signature")])
        self.assertEqual(self.bus.statuses(A), {B: "active", C: "active"})

    def test_signedFromAllowedNetwork(self):
        """
        From the C{--allow-from} networks, only requests that carry no
        signature are taken unsigned: one signed with another key, a
        tampered copy of a signed request and a stale one are refused as
        from anywhere else, so that no reply is bound to a signature that
        did not check.
        """
        replies = self.bus.inject(A, "data", b"x", source=C, keyring=Keyring([OTHER]))
        self.assertEqual(codes(replies), [(403, "Bad Signature")])
        now = self.bus.clock.seconds()
        signed = _signedRequest(Keyring([KEY]), A, "data", now, "tampered")
        tampered = sip.Request(signed.method, signed.uri, signed.headers, b"changed")
        stale = _signedRequest(Keyring([KEY]), A, "data", now - 31, "stale")
        for request, reason in [(tampered, "Bad Signature"), (stale, "Stale Signature")]:
            self.assertEqual(codes(self.bus.deliver(A, request, C)), [(403, reason)])
        self.assertEqual(self.bus.refused(A), {"badSignature": 2, "stale": 1})
        replies = self.bus.inject(A, "data", b"x", source=C)
        self.assertEqual(replies[0].code, 200)

    def test_signedStranger(self):
        """
        A well signed request from outside the networks is admitted: the
        key is the proof.
        """
        body = f"sip:{STRANGER}:5060;status=active\r\n".encode()
        replies = self.bus.inject(A, "notification_peer", body, keyring=Keyring([KEY]))
        self.assertEqual(replies[0].code, 200)
        self.assertIn(STRANGER, self.bus.statuses(A))

    def test_oldTimestamp(self):
        """
        A request signed 31 s ago gets 403.
        """
        request = _signedRequest(Keyring([KEY]), A, "data", self.bus.clock.seconds() - 31, "old")
        self.assertEqual(codes(self.bus.deliver(A, request)), [(403, "Stale Signature")])

    def test_replay(self):
        """
        A new transaction with a Call-ID and CSeq seen within the window is
        a replay and gets 403; a retransmission of the same request (same
        branch) is answered again from its transaction.
        """
        keyring = Keyring([KEY])
        first = self.bus.inject(A, "notification_peer", b"", keyring=keyring, callID="same")
        self.assertEqual(first[0].code, 200)
        again = self.bus.inject(A, "notification_peer", b"", keyring=keyring, callID="same")
        self.assertEqual(codes(again), [(403, "Replayed Request")])
        self.assertEqual(self.bus.refused(A), {"replay": 1})

    def test_unsignedReply(self):
        """
        The unsigned reply of a node outside the networks to a signed
        request is a failed send: a local 408, counted.
        """
        self.bus.nodes[A].bus._trust.allowFrom = ()
        self.assertEqual(self.bus.send(A, C).code, 408)
        self.assertEqual(self.bus.refused(A), {"badReply": 1})

    def test_metrics(self):
        """
        The refusals are in /metrics by cause, every cause there at zero
        from the start.
        """
        self.bus.inject(A, "data", b"x")
        registry = nodeRegistry(self.bus.nodes[A])
        self.assertEqual(registry.get_sample_value("dmq_refused_total", {"cause": "unsigned"}), 1)
        for cause in ["not_allowed", "not_member", "replay", "flooding", "stranger_lines"]:
            self.assertEqual(registry.get_sample_value("dmq_refused_total", {"cause": cause}), 0)
        self.assertEqual(len(REFUSAL_CAUSES), 9)


def _signedRequest(keyring, target, peerId, now, callID):
    request = sip.Request(
        "KDMQ",
        sip.URI(target, 5060, peerId),
        (
            ("Via", f"SIP/2.0/UDP {STRANGER}:5060;branch=z9hG4bK{callID}"),
            ("To", f"<sip:{peerId}@{target}:5060>"),
            ("From", f"<sip:{peerId}@{STRANGER}:5060>;tag=x"),
            ("CSeq", "10 KDMQ"),
            ("Call-ID", callID),
            ("Max-Forwards", "1"),
        ),
    )
    value = signRequest(keyring, request, now)
    return sip.Request(request.method, request.uri, (*request.headers, (SIGNATURE_HEADER, value)))


class Skewed:
    """
    A clock C{offset} seconds ahead of C{clock}: what a node with a wrong
    clock reads.
    """

    def __init__(self, clock, offset):
        self._clock = clock
        self._offset = offset

    def seconds(self):
        return self._clock.seconds() + self._offset


class SignedRefusalTests(SynchronousTestCase):
    """
    A node with a keyring signs its refusals of signed requests, bound to
    the whole request and its transaction: a signed sender sees the refusal
    with its reason, at once, and nothing else; unsigned requests get
    unsigned refusals, as before.
    """

    def setUp(self):
        signed = {"keyring": Keyring([KEY]), "allowFrom": (parseNetwork(C + "/32"),)}
        self.bus = Bus(self, [A, B, C], {A: signed, B: signed})
        self.bus.network.run(3)

    def skew(self, host, offset):
        """
        Put the clock C{host} checks and signs with C{offset} seconds ahead.
        """
        trust = self.bus.nodes[host].bus._trust
        trust._clock = Skewed(self.bus.clock, offset)

    def hold(self, source, destination):
        """
        Lose every datagram from C{source} to C{destination} from now on;
        return the list they are kept in.
        """
        held = []

        def drop(datagram):
            if datagram.source[0] == source and datagram.destination[0] == destination:
                held.append(datagram)
                return True
            return False

        self.bus.network.drop = drop
        return held

    def sendLater(self, source, target, body=b"x"):
        """
        Start a send of C{source}'s to C{target}'s data peer; the list its
        outcome will be in.
        """
        outcome: list[object] = []
        node = self.bus.nodes[source]
        d = node.bus.send("data", body, node.nodeManager.find(sip.URI(target, 5060)))
        d.addBoth(outcome.append)
        return outcome

    def test_stale(self):
        """
        A signed node whose requests the other finds stale (a clock 40 s
        off) gets C{403 Stale Signature}, not a local C{408}, at once; the
        refusing node counts it as before.
        """
        self.skew(B, 40)
        outcome = self.sendLater(A, B)
        self.bus.network.run(0.1)
        [response] = outcome
        self.assertEqual((response.code, response.reason), (403, "Stale Signature"))
        self.assertEqual(self.bus.refused(B), {"stale": 1})
        self.assertEqual(self.bus.refused(A), {})
        self.assertEqual(self.bus.peers[B].received, [])
        self.assertEqual(self.bus.nodes[B].bus.statistics[("in", "data", 403)], 1)
        self.assertEqual(self.bus.nodes[A].bus.statistics[("out", "data", 403)], 1)

    def test_notMember(self):
        """
        A signed node that is no member of the other gets C{403 Not A
        Member}.
        """
        self.bus.nodes[A].nodeManager.changeStatus(sip.URI(B, 5060), NodeStatus.DISABLED)
        response = self.bus.send(B, A)
        self.assertEqual((response.code, response.reason), (403, "Not A Member"))
        self.assertEqual(self.bus.refused(A), {"notMember": 1})
        self.assertEqual(self.bus.refused(B), {})

    def test_replay(self):
        """
        When a copy of a signed node's request (under another branch) got
        there first, the node's own request gets C{403 Replayed Request};
        the data was taken once.
        """
        held = self.hold(A, B)
        outcome = self.sendLater(A, B)
        self.bus.network.run(0.01)
        [original] = held
        self.bus.network.drop = None
        branch = topBranch(original.data)
        # A copy from the node's own address (forged, or the node's own
        # retransmission rewritten on the way), so from a member.
        copy = original.data.replace(branch, branch + b"x")
        self.bus.nodes[B].protocol.datagramReceived(copy, original.source)
        self.bus.nodes[B].protocol.datagramReceived(original.data, original.source)
        self.bus.network.run(1)
        [response] = outcome
        self.assertEqual((response.code, response.reason), (403, "Replayed Request"))
        self.assertEqual(len(self.bus.peers[B].received), 1)
        self.assertEqual(self.bus.refused(B), {"replay": 1})
        self.assertEqual(self.bus.refused(A), {})

    def test_staleReplay(self):
        """
        A well signed request past the window that was taken before is a
        replay, not a stale request: its refusal must not read as "never
        taken".
        """
        held = self.hold(A, B)
        outcome = self.sendLater(A, B)
        self.bus.network.run(0.01)
        [original] = held
        branch = topBranch(original.data)
        self.bus.nodes[B].protocol.datagramReceived(
            original.data.replace(branch, branch + b"x"), original.source
        )
        self.bus.network.run(0.01)
        self.skew(B, 31)
        stale = self.bus.inject(B, "data", b"", keyring=Keyring([KEY]))
        self.assertEqual(codes(stale), [(403, "Stale Signature")])
        self.bus.nodes[B].protocol.datagramReceived(original.data, original.source)
        self.bus.network.drop = None
        self.bus.network.run(1)
        self.assertEqual((outcome[0].code, outcome[0].reason), (403, "Replayed Request"))
        self.assertEqual(self.bus.refused(B), {"replay": 1, "stale": 1})

    def test_replayRefusalMoved(self):
        """
        The signed refusal of a replay (another branch) of a node's
        request, moved onto the branch of the node's own request while it
        waits, is not signed for it: a local C{408}, counted.
        """
        held = self.hold(A, B)
        outcome = self.sendLater(A, B)
        self.bus.network.run(0.01)
        [original] = held
        branch = topBranch(original.data)
        n = len(self.bus.network.sent)
        for suffix in [b"x", b"y"]:
            self.bus.nodes[B].protocol.datagramReceived(
                original.data.replace(branch, branch + suffix), original.source
            )
        self.bus.network.run(0.01)
        # What B answered the copies (lost at the node: no transaction of
        # its own has their branches), as an attacker on the way reads it.
        replies = [sip.parse(d.data) for d in self.bus.network.sent[n:] if d.source[0] == B]
        self.assertEqual(codes(replies), [(200, "OK"), (403, "Replayed Request")])
        forged = sip.serialise(replies[1]).replace(branch + b"y", branch)
        self.bus.nodes[A].protocol.datagramReceived(forged, (B, 5060))
        self.bus.network.run(0.01)
        [response] = outcome
        self.assertEqual((response.code, response.reason), (408, "Reply Not Signed"))
        self.assertEqual(self.bus.refused(A), {"badReply": 1})

    def test_tamperedRefusal(self):
        """
        A signed refusal changed in flight (reason, code, body, a
        Retry-After added, the mark taken off) is a local C{408}, counted.
        """
        self.skew(B, 40)

        def reason(data):
            return data.replace(b"Stale Signature", b"Not A Member")

        def code(data):
            return data.replace(b"SIP/2.0 403", b"SIP/2.0 503", 1)

        def body(data):
            return data.replace(b"Content-Length: 0", b"Content-Length: 4") + b"evil"

        def retryAfter(data):
            return data.replace(b"\r\n\r\n", b"\r\nRetry-After: 3600\r\n\r\n", 1)

        def unmarked(data):
            return data.replace(b";refusal", b"")

        tamperings = [reason, code, body, retryAfter, unmarked]
        for tamper in tamperings:
            held = self.hold(B, A)
            outcome = self.sendLater(A, B)
            self.bus.network.run(0.01)
            [refused] = held[:1]
            tampered = tamper(refused.data)
            self.assertNotEqual(tampered, refused.data)
            self.bus.nodes[A].protocol.datagramReceived(tampered, refused.source)
            self.bus.network.run(0.01)
            [response] = outcome
            self.assertEqual((response.code, response.reason), (408, "Reply Not Signed"), tamper)
        self.assertEqual(self.bus.refused(A), {"badReply": len(tamperings)})

    def test_unknownKey(self):
        """
        A refusal signed with a key the sender does not hold is a local
        C{408}, counted.
        """
        self.bus.nodes[B].bus._trust.keyring = Keyring([OTHER, KEY])
        self.skew(B, 40)
        response = self.bus.send(A, B)
        self.assertEqual((response.code, response.reason), (408, "Reply Not Signed"))
        self.assertEqual(self.bus.refused(A), {"badReply": 1})
        self.assertEqual(self.bus.refused(B), {"stale": 1})

    def test_unsignedGetUnsigned(self):
        """
        Unsigned requests (a Kamailio node's) get unsigned refusals, as
        before: C{403 Signature Required} from a stranger.
        """
        replies = self.bus.inject(A, "data", b"x", source=STRANGER)
        self.assertEqual(codes(replies), [(403, "Signature Required")])
        self.assertIsNone(replies[0].header(SIGNATURE_HEADER))

    def test_shuttingDown(self):
        """
        While it stops, a node answers C{503 Shutting Down}: signed to a
        signed node, which sees it at once; unsigned to an unsigned one.
        """
        pending: defer.Deferred[PeerResponse] = defer.Deferred()
        self.bus.peers[B].answer = lambda: pending
        first = self.sendLater(A, B)
        self.bus.network.run(0.01)
        stopped = self.bus.nodes[B].bus.stopService()
        second = self.sendLater(A, B)
        self.bus.network.run(0.1)
        self.assertEqual([(r.code, r.reason) for r in second], [(503, "Shutting Down")])
        self.assertEqual(self.bus.refused(A), {})
        replies = self.bus.inject(B, "data", b"x", source=C)
        self.assertEqual(codes(replies), [(503, "Shutting Down")])
        self.assertIsNone(replies[0].header(SIGNATURE_HEADER))
        pending.callback(PeerResponse(200, "OK"))
        self.bus.network.run(1)
        self.assertEqual([r.code for r in first], [200])
        self.assertTrue(stopped.called)

    def test_earlyAnswers(self):
        """
        The answers made after a signed request is admitted but before a
        peer has it (an unknown peer, a full queue) are signed as replies,
        as before, and seen by the signed sender with their reason.
        """
        response = self.bus.send(A, B, peerId="nobody")
        self.assertEqual((response.code, response.reason), (404, "User Not Found"))
        self.assertEqual(self.bus.refused(A), {})

    def test_badSignatureSigned(self):
        """
        A signed request with a bad signature gets a signed C{403 Bad
        Signature}, bound to the request as it came (so useless for the
        request it was made from); the refusal is counted as before.
        """
        replies = self.bus.inject(A, "data", b"x", keyring=Keyring([OTHER]))
        self.assertEqual(codes(replies), [(403, "Bad Signature")])
        self.assertTrue(replies[0].header(SIGNATURE_HEADER).endswith(";refusal"))
        self.assertEqual(self.bus.refused(A), {"badSignature": 1})


class FloodTests(SynchronousTestCase):
    """
    The per-source share of the job queue.
    """

    def test_twoSenders(self):
        """
        A sender that floods a slow peer gets 503 with Retry-After once its
        share waits, while another sender's requests are still taken.
        """
        options = {"numWorkers": 1, "maxQueue": 8, "maxQueuePerSource": 2}
        bus = Bus(self, [A, B, C], {A: options})
        pending = holdAnswers(bus, A)
        flooded = sendMany(bus, B, A, 6)
        self.assertEqual(
            [(r.code, r.header("Retry-After")) for r in flooded], [(503, "10")] * 3
        )
        other: list[sip.Response] = []
        bus.nodes[C].bus.send("data", b"c", bus.nodes[C].nodeManager.find(sip.URI(A, 5060))).addCallback(
            other.append
        )
        bus.network.run(0.1)
        self.assertEqual(other, [])
        self.assertEqual(bus.nodes[A].bus.queueDepth, 3)
        while pending:
            pending.pop(0).callback(PeerResponse(200, "OK"))
            bus.network.run(0.1)
        self.assertEqual([r.code for r in other], [200])
        self.assertEqual(bus.refused(A), {"flooding": 3})


    def test_layerRefusalsSigned(self):
        """
        What the transaction layer answers by itself to a signed request,
        C{503} over its cap of live transactions and C{500} when the bus
        raised, is signed too: the signed sender gets it, not a local
        C{408}.
        """
        signed = {"keyring": Keyring([KEY])}
        bus = Bus(self, [A, B], {A: {**signed, "maxTransactions": 1}, B: signed})
        pending = holdAnswers(bus, A)
        replies = sendMany(bus, B, A, 2)
        self.assertEqual(codes(replies), [(503, "Service Unavailable")])
        self.assertEqual(bus.nodes[A].protocol.transactions.statistics["rejectedOverCapacity"], 1)
        pending.pop().callback(PeerResponse(200, "OK"))
        bus.network.run(0.1)
        self.assertEqual(codes(replies), [(503, "Service Unavailable"), (200, "OK")])

        def broken(transaction):
            raise RuntimeError("a bug in the bus")

        protocol = bus.nodes[A].protocol
        working = protocol._handlers["KDMQ"]
        protocol.setHandler("KDMQ", broken)
        replies = sendMany(bus, B, A, 1)
        protocol.setHandler("KDMQ", working)
        self.assertEqual(codes(replies), [(500, "Server Internal Error")])
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)
        self.assertEqual(bus.refused(B), {})

    def test_signedSenders(self):
        """
        On a signed bus the sender sees the C{503} of a flooded share (with
        its Retry-After) and of a full queue, signed and with their reasons,
        not a local C{408}.
        """
        for maxQueue, share, expected in [
            (8, 2, [(503, "Too Many Requests From You", "10")] * 3),
            (2, 2, [(503, "Queue Full", None)] * 3),
        ]:
            options = {
                "keyring": Keyring([KEY]),
                "numWorkers": 1,
                "maxQueue": maxQueue,
                "maxQueuePerSource": share,
            }
            bus = Bus(self, [A, B], {A: options, B: {"keyring": Keyring([KEY])}})
            pending = holdAnswers(bus, A)
            refused = sendMany(bus, B, A, 6)
            self.assertEqual(
                [(r.code, r.reason, r.header("Retry-After")) for r in refused], expected
            )
            self.assertEqual(bus.refused(B), {})
            while pending:
                pending.pop(0).callback(PeerResponse(200, "OK"))
                bus.network.run(0.1)
            bus.stop()


class OptionsTests(SynchronousTestCase):
    """
    C{--secret-file} and the warning of open admission.
    """

    def keyringFile(self, mode):
        import os

        path = self.mktemp()
        with open(path, "w") as f:
            f.write(KEY.decode() + "\n")
        os.chmod(path, mode)
        return path

    def test_secretFile(self):
        """
        C{--secret-file} reads the keyring.
        """
        options = Options()
        options.parseOptions(["--secret-file", self.keyringFile(0o600)])
        self.assertEqual(keyringOf(options).keys, (KEY,))

    def test_readableSecretFile(self):
        """
        A keyring file others may read is a usage error that says how to fix
        it.
        """
        error = self.assertRaises(
            usage.UsageError, Options().parseOptions, ["--secret-file", self.keyringFile(0o644)]
        )
        self.assertIn("--secret-file", str(error))
        self.assertIn("chmod 600", str(error))

    def test_openWarning(self):
        """
        A node without --allow-from and without a keyring says at start, in
        one warning, that admission is open; one with either does not.
        """
        logged = EventLoggingObserver()
        globalLogPublisher.addObserver(logged)
        self.addCleanup(globalLogPublisher.removeObserver, logged)
        bus = Bus(self, [A, B], {B: {"allowFrom": (parseNetwork("127.0.0.0/8"),)}})
        warnings = [e for e in logged if "Admission is open" in e.get("log_format", "")]
        self.assertEqual(len(warnings), 1)
        self.assertEqual(warnings[0]["address"], f"{A}:5060")
        self.assertTrue(bus.nodes[B].bus.trustActive)

    def test_configFile(self):
        """
        The TOML keys are C{allow_from} (a list) and C{secret_file}.
        """
        path = self.mktemp()
        keyring = self.keyringFile(0o600)
        with open(path, "w") as f:
            f.write(f'allow_from = ["10.0.0.0/8", "192.0.2.7"]\nsecret_file = "{keyring}"\n')
        options = Options()
        options.parseOptions(["--config", path])
        self.assertEqual(
            options.nodeConfig.allowFrom,
            (ipaddress.ip_network("10.0.0.0/8"), ipaddress.ip_network("192.0.2.7/32")),
        )
        self.assertEqual(keyringOf(options).keys, (KEY,))
