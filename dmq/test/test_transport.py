# -*- test-case-name: dmq.test.test_transport -*-
"""
Tests for L{dmq.transport}.
"""

from __future__ import annotations

import errno
import os
import random
import socket

from twisted.internet import defer, reactor
from twisted.internet.error import InvalidAddressError, MessageLengthError
from twisted.internet.interfaces import IReactorUDP
from twisted.internet.task import Clock
from twisted.internet.testing import EventLoggingObserver, MemoryReactorClock
from twisted.logger import globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase, TestCase
from zope.interface import implementer

from dmq import sip
from dmq.test.captures import datagrams
from dmq.test.test_sip import parseResponse
from dmq.transaction import TransactionLayerStopped
from dmq.transport import MAX_DATAGRAM, SIPDatagramProtocol, SIPPort, listenSIP

KDMQ_REQUEST = (
    b"KDMQ sip:htable@127.0.0.11:5060 SIP/2.0\r\n"
    b"Via: SIP/2.0/UDP 127.0.0.12:5060;branch=z9hG4bKabc.1\r\n"
    b"To: <sip:htable@127.0.0.11:5060>\r\n"
    b"From: <sip:htable@127.0.0.12:5060>;tag=f1\r\n"
    b"CSeq: 10 KDMQ\r\n"
    b"Call-ID: c1@127.0.0.12\r\n"
    b"Max-Forwards: 1\r\n"
    b"Content-Type: application/json\r\n"
    b"Content-Length: 2\r\n"
    b"\r\n"
    b"{}"
)

SOURCE = ("127.0.0.12", 5060)


class RecordingDatagramTransport:
    """
    A datagram transport that keeps what is written.
    """

    def __init__(self, host=("127.0.0.11", 5060)):
        self.written = []
        self.host = host

    def write(self, data, addr):
        self.written.append((data, addr))

    def getHost(self):
        from twisted.internet.address import IPv4Address

        return IPv4Address("UDP", *self.host)

    def stopListening(self):
        pass


class IPv4PortTransport(RecordingDatagramTransport):
    """
    A L{RecordingDatagramTransport} that refuses what Twisted's IPv4 UDP
    port refuses: a destination that is not an IPv4 address, and a
    datagram longer than one can be.
    """

    def write(self, data, addr):
        from twisted.internet.abstract import isIPAddress
        from twisted.internet.error import InvalidAddressError, MessageLengthError

        if not isIPAddress(addr[0]):
            raise InvalidAddressError(addr[0], "not an IPv4 address")
        if len(data) > 65507:
            raise MessageLengthError("message too long")
        RecordingDatagramTransport.write(self, data, addr)


def connectedProtocol(testCase, transport=None):
    clock = Clock()
    protocol = SIPDatagramProtocol(clock, ("127.0.0.11", 5060))
    transport = transport or RecordingDatagramTransport()
    protocol.makeConnection(transport)
    testCase.addCleanup(protocol.stop)
    return clock, protocol, transport


class SIPDatagramProtocolTests(SynchronousTestCase):
    """
    Tests for L{SIPDatagramProtocol}, without sockets.
    """

    def test_handlerGetsRequestOnce(self):
        """
        A new KDMQ request goes to the KDMQ handler once, retransmissions are
        answered from the stored reply, and replies go to the source.
        """
        clock, protocol, transport = connectedProtocol(self)
        seen = []

        def handler(transaction):
            seen.append(transaction.request)
            transaction.respond(sip.responseFor(transaction.request, 200, "OK", toTag="t"))

        protocol.setHandler("KDMQ", handler)
        protocol.datagramReceived(KDMQ_REQUEST, SOURCE)
        protocol.datagramReceived(KDMQ_REQUEST, SOURCE)
        self.assertEqual(len(seen), 1)
        self.assertEqual(seen[0].body, b"{}")
        self.assertEqual(len(transport.written), 2)
        self.assertEqual(transport.written[0], transport.written[1])
        reply = parseResponse(transport.written[0][0])
        self.assertEqual((reply.code, reply.reason), (200, "OK"))
        self.assertEqual(transport.written[0][1], SOURCE)

    def test_kdmqWithoutHandler(self):
        """
        With no bus registered, a KDMQ request is answered C{404 User Not Found}.
        """
        clock, protocol, transport = connectedProtocol(self)
        protocol.datagramReceived(KDMQ_REQUEST, SOURCE)
        reply = parseResponse(transport.written[0][0])
        self.assertEqual((reply.code, reply.reason), (404, "User Not Found"))
        self.assertEqual(reply.header("Call-ID"), "c1@127.0.0.12")
        self.assertEqual(reply.to.tag is not None, True)

    def test_otherMethod(self):
        """
        A method without a handler gets C{405} with C{Allow: KDMQ}.
        """
        clock, protocol, transport = connectedProtocol(self)
        options = KDMQ_REQUEST.replace(b"KDMQ sip:", b"OPTIONS sip:").replace(
            b"10 KDMQ", b"10 OPTIONS"
        )
        protocol.datagramReceived(options, SOURCE)
        reply = parseResponse(transport.written[0][0])
        self.assertEqual(reply.code, 405)
        self.assertEqual(reply.header("Allow"), "KDMQ")

    def test_hostApplicationHandlesOtherMethod(self):
        """
        A host application can take another method.
        """
        clock, protocol, transport = connectedProtocol(self)
        protocol.setHandler(
            "OPTIONS", lambda t: t.respond(sip.responseFor(t.request, 200, "OK", toTag="x"))
        )
        options = KDMQ_REQUEST.replace(b"KDMQ sip:", b"OPTIONS sip:").replace(
            b"10 KDMQ", b"10 OPTIONS"
        )
        protocol.datagramReceived(options, SOURCE)
        self.assertEqual(parseResponse(transport.written[0][0]).code, 200)

    def test_shortBodyAnswered400(self):
        """
        A request whose body is shorter than its Content-Length is answered
        C{400} with the reason, at the Via address.
        """
        clock, protocol, transport = connectedProtocol(self)
        protocol.datagramReceived(KDMQ_REQUEST.replace(b"Length: 2", b"Length: 200"), SOURCE)
        [(data, address)] = transport.written
        reply = parseResponse(data)
        self.assertEqual(reply.code, 400)
        self.assertEqual(reply.reason, "Body shorter than Content-Length")
        self.assertEqual(address, SOURCE)
        self.assertEqual(protocol.statistics["badRequests"], 1)

    def test_missingHeaderAnswered400(self):
        """
        A request without a Call-ID is answered C{400 Missing Call-ID header}.
        """
        clock, protocol, transport = connectedProtocol(self)
        protocol.datagramReceived(KDMQ_REQUEST.replace(b"Call-ID: c1@127.0.0.12\r\n", b""), SOURCE)
        reply = parseResponse(transport.written[0][0])
        self.assertEqual((reply.code, reply.reason), (400, "Missing Call-ID header"))

    def test_garbageDropped(self):
        """
        Bytes that are no SIP message are dropped, counted and warned about once.
        """
        clock, protocol, transport = connectedProtocol(self)
        events = EventLoggingObserver()
        globalLogPublisher.addObserver(events)
        self.addCleanup(globalLogPublisher.removeObserver, events)
        for _ in range(5):
            protocol.datagramReceived(b"this is not a SIP message\r\n", SOURCE)
        self.assertEqual(transport.written, [])
        self.assertEqual(protocol.statistics["malformed"], 5)
        self.assertEqual(protocol.statistics["unanswerable"], 5)
        warnings = [e for e in events if e.get("log_namespace", "").startswith("dmq.transport")]
        self.assertEqual(len(warnings), 1)
        self.assertNotIn("log_failure", warnings[0])

    def test_unmatchedResponseDropped(self):
        """
        A response that matches no transaction is counted and dropped.
        """
        clock, protocol, transport = connectedProtocol(self)
        request = sip.parse(KDMQ_REQUEST)
        assert isinstance(request, sip.Request)
        protocol.datagramReceived(
            sip.serialise(sip.responseFor(request, 200, "OK", toTag="x")), SOURCE
        )
        self.assertEqual(protocol.statistics["unmatchedResponses"], 1)
        self.assertEqual(transport.written, [])

    def test_receivedAndRport(self):
        """
        When the Via host is not the source address, the reply carries
        C{received}, and a bare C{rport} is filled in and honoured.
        """
        clock, protocol, transport = connectedProtocol(self)
        seen = []

        def handler(t):
            seen.append(t)
            t.respond(sip.responseFor(t.request, 200, "OK", toTag="t"))

        protocol.setHandler("KDMQ", handler)
        request = KDMQ_REQUEST.replace(
            b"UDP 127.0.0.12:5060;branch", b"UDP node2.example:5060;rport;branch"
        )
        protocol.datagramReceived(request, ("127.0.0.12", 40000))
        [(data, address)] = transport.written
        self.assertEqual(address, ("127.0.0.12", 40000))
        via = sip.parse(data).via[0]
        self.assertEqual(via.received, "127.0.0.12")
        self.assertEqual(via.rport, "40000")
        self.assertEqual(via.branch, "z9hG4bKabc.1")

    def test_viaHostNotAnAddress(self):
        """
        A request whose Via names a host that is not an IPv4 address
        (a number that is not one, a name, an IPv6 address) is answered at
        its source address, with C{received} stamped; nothing is raised or
        logged as an error.
        """
        for host in [b"127.0.0.1e9", b"localhost", b"[::1]"]:
            clock, protocol, transport = connectedProtocol(self, IPv4PortTransport())
            protocol.setHandler("KDMQ", lambda t: t.reply(200, "OK"))
            request = KDMQ_REQUEST.replace(b"UDP 127.0.0.12:5060", b"UDP " + host + b":5070")
            protocol.datagramReceived(request, SOURCE)
            [(data, address)] = transport.written
            self.assertEqual(address, ("127.0.0.12", 5070))
            reply = parseResponse(data)
            self.assertEqual(reply.code, 200)
            self.assertEqual(reply.via[0].received, "127.0.0.12")
        self.assertEqual(self.flushLoggedErrors(), [])

    def test_receivedNotBelieved(self):
        """
        A C{received} or an C{rport} value the sender wrote is replaced by
        where the request came from, and the reply goes there: not to a
        third party, nor to a name or an address of the other family.
        """
        for parameters, port in [
            (b";received=127.0.0.66", 5060),
            (b";received=127.0.0.66;rport=7000", 40000),
            (b";received=localhost", 5060),
            (b";received=[::1]", 5060),
            (b";received=127.0.0.1e9;rport", 40000),
        ]:
            clock, protocol, transport = connectedProtocol(self, IPv4PortTransport())
            protocol.setHandler("KDMQ", lambda t: t.reply(200, "OK"))
            request = KDMQ_REQUEST.replace(b";branch=", parameters + b";branch=")
            protocol.datagramReceived(request, ("127.0.0.12", 40000))
            [(data, address)] = transport.written
            self.assertEqual(address, ("127.0.0.12", port))
            via = sip.parse(data).via[0]
            self.assertIsNone(via.received)
            self.assertEqual(via.rport, None if port == 5060 else "40000")
        self.assertEqual(self.flushLoggedErrors(), [])

    def test_badRequestToSource(self):
        """
        The C{400} for a malformed request goes back to its source address,
        not to the host its Via names.
        """
        for host in [b"127.0.0.66", b"localhost", b"[::1]"]:
            clock, protocol, transport = connectedProtocol(self, IPv4PortTransport())
            request = KDMQ_REQUEST.replace(
                b"UDP 127.0.0.12:5060", b"UDP " + host + b":5060"
            ).replace(b"CSeq: 10 KDMQ", b"CSeq: x KDMQ")
            protocol.datagramReceived(request, SOURCE)
            [(data, address)] = transport.written
            self.assertEqual(address, SOURCE)
            reply = parseResponse(data)
            self.assertEqual((reply.code, reply.reason), (400, "Bad CSeq header"))
            self.assertEqual(reply.via[0].received, "127.0.0.12")
            self.assertEqual(protocol.statistics["badRequests"], 1)
        self.assertEqual(self.flushLoggedErrors(), [])

    def test_replyTooLong(self):
        """
        A reply too long for one datagram (to a request of 65,488 octets
        that it copies most of) is a counted drop with one warning, and no
        traceback.
        """
        clock, protocol, transport = connectedProtocol(self, IPv4PortTransport())
        events = EventLoggingObserver()
        globalLogPublisher.addObserver(events)
        self.addCleanup(globalLogPublisher.removeObserver, events)
        protocol.setHandler(
            "KDMQ", lambda t: t.reply(200, "OK", [("Content-Type", "text/plain")], b"x" * 100)
        )
        callID = b"c1@127.0.0.12"
        padding = 65488 - len(KDMQ_REQUEST)
        request = KDMQ_REQUEST.replace(callID, b"c" * padding + callID)
        self.assertEqual(len(request), 65488)
        for _ in range(2):
            protocol.datagramReceived(request, SOURCE)
        self.assertEqual(transport.written, [])
        self.assertEqual(protocol.transactions.statistics["sendErrors"], 2)
        self.assertEqual(self.flushLoggedErrors(), [])
        warnings = [e for e in events if e.get("log_namespace", "").startswith("dmq.")]
        self.assertEqual(len(warnings), 1)
        self.assertNotIn("log_failure", warnings[0])

    def test_capturedRequestsAnswered(self):
        """
        Every KDMQ request Kamailio sent in the captures is accepted and answered.
        """
        clock, protocol, transport = connectedProtocol(self)
        requests = [
            c for c in datagrams("01-bus-formation.txt") if c.data.startswith(b"KDMQ ")
        ]
        for capture in requests:
            host, port = capture.source.rsplit(":", 1)
            protocol.datagramReceived(capture.data, (host, int(port)))
        self.assertEqual(len(transport.written), len(requests))
        self.assertEqual(protocol.statistics["malformed"], 0)

    def test_fuzz(self):
        """
        10,000 random and mutated datagrams never make an exception escape or
        a failure be logged.
        """
        clock, protocol, transport = connectedProtocol(self)
        protocol.setHandler(
            "KDMQ", lambda t: t.respond(sip.responseFor(t.request, 200, "OK", toTag="t"))
        )
        seeds = [c.data for c in datagrams("01-bus-formation.txt")] + [KDMQ_REQUEST]
        rng = random.Random(1234)
        tokens = [b"\r\n", b"\n", b":", b";", b",", b"<", b">", b"\"", b" ", b"\x00", b"\xff",
                  b"Content-Length: 9999\r\n", b"Via: SIP/2.0/UDP [::1]:5\r\n", b"l: -1\r\n",
                  b"\r\n\r\n", b"sip:", b"@", b"KDMQ", b"SIP/2.0 "]
        for i in range(10000):
            data = bytearray(rng.choice(seeds))
            for _ in range(rng.randint(1, 6)):
                choice = rng.random()
                position = rng.randrange(len(data) + 1)
                if choice < 0.3 and data:
                    data[min(position, len(data) - 1)] = rng.randrange(256)
                elif choice < 0.55:
                    data[position:position] = rng.choice(tokens)
                elif choice < 0.8:
                    del data[position : position + rng.randint(1, 40)]
                else:
                    data = data[:position]
            if i % 10 == 0:
                data = bytearray(rng.randbytes(rng.randint(0, 300)))
            protocol.datagramReceived(bytes(data), SOURCE)
            if i % 500 == 0:
                clock.advance(40)
        self.assertEqual(protocol.statistics["internalErrors"], 0)
        self.assertEqual(protocol.statistics["received"], 10000)
        self.assertEqual(self.flushLoggedErrors(), [])


def request(n):
    """
    C{KDMQ_REQUEST} as the C{n}th of a burst: its own branch and Call-ID.
    """
    return KDMQ_REQUEST.replace(b"z9hG4bKabc.1", b"z9hG4bKabc.%d" % (n,)).replace(
        b"c1@127.0.0.12", b"c%d@127.0.0.12" % (n,)
    )


class FakeSocket:
    """
    A non-blocking UDP socket with datagrams waiting, that keeps what
    happens to it, in order, in C{events}.

    @ivar refusals: for each of the next C{sendto} calls in turn, the
        C{errno} it fails with, or 0 for none.
    @ivar fail: an error C{recvfrom} raises once nothing waits, instead of
        C{EAGAIN}.
    """

    def __init__(self, waiting):
        self.waiting = list(waiting)
        self.events = []
        self.refusals = []
        self.fail = None

    def recvfrom(self, size):
        if not self.waiting:
            if self.fail is not None:
                raise self.fail
            raise BlockingIOError(errno.EAGAIN, "Resource temporarily unavailable")
        data, address = self.waiting.pop(0)
        self.events.append(("received", data))
        return data, address

    def sendto(self, data, address):
        code = self.refusals.pop(0) if self.refusals else 0
        if code:
            raise OSError(code, os.strerror(code))
        self.events.append(("sent", data, address))
        return len(data)

    def setsockopt(self, *arguments):
        pass


class SIPPortTests(SynchronousTestCase):
    """
    L{SIPPort} sends the replies to what it read once the read is over.
    """

    def connect(self, waiting):
        clock = Clock()
        protocol = SIPDatagramProtocol(clock, ("127.0.0.11", 5060))
        protocol.setHandler("KDMQ", lambda t: t.reply(200, "OK"))
        port = SIPPort(5060, protocol, "127.0.0.11", MAX_DATAGRAM, MemoryReactorClock())
        port.socket = FakeSocket(waiting)  # type: ignore[assignment]
        protocol.makeConnection(port)
        self.addCleanup(protocol.stop)
        return protocol, port.socket, port

    def test_repliesAfterTheRead(self):
        """
        Of three requests waiting, the first is answered at once and the
        two others once all are read; each is answered, in order, where it
        came from.
        """
        protocol, sock, port = self.connect([(request(n), SOURCE) for n in (1, 2, 3)])
        port.doRead()
        self.assertEqual(
            [e[0] for e in sock.events], ["received", "sent", "received", "received", "sent", "sent"]
        )
        replies = [parseResponse(e[1]) for e in sock.events if e[0] == "sent"]
        self.assertEqual([r.code for r in replies], [200] * 3)
        self.assertEqual(
            [r.header("Call-ID") for r in replies], ["c1@127.0.0.12", "c2@127.0.0.12", "c3@127.0.0.12"]
        )
        self.assertEqual({e[2] for e in sock.events if e[0] == "sent"}, {SOURCE})
        self.assertEqual(protocol.statistics["sent"], 3)
        self.assertIsNone(protocol._held)

    def test_sendsOutsideAReadAtOnce(self):
        """
        What is sent outside a read (a request of ours, a retransmission
        from a timer) leaves at once.
        """
        protocol, sock, port = self.connect([])
        sending = protocol.sendRequest(sip.parse(request(1)), ("127.0.0.12", 5060))
        self.assertEqual([e[0] for e in sock.events], ["sent"])
        protocol.stop()
        self.failureResultOf(sending, TransactionLayerStopped)

    def test_refusedWhenTheReadEnds(self):
        """
        A reply the socket refuses when the read ends is counted and
        warned of, without a traceback, and the replies after it still go.
        """
        events = EventLoggingObserver()
        globalLogPublisher.addObserver(events)
        self.addCleanup(globalLogPublisher.removeObserver, events)
        protocol, sock, port = self.connect([(request(n), SOURCE) for n in (1, 2, 3)])
        # The first reply leaves at once; the second is refused.
        sock.refusals = [0, errno.ENOBUFS]
        port.doRead()
        sent = [sip.parse(e[1]) for e in sock.events if e[0] == "sent"]
        self.assertEqual([r.header("Call-ID") for r in sent], ["c1@127.0.0.12", "c3@127.0.0.12"])
        self.assertEqual(protocol.transactions.statistics["sendErrors"], 1)
        self.assertEqual(protocol.statistics["sent"], 2)
        self.assertEqual(self.flushLoggedErrors(), [])
        warnings = [e for e in events if "Could not send" in e.get("log_format", "")]
        self.assertEqual(len(warnings), 1)
        self.assertEqual(warnings[0]["what"], "response")

    def test_neverSendableRefusedAtOnce(self):
        """
        While a read holds what is sent, a datagram the socket could never
        send is refused when it is sent, with the reason a send would have
        given, and is not held: a client transaction learns at once.
        """
        protocol, sock, port = self.connect([])
        protocol.holdSends()
        protocol.datagramReceived(request(1), SOURCE)
        del sock.events[:]
        layer = protocol.transactions
        self.assertEqual(
            layer.transmit(b"x" * 65508, ("127.0.0.12", 5060), "response"), "Message Too Large"
        )
        self.assertEqual(layer.transmit(b"x", ("::1", 5060), "request"), "Unreachable Address")
        self.assertEqual(layer.transmit(b"x", ("node.example", 5060), "request"), "Unreachable Address")
        self.assertIsNone(layer.transmit(b"x" * 65507, ("127.0.0.12", 5060), "response"))
        self.assertEqual(sock.events, [])
        protocol.sendHeld()
        self.assertEqual([(e[0], len(e[1])) for e in sock.events], [("sent", 65507)])
        self.assertEqual(layer.statistics["sendErrors"], 3)

    def test_writeChecksTheAddress(self):
        """
        L{SIPPort.write} refuses a name, or an address of another family,
        as Twisted's port does, and sends nothing.
        """
        protocol, sock, port = self.connect([])
        self.assertRaises(InvalidAddressError, port.write, b"x", ("node.example", 5060))
        self.assertRaises(InvalidAddressError, port.write, b"x", ("::1", 5060))
        self.assertEqual(sock.events, [])
        port.write(b"x", SOURCE)
        self.assertEqual(sock.events, [("sent", b"x", SOURCE)])

    def test_writeErrors(self):
        """
        L{SIPPort.write} sends again when interrupted, says a datagram is
        too long with L{MessageLengthError}, ignores a refused port (an
        ICMP error of an earlier send) and raises any other error.
        """
        protocol, sock, port = self.connect([])
        sock.refusals = [errno.EINTR, 0, errno.EMSGSIZE, errno.ECONNREFUSED, errno.ENOBUFS]
        port.write(b"a", SOURCE)
        self.assertRaises(MessageLengthError, port.write, b"b", SOURCE)
        port.write(b"c", SOURCE)
        error = self.assertRaises(OSError, port.write, b"d", SOURCE)
        self.assertEqual(error.errno, errno.ENOBUFS)
        self.assertEqual(sock.events, [("sent", b"a", SOURCE)])

    def test_readFails(self):
        """
        When reading fails, what was held is still sent before the error
        goes on to the reactor.
        """
        protocol, sock, port = self.connect([(request(1), SOURCE), (request(2), SOURCE)])
        sock.fail = OSError(errno.EIO, "Input/output error")
        self.assertRaises(OSError, port.doRead)
        self.assertEqual([e[0] for e in sock.events], ["received", "sent", "received", "sent"])
        self.assertIsNone(protocol._held)


class ListenSIPTests(SynchronousTestCase):
    """
    L{listenSIP} on a reactor without Twisted's UDP port.
    """

    def test_otherReactor(self):
        """
        A reactor that is not a C{PosixReactorBase} (here a memory reactor)
        is asked to C{listenUDP}, with the protocol, interface and size.
        """
        asked = []

        @implementer(IReactorUDP)
        class UDPReactor(MemoryReactorClock):
            def listenUDP(self, *arguments):
                asked.append(arguments)
                return "the port"

        memory = UDPReactor()
        protocol = SIPDatagramProtocol(memory, ("127.0.0.11", 5060))
        self.assertEqual(listenSIP(memory, 5060, protocol, "127.0.0.11"), "the port")
        self.assertEqual(asked, [(5060, protocol, "127.0.0.11", MAX_DATAGRAM)])


class LoopbackUDPIntegrationTests(TestCase):
    """
    One real round trip over loopback UDP.
    """

    @defer.inlineCallbacks
    def test_roundTrip(self):
        """
        A request from one protocol reaches the other over a real socket and
        its reply comes back to the caller's Deferred.
        """
        server = SIPDatagramProtocol(reactor, ("127.0.0.11", 15060))
        client = SIPDatagramProtocol(reactor, ("127.0.0.12", 15060))
        body = "é".encode("utf-8") * 30000

        def echo(transaction):
            request = transaction.request
            assert request is not None
            transaction.respond(
                sip.responseFor(
                    request, 200, "OK", headers=[("Content-Type", "text/plain")], body=request.body[::-1], toTag="s"
                )
            )

        server.setHandler("KDMQ", echo)
        for protocol in (server, client):
            self.listen(protocol)
        request = sip.Request(
            "KDMQ",
            sip.URI("127.0.0.11", 15060, "echo"),
            (
                ("To", "<sip:echo@127.0.0.11:15060>"),
                ("From", "<sip:echo@127.0.0.12:15060>;tag=c"),
                ("CSeq", "10 KDMQ"),
                ("Call-ID", "loopback-1@127.0.0.12"),
                ("Max-Forwards", "1"),
                ("Content-Type", "text/plain"),
            ),
            body,
        )
        response = yield client.sendRequest(request, ("127.0.0.11", 15060))
        self.assertEqual(response.code, 200)
        self.assertEqual(response.body, body[::-1])
        self.assertEqual(len(body), 60000)

    def listen(self, protocol):
        host, port = protocol.sentBy
        listening = listenSIP(IReactorUDP(reactor), port, protocol, host)
        self.assertIsInstance(listening, SIPPort)
        self.addCleanup(listening.stopListening)
        self.addCleanup(protocol.stop)

    @defer.inlineCallbacks
    def test_unreachableNode(self):
        """
        A request to C{[::1]} from an IPv4 socket (a node line
        C{sip:[::1]:5060}) ends at once with a local C{408}, logs no
        traceback, and is not sent again.
        """
        client = SIPDatagramProtocol(reactor, ("127.0.0.12", 15060))
        self.listen(client)
        request = sip.Request(
            "KDMQ",
            sip.URI("::1", 5060, "notification_peer"),
            (
                ("To", "<sip:notification_peer@[::1]:5060>"),
                ("From", "<sip:notification_peer@127.0.0.12:15060>;tag=c"),
                ("CSeq", "10 KDMQ"),
                ("Call-ID", "unreachable-1@127.0.0.12"),
            ),
        )
        response = yield client.sendRequest(request, ("::1", 5060))
        self.assertEqual((response.code, response.reason), (408, "Unreachable Address"))
        self.assertEqual(client.transactions.liveClientTransactions, 0)
        self.assertEqual(client.transactions.statistics["retransmissionsSent"], 0)
        self.assertEqual(self.flushLoggedErrors(), [])

    @defer.inlineCallbacks
    def test_replyTooLong(self):
        """
        Over real sockets: a request of 65,488 octets arrives, and the
        reply that copies it cannot be sent: a counted drop, no traceback.
        """
        server = SIPDatagramProtocol(reactor, ("127.0.0.11", 15060))
        self.listen(server)
        answered: defer.Deferred[None] = defer.Deferred()

        def handler(transaction):
            transaction.reply(200, "OK", [("Content-Type", "text/plain")], b"x" * 100)
            answered.callback(None)

        server.setHandler("KDMQ", handler)
        callID = b"c1@127.0.0.12"
        request = KDMQ_REQUEST.replace(
            b"127.0.0.11:5060", b"127.0.0.11:15060"
        ).replace(b"127.0.0.12:5060", b"127.0.0.12:15061")
        request = request.replace(callID, b"c" * (65488 - len(request)) + callID)
        self.assertEqual(len(request), 65488)
        sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.addCleanup(sender.close)
        sender.bind(("127.0.0.12", 15061))
        sender.sendto(request, ("127.0.0.11", 15060))
        yield answered
        self.assertEqual(server.transactions.statistics["sendErrors"], 1)
        self.assertEqual(server.statistics["sent"], 0)
        self.assertEqual(self.flushLoggedErrors(), [])
