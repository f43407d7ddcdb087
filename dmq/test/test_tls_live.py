# -*- test-case-name: dmq.test.test_tls_live -*-
"""
Integration tests of KDMQ over TLS and TCP: real sockets on loopback
(127.0.0.151 to 127.0.0.158), certificates from a test CA made at test time.  Run under
the shared test lock.
"""

from __future__ import annotations

from twisted.internet import defer, endpoints, reactor, ssl
from twisted.internet.protocol import Factory, Protocol
from twisted.trial.unittest import TestCase

from dmq.config import NodeConfig, parseServerAddress
from dmq.nodeaddress import parseNodeAddress
from dmq.peers.htable import parseTableSpec
from dmq.stream import SIPStreamTransport
from dmq.tap import makeNodeService
from dmq.test.kamailio import waitFor
from dmq.test.test_stream import kdmq
from dmq.test.tlsca import TestCA

KDMQ_TABLE = "kdmq=>size=8;autoexpire=0;dmqreplicate=1"
PORT = 5061


def statuses(node):
    """
    Our node's view of the others: C{{uri: status}}.
    """
    return {n.uri.toString(): n.status.value for n in node.nodeManager.nodes() if not n.local}


def tlsURI(ip):
    return f"sip:{ip}:{PORT};transport=tls"


class _Recorder(Protocol):
    def __init__(self):
        self.received = b""
        self.lost: defer.Deferred[None] = defer.Deferred()
        self.reason = None

    def dataReceived(self, data):
        self.received += data

    def connectionLost(self, reason=None):
        self.reason = reason
        self.lost.callback(None)


def startTLSNode(testCase, ca, ip, seeds=(), **options):
    """
    Start one of our nodes over TLS on C{ip}:5061, with a certificate from
    C{ca}, stopped in C{testCase}'s cleanup.
    """
    certificate, key = ca.issue(ip)
    options.setdefault("pingInterval", 2)
    options.setdefault("htables", [KDMQ_TABLE])
    node = makeNodeService(
        reactor,
        NodeConfig(
            serverAddress=parseServerAddress(tlsURI(ip)),
            notificationAddresses=tuple(parseNodeAddress(s) for s in seeds),
            tlsCertificate=certificate,
            tlsPrivateKey=key,
            tlsCA=ca.caPath,
            **options,
        ),
    )
    node.startService()
    testCase.addCleanup(lambda: node.stopService() if node.running else None)
    return node


def stopIfRunning(service):
    """
    Stop C{service} if it runs: a cleanup for a node a test may have stopped.
    """
    return service.stopService() if service.running else None


class TLSBusTests(TestCase):
    """
    A bus of our nodes over mutual TLS.
    """

    timeout = 30

    def setUp(self):
        self.ca = TestCA(self.mktemp())

    def tlsNode(self, ip, seeds=(), ca=None, **options):
        """
        Start one of our nodes over TLS on C{ip}:5061, with a certificate
        from C{ca} (ours by default), stopped in cleanup.
        """
        return startTLSNode(self, ca or self.ca, ip, seeds, **options)

    @defer.inlineCallbacks
    def test_busOfThree(self):
        """
        Three nodes join over TLS through different seeds, list each other
        active, and replicate a table; the UDP transport sends nothing.
        """
        ips = ["127.0.0.151", "127.0.0.152", "127.0.0.153"]
        a = self.tlsNode(ips[0])
        b = self.tlsNode(ips[1], seeds=[tlsURI(ips[0])])
        c = self.tlsNode(ips[2], seeds=[tlsURI(ips[1])])
        nodes = [a, b, c]

        def allActive():
            return all(
                statuses(node) == {tlsURI(ip): "active" for ip in ips if ip != mine}
                for node, mine in zip(nodes, ips)
            )

        yield waitFor(allActive, timeout=10, interval=0.05, description="three TLS nodes active")
        yield a.htable.set("kdmq", "k", "v")
        yield waitFor(
            lambda: all(node.htable.get("kdmq", "k") == "v" for node in nodes),
            timeout=5,
            interval=0.05,
            description="the table replicated over TLS",
        )
        for node in nodes:
            self.assertEqual(node.protocol.statistics["sent"], 0)
            self.assertEqual(node.protocol.transactions.statistics["clientTransactions"], 0)
            tls = node.protocol.streams["tls"]
            self.assertGreater(tls.statistics["received"], 0)
            self.assertEqual(tls.transactions.statistics["retransmissionsSent"], 0)
        tls = a.protocol.streams["tls"]
        peer = next(address for address in tls.connections if address[0] == ips[1])
        self.assertEqual(tls.peerCommonName(peer), ips[1])
        self.assertEqual(a.protocol.peerCommonName(peer), ips[1])

    @defer.inlineCallbacks
    def test_busOverTCP(self):
        """
        Two nodes over plain TCP join and replicate, nothing retransmitted.
        """
        ips = ["127.0.0.157", "127.0.0.158"]
        uris = [f"sip:{ip}:5060;transport=tcp" for ip in ips]
        a, b = [
            makeNodeService(
                reactor,
                NodeConfig(
                    serverAddress=parseServerAddress(uris[i]),
                    notificationAddresses=(parseNodeAddress(uris[0]),) if i else (),
                    htables=(parseTableSpec(KDMQ_TABLE),),
                    pingInterval=2,
                ),
            )
            for i in range(2)
        ]
        for node in (a, b):
            node.startService()
            self.addCleanup(stopIfRunning, node)
        yield waitFor(
            lambda: statuses(a) == {uris[1]: "active"} and statuses(b) == {uris[0]: "active"},
            timeout=10,
            interval=0.05,
            description="two TCP nodes active",
        )
        tableA, tableB = a.htable, b.htable
        assert tableA is not None and tableB is not None
        yield tableB.set("kdmq", "k", 1)
        yield waitFor(lambda: tableA.get("kdmq", "k") == 1, timeout=5, interval=0.05)
        # A body of most of a mebibyte goes (one datagram would carry 64 KiB).
        from dmq.test.test_bus import RecordingPeer

        peer = RecordingPeer("big")
        a.bus.registerPeer(peer)
        target = next(n for n in b.nodeManager.nodes() if not n.local)
        response = yield b.bus.send("big", b"x" * 1000000, target)
        self.assertEqual(response.code, 200)
        self.assertEqual(len(peer.received[0][0].body), 1000000)
        tcp = a.protocol.streams["tcp"]
        assert isinstance(tcp, SIPStreamTransport)
        self.assertEqual(tcp.transactions.statistics["retransmissionsSent"], 0)
        self.assertIsNone(a.protocol.peerCommonName(next(iter(tcp.connections))))

    @defer.inlineCallbacks
    def test_clientWithoutCertificateRefused(self):
        """
        A client that presents no certificate gets no answer: the handshake
        fails and the connection is closed before any SIP is read.
        """
        node = self.tlsNode("127.0.0.154")
        options = ssl.optionsForClientTLS(
            "127.0.0.154",
            trustRoot=ssl.Certificate.loadPEM(open(self.ca.caPath, "rb").read()),
        )
        endpoint = endpoints.wrapClientTLS(
            options, endpoints.TCP4ClientEndpoint(reactor, "127.0.0.154", PORT)
        )
        recorder = _Recorder()
        protocol = yield endpoint.connect(Factory.forProtocol(lambda: recorder))
        protocol.transport.write(kdmq())
        yield recorder.lost
        self.assertEqual(recorder.received, b"")
        assert recorder.reason is not None
        self.assertIn("certificate required", str(recorder.reason.value))
        self.assertEqual(node.protocol.streams["tls"].statistics["received"], 0)

    @defer.inlineCallbacks
    def test_rogueNodeRefused(self):
        """
        A node whose certificate is from another CA cannot join: neither
        side takes the other's handshake, its join ends at once with a 408
        Connection Failed, and nothing reaches the member.
        """
        member = self.tlsNode("127.0.0.155")
        rogue = self.tlsNode(
            "127.0.0.156", seeds=[tlsURI("127.0.0.155")], ca=TestCA(self.mktemp(), "rogue CA")
        )
        tls = rogue.protocol.streams["tls"]
        yield waitFor(
            lambda: tls.statistics["connectFailures"] >= 1,
            timeout=5,
            interval=0.05,
            description="the rogue's connection fails",
        )
        self.assertEqual(member.protocol.streams["tls"].statistics["received"], 0)
        self.assertNotIn(tlsURI("127.0.0.156"), statuses(member))
