# -*- test-case-name: dmq.test.test_transport -*-
"""
The SIP transport over UDP: bytes in and out of one socket, parsed and handed
to the transaction layer.

L{SIPDatagramProtocol} never lets an exception out of C{datagramReceived}.
Malformed requests are answered C{400 <reason>} when they carry enough to be
answered, and everything else that cannot be used is dropped and counted, with
one rate-limited warning per cause.
"""

from __future__ import annotations

import errno
import socket
from collections import Counter
from typing import Callable, Dict, List, Optional, Tuple

from twisted.internet import udp
from twisted.internet.defer import Deferred, gatherResults, succeed
from twisted.internet.error import InvalidAddressError, MessageLengthError
from twisted.internet.interfaces import IListeningPort, IReactorTime, IReactorUDP
from twisted.internet.posixbase import PosixReactorBase
from twisted.internet.protocol import DatagramProtocol
from twisted.logger import Logger

from dmq import sip
from dmq.transaction import (
    T1,
    T2,
    T4,
    ServerTransaction,
    TransactionLayer,
    responseAddress,
)
from dmq.ratelimit import RateLimitedWarnings

__all__ = [
    "SIPMessageHandler",
    "SIPDatagramProtocol",
    "SIPPort",
    "listenSIP",
    "MAX_DATAGRAM",
    "KDMQ",
    "RateLimitedWarnings",
]

KDMQ = "KDMQ"

# The largest UDP payload; Twisted's listenUDP truncates at 8192 bytes unless
# told otherwise.
MAX_DATAGRAM = 65535

RECEIVE_BUFFER = 256 * 1024

# The largest payload one UDP datagram carries over each family: what
# sendto refuses with EMSGSIZE past it.
_MAX_PAYLOAD = {socket.AF_INET: 65507, socket.AF_INET6: 65527}


def _isAddress(family: int, host: object) -> bool:
    """
    Whether C{host} is an IP address of C{family}, as C{sendto} takes it.
    """
    try:
        socket.inet_pton(family, host)  # type: ignore[arg-type]
    except (OSError, TypeError, ValueError):
        return False
    return True

Address = Tuple[str, int]
RequestHandler = Callable[[ServerTransaction], None]


class SIPMessageHandler:
    """
    What every SIP transport does with the messages it receives, whatever
    carries them: parse and check them, hand them to its
    L{TransactionLayer}, answer or drop what is malformed.  A transport
    gives L{messageReceived} each message and implements C{_send}.

    Requests that pass the transaction layer (new ones, not retransmissions)
    go to the handler registered for their method with L{setHandler}.  A
    method without one is answered C{405} with C{Allow: KDMQ}; KDMQ itself,
    when no bus has registered for it, gets C{404 User Not Found}, since no
    peer can exist.

    @ivar transactions: the L{TransactionLayer}.
    @ivar statistics: a C{Counter} of what happened to messages:
        C{received}, C{sent}, C{malformed}, C{badRequests} (answered 400),
        C{unanswerable}, C{unmatchedResponses}, C{internalErrors}.  A
        datagram that could not be sent counts in the transaction layer's
        C{sendErrors}.
    """

    _log = Logger()

    def __init__(
        self,
        clock: IReactorTime,
        sentBy: Address,
        T1: float = T1,
        T2: float = T2,
        T4: float = T4,
        maxTransactions: int = 10000,
        transport: str = "UDP",
        reliable: bool = False,
    ) -> None:
        """
        @param clock: where all timers run.
        @param sentBy: the C{(host, port)} we listen on and advertise in Via.
        @param maxTransactions: the cap on live client transactions and, apart
            from it, on live server transactions.
        @param transport: the Via transport token: C{UDP}, C{TCP}, C{TLS}.
        @param reliable: whether the transport is reliable (RFC 3261 §17:
            no retransmissions, no Timers J and K).
        """
        self._clock = clock
        self.sentBy = sentBy
        self._handlers: Dict[str, RequestHandler] = {}
        self.statistics: Counter[str] = Counter()
        self._warnings = RateLimitedWarnings(clock, self._log)
        self.transactions = TransactionLayer(
            clock,
            self._send,
            self._requestReceived,
            sentBy,
            transport=transport,
            reliable=reliable,
            T1=T1,
            T2=T2,
            T4=T4,
            maxTransactions=maxTransactions,
            warnings=self._warnings,
        )

    def setHandler(self, method: str, handler: Optional[RequestHandler]) -> None:
        """
        Hand new requests of C{method} to C{handler}, which must answer each
        through L{ServerTransaction.reply} or L{ServerTransaction.respond};
        C{None} removes it.
        """
        if handler is None:
            self._handlers.pop(method, None)
        else:
            self._handlers[method] = handler

    def sendRequest(self, request: sip.Request, destination: Address) -> Deferred[sip.Response]:
        """
        Send C{request} in a new client transaction.

        @return: a L{Deferred} firing with the final L{sip.Response} (a local
            C{408} on timeout, or at once when C{destination} cannot be sent
            to); see L{TransactionLayer.request}.
        """
        return self.transactions.request(request, destination)

    def start(self) -> None:
        """
        Take transactions again after L{stop}.
        """
        self.transactions.start()

    def stop(self) -> Deferred[None]:
        """
        End every transaction; see L{TransactionLayer.stop}.
        """
        return self.transactions.stop()

    def _send(self, data: bytes, address: Address) -> None:
        raise NotImplementedError()

    def _stamped(self, message: sip.Request, address: Address) -> sip.Request:
        """
        C{message} with its top Via stamped, if it needs it, so that its
        replies go back where it came from (L{_stampVia}).
        """
        if _needsStamp(message.via[0], address[0]):
            return _stampVia(message, address)
        return message

    def messageReceived(self, data: bytes, address: Address) -> None:
        """
        Parse and check a message, and hand it to the transaction layer;
        answer C{400} or drop it when it is malformed (L{_malformed}).
        Nothing is raised: an exception here is a bug, logged.
        """
        self.statistics["received"] += 1
        try:
            try:
                message = sip.parse(data)
            except sip.SIPParseError as e:
                self._malformed(e, e.headers, address)
                return
            if isinstance(message, sip.Response):
                self._responseReceived(message, address)
                return
            try:
                sip.checkRequest(message)
            except sip.SIPParseError as e:
                self._malformed(e, message.headers, address)
                return
            self.transactions.handleRequest(self._stamped(message, address), address)
        except Exception:
            # A bug, not bad input: bad input is handled without raising.
            self.statistics["internalErrors"] += 1
            self._log.failure(
                "Unexpected error handling a message from {address}", address=address
            )


    def _responseReceived(self, response: sip.Response, address: Address) -> None:
        try:
            response.via
            response.cseq
        except sip.SIPParseError as e:
            self._malformed(e, None, address)
            return
        if not self.transactions.handleResponse(response, address):
            self.statistics["unmatchedResponses"] += 1

    def _malformed(
        self, error: sip.SIPParseError, headers: Optional[sip.Headers], address: Address
    ) -> None:
        """
        Answer C{400} to a request that failed to parse or check, when it
        can be addressed (from C{headers}, those read); drop anything else.
        Either way, count it and warn once per cause a minute.
        """
        self.statistics["malformed"] += 1
        if headers is not None and self._answerBadRequest(error.reason, headers, address):
            self._warnings.warn(
                error.reason,
                "Answered a malformed request from {address} with 400: {cause}",
                address=address,
            )
            return
        self.statistics["unanswerable"] += 1
        self._warnings.warn(
            error.reason,
            "Dropped a malformed datagram from {address}: {cause}",
            address=address,
        )

    def _answerBadRequest(self, reason: str, headers: sip.Headers, address: Address) -> bool:
        """
        Answer C{400 reason} to a request that failed to parse or check,
        statelessly, if its top Via can be read, back where it came from
        (L{responseAddress}): never to a host its Via names.
        """
        partial = sip.Request("INVALID", sip.URI("invalid"), headers)
        try:
            topVia = partial.via[0]
        except sip.SIPParseError:
            return False
        if any(name == "CSeq" and value.endswith(" ACK") for name, value in headers):
            # ACK is never answered.
            return False
        partial = self._stamped(partial, address)
        topVia = partial.via[0]
        data = sip.serialiseReply(partial, 400, reason, toTag=sip.newTag())
        if self.transactions.transmit(data, responseAddress(topVia, address), "response"):
            return False
        self.statistics["badRequests"] += 1
        return True

    def _requestReceived(self, transaction: ServerTransaction) -> None:
        method = transaction.method
        handler = self._handlers.get(method)
        if handler is not None:
            handler(transaction)
        elif method == KDMQ:
            transaction.reply(404, "User Not Found")
        else:
            transaction.reply(
                405,
                "Method Not Allowed",
                headers=[("Allow", ", ".join(sorted({KDMQ, *self._handlers})))],
            )



class SIPDatagramProtocol(SIPMessageHandler, DatagramProtocol):
    """
    SIP over one UDP socket (L{SIPMessageHandler}).

    Requests whose Request-URI names another transport (C{;transport=tcp}
    or C{tls}) go through the stream transport added for it with
    L{addStream}, so that the bus has one way out whatever the node's
    transport; one with no such transport is answered at once with a local
    C{408 Unsupported Transport}, never sent over UDP.

    @ivar streams: the stream transports, by lower-case name.
    """

    def __init__(
        self,
        clock: IReactorTime,
        sentBy: Address,
        T1: float = T1,
        T2: float = T2,
        T4: float = T4,
        maxTransactions: int = 10000,
        transport: str = "UDP",
        reliable: bool = False,
    ) -> None:
        SIPMessageHandler.__init__(
            self, clock, sentBy, T1, T2, T4, maxTransactions, transport, reliable
        )
        self.streams: Dict[str, SIPMessageHandler] = {}

    def addStream(self, name: str, stream: SIPMessageHandler) -> None:
        """
        Send requests for nodes of transport C{name} (C{"tcp"}, C{"tls"})
        through C{stream}, and hand it our request handlers.
        """
        self.streams[name] = stream
        stream._handlers = self._handlers

    def sendRequest(self, request: sip.Request, destination: Address) -> Deferred[sip.Response]:
        """
        Send C{request} in a new client transaction of the transport its
        Request-URI names.

        @return: a L{Deferred} firing with the final L{sip.Response} (a local
            C{408} on timeout, or at once when C{destination} cannot be sent
            to); see L{TransactionLayer.request}.
        """
        transport = request.uri.transport
        if transport is None or transport == "udp":
            return self.transactions.request(request, destination)
        stream = self.streams.get(transport.lower())
        if stream is None:
            self.statistics["unsupportedTransport"] += 1
            self._warnings.warn(
                f"transport {transport}",
                "No {transport} transport: {method} to {destination} not sent",
                transport=transport,
                method=request.method,
                destination=destination,
            )
            return succeed(sip.responseFor(request, 408, "Unsupported Transport"))
        return stream.sendRequest(request, destination)

    def peerCommonName(self, address: Address) -> Optional[str]:
        """
        For admission: the subject common name of the certificate the peer
        at C{address} (a request's source) presented over TLS, or C{None}
        (not TLS, or no such connection).
        """
        for stream in self.streams.values():
            # Only the stream transports (dmq.stream, which imports us) have it.
            name: Optional[str] = getattr(stream, "peerCommonName", lambda address: None)(address)
            if name is not None:
                return name
        return None

    def start(self) -> None:
        SIPMessageHandler.start(self)
        for stream in self.streams.values():
            stream.start()

    def stop(self) -> Deferred[None]:
        SIPMessageHandler.stop(self)
        return gatherResults(
            [stream.stop() for stream in self.streams.values()]
        ).addCallback(lambda _: None)

    def startProtocol(self) -> None:
        self.transactions.start()
        self._family = getattr(self.transport, "addressFamily", socket.AF_INET)
        # As Kamailio does (its maxbuffer, 256 KiB, which Linux doubles):
        # the default 208 KiB holds about 120 KDMQ requests, and a burst
        # past that is dropped and waits for the sender's retransmission.
        sock = getattr(self.transport, "socket", None)
        if sock is not None:
            try:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RECEIVE_BUFFER)
            except OSError:
                pass

    def stopProtocol(self) -> None:
        # The port is gone: nothing can be sent or answered any more.
        self.transactions.stop()

    _held: Optional[List[Tuple[bytes, Address]]] = None
    _reading = False
    _family = socket.AF_INET

    def _send(self, data: bytes, address: Address) -> None:
        if self.transport is None:
            raise OSError("the SIP socket is not listening")
        held = self._held
        if held is None:
            self.transport.write(data, address)
            self.statistics["sent"] += 1
            return
        # Refuse now what the socket would refuse at once, as the send
        # would: the caller learns that it can never be sent.
        family = self._family
        if len(data) > _MAX_PAYLOAD[family]:
            raise MessageLengthError("message too long")
        if not _isAddress(family, address[0]):
            raise InvalidAddressError(address[0], "not an address of this socket's family")
        held.append((data, address))

    def holdSends(self) -> None:
        """
        Hold what is sent from the end of the next datagram received until
        L{sendHeld}.

        L{SIPPort} calls it before it reads the datagrams waiting on the
        socket, and L{sendHeld} once they are all handled, so that the
        replies to a burst of requests leave in a burst after it.  A sender
        asleep on its socket is woken once for the burst rather than once
        a reply, and the kernel charges those wake-ups to the node's
        C{sendto}: measured with C{bench/bus.py} at 64 requests in flight,
        a third of the node's time went to C{sendto} before.  What the
        first datagram of a read makes us send leaves at once: a lone
        request (the usual case on a quiet bus) is answered without
        waiting for the read that finds nothing more.

        What is held is bounded by what one read handles (Twisted's
        C{Port.maxThroughput}, 256 KiB of datagrams).  A datagram the
        socket could never send (too large, an address of another family)
        is refused when it is sent, not held; one the socket refuses when
        the hold ends counts and is logged as any failed send
        (L{TransactionLayer.sendFailed}).
        """
        self._reading = True

    def sendHeld(self) -> None:
        """
        Send what was held since L{holdSends}, in the order it was sent, and
        stop holding.
        """
        self._reading = False
        held, self._held = self._held, None
        if not held:
            return
        for data, address in held:
            try:
                if self.transport is None:
                    raise OSError("the SIP socket is not listening")
                self.transport.write(data, address)
            except Exception as e:
                what = "response" if data.startswith(b"SIP/2.0 ") else "request"
                self.transactions.sendFailed(e, address, what)
            else:
                self.statistics["sent"] += 1

    def datagramReceived(self, data: bytes, address: Address) -> None:
        """
        One datagram is one message: see L{SIPMessageHandler.messageReceived}.
        """
        self.messageReceived(data, address)
        if self._reading and self._held is None:
            self._held = []


class SIPPort(udp.Port):
    """
    A UDP port for a L{SIPDatagramProtocol} that sends what the protocol
    sends while the port reads once the read is over (see
    L{SIPDatagramProtocol.holdSends}).  L{listenSIP} makes one.
    """

    protocol: SIPDatagramProtocol

    def write(self, datagram: bytes, addr: Optional[Address] = None) -> None:
        """
        Send C{datagram} to C{addr} as Twisted's port does, the address
        checked with one C{inet_pton} rather than three of Twisted's checks
        (a microsecond a reply on CPython); anything else, and an address
        that fails, goes to Twisted's C{write}, which raises what it raises.
        """
        if addr is None or self._connectedAddr or not _isAddress(self.addressFamily, addr[0]):
            udp.Port.write(self, datagram, addr)
            return
        while True:
            try:
                self.socket.sendto(datagram, addr)
                return
            except OSError as e:
                if e.errno == errno.EINTR:
                    continue
                if e.errno == errno.EMSGSIZE:
                    raise MessageLengthError("message too long") from None
                if e.errno == errno.ECONNREFUSED:
                    # A port unreachable from an earlier send, as Twisted
                    # ignores it on an unconnected socket.
                    return
                raise

    def doRead(self) -> None:
        self.protocol.holdSends()
        try:
            udp.Port.doRead(self)  # type: ignore[no-untyped-call]
        finally:
            self.protocol.sendHeld()


def listenSIP(
    reactor: IReactorUDP,
    port: int,
    protocol: SIPDatagramProtocol,
    interface: str = "",
    maxPacketSize: int = MAX_DATAGRAM,
) -> IListeningPort:
    """
    Listen for SIP over UDP on C{interface}:C{port} with C{protocol}: with a
    L{SIPPort} on the reactors that Twisted gives a L{udp.Port} (epoll,
    poll, select: L{PosixReactorBase}), with C{reactor.listenUDP} on
    others, where replies leave one at a time.

    @raise twisted.internet.error.CannotListenError: when the address is
        taken or cannot be bound.
    """
    if isinstance(reactor, PosixReactorBase):
        listening = SIPPort(port, protocol, interface, maxPacketSize, reactor)  # type: ignore[no-untyped-call]
        listening.startListening()  # type: ignore[no-untyped-call]
        return listening
    return reactor.listenUDP(port, protocol, interface, maxPacketSize)


def _needsStamp(via: sip.Via, host: str) -> bool:
    """
    Whether the top Via C{via} of a request from C{host} needs stamping
    (L{_stampVia}): its sent-by is not the source address, or it has a
    C{received} or C{rport} its sender wrote.  Kamailio's Vias need none.
    """
    if via.host != host:
        return True
    for name, _ in via.parameters:
        lowered = name.lower()
        if lowered == "received" or lowered == "rport":
            return True
    return False


def _stampVia(
    request: sip.Request, source: Address, forceRport: bool = False
) -> sip.Request:
    """
    Stamp the top Via with where the request came from, so that replies go
    back there and nowhere else: C{received} (RFC 3261 §18.2.1) when the
    sent-by host is not the source address, and C{rport} (RFC 3581) set to
    the source port when the Via has one.  A C{received} or an C{rport}
    value the sender wrote itself is replaced, never believed.

    @param forceRport: add C{rport} when the Via has none: over a stream,
        the source is the connection, where replies go back (RFC 3261
        §18.2.2).
    """
    via = request.via[0]
    host, port = source
    parameters: List[Tuple[str, Optional[str]]] = []
    if forceRport and via.rport is None:
        parameters.append(("rport", str(port)))
    for name, value in via.parameters:
        lowered = name.lower()
        if lowered == "received":
            continue
        if lowered == "rport":
            value = str(port)
        parameters.append((name, value))
    if via.host != host:
        parameters.append(("received", host))
    stamped = sip.Via(via.transport, via.host, via.port, tuple(parameters))
    headers = list(request.headers)
    for i, (name, _) in enumerate(headers):
        if name == "Via":
            headers[i] = ("Via", stamped.toString())
            break
    return sip.Request(request.method, request.uri, tuple(headers), request.body)
