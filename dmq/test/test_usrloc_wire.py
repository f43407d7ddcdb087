# -*- test-case-name: dmq.test.test_usrloc_wire -*-
"""
Tests for L{dmq.peers.usrloc.wire} and L{dmq.peers.usrloc.contact}: the
bodies of Kamailio's C{usrloc} KDMQ requests, checked against the traffic
of a live Kamailio 5.6.3 captured into C{dmq/test/data/usrloc/}.
"""

from __future__ import annotations

import json
import os

from twisted.trial.unittest import SynchronousTestCase

from dmq import sip
from dmq.peers.usrloc.contact import ALL_METHODS, Contact, coreHash, newRUID
from dmq.peers.usrloc.wire import (
    MAX_CONTACT_BODY,
    Action,
    BadEntry,
    BadMessage,
    Batch,
    Nothing,
    Remove,
    SocketInfo,
    SyncRequest,
    Update,
    decode,
    encodeBatches,
    encodeContact,
    encodeSyncRequest,
    parseSocket,
)
from dmq.test.captures import DATA, datagrams

def decodeContact(body: bytes, socketInfo: int = SocketInfo.NONE) -> Contact:
    """
    The contact of C{body}, an update.
    """
    message = decode(body, socketInfo)
    assert isinstance(message, Update), message
    return message.contact


def decodeBatch(body: bytes) -> Batch:
    """
    C{body}, a batch, decoded.
    """
    message = decode(body)
    assert isinstance(message, Batch), message
    return message


def entryContact(entry: object) -> Contact:
    """
    The contact of C{entry} of a batch, an update.
    """
    assert isinstance(entry, Update), entry
    return entry.contact


#: The Kamailio node of the captures, and the fake node that talked to it.
KAMAILIO = "127.0.0.101:5060"
PROBER = "127.0.0.102:5060"


def usrlocRequests(name, source=KAMAILIO):
    """
    The KDMQ requests to the usrloc peer sent by C{source} in capture
    C{name} of C{dmq/test/data/usrloc/}, parsed.
    """
    found = []
    for capture in datagrams(os.path.join("usrloc", name)):
        if capture.source != source or capture.data.startswith(b"SIP/2.0 "):
            continue
        message = sip.parse(capture.data)
        assert isinstance(message, sip.Request)
        if message.method == "KDMQ" and message.uri.user == "usrloc":
            found.append(message)
    return found


def usrlocReplies(name, source=KAMAILIO):
    """
    The replies of C{source} to usrloc requests in capture C{name}, by
    Call-ID.
    """
    found = {}
    for capture in datagrams(os.path.join("usrloc", name)):
        if capture.source == source and capture.data.startswith(b"SIP/2.0 "):
            message = sip.parse(capture.data)
            if message.to.uri.user == "usrloc":
                found[message.callID] = message
    return found


def rpcOutputs():
    """
    The RPC calls made to the captured Kamailio, and what it answered:
    C{dmq/test/data/usrloc/rpc-outputs.jsonl}, one object per line.
    """
    with open(os.path.join(DATA, "usrloc", "rpc-outputs.jsonl"), encoding="utf-8") as f:
        return [json.loads(line) for line in f]


def contact(**fields):
    fields.setdefault("aor", "alice")
    fields.setdefault("uri", "sip:alice@192.0.2.10:5060")
    fields.setdefault("ruid", "uloc-1")
    return Contact(**fields)


class CapturedTests(SynchronousTestCase):
    """
    What Kamailio 5.6.3 sent is read and written back octet for octet.
    """

    def test_replication(self):
        """
        Every action 1 and 2 body of C{01-replication} (inserts, an update,
        an unregistration, two sync dumps) decodes, and encodes back to the
        same octets.
        """
        requests = usrlocRequests("01-replication.txt")
        actions = [json.loads(r.body)["action"] for r in requests]
        self.assertEqual(actions.count(3), 1)
        self.assertEqual(actions.count(2), 1)
        self.assertEqual(actions.count(1), 23)
        for request in requests:
            message = decode(request.body)
            action = json.loads(request.body)["action"]
            if action == Action.SYNC:
                self.assertEqual(message, SyncRequest())
                self.assertEqual(encodeSyncRequest(), request.body)
            elif action == Action.UPDATE:
                self.assertEqual(encodeContact(Action.UPDATE, decodeContact(request.body)), request.body)
            else:
                self.assertIsInstance(message, Remove)

    def test_fields(self):
        """
        The fields of a captured REGISTER's contact, as Kamailio sent them.
        """
        [first] = [r for r in usrlocRequests("01-replication.txt") if b'"cseq":1,' in r.body][:1]
        self.assertEqual(
            decodeContact(first.body),
            Contact(
                aor="alice",
                uri="sip:alice@127.0.0.103:5060",
                ruid="uloc-6b0cbe69-5b99-1",
                callID="reg-alice-sip:alice@127.0.0.103:5060@127.0.0.103",
                userAgent="dmq-test-ua",
                expires=1795997350,
                cseq=1,
                q=-1,
                lastModified=1795997290,
                methods=ALL_METHODS,
            ),
        )

    def test_removal(self):
        """
        An unregistration is action 2 with the whole contact, which we write
        the same way.
        """
        [request] = [r for r in usrlocRequests("01-replication.txt") if r.body.startswith(b'{"action":2')]
        self.assertEqual(decode(request.body), Remove("alice", "uloc-6b0cbe69-5b99-1"))
        update = request.body.replace(b'{"action":2', b'{"action":1', 1)
        self.assertEqual(encodeContact(Action.REMOVE, decodeContact(update)), request.body)

    def test_multi(self):
        """
        The C{multi} bodies of a dump with C{batch_msg_contacts} 2 decode,
        and the same contacts are cut into the same bodies.
        """
        requests = [r for r in usrlocRequests("02-multi.txt") if r.body.startswith(b'{"multi"')]
        self.assertEqual(len(requests), 12)
        dumps: list[Contact] = []
        for request in requests:
            batch = decodeBatch(request.body)
            self.assertEqual(list(json.loads(request.body)["multi"]), [str(n) for n in range(1, len(batch.entries) + 1)])
            dumps.extend(entryContact(entry) for entry in batch.entries)
        # The second and third syncs were answered alike: five bodies each.
        self.assertEqual(list(encodeBatches(dumps[-9:], 2)), [r.body for r in requests[-5:]])
        self.assertEqual(list(encodeBatches(dumps[:4], 2)), [r.body for r in requests[:2]])

    def test_socketInfo(self):
        """
        With C{replicate_socket_info} 1, Kamailio adds C{sock} after
        C{received}; we read it, and write it there.
        """
        requests = usrlocRequests("03-socket-info.txt")
        first = requests[1]
        self.assertIn(b'"received":"","sock":"udp:127.0.0.101:5060","path"', first.body)
        withSocket = decodeContact(first.body, SocketInfo.SOCKET)
        self.assertEqual(withSocket.socket, "udp:127.0.0.101:5060")
        self.assertEqual(encodeContact(Action.UPDATE, withSocket, SocketInfo.SOCKET), first.body)
        # Without socket info, sock is an unknown key, and never written.
        plain = decodeContact(first.body)
        self.assertEqual(plain.socket, "")
        self.assertNotIn(b"sock", encodeContact(Action.UPDATE, withSocket))

    def test_corruptedSocket(self):
        """
        Once it has applied a C{sock} from the bus, Kamailio 5.6.3 sends
        garbage as its own socket (it keeps a pointer into the freed
        request): a body that is not UTF-8 is refused whole, one with a
        wrong but readable C{sock} is read as it is.
        """
        requests = usrlocRequests("03-socket-info.txt")
        garbled = [r for r in requests if b'"sock":"' in r.body and b'"sock":"udp:127.0.0.101:5060"' not in r.body]
        self.assertTrue(garbled)
        outcomes = []
        for request in garbled:
            try:
                outcomes.append(decodeContact(request.body, SocketInfo.SOCKET).socket)
            except BadMessage as e:
                outcomes.append(e.reason)
        self.assertIn("Bad Request", outcomes)
        self.assertIn("c", outcomes)

    def test_probes(self):
        """
        What Kamailio answered C{400} we refuse; what it answered C{200} we
        read (a sock it could not parse aside, which we refuse).
        """
        requests = usrlocRequests("probe-errors.txt", source=PROBER)
        replies = usrlocReplies("probe-errors.txt")
        codes = {r.body: replies[r.callID].code for r in requests}
        self.assertEqual(codes[b"not json"], 400)
        self.assertEqual(codes[b'{"action":9}'], 400)
        self.assertEqual(codes[b'{"action":0}'], 200)
        for body in (b"not json", b'{"action":9}'):
            self.assertRaises(BadMessage, decode, body)
        self.assertEqual(decode(b'{"action":0}'), Nothing())
        multi = [body for body in codes if body.startswith(b'{"multi"') and b'"action":7' in body]
        self.assertEqual(codes[multi[0]], 400)
        batch = decodeBatch(multi[0])
        self.assertEqual([type(e) for e in batch.entries], [Update, BadEntry, Update])
        self.assertEqual(batch.entries[1], BadEntry("2", "unknown action 7"))
        unknown = [body for body in codes if b'"unknown":1' in body][0]
        self.assertEqual(codes[unknown], 200)
        self.assertEqual(decodeContact(unknown).aor, "zed")

    def test_hash(self):
        """
        L{coreHash} is the C{HashID} Kamailio's C{ul.dump} shows.
        """
        seen = {}
        for output in rpcOutputs():
            if output["method"] == "ul.dump" and "result" in output:
                for domain in output["result"]["Domains"]:
                    for aor in domain["Domain"]["AoRs"]:
                        if "Info" in aor:
                            seen[aor["Info"]["AoR"]] = aor["Info"]["HashID"]
        self.assertGreater(len(seen), 10)
        for aor, hashID in seen.items():
            self.assertEqual(coreHash(aor), hashID, aor)
        self.assertEqual(coreHash("Alice"), coreHash("Alice"))
        self.assertNotEqual(coreHash("Alice"), coreHash("alice"))
        self.assertEqual(coreHash("é"), coreHash("é"))


class DecodeTests(SynchronousTestCase):
    """
    L{decode} reads what Kamailio may send and refuses the rest.
    """

    def test_defaults(self):
        """
        A field left out is C{""} or 0, as in Kamailio (q too, and methods).
        """
        message = decode(b'{"action":1,"aor":"a","ruid":"r","c":"sip:a@h"}')
        self.assertEqual(message, Update(Contact("a", "sip:a@h", "r", q=0, methods=0)))

    def test_unknownKeys(self):
        """
        Unknown keys, Kamailio 5.7's C{xavps} among them, are ignored; so
        are C{sock} and C{sockname} unless asked for.
        """
        body = b'{"action":1,"aor":"a","ruid":"r","c":"u","xavps":{"x":[1]},"new":null,"sock":5,"sockname":"s"}'
        self.assertEqual(decodeContact(body), Contact("a", "u", "r", q=0, methods=0))
        self.assertEqual(decodeContact(body, SocketInfo.SOCKNAME).socketName, "s")
        self.assertRaises(BadMessage, decode, body, SocketInfo.SOCKET)

    def test_notAnObject(self):
        """
        An empty body, bad JSON, not UTF-8, a root that is not a non-empty
        object (C{{}} kills a Kamailio worker) are answered C{400 Bad
        Request}.
        """
        for body in (b"", b"{", b"[1]", b"1", b'"x"', b"{}", b"null", b'{"action":1}\xff', b"\xff",
                     b'{"action":NaN}', b"[" * 100000):
            with self.subTest(body=body[:20]):
                e = self.assertRaises(BadMessage, decode, body)
                self.assertEqual(e.reason, "Bad Request")

    def test_actions(self):
        """
        A missing or unknown action is refused (Kamailio takes a missing
        one as 0); 0 is nothing, 3 a sync request.
        """
        for body, detail in (
            (b'{"aor":"a"}', "no action"),
            (b'{"action":4}', "unknown action 4"),
            (b'{"action":-1}', "unknown action -1"),
            (b'{"action":"1"}', "unknown action '1'"),
            (b'{"action":1.0}', "unknown action 1.0"),
            (b'{"action":true}', "unknown action True"),
            (b'{"action":null}', "no action"),
        ):
            with self.subTest(body=body):
                e = self.assertRaises(BadMessage, decode, body)
                self.assertEqual(e.reason, f"Bad Request ({detail})")
        self.assertEqual(decode(b'{"action":0,"aor":5}'), Nothing())
        self.assertEqual(decode(b'{"action":3}'), SyncRequest())

    def test_required(self):
        """
        A change needs an AoR and a record id, and an update a contact URI.
        """
        for body, detail in (
            (b'{"action":1,"ruid":"r","c":"u"}', "no aor"),
            (b'{"action":1,"aor":"","ruid":"r","c":"u"}', "no aor"),
            (b'{"action":1,"aor":"a","c":"u"}', "no ruid"),
            (b'{"action":1,"aor":"a","ruid":"r"}', "no c"),
            (b'{"action":2,"aor":"a"}', "no ruid"),
        ):
            with self.subTest(body=body):
                self.assertEqual(self.assertRaises(BadMessage, decode, body).detail, detail)
        self.assertEqual(decode(b'{"action":2,"aor":"a","ruid":"r"}'), Remove("a", "r"))

    def test_types(self):
        """
        A string field that is not a string (Kamailio would crash on
        C{strlen(NULL)}), a number that is not a whole number in Kamailio's
        unsigned 32-bit range, a q beyond -1 to 1000, text with NUL, are
        refused, in removals too.
        """
        base = {"action": 1, "aor": "a", "ruid": "r", "c": "u"}
        for key, value in (
            ("aor", 1), ("c", None), ("path", []), ("callid", {}), ("instance", True),
            ("received", "x\u0000y"),
            ("expires", -1), ("expires", 2**32), ("expires", 1.5), ("expires", "1"), ("expires", True),
            ("cseq", None), ("methods", 2**32), ("q", 1001), ("q", -2), ("reg_id", 1e3),
        ):
            for action in (1, 2):
                with self.subTest(key=key, value=value, action=action):
                    fields = dict(base, action=action, **{key: value})
                    self.assertRaises(BadMessage, decode, json.dumps(fields).encode())
        fields = dict(base, expires=2**32 - 1, methods=2**32 - 1, q=1000)
        self.assertEqual(decodeContact(json.dumps(fields).encode()).methods, 2**32 - 1)

    def test_socket(self):
        """
        With C{replicate_socket_info} 1, C{sock} must read as Kamailio's
        C{[proto:]host[:port]}.
        """
        for good in ("udp:127.0.0.1:5060", "127.0.0.1", "tcp:[::1]:5061", "TLS:example.com:5061", "c"):
            self.assertEqual(parseSocket(good), good)
        for bad in ("udp:[bad", "", "udp:", "udp:h:99999", "udp:h:0", "a b", "udp:h:x"):
            with self.subTest(bad=bad):
                self.assertRaises(ValueError, parseSocket, bad)
                body = json.dumps({"action": 1, "aor": "a", "ruid": "r", "c": "u", "sock": bad}).encode()
                self.assertRaises(BadMessage, decode, body, SocketInfo.SOCKET)
                self.assertEqual(decodeContact(body).socket, "")

    def test_tooLarge(self):
        """
        A contact whose body would not fit a datagram is refused.
        """
        body = json.dumps({"action": 1, "aor": "a", "ruid": "r", "c": "u", "path": "p" * MAX_CONTACT_BODY})
        self.assertEqual(self.assertRaises(BadMessage, decode, body.encode()).detail, "contact too large")

    def test_batch(self):
        """
        The entries of a C{multi} are read one by one: a bad one is a
        L{BadEntry}, the others are read; a sync request is no entry.
        """
        body = json.dumps(
            {
                "multi": {
                    "1": {"action": 1, "aor": "a", "ruid": "r", "c": "u"},
                    "2": [],
                    "3": {"action": 3},
                    "x": {"action": 2, "aor": "a", "ruid": "r"},
                    "5": {"action": 0},
                    "6": {"action": 1, "aor": "a", "ruid": "r"},
                }
            }
        ).encode()
        self.assertEqual(
            decodeBatch(body).entries,
            (
                Update(Contact("a", "u", "r", q=0, methods=0)),
                BadEntry("2", "not an object"),
                BadEntry("3", "a sync request in a batch"),
                Remove("a", "r"),
                Nothing(),
                BadEntry("6", "no c"),
            ),
        )
        self.assertEqual(decode(b'{"multi":{}}'), Batch())
        self.assertEqual(self.assertRaises(BadMessage, decode, b'{"multi":[]}').detail, "multi is not an object")

    def test_shortReasons(self):
        """
        What a reason phrase shows of a received value is cut short.
        """
        for body in (
            json.dumps({"action": "x" * 1000}),
            json.dumps({"action": 1, "aor": "a", "ruid": "r", "c": "u", "expires": "9" * 1000}),
            json.dumps({"action": 1, "aor": "a", "ruid": "r", "c": "u", "sock": "[" * 1000}),
        ):
            detail = self.assertRaises(BadMessage, decode, body.encode(), SocketInfo.SOCKET).detail
            self.assertLess(len(detail), 80, detail)
        [entry] = decodeBatch(json.dumps({"multi": {"k" * 1000: {"action": 9}}}).encode()).entries
        self.assertEqual(entry, BadEntry("k" * 37 + "...", "unknown action 9"))

    def test_multiNotFirst(self):
        """
        As in Kamailio, only a first key C{multi} makes a batch.
        """
        self.assertEqual(decode(b'{"action":3,"multi":{"1":{}}}'), SyncRequest())


class EncodeTests(SynchronousTestCase):
    """
    L{encodeContact} and L{encodeBatches} write what Kamailio writes.
    """

    def test_keyOrder(self):
        """
        Keys in Kamailio 5.6's order, no spaces, raw UTF-8, escapes as its
        srjson writes them.
        """
        c = contact(userAgent="Zoë \"1\"\n", q=500, expires=1767229200, socket="udp:1.2.3.4:5060",
                    socketName="eth0")
        self.assertEqual(
            encodeContact(Action.UPDATE, c),
            '{"action":1,"aor":"alice","ruid":"uloc-1","c":"sip:alice@192.0.2.10:5060","received":"",'
            '"path":"","callid":"","user_agent":"Zoë \\"1\\"\\n","instance":"","expires":1767229200,'
            '"cseq":0,"flags":0,"cflags":0,"q":500,"last_modified":0,"methods":4294967295,"reg_id":0,'
            '"server_id":0}'.encode("utf-8"),
        )
        self.assertIn(b'"received":"","sock":"udp:1.2.3.4:5060","path"', encodeContact(1, c, SocketInfo.SOCKET))
        self.assertIn(b'"received":"","sockname":"eth0","path"', encodeContact(1, c, SocketInfo.SOCKNAME))
        self.assertNotIn(b"sock", encodeContact(1, contact(), SocketInfo.SOCKET))

    def test_roundTrip(self):
        """
        What we write, we read back as the same contact.
        """
        c = contact(received="sip:1.2.3.4:5", path="<sip:p;lr>", callID="c@h", userAgent="ua",
                    instance="<urn:x>", expires=5, cseq=7, flags=1, cflags=2, q=0, lastModified=3,
                    methods=8, regID=1, serverID=2, socket="udp:1.2.3.4:5060")
        self.assertEqual(decode(encodeContact(1, c, SocketInfo.SOCKET), SocketInfo.SOCKET), Update(c))

    def test_singles(self):
        """
        With one contact per message, a dump is one action 1 body each.
        """
        contacts = [contact(ruid=f"r{i}") for i in range(3)]
        self.assertEqual(list(encodeBatches(contacts)), [encodeContact(1, c) for c in contacts])
        self.assertEqual(list(encodeBatches([])), [])
        self.assertEqual(list(encodeBatches([], 10)), [])

    def test_batchCount(self):
        """
        At most C{maxContacts} a body, numbered from 1 in each; the rest
        in a last, shorter one.
        """
        contacts = [contact(ruid=f"r{i}") for i in range(7)]
        bodies = list(encodeBatches(contacts, 3))
        self.assertEqual([list(json.loads(b)["multi"]) for b in bodies], [["1", "2", "3"]] * 2 + [["1"]])
        entries = [e for b in bodies for e in decodeBatch(b).entries]
        self.assertEqual([entryContact(e) for e in entries], contacts)

    def test_batchSize(self):
        """
        No body is over C{maxSize} octets, unless one contact alone is.
        """
        contacts = [contact(ruid=f"r{i}", path="p" * (i * 37)) for i in range(40)]
        for maxSize in (400, 1000, 2500, 5000):
            bodies = list(encodeBatches(contacts, 150, maxSize))
            entries = [entryContact(e) for b in bodies for e in decodeBatch(b).entries]
            self.assertEqual(entries, contacts)
            for body in bodies:
                if len(body) > maxSize:
                    self.assertEqual(len(decodeBatch(body).entries), 1)
            # Full: adding the next contact would have been too much.
            for body, following in zip(bodies, bodies[1:]):
                first = entryContact(decodeBatch(following).entries[0])
                count = len(decodeBatch(body).entries)
                self.assertGreater(len(body) + len(encodeContact(1, first)) + len(str(count + 1)) + 4, maxSize)
        # Exactly maxSize fits.
        [one] = list(encodeBatches(contacts[:1], 2))
        self.assertEqual(list(encodeBatches(contacts[:1], 2, len(one))), [one])


class ContactTests(SynchronousTestCase):
    """
    L{Contact} checks its fields.
    """

    def test_defaults(self):
        """
        A contact made in Python has a fresh record id, q unspecified, every
        method.
        """
        a, b = Contact("a", "u"), Contact("a", "u")
        self.assertNotEqual(a.ruid, b.ruid)
        self.assertTrue(a.ruid.startswith("dmq-"))
        self.assertNotEqual(newRUID(), newRUID())
        self.assertEqual((a.q, a.methods, a.expires), (-1, ALL_METHODS, 0))

    def test_checks(self):
        """
        Empty AoR, URI or record id, NUL, lone surrogates, numbers out of
        range are refused.
        """
        for fields in (
            {"aor": ""}, {"uri": ""}, {"ruid": ""}, {"aor": 1}, {"path": None}, {"callID": "a\x00"},
            {"userAgent": "\ud800"}, {"expires": -1}, {"cseq": 2**32}, {"q": 1001}, {"q": -2},
            {"methods": True}, {"flags": 1.0},
        ):
            with self.subTest(fields=fields):
                self.assertRaises(ValueError, contact, **fields)

    def test_expired(self):
        """
        A contact is expired once its time has come; 0 is never.
        """
        self.assertFalse(contact(expires=0).expired(2**40))
        self.assertFalse(contact(expires=10).expired(9.9))
        self.assertTrue(contact(expires=10).expired(10))
