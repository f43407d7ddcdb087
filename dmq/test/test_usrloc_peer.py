# -*- test-case-name: dmq.test.test_usrloc_peer -*-
"""
Tests for L{dmq.peers.usrloc.peer}, L{dmq.peers.usrloc.sync} and
L{dmq.peers.usrloc.rpc}: the peer on a fake bus and a L{Clock}, the
captured Kamailio traffic replayed into it, its dumps and their pacing,
the RPC shapes against those of a live Kamailio, and several of our nodes
on an in-memory network.
"""

from __future__ import annotations

import json

from twisted.application.service import IService
from twisted.internet.defer import Deferred, succeed
from twisted.internet.task import Clock
from twisted.logger import LogLevel, capturedLogs
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import implementer
from zope.interface.verify import verifyObject

from dmq import sip
from dmq.interfaces import IDMQBus, IDMQPeer
from dmq.node import Node, NodeStatus
from dmq.peers.usrloc import (
    CONTENT_TYPE,
    DELETE,
    EXPIRE,
    INSERT,
    UPDATE,
    Change,
    Contact,
    NoSuchContact,
    RPCError,
    SocketInfo,
    StoreFull,
    UsrlocPeer,
    UsrlocRPC,
)
from dmq.peers.usrloc.sync import Dump
from dmq.peers.usrloc.wire import decode, encodeContact
from dmq.test.test_usrloc_wire import decodeBatch, decodeContact, entryContact
from dmq.test.fakenet import FakeNetwork, makeNode
from dmq.test.test_usrloc_wire import rpcOutputs, usrlocRequests

NOW = 1_795_997_300


def node(host, status=NodeStatus.ACTIVE):
    return Node(sip.URI(host, 5060), status)


def makeRequest(body, sender=("127.0.0.101", 5060)):
    """
    A KDMQ request to the usrloc peer from C{sender}.
    """
    uri = sip.URI("127.0.0.11", 5060, user="usrloc")
    return sip.Request(
        "KDMQ",
        uri,
        (
            ("To", f"<{uri.toString()}>"),
            ("From", f"<sip:usrloc@{sender[0]}:{sender[1]}>;tag=1"),
            ("CSeq", "10 KDMQ"),
            ("Call-ID", "1@127.0.0.101"),
            ("Max-Forwards", "1"),
            ("Content-Type", CONTENT_TYPE),
        ),
        body,
    )


@implementer(IDMQBus)
class FakeBus:
    """
    A bus that records what is sent; each send's Deferred is fired at once
    with a C{200} (C{{}} for a broadcast), or kept unfired in C{pending}
    when C{hold} is set.
    """

    def __init__(self, others=()):
        self.localNode = Node(sip.URI("127.0.0.11", 5060), NodeStatus.ACTIVE, local=True)
        self.others = list(others)
        self.sent = []
        self.hold = False
        self.pending = []

    def nodes(self):
        return [self.localNode, *self.others]

    def registerPeer(self, peer):
        pass

    def unregisterPeer(self, peerId):
        pass

    def _outcome(self, result):
        if not self.hold:
            return succeed(result)
        d: Deferred[object] = Deferred()
        self.pending.append((d, result))
        return d

    def send(self, peerId, body, node, contentType="text/plain", maxForwards=1):
        self.sent.append((peerId, body, node, contentType))
        return self._outcome(sip.Response(200, "OK"))

    def broadcast(self, peerId, body, contentType="text/plain", exclude=None, maxForwards=1):
        self.sent.append((peerId, body, None, contentType))
        return self._outcome({})

    def handleRequest(self, request, source):
        raise NotImplementedError()

    def release(self, count=1):
        for _ in range(count):
            d, result = self.pending.pop(0)
            d.callback(result)


def makePeer(others=(), **options):
    clock = Clock()
    clock.advance(NOW)
    bus = FakeBus(others)
    peer = UsrlocPeer(clock, bus, **options)
    return clock, bus, peer


def alice(**fields):
    fields.setdefault("ruid", "r-alice")
    fields.setdefault("uri", "sip:alice@192.0.2.10:5060")
    return Contact("alice", **fields)


class ReceiveTests(SynchronousTestCase):
    """
    Requests from Kamailio nodes are applied and answered as Kamailio
    answers them, or better where it is wrong.
    """

    def setUp(self):
        self.clock, self.bus, self.peer = makePeer()
        self.changes: list[Change] = []
        self.peer.subscribe(self.changes.append)

    def receive(self, body, node=None):
        return self.peer.messageReceived(makeRequest(body), node)

    def test_interfaces(self):
        """
        The peer provides L{IDMQPeer} and L{IService}.
        """
        self.assertTrue(verifyObject(IDMQPeer, self.peer))
        self.assertTrue(verifyObject(IService, self.peer))
        self.assertEqual(self.peer.peerId, "usrloc")

    def test_capturedReplication(self):
        """
        Kamailio's captured changes leave us with what it holds: alice
        unregistered, u0 to u3 and three contacts of carol; nothing is sent
        on.
        """
        requests = [r for r in usrlocRequests("01-replication.txt") if b'"action":3' not in r.body]
        for request in requests:
            self.assertEqual(self.peer.messageReceived(request, None).code, 200)
        # By hash slot: carol 886, u2 to u1 934 to 937.
        self.assertEqual(self.peer.aors(), ["carol", "u2", "u3", "u0", "u1"])
        self.assertEqual([c.uri for c in self.peer.lookup("carol")],
                         [f"sip:carol@127.0.0.103:5060;line={i}" for i in range(3)])
        self.assertEqual(self.peer.lookup("alice"), [])
        events = [(c.event, c.contact.aor) for c in self.changes]
        self.assertEqual(events[:3], [(INSERT, "alice"), (UPDATE, "alice"), (INSERT, "u0")])
        self.assertIn((DELETE, "alice"), events)
        # The dumps' repeats change nothing.
        self.assertEqual(len(self.changes), 1 + 1 + 4 + 1 + 3)
        self.assertEqual(self.bus.sent, [])
        self.assertEqual({c.origin for c in self.changes}, {"replicated"})

    def test_capturedMulti(self):
        """
        Kamailio's captured C{multi} dumps are applied.
        """
        self.clock.advance(1795996540 - NOW)
        for request in usrlocRequests("02-multi.txt"):
            if request.body.startswith(b'{"multi"'):
                self.assertEqual(self.peer.messageReceived(request, None).code, 200)
        self.assertEqual(len(self.peer.contacts()), 9)

    def test_capturedMatching(self):
        """
        Matched by its URI, a contact keeps its ruid; a stale CSeq is
        ignored; the removal of a ruid not held does nothing: what the
        captured Kamailio did (C{probe-matching.txt}).
        """
        seen = []
        for request in usrlocRequests("probe-matching.txt", source="127.0.0.102:5060"):
            if b'"zz"' in request.body:
                self.assertEqual(self.peer.messageReceived(request, None).code, 200)
                seen.append([(c.ruid, c.callID, c.q) for c in self.peer.lookup("zz")])
        self.assertEqual(seen, [[("rA", "X", 0)], [("rA", "Y", 500)], [("rA", "Y", 500)], [("rA", "Y", 500)]])

    def test_badMessages(self):
        """
        What L{decode} refuses is answered C{400} with its reason, counted,
        and logged once per minute without a traceback.
        """
        with capturedLogs() as events:
            self.assertEqual(self.receive(b"not json").reason, "Bad Request")
            response = self.receive(b'{"action":9}')
            self.assertEqual((response.code, response.reason), (400, "Bad Request (unknown action 9)"))
            self.receive(b"{}")
        self.assertEqual(self.peer.statistics["badMessages"], 3)
        warnings = [e for e in events if e["log_level"] == LogLevel.warn]
        self.assertEqual(len(warnings), 1)
        self.assertNotIn("log_failure", warnings[0])
        self.assertEqual(str(warnings[0]["sender"]), "sip:usrloc@127.0.0.101:5060")
        self.clock.advance(61)
        with capturedLogs() as events:
            self.receive(b"[]")
        [warning] = [e for e in events if e["log_level"] == LogLevel.warn]
        self.assertEqual(warning["suppressed"], 2)

    def test_hostileInputs(self):
        """
        Whatever a body holds, the answer is a 4xx whose reason phrase is
        one short line a SIP response can carry.
        """
        for body in (
            b'{"multi":{"a\\r\\nVia: x":{"action":9}}}',
            b'{"multi":{"\xc3\xa9\\u0000":[]}}',
            b'{"action":"\\r\\n' + b"x" * 5000 + b'"}',
            b'{"action":1,"aor":"a","ruid":"r","c":"u","q":"\\r\\n"}',
            b'{"action":1,"aor":"a\\u0000","ruid":"r","c":"u"}',
            b'{"action":1,"aor":"\\ud800","ruid":"r","c":"u"}',
            b'{"multi":{"1":{"action":1,"aor":"a","ruid":"r","c":"u","cseq":1e400}}}',
        ):
            with self.subTest(body=body[:40]):
                request = makeRequest(body)
                response = self.peer.messageReceived(request, None)
                self.assertEqual(response.code, 400)
                self.assertLess(len(response.reason), 120, response.reason)
                sip.serialise(sip.responseFor(request, response.code, response.reason, toTag="t"))

    def test_batchWithBadEntry(self):
        """
        A batch's good entries are applied, its bad ones skipped and
        counted, and it is answered C{400} naming the first (Kamailio stops
        at it, and answers C{400} too).
        """
        body = json.dumps({"multi": {
            "1": {"action": 1, "aor": "m3", "ruid": "r3", "c": "sip:m3"},
            "2": {"action": 7},
            "3": {"action": 1, "aor": "m4", "ruid": "r4", "c": "sip:m4"},
            "4": {"action": 2, "aor": "m3", "ruid": "r3"},
        }}).encode()
        response = self.receive(body)
        self.assertEqual((response.code, response.reason), (400, "Bad Request (entry 2: unknown action 7)"))
        self.assertEqual(self.peer.aors(), ["m4"])
        self.assertEqual(self.peer.statistics["badEntries"], 1)

    def test_nothing(self):
        """
        Action 0, an empty batch, an unknown removal are answered C{200}
        and change nothing.
        """
        for body in (b'{"action":0}', b'{"multi":{}}', b'{"action":2,"aor":"a","ruid":"r"}'):
            self.assertEqual(self.receive(body).code, 200)
        self.assertEqual(self.changes, [])

    def test_full(self):
        """
        A contact past a bound is dropped, counted and warned of; the
        request is still answered C{200}, as Kamailio answers when applying
        fails.
        """
        clock, bus, peer = makePeer(maxAoRs=1)
        with capturedLogs() as events:
            for aor in ("a", "b", "c"):
                body = encodeContact(1, Contact(aor, f"sip:{aor}", "r"))
                self.assertEqual(peer.messageReceived(makeRequest(body), None).code, 200)
        self.assertEqual(peer.aors(), ["a"])
        self.assertEqual(peer.statistics["dropped"], 2)
        self.assertEqual(len([e for e in events if e["log_level"] == LogLevel.warn]), 1)

    def test_socketInfo(self):
        """
        With socket info 1, C{sock} is kept and sent; a bad one is a C{400}.
        """
        clock, bus, peer = makePeer(socketInfo=SocketInfo.SOCKET)
        clock.advance(1795996640 - NOW)
        request = usrlocRequests("03-socket-info.txt")[1]
        self.assertEqual(peer.messageReceived(request, None).code, 200)
        [stored] = peer.contacts()
        self.assertEqual(stored.socket, "udp:127.0.0.101:5060")
        bad = request.body.replace(b'"sock":"udp:127.0.0.101:5060"', b'"sock":"udp:[bad"')
        self.assertEqual(peer.messageReceived(makeRequest(bad), None).code, 400)
        self.assertEqual(list(peer.syncBodies()), [encodeContact(1, stored, SocketInfo.SOCKET)])


class LocalTests(SynchronousTestCase):
    """
    Changes made through the API are applied and replicated.
    """

    def setUp(self):
        self.clock, self.bus, self.peer = makePeer()
        self.changes: list[Change] = []
        self.peer.subscribe(self.changes.append)

    def test_save(self):
        """
        A saved contact is stamped with the time and broadcast as action 1;
        the same again sends nothing.
        """
        d = self.peer.save(alice(expires=NOW + 60))
        stored = alice(expires=NOW + 60, lastModified=NOW)
        self.assertEqual(self.peer.lookup("alice"), [stored])
        self.assertEqual(self.bus.sent, [("usrloc", encodeContact(1, stored), None, CONTENT_TYPE)])
        self.assertEqual(self.successResultOf(d), {})
        self.assertEqual(self.changes, [Change(INSERT, stored, None, "local")])
        self.peer.save(alice(expires=NOW + 60))
        self.assertEqual(len(self.bus.sent), 1)

    def test_saveSameURI(self):
        """
        A contact saved with the URI of one held, under another record id,
        updates it, and is sent under its record id, as Kamailio would have
        it.
        """
        self.peer.save(alice())
        self.clock.advance(1)
        self.peer.save(alice(ruid="other", cseq=2))
        stored = alice(cseq=2, lastModified=NOW + 1)
        self.assertEqual(self.peer.lookup("alice"), [stored])
        self.assertEqual(self.bus.sent[-1][1], encodeContact(1, stored))

    def test_delete(self):
        """
        A deleted contact is broadcast as action 2 with all its fields; one
        not held is L{NoSuchContact}.
        """
        self.peer.save(alice(callID="c", cseq=3))
        stored = self.peer.lookup("alice")[0]
        self.peer.delete("alice", "r-alice")
        self.assertEqual(self.bus.sent[-1][1], encodeContact(2, stored))
        self.assertEqual(self.changes[-1], Change(DELETE, stored, None, "local"))
        self.assertRaises(NoSuchContact, self.peer.delete, "alice", "r-alice")

    def test_refused(self):
        """
        A contact past a bound or too large for a datagram is refused, and
        nothing is sent.
        """
        clock, bus, peer = makePeer(maxContactsPerAoR=1)
        peer.save(alice())
        self.assertRaises(StoreFull, peer.save, alice(ruid="r2", uri="sip:2"))
        self.assertRaises(ValueError, peer.save, alice(ruid="r3", path="p" * 60000))
        self.assertEqual(len(bus.sent), 1)

    def test_expiry(self):
        """
        Once started, the peer purges expired contacts every second, and
        sends nothing for them (as Kamailio 5.6); stopped, it leaves no
        timer.
        """
        self.peer.startService()
        self.peer.save(alice(expires=NOW + 5))
        self.clock.advance(4)
        self.assertEqual(len(self.peer.lookup("alice")), 1)
        self.clock.advance(1)
        self.assertEqual(self.changes[-1].event, EXPIRE)
        self.assertEqual(self.changes[-1].origin, "clock")
        self.assertEqual(len(self.bus.sent), 1)
        self.peer.stopService()
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_badOptions(self):
        """
        Kamailio's bounds on its options are ours.
        """
        for options in ({"batchMsgContacts": 0}, {"batchMsgContacts": 151}, {"batchMsgSize": 60001},
                        {"socketInfo": 3}, {"purgeInterval": 0}, {"maxDumps": 0}):
            self.assertRaises(ValueError, makePeer, **options)


class SyncTests(SynchronousTestCase):
    """
    Sync requests are answered with paced dumps; on joining, one node is
    asked.
    """

    def setUp(self):
        self.k1 = node("127.0.0.101")
        self.k2 = node("127.0.0.102")
        self.clock, self.bus, self.peer = makePeer(others=[self.k1, self.k2])
        for i in range(5):
            self.peer.save(Contact(f"u{i}", f"sip:u{i}@h", f"r{i}", expires=NOW + 100))
        self.bus.sent.clear()

    def test_dumpToSender(self):
        """
        A sync request from a node is answered with its dump, one action 1
        per contact, then C{200}.
        """
        response = self.peer.messageReceived(makeRequest(b'{"action":3}'), self.k1)
        self.assertEqual(response.code, 200)
        self.assertEqual([(s[1], s[2]) for s in self.bus.sent],
                         [(encodeContact(1, c), self.k1) for c in self.peer.contacts()])
        self.assertEqual(self.peer.statistics["dumpBodies"], 5)

    def test_dumpFromUnknown(self):
        """
        From a node we do not know, the dump is broadcast, as by Kamailio.
        """
        self.peer.messageReceived(makeRequest(b'{"action":3}'), None)
        self.assertEqual({s[2] for s in self.bus.sent}, {None})

    def test_batches(self):
        """
        With C{batchMsgContacts}, the dump is C{multi} bodies.
        """
        clock, bus, peer = makePeer(batchMsgContacts=2)
        for i in range(5):
            peer.save(Contact(f"u{i}", f"sip:u{i}@h", f"r{i}"))
        bus.sent.clear()
        peer.messageReceived(makeRequest(b'{"action":3}'), self.k1)
        batches = [decodeBatch(s[1]) for s in bus.sent]
        self.assertEqual([len(b.entries) for b in batches], [2, 2, 1])
        self.assertEqual([entryContact(e) for b in batches for e in b.entries], peer.contacts())

    def test_paced(self):
        """
        At most C{dumpWindow} dump requests await their replies; each reply
        lets the next go; contacts changed meanwhile go as they are then,
        removed ones not at all.
        """
        clock, bus, peer = makePeer(dumpWindow=2)
        for i in range(5):
            peer.save(Contact(f"u{i}", f"sip:u{i}@h", f"r{i}"))
        order = peer.contacts()
        bus.sent.clear()
        bus.hold = True
        peer.messageReceived(makeRequest(b'{"action":3}'), self.k1)
        self.assertEqual(len(bus.sent), 2)
        changed = Contact(order[2].aor, "sip:changed", order[2].ruid)
        bus.hold = False
        peer.save(changed)
        peer.delete(order[3].aor, order[3].ruid)
        bus.hold = True
        bus.sent.clear()
        bus.release()
        self.assertEqual([decodeContact(s[1]).uri for s in bus.sent], ["sip:changed"])
        bus.release(2)
        self.assertEqual([decodeContact(s[1]) for s in bus.sent[1:]], [order[4]])
        bus.release(1)
        self.assertEqual(len(peer._dumps), 0)

    def test_oneDumpPerNode(self):
        """
        A second sync request from a node whose dump is on its way starts
        none; past C{maxDumps} dumps, a sync request is answered C{503}.
        """
        clock, bus, peer = makePeer(maxDumps=1, dumpWindow=1)
        peer.save(alice())
        peer.save(Contact("bob", "sip:bob"))
        bus.sent.clear()
        bus.hold = True
        self.assertEqual(peer.messageReceived(makeRequest(b'{"action":3}'), self.k1).code, 200)
        self.assertEqual(peer.messageReceived(makeRequest(b'{"action":3}'), self.k1).code, 200)
        with capturedLogs() as events:
            response = peer.messageReceived(makeRequest(b'{"action":3}'), self.k2)
        self.assertEqual((response.code, response.reason), (503, "Service Unavailable"))
        self.assertEqual(peer.statistics["syncsRefused"], 1)
        self.assertEqual(len([e for e in events if e["log_level"] == LogLevel.warn]), 1)
        self.assertEqual(len(bus.sent), 1)
        bus.release(2)
        self.assertEqual(peer.messageReceived(makeRequest(b'{"action":3}'), self.k2).code, 200)

    def test_stopCancelsDumps(self):
        """
        Stopping the peer stops its dumps: replies that come after send
        nothing more.
        """
        clock, bus, peer = makePeer(dumpWindow=2)
        for i in range(5):
            peer.save(Contact(f"u{i}", f"sip:u{i}@h"))
        peer.startService()
        bus.sent.clear()
        bus.hold = True
        peer.messageReceived(makeRequest(b'{"action":3}'), self.k1)
        self.assertEqual(len(bus.sent), 2)
        peer.stopService()
        bus.release(2)
        self.assertEqual(len(bus.sent), 2)
        self.assertEqual(len(peer._dumps), 0)
        self.assertEqual(clock.getDelayedCalls(), [])

    def test_deadAsker(self):
        """
        A dump to a node that stops answering (a C{408}) stops, and frees
        its place; a broadcast dump does not stop for one node.
        """
        clock, bus, peer = makePeer(dumpWindow=2, maxDumps=1)
        for i in range(5):
            peer.save(Contact(f"u{i}", f"sip:u{i}@h"))
        bus.sent.clear()
        bus.hold = True
        peer.messageReceived(makeRequest(b'{"action":3}'), self.k1)
        d, _ = bus.pending.pop(0)
        d.callback(sip.Response(408, "Request Timeout"))
        self.assertEqual(len(peer._dumps), 0)
        bus.release(len(bus.pending))
        self.assertEqual(len(bus.sent), 2)
        peer.messageReceived(makeRequest(b'{"action":3}'), None)
        d, _ = bus.pending.pop(0)
        d.callback({self.k1: sip.Response(408, "Request Timeout")})
        self.assertEqual(len(bus.sent), 5)

    def test_joinSync(self):
        """
        With C{sync}, the first node reported active is asked for its
        contacts; another, while it is still active, is not; after losing
        every node, the next is.
        """
        self.k1.status = NodeStatus.ACTIVE
        self.bus.others = [self.k1]
        self.peer.nodeAdded(self.k1)
        self.assertEqual(self.bus.sent, [("usrloc", b'{"action":3}', self.k1, CONTENT_TYPE)])
        self.bus.others = [self.k1, self.k2]
        self.peer.nodeAdded(self.k2)
        self.assertEqual(len(self.bus.sent), 1)
        self.k1.status = self.k2.status = NodeStatus.DISABLED
        self.k2.status = NodeStatus.ACTIVE
        self.bus.others = [self.k1, self.k2]
        self.peer.nodeAdded(self.k2)
        self.assertEqual(len(self.bus.sent), 2)

    def test_noJoinSync(self):
        """
        Without C{sync}, nothing is asked.
        """
        clock, bus, peer = makePeer(others=[self.k1], sync=False)
        peer.nodeAdded(self.k1)
        self.assertEqual(bus.sent, [])


class DumpTests(SynchronousTestCase):
    """
    L{Dump} on its own.
    """

    def test_empty(self):
        """
        A dump of nothing is done at once.
        """
        dump = Dump(lambda body: succeed(None), iter([]), 4).start()
        self.assertEqual(self.successResultOf(dump.done), 0)

    def test_failedSend(self):
        """
        A send that fails counts as ended.
        """
        from twisted.internet.defer import fail

        dump = Dump(lambda body: fail(RuntimeError()).addErrback(lambda f: None), iter([b"a", b"b"]), 1).start()
        self.assertEqual(self.successResultOf(dump.done), 2)

    def test_window(self):
        """
        The window must be at least 1.
        """
        self.assertRaises(ValueError, Dump, lambda body: succeed(None), iter([]), 0)


def capturedDump(after=None):
    [output] = [o for o in rpcOutputs() if o["method"] == "ul.dump" and o["params"] == [] and o.get("after") == after]
    return output["result"]


def contactsOf(dump, now):
    """
    The L{Contact}s a captured C{ul.dump} shows, made back from its fields.
    """
    found = []
    for aor in dump["Domains"][0]["Domain"]["AoRs"]:
        for entry in aor["Info"]["Contacts"]:
            c = entry["Contact"]
            expires = c["Expires"]
            found.append(Contact(
                aor=aor["Info"]["AoR"], uri=c["Address"], ruid=c["Ruid"],
                received="" if c["Received"] == "[not set]" else c["Received"],
                path="" if c["Path"] == "[not set]" else c["Path"],
                callID=c["Call-ID"], userAgent="" if c["User-Agent"] == "[not set]" else c["User-Agent"],
                instance="" if c["Instance"] == "[not set]" else c["Instance"],
                expires=0 if expires == "permanent" else now + expires,
                cseq=c["CSeq"], flags=c["Flags"], cflags=c["CFlags"],
                q=-1 if c["Q"] == -1 else round(c["Q"] * 1000), lastModified=c["Last-Modified"],
                methods=c["Methods"], regID=c["Reg-Id"], serverID=c["Server-Id"],
                socket="" if c["Socket"] == "[not set]" else c["Socket"],
            ))
    return found


class RPCTests(SynchronousTestCase):
    """
    C{ul.dump} and C{ul.lookup} in the shapes of Kamailio 5.6.
    """

    def setUp(self):
        self.captured = capturedDump()
        self.now = self.captured["Domains"][0]["Domain"]["AoRs"][0]["Info"]["Contacts"][0]["Contact"]["Last-Modified"]
        self.clock = Clock()
        self.clock.advance(self.now)
        self.peer = UsrlocPeer(self.clock, FakeBus(), socketInfo=SocketInfo.SOCKET)
        # Received in the order they were registered (local saves would
        # stamp the time).
        for contact in sorted(contactsOf(self.captured, self.now), key=lambda c: c.callID):
            body = encodeContact(1, contact, SocketInfo.SOCKET)
            self.assertEqual(self.peer.messageReceived(makeRequest(body), None).code, 200)
        self.rpc = UsrlocRPC(self.peer, self.clock)

    def test_names(self):
        """
        The methods are C{ul.dump} and C{ul.lookup}.
        """
        self.assertEqual(sorted(self.rpc.methods()), ["ul.dump", "ul.lookup"])

    def test_dump(self):
        """
        C{ul.dump} is what Kamailio answered, key for key and in its order.
        """
        self.assertEqual(json.dumps(self.rpc.dump()), json.dumps(self.captured))
        for output in rpcOutputs():
            if output["method"] == "ul.dump" and "after" not in output:
                self.assertEqual(self.rpc.dump(*output["params"]), output["result"], output["params"])

    def test_lookup(self):
        """
        C{ul.lookup} answers and faults as Kamailio did.
        """
        for output in rpcOutputs():
            if output["method"] != "ul.lookup":
                continue
            with self.subTest(params=output["params"]):
                if "error" in output:
                    e = self.assertRaises(RPCError, self.rpc.lookup, *output["params"])
                    self.assertEqual([e.code, e.message], output["error"])
                else:
                    self.assertEqual(json.dumps(self.rpc.lookup(*output["params"])), json.dumps(output["result"]))

    def test_expiredAndPermanent(self):
        """
        C{ul.dump} shows an expired contact not purged yet as C{expired}, a
        permanent one as C{permanent}, q as Kamailio prints it;
        C{ul.lookup} leaves expired ones out, and faults when none is left.
        """
        self.peer.messageReceived(makeRequest(encodeContact(1, Contact("p", "sip:p", "rp", q=1000))), None)
        self.clock.advance(61)
        dump = self.rpc.dump()
        expires = {c["Contact"]["Address"]: c["Contact"]["Expires"]
                   for aor in dump["Domains"][0]["Domain"]["AoRs"] for c in aor["Info"]["Contacts"]}
        self.assertEqual(expires["sip:p"], "permanent")
        self.assertEqual(expires["sip:alice@127.0.0.103:5060;line=0"], "expired")
        self.assertEqual(expires["sip:alice@127.0.0.103:5060;line=2"], 1)
        self.assertEqual(self.rpc.lookup("location", "p")["Contacts"][0]["Contact"]["Q"], 1)
        self.assertEqual(len(self.rpc.lookup("location", "alice")["Contacts"]), 1)
        self.clock.advance(5)
        e = self.assertRaises(RPCError, self.rpc.lookup, "location", "alice")
        self.assertEqual((e.code, e.message), (500, "AOR has no contacts"))

    def test_receivedContacts(self):
        """
        Contacts received from the bus with fields left out show as in
        Kamailio's C{ul.dump} (but C{Last-Keepalive}, which Kamailio sets to
        when it received them, and C{Socket}: those registered at Kamailio
        came in on its socket, which it does not send without
        C{replicate_socket_info}).
        """
        captured = capturedDump("probe-errors")
        clock = Clock()
        clock.advance(1795996466)
        peer = UsrlocPeer(clock, FakeBus())
        for request in usrlocRequests("probe-errors.txt", source="127.0.0.102:5060")[2:]:
            peer.messageReceived(request, None)
        for request in usrlocRequests("probe-errors.txt"):
            peer.messageReceived(request, None)
        # Kamailio stopped at the bad entry of a batch; we applied the next.
        peer.delete("m4", "r-m4")
        ours = UsrlocRPC(peer, clock).dump()
        for dump in (ours, captured):
            for aor in dump["Domains"][0]["Domain"]["AoRs"]:
                for c in aor["Info"]["Contacts"]:
                    del c["Contact"]["Last-Keepalive"]
                    if dump is ours:
                        self.assertEqual(c["Contact"]["Socket"], "[not set]")
                    del c["Contact"]["Socket"]
                    if isinstance(c["Contact"]["Expires"], int):
                        c["Contact"]["Expires"] = "some"
        self.assertEqual(ours, captured)

    def test_jsonable(self):
        """
        The results are plain JSON values.
        """
        json.dumps([self.rpc.dump(), self.rpc.dump("brief"), self.rpc.lookup("location", "bob")])


class ClusterTests(SynchronousTestCase):
    """
    Our nodes with the usrloc peer (C{--usrloc}) on an in-memory network.
    """

    def setUp(self):
        self.clock = Clock()
        self.clock.advance(NOW)
        self.network = FakeNetwork(self.clock)
        self.nodes = []
        self.addCleanup(self.stop)

    def add(self, **options):
        host = f"127.0.0.{11 + len(self.nodes)}"
        seeds = ["127.0.0.11"] if self.nodes else []
        n = makeNode(self.clock, self.network, host, seeds=seeds, usrloc=True, **options)
        self.nodes.append(n)
        self.network.run(3)
        return n.usrloc

    def stop(self):
        for n in self.nodes:
            if n.running:
                n.stopService()
        self.network.run(70)

    def usrlocRequests(self, since=0):
        found = []
        for datagram in self.network.sent[since:]:
            message = sip.parse(datagram.data)
            if isinstance(message, sip.Request) and message.uri.user == "usrloc":
                found.append((datagram, message))
        return found

    def test_replicate(self):
        """
        A save and a delete on one node reach the others, one request to
        each, and nobody sends them on; expiry happens everywhere at once.
        """
        a, b, c = self.add(), self.add(), self.add()
        since = len(self.network.sent)
        a.save(alice(expires=NOW + 30))
        self.network.run(1)
        self.assertEqual([p.lookup("alice") for p in (b, c)], [a.lookup("alice")] * 2)
        self.assertEqual(len(self.usrlocRequests(since)), 2)
        b.save(Contact("bob", "sip:bob"))
        b.delete("bob", b.lookup("bob")[0].ruid)
        self.network.run(1)
        self.assertEqual([p.aors() for p in (a, b, c)], [["alice"]] * 3)
        self.assertEqual(len(self.usrlocRequests(since)), 6)
        for datagram, request in self.usrlocRequests(since):
            self.assertEqual((request.contentType, request.maxForwards), (CONTENT_TYPE, 1))
        self.network.run(30)
        self.assertEqual([p.aors() for p in (a, b, c)], [[]] * 3)
        self.assertEqual(len(self.usrlocRequests(since)), 6)

    def test_syncOnJoin(self):
        """
        A node joining asks one node for its contacts, and gets them in
        C{multi} bodies; the node it asked asks it back.
        """
        a = self.add(usrlocBatchMsgContacts=20)
        for i in range(100):
            a.save(Contact(f"user{i}", f"sip:user{i}@192.0.2.1", expires=NOW + 3600))
        since = len(self.network.sent)
        b = self.add()
        self.assertEqual(b.contacts(), a.contacts())
        bodies = [m.body for d, m in self.usrlocRequests(since)]
        self.assertEqual(bodies.count(b'{"action":3}'), 2)
        self.assertEqual(len([body for body in bodies if body.startswith(b'{"multi"')]), 5)
        self.assertEqual(self.nodes[1].usrloc.statistics["syncRequests"], 1)

    def test_largeSync(self):
        """
        A dump of 2000 contacts, one per request, is paced and arrives
        whole.
        """
        a = self.add()
        for i in range(2000):
            a.save(Contact(f"user{i}", f"sip:user{i}@192.0.2.1"))
        b = self.add()
        self.network.run(10)
        self.assertEqual(len(b.contacts()), 2000)
        self.assertEqual(len(a._dumps), 0)
