# -*- test-case-name: dmq.test.test_tap -*-
"""
The twistd wiring: L{Options}, the settings of L{dmq.config} as command line
options and a TOML file (C{--config}), and L{makeService}, which builds one
node with its control endpoint and peers.

L{makeNodeService} is the same wiring for programs that embed a node instead
of running it under twistd: they give it a L{NodeConfig}.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable, Dict, List, Optional, Tuple

from twisted.application import internet, service
from twisted.internet.defer import Deferred, succeed
from twisted.logger import Logger
from twisted.python import usage

from dmq import __version__, sip
from dmq.bus import DMQBus
from dmq.config import PARAMETERS, Address, NodeConfig, parseSettings, readConfigFile
from dmq.config import ServerSocket, loadPeer, parseServerAddress, parseServerSocket  # re-exported
from dmq.control.jsonrpc import RPCMethods
from dmq.control.methods import addDMQMethods
from dmq.interfaces import IDMQPeer
from dmq.metrics import HandlerLatency, nodeRegistry
from dmq.node import NodeManager, ipLiteral, parseNodeAddress
from dmq.peers.dialog import DialogPeer, DialogRPC
from dmq.peers.htable import HTablePeer, HTableRPC
from dmq.peers.usrloc import UsrlocPeer, UsrlocRPC
from dmq.notification import NotificationPeer
from dmq.ping import PingService
from dmq.stream import SIPStreamTransport
from dmq.transport import MAX_DATAGRAM, SIPDatagramProtocol

if TYPE_CHECKING:
    from dmq.control.endpoint import ControlService

__all__ = [
    "Options", "makeService", "makeNodeService", "DMQNodeService",
    # From dmq.config and dmq.node, for programs that embed a node.
    "NodeConfig", "ServerSocket", "parseServerAddress", "parseNodeAddress", "parseServerSocket", "loadPeer",
]

class Options(usage.Options):
    """
    C{twistd dmq} options.  Each long name is a Kamailio DMQ module parameter
    with C{-} for C{_}; C{--config FILE} reads them from a TOML file with
    Kamailio's names as keys, and the command line overrides the file (a
    repeatable option given on the command line replaces the file's list).

    After parsing, C{nodeConfig} is the L{NodeConfig}, and each option also
    holds its value: C{server-address} and C{notification-address}
    L{sip.URI}s, C{server-socket} a L{ServerSocket} or C{None},
    C{bind-address} the C{(host, port)} to bind, numbers and booleans as
    such, C{control} an endpoint description or C{None}, C{peer} a list of
    C{(name, object)} from L{loadPeer}.  A repeatable option is a list.

    @ivar nodeConfig: the L{NodeConfig}, once parsed.
    """

    synopsis = "[options]"
    longdesc = (
        "Run a DMQ node: a member of a Kamailio-compatible KDMQ bus. "
        "Option names follow Kamailio's dmq module parameters."
    )

    optParameters = [
        [parameter.option, parameter.short, None, parameter.describe()]
        for parameter in PARAMETERS
        if not parameter.repeatable and not parameter.flag
    ] + [
        [
            "config",
            None,
            None,
            "A TOML file of parameters by their Kamailio names (server_address = \"sip:...\", "
            "notification_address = [...], ...); the command line overrides it.",
        ]
    ]

    optFlags = [
        [parameter.option, parameter.short, parameter.describe()]
        for parameter in PARAMETERS
        if parameter.flag
    ]

    def __init__(self) -> None:
        usage.Options.__init__(self)
        self._repeated: Dict[str, List[str]] = {
            parameter.name: [] for parameter in PARAMETERS if parameter.repeatable
        }
        self.nodeConfig: NodeConfig

    def postOptions(self) -> None:
        given: Dict[str, Tuple[str, Any]] = {}
        if self["config"] is not None:
            given.update(readConfigFile(self["config"]))
        for parameter in PARAMETERS:
            where = f"--{parameter.option}"
            if parameter.repeatable:
                if self._repeated[parameter.name]:
                    given[parameter.name] = (where, self._repeated[parameter.name])
            elif parameter.flag:
                if self[parameter.option]:
                    given[parameter.name] = (where, "1")
            elif self[parameter.option] is not None:
                given[parameter.name] = (where, self[parameter.option])
        self.nodeConfig = parseSettings(given)
        for parameter in PARAMETERS:
            value = getattr(self.nodeConfig, parameter.field)
            self[parameter.option] = list(value) if parameter.repeatable else value
        self["bind-address"] = self.nodeConfig.bindAddress


def _collector(name: str, help: str) -> Callable[[Options, str], None]:
    def collect(self: Options, value: str) -> None:
        self._repeated[name].append(value)

    # The help usage shows.
    collect.__doc__ = help
    return collect


def _addRepeatableOptions() -> None:
    """
    Give L{Options} an C{opt_} method, under the long and the short name,
    for each repeatable setting: it collects every value given.
    """
    for parameter in PARAMETERS:
        if parameter.repeatable:
            collect = _collector(parameter.name, parameter.help)
            setattr(Options, f"opt_{parameter.name}", collect)
            if parameter.short is not None:
                setattr(Options, f"opt_{parameter.short}", collect)


_addRepeatableOptions()


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
    @ivar metrics: the node's own Prometheus C{CollectorRegistry}.
    @ivar handlerLatency: the L{HandlerLatency} the metrics report.
    @ivar control: the L{ControlService}, or C{None}.
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
        self.metrics = nodeRegistry(self)
        self.handlerLatency = HandlerLatency()
        self.control: Optional[ControlService] = None
        self.htable: Optional[HTablePeer] = None
        self.dialog: Optional[DialogPeer] = None
        self.usrloc: Optional[UsrlocPeer] = None

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

    def stopService(self) -> Deferred:
        service.Service.stopService(self)
        d: Deferred = succeed(None)
        for child in reversed(list(self)):
            d.addCallback(lambda _, child=child: child.stopService() if child.running else None)
        return d

    def addPeer(self, peer: object) -> None:
        """
        Register C{peer} on the bus and, when it is a service without a
        parent, make it a child of the node, so that it starts and stops
        with it.

        @raise TypeError: if C{peer} does not provide L{IDMQPeer}.
        @raise ValueError: if its C{peerId} is invalid or taken.
        """
        self.bus.registerPeer(peer)
        if service.IService.providedBy(peer) and peer.parent is None:  # type: ignore[attr-defined]
            peer.setServiceParent(self)

    def serveControl(self, reactor, description: str) -> ControlService:
        """
        Serve the control endpoint (L{dmq.control}) on the server endpoint
        C{description}, as a child of the node: it starts last and stops
        first.

        @raise ValueError: for a description Twisted cannot parse.
        """
        if self.control is not None:
            raise ValueError("the control endpoint is served already")
        # The HTTP server and the endpoint parsers are imported only for a
        # node that serves its control endpoint: they are a tenth of the
        # memory of one at rest.
        from twisted.internet import endpoints

        from dmq.control.endpoint import ControlResource, ControlService

        endpoint = endpoints.serverFromString(reactor, description)
        self.control = ControlService(
            endpoint, ControlResource(self.rpc, self.metrics, reactor), description, clock=reactor
        )
        self.control.setServiceParent(self)
        return self.control


def makeNodeService(
    reactor, config: NodeConfig, *, resolver=None, listen: bool = True
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
    @param resolver: the L{IResolver} for C{config.multiNotify}; by default
        one made from the system's resolver configuration.
    @param listen: C{False} to leave the socket out: the caller connects
        C{protocol} itself (tests do, to an in-memory network).
    @raise ValueError: when a peer of C{config.peers} cannot be made or
        registered (a factory that fails, makes no peer, or a peer whose id
        is taken).
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
        internet.UDPServer(
            listeners["udp"].port,
            node.protocol,
            interface=listeners["udp"].host,
            maxPacketSize=MAX_DATAGRAM,
            reactor=reactor,
        ).setServiceParent(node)
    _addStreams(reactor, node, config, listeners if listen else {})
    seeds = list(config.notificationAddresses)
    expand = []
    if config.multiNotify:
        expand = [uri for uri in seeds if ipLiteral(uri.host) is None]
        seeds = [uri for uri in seeds if ipLiteral(uri.host) is not None]
        if expand and resolver is None:
            from twisted.names import client

            resolver = client.createResolver(reactor=reactor)
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
    node.nodeManager.setServiceParent(node)
    node.bus = DMQBus(
        reactor,
        node.protocol,
        node.nodeManager,
        numWorkers=config.numWorkers,
        maxQueue=config.maxQueue,
        handlerTimeout=config.handlerTimeout,
        notificationChannel=config.notificationChannel,
        resolve=getattr(reactor, "resolve", None),
    )
    node.bus.setServiceParent(node)
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
    node.notification.setServiceParent(node)
    node.ping = PingService(
        reactor, node.notification, node.nodeManager, config.pingInterval, config.pingTimeout
    )
    node.ping.setServiceParent(node)
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
        for name, method in HTableRPC(node.htable).methods().items():
            node.rpc.addMethod(name, method)
    if config.dialog:
        node.dialog = DialogPeer(reactor, node.bus)
        node.addPeer(node.dialog)
        for name, method in DialogRPC(node.dialog, reactor).methods().items():
            node.rpc.addMethod(name, method)
    # The usrloc peer (Kamailio's dmq_usrloc) and its ul.* RPC methods.
    if config.usrloc:
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
        node.serveControl(reactor, config.control)
    return node


def _sentBy(config: NodeConfig, proto: str) -> Address:
    """
    The C{(host, port)} our Via names for C{proto}: the server address's
    when it is of that transport (the socket may be bound elsewhere, behind
    a NAT), else that transport's listener's, else the server address's.
    """
    address = config.serverAddress
    if (address.transport or "udp") == proto:
        return (address.host, address.port)
    for listener in config.listeners:
        if listener.proto == proto:
            return (listener.host, listener.port)
    return (address.host, address.port)


def _addStreams(reactor, node: DMQNodeService, config: NodeConfig, listeners: Dict[str, ServerSocket]) -> None:
    """
    Give the node its TCP transport, and its TLS one when it has a
    certificate, each listening when C{listeners} has a socket for it: a
    node over UDP may still send to a node over TCP or TLS.
    """
    tls = config.tlsSettings()
    for name in ("tcp", "tls"):
        if name == "tls" and tls is None:
            continue
        stream = SIPStreamTransport(
            reactor, _sentBy(config, name), name, tls=tls if name == "tls" else None,
            T1=config.T1, T2=config.T2, T4=config.T4, maxTransactions=config.maxTransactions,
            maxMessage=config.maxMessageSize, idleTimeout=config.tcpConnectionLifetime,
        )
        node.protocol.addStream(name, stream)
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


def makeService(config: Options, reactor=None) -> DMQNodeService:
    """
    Build the twistd service from parsed L{Options}: the node, then its
    peers (a factory named by C{--peer} is called with the node service and
    must return an L{IDMQPeer} provider), then the control endpoint.

    @raise usage.UsageError: when a C{--peer} factory fails, makes something
        that is not a peer, or a peer whose id is taken.
    """
    if reactor is None:
        from twisted.internet import reactor  # type: ignore[no-redef]
    try:
        return makeNodeService(reactor, config.nodeConfig)
    except _PeerError as e:
        raise usage.UsageError(f"--peer: {e}") from None
