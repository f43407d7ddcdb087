# -*- test-case-name: dmq.test.test_control -*-
"""
The control endpoint over HTTP: L{ControlResource}, which answers JSON-RPC
at C{POST /RPC} from an L{RPCMethods} table, Prometheus metrics at
C{GET /metrics} and the status page at C{GET /}, each behind the bearer
token when there is one; and L{ControlService}, which serves it on a stream
server endpoint (a L{dmq.control.listener.ControlListener}) and closes its
connections on stop; and L{serve}, the factory of its connections, which
L{dmq.control.listener.LazyControlService} builds on its first connection.

A request body over L{MAX_REQUEST} bytes is answered C{413} as soon as its
C{Content-Length} (or, chunked, its bytes) says so, and the connection is
closed: it is never read into memory or onto disk.

Nobody can hold the endpoint: a connection idle for L{IDLE_TIMEOUT}
seconds is closed (Twisted's own timeout), and so is one that takes more
than L{REQUEST_TIMEOUT} seconds to send a request, however it trickles;
past L{MAX_CONNECTIONS} open connections a new one is closed at once.
Each is counted, and warned of at most once a minute.
"""

from __future__ import annotations

from collections import Counter
from io import BytesIO
from typing import Collection, List, Optional, TYPE_CHECKING, cast

from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import (
    IAddress,
    IDelayedCall,
    IProtocol,
    IReactorTime,
    IStreamServerEndpoint,
    ITransport,
)
from twisted.internet.protocol import connectionDone
from twisted.logger import Logger
from twisted.protocols.policies import ProtocolWrapper, WrappingFactory
from twisted.python.failure import Failure
from twisted.web import resource, server

from dmq.bearer import isAuthorized
from dmq.control.jsonrpc import JSONRPC, RPCMethods
from dmq.control.listener import EVENTS, ControlListener, describe, newStatistics
from dmq.ratelimit import RateLimitedWarnings

if TYPE_CHECKING:
    from prometheus_client.registry import Collector

__all__ = [
    "ControlResource", "ControlService", "EVENTS", "MAX_REQUEST", "IDLE_TIMEOUT", "REQUEST_TIMEOUT", "MAX_CONNECTIONS",
]

MAX_REQUEST = 1024 * 1024
"""
The largest JSON-RPC request body read, in bytes.
"""

IDLE_TIMEOUT = 30.0
"""
Seconds after which a connection that sends nothing is closed.
"""

REQUEST_TIMEOUT = 30.0
"""
Seconds a connection has to send a whole request, from its first byte.
"""

MAX_CONNECTIONS = 64
"""
The most connections open at once.
"""

def _reactor(clock: Optional[IReactorTime]) -> IReactorTime:
    if clock is None:
        from twisted.internet import reactor as clock
    return clock  # type: ignore[return-value]


class _RPCResource(resource.Resource):
    """
    C{POST /RPC}: one JSON-RPC request (or batch) per HTTP request.
    """

    isLeaf = True

    def __init__(self, methods: RPCMethods, clock: IReactorTime, statistics: Counter[str]) -> None:
        resource.Resource.__init__(self)
        self._jsonrpc = JSONRPC(methods, clock, statistics)

    def render_POST(self, request: server.Request) -> object:
        # A whole request (as render_POST is given) has its content.
        data = request.content.read(MAX_REQUEST + 1)  # type: ignore[union-attr]
        d: Deferred[Optional[bytes]]
        if len(data) > MAX_REQUEST:
            # Served by a site of its own, without _BoundedRequest.
            request.setResponseCode(413)
            request.setHeader(b"content-type", b"text/plain; charset=utf-8")
            return _TOO_LARGE
        d = self._jsonrpc.handle(data)
        gone: List[Failure] = []
        request.notifyFinish().addErrback(gone.append)

        def answer(body: Optional[bytes]) -> None:
            if gone:
                return
            if body is None:
                request.setResponseCode(204)
            else:
                request.setHeader(b"content-type", b"application/json")
                request.write(body + b"\n")
            request.finish()

        d.addCallback(answer)
        return server.NOT_DONE_YET

    def render_GET(self, request: server.Request) -> bytes:
        request.setResponseCode(405)
        request.setHeader(b"allow", b"POST")
        request.setHeader(b"content-type", b"text/plain; charset=utf-8")
        return b"POST a JSON-RPC 2.0 request here.\n"


class _MetricsResource(resource.Resource):
    """
    C{GET /metrics}: the Prometheus text exposition of a registry.
    """

    isLeaf = True

    def __init__(self, registry: Collector) -> None:
        resource.Resource.__init__(self)
        self._registry = registry

    def render_GET(self, request: server.Request) -> bytes:
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        request.setHeader(b"content-type", CONTENT_TYPE_LATEST.encode("ascii"))
        return generate_latest(self._registry)


class _Unauthorized(resource.Resource):
    """
    What a request without the token gets: C{401}, asking for a bearer
    token (or, so that a browser asks its user, HTTP Basic).
    """

    isLeaf = True

    def render(self, request: server.Request) -> bytes:
        request.setResponseCode(401)
        request.setHeader(b"www-authenticate", b'Bearer realm="dmq", Basic realm="dmq"')
        request.setHeader(b"content-type", b"text/plain; charset=utf-8")
        return b"Unauthorized: send the control token, as Authorization: Bearer TOKEN.\n"


class ControlResource(resource.Resource):
    """
    The root of the control endpoint: C{/RPC}, C{/metrics} and, given a
    status page, C{/}.

    With a C{token}, every path asks for it but those of C{openPaths}.

    @ivar statistics: what L{JSONRPC} counted, and the requests refused for
        want of the token: C{noToken}, C{badToken}.
    @ivar token: the bearer token, or C{None}.
    """

    _log = Logger()

    def __init__(
        self,
        methods: RPCMethods,
        registry: Collector,
        clock: Optional[IReactorTime] = None,
        *,
        token: Optional[bytes] = None,
        openPaths: Collection[bytes] = (),
        status: Optional[resource.Resource] = None,
        statistics: Optional[Counter[str]] = None,
    ) -> None:
        """
        @param clock: the clock of the rate limit on warnings; the global
            reactor by default.
        @param token: the bearer token every request must carry, or
            C{None} for none.
        @param openPaths: the first path segments served without the token
            (C{b"metrics"} for a scraper that cannot send one).
        @param status: the resource of C{GET /}, usually a
            L{dmq.control.status.StatusPage}.
        @param statistics: the counter to count in (a service's, made
            before this root); a new one by default.
        """
        resource.Resource.__init__(self)
        clock = _reactor(clock)
        self.statistics: Counter[str] = statistics if statistics is not None else Counter()
        self.token = token
        self._openPaths = frozenset(openPaths)
        self._warnings = RateLimitedWarnings(clock, self._log)
        self.putChild(b"RPC", _RPCResource(methods, clock, self.statistics))
        self.putChild(b"metrics", _MetricsResource(registry))
        if status is not None:
            self.putChild(b"", status)

    def getChildWithDefault(self, path: bytes, request: server.Request) -> resource.IResource:
        # Resource.getChildWithDefault is unannotated; it returns a child,
        # an IResource.
        if self.token is None or path in self._openPaths:
            return cast(resource.IResource, resource.Resource.getChildWithDefault(self, path, request))
        header = request.getHeader(b"authorization")
        if isAuthorized(header, self.token):
            return cast(resource.IResource, resource.Resource.getChildWithDefault(self, path, request))
        cause = "badToken" if header else "noToken"
        self.statistics[cause] += 1
        self._warnings.warn(
            cause,
            "Control endpoint: {refusal} from {address}: 401",
            refusal="a wrong token" if header else "a request without the token",
            address=describe(request.getClientAddress()),
        )
        # Resource.__init__, which _Unauthorized inherits, is unannotated;
        # pyproject.toml's exclusion of twisted.web does not reach a
        # subclass of ours.
        return _Unauthorized()  # type: ignore[no-untyped-call]


_TOO_LARGE = f"Request body larger than {MAX_REQUEST} bytes.\n".encode("ascii")


class _BoundedRequest(server.Request):
    """
    A request whose body may not pass L{MAX_REQUEST} bytes: past it (as
    its C{Content-Length} declares, or as chunks arrive) it is answered
    C{413} at once, as Twisted answers a bad request, and the connection is
    closed; the body is neither kept nor handled.
    """

    _received = 0
    _refused = False

    def gotLength(self, length: Optional[int]) -> None:
        if length is not None and length > MAX_REQUEST:
            self.content = BytesIO()
            self._tooLarge(length)
        else:
            server.Request.gotLength(self, length)

    def handleContentChunk(self, data: bytes) -> None:
        if self._refused:
            return
        self._received += len(data)
        if self._received > MAX_REQUEST:
            self._tooLarge(self._received)
        else:
            server.Request.handleContentChunk(self, data)

    def process(self) -> None:
        if not self._refused:
            server.Request.process(self)

    def _tooLarge(self, size: int) -> None:
        self._refused = True
        # Site.buildProtocol sets it; HTTPChannel does not declare it.
        site: _ControlSite = self.channel.site  # type: ignore[attr-defined]
        site.statistics["bodiesTooLarge"] += 1
        site.warnings.warn(
            "bodyTooLarge",
            "Control endpoint: a request body of {size} bytes or more from {address}: 413",
            size=size,
            # Unannotated in twisted.web, whose exclusion in pyproject.toml
            # does not reach what our subclass inherits.
            address=describe(self.getClientAddress()),  # type: ignore[no-untyped-call]
        )
        channel = self.channel
        # A request is being received: its channel is connected.
        channel.transport.write(  # type: ignore[union-attr]
            b"HTTP/1.1 413 Content Too Large\r\ncontent-type: text/plain; charset=utf-8\r\n"
            b"content-length: %d\r\nconnection: close\r\n\r\n%s" % (len(_TOO_LARGE), _TOO_LARGE)
        )
        channel.loseConnection()


class _ControlSite(server.Site):
    """
    A site of L{_BoundedRequest}s, with the counters and warnings they
    report to.
    """

    requestFactory = _BoundedRequest
    noisy = False

    def __init__(
        self, root: resource.IResource, statistics: Counter[str], warnings: RateLimitedWarnings, **kwargs: object
    ) -> None:
        server.Site.__init__(self, root, **kwargs)
        self.statistics = statistics
        self.warnings = warnings


class _Guarded(ProtocolWrapper):
    """
    One connection, closed when a request takes too long to arrive: the
    deadline starts with the connection and with the first byte of each
    request, and ends when the request is whole.
    """

    factory: "_Connections"

    def __init__(self, factory: "_Connections", wrappedProtocol: IProtocol) -> None:
        ProtocolWrapper.__init__(self, factory, wrappedProtocol)
        self._deadline: Optional[IDelayedCall] = None

    def makeConnection(self, transport: ITransport) -> None:
        ProtocolWrapper.makeConnection(self, transport)
        self._arm()

    def dataReceived(self, data: bytes) -> None:
        ProtocolWrapper.dataReceived(self, data)
        if self._answering():
            self._disarm()
        else:
            self._arm()

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self._disarm()
        ProtocolWrapper.connectionLost(self, reason)

    def _answering(self) -> bool:
        # Twisted's HTTPChannel sets it from a whole request to its answer.
        return bool(getattr(self.wrappedProtocol, "_handlingRequest", False))

    def _arm(self) -> None:
        if self._deadline is None and self.transport is not None:
            self._deadline = self.factory.clock.callLater(self.factory.requestTimeout, self._tooSlow)

    def _disarm(self) -> None:
        if self._deadline is not None:
            if self._deadline.active():
                self._deadline.cancel()
            self._deadline = None

    def _tooSlow(self) -> None:
        self._deadline = None
        if self._answering():
            return
        self.factory.tooSlow(self)
        # A TCP (or TLS) transport, which can abort.
        self.transport.abortConnection()  # type: ignore[union-attr]


class _Connections(WrappingFactory):
    """
    A factory that knows its open connections, to close them on stop, and
    bounds them: how many, and how long each may take to send a request.
    """

    protocol = _Guarded
    _log = Logger()

    def __init__(
        self, wrappedFactory: server.Site, clock: IReactorTime, maxConnections: int, requestTimeout: float, statistics: Counter[str]
    ) -> None:
        # mypy cannot bind the generic WrappingFactory's self in this
        # explicit base class call.
        WrappingFactory.__init__(self, wrappedFactory)  # type: ignore[arg-type]
        self._whenEmpty: List[Deferred[None]] = []
        self.clock = clock
        self.requestTimeout = requestTimeout
        self._maxConnections = maxConnections
        self._statistics = statistics
        self._warnings = RateLimitedWarnings(clock, self._log)

    # IProtocolFactory lets buildProtocol refuse a connection with None;
    # WrappingFactory's annotation leaves that out.
    def buildProtocol(self, addr: Optional[IAddress]) -> Optional[ProtocolWrapper]:  # type: ignore[override]
        if len(self.protocols) >= self._maxConnections:
            self._statistics["connectionsRefused"] += 1
            self._warnings.warn(
                "tooManyConnections",
                "Control endpoint: {count} connections open, the most allowed: closed one from {address}",
                count=len(self.protocols),
                address=describe(addr),
            )
            return None
        return WrappingFactory.buildProtocol(self, addr)

    def tooSlow(self, protocol: _Guarded) -> None:
        """
        C{protocol} is closed: it took too long to send a request.
        """
        self._statistics["slowRequests"] += 1
        self._warnings.warn(
            "slowRequest",
            "Control endpoint: a connection from {address} sent no whole request within {timeout} s: closed",
            # ProtocolWrapper.getPeer is unannotated.
            address=describe(protocol.getPeer()),  # type: ignore[no-untyped-call]
            timeout=self.requestTimeout,
        )

    def unregisterProtocol(self, p: ProtocolWrapper) -> None:
        # As in __init__: an explicit base class call mypy cannot bind.
        WrappingFactory.unregisterProtocol(self, p)  # type: ignore[arg-type]
        if not self.protocols:
            waiting, self._whenEmpty = self._whenEmpty, []
            for d in waiting:
                d.callback(None)

    def closeAll(self) -> Deferred[None]:
        """
        Close every connection.

        @return: a L{Deferred} that fires when none is left.
        """
        if not self.protocols:
            return succeed(None)
        d: Deferred[None] = Deferred()
        self._whenEmpty.append(d)
        for protocol in list(self.protocols):
            protocol.transport.abortConnection()
        return d


class ControlService(ControlListener):
    """
    Serve a L{ControlResource} on a stream server endpoint: a
    L{ControlListener} with its HTTP server built at once.  Request bodies
    are bounded by L{MAX_REQUEST}.

    @ivar statistics: counters: C{connectionsRefused} (past
        C{maxConnections}), C{slowRequests} (closed past
        C{requestTimeout}), C{bodiesTooLarge} (answered 413), and those of the root's C{statistics} when it
        has one (L{ControlResource}).
    """

    def __init__(
        self,
        endpoint: IStreamServerEndpoint,
        root: resource.Resource,
        description: str = "",
        clock: Optional[IReactorTime] = None,
        maxConnections: int = MAX_CONNECTIONS,
        idleTimeout: float = IDLE_TIMEOUT,
        requestTimeout: float = REQUEST_TIMEOUT,
    ) -> None:
        """
        @param clock: where the timeouts run; the global reactor by default.
        @param maxConnections: the most connections open at once.
        @param idleTimeout: seconds after which a silent connection is
            closed.
        @param requestTimeout: seconds a connection has to send a whole
            request.
        """
        statistics = newStatistics(getattr(root, "statistics", None))
        factory = serve(root, statistics, _reactor(clock), maxConnections, idleTimeout, requestTimeout)
        ControlListener.__init__(
            self, endpoint, factory, description, statistics, getattr(root, "token", None) is not None
        )


def serve(
    root: resource.IResource,
    statistics: Counter[str],
    clock: IReactorTime,
    maxConnections: int = MAX_CONNECTIONS,
    idleTimeout: float = IDLE_TIMEOUT,
    requestTimeout: float = REQUEST_TIMEOUT,
) -> _Connections:
    """
    The factory of the control endpoint's connections, serving C{root}
    within the bounds given and counting in C{statistics}.
    """
    site = _ControlSite(
        root, statistics, RateLimitedWarnings(clock, ControlService._log), timeout=idleTimeout, reactor=clock
    )
    factory = _Connections(site, clock, maxConnections, requestTimeout, statistics)
    factory.noisy = False
    return factory
