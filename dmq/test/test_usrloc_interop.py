# -*- test-case-name: dmq.test.test_usrloc_interop -*-
"""
Our usrloc peer and real Kamailio 5.6.3 nodes (usrloc, registrar,
dmq_usrloc with C{enable=1}) on one bus over loopback UDP, with a small
SIP user agent registering at Kamailio.  Skipped without the C{kamailio}
binary, unless C{DMQ_REQUIRE_KAMAILIO=1} (see L{dmq.test.kamailio}).

Addresses: Kamailio on 127.0.0.111 and 127.0.0.113, our node on
127.0.0.112, the user agent on 127.0.0.114.
"""

from __future__ import annotations

import itertools
import time
from typing import Dict, List, Tuple

from twisted.internet import defer, reactor
from twisted.internet.interfaces import IReactorUDP
from twisted.internet.protocol import DatagramProtocol
from twisted.trial.unittest import TestCase

from dmq import sip
from dmq.config import NodeConfig
from dmq.peers.usrloc import DELETE, EXPIRE, INSERT, UPDATE, Change, Contact
from dmq.tap import makeNodeService
from dmq.test.kamailio import SKIP_REASON, KamailioNode, KamailioRPCError, waitFor

KAMAILIO_1 = "127.0.0.111"
OURS = "127.0.0.112"
KAMAILIO_2 = "127.0.0.113"
AGENT = ("127.0.0.114", 5060)


class UserAgent(DatagramProtocol):
    """
    Just enough of a SIP user agent to REGISTER, over UDP on loopback.
    """

    def __init__(self) -> None:
        self._waiting: Dict[str, defer.Deferred] = {}
        self._cseqs: Dict[str, int] = {}
        self._tags = itertools.count(1)

    def datagramReceived(self, data, address):
        message = sip.parse(data)
        if isinstance(message, sip.Response) and message.code >= 200:
            waiting = self._waiting.pop(message.callID, None)
            if waiting is not None:
                waiting.callback(message)

    def register(self, registrar, user, expires, line=0, q=None):
        """
        REGISTER C{sip:user@AGENT;line=N} at C{registrar} for C{expires}
        seconds (0 unregisters), with one Call-ID per contact and a CSeq
        that grows.

        @return: a L{Deferred <twisted.internet.defer.Deferred>} firing with the final response.
        """
        contact = f"sip:{user}@{AGENT[0]}:{AGENT[1]};line={line}"
        callID = f"{user}-{line}@{AGENT[0]}"
        self._cseqs[callID] = cseq = self._cseqs.get(callID, 0) + 1
        qParameter = f";q={q}" if q is not None else ""
        data = (
            f"REGISTER sip:{registrar}:5060 SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP {AGENT[0]}:{AGENT[1]};branch=z9hG4bK-{callID}-{cseq};rport\r\n"
            f"Max-Forwards: 70\r\n"
            f"To: <sip:{user}@{registrar}>\r\n"
            f"From: <sip:{user}@{registrar}>;tag={next(self._tags)}\r\n"
            f"Call-ID: {callID}\r\n"
            f"CSeq: {cseq} REGISTER\r\n"
            f"Contact: <{contact}>;expires={expires}{qParameter}\r\n"
            f"User-Agent: dmq-test-ua\r\n"
            f"Content-Length: 0\r\n\r\n"
        ).encode()
        waiting = self._waiting[callID] = defer.Deferred()
        assert self.transport is not None
        self.transport.write(data, (registrar, 5060))
        return waiting.addTimeout(5, reactor)


def kamailioContacts(dump) -> Dict[str, List[dict]]:
    """
    A Kamailio C{ul.dump} as C{{aor: [contact, ...]}}.
    """
    found = {}
    for domain in dump["Domains"]:
        for aor in domain["Domain"]["AoRs"]:
            found[aor["Info"]["AoR"]] = [c["Contact"] for c in aor["Info"]["Contacts"]]
    return found


class UsrlocInteropTests(TestCase):
    """
    Registrations replicate both ways between Kamailio and our node.
    """

    skip = SKIP_REASON
    timeout = 90

    def setUp(self):
        self.agent = UserAgent()
        port = IReactorUDP(reactor).listenUDP(AGENT[1], self.agent, interface=AGENT[0], maxPacketSize=8192)
        self.addCleanup(port.stopListening)

    def kamailio(self, ip, seeds=(), batch=1):
        return KamailioNode.forTest(
            self, ip, notificationAddress=[f"sip:{seed}:5060" for seed in seeds],
            defines=("WITH_USRLOC", f"USRLOC_BATCH={batch}"),
        )

    def ourNode(self, seeds=(), **options):
        node = makeNodeService(
            reactor,
            NodeConfig(
                serverAddress=sip.URI(OURS, 5060),
                notificationAddresses=tuple(sip.URI(seed, 5060) for seed in seeds),
                pingInterval=5,
                usrloc=True,
                **options,
            ),
        )
        node.startService()
        self.addCleanup(lambda: node.stopService() if node.running else None)
        self.received: List[bytes] = []
        assert node.usrloc is not None
        handler = node.usrloc.messageReceived

        def recording(request, sender):
            self.received.append(request.body)
            return handler(request, sender)

        self.patch(node.usrloc, "messageReceived", recording)
        return node.usrloc

    @defer.inlineCallbacks
    def kamailioHas(self, kamailio, peer):
        """
        Whether C{kamailio} holds exactly our contacts, with our record ids.
        """
        theirs = kamailioContacts((yield kamailio.rpc("ul.dump")))
        ours: Dict[str, List[Tuple[str, str]]] = {}
        for contact in peer.contacts():
            ours.setdefault(contact.aor, []).append((contact.uri, contact.ruid))
        return {aor: sorted((c["Address"], c["Ruid"]) for c in cs) for aor, cs in theirs.items()} == {
            aor: sorted(cs) for aor, cs in ours.items()
        }

    @defer.inlineCallbacks
    def test_registrations(self):
        """
        A REGISTER at Kamailio, its refresh and its removal reach our
        store; a short registration expires at both at the same time.
        """
        k1 = self.kamailio(KAMAILIO_1)
        yield k1.start()
        ours = self.ourNode(seeds=[KAMAILIO_1])
        changes: List[Change] = []
        ours.subscribe(changes.append)
        yield waitFor(lambda: ours._joins._reported, timeout=10, description="our node joined Kamailio's bus")

        response = yield self.agent.register(KAMAILIO_1, "alice", 60)
        self.assertEqual(response.code, 200)
        yield waitFor(lambda: ours.lookup("alice"), timeout=5, description="alice reached us")
        [theirs] = kamailioContacts((yield k1.rpc("ul.dump")))["alice"]
        [contact] = ours.lookup("alice")
        self.assertEqual(
            (contact.uri, contact.ruid, contact.callID, contact.cseq, contact.userAgent, contact.methods),
            (theirs["Address"], theirs["Ruid"], theirs["Call-ID"], 1, "dmq-test-ua", 4294967295),
        )
        self.assertLessEqual(abs(contact.expires - (time.time() + 60)), 2)

        yield self.agent.register(KAMAILIO_1, "alice", 120, q="0.5")
        yield waitFor(lambda: ours.lookup("alice")[0].cseq == 2, timeout=5, description="the refresh")
        self.assertEqual(ours.lookup("alice")[0].q, 500)
        self.assertLessEqual(abs(ours.lookup("alice")[0].expires - (time.time() + 120)), 2)

        yield self.agent.register(KAMAILIO_1, "alice", 0)
        yield waitFor(lambda: not ours.lookup("alice"), timeout=5, description="the unregistration")

        yield self.agent.register(KAMAILIO_1, "bob", 2)
        yield waitFor(lambda: ours.lookup("bob"), timeout=5, description="bob reached us")
        expires = ours.lookup("bob")[0].expires
        yield waitFor(lambda: not ours.aors(), timeout=5, description="bob expired here")

        @defer.inlineCallbacks
        def bobGone():
            return "bob" not in kamailioContacts((yield k1.rpc("ul.dump")))

        yield waitFor(bobGone, timeout=5, description="bob expired at Kamailio")
        self.assertGreaterEqual(time.time(), expires)
        self.assertEqual(
            [(c.event, c.contact.aor, c.origin) for c in changes],
            [(INSERT, "alice", "replicated"), (UPDATE, "alice", "replicated"), (DELETE, "alice", "replicated"),
             (INSERT, "bob", "replicated"), (EXPIRE, "bob", "clock")],
        )
        self.assertEqual(ours.statistics["badMessages"], 0)

    @defer.inlineCallbacks
    def test_ourChanges(self):
        """
        A contact saved through our API appears in Kamailio's C{ul.dump},
        with its changes; deleted, it is gone there; a short one expires
        there.
        """
        k1 = self.kamailio(KAMAILIO_1)
        yield k1.start()
        ours = self.ourNode(seeds=[KAMAILIO_1])
        yield waitFor(lambda: ours._joins._reported, timeout=10, description="our node joined Kamailio's bus")
        now = int(time.time())
        carol = Contact("carol", "sip:carol@192.0.2.20:5080;transport=udp", callID="c1@192.0.2.20",
                        cseq=7, userAgent="Zoë's phone", expires=now + 60, path="<sip:edge@192.0.2.1;lr>")
        responses = yield ours.save(carol)
        self.assertEqual({r.code for r in responses.values()}, {200})
        result = yield k1.rpc("ul.lookup", "location", "carol")
        [theirs] = [c["Contact"] for c in result["Contacts"]]
        self.assertEqual(
            (theirs["Address"], theirs["Ruid"], theirs["Call-ID"], theirs["CSeq"], theirs["User-Agent"],
             theirs["Path"], theirs["Q"], theirs["Last-Modified"]),
            (carol.uri, carol.ruid, carol.callID, 7, "Zoë's phone", carol.path, -1,
             ours.lookup("carol")[0].lastModified),
        )
        # Kamailio counts Expires against its own second-resolution clock,
        # read at another moment than ours: one second either way of 60.
        self.assertIn(theirs["Expires"], (59, 60, 61))

        yield ours.save(Contact("carol", carol.uri, carol.ruid, callID="c1@192.0.2.20", cseq=8, q=500,
                                expires=now + 90))
        result = yield k1.rpc("ul.lookup", "location", "carol")
        self.assertEqual((result["Contacts"][0]["Contact"]["Q"], result["Contacts"][0]["Contact"]["CSeq"]), (0.5, 8))

        yield ours.delete("carol", carol.ruid)
        error = yield self.assertFailure(k1.rpc("ul.lookup", "location", "carol"), KamailioRPCError)
        self.assertEqual(error.message, "AOR not found in location table")

        yield ours.save(Contact("dave", "sip:dave@192.0.2.30", expires=int(time.time()) + 2))
        self.assertTrue((yield self.kamailioHas(k1, ours)))

        @defer.inlineCallbacks
        def daveGone():
            return "dave" not in kamailioContacts((yield k1.rpc("ul.dump")))

        yield waitFor(daveGone, timeout=6, description="dave expired at Kamailio")
        self.assertEqual(ours.aors(), [])

    @defer.inlineCallbacks
    def test_weJoinKamailio(self):
        """
        Joining a Kamailio node that holds registrations, we ask it for
        them, and get them in C{multi} bodies (C{batch_msg_contacts} 3).
        """
        k1 = self.kamailio(KAMAILIO_1, batch=3)
        yield k1.start()
        for i in range(7):
            response = yield self.agent.register(KAMAILIO_1, f"user{i}", 300)
            self.assertEqual(response.code, 200)
        ours = self.ourNode(seeds=[KAMAILIO_1])
        yield waitFor(lambda: len(ours.contacts()) == 7, timeout=10, description="our node synced")
        self.assertTrue((yield self.kamailioHas(k1, ours)))
        multi = [body for body in self.received if body.startswith(b'{"multi":')]
        self.assertEqual(len(multi), 3)
        self.assertEqual(ours.statistics["badMessages"] + ours.statistics["badEntries"], 0)

    @defer.inlineCallbacks
    def test_kamailioJoinsUs(self):
        """
        A Kamailio node joining through our node asks for the contacts, and
        applies our C{multi} bodies; what it registers after reaches us.
        """
        ours = self.ourNode(usrlocBatchMsgContacts=3)
        now = int(time.time())
        for i in range(8):
            ours.save(Contact(f"user{i}", f"sip:user{i}@192.0.2.40", expires=now + 300, q=100 * i))
        ours.save(Contact("user0", "sip:user0@192.0.2.41", expires=0))
        k2 = self.kamailio(KAMAILIO_2, seeds=[OURS])
        yield k2.start()
        yield waitFor(lambda: self.kamailioHas(k2, ours), timeout=15, interval=0.2,
                      description="Kamailio synced from us")
        self.assertEqual(ours.statistics["dumpBodies"], 3)
        self.assertIn(b'{"action":3}', self.received)
        [permanent] = [c for c in kamailioContacts((yield k2.rpc("ul.dump")))["user0"]
                       if c["Address"] == "sip:user0@192.0.2.41"]
        self.assertEqual(permanent["Expires"], "permanent")

        yield self.agent.register(KAMAILIO_2, "erin", 60)
        yield waitFor(lambda: ours.lookup("erin"), timeout=5, description="erin reached us")
