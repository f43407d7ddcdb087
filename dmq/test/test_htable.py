# -*- test-case-name: dmq.test.test_htable -*-
"""
Tests for L{dmq.peers.htable}: the table spec parser, the Kamailio wire
format (checked against the captured Kamailio 5.6.3 traffic copied into
C{dmq/test/data/htable/}), replication and sync between our own nodes on an
in-memory network, expiry on a L{Clock}, the RPC commands and subscriptions;
and, when the C{kamailio} binary is there, one mixed bus with real Kamailio
nodes on 127.0.0.61-63.
"""

from __future__ import annotations

import json
import os
import time

from twisted.application.service import IService
from twisted.internet import defer, reactor
from twisted.internet.defer import succeed
from twisted.internet.task import Clock
from twisted.internet.testing import EventLoggingObserver
from twisted.logger import Logger
from twisted.trial.unittest import SynchronousTestCase, TestCase
from zope.interface import implementer
from zope.interface.verify import verifyObject

from dmq import sip
from dmq.interfaces import IDMQBus, IDMQPeer
from dmq.node import Node, NodeStatus
from dmq.peers.htable import (
    CONTENT_TYPE,
    MAX_BODY,
    MAX_SYNC_BODY,
    Change,
    HTablePeer,
    HTableRPC,
    NoSuchTable,
    RPCError,
    TableSpec,
    coreCaseHash,
    parseTableSpec,
)
from dmq.test.captures import DATA, datagrams
from dmq.config import NodeConfig
from dmq.tap import makeNodeService
from dmq.test.fakenet import Datagram, FakeNetwork, makeNode
from dmq.test.kamailio import SKIP_REASON, KamailioNode, waitFor

# The tables of the captured Kamailio nodes (kamailio-node.cfg.example).
KDMQ = "kdmq=>size=8;autoexpire=0;dmqreplicate=1"
LOCAL = "local=>size=4;autoexpire=0"
EXPIRING = "exp=>size=4;autoexpire=60;dmqreplicate=1"


def htableRequests(name):
    """
    The KDMQ requests to the htable peer in capture C{name}, parsed, with
    the capture records.
    """
    found = []
    for capture in datagrams(os.path.join("htable", name)):
        try:
            message = sip.parse(capture.data)
            message.callID, message.fromAddress
        except sip.SIPParseError:
            # probe-01's requests without Call-ID or From, or with a bad
            # Content-Length: our SIP layer refuses them.
            continue
        if isinstance(message, sip.Request) and message.uri.user == "htable":
            found.append((capture, message))
    return found


def responseTo(name, request):
    """
    The captured reply to C{request} in capture C{name}.
    """
    for capture in datagrams(os.path.join("htable", name)):
        if not capture.data.startswith(b"SIP/2.0 "):
            continue
        message = sip.parse(capture.data)
        if message.callID == request.callID:
            return message
    raise LookupError(request.callID)


def makeRequest(body, sender=("127.0.0.12", 5060), target=("127.0.0.11", 5060)):
    """
    A KDMQ request to the htable peer from C{sender}.
    """
    uri = sip.URI(target[0], target[1], user="htable")
    return sip.Request(
        "KDMQ",
        uri,
        (
            ("To", f"<{uri.toString()}>"),
            ("From", f"<sip:htable@{sender[0]}:{sender[1]}>;tag=1"),
            ("CSeq", "10 KDMQ"),
            ("Call-ID", "1@127.0.0.12"),
            ("Max-Forwards", "1"),
            ("Content-Type", CONTENT_TYPE),
        ),
        body,
    )


@implementer(IDMQBus)
class FakeBus:
    """
    A bus that records what is sent and answers nothing.
    """

    def __init__(self, others=()):
        self.localNode = Node(sip.URI("127.0.0.11", 5060), NodeStatus.ACTIVE, local=True)
        self.others = list(others)
        self.sent = []

    def nodes(self):
        return [self.localNode, *self.others]

    def registerPeer(self, peer):
        pass

    def unregisterPeer(self, peerId):
        pass

    def send(self, peerId, body, node, contentType="text/plain", maxForwards=1):
        self.sent.append((peerId, body, node, contentType))
        return succeed(None)

    def broadcast(self, peerId, body, contentType="text/plain", exclude=None, maxForwards=1):
        self.sent.append((peerId, body, None, contentType))
        return succeed({})

    def handleRequest(self, request, source):
        raise NotImplementedError()


def makePeer(tables=(KDMQ, LOCAL, EXPIRING), others=(), **options):
    clock = Clock()
    bus = FakeBus(others)
    peer = HTablePeer(clock, bus, tables, **options)
    return clock, bus, peer


class Cluster:
    """
    Several whole nodes on one in-memory network, each with an htable peer.
    """

    def __init__(self, testCase, count=3, tables=(KDMQ, LOCAL, EXPIRING), **options):
        self.clock = Clock()
        self.network = FakeNetwork(self.clock)
        self.tables = tables
        self.hosts = []
        self.nodes = []
        self.peers = []
        testCase.addCleanup(self.stop)
        for i in range(count):
            self.add(**options)
        self.network.run(3)

    def add(self, initSync=False, **options):
        host = f"127.0.0.{11 + len(self.nodes)}"
        seeds = [self.hosts[0]] if self.hosts else []
        node = makeNode(self.clock, self.network, host, seeds=seeds, **options)
        peer = HTablePeer(self.clock, node.bus, self.tables, initSync=initSync)
        node.bus.registerPeer(peer)
        peer.setServiceParent(node)
        self.hosts.append(host)
        self.nodes.append(node)
        self.peers.append(peer)
        return node, peer

    def stop(self):
        for node in self.nodes:
            if node.running:
                node.stopService()
        self.network.run(70)

    def find(self, viewer, target):
        return self.nodes[viewer].nodeManager.find(sip.URI(self.hosts[target], 5060))

    def htable(self, since=0):
        """
        The htable datagrams sent since index C{since} of C{network.sent},
        parsed: C{(index, datagram, message)}.
        """
        found: list[tuple[int, Datagram, sip.Message]] = []
        for i, datagram in enumerate(self.network.sent[since:], since):
            message = sip.parse(datagram.data)
            if isinstance(message, sip.Request):
                if message.uri.user == "htable":
                    found.append((i, datagram, message))
            elif message.to.uri.user == "htable":
                found.append((i, datagram, message))
        return found

    def htableRequests(self, since=0):
        return [(i, d, m) for i, d, m in self.htable(since) if isinstance(m, sip.Request)]


def result(deferred):
    results: list[object] = []
    deferred.addBoth(results.append)
    return results


class TableSpecTests(SynchronousTestCase):
    """
    L{parseTableSpec} reads Kamailio's C{htable} module parameter.
    """

    def test_captured(self):
        """
        The tables of the captured Kamailio nodes parse.
        """
        self.assertEqual(
            parseTableSpec(KDMQ), TableSpec("kdmq", size=8, autoexpire=0, dmqreplicate=True)
        )
        self.assertEqual(parseTableSpec(LOCAL), TableSpec("local", size=4))
        self.assertFalse(parseTableSpec(LOCAL).dmqreplicate)

    def test_defaults(self):
        """
        Kamailio's defaults: size 4, no expiry, updateexpire on, not
        replicated.
        """
        spec = parseTableSpec("t=>")
        self.assertEqual(
            (spec.size, spec.autoexpire, spec.updateexpire, spec.dmqreplicate, spec.initval),
            (4, 0, True, False, None),
        )
        self.assertEqual(spec.slots, 16)

    def test_allAttributes(self):
        """
        Every attribute Kamailio knows is accepted; the database ones are
        kept for listings or ignored.
        """
        spec = parseTableSpec(
            ' t => size=10;autoexpire=3600;updateexpire=0;dmqreplicate=1;initval=-5;'
            'dbtable="ht;x";dbmode=1;cols="a,b";coldelim=,;colnull=;reloadat=30; '
        )
        self.assertEqual(
            spec,
            TableSpec(
                "t",
                size=10,
                autoexpire=3600,
                updateexpire=False,
                dmqreplicate=True,
                initval=-5,
                dbtable="ht;x",
                dbmode=1,
            ),
        )

    def test_slots(self):
        """
        The slot count is computed as Kamailio computes it.
        """
        self.assertEqual([TableSpec("t", size=s).slots for s in (0, 1, 2, 8, 31, 32)],
                         [8, 8, 4, 256, 2**31, 2**14])

    def test_unknownAttribute(self):
        """
        An attribute Kamailio does not know is refused, naming it.
        """
        for attribute in ("coltype=1", "bogus=1", "Size=8"):
            e = self.assertRaises(ValueError, parseTableSpec, f"t=>{attribute}")
            self.assertIn(attribute.split("=")[0], str(e))

    def test_badNumbers(self):
        """
        Numbers are unsigned decimal (signed for C{initval}) and fit 32 bits.
        """
        for bad in ("size=-1", "size=", "autoexpire=1x", "dmqreplicate=yes",
                    "autoexpire=4294967296", "initval=1.5", "updateexpire= "):
            self.assertRaises(ValueError, parseTableSpec, f"t=>{bad}")

    def test_badSyntax(self):
        """
        A spec without a name or C{=>}, or with an empty attribute, is refused
        with a message that shows the expected form.
        """
        for bad in ("kdmq", "=>size=1", "kdmq=size=1", "kdmq=>size=1;;autoexpire=1",
                    "kdmq=>coldelim=ab", 'kdmq=>dbtable="x', ""):
            self.assertRaises(ValueError, parseTableSpec, bad)
        e = self.assertRaises(ValueError, parseTableSpec, "kdmq")
        self.assertIn("name=>", str(e))

    def test_specValidation(self):
        """
        A L{TableSpec} built by hand is checked too.
        """
        self.assertRaises(ValueError, TableSpec, "")
        self.assertRaises(ValueError, TableSpec, "a b")
        self.assertRaises(ValueError, TableSpec, "t", autoexpire=-1)

    def test_duplicateTable(self):
        """
        A table declared twice is refused.
        """
        self.assertRaises(ValueError, makePeer, (KDMQ, "kdmq=>size=2"))


class HashTests(SynchronousTestCase):
    """
    L{coreCaseHash} is Kamailio's, so dumps are ordered and numbered as
    Kamailio's.
    """

    def test_capturedSlots(self):
        """
        The slots of the cells in the captured C{htable.dump} outputs.
        """
        self.assertEqual(coreCaseHash("counter") & 255, 25)
        self.assertEqual(coreCaseHash("k1") & 255, 102)
        self.assertEqual(coreCaseHash("probe_i") & 255, 1)
        self.assertEqual(coreCaseHash("synced") & 255, 251)
        self.assertEqual(coreCaseHash("lk") & 15, 5)

    def test_caseFolded(self):
        """
        ASCII letters hash as their lower case.
        """
        self.assertEqual(coreCaseHash("CoUnTeR"), coreCaseHash("counter"))
        self.assertNotEqual(coreCaseHash("é"), coreCaseHash("É"))


class ReceiveTests(SynchronousTestCase):
    """
    Messages from Kamailio nodes, as captured, and the other actions in
    Kamailio's format, are applied and answered as Kamailio answers them
    (or better, where Kamailio is wrong).
    """

    def setUp(self):
        self.clock, self.bus, self.peer = makePeer()
        self.changes: list[Change] = []
        self.peer.subscribe(self.changes.append)

    def receive(self, body, node=None):
        return self.peer.messageReceived(makeRequest(body), node)

    def assertAnswer(self, body, code, reason=None):
        response = self.receive(body)
        self.assertEqual(response.code, code, body)
        if reason is not None:
            self.assertEqual(response.reason, reason)
        self.assertEqual(response.body, b"")
        return response

    def test_interfaces(self):
        """
        The peer provides L{IDMQPeer} and L{IService}.
        """
        self.assertTrue(verifyObject(IDMQPeer, self.peer))
        self.assertTrue(verifyObject(IService, self.peer))
        self.assertEqual(self.peer.peerId, "htable")

    def test_capturedReplication(self):
        """
        Every change of capture 03 is applied and answered C{200 OK}, as the
        Kamailio nodes answered it, and nothing is sent on.
        """
        seen = set()
        for capture, request in htableRequests("03-htable-replication.txt"):
            if request.body in seen:
                continue
            seen.add(request.body)
            response = self.peer.messageReceived(request, None)
            theirs = responseTo("03-htable-replication.txt", request)
            self.assertEqual((response.code, response.reason), (theirs.code, theirs.reason))
        self.assertEqual(self.peer.items("kdmq"), [("counter", 42), ("k1", "hello")])
        self.assertEqual(
            [(c.key, c.old, c.new, c.origin) for c in self.changes],
            [
                ("k1", None, "hello", "replicated"),
                ("counter", None, 42, "replicated"),
                ("k2", None, "value with spaces", "replicated"),
                ("k2", "value with spaces", None, "replicated"),
            ],
        )
        self.assertEqual(self.bus.sent, [])

    def test_tooLargeToSendOn(self):
        """
        A set whose change we could not send on in one datagram is answered
        C{413} and not applied, however its size comes about: here, control
        characters that JSON writes as six octets each (C{\\u0001}).  One
        octet less is applied.
        """
        over = json.dumps({"action": 2, "htname": "kdmq", "cname": "k", "type": 2, "strval": "\x01" * 9989})
        under = json.dumps({"action": 2, "htname": "kdmq", "cname": "k", "type": 2, "strval": "\x01" * 9988})
        self.assertAnswer(over.encode("ascii"), 413)
        self.assertIsNone(self.peer.get("kdmq", "k"))
        self.assertEqual(self.peer.statistics["tooLarge"], 1)
        self.assertAnswer(under.encode("ascii"), 200, "OK")
        self.assertEqual(self.peer.get("kdmq", "k"), "\x01" * 9988)

    def test_capturedProbes(self):
        """
        The htable cases of probe-01 get Kamailio's answers, except where
        Kamailio is wrong: a set without its fields is a C{400} (Kamailio
        replays it and answers C{500}), and an unknown key is ignored
        (Kamailio 6.1 and older answer C{400}; master ignores it).
        """
        self.assertAnswer(b'{"action":2}', 400, "Bad Request (no htname)")
        expected = {
            b'{"action":2,"htname":"kdmq","cname":"x","type":2,"strval":"y","bogus":1}': (
                200,
                "OK",
            ),
        }
        compared = 0
        for capture, request in htableRequests("probe-01-errors.txt"):
            response = self.peer.messageReceived(request, None)
            theirs = responseTo("probe-01-errors.txt", request)
            want = expected.get(request.body, (theirs.code, theirs.reason))
            self.assertEqual((response.code, response.reason), want, request.body)
            compared += 1
        self.assertEqual(compared, 8)
        self.assertEqual(self.peer.get("kdmq", "probe"), None)
        self.assertEqual(self.peer.get("kdmq", "probe_i"), 7)
        self.assertEqual(self.peer.get("kdmq", "synced"), "from-probe")
        self.assertEqual(self.peer.get("kdmq", "x"), "y")

    def test_capturedProbeDump(self):
        """
        After the probe-01 changes, C{htable.dump} shows what the probed
        Kamailio node showed (the ignored unknown-key message aside).
        """
        self.peer.set("kdmq", "k1", "hello")
        for capture, request in htableRequests("probe-01-errors.txt"):
            if b"bogus" not in request.body:
                self.peer.messageReceived(request, None)
        text = open(os.path.join(DATA, "htable", "probe-01-errors.txt"), encoding="utf-8").read()
        kamailios = text[text.rindex("\n### node lists") :].split("\n", 2)[2].rstrip("\n")
        self.assertEqual(renderDump(HTableRPC(self.peer).dump("kdmq")), kamailios)

    def test_emptyObject(self):
        """
        C{{}}, which kills a Kamailio 5.6.3 worker (probe-06), is answered
        C{400 Bad Request}.
        """
        [(capture, request)] = htableRequests("probe-06-htable-emptyobj-crash.txt")
        response = self.peer.messageReceived(request, None)
        self.assertEqual((response.code, response.reason), (400, "Bad Request"))

    def test_badJSON(self):
        """
        An empty body, bad JSON, JSON that is not UTF-8, a root that is not
        an object, C{NaN} and absurd nesting are answered C{400 Bad Request}.
        """
        for body in (b"", b"{not json", b"[1]", b'"x"', b"1", b"null", b"\xff{}",
                     b'{"action":NaN}', b"[" * 100000, b'{"action":1}x'):
            self.assertAnswer(body, 400, "Bad Request")

    def test_badActions(self):
        """
        A missing, unknown or mistyped action, a missing field, a bad type
        or mode, an int beyond 32 bits, are answered C{400} with the reason.
        """
        cases = {
            b'{"htname":"kdmq"}': "no action",
            b'{"action":0,"htname":"kdmq"}': "unknown action 0",
            b'{"action":9,"htname":"kdmq"}': "unknown action 9",
            b'{"action":"2","htname":"kdmq"}': "unknown action '2'",
            b'{"action":true,"htname":"kdmq"}': "unknown action True",
            b'{"action":2,"htname":"kdmq","type":2,"strval":"v","mode":1}': "no cname",
            b'{"action":2,"htname":"kdmq","cname":"k","type":2,"mode":1}':
                "action 2 of type 2 without strval",
            b'{"action":2,"htname":"kdmq","cname":"k","type":0,"strval":"v","mode":1}':
                "action 2 of type 0 without intval",
            b'{"action":2,"htname":"kdmq","cname":"k","type":0,"intval":2147483648,"mode":1}':
                "action 2 with an intval beyond 32 bits",
            b'{"action":2,"htname":"kdmq","cname":"k","type":0,"intval":1.5,"mode":1}':
                "action 2 of type 0 without intval",
            b'{"action":2,"htname":"kdmq","cname":"k","type":"0","intval":1,"mode":1}':
                "action 2 with a bad type",
            b'{"action":3,"htname":"kdmq","cname":"k","mode":0}': "action 3 without a 32-bit intval",
            b'{"action":4,"htname":"kdmq","cname":"k","mode":2}': "bad mode 2",
            b'{"action":4,"htname":7,"cname":"k","mode":0}': "no htname",
            b'{"action":4,"htname":"kdmq","cname":"a\\u0000b","mode":0}':
                "a cname must not contain NUL",
            b'{"action":5,"htname":"kdmq","type":2,"strval":1,"mode":0}': "strval is not a string",
            b'{"action":1,"htname":1}': "htname is not a string",
        }
        for body, detail in cases.items():
            self.assertAnswer(body, 400, f"Bad Request ({detail})")
        self.assertEqual(self.changes, [])

    def test_kamailioSuffixRemoval(self):
        """
        Removals by suffix and substring as Kamailio 6.x sends them, without
        C{type} and C{strval}, are answered C{400} naming what is missing.
        """
        self.peer.set("kdmq", "abc", "v")
        self.assertAnswer(b'{"action":7,"htname":"kdmq","mode":0}', 400,
                          "Bad Request (action 7 without strval)")
        self.assertAnswer(b'{"action":8,"htname":"kdmq","mode":0}', 400,
                          "Bad Request (action 8 without strval)")
        self.assertEqual(self.peer.get("kdmq", "abc"), "v")

    def test_unknownTable(self):
        """
        A change to a table not declared here is answered C{500 Server
        Internal Error}, as Kamailio answers it (probe-01).
        """
        for body in (
            b'{"action":2,"htname":"nosuchtable","cname":"x","type":2,"strval":"y","mode":1}',
            b'{"action":3,"htname":"nosuchtable","cname":"x","type":0,"intval":5,"mode":0}',
            b'{"action":4,"htname":"nosuchtable","cname":"x","mode":0}',
            b'{"action":6,"htname":"nosuchtable","type":2,"strval":"x","mode":0}',
        ):
            self.assertAnswer(body, 500, "Server Internal Error")

    def test_setInt(self):
        """
        An integer set, with the bounds of a C int.
        """
        for value in (-(2**31), 2**31 - 1, 0):
            body = json.dumps({"action": 2, "htname": "kdmq", "cname": "i", "type": 0,
                               "intval": value, "mode": 1}).encode()
            self.assertAnswer(body, 200, "OK")
            self.assertEqual(self.peer.get("kdmq", "i"), value)

    def test_setReplacesType(self):
        """
        A string cell set to an integer becomes one, and back.
        """
        self.receive(b'{"action":2,"htname":"kdmq","cname":"c","type":2,"strval":"s","mode":1}')
        self.receive(b'{"action":2,"htname":"kdmq","cname":"c","type":0,"intval":3,"mode":1}')
        self.assertEqual(self.peer.get("kdmq", "c"), 3)
        self.receive(b'{"action":2,"htname":"kdmq","cname":"c","type":2,"strval":"\xc3\xa9","mode":1}')
        self.assertEqual(self.peer.get("kdmq", "c"), "\xe9")

    def test_unknownKeysIgnored(self):
        """
        Unknown keys, C{last_modified} of Kamailio master among them, are
        ignored.
        """
        self.assertAnswer(
            b'{"action":2,"htname":"kdmq","cname":"k","type":2,"strval":"v",'
            b'"last_modified":1767225600123,"mode":1}',
            200,
        )
        self.assertEqual(self.peer.get("kdmq", "k"), "v")

    def test_setExpire(self):
        """
        Action 3 sets the expiry, in seconds from now; 0 makes the cell
        permanent.
        """
        self.peer.set("exp", "k", "v")
        self.assertAnswer(b'{"action":3,"htname":"exp","cname":"k","type":0,"intval":300,"mode":0}', 200)
        self.assertEqual(self.peer.expiresAt("exp", "k"), 300)
        self.clock.advance(299)
        self.assertEqual(self.peer.get("exp", "k"), "v")
        self.assertAnswer(b'{"action":3,"htname":"exp","cname":"k","type":0,"intval":0,"mode":0}', 200)
        self.clock.advance(10000)
        self.assertEqual(self.peer.get("exp", "k"), "v")
        self.assertAnswer(b'{"action":3,"htname":"exp","cname":"nokey","type":0,"intval":1,"mode":0}', 200)

    def test_setExpireIgnoredWithoutAutoexpire(self):
        """
        Action 3 on a table without C{autoexpire} is ignored and answered
        C{200}, as by Kamailio.
        """
        self.peer.set("kdmq", "k", "v")
        self.assertAnswer(b'{"action":3,"htname":"kdmq","cname":"k","type":0,"intval":1,"mode":0}', 200)
        self.clock.advance(10)
        self.assertEqual(self.peer.get("kdmq", "k"), "v")

    def test_delete(self):
        """
        Action 4 deletes; deleting a missing cell is fine.
        """
        self.peer.set("kdmq", "k", "v")
        self.assertAnswer(b'{"action":4,"htname":"kdmq","cname":"k","mode":0}', 200)
        self.assertAnswer(b'{"action":4,"htname":"kdmq","cname":"k","mode":0}', 200)
        self.assertEqual(self.peer.get("kdmq", "k"), None)

    def fill(self):
        for key, value in [("203.0.113.7", "ban"), ("203.0.113.8", 1), ("alice", "sip:alice@192.0.2.10"),
                           ("bob", "sip:bob@example.com"), ("Alpha", "x-bob-x")]:
            self.peer.set("kdmq", key, value)
        self.changes[:] = []

    def removed(self, body):
        self.changes[:] = []
        self.assertAnswer(body, 200, "OK")
        return sorted(c.key for c in self.changes if c.new is None)

    def test_removeRegex(self):
        """
        Action 5 removes the cells whose name (mode 0) or string value
        (mode 1) matches a POSIX extended regular expression, ignoring case.
        """
        self.fill()
        self.assertEqual(
            self.removed(b'{"action":5,"htname":"kdmq","type":2,"strval":"^203\\\\.0\\\\.113\\\\.","mode":0}'),
            ["203.0.113.7", "203.0.113.8"],
        )
        self.assertEqual(
            self.removed(b'{"action":5,"htname":"kdmq","type":2,"strval":"BOB","mode":1}'),
            ["Alpha", "bob"],
        )
        self.assertEqual(
            self.removed(b'{"action":5,"htname":"kdmq","type":2,"strval":"^[[:alpha:]]+$","mode":0}'),
            ["alice"],
        )

    def test_removeBadRegex(self):
        """
        A bad regular expression, or an empty pattern, is answered C{500},
        as by Kamailio.
        """
        self.fill()
        self.assertAnswer(b'{"action":5,"htname":"kdmq","type":2,"strval":"(","mode":0}', 500)
        self.assertAnswer(b'{"action":6,"htname":"kdmq","type":2,"strval":"","mode":0}', 500)
        self.assertEqual(len(self.peer.items("kdmq")), 5)

    def test_removePrefix(self):
        """
        Action 6 removes by prefix of the name, or of string values.
        """
        self.fill()
        self.assertEqual(self.removed(b'{"action":6,"htname":"kdmq","type":2,"strval":"al","mode":0}'),
                         ["alice"])
        self.assertEqual(self.removed(b'{"action":6,"htname":"kdmq","type":2,"strval":"sip:bob","mode":1}'),
                         ["bob"])

    def test_removeSuffixAndSubstring(self):
        """
        Actions 7 and 8, with C{strval}, remove by suffix and by substring;
        integer values never match by value.
        """
        self.fill()
        self.assertEqual(self.removed(b'{"action":8,"htname":"kdmq","type":2,"strval":"1","mode":1}'),
                         ["alice"])
        self.assertEqual(self.removed(b'{"action":7,"htname":"kdmq","type":2,"strval":".8","mode":0}'),
                         ["203.0.113.8"])
        self.assertEqual(self.removed(b'{"action":8,"htname":"kdmq","type":2,"strval":"bob","mode":1}'),
                         ["Alpha", "bob"])
        self.assertEqual(self.peer.items("kdmq"), [("203.0.113.7", "ban")])

    def test_nonReplicatedTable(self):
        """
        Changes from the bus to a table without C{dmqreplicate} are applied,
        as Kamailio applies them.
        """
        self.assertAnswer(b'{"action":2,"htname":"local","cname":"lk","type":2,"strval":"v","mode":1}', 200)
        self.assertEqual(self.peer.get("local", "lk"), "v")

    def test_capturedCells(self):
        """
        The C{cells} dump of capture 08 is applied and answered C{200}.
        """
        for capture, request in htableRequests("08-join-n4-init-sync.txt"):
            if request.body.startswith(b'{"cells"'):
                self.assertEqual(self.peer.messageReceived(request, None).code, 200)
        self.assertEqual(self.peer.items("kdmq"), [("counter", 42), ("k1", "hello")])
        self.assertEqual({c.origin for c in self.changes}, {"sync"})
        self.assertEqual(self.bus.sent, [])

    def test_cellsSkipBadEntries(self):
        """
        Cells without a name or a value, of an unknown table, or that are
        not objects are skipped; the others are applied and the dump is
        answered C{200}.  Kamailio would reuse the previous cell's fields.
        """
        body = json.dumps({"cells": [
            {"htname": "kdmq", "cname": "a", "type": 2, "strval": "A", "expire": 0},
            {"htname": "kdmq", "cname": "b", "type": 2, "expire": 0},
            {"htname": "kdmq", "type": 0, "intval": 1, "expire": 0},
            {"htname": "nosuch", "cname": "c", "type": 0, "intval": 1, "expire": 0},
            "junk",
            {"cname": "d", "type": 0, "intval": 1},
            {"htname": "kdmq", "cname": "e", "type": 0, "intval": 5, "expire": "x"},
            {"htname": "kdmq", "cname": "f", "type": 0, "intval": 6, "bogus": 1},
        ]}).encode()
        self.assertAnswer(body, 200, "OK")
        self.assertEqual(sorted(self.peer.items("kdmq")), [("a", "A"), ("f", 6)])
        self.assertAnswer(b'{"cells":{}}', 400, "Bad Request (cells is not an array)")
        self.assertAnswer(b'{"cells":[]}', 200, "OK")

    def test_cellsHugeNumbers(self):
        """
        A cell whose C{expire} or C{type} is beyond 32 bits (as Kamailio
        reads them) is skipped with a warning (once per cause) and no
        traceback; the other cells are applied and the dump is answered
        C{200}.
        """
        events = EventLoggingObserver()
        self.patch(HTablePeer, "_log", Logger(observer=events))
        self.clock, self.bus, self.peer = makePeer()
        self.clock.advance(1_700_000_000)
        body = (
            b'{"cells":['
            b'{"htname":"exp","cname":"a","type":0,"intval":1,"expire":1},'
            b'{"htname":"exp","cname":"b","type":0,"intval":2,"expire":' + b"9" * 400 + b"},"
            b'{"htname":"exp","cname":"c","type":0,"intval":3,"expire":-' + b"9" * 400 + b"},"
            b'{"htname":"exp","cname":"d","type":0,"intval":4,"expire":2147483648},'
            b'{"htname":"exp","cname":"e","type":' + b"9" * 400 + b',"strval":"v"},'
            b'{"htname":"exp","cname":"f","type":0,"intval":6,"expire":2147483647}'
            b"]}"
        )
        self.assertAnswer(body, 200, "OK")
        self.assertEqual(sorted(self.peer.items("exp")), [("a", 1), ("f", 6)])
        self.assertEqual(self.peer.expiresAt("exp", "f"), 2147483647)
        self.assertEqual(
            [e["detail"] for e in events if e["log_level"].name == "warn"],
            ["a cell with an expire beyond 32 bits", "a cell with a bad type"],
        )
        self.assertEqual(self.peer.statistics["skippedCells"], 4)
        for event in events:
            self.assertNotIn("log_failure", event)

    def test_hostileInputs(self):
        """
        Hostile messages are each answered and none raises: an C{expire}
        too large for a float, one read as an infinite float (its cell is
        skipped), a set, and a removal by a pathological expression (refused
        with a C{500}, as Kamailio answers a pattern it cannot use).
        """
        self.clock.advance(1_700_000_000)
        cases = [
            (b'{"cells":[{"htname":"exp","cname":"a","type":0,"intval":1,"expire":1},'
             b'{"htname":"exp","cname":"b","type":0,"intval":1,"expire":' + b"9" * 400 + b"}]}", 200),
            (b'{"cells":[{"htname":"exp","cname":"c","type":0,"intval":1,"expire":1e400}]}', 200),
            (b'{"action":2,"htname":"exp","cname":"k","type":2,"strval":"v","mode":1}', 200),
            (b'{"action":5,"htname":"exp","type":2,"strval":"(a+)+$","mode":0}', 500),
        ]
        for body, code in cases:
            self.assertEqual(self.receive(body).code, code, body)
        self.assertEqual(self.peer.items("exp"), [("k", "v"), ("a", 1)])

    def test_typeBeyond32Bits(self):
        """
        A change whose C{type} is beyond 32 bits is answered C{400}.
        """
        self.assertAnswer(
            b'{"action":2,"htname":"kdmq","cname":"k","type":4294967298,"strval":"v","mode":1}',
            400,
            "Bad Request (action 2 with a bad type)",
        )
        self.assertEqual(self.peer.get("kdmq", "k"), None)

    def test_cellsExpiry(self):
        """
        A synced cell expires at its C{expire} (absolute Unix seconds); with
        C{expire} 0 or past, it gets the table's default expiry.
        """
        self.clock.advance(1000)
        body = json.dumps({"cells": [
            {"htname": "exp", "cname": "abs", "type": 2, "strval": "v", "expire": 1010},
            {"htname": "exp", "cname": "zero", "type": 2, "strval": "v", "expire": 0},
            {"htname": "exp", "cname": "past", "type": 2, "strval": "v", "expire": 999},
            {"htname": "kdmq", "cname": "never", "type": 2, "strval": "v", "expire": 1010},
        ]}).encode()
        self.assertAnswer(body, 200)
        self.assertEqual(self.peer.expiresAt("exp", "abs"), 1010)
        self.assertEqual(self.peer.expiresAt("exp", "zero"), 1060)
        self.assertEqual(self.peer.expiresAt("exp", "past"), 1060)
        self.assertEqual(self.peer.expiresAt("kdmq", "never"), None)

    def test_warnsWithoutTraceback(self):
        """
        Bad input is logged once, as a warning, without a traceback.
        """
        events = EventLoggingObserver()
        self.patch(HTablePeer, "_log", Logger(observer=events))
        self.clock, self.bus, self.peer = makePeer()
        self.receive(b"{not json")
        [event] = events
        self.assertEqual(event["log_level"].name, "warn")
        self.assertNotIn("log_failure", event)


class SendTests(SynchronousTestCase):
    """
    What we send is byte for byte what Kamailio sends for the same change.
    """

    def setUp(self):
        self.clock, self.bus, self.peer = makePeer()

    def bodies(self):
        return [body for peerId, body, node, contentType in self.bus.sent]

    def test_capturedChanges(self):
        """
        The changes of capture 03, made here, are sent as Kamailio sent them.
        """
        theirs = []
        for capture, request in htableRequests("03-htable-replication.txt"):
            if request.body not in theirs:
                theirs.append(request.body)
        self.peer.set("kdmq", "k1", "hello")
        self.peer.set("kdmq", "counter", 42)
        self.peer.set("kdmq", "k2", "value with spaces")
        self.peer.delete("kdmq", "k2")
        self.assertEqual(self.bodies(), theirs)
        self.assertEqual({(p, n, t) for p, b, n, t in self.bus.sent}, {("htable", None, CONTENT_TYPE)})

    def test_otherActions(self):
        """
        The other changes are sent in Kamailio's format; the removals by
        suffix and substring carry C{type} and C{strval}.
        """
        self.peer.set("exp", "203.0.113.7", 1)
        self.peer.setExpire("exp", "203.0.113.7", 300)
        self.peer.removeMatching("exp", "re", "^203\\.0\\.113\\.")
        self.peer.removeMatching("exp", "sw", "al", 1)
        self.peer.removeMatching("exp", "ew", "x")
        self.peer.removeMatching("exp", "in", "\xe9\"")
        self.assertEqual(
            self.bodies(),
            [
                b'{"action":2,"htname":"exp","cname":"203.0.113.7","type":0,"intval":1,"mode":1}',
                b'{"action":3,"htname":"exp","cname":"203.0.113.7","type":0,"intval":300,"mode":0}',
                b'{"action":5,"htname":"exp","type":2,"strval":"^203\\\\.0\\\\.113\\\\.","mode":0}',
                b'{"action":6,"htname":"exp","type":2,"strval":"al","mode":1}',
                b'{"action":7,"htname":"exp","type":2,"strval":"x","mode":0}',
                '{"action":8,"htname":"exp","type":2,"strval":"\xe9\\"","mode":0}'.encode("utf-8"),
            ],
        )

    def test_syncRequest(self):
        """
        A sync request is C{{"action":1}}, as in capture 08.
        """
        node = Node(sip.URI("127.0.0.12", 5060))
        self.peer.requestSync(node)
        self.peer.requestSync(table="kdmq")
        [(capture, request)] = htableRequests("08-join-n4-init-sync.txt")[:1]
        self.assertEqual(
            self.bus.sent,
            [
                ("htable", request.body, node, CONTENT_TYPE),
                ("htable", b'{"action":1,"htname":"kdmq"}', None, CONTENT_TYPE),
            ],
        )

    def test_capturedDump(self):
        """
        A sync dump of capture 08's table is the bytes n2 sent; an empty one
        is n1's and n3's C{{"cells":[]}}.
        """
        dumps = [r.body for c, r in htableRequests("08-join-n4-init-sync.txt")
                 if r.body.startswith(b'{"cells"')]
        self.assertEqual(self.peer.syncBodies(), [b'{"cells":[]}'])
        self.assertEqual(dumps[1:], [b'{"cells":[]}', b'{"cells":[]}'])
        self.peer.set("kdmq", "k1", "hello")
        self.peer.set("kdmq", "counter", 42)
        self.peer.set("local", "lk", "notreplicated")
        self.assertEqual(self.peer.syncBodies(), dumps[:1])

    def test_dumpExpiry(self):
        """
        A dump gives each cell its absolute expiry, and leaves expired cells
        out.
        """
        self.clock.advance(1795703194)
        self.peer.set("exp", "a", "x")
        self.clock.advance(30)
        self.peer.set("exp", "b", 2)
        self.clock.advance(31)
        self.assertEqual(
            self.peer.syncBodies("exp"),
            [b'{"cells":[{"htname":"exp","cname":"b","type":0,"intval":2,"expire":1795703284}]}'],
        )

    def test_dumpTablesInKamailiosOrder(self):
        """
        The tables are dumped the last declared first, as Kamailio lists them.
        """
        clock, bus, peer = makePeer(("a=>dmqreplicate=1", "b=>dmqreplicate=1"))
        peer.set("a", "k", 1)
        peer.set("b", "k", 2)
        [body] = peer.syncBodies()
        self.assertEqual([c["htname"] for c in json.loads(body)["cells"]], ["b", "a"])
        self.assertEqual([c["htname"] for c in json.loads(peer.syncBodies("a")[0])["cells"]], ["a"])

    def test_chunks(self):
        """
        Dumps are cut in bodies of at most 60000 octets; a full one is
        followed by one more, so that an exact fit ends with
        C{{"cells":[]}}.
        """
        # 239 cells of 250 octets with their commas: 12 + 239 * 251 - 1 = 60000.
        template = b'{"htname":"kdmq","cname":"k000","type":2,"strval":"","expire":0}'
        padding = "v" * (250 - len(template))
        for i in range(478):
            self.peer.set("kdmq", "k%03d" % i, padding)
        bodies = self.peer.syncBodies()
        self.assertEqual([len(b) for b in bodies], [MAX_SYNC_BODY, MAX_SYNC_BODY, 12])
        self.assertEqual(bodies[-1], b'{"cells":[]}')
        self.assertEqual(sum(len(json.loads(b)["cells"]) for b in bodies), 478)
        self.peer.delete("kdmq", "k000")
        bodies = self.peer.syncBodies()
        self.assertEqual([len(b) for b in bodies], [MAX_SYNC_BODY, MAX_SYNC_BODY - 251])

    def test_hugeCell(self):
        """
        A cell larger than a body goes alone.
        """
        # The largest value a change to kdmq's cell "big" can carry.
        self.peer.set("kdmq", "big", "x" * (MAX_BODY - 72))
        self.peer.set("kdmq", "small", 1)
        bodies = self.peer.syncBodies()
        [big] = [b for b in bodies if b"big" in b]
        self.assertEqual([c["cname"] for c in json.loads(big)["cells"]], ["big"])
        self.assertTrue(all(len(b) <= MAX_SYNC_BODY for b in bodies if b is not big))
        self.assertEqual(sum(len(json.loads(b)["cells"]) for b in bodies), 2)

    def test_syncAnswer(self):
        """
        A sync request from a node is answered by a dump sent to that node,
        before the C{200}; from a sender that is not a node (probe-02), the
        dump is broadcast.
        """
        self.peer.set("kdmq", "k1", "hello")
        self.bus.sent[:] = []
        node = Node(sip.URI("127.0.0.12", 5060))
        response = self.peer.messageReceived(makeRequest(b'{"action":1}'), node)
        self.assertEqual(response.code, 200)
        self.assertEqual(self.bus.sent, [("htable", self.peer.syncBodies()[0], node, CONTENT_TYPE)])
        self.bus.sent[:] = []
        [(capture, request)] = htableRequests("probe-02-htable-sync-unknown.txt")
        response = self.peer.messageReceived(request, None)
        self.assertEqual((response.code, response.reason), (200, "OK"))
        self.assertEqual([n for p, b, n, t in self.bus.sent], [None])

    def test_syncUnknownTable(self):
        """
        A sync request for a table we do not replicate gets an empty dump.
        """
        self.peer.set("local", "k", 1)
        node = Node(sip.URI("127.0.0.12", 5060))
        for name in (b"local", b"nosuch"):
            self.bus.sent[:] = []
            response = self.peer.messageReceived(
                makeRequest(b'{"action":1,"htname":"' + name + b'"}'), node
            )
            self.assertEqual(response.code, 200)
            self.assertEqual([b for p, b, n, t in self.bus.sent], [b'{"cells":[]}'])
            # One dump to a node every SYNC_INTERVAL at most.
            self.clock.advance(0)
            self.clock.advance(10)

    def test_nonReplicatedStaysLocal(self):
        """
        Changes to a table without C{dmqreplicate} are not sent, and their
        Deferred fires with C{{}} at once.
        """
        outcome = result(self.peer.set("local", "k", "v"))
        result(self.peer.delete("local", "k"))
        self.assertEqual(outcome, [{}])
        self.assertEqual(self.bus.sent, [])


class APITests(SynchronousTestCase):
    """
    The program's API: arguments are checked, changes apply at once.
    """

    def setUp(self):
        self.clock, self.bus, self.peer = makePeer()

    def test_tables(self):
        """
        C{tables} lists the declared tables, C{spec} gives their spec.
        """
        self.assertEqual(self.peer.tables(), ["kdmq", "local", "exp"])
        self.assertEqual(self.peer.spec("exp").autoexpire, 60)

    def test_unknownTable(self):
        """
        Every call on an undeclared table raises L{NoSuchTable}.
        """
        for call in (
            lambda: self.peer.get("x", "k"),
            lambda: self.peer.set("x", "k", 1),
            lambda: self.peer.delete("x", "k"),
            lambda: self.peer.setExpire("x", "k", 1),
            lambda: self.peer.removeMatching("x", "re", "k"),
            lambda: self.peer.items("x"),
            lambda: self.peer.spec("x"),
        ):
            self.assertRaises(NoSuchTable, call)

    def test_badArguments(self):
        """
        Keys are non-empty str, values str or 32-bit int.
        """
        self.assertRaises(TypeError, self.peer.set, "kdmq", "k", 1.5)
        self.assertRaises(TypeError, self.peer.set, "kdmq", "k", True)
        self.assertRaises(TypeError, self.peer.set, "kdmq", "k", None)
        self.assertRaises(TypeError, self.peer.set, "kdmq", b"k", 1)
        self.assertRaises(ValueError, self.peer.set, "kdmq", "", 1)
        self.assertRaises(ValueError, self.peer.set, "kdmq", "k", 2**31)
        self.assertRaises(ValueError, self.peer.set, "kdmq", "k", "a\x00")
        self.assertRaises(ValueError, self.peer.set, "kdmq", "k", "\ud800")
        self.assertRaises(ValueError, self.peer.removeMatching, "kdmq", "eq", "k")
        self.assertRaises(ValueError, self.peer.removeMatching, "kdmq", "re", "")
        self.assertRaises(ValueError, self.peer.removeMatching, "kdmq", "re", "(")
        self.assertRaises(ValueError, self.peer.removeMatching, "kdmq", "re", "k", 2)
        self.assertRaises(ValueError, self.peer.setExpire, "kdmq", "k", 10)
        self.assertRaises(ValueError, self.peer.setExpire, "exp", "k", 2**31)
        self.assertEqual(self.bus.sent, [])

    def test_setGetItems(self):
        """
        C{set} applies at once, C{items} lists in Kamailio's order.
        """
        self.peer.set("kdmq", "k1", "hello")
        self.peer.set("kdmq", "counter", 42)
        self.assertEqual(self.peer.get("kdmq", "k1"), "hello")
        self.assertEqual(self.peer.get("kdmq", "nothing"), None)
        self.assertEqual(self.peer.items("kdmq"), [("counter", 42), ("k1", "hello")])

    def test_removeMatching(self):
        """
        C{removeMatching} removes what matches, here and on the bus.
        """
        for key in ("ab", "abc", "bc"):
            self.peer.set("kdmq", key, key.upper())
        self.peer.removeMatching("kdmq", "ew", "bc")
        self.assertEqual(self.peer.items("kdmq"), [("ab", "AB")])

    def test_subscribe(self):
        """
        Subscribers hear of every change with its origin; a failing one is
        logged and does not stop the others; unsubscribing works.
        """
        changes: list[Change] = []

        def broken(change):
            raise RuntimeError("subscriber bug")

        self.peer.subscribe(broken)
        unsubscribe = self.peer.subscribe(changes.append)
        self.peer.set("exp", "k", "v")
        self.peer.set("exp", "k", 2)
        self.peer.messageReceived(
            makeRequest(b'{"action":2,"htname":"exp","cname":"r","type":2,"strval":"x","mode":1}'), None
        )
        self.peer.messageReceived(
            makeRequest(b'{"cells":[{"htname":"exp","cname":"s","type":0,"intval":1,"expire":0}]}'), None
        )
        self.peer.delete("exp", "r")
        self.clock.advance(61)
        self.peer.purgeExpired()
        unsubscribe()
        self.peer.set("exp", "k", 3)
        self.assertEqual(
            changes,
            [
                Change("exp", "k", None, "v", "local"),
                Change("exp", "k", "v", 2, "local"),
                Change("exp", "r", None, "x", "replicated"),
                Change("exp", "s", None, 1, "sync"),
                Change("exp", "r", "x", None, "local"),
                Change("exp", "k", 2, None, "expired"),
                Change("exp", "s", 1, None, "expired"),
            ],
        )
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 8)


class ExpiryTests(SynchronousTestCase):
    """
    Per-table expiry on the injected clock.
    """

    def setUp(self):
        self.clock, self.bus, self.peer = makePeer(
            (KDMQ, EXPIRING, "fixed=>autoexpire=60;updateexpire=0")
        )
        self.expired: list[str] = []

        def onChange(c):
            if c.origin == "expired":
                self.expired.append(c.key)

        self.peer.subscribe(onChange)

    def test_autoexpire(self):
        """
        A cell expires C{autoexpire} seconds after it was set.
        """
        self.peer.set("exp", "k", "v")
        self.clock.advance(59.9)
        self.assertEqual(self.peer.get("exp", "k"), "v")
        self.clock.advance(0.1)
        self.assertEqual(self.peer.get("exp", "k"), None)
        self.assertEqual(self.expired, ["k"])
        self.assertEqual(self.peer.items("exp"), [])

    def test_noAutoexpire(self):
        """
        Without C{autoexpire}, cells stay.
        """
        self.peer.set("kdmq", "k", "v")
        self.clock.advance(10**9)
        self.assertEqual(self.peer.get("kdmq", "k"), "v")

    def test_updateexpire(self):
        """
        Setting a cell again restarts its expiry, unless C{updateexpire=0}.
        """
        self.peer.set("exp", "a", 1)
        self.peer.set("fixed", "a", 1)
        self.clock.advance(40)
        self.peer.set("exp", "a", 2)
        self.peer.set("fixed", "a", 2)
        self.clock.advance(30)
        self.assertEqual(self.peer.get("exp", "a"), 2)
        self.assertEqual(self.peer.get("fixed", "a"), None)

    def test_setExpire(self):
        """
        C{setExpire} moves the expiry; 0 makes the cell permanent; a set
        afterwards restarts the default expiry.
        """
        self.peer.set("exp", "a", 1)
        self.peer.setExpire("exp", "a", 5)
        self.clock.advance(5)
        self.assertEqual(self.peer.get("exp", "a"), None)
        self.peer.set("exp", "b", 1)
        self.peer.setExpire("exp", "b", 0)
        self.clock.advance(1000)
        self.assertEqual(self.peer.get("exp", "b"), 1)
        self.peer.set("exp", "b", 2)
        self.assertEqual(self.peer.expiresAt("exp", "b"), 1065)

    def test_purge(self):
        """
        Started, the peer purges expired cells every 20 seconds without
        being asked; stopped, it leaves no timer.
        """
        self.peer.startService()
        self.clock.advance(10)
        self.peer.set("exp", "k", "v")
        self.clock.advance(50)
        self.assertEqual(self.expired, [])
        self.clock.advance(20)
        self.assertEqual(self.expired, ["k"])
        self.assertEqual(len(self.clock.getDelayedCalls()), 1)
        self.assertEqual(result(self.peer.stopService()), [None])
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_noPurgeWithoutExpiry(self):
        """
        With no table that expires, no timer runs.
        """
        clock, bus, peer = makePeer((KDMQ, LOCAL))
        peer.startService()
        self.assertEqual(clock.getDelayedCalls(), [])
        peer.stopService()


class InitSyncTests(SynchronousTestCase):
    """
    With C{initSync}, one node is asked for the tables when we join.
    """

    def setUp(self):
        self.a = Node(sip.URI("127.0.0.12", 5060))
        self.b = Node(sip.URI("127.0.0.13", 5060))
        self.clock, self.bus, self.peer = makePeer(others=[self.a, self.b], initSync=True)

    def test_firstNodeOnly(self):
        """
        The first node reported active is asked; the next ones are not,
        even when a node list made them all active at once.
        """
        self.peer.nodeAdded(self.a)
        self.peer.nodeAdded(self.b)
        self.assertEqual(self.bus.sent, [("htable", b'{"action":1}', self.a, CONTENT_TYPE)])

    def test_rejoin(self):
        """
        After losing every node, the first one back is asked again.
        """
        self.peer.nodeAdded(self.a)
        self.peer.nodeAdded(self.b)
        self.a.status = NodeStatus.NOT_ACTIVE
        self.b.status = NodeStatus.DISABLED
        self.b.status = NodeStatus.ACTIVE
        self.peer.nodeAdded(self.b)
        self.a.status = NodeStatus.ACTIVE
        self.peer.nodeAdded(self.a)
        self.assertEqual([n for p, b, n, t in self.bus.sent], [self.a, self.b])

    def test_notIsolated(self):
        """
        A node that comes back while another stayed active is not asked.
        """
        self.peer.nodeAdded(self.a)
        self.peer.nodeAdded(self.b)
        self.b.status = NodeStatus.NOT_ACTIVE
        self.b.status = NodeStatus.ACTIVE
        self.peer.nodeAdded(self.b)
        self.assertEqual([n for p, b, n, t in self.bus.sent], [self.a])

    def test_removedNode(self):
        """
        A node that was removed from the list counts as gone.
        """
        self.peer.nodeAdded(self.a)
        self.bus.others = [self.b]
        self.peer.nodeAdded(self.b)
        self.assertEqual([n for p, b, n, t in self.bus.sent], [self.a, self.b])

    def test_off(self):
        """
        Without C{initSync}, nothing is asked.
        """
        clock, bus, peer = makePeer(others=[self.a])
        peer.nodeAdded(self.a)
        self.assertEqual(bus.sent, [])


class ClusterTests(SynchronousTestCase):
    """
    Three and four of our nodes on an in-memory network.
    """

    def test_replicate(self):
        """
        String and integer sets and deletes on one node reach the others,
        with one request to each, and nobody sends them on.
        """
        cluster = Cluster(self)
        a, b, c = cluster.peers
        since = len(cluster.network.sent)
        outcome = result(a.set("kdmq", "k1", "hello"))
        a.set("kdmq", "counter", 42)
        cluster.network.run(1)
        self.assertEqual([p.items("kdmq") for p in (a, b, c)],
                         [[("counter", 42), ("k1", "hello")]] * 3)
        [responses] = outcome
        self.assertEqual({n.uri.host: r.code for n, r in responses.items()},
                         {"127.0.0.12": 200, "127.0.0.13": 200})
        b.delete("kdmq", "k1")
        cluster.network.run(1)
        self.assertEqual([p.items("kdmq") for p in (a, b, c)], [[("counter", 42)]] * 3)
        requests = cluster.htableRequests(since)
        self.assertEqual(
            sorted((d.source[0], d.destination[0]) for i, d, m in requests),
            sorted([("127.0.0.11", "127.0.0.12"), ("127.0.0.11", "127.0.0.13")] * 2
                   + [("127.0.0.12", "127.0.0.11"), ("127.0.0.12", "127.0.0.13")]),
        )
        responses = [m for i, d, m in cluster.htable(since) if isinstance(m, sip.Response)]
        self.assertEqual([r.code for r in responses], [200] * 6)
        for i, d, request in requests:
            self.assertEqual(request.contentType, CONTENT_TYPE)
            self.assertEqual(request.maxForwards, 1)

    def test_capturedRequests(self):
        """
        Our requests carry what Kamailio's do: the captured bodies, the
        content type, Max-Forwards 1.
        """
        cluster = Cluster(self, count=2)
        since = len(cluster.network.sent)
        cluster.peers[0].set("kdmq", "k1", "hello")
        cluster.network.run(1)
        [(i, datagram, ours)] = cluster.htableRequests(since)
        [(capture, theirs)] = htableRequests("03-htable-replication.txt")[:1]
        self.assertEqual(ours.body, theirs.body)
        self.assertEqual(ours.contentType, theirs.contentType)
        self.assertEqual(ours.maxForwards, theirs.maxForwards)
        self.assertEqual(ours.uri.user, theirs.uri.user)

    def test_otherChangesReplicate(self):
        """
        Expiry changes and every kind of removal replicate between our nodes.
        """
        cluster = Cluster(self)
        a, b, c = cluster.peers
        for key in ("ab", "abc", "xbc", "zz", "yy", "keep"):
            a.set("exp", key, key * 2)
        a.setExpire("exp", "keep", 0)
        a.removeMatching("exp", "sw", "ab")
        a.removeMatching("exp", "ew", "bc", 1)
        a.removeMatching("exp", "in", "z")
        a.removeMatching("exp", "re", "^Y+$")
        cluster.network.run(1)
        self.assertEqual([p.items("exp") for p in (a, b, c)], [[("keep", "keepkeep")]] * 3)
        cluster.clock.advance(1000)
        self.assertEqual([p.get("exp", "keep") for p in (a, b, c)], ["keepkeep"] * 3)

    def test_nonReplicatedStaysLocal(self):
        """
        A table without C{dmqreplicate} sends nothing.
        """
        cluster = Cluster(self)
        since = len(cluster.network.sent)
        cluster.peers[0].set("local", "lk", "notreplicated")
        cluster.network.run(1)
        self.assertEqual(cluster.htable(since), [])
        self.assertEqual(cluster.peers[1].get("local", "lk"), None)

    def syncExchange(self, cluster, since, joiner):
        """
        The sync request the joiner sent, its 200, and the cells requests
        between the asked node and the joiner, as indexes in C{network.sent}.
        """
        traffic = cluster.htable(since)
        [(iRequest, dRequest, request)] = [
            (i, d, m) for i, d, m in traffic
            if isinstance(m, sip.Request) and m.body.startswith(b'{"action":1')
        ]
        self.assertEqual(dRequest.source[0], joiner)
        [i200] = [i for i, d, m in traffic
                  if isinstance(m, sip.Response) and m.callID == request.callID and m.code == 200]
        cells = [(i, m) for i, d, m in traffic
                 if isinstance(m, sip.Request) and m.body.startswith(b'{"cells"')]
        for i, d, m in traffic:
            if isinstance(m, sip.Request) and m.body.startswith(b'{"cells"'):
                self.assertEqual((d.source, d.destination), (dRequest.destination, dRequest.source))
        return iRequest, i200, cells

    def test_syncOnJoin(self):
        """
        A late node with C{initSync} asks one node, which sends it the whole
        table (as n2 did in capture 08) before answering C{200}.
        """
        cluster = Cluster(self, tables=(KDMQ, LOCAL))
        a = cluster.peers[0]
        a.set("kdmq", "k1", "hello")
        a.set("kdmq", "counter", 42)
        a.set("local", "lk", "notreplicated")
        cluster.network.run(1)
        since = len(cluster.network.sent)
        node, late = cluster.add(initSync=True)
        cluster.network.run(5)
        self.assertEqual(late.items("kdmq"), [("counter", 42), ("k1", "hello")])
        self.assertEqual(late.items("local"), [])
        iRequest, i200, cells = self.syncExchange(cluster, since, "127.0.0.14")
        [(iCells, message)] = cells
        self.assertTrue(iRequest < iCells < i200)
        captured = [r.body for c, r in htableRequests("08-join-n4-init-sync.txt")
                    if r.body.startswith(b'{"cells":[{')]
        self.assertEqual([message.body], captured)

    def test_oneSyncPerJoin(self):
        """
        When every node has C{initSync}, a late node still asks one node
        only, and the others ask nobody: no duplicate dumps.
        """
        cluster = Cluster(self, initSync=True)
        cluster.peers[1].set("kdmq", "k", "v")
        cluster.network.run(1)
        since = len(cluster.network.sent)
        node, late = cluster.add(initSync=True)
        cluster.network.run(5)
        self.syncExchange(cluster, since, "127.0.0.14")
        self.assertEqual(late.items("kdmq"), [("k", "v")])

    def test_largeSync(self):
        """
        A table over 60000 octets reaches a late node in several bodies of
        at most 60000 octets, the last one empty when the others are full;
        the first before the C{200}, the others paced after it (Kamailio
        does not wait for the answer).
        """
        cluster = Cluster(self, tables=(KDMQ,))
        a = cluster.peers[0]
        template = b'{"htname":"kdmq","cname":"k000","type":2,"strval":"","expire":0}'
        padding = "v" * (250 - len(template))
        for i in range(478):
            a.set("kdmq", "k%03d" % i, padding)
        cluster.network.run(2)
        since = len(cluster.network.sent)
        node, late = cluster.add(initSync=True)
        cluster.network.run(5)
        self.assertEqual(len(late.items("kdmq")), 478)
        self.assertEqual(late.items("kdmq"), a.items("kdmq"))
        iRequest, i200, cells = self.syncExchange(cluster, since, "127.0.0.14")
        self.assertEqual([len(m.body) for i, m in cells], [MAX_SYNC_BODY, MAX_SYNC_BODY, 12])
        self.assertEqual(cells[-1][1].body, b'{"cells":[]}')
        self.assertTrue(iRequest < cells[0][0] < i200)
        self.assertTrue(all(iRequest < i for i, m in cells))

    def test_syncFromUnknownSender(self):
        """
        A sync request from a sender that is not a node (probe-02) is
        answered by broadcasting the dump to every active node.
        """
        cluster = Cluster(self)
        a = cluster.peers[0]
        a.set("kdmq", "k1", "hello")
        cluster.network.run(1)
        since = len(cluster.network.sent)
        [(capture, request)] = htableRequests("probe-02-htable-sync-unknown.txt")
        self.assertIsNone(cluster.nodes[0].nodeManager.find(request.fromAddress.uri))
        self.assertEqual(a.messageReceived(request, None).code, 200)
        cluster.network.run(1)
        self.assertEqual(
            sorted(d.destination[0] for i, d, m in cluster.htableRequests(since)),
            ["127.0.0.12", "127.0.0.13"],
        )

    def test_stopLeavesNoTimer(self):
        """
        Stopping the nodes stops the peers' purge timers too.
        """
        cluster = Cluster(self)
        cluster.peers[0].set("exp", "k", 1)
        cluster.stop()
        self.assertEqual(cluster.clock.getDelayedCalls(), [])
        self.assertFalse(any(p.running for p in cluster.peers))


def renderDump(dump):
    """
    Print an C{htable.dump} result as kamcmd prints it.
    """
    lines = []
    for entry in dump:
        lines += ["{", f"\tentry: {entry['entry']}", f"\tsize: {entry['size']}", "\tslot: {"]
        for item in entry["slot"]:
            lines += ["\t\t{", f"\t\t\tname: {item['name']}", f"\t\t\tvalue: {item['value']}",
                      f"\t\t\ttype: {item['type']}", "\t\t}"]
        lines += ["\t}", "}"]
    return "\n".join(lines)


def rpcOutput(title):
    """
    The output under C{----- title} in the captured C{rpc-outputs.txt}.
    """
    text = open(os.path.join(DATA, "htable", "rpc-outputs.txt"), encoding="utf-8").read()
    sections = {}
    for section in ("\n" + text).split("\n----- ")[1:]:
        header, _, body = section.partition("\n")
        sections[header.rsplit(" (", 1)[0]] = body.rstrip("\n")
    return sections[title]


class RPCTests(SynchronousTestCase):
    """
    Kamailio's htable RPC commands.
    """

    def setUp(self):
        self.clock, self.bus, self.peer = makePeer()
        self.rpc = HTableRPC(self.peer)

    def assertFault(self, code, message, method, *params):
        e = self.assertRaises(RPCError, method, *params)
        self.assertEqual((e.code, e.message), (code, message))

    def test_names(self):
        """
        The methods go by Kamailio's names.
        """
        self.assertEqual(
            sorted(self.rpc.methods()),
            ["htable.delete", "htable.dump", "htable.get", "htable.listTables",
             "htable.seti", "htable.sets"],
        )

    def test_capturedSession(self):
        """
        The htable commands of the captured session give Kamailio's answers,
        and its dumps print as kamcmd printed them.
        """
        self.assertEqual(rpcOutput("sets on n1: rpc.sh n1 htable.sets kdmq k1 hello"),
                         self.rpc.sets("kdmq", "k1", "hello"))
        self.assertEqual(rpcOutput("seti on n1: rpc.sh n1 htable.seti kdmq counter 42"),
                         self.rpc.seti("kdmq", "counter", "42"))
        self.assertEqual(self.rpc.sets("kdmq", "k2", "value with spaces"), "Ok. Key set to new value.")
        self.assertEqual(rpcOutput("sets on n1 non-replicated table: rpc.sh n1 htable.sets local lk notreplicated"),
                         self.rpc.sets("local", "lk", "notreplicated"))
        self.assertEqual(rpcOutput("delete on n1: rpc.sh n1 htable.delete kdmq k2"),
                         self.rpc.delete("kdmq", "k2"))
        self.assertEqual(renderDump(self.rpc.dump("kdmq")),
                         rpcOutput("dump kdmq: rpc.sh n1 htable.dump kdmq"))
        self.assertEqual(renderDump(self.rpc.dump("local")),
                         rpcOutput("dump local: rpc.sh n1 htable.dump local"))
        self.assertEqual(
            [json.loads(body)["action"] for p, body, n, t in self.bus.sent], [2, 2, 2, 4]
        )

    def test_dumpJSON(self):
        """
        C{htable.dump} as JSON: a list of slots.
        """
        self.rpc.seti("kdmq", "counter", 42)
        self.assertEqual(
            self.rpc.dump("kdmq"),
            [{"entry": 25, "size": 1, "slot": [{"name": "counter", "value": 42, "type": "int"}]}],
        )
        self.assertEqual(self.rpc.dump("local"), [])

    def test_dumpSharedSlot(self):
        """
        Cells of one slot are listed together.
        """
        clock, bus, peer = makePeer(("t=>size=0",))
        keys = [k for k in ("a", "b", "c", "d", "e", "f", "g", "h", "i")]
        for key in keys:
            peer.set("t", key, key)
        dump = HTableRPC(peer).dump("t")

        def slotSize(entry: dict[str, object]) -> int:
            slot = entry["slot"]
            assert isinstance(slot, list)
            return len(slot)

        self.assertEqual(sum(e["size"] for e in dump), 9)
        self.assertEqual([e["size"] for e in dump], [slotSize(e) for e in dump])
        self.assertEqual(sorted(e["entry"] for e in dump), [e["entry"] for e in dump])
        self.assertLessEqual(len(dump), 8)

    def test_get(self):
        """
        C{htable.get} answers C{{"item": {name, value, flags, expire}}}.
        """
        self.rpc.sets("kdmq", "k1", "hello")
        self.rpc.seti("kdmq", "counter", -7)
        self.assertEqual(
            self.rpc.get("kdmq", "k1"),
            {"item": {"name": "k1", "value": "hello", "flags": 2, "expire": "NEVER"}},
        )
        self.assertEqual(
            self.rpc.get("kdmq", "counter"),
            {"item": {"name": "counter", "value": -7, "flags": 0, "expire": "NEVER"}},
        )
        self.clock.advance(1795702985)
        self.rpc.sets("exp", "e", "x")
        expected = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(1795703045))
        self.assertEqual(self.rpc.get("exp", "e")["item"]["expire"], expected)

    def test_faults(self):
        """
        Kamailio's faults: a missing key, an unknown table, a delete of a
        missing key, missing parameters.
        """
        self.assertFault(500, "Key name doesn't exist in htable.", self.rpc.get, "kdmq", "nokey")
        self.assertFault(500, "No such htable", self.rpc.get, "nosuch", "k")
        self.assertFault(500, "No such htable", self.rpc.sets, "nosuch", "k", "v")
        self.assertFault(500, "No such htable", self.rpc.seti, "nosuch", "k", 1)
        self.assertFault(500, "No such htable", self.rpc.delete, "nosuch", "k")
        self.assertFault(500, "No such htable", self.rpc.dump, "nosuch")
        self.assertFault(404, "Key not found in htable.", self.rpc.delete, "kdmq", "nokey")
        self.assertFault(500, "Not enough parameters (htable name and key name)", self.rpc.get, "kdmq")
        self.assertFault(500, "Not enough parameters (htable name, key name and value)",
                         self.rpc.sets, "kdmq", "k")
        self.assertFault(500, "Not enough parameters (htable name, key name and value)",
                         self.rpc.seti, "kdmq", "k", None)
        self.assertFault(500, "No htable name given", self.rpc.dump)
        self.assertFault(400, "Invalid integer value: x", self.rpc.seti, "kdmq", "k", "x")
        self.assertFault(400, "Invalid integer value: 2147483648", self.rpc.seti, "kdmq", "k", 2**31)
        e = self.assertRaises(RPCError, self.rpc.sets, "kdmq", "", "v")
        self.assertEqual(e.code, 500)
        self.assertEqual(self.bus.sent, [])

    def test_listTables(self):
        """
        C{htable.listTables}: the tables, the last declared first, with the
        slot count as C{size}.
        """
        self.assertEqual(
            self.rpc.listTables(),
            [
                {"name": "exp", "dbtable": "", "dbmode": 0, "expire": 60, "updateexpire": 1,
                 "size": 16, "dmqreplicate": 1},
                {"name": "local", "dbtable": "", "dbmode": 0, "expire": 0, "updateexpire": 1,
                 "size": 16, "dmqreplicate": 0},
                {"name": "kdmq", "dbtable": "", "dbmode": 0, "expire": 0, "updateexpire": 1,
                 "size": 256, "dmqreplicate": 1},
            ],
        )
        clock, bus, peer = makePeer(())
        self.assertFault(500, "No htables", HTableRPC(peer).listTables)

    def test_jsonable(self):
        """
        Every result survives C{json.dumps}.
        """
        self.rpc.sets("kdmq", "k", "v")
        for value in (self.rpc.get("kdmq", "k"), self.rpc.dump("kdmq"), self.rpc.listTables()):
            json.dumps(value)


class KamailioInteropTests(TestCase):
    """
    Our htable peer and real Kamailio 5.6.3 nodes on one bus over loopback
    UDP (skipped without the C{kamailio} binary; see L{dmq.test.kamailio}).
    """

    skip = SKIP_REASON
    timeout = 60

    def ourNode(self, ip, seeds=(), initSync=False):
        node = makeNodeService(
            reactor,
            NodeConfig(
                serverAddress=sip.URI(ip, 5060),
                notificationAddresses=tuple(sip.parseURI(s) for s in seeds),
                pingInterval=5,
            ),
        )
        peer = HTablePeer(reactor, node.bus, (KDMQ, LOCAL), initSync=initSync)
        node.bus.registerPeer(peer)
        peer.setServiceParent(node)
        node.startService()
        self.addCleanup(lambda: node.stopService() if node.running else None)
        return peer

    @defer.inlineCallbacks
    def kamailioHas(self, kamailio, peer):
        """
        Whether C{kamailio} holds every cell of our C{kdmq}, with our value.
        """
        for key, value in peer.items("kdmq"):
            theirs = yield kamailio.htableGet("kdmq", key)
            if theirs != value:
                return False
        return True

    @defer.inlineCallbacks
    def test_mixedBus(self):
        """
        We sync from a Kamailio node on joining, and a Kamailio node with
        C{dmq_init_sync} syncs from us, over a dump of two bodies; changes
        replicate both ways; Kamailio applies our removals by regex and
        prefix, and answers C{500} to those by suffix and substring.
        """
        k1 = KamailioNode.forTest(self, "127.0.0.61")
        yield k1.start()
        yield k1.htableSets("kdmq", "k1", "hello")
        yield k1.htableSeti("kdmq", "counter", 42)
        ours = self.ourNode("127.0.0.62", seeds=[k1.uri], initSync=True)
        yield waitFor(lambda: len(ours.items("kdmq")) == 2, timeout=10, interval=0.05,
                      description="our node synced from Kamailio")
        self.assertEqual(ours.items("kdmq"), [("counter", 42), ("k1", "hello")])

        for i in range(40):
            ours.set("kdmq", "big%03d" % i, "x" * 2000)
        ours.set("kdmq", "n", -5)
        yield ours.delete("kdmq", "k1")
        self.assertEqual(len(ours.syncBodies()), 2)
        yield waitFor(lambda: self.kamailioHas(k1, ours), timeout=5, interval=0.1,
                      description="Kamailio has our changes")
        self.assertIsNone((yield k1.htableGet("kdmq", "k1")))

        k2 = KamailioNode.forTest(self, "127.0.0.63", notificationAddress=["sip:127.0.0.62:5060"], initSync=True)
        yield k2.start()
        yield waitFor(lambda: self.kamailioHas(k2, ours), timeout=15, interval=0.2,
                      description="Kamailio synced from us")

        responses = yield ours.removeMatching("kdmq", "re", "^BIG00")
        self.assertEqual({r.code for r in responses.values()}, {200})
        responses = yield ours.removeMatching("kdmq", "sw", "big01")
        self.assertEqual({r.code for r in responses.values()}, {200})
        responses = yield ours.removeMatching("kdmq", "ew", "9")
        self.assertEqual({r.code for r in responses.values()}, {500})
        self.assertIsNone((yield k1.htableGet("kdmq", "big005")))
        self.assertIsNone((yield k2.htableGet("kdmq", "big015")))
        self.assertEqual((yield k1.htableGet("kdmq", "big029")), "x" * 2000)

        yield k2.htableSets("kdmq", "fromk2", "v")
        yield waitFor(lambda: ours.get("kdmq", "fromk2") == "v", timeout=5, interval=0.05,
                      description="a Kamailio change reached us")
