# -*- test-case-name: dmq.test.test_tap -*-
"""
A node as a Twisted service: L{DMQNodeService} (the transport, the node
manager, the bus, the ping and the peers, as children that start and stop
in order) and L{makeNodeService}, which builds one from a L{NodeConfig}:
the wiring of every layer below, for twistd (L{dmq.tap}) and for programs
that embed a node.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Dict, Iterable, List, Optional

from twisted.application import internet, service
from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IListeningPort, IResolver
from twisted.logger import Logger

from dmq import __version__, sip
from dmq.bus import DMQBus
from dmq.config import NodeConfig, ServerSocket
from dmq.settingvalues import Address
from dmq.control.jsonrpc import RPCMethods
from dmq.control.methods import addDMQMethods
from dmq.interfaces import IDMQPeer
from dmq.metrics import HandlerLatency, nodeRegistry
from dmq.node import NodeManager, ipLiteral
from dmq.peers.htable import HTablePeer, HTableRPC
from dmq.peers.htable.entropy import AntiEntropy
from dmq.notification import PING_MAX_FORWARDS, NotificationPeer
from dmq.ping import PingService
from dmq.probe import ProbeDetector
from dmq.stream import SIPStreamTransport
from dmq.transport import SIPDatagramProtocol, listenSIP
from dmq.trust import Trust

# The "# type: ignore[no-untyped-call]" on setServiceParent below: Twisted's
# Service leaves it unannotated, and pyproject.toml's exclusion of
# twisted.application.service does not reach methods our services inherit.

if TYPE_CHECKING:
    from collections import Counter
    from random import Random

    from prometheus_client.core import CollectorRegistry, Metric

    from dmq.control.listener import ControlListener
    from dmq.peers.dialog import DialogPeer
    from dmq.peers.usrloc import UsrlocPeer

__all__ = ["DMQNodeService", "SIPServer", "makeNodeService"]


class SIPServer(service.Service):
    """
    The node's UDP socket as a service: it listens with
    L{listenSIP <dmq.transport.listenSIP>} (in C{privilegedStartService},
    before twistd drops its privileges, as Twisted's C{UDPServer} does) and
    stops listening when stopped.

    @ivar port: the listening port while running, else C{None}.
    """

    port: Optional[IListeningPort] = None

    def __init__(self, reactor: Any, portNumber: int, protocol: SIPDatagramProtocol, interface: str = "") -> None:
        self._reactor = reactor
        self._portNumber = portNumber
        self._protocol = protocol
        self._interface = interface

    def privilegedStartService(self) -> None:
        service.Service.privilegedStartService(self)
        self.port = listenSIP(self._reactor, self._portNumber, self._protocol, self._interface)

    def startService(self) -> None:
        service.Service.startService(self)
        if self.port is None:
            self.port = listenSIP(self._reactor, self._portNumber, self._protocol, self._interface)

    def stopService(self) -> Optional[Deferred[None]]:
        service.Service.stopService(self)
        port, self.port = self.port, None
        if port is None:
            return None
        return port.stopListening()


class DMQNodeService(service.MultiService):
    """
    One node: the SIP socket, the node manager, the bus, the membership peer,
    the ping and, when asked for, the control endpoint.  Children start in
    the order they were added and stop in the reverse order, each only once
    the previous one has finished stopping, so that our goodbye is sent while
    the bus and the socket still work.

    @ivar protocol: the L{SIPDatagramProtocol}.
    @ivar nodeManager: the L{NodeManager}.
    @ivar bus: the L{DMQBus}; register peers on it.
    @ivar notification: the L{NotificationPeer}.
    @ivar ping: the L{PingService}.
    @ivar seeds: the notification addresses.
    @ivar bindAddress: the C{(host, port)} of the UDP socket.
    @ivar rpc: the L{RPCMethods} of the control endpoint, whether or not
        it is served: add a peer's methods here.
    @ivar metrics: the node's own Prometheus C{CollectorRegistry}, made on
        first use.
    @ivar handlerLatency: the L{HandlerLatency} the metrics report.
    @ivar control: the control endpoint (a
        L{dmq.control.listener.LazyControlService}), or C{None}.
    @ivar streams: the stream transports of the node's listeners, by
        name (C{"tcp"}, C{"tls"}), whether or not L{makeNodeService} opened
        their sockets.  Every node has a TCP transport to send with (and a
        TLS one, with a certificate), in C{protocol.streams}.
    """

    _log = Logger()

    def __init__(self) -> None:
        service.MultiService.__init__(self)
        self.protocol: SIPDatagramProtocol
        self.nodeManager: NodeManager
        self.bus: DMQBus
        self.notification: NotificationPeer
        self.ping: PingService
        self.seeds: List[sip.URI] = []
        self.bindAddress: Address
        self.listeners: List[str] = []
        self.rpc = RPCMethods()
        self._metrics: Optional[CollectorRegistry] = None
        self.handlerLatency = HandlerLatency()
        self.control: Optional[ControlListener] = None
        self.htable: Optional[HTablePeer] = None
        self.dialog: Optional[DialogPeer] = None
        self.usrloc: Optional[UsrlocPeer] = None
        self.probe: Optional[ProbeDetector] = None
        self.entropy: Optional[AntiEntropy] = None
        self.streams: Dict[str, SIPStreamTransport] = {}

    @property
    def metrics(self) -> CollectorRegistry:
        # Made on first use (by the control endpoint, or an embedder), so
        # that a node without a control endpoint does not load
        # prometheus_client.
        if self._metrics is None:
            self._metrics = nodeRegistry(self)
        return self._metrics

    def startService(self) -> None:
        service.MultiService.startService(self)
        host, port = self.bindAddress
        self._log.info(
            "dmq {version} node {node} listening on {address}; "
            "notification addresses: {seeds}; peers: {peers}; control: {control}",
            version=__version__,
            node=self.nodeManager.localNode.uri.toString(),
            address=", ".join(self.listeners) or (f"[{host}]:{port}" if ":" in host else f"{host}:{port}"),
            seeds=", ".join(uri.toString() for uri in self.seeds) or "none",
            peers=", ".join(peer.peerId for peer in self.bus.peers),
            control=self.control.description if self.control is not None else "off",
        )

        if not self.bus.trustActive:
            self._log.warn(
                "Admission is open: any host that can reach UDP {address} may join the bus and write "
                "to it; give --allow-from or --secret-file (doc/security.md)",
                address=f"[{host}]:{port}" if ":" in host else f"{host}:{port}",
            )

    def stopService(self) -> Deferred[Any]:
        service.Service.stopService(self)
        # Any: each child's stopService result, which nobody reads.
        d: Deferred[Any] = succeed(None)
        for child in reversed(list(self)):
            # The lambda's default argument (this child) is more than
            # addCallback's ParamSpec overloads can match.
            d.addCallback(lambda _, child=child: child.stopService() if child.running else None)  # type: ignore[call-overload]
        return d

    def addPeer(self, peer: object) -> None:
        """
        Register C{peer} on the bus and, when it is a service without a
        parent, make it a child of the node, so that it starts and stops
        with it.

        @raise TypeError: if C{peer} does not provide L{IDMQPeer}.
        @raise ValueError: if its C{peerId} is invalid or taken.
        """
        # registerPeer refuses (TypeError) what does not provide IDMQPeer.
        self.bus.registerPeer(peer)  # type: ignore[arg-type]
        if service.IService.providedBy(peer) and peer.parent is None:
            peer.setServiceParent(self)

    # reactor: Any, as in makeNodeService.
    def serveControl(
        self, reactor: Any, description: str, tokenFile: Optional[str] = None, openMetrics: bool = False
    ) -> ControlListener:
        """
        Serve the control endpoint (L{dmq.control}) on the server endpoint
        C{description} (on loopback, or a socket of mode 600, unless it
        says otherwise: L{dmq.control.guard}), as a child of the node: it
        starts last and stops first.

        @param tokenFile: the file of the token every request must carry
            (L{dmq.bearer.readTokenFile}), or C{None}.
        @param openMetrics: serve C{/metrics} without the token.
        @raise ValueError: for a description Twisted cannot parse, a token
            file that cannot be used, or an endpoint others can reach
            without a token.
        """
        if self.control is not None:
            raise ValueError("the control endpoint is served already")
        # The endpoint parsers are imported only for a node that serves its
        # control endpoint, and the HTTP server only once someone connects
        # to it: it is a tenth of the memory of a node at rest.
        from twisted.internet import endpoints

        from dmq.bearer import readTokenFile
        from dmq.control.guard import checkControl
        from dmq.control.listener import LazyControlService

        description = checkControl(description, tokenFile).description
        token = readTokenFile(tokenFile) if tokenFile is not None else None
        endpoint = endpoints.serverFromString(reactor, description)
        paths = [b"metrics"] if openMetrics else []

        # Built on the first connection, with twisted.web.
        def makeRoot(statistics: Counter[str]) -> Any:
            from dmq.control.endpoint import ControlResource
            from dmq.control.status import StatusPage

            return ControlResource(
                self.rpc, _Metrics(self), reactor, token=token, openPaths=paths, status=StatusPage(self, reactor),
                statistics=statistics,
            )

        self.control = LazyControlService(endpoint, makeRoot, description, reactor, token is not None)
        self.control.setServiceParent(self)  # type: ignore[no-untyped-call]
        return self.control


class _Metrics:
    """
    The node's metrics as the control endpoint exports them: what its
    C{metrics} registry collects, read at each scrape, so that the
    registry, and C{prometheus_client}, are made on the first scrape.
    """

    def __init__(self, node: DMQNodeService) -> None:
        self._node = node

    def collect(self) -> Iterable[Metric]:
        return self._node.metrics.collect()


# reactor: Any, because the node needs several of the reactor's interfaces
# (IReactorTime, IReactorUDP, IReactorTCP, ...), which an annotation cannot
# join into one.
def makeNodeService(
    reactor: Any, config: NodeConfig, *, resolver: Optional[IResolver] = None, listen: bool = True,
    random: Any = None,
) -> DMQNodeService:
    """
    Build a node as C{config} says: its socket, node manager, bus,
    membership peer and ping; the htable peer and the peers of
    C{config.peers}; and, last, the control endpoint.  Register your own
    peers on the returned service's C{bus} (or with its C{addPeer}) before
    or after starting it.

    @param reactor: provides C{IReactorTime} and, when C{listen} is true,
        C{IReactorUDP}; with C{config.control}, what its endpoint needs (say
        C{IReactorTCP}).
    @param config: the L{NodeConfig}.  Its values are used as they are: the
        checks of L{dmq.config.parseSettings} are for values read from text.
    @param resolver: the L{IResolver <twisted.internet.interfaces.IResolver>} for C{config.multiNotify}; by default
        one made from the system's resolver configuration.
    @param listen: C{False} to leave the socket out: the caller connects
        C{protocol} itself (tests do, to an in-memory network).
    @param random: the C{random.Random} the ping and the failure detector
        choose nodes with (tests seed one); by default a new one.
    @raise ValueError: when a peer of C{config.peers} cannot be made or
        registered (a factory that fails, makes no peer, or a peer whose id
        is taken), and when the control endpoint cannot be served as asked
        (see L{DMQNodeService.serveControl}).
    """
    node = DMQNodeService()
    node.seeds = list(config.notificationAddresses)
    node.bindAddress = config.bindAddress
    node.protocol = SIPDatagramProtocol(
        reactor,
        _sentBy(config, "udp"),
        T1=config.T1,
        T2=config.T2,
        T4=config.T4,
        maxTransactions=config.maxTransactions,
    )
    listeners = {listener.proto: listener for listener in config.listeners}
    if [listener.proto for listener in config.listeners] != ["udp"]:
        node.listeners = [str(listener) for listener in config.listeners]
    if listen and "udp" in listeners:
        SIPServer(
            reactor, listeners["udp"].port, node.protocol, listeners["udp"].host
        ).setServiceParent(node)  # type: ignore[no-untyped-call]
    _addStreams(reactor, node, config, listeners if listen else {})
    seeds = list(config.notificationAddresses)
    expand = []
    if config.multiNotify:
        expand = [uri for uri in seeds if ipLiteral(uri.host) is None]
        seeds = [uri for uri in seeds if ipLiteral(uri.host) is not None]
        if expand and resolver is None:
            from twisted.names import client

            # createResolver takes no reactor: it uses the global one, which
            # is the one twistd runs.
            resolver = client.createResolver()
    node.nodeManager = NodeManager(
        reactor,
        config.serverAddress,
        seeds,
        removeInactive=config.removeInactive,
        failCountEnabled=config.failCountEnabled,
        failCountThresholdNotActive=config.failCountThresholdNotActive,
        failCountThresholdDisabled=config.failCountThresholdDisabled,
        maxNodes=config.maxNodes,
    )
    node.nodeManager.setServiceParent(node)  # type: ignore[no-untyped-call]
    # Trust, below dmq.nodelist, types a member as object; the bus gives it a Node, its memberAt's.
    trust = Trust(reactor, config.allowFrom, config.keyring, isSeed=node.nodeManager.isSeed)  # type: ignore[arg-type]
    if trust.allowFrom and trust.keyring is None:
        node.nodeManager.setAdmission(trust.admitsNode)
    if trust.keyring is not None:
        # What the transaction layers answer by themselves, signed as the
        # bus's refusals are: a signed sender takes no unsigned answer.
        for handler in [node.protocol, *node.protocol.streams.values()]:
            handler.transactions.refusalHeaders = trust.layerRefusal
    node.bus = DMQBus(
        reactor,
        node.protocol,
        node.nodeManager,
        numWorkers=config.numWorkers,
        maxQueue=config.maxQueue,
        handlerTimeout=config.handlerTimeout,
        notificationChannel=config.notificationChannel,
        resolve=getattr(reactor, "resolve", None),
        trust=trust,
        share=config.maxQueuePerSource,
    )
    node.bus.setServiceParent(node)  # type: ignore[no-untyped-call]
    node.bus.latencyObserver = node.handlerLatency.observe
    node.notification = NotificationPeer(
        reactor,
        node.bus,
        node.nodeManager,
        peerId=config.notificationChannel,
        expandSeeds=expand,
        resolver=resolver,
        refreshInterval=config.notifyRefresh or config.pingInterval,
    )
    node.bus.registerPeer(node.notification)
    node.notification.setServiceParent(node)  # type: ignore[no-untyped-call]
    node.ping = PingService(
        reactor, node.notification, node.nodeManager, config.pingInterval, config.pingTimeout,
        random=random,
    )
    node.ping.setServiceParent(node)  # type: ignore[no-untyped-call]
    if config.probe:
        _addDetector(reactor, node, config, random)
    addDMQMethods(node.rpc, node)
    if config.htables:
        # Replication leaves an eighth of the client transactions to the
        # membership peer and the others.
        transactions, room = node.protocol.transactions, max(1, config.maxTransactions * 7 // 8)
        node.htable = HTablePeer(
            reactor, node.bus, config.htables, initSync=config.htableInitSync,
            maxCells=config.htableMaxCells, maxBytes=config.htableMaxBytes,
            clientRoom=lambda: room - transactions.liveClientTransactions,
        )
        node.addPeer(node.htable)
        if config.htableEntropy:
            node.entropy = AntiEntropy(
                reactor, node.bus, node.htable.store, node.nodeManager.pingTargets,
                interval=config.htableEntropyInterval, random=random,
            )
            node.addPeer(node.entropy)
        for name, method in HTableRPC(node.htable).methods().items():
            node.rpc.addMethod(name, method)
    # The dialog and usrloc peers are imported only by the nodes that run
    # them: a node without them is lighter by about 0.9 MB.
    if config.dialog:
        from dmq.peers.dialog import DialogPeer, DialogRPC

        node.dialog = DialogPeer(reactor, node.bus)
        node.addPeer(node.dialog)
        for name, method in DialogRPC(node.dialog, reactor).methods().items():
            node.rpc.addMethod(name, method)
    # The usrloc peer (Kamailio's dmq_usrloc) and its ul.* RPC methods.
    if config.usrloc:
        from dmq.peers.usrloc import UsrlocPeer, UsrlocRPC

        node.usrloc = UsrlocPeer(
            reactor,
            node.bus,
            sync=config.usrlocSync,
            batchMsgContacts=config.usrlocBatchMsgContacts,
            batchMsgSize=config.usrlocBatchMsgSize,
            socketInfo=config.usrlocReplicateSocketInfo,
        )
        node.addPeer(node.usrloc)
        for name, method in UsrlocRPC(node.usrloc, reactor).methods().items():
            node.rpc.addMethod(name, method)
    for name, found in config.peers:
        _addNamedPeer(node, name, found)
    if config.control is not None:
        try:
            node.serveControl(reactor, config.control, config.controlTokenFile, config.controlOpenMetrics)
        except ValueError as e:
            raise _ControlError(str(e)) from None
    return node


class _ControlError(ValueError):
    """
    The control endpoint of L{NodeConfig.control} cannot be served as asked.
    """


# reactor: Any, as in makeNodeService.
def _addDetector(reactor: Any, node: DMQNodeService, config: NodeConfig, random: Optional[Random]) -> None:
    """
    Give the node the failure detector (L{ProbeDetector}): it watches the
    dmq nodes, and the ping and the notification peer leave them to it.
    """
    node.probe = ProbeDetector(
        reactor, node.bus, node.nodeManager,
        interval=config.probeInterval, timeout=config.probeTimeout, roundTimeout=config.probeRound,
        indirect=config.probeIndirect,
        suspicion=config.probeSuspicion, suspicionMax=config.probeSuspicionMax,
        removeAfter=config.probeRemoveAfter, random=random,
    )
    node.probe.rejoin = lambda: node.notification.announce(
        node.nodeManager.pingTargets(), PING_MAX_FORWARDS
    )
    node.notification.covered = node.probe.covers
    node.ping.covered = node.probe.covers
    node.addPeer(node.probe)
def _sentBy(config: NodeConfig, proto: str) -> Address:
    """
    The C{(host, port)} our Via names for C{proto}: the server address's
    when it is of that transport (the socket may be bound elsewhere, behind
    a NAT), else that transport's listener's, else the server address's.
    """
    address = config.serverAddress
    # parseServerAddress refuses a serverAddress without a port.
    if (address.transport or "udp") == proto:
        return (address.host, address.port)  # type: ignore[return-value]
    for listener in config.listeners:
        if listener.proto == proto:
            return (listener.host, listener.port)
    return (address.host, address.port)  # type: ignore[return-value]


def _addStreams(reactor: Any, node: DMQNodeService, config: NodeConfig, listeners: Dict[str, ServerSocket]) -> None:
    """
    Give the node its TCP transport, and its TLS one when it has a
    certificate, each listening when C{listeners} has a socket for it: a
    node over UDP may still send to a node over TCP or TLS.
    """
    tls = config.tlsSettings()
    sockets = {listener.proto: listener.host for listener in config.listeners}
    for name in ("tcp", "tls"):
        if name == "tls" and tls is None:
            continue
        stream = SIPStreamTransport(
            reactor, _sentBy(config, name), name, tls=tls if name == "tls" else None,
            T1=config.T1, T2=config.T2, T4=config.T4, maxTransactions=config.maxTransactions,
            maxMessage=config.maxMessageSize, idleTimeout=config.tcpConnectionLifetime,
            # Connections from our own IP: members are known by it.
            bindHost=sockets.get(name, config.listeners[0].host),
        )
        node.protocol.addStream(name, stream)
        if name in sockets:
            node.streams[name] = stream
        if name in listeners:
            listener = listeners[name]
            internet.StreamServerEndpointService(
                stream.serverEndpoint(reactor, (listener.host, listener.port)),
                stream.serverFactory(),
            ).setServiceParent(node)


class _PeerError(ValueError):
    """
    A peer of L{NodeConfig.peers} could not be made or registered.
    """

    def __init__(self, name: str, reason: str) -> None:
        ValueError.__init__(self, f"{name}: {reason}")


def _addNamedPeer(node: DMQNodeService, name: str, found: object) -> None:
    peer = found
    if not IDMQPeer.providedBy(found):
        try:
            peer = found(node)  # type: ignore[operator]
        except Exception as e:
            raise _PeerError(name, f"calling it with the node failed: {e!r}") from None
        if not IDMQPeer.providedBy(peer):
            raise _PeerError(name, f"made {peer!r}, which does not provide IDMQPeer")
    try:
        node.addPeer(peer)
    except (TypeError, ValueError) as e:
        raise _PeerError(name, str(e)) from None
