# -*- test-case-name: dmq.test.test_trust_interop -*-
"""
The trust rules against real Kamailio 5.6.3 nodes over loopback UDP: a
mixed bus whose dmq nodes sign their requests and admit the Kamailio node by
C{--allow-from} keeps working (membership and htable both ways), while a
Kamailio node outside it, and a stranger's node list and htable writes, are
refused on the dmq node and counted in its metrics.

These bind fixed 127.0.0.12x addresses and start Kamailio: run them under
the shared test lock (see L{dmq.test.kamailio}).
"""

from __future__ import annotations

from twisted.internet import defer, reactor
from twisted.internet.interfaces import IReactorUDP
from twisted.internet.protocol import DatagramProtocol
from twisted.trial.unittest import TestCase

from dmq import sip
from dmq.config import NodeConfig
from dmq.metrics import nodeRegistry
from dmq.peers.htable import parseTableSpec
from dmq.peers.htable.wire import SetCell, encode
from dmq.signing import Keyring
from dmq.tap import makeNodeService
from dmq.test.kamailio import SKIP_REASON, KamailioNode, waitFor
from dmq.test.test_interop import KDMQ_TABLE, ourStatuses
from dmq.trust import parseNetwork

KEY = Keyring([b"interop-key-0123456789abcdef"])


class Stranger(DatagramProtocol):
    """
    A host that is no member: sends hand-made KDMQ requests, keeps the replies.
    """

    def __init__(self):
        self.replies = []

    def datagramReceived(self, data, address):
        self.replies.append(sip.parse(data))

    def send(self, target, peerId, body, fromHost, n, contentType="text/plain"):
        assert self.transport is not None
        host = self.transport.getHost()
        request = sip.Request(
            "KDMQ",
            sip.URI(target[0], target[1], peerId),
            (
                ("Via", f"SIP/2.0/UDP {host.host}:{host.port};branch=z9hG4bKstranger{n}"),
                ("To", f"<sip:{peerId}@{target[0]}:{target[1]}>"),
                ("From", f"<sip:{peerId}@{fromHost}>;tag=s{n}"),
                ("CSeq", "10 KDMQ"),
                ("Call-ID", f"stranger{n}@{host.host}"),
                ("Max-Forwards", "1"),
                ("Content-Type", contentType),
            ),
            body,
        )
        self.transport.write(sip.serialise(request), target)


def refused(node, cause):
    return nodeRegistry(node).get_sample_value("dmq_refused_total", {"cause": cause})


class TrustInteropTests(TestCase):
    skip = SKIP_REASON
    timeout = 90

    def ourNode(self, ip, seeds=(), **options):
        options.setdefault("pingInterval", 2)
        node = makeNodeService(
            reactor,
            NodeConfig(
                serverAddress=sip.URI(ip, 5060),
                notificationAddresses=tuple(sip.parseURI(s) for s in seeds),
                htables=(parseTableSpec(KDMQ_TABLE),),
                **options,
            ),
        )
        node.startService()
        self.addCleanup(lambda: node.stopService() if node.running else None)
        return node

    @defer.inlineCallbacks
    def kamailio(self, ip, seeds=()):
        node = KamailioNode.forTest(self, ip, notificationAddress=list(seeds))
        yield node.start()
        return node

    @defer.inlineCallbacks
    def test_signedMixedBus(self):
        """
        Two dmq nodes with a keyring and C{--allow-from} naming the Kamailio
        node's address, and that Kamailio node, make one bus; htable writes
        replicate from Kamailio to both dmq nodes and back.  A second
        Kamailio node, outside C{--allow-from}, is refused (it cannot sign)
        and never listed; its refusals are in the metrics.
        """
        trusted = {"keyring": KEY, "allowFrom": (parseNetwork("127.0.0.121/32"),)}
        d1 = self.ourNode("127.0.0.122", **trusted)
        d2 = self.ourNode("127.0.0.123", seeds=["sip:127.0.0.122:5060"], **trusted)
        k1 = yield self.kamailio("127.0.0.121", seeds=["sip:127.0.0.122:5060"])
        everyone = {"127.0.0.121:5060", "127.0.0.122:5060", "127.0.0.123:5060"}
        yield waitFor(
            lambda: ourStatuses(d1) == {h: "active" for h in everyone - {"127.0.0.122:5060"}}
            and ourStatuses(d2) == {h: "active" for h in everyone - {"127.0.0.123:5060"}},
            timeout=15, interval=0.1, description="the dmq nodes list the others active",
        )

        @defer.inlineCallbacks
        def kamailioSeesUs():
            theirs = yield k1.peerStatuses()
            return theirs == {"127.0.0.122:5060": "active", "127.0.0.123:5060": "active"}

        yield waitFor(kamailioSeesUs, timeout=15, interval=0.1, description="Kamailio lists both")

        yield k1.htableSets("kdmq", "fromKamailio", "k")
        yield waitFor(
            lambda: d1.htable.get("kdmq", "fromKamailio") == "k" and d2.htable.get("kdmq", "fromKamailio") == "k",
            timeout=5, interval=0.05, description="Kamailio's write on both dmq nodes",
        )
        d2.htable.set("kdmq", "fromDmq", "d")

        @defer.inlineCallbacks
        def kamailioHas():
            value = yield k1.htableGet("kdmq", "fromDmq")
            return value == "d" and d1.htable.get("kdmq", "fromDmq") == "d"

        yield waitFor(kamailioHas, timeout=5, interval=0.05, description="our write on Kamailio and d1")
        self.assertEqual(refused(d1, "bad_signature") + refused(d1, "replay"), 0)

        k2 = yield self.kamailio("127.0.0.124", seeds=["sip:127.0.0.122:5060"])
        yield waitFor(
            lambda: refused(d1, "unsigned") >= 1, timeout=10, interval=0.1,
            description="the outsider's join refused",
        )
        self.assertNotIn(k2.hostPort, ourStatuses(d1))
        self.assertNotIn(k2.hostPort, ourStatuses(d2))

    @defer.inlineCallbacks
    def test_strangerRefused(self):
        """
        With open admission, beside a Kamailio member: a stranger's htable
        writes get 403 (even under the Kamailio node's From URI), and its
        node list (the join) adds only itself, never disabling the Kamailio
        node nor adding another; each refusal is counted in the metrics.
        """
        ours = self.ourNode("127.0.0.125")
        k = yield self.kamailio("127.0.0.126", seeds=["sip:127.0.0.125:5060"])
        yield waitFor(
            lambda: ourStatuses(ours) == {k.hostPort: "active"}, timeout=15, interval=0.1,
            description="the Kamailio node joined us",
        )
        stranger = Stranger()
        port = IReactorUDP(reactor).listenUDP(5060, stranger, interface="127.0.0.127", maxPacketSize=8192)
        self.addCleanup(port.stopListening)
        target = ("127.0.0.125", 5060)
        body = encode(SetCell("kdmq", "evil", "x"))
        stranger.send(target, "htable", body, "127.0.0.127:5060", 1, "application/json")
        stranger.send(target, "htable", body, k.hostPort, 2, "application/json")
        yield waitFor(lambda: len(stranger.replies) == 2, timeout=5, interval=0.05, description="two replies")
        self.assertEqual([r.code for r in stranger.replies], [403, 403])
        self.assertIsNone(ours.htable.get("kdmq", "evil"))
        value = yield k.htableGet("kdmq", "evil")
        self.assertIsNone(value)
        self.assertEqual(refused(ours, "not_member"), 2)

        lines = (
            f"sip:{k.hostPort};status=disabled\r\n"
            "sip:127.0.0.128:5060;status=active\r\n"
            "sip:127.0.0.127:5060;status=active\r\n"
        ).encode()
        # Once joined, the stranger is a member, as in Kamailio: one list.
        stranger.send(target, "notification_peer", lines, k.hostPort, 3)
        yield waitFor(lambda: len(stranger.replies) >= 3, timeout=5, interval=0.05, description="list reply")
        self.assertEqual(stranger.replies[2].code, 200)
        self.assertEqual(
            ourStatuses(ours), {k.hostPort: "active", "127.0.0.127:5060": "active"}
        )
        self.assertEqual(refused(ours, "stranger_lines"), 2)
