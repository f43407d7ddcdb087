# -*- test-case-name: dmq.test.test_control -*-
"""
The listening half of the control endpoint, without its HTTP server:
L{ControlListener}, a service that listens on a stream server endpoint,
logs where, and closes its connections on stop; and
L{LazyControlService}, one whose HTTP server (L{twisted.web}, the
resources of L{dmq.control.endpoint} and the status page) is imported and
built on its first connection.

A node's control endpoint is L{LazyControlService}: until someone connects
to it, a node does not carry an HTTP server (a tenth of its memory at
rest), yet a port that is taken still stops it at start.
L{dmq.control.endpoint.ControlService} is the same listener with its server
built at once.
"""

from __future__ import annotations

import ipaddress
from collections import Counter
from typing import Any, Callable, List, Optional, Tuple

from twisted.application import service
from twisted.internet.address import IPv4Address, IPv6Address
from twisted.internet.defer import CancelledError, Deferred, DeferredList, maybeDeferred, succeed
from twisted.internet.interfaces import IAddress, IListeningPort, IReactorTime, IStreamServerEndpoint
from twisted.internet.protocol import Factory, Protocol
from twisted.logger import Logger
from twisted.python.failure import Failure

__all__ = ["ControlListener", "LazyControlService", "EVENTS"]

EVENTS = (
    "connectionsRefused", "slowRequests", "bodiesTooLarge", "noToken", "badToken",
    "parseErrors", "invalidRequests", "batchesTooLarge", "internalErrors",
)
"""
What L{ControlListener.statistics} counts, each from zero.
"""


def newStatistics(shared: Optional[Counter[str]] = None) -> Counter[str]:
    """
    C{shared}, or a new counter, with every cause of L{EVENTS} from zero, so
    that C{/metrics} shows zeros rather than series that appear with their
    first event.
    """
    statistics: Counter[str] = shared if shared is not None else Counter()
    for cause in EVENTS:
        statistics.setdefault(cause, 0)
    return statistics


class ControlListener(service.Service):
    """
    Listen on a stream server endpoint with a factory that can close its
    connections (C{closeAll()}, a L{Deferred} that fires when none is left).

    A listening address that is not a loopback address, when there is no
    token, is logged as a warning: whoever reaches it can change the node
    list and send on the bus.  (L{dmq.tap} refuses to start such a node;
    see L{dmq.control.guard}.)

    @ivar port: the listening port once listening, else C{None}.
    @ivar statistics: what the endpoint refused or closed, by cause
        (L{EVENTS}).
    """

    _log = Logger()

    def __init__(
        self, endpoint: IStreamServerEndpoint, factory: Any, description: str, statistics: Counter[str], hasToken: bool
    ) -> None:
        """
        @param factory: the protocol factory listened with; it has a
            C{closeAll} method.
        @param hasToken: whether requests must carry a token (for the log).
        """
        self._endpoint = endpoint
        self._factory = factory
        self._hasToken = hasToken
        self.statistics = statistics
        self._listening: Optional[Deferred[IListeningPort]] = None
        self.description = description
        self.port: Optional[IListeningPort] = None

    def startService(self) -> None:
        """
        Listen.  A failure to listen that is known at once (the port is
        taken) is raised, so that a node does not start without the control
        endpoint it was asked for.
        """
        service.Service.startService(self)
        synchronous = True
        failures: List[Failure] = []

        def failed(failure: Failure) -> None:
            self._listening = None
            if synchronous:
                failures.append(failure)
            else:
                self._cannotListen(failure)

        self._listening = self._endpoint.listen(self._factory)
        self._listening.addCallbacks(self._listen, failed)
        synchronous = False
        if failures:
            service.Service.stopService(self)
            failures[0].raiseException()

    def _listen(self, port: IListeningPort) -> None:
        self._listening = None
        self.port = port
        address = port.getHost()
        host = getattr(address, "host", None)
        self._log.info(
            "Control endpoint {endpoint} listening on {address}: POST /RPC, GET /metrics, GET /{token}",
            endpoint=self.description,
            address=describe(address),
            token=", with a token" if self._hasToken else "",
        )
        if host is not None and not _isLoopback(host) and not self._hasToken:
            self._log.warn(
                "Control endpoint {endpoint} listens on {host}, not a loopback address: "
                "anyone who reaches it can change the node list and send on the bus",
                endpoint=self.description,
                host=host,
            )
        elif host is not None and not _isLoopback(host) and not self.description.startswith(("ssl:", "tls:")):
            self._log.warn(
                "Control endpoint {endpoint} listens on {host} without TLS: its token crosses the network "
                "in the clear; prefer an ssl: endpoint or a tunnel",
                endpoint=self.description,
                host=host,
            )

    def _cannotListen(self, failure: Failure) -> None:
        if failure.check(CancelledError):
            # Stopped before listening.
            return
        self._log.error(
            "Control endpoint {endpoint} cannot listen: {error}",
            endpoint=self.description,
            error=failure.getErrorMessage(),
        )

    def stopService(self) -> Deferred[List[Tuple[bool, Any]]]:
        """
        Stop listening and close the open connections.

        @return: a L{Deferred} that fires when the port and the connections
            are gone.
        """
        service.Service.stopService(self)
        if self._listening is not None:
            self._listening.cancel()
        port, self.port = self.port, None
        # Any: stopListening may give a Deferred or None.
        stopped: Deferred[Any] = maybeDeferred(port.stopListening) if port is not None else succeed(None)
        return DeferredList([stopped, self._factory.closeAll()], consumeErrors=True)


class _OnFirstConnection(Factory):
    """
    A factory that builds the real one (C{build()}) on its first
    connection, and hands every connection to it from then on.
    """

    noisy = False

    def __init__(self, build: Callable[[], Any]) -> None:
        self._build = build
        self._real: Any = None

    # IProtocolFactory lets buildProtocol refuse a connection with None.
    def buildProtocol(self, addr: Optional[IAddress]) -> Optional[Protocol]:
        if self._real is None:
            self._real = self._build()
            if self.numPorts:
                # Listening already: start it as the port started us.
                self._real.doStart()
        protocol: Optional[Protocol] = self._real.buildProtocol(addr)
        return protocol

    def stopFactory(self) -> None:
        if self._real is not None:
            self._real.doStop()

    def closeAll(self) -> Deferred[None]:
        """
        Close every connection of the real factory, if there is one yet.
        """
        if self._real is None:
            return succeed(None)
        closed: Deferred[None] = self._real.closeAll()
        return closed


class LazyControlService(ControlListener):
    """
    A L{ControlListener} whose HTTP server is imported and built on the
    first connection: L{dmq.control.endpoint.ControlService}'s, with the
    default bounds, serving C{makeRoot(statistics)}.
    """

    def __init__(
        self,
        endpoint: IStreamServerEndpoint,
        makeRoot: Callable[[Counter[str]], Any],
        description: str,
        clock: IReactorTime,
        hasToken: bool,
    ) -> None:
        """
        @param makeRoot: called on the first connection with the
            L{statistics} the root is to count in; returns the root
            resource (a L{dmq.control.endpoint.ControlResource}).
        @param clock: where the timeouts run.
        """
        statistics = newStatistics()

        def build() -> Any:
            from dmq.control.endpoint import serve

            return serve(makeRoot(statistics), statistics, clock)

        ControlListener.__init__(self, endpoint, _OnFirstConnection(build), description, statistics, hasToken)


def _isLoopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        # "": every interface.
        return False


def describe(address: object) -> str:
    """
    C{address} as a log line shows it: C{host:port}, C{[v6]:port}, or its
    C{str}.
    """
    if isinstance(address, IPv6Address):
        return f"[{address.host}]:{address.port}"
    if isinstance(address, IPv4Address):
        return f"{address.host}:{address.port}"
    return str(address)
