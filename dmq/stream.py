# -*- test-case-name: dmq.test.test_stream -*-
"""
SIP over TCP and TLS: messages framed by their Content-Length (RFC 3261
§18.3) on connections kept in a pool by peer address.

L{SIPStreamTransport} is a L{SIPMessageHandler} like the UDP transport, over
a reliable transport (no retransmissions, Timer F still bounds a send).  It
connects to a destination the first time a message goes there, reuses the
connection after, answers requests on the connection they came on, closes
connections idle for a while, and after a failed connection waits before
trying again (doubling the wait, up to L{MAX_BACKOFF}).  L{SIPStreamProtocol}
is one connection: its framing refuses what it cannot frame or what is over
the size limit by closing the connection, and tolerates CRLF keep-alives.

TLS is Twisted's, with the options of L{dmq.tls.TLSSettings}.
"""

from __future__ import annotations

import re
from typing import Any, Callable, Dict, List, Optional, Tuple, Union, cast

from twisted.internet.defer import Deferred, DeferredList, succeed
from twisted.internet.error import ConnectError, MessageLengthError
from twisted.internet.address import IPv4Address, IPv6Address
from twisted.internet.interfaces import (
    IDelayedCall,
    IProtocol,
    IReactorTime,
    IStreamClientEndpoint,
    IStreamServerEndpoint,
)
from twisted.internet.protocol import Factory, Protocol
from twisted.logger import Logger
from twisted.python.failure import Failure

from dmq import sip
from dmq.transaction import T1, T2, T4
from dmq.tls import TLSSettings
from dmq.transport import Address, SIPMessageHandler, _stampVia

__all__ = [
    "SIPStreamProtocol",
    "SIPStreamTransport",
    "MAX_MESSAGE",
    "IDLE_TIMEOUT",
    "MAX_BACKOFF",
]

MAX_MESSAGE = 1024 * 1024
"""The default limit on one message over a stream, in octets."""

IDLE_TIMEOUT = 120.0
"""
Seconds a connection may carry nothing before it is closed: Kamailio's
C{tcp_connection_lifetime}.
"""

MESSAGE_TIMEOUT = 32.0
"""
Seconds a message, once begun, has to arrive whole (64*T1): a sender that
trickles bytes to keep a connection from being idle is closed all the same.
"""

FIRST_BACKOFF = 1.0
MAX_BACKOFF = 32.0
"""
After a failed connection, sends to that address fail at once for
L{FIRST_BACKOFF} seconds, doubling with each failure up to this.
"""

MAX_QUEUED = 256
"""Messages waiting for one connection to open; more are refused."""

MAX_CONNECTIONS = 1024
"""
The default cap on connections, open and being opened, both ways: an
accepted one past it is closed at once, a send that would open one fails.
"""

_CONTENT_LENGTH = re.compile(
    rb"^(?:content-length|l)[ \t]*:[ \t]*([^\r\n]*?)[ \t]*\r?$", re.IGNORECASE | re.MULTILINE
)


class FramingError(ValueError):
    """
    A stream carries something that cannot be framed into SIP messages.
    """


def contentLength(head: bytes) -> int:
    """
    The Content-Length of a message whose start line and headers are
    C{head} (without the blank line): mandatory over a stream, and one
    value however often it is given.

    @raise FramingError: if it is missing, not a number, or given twice
        with two values.
    """
    values = {m.group(1) for m in _CONTENT_LENGTH.finditer(head)}
    if not values:
        raise FramingError("no Content-Length")
    if len(values) > 1:
        raise FramingError("two Content-Lengths")
    (text,) = values
    if not text.isdigit() or len(text) > 10:
        raise FramingError("Content-Length is not a number")
    return int(text)


class SIPStreamProtocol(Protocol):
    """
    One connection of a L{SIPStreamTransport}: bytes framed into messages.

    @ivar address: the peer's C{(host, port)}, the connection's key in the
        pool.
    """

    _log = Logger()

    def __init__(self, owner: SIPStreamTransport, outbound: Optional[Address] = None) -> None:
        self._owner = owner
        self._clock = owner._clock
        self._outbound = outbound
        self.address: Address = outbound or ("", 0)
        self._buffer = bytearray()
        # The length of the message being read, once its headers are; and
        # how much of the buffer has been searched for their end.
        self._total: Optional[int] = None
        self._scanned = 0
        self._idle: Optional[IDelayedCall] = None
        self._partial: Optional[IDelayedCall] = None
        self.closed: Deferred[None] = Deferred()
        self.lost = False
        self.receivedAny = False

    def connectionMade(self) -> None:
        # Told when the peer reads too slowly (pauseProducing): what we
        # write meanwhile is counted, and bounded.
        self._paused = False
        self._unread = 0
        self.transport.registerProducer(self, True)  # type: ignore[union-attr]
        if self._outbound is None:
            # A TCP connection's (TLS too): IAddress says no more than that.
            peer = cast(Union[IPv4Address, IPv6Address], self.transport.getPeer())  # type: ignore[union-attr]
            self.address = (peer.host, peer.port)
        self._idle = self._clock.callLater(self._owner.idleTimeout, self._timedOut, "idle")
        self._owner._connectionMade(self)

    def pauseProducing(self) -> None:
        self._paused = True
        self._unread = 0

    def resumeProducing(self) -> None:
        self._paused = False

    def stopProducing(self) -> None:
        pass

    def write(self, data: bytes) -> None:
        """
        Send C{data}, one message, and count the connection as busy.  A
        peer that has stopped reading may be written at most
        L{SIPStreamTransport.maxUnread} octets more before the connection
        is closed.
        """
        if self._paused:
            self._unread += len(data)
            if self._unread > self._owner.maxUnread:
                self._refuse("slowReader", f"over {self._owner.maxUnread} octets it does not read")
                return
        self.transport.write(data)  # type: ignore[union-attr]
        if self._idle is not None and self._idle.active():
            self._idle.reset(self._owner.idleTimeout)

    def close(self) -> None:
        """
        Close the connection now; what is queued for it may be lost.
        """
        transport = self.transport
        if transport is not None and not self.lost:
            abort = getattr(transport, "abortConnection", None)
            if abort is not None:
                abort()
            else:
                transport.loseConnection()

    def dataReceived(self, data: bytes) -> None:
        self.receivedAny = True
        if self._idle is not None and self._idle.active():
            self._idle.reset(self._owner.idleTimeout)
        buffer = self._buffer
        buffer += data
        limit = self._owner.maxMessage
        while buffer:
            if self._total is None and self._scanned == 0 and buffer.startswith((b"\r", b"\n")):
                # CRLF keep-alives (RFC 5626 §3.5.1) between messages: a
                # double CRLF ping is answered with a single CRLF pong; a
                # lone CRLF is ignored.
                if buffer[:4] == b"\r\n\r\n":
                    del buffer[:4]
                    self.write(b"\r\n")
                    continue
                # A bytearray equals the bytes it holds (mypy's strict bytes says never).
                if buffer in (b"\r", b"\r\n", b"\r\n\r"):  # type: ignore[comparison-overlap]
                    break
                del buffer[: 2 if buffer[:2] == b"\r\n" else 1]
                continue
            if self._total is None:
                # Each byte is searched once for the end of the headers,
                # however slowly they come.
                end = buffer.find(b"\r\n\r\n", max(0, self._scanned - 3))
                if end < 0:
                    self._scanned = len(buffer)
                    if len(buffer) > limit:
                        self._refuse("oversize", f"no end of headers within {limit} octets")
                        return
                    break
                try:
                    length = contentLength(bytes(buffer[:end]))
                except FramingError as e:
                    self._refuse("unframable", str(e))
                    return
                self._total = end + 4 + length
                if self._total > limit:
                    self._refuse("oversize", f"a message of {self._total} octets, over {limit}")
                    return
            total = self._total
            if len(buffer) < total:
                break
            message = bytes(buffer[:total])
            del buffer[:total]
            self._total = None
            self._scanned = 0
            self._owner.messageReceived(message, self.address)
            if self.lost:
                return
        if buffer.strip(b"\r\n"):
            if self._partial is None:
                self._partial = self._clock.callLater(
                    self._owner.messageTimeout, self._timedOut, "slow"
                )
        elif self._partial is not None:
            self._partial.cancel()
            self._partial = None

    def _refuse(self, cause: str, reason: str) -> None:
        """
        The stream cannot be read any further: count, warn and close.
        """
        self._owner._dropped(cause, reason, self.address)
        self._buffer.clear()
        self._total = None
        self._scanned = 0
        self.close()

    def _timedOut(self, why: str) -> None:
        if why == "idle":
            self._idle = None
            self._owner.statistics["idleClosed"] += 1
        else:
            self._partial = None
            self._owner._dropped(
                "slowSender", f"no whole message within {self._owner.messageTimeout} s", self.address
            )
        self.close()

    def connectionLost(self, reason: Failure = None) -> None:  # type: ignore[assignment]
        self.lost = True
        for timer in (self._idle, self._partial):
            if timer is not None and timer.active():
                timer.cancel()
        self._idle = self._partial = None
        self._owner._connectionLost(self, reason)
        self.closed.callback(None)


def peerCommonName(protocol: SIPStreamProtocol) -> Optional[str]:
    """
    The subject common name of the certificate the peer of C{protocol}
    presented over TLS, or C{None} (no TLS, no certificate yet).
    """
    getCertificate = getattr(protocol.transport, "getPeerCertificate", None)
    if getCertificate is None:
        return None
    certificate = getCertificate()
    if certificate is None:
        return None
    # pyOpenSSL's X509Name: None when the subject has no CN.
    name: Optional[str] = certificate.get_subject().commonName
    return name


class SIPStreamTransport(SIPMessageHandler):
    """
    SIP over TCP or TLS (see the module's docstring).

    @ivar name: C{"tcp"} or C{"tls"}.
    @ivar connections: the open connections, by peer address.
    @ivar statistics: beside L{SIPMessageHandler}'s, C{connectionsOpened},
        C{connectionsAccepted}, C{connectFailures}, C{idleClosed},
        C{oversize}, C{unframable}, C{slowSender}, C{slowReader}
        (connections closed for what they carried, or did not read),
        C{queueFull}, C{connectionsRefused} (accepted
        past L{MAX_CONNECTIONS}, and closed).
    """

    _log = Logger()

    def __init__(
        self,
        reactor: IReactorTime,
        sentBy: Address,
        name: str = "tcp",
        tls: Optional[TLSSettings] = None,
        T1: float = T1,
        T2: float = T2,
        T4: float = T4,
        maxTransactions: int = 10000,
        maxMessage: int = MAX_MESSAGE,
        idleTimeout: float = IDLE_TIMEOUT,
        messageTimeout: float = MESSAGE_TIMEOUT,
        maxConnections: int = MAX_CONNECTIONS,
        endpointFor: Optional[Callable[[Address], IStreamClientEndpoint]] = None,
        bindHost: Optional[str] = None,
    ) -> None:
        """
        @param reactor: the clock and, unless C{endpointFor} is given, the
            reactor to connect with.
        @param bindHost: the IP our connections come from: the node's own,
            as Kamailio's do, since the nodes we connect to know us as a
            member by the source IP (the port of a connection is any).
        @param endpointFor: makes the client endpoint for a destination;
            by default TCP, or TLS with C{tls}'s client options.
        """
        if name not in ("tcp", "tls"):
            raise ValueError(f"no stream transport {name!r}")
        if name == "tls" and tls is None:
            raise ValueError("TLS needs a certificate and key (TLSSettings)")
        SIPMessageHandler.__init__(
            self,
            reactor,
            sentBy,
            T1=T1,
            T2=T2,
            T4=T4,
            maxTransactions=maxTransactions,
            transport=name.upper(),
            reliable=True,
        )
        self.name = name
        self._reactor = reactor
        self._tls = tls
        self.maxMessage = maxMessage
        self.idleTimeout = idleTimeout
        self.messageTimeout = messageTimeout
        self.maxConnections = maxConnections
        self.maxUnread = 4 * maxMessage
        self._endpointFor = endpointFor or self._defaultEndpoint
        self._bindHost = bindHost
        self.connections: Dict[Address, SIPStreamProtocol] = {}
        self._connecting: Dict[Address, Tuple[Deferred[IProtocol], List[bytes]]] = {}
        # address: (until when sends fail at once, the wait after the next failure)
        self._backoff: Dict[Address, Tuple[float, float]] = {}
        self._all: List[SIPStreamProtocol] = []
        self._stopping = False
        self._stopped = False

    @property
    def openConnections(self) -> int:
        """
        The connections open now, both ways: those L{maxConnections} caps,
        but for those being opened.
        """
        return len(self._all)

    def _defaultEndpoint(self, address: Address) -> IStreamClientEndpoint:
        # Imported only by a node that connects: a plain node does without.
        from twisted.internet import endpoints

        host, port = address
        bind = self._bindHost
        bindAddress = (bind, 0) if bind is not None and (":" in bind) == (":" in host) else None
        endpoint: IStreamClientEndpoint
        if ":" in host:
            endpoint = endpoints.TCP6ClientEndpoint(self._reactor, host, port, timeout=10, bindAddress=bindAddress)
        else:
            endpoint = endpoints.TCP4ClientEndpoint(self._reactor, host, port, timeout=10, bindAddress=bindAddress)
        if self._tls is not None:
            return endpoints.wrapClientTLS(self._tls.clientOptions(host), endpoint)
        return endpoint

    def serverFactory(self) -> Factory:
        """
        The factory of our listening port's connections.
        """
        return Factory.forProtocol(lambda: SIPStreamProtocol(self))

    # reactor: Any, an IReactorTCP (IReactorSSL too for TLS), as in dmq.service.
    def serverEndpoint(self, reactor: Any, address: Address) -> IStreamServerEndpoint:
        """
        The server endpoint to listen on at C{address}: TCP, or TLS with
        our server options.
        """
        from twisted.internet import endpoints

        host, port = address
        if self._tls is not None:
            return endpoints.SSL4ServerEndpoint(
                reactor, port, self._tls.serverOptions(), interface=host
            )
        if ":" in host:
            return endpoints.TCP6ServerEndpoint(reactor, port, interface=host)
        return endpoints.TCP4ServerEndpoint(reactor, port, interface=host)

    def peerCommonName(self, address: Address) -> Optional[str]:
        """
        The subject common name of the certificate the peer at C{address}
        presented, for admission: C{None} when there is no such connection
        or no certificate.
        """
        connection = self.connections.get(address)
        return None if connection is None else peerCommonName(connection)

    def _stamped(self, message: sip.Request, address: Address) -> sip.Request:
        # Replies go back on the connection the request came on: its
        # address is the source, so the Via gets rport (and received).
        return _stampVia(message, address, forceRport=True)

    def _send(self, data: bytes, address: Address) -> None:
        if len(data) > self.maxMessage:
            # As the peer would refuse it: fail the send at once.
            raise MessageLengthError(f"{len(data)} octets, over the limit of {self.maxMessage}")
        connection = self.connections.get(address)
        if connection is not None:
            connection.write(data)
            self.statistics["sent"] += 1
            return
        pending = self._connecting.get(address)
        if pending is not None:
            if len(pending[1]) >= MAX_QUEUED:
                self.statistics["queueFull"] += 1
                raise OSError(f"{MAX_QUEUED} messages wait for the connection already")
            pending[1].append(data)
            return
        backoff = self._backoff.get(address)
        now = self._clock.seconds()
        if backoff is not None and backoff[0] > now:
            raise ConnectError(
                string=f"the last connection failed; trying again in {backoff[0] - now:.1f} s"
            )
        if len(self._all) + len(self._connecting) >= self.maxConnections:
            raise ConnectError(string=f"{self.maxConnections} connections are open, the most allowed")
        self._connect(address, data)

    def _connect(self, address: Address, data: bytes) -> None:
        queue = [data]
        try:
            endpoint = self._endpointFor(address)
        except Exception as e:
            raise ConnectError(string=f"cannot connect to {address}: {e}") from None
        d = endpoint.connect(Factory.forProtocol(lambda: SIPStreamProtocol(self, address)))
        self._connecting[address] = (d, queue)

        def connected(protocol: SIPStreamProtocol) -> None:
            self._connecting.pop(address, None)
            self._backoff.pop(address, None)
            for message in queue:
                protocol.write(message)
                self.statistics["sent"] += 1

        def failed(failure: Failure) -> None:
            if self._connecting.get(address, (None,))[0] is d:
                del self._connecting[address]
            if not self._stopping:
                self._connectFailed(address, failure)

        d.addCallbacks(connected, failed)

    def start(self) -> None:
        """
        Take transactions and connections again after L{stop}.
        """
        SIPMessageHandler.start(self)
        self._stopped = False

    def _connectionMade(self, protocol: SIPStreamProtocol) -> None:
        if self._stopped:
            # Accepted while the node stops: nothing would close it.
            protocol.close()
            return
        if protocol._outbound is None and len(self._all) >= self.maxConnections:
            self._dropped(
                "connectionsRefused",
                f"{self.maxConnections} connections are open, the most allowed",
                protocol.address,
            )
            protocol.close()
            return
        self._all.append(protocol)
        if protocol._outbound is None:
            self.statistics["connectionsAccepted"] += 1
        else:
            self.statistics["connectionsOpened"] += 1
        old = self.connections.get(protocol.address)
        if old is None or old.lost:
            self.connections[protocol.address] = protocol

    def _connectionLost(self, protocol: SIPStreamProtocol, reason: Optional[Failure]) -> None:
        if protocol in self._all:
            self._all.remove(protocol)
        if self.connections.get(protocol.address) is protocol:
            del self.connections[protocol.address]
        if protocol._outbound is None:
            return
        if protocol.receivedAny:
            # Nothing more comes on it: what waits for an answer there
            # has none coming (RFC 3261 §18.4).
            self.transactions.failDestination(protocol.address, "Connection Lost")
        elif reason is not None:
            # Closed before a byte came back: over TLS, the handshake failed.
            self._connectFailed(protocol.address, reason)

    def _connectFailed(self, address: Address, failure: Failure) -> None:
        """
        No connection to C{address}: back off, warn, and end what waits on
        it with a C{408 Connection Failed}.
        """
        self.statistics["connectFailures"] += 1
        previous = self._backoff.get(address)
        wait = FIRST_BACKOFF if previous is None else min(previous[1], MAX_BACKOFF)
        self._backoff[address] = (self._clock.seconds() + wait, min(2 * wait, MAX_BACKOFF))
        self._warnings.warn(
            f"connect {self.name}",
            "Could not connect over {transport} to {address}: {error}",
            transport=self.name.upper(),
            address=address,
            error=failure.getErrorMessage(),
        )
        self.transactions.failDestination(address, "Connection Failed")

    def _dropped(self, cause: str, reason: str, address: Address) -> None:
        self.statistics[cause] += 1
        self._warnings.warn(
            cause,
            "Closed the {transport} connection of {address}: {reason}",
            transport=self.name.upper(),
            address=address,
            reason=reason,
        )

    def stop(self) -> Deferred[None]:
        """
        End every transaction, give up every connection being opened and
        close every open one.

        @return: a L{Deferred} that fires once every connection is closed.
        """
        SIPMessageHandler.stop(self)
        self._stopped = True
        self._stopping = True
        for d, _ in list(self._connecting.values()):
            d.cancel()
        self._connecting.clear()
        self._backoff.clear()
        closing = [protocol.closed for protocol in self._all if not protocol.lost]
        for protocol in list(self._all):
            protocol.close()
        self._stopping = False
        if not closing:
            return succeed(None)
        return DeferredList(closing).addCallback(lambda _: None)
