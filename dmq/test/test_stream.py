# -*- test-case-name: dmq.test.test_stream -*-
"""
Tests for L{dmq.stream}: framing, the connection pool and the reliable
transport's timer rules, without sockets (a L{Clock} and
L{StringTransport}s).
"""

from __future__ import annotations

from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred
from twisted.internet.error import ConnectionRefusedError
from twisted.internet.interfaces import IProtocol, IStreamClientEndpoint
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import implementer

from dmq import sip
from dmq.stream import (
    MESSAGE_TIMEOUT,
    FramingError,
    SIPStreamTransport,
    contentLength,
)
from dmq.transaction import MessageTooLarge, TransactionLayerStopped
from dmq.transport import SIPDatagramProtocol

PEER = ("127.0.0.12", 40001)
NODE = ("127.0.0.12", 5060)


def kdmq(body: bytes = b"{}", callID: str = "c1", branch: str = "z9hG4bKabc.1") -> bytes:
    return (
        b"KDMQ sip:htable@127.0.0.11:5060;transport=tcp SIP/2.0\r\n"
        b"Via: SIP/2.0/TCP 127.0.0.12:5060;branch=" + branch.encode() + b"\r\n"
        b"To: <sip:htable@127.0.0.11:5060;transport=tcp>\r\n"
        b"From: <sip:htable@127.0.0.12:5060;transport=tcp>;tag=f1\r\n"
        b"CSeq: 10 KDMQ\r\n"
        b"Call-ID: " + callID.encode() + b"\r\n"
        b"Max-Forwards: 1\r\n"
        b"Content-Length: " + str(len(body)).encode() + b"\r\n"
        b"\r\n" + body
    )


def request(transport: str = "tcp") -> sip.Request:
    uri = sip.parseURI(f"sip:htable@127.0.0.12:5060;transport={transport}")
    return sip.Request(
        "KDMQ",
        uri,
        (
            ("To", f"<{uri.toString()}>"),
            ("From", "<sip:htable@127.0.0.11:5060;transport=tcp>;tag=x"),
            ("CSeq", "10 KDMQ"),
            ("Call-ID", "out-1"),
            ("Max-Forwards", "1"),
        ),
        b"",
    )


@implementer(IStreamClientEndpoint)
class FakeEndpoint:
    """
    A client endpoint whose connection attempts the test completes.
    """

    def __init__(self):
        self.attempts = []

    def connect(self, factory):
        d: Deferred[IProtocol] = Deferred()
        self.attempts.append((factory, d))
        return d

    def succeed(self, index=-1):
        factory, d = self.attempts[index]
        protocol = factory.buildProtocol(IPv4Address("TCP", *NODE))
        transport = StringTransport(peerAddress=IPv4Address("TCP", *NODE))
        protocol.makeConnection(transport)
        d.callback(protocol)
        return protocol, transport


class StreamTestsMixin:
    def setUp(self):
        self.clock = Clock()
        self.endpoint = FakeEndpoint()
        self.stream = SIPStreamTransport(
            self.clock,
            ("127.0.0.11", 5060),
            "tcp",
            maxMessage=4096,
            endpointFor=lambda address: self.endpoint,
        )
        self.handled: list[sip.Request] = []

        def handler(transaction):
            self.handled.append(transaction.request)
            transaction.reply(200, "OK")

        self.stream.setHandler("KDMQ", handler)

    def accept(self):
        protocol = self.stream.serverFactory().buildProtocol(IPv4Address("TCP", *PEER))
        assert protocol is not None
        transport = StringTransport(peerAddress=IPv4Address("TCP", *PEER))
        protocol.makeConnection(transport)
        return protocol, transport


class FramingTests(StreamTestsMixin, SynchronousTestCase):
    """
    Messages framed by Content-Length on one connection.
    """

    def test_contentLength(self):
        """
        The Content-Length, long or compact, is read; one missing, not a
        number or given twice with two values cannot frame.
        """
        self.assertEqual(contentLength(b"KDMQ x SIP/2.0\r\nContent-Length: 12"), 12)
        self.assertEqual(contentLength(b"KDMQ x SIP/2.0\r\nl:3\r\nL: 3"), 3)
        for head in (b"KDMQ x SIP/2.0\r\nTo: x", b"X\r\nl: 1x", b"X\r\nl: 1\r\nl: 2"):
            self.assertRaises(FramingError, contentLength, head)

    def test_splitSegments(self):
        """
        A message split over many segments is handled once it is whole, and
        answered on the connection it came on, Via stamped with rport.
        """
        protocol, transport = self.accept()
        data = kdmq(b'{"a": 1}')
        for i in range(0, len(data), 7):
            protocol.dataReceived(data[i : i + 7])
        self.assertEqual(len(self.handled), 1)
        self.assertEqual(self.handled[0].body, b'{"a": 1}')
        reply = transport.value()
        self.assertTrue(reply.startswith(b"SIP/2.0 200 OK\r\n"))
        self.assertIn(b";rport=40001", reply)
        self.assertEqual(self.stream.statistics["received"], 1)

    def test_mergedSegments(self):
        """
        Two messages and a keep-alive in one segment are two messages.
        """
        protocol, transport = self.accept()
        protocol.dataReceived(kdmq(callID="a") + b"\r\n" + kdmq(callID="b", branch="z9hG4bKb"))
        self.assertEqual([r.header("Call-ID") for r in self.handled], ["a", "b"])
        self.assertEqual(transport.value().count(b"SIP/2.0 200 OK"), 2)

    def test_keepAlive(self):
        """
        A double-CRLF ping is answered with a CRLF pong, and the connection
        stays.
        """
        protocol, transport = self.accept()
        protocol.dataReceived(b"\r\n\r\n")
        self.assertEqual(transport.value(), b"\r\n")
        self.assertFalse(transport.disconnecting)
        protocol.dataReceived(kdmq())
        self.assertEqual(len(self.handled), 1)

    def test_loneCRLF(self):
        """
        A lone CRLF is no message begun: it does not start the message
        timeout.
        """
        protocol, transport = self.accept()
        protocol.dataReceived(b"\r\n")
        self.clock.advance(MESSAGE_TIMEOUT + 1)
        self.assertFalse(transport.disconnecting)
        protocol.dataReceived(kdmq())
        self.assertEqual(len(self.handled), 1)

    def test_headersByteByByte(self):
        """
        Headers and body a byte at a time make one message.
        """
        protocol, transport = self.accept()
        data = kdmq(b"{}") + kdmq(b"[]", callID="c2", branch="z9hG4bKz")
        for i in range(len(data)):
            protocol.dataReceived(data[i : i + 1])
        self.assertEqual([r.body for r in self.handled], [b"{}", b"[]"])

    def test_oversize(self):
        """
        A message whose Content-Length takes it over the limit closes the
        connection, counted, before its body is read.
        """
        protocol, transport = self.accept()
        protocol.dataReceived(kdmq(b"x" * 5000)[:300])
        self.assertTrue(transport.disconnecting)
        self.assertEqual(self.stream.statistics["oversize"], 1)
        self.assertEqual(self.handled, [])

    def test_endlessHeaders(self):
        """
        Headers that never end within the limit close the connection.
        """
        protocol, transport = self.accept()
        protocol.dataReceived(b"KDMQ sip:x SIP/2.0\r\n" + b"X: y\r\n" * 1000)
        self.assertTrue(transport.disconnecting)
        self.assertEqual(self.stream.statistics["oversize"], 1)

    def test_garbage(self):
        """
        What cannot be framed (no Content-Length) closes the connection,
        counted, and nothing is raised.
        """
        protocol, transport = self.accept()
        protocol.dataReceived(b"\x00\xff garbage\r\n\r\nmore")
        self.assertTrue(transport.disconnecting)
        self.assertEqual(self.stream.statistics["unframable"], 1)

    def test_malformedButFramed(self):
        """
        A framed message that fails the checks is answered 400 on the
        connection, which stays open.
        """
        protocol, transport = self.accept()
        protocol.dataReceived(kdmq().replace(b"Call-ID: c1\r\n", b""))
        self.assertIn(b"SIP/2.0 400", transport.value())
        self.assertFalse(transport.disconnecting)

    def test_slowSender(self):
        """
        A message trickled a byte at a time, each before the idle timeout,
        is given up on after the message timeout.
        """
        protocol, transport = self.accept()
        data = kdmq()
        for i in range(int(MESSAGE_TIMEOUT) - 1):
            protocol.dataReceived(data[i : i + 1])
            self.clock.advance(1)
        self.assertFalse(transport.disconnecting)
        self.clock.advance(1)
        self.assertTrue(transport.disconnecting)
        self.assertEqual(self.stream.statistics["slowSender"], 1)

    def test_idle(self):
        """
        A connection that carries nothing for the idle timeout is closed;
        closing it cancels its timers.
        """
        protocol, transport = self.accept()
        self.clock.advance(self.stream.idleTimeout - 1)
        self.assertFalse(transport.disconnecting)
        self.clock.advance(1)
        self.assertTrue(transport.disconnecting)
        protocol.connectionLost(None)
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.assertEqual(self.stream.connections, {})


class PoolTests(StreamTestsMixin, SynchronousTestCase):
    """
    Outgoing connections, their reuse and failures, and the timers of a
    reliable transport.
    """

    def test_connectAndReuse(self):
        """
        The first request connects and waits for the connection; the second
        reuses it.  Neither is sent again (no Timer E); a response on the
        connection answers.
        """
        d1 = self.stream.sendRequest(request(), NODE)
        self.assertEqual(len(self.endpoint.attempts), 1)
        protocol, transport = self.endpoint.succeed()
        first = transport.value()
        self.assertTrue(first.startswith(b"KDMQ sip:htable@127.0.0.12:5060;transport=tcp"))
        self.assertIn(b"Via: SIP/2.0/TCP 127.0.0.11:5060;branch=", first)
        d2 = self.stream.sendRequest(request(), NODE)
        self.assertEqual(len(self.endpoint.attempts), 1)
        self.clock.advance(20)
        self.assertEqual(transport.value().count(b"KDMQ sip:"), 2)
        self.assertEqual(self.stream.transactions.statistics["retransmissionsSent"], 0)
        parsed = sip.parse(first)
        assert isinstance(parsed, sip.Request)
        protocol.dataReceived(sip.serialise(sip.responseFor(parsed, 200, "OK")))
        self.assertEqual(self.successResultOf(d1).code, 200)
        self.clock.advance(12)
        self.assertEqual(self.successResultOf(d2).code, 408)

    def test_tooLarge(self):
        """
        A request over the message limit fails at once with
        L{MessageTooLarge}, and no connection is opened for it.
        """
        big = request()
        big = sip.Request(big.method, big.uri, big.headers, b"x" * 5000)
        self.failureResultOf(self.stream.sendRequest(big, NODE), MessageTooLarge)
        self.assertEqual(self.endpoint.attempts, [])

    def test_connectFails(self):
        """
        A failed connection ends its transactions at once with a 408, and
        sends to that address fail at once until the backoff is over.
        """
        d = self.stream.sendRequest(request(), NODE)
        self.endpoint.attempts[0][1].errback(ConnectionRefusedError())
        response = self.successResultOf(d)
        self.assertEqual((response.code, response.reason), (408, "Connection Failed"))
        again = self.successResultOf(self.stream.sendRequest(request(), NODE))
        self.assertEqual(again.reason, "Connection Failed")
        self.assertEqual(len(self.endpoint.attempts), 1)
        self.clock.advance(1)
        self.stream.sendRequest(request(), NODE)
        self.assertEqual(len(self.endpoint.attempts), 2)
        self.assertEqual(self.stream.statistics["connectFailures"], 1)

    def test_stop(self):
        """
        Stopping gives up connections being opened and closes open ones.
        """
        pending = self.stream.sendRequest(request(), NODE)
        protocol, transport = self.accept()
        d = self.stream.stop()
        self.failureResultOf(pending, TransactionLayerStopped)
        self.assertNoResult(d)
        self.assertTrue(transport.disconnecting)
        protocol.connectionLost(None)
        self.successResultOf(d)
        self.assertEqual(self.clock.getDelayedCalls(), [])


class RoutingTests(SynchronousTestCase):
    """
    The UDP transport sends each request over the transport its Request-URI
    names.
    """

    def test_noSuchTransport(self):
        """
        A node over TLS is never sent to over UDP: with no TLS transport the
        send ends at once with a 408.
        """
        udp = SIPDatagramProtocol(Clock(), ("127.0.0.11", 5060))
        response = self.successResultOf(udp.sendRequest(request("tls"), NODE))
        self.assertEqual((response.code, response.reason), (408, "Unsupported Transport"))
        self.assertEqual(udp.transactions.statistics["clientTransactions"], 0)

    def test_stream(self):
        """
        A request for a TCP node goes through the TCP transport, which also
        gets the UDP transport's handlers.
        """
        clock = Clock()
        udp = SIPDatagramProtocol(clock, ("127.0.0.11", 5060))
        endpoint = FakeEndpoint()
        tcp = SIPStreamTransport(clock, ("127.0.0.11", 5060), endpointFor=lambda a: endpoint)
        udp.addStream("tcp", tcp)
        udp.sendRequest(request("tcp"), NODE)
        self.assertEqual(len(endpoint.attempts), 1)
        udp.setHandler("KDMQ", lambda t: t.reply(200, "OK"))
        self.assertIn("KDMQ", tcp._handlers)

    def test_udpTooLarge(self):
        """
        Over UDP a request over one datagram fails at once; over TCP the
        same request goes.
        """
        big = request("udp")
        big = sip.Request(big.method, sip.parseURI("sip:htable@127.0.0.12:5060"), big.headers, b"x" * 70000)
        udp = SIPDatagramProtocol(Clock(), ("127.0.0.11", 5060))
        self.failureResultOf(udp.sendRequest(big, NODE), MessageTooLarge)


class SlowReaderTests(StreamTestsMixin, SynchronousTestCase):
    """
    A peer that stops reading.
    """

    def test_slowReader(self):
        """
        Once the peer's transport pauses us, at most four times the message
        limit more is written before the connection is closed, counted.
        """
        protocol, transport = self.accept()
        self.assertIs(transport.producer, protocol)
        protocol.pauseProducing()
        protocol.write(b"x" * 4 * 4096)
        self.assertFalse(transport.disconnecting)
        protocol.write(b"x")
        self.assertTrue(transport.disconnecting)
        self.assertEqual(self.stream.statistics["slowReader"], 1)

    def test_resumed(self):
        """
        Once resumed, it may be written to as before.
        """
        protocol, transport = self.accept()
        protocol.pauseProducing()
        protocol.write(b"x" * 4 * 4096)
        protocol.resumeProducing()
        protocol.write(b"x" * 4096)
        self.assertFalse(transport.disconnecting)

    def test_acceptedWhileStopped(self):
        """
        A connection accepted once the transport is stopped is closed, and
        none is once it is started again.
        """
        self.stream.stop()
        protocol, transport = self.accept()
        self.assertTrue(transport.disconnecting)
        self.stream.start()
        protocol, transport = self.accept()
        self.assertFalse(transport.disconnecting)
        self.assertIsNone(self.stream.peerCommonName(PEER))


class ConnectionCapTests(StreamTestsMixin, SynchronousTestCase):
    """
    The cap on connections.
    """

    def test_acceptedPastTheCap(self):
        """
        A connection accepted past the cap is closed at once, counted; a
        send that would open one past it ends at once with a 408.
        """
        self.stream.maxConnections = 1
        self.accept()
        protocol, transport = self.accept()
        self.assertTrue(transport.disconnecting)
        self.assertEqual(self.stream.statistics["connectionsRefused"], 1)
        protocol.connectionLost(None)
        response = self.successResultOf(self.stream.sendRequest(request(), NODE))
        self.assertEqual((response.code, response.reason), (408, "Connection Failed"))
        self.assertEqual(self.endpoint.attempts, [])


class ConfigTests(SynchronousTestCase):
    """
    The transport and TLS settings, and the node they make.
    """

    def setUp(self):
        from dmq.test.tlsca import TestCA

        self.ca = TestCA(self.mktemp())
        self.certificate, self.key = self.ca.issue("127.0.0.11")

    def options(self, *argv):
        from dmq.tap import Options

        options = Options()
        options.parseOptions(list(argv))
        return options

    def test_refused(self):
        """
        TLS without a certificate, client verification without a CA, two
        sockets of one transport, and a certificate that is not one are
        usage errors.
        """
        from twisted.python.usage import UsageError

        for argv, fragment in [
            (["-s", "sip:127.0.0.11:5061;transport=tls"], "needs --tls-certificate"),
            (["--listen", "tls:127.0.0.11:5061"], "needs --tls-certificate"),
            (["--listen", "udp:127.0.0.11:5062"], "one socket per transport"),
            (
                ["--tls-certificate", self.certificate, "--tls-private-key", self.key,
                 "--tls-verify-client"],
                "needs --tls-ca",
            ),
            (
                ["--tls-certificate", self.ca.caPath + "x", "--tls-private-key", self.key],
                "cannot read",
            ),
            (["--tls-certificate", self.key, "--tls-private-key", self.key], "unusable"),
        ]:
            error = self.assertRaises(
                UsageError, self.options, "-s", "sip:127.0.0.11:5060", *argv
            )
            self.assertIn(fragment, str(error), argv)

    def test_tlsNode(self):
        """
        A node over TLS listens over TLS on its server address and over the
        other sockets of C{--listen}; its URI and Via carry the transport.
        """
        from twisted.internet.testing import MemoryReactorClock

        from dmq.tap import makeNodeService

        options = self.options(
            "-s", "sip:127.0.0.11:5061;transport=tls",
            "--listen", "udp:127.0.0.11:5060",
            "--listen", "tcp:127.0.0.11:5060",
            "--tls-certificate", self.certificate,
            "--tls-private-key", self.key,
            "--tls-ca", self.ca.caPath,
        )
        class Reactor(MemoryReactorClock):
            def __init__(self):
                MemoryReactorClock.__init__(self)
                self.udpServers = []

            def listenUDP(self, port, protocol, interface="", maxPacketSize=8192):
                self.udpServers.append((port, protocol, maxPacketSize, interface))
                return None

        reactor = Reactor()
        node = makeNodeService(reactor, options.nodeConfig)
        node.startService()
        self.assertEqual([(port, interface) for port, _, _, _, interface in reactor.sslServers], [(5061, "127.0.0.11")])
        self.assertEqual([(p[0], p[3]) for p in reactor.tcpServers], [(5060, "127.0.0.11")])
        self.assertEqual([(p[0], p[3]) for p in reactor.udpServers], [(5060, "127.0.0.11")])
        self.assertEqual(node.nodeManager.localNode.uri.toString(), "sip:127.0.0.11:5061;transport=tls")
        self.assertEqual(sorted(node.protocol.streams), ["tcp", "tls"])
        self.assertEqual(node.protocol.streams["tls"].sentBy, ("127.0.0.11", 5061))
        self.assertEqual(node.protocol.streams["tcp"].sentBy, ("127.0.0.11", 5060))
