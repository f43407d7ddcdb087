# -*- test-case-name: dmq.test.test_tap -*-
"""
The twistd wiring: L{Options}, named after Kamailio's DMQ module parameters
and read from the command line and from a TOML file (C{--config}), and
L{makeService}, which builds one node with its control endpoint and peers.

L{makeNodeService} is the same wiring for programs that embed a node instead
of running it under twistd.
"""

from __future__ import annotations

import difflib
import ipaddress
import math
import socket
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Union

import attr
from twisted.application import internet, service
from twisted.internet import endpoints
from twisted.internet.defer import Deferred, succeed
from twisted.logger import Logger
from twisted.python import reflect, usage

from dmq import __version__, sip
from dmq.bus import DEFAULT_NOTIFICATION_CHANNEL, DMQBus, checkPeerId
from dmq.control import ControlResource, ControlService, RPCMethods, addDMQMethods
from dmq.interfaces import IDMQPeer
from dmq.metrics import HandlerLatency, nodeRegistry
from dmq.node import DEFAULT_MAX_NODES, NodeManager, ipLiteral, parseNodeAddress
from dmq.peers.htable import PEER_ID as HTABLE_PEER_ID, HTablePeer, HTableRPC, TableSpec, parseTableSpec
from dmq.notification import NotificationPeer
from dmq.ping import MIN_PING_INTERVAL, PingService
from dmq.transaction import T1, T2, T4
from dmq.transport import MAX_DATAGRAM, SIPDatagramProtocol

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib  # type: ignore[no-redef]

__all__ = [
    "Options",
    "makeService",
    "makeNodeService",
    "DMQNodeService",
    "parseServerAddress",
    "parseNodeAddress",
    "parseServerSocket",
    "loadPeer",
]

Address = Tuple[str, int]


def parseServerAddress(text: str) -> sip.URI:
    """
    Parse and check a C{server_address}: a C{sip:} URI with an IP address we
    can bind and a port, over UDP.

    @raise ValueError: saying what is wrong.
    """
    try:
        uri = sip.parseURI(text)
    except sip.SIPParseError as e:
        raise ValueError(f"{text!r} is not a SIP URI: {e.reason}") from None
    if uri.scheme != "sip":
        raise ValueError(f"{text!r}: only sip: URIs are supported (TLS is not yet)")
    if uri.user is not None:
        raise ValueError(f"{text!r}: a node address has no user part")
    if ipLiteral(uri.host) is None:
        raise ValueError(f"{text!r}: the host must be the IP address to listen on, not a name")
    if uri.port is None or uri.port == 0:
        raise ValueError(f"{text!r}: give the port explicitly, e.g. sip:{uri.host}:5060")
    if uri.transport not in (None, "udp"):
        raise ValueError(f"{text!r}: only UDP is supported so far, not {uri.transport}")
    return uri


@attr.frozen
class ServerSocket:
    """
    A socket as Kamailio writes it in C{listen} and C{server_socket}:
    C{proto:host:port}.
    """

    proto: str
    host: str
    port: int

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.proto}:{host}:{self.port}"


def parseServerSocket(text: str) -> ServerSocket:
    """
    Parse a C{server_socket}: C{udp:HOST:PORT}, an IPv6 host in brackets.

    @raise ValueError: saying what is wrong.
    """
    proto, _, rest = text.partition(":")
    host, colon, portText = rest.rpartition(":")
    if not proto or not colon or not host:
        raise ValueError(f"{text!r} is not proto:host:port, e.g. udp:127.0.0.1:5060")
    if proto.lower() != "udp":
        raise ValueError(f"{text!r}: only udp sockets are supported so far, not {proto}")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if ipLiteral(host) is None:
        raise ValueError(f"{text!r}: the host must be an IP address, not {host!r}")
    if not portText.isdigit() or not 1 <= int(portText) <= 65535:
        raise ValueError(f"{text!r}: the port must be 1 to 65535, not {portText!r}")
    return ServerSocket("udp", str(ipaddress.ip_address(host)), int(portText))


def _checkLocal(host: str) -> None:
    """
    Check that C{host} is an address of this host, by binding a UDP socket
    to it on any port.

    @raise ValueError: if it is not.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        with socket.socket(family, socket.SOCK_DGRAM) as probe:
            probe.bind((host, 0))
    except OSError as e:
        raise ValueError(f"{host} is not an address of this host ({e.strerror})") from None


def _number(minimum: Optional[float] = None, integer: bool = False) -> Callable[[str], Any]:
    """
    A parser of a numeric value: at least C{minimum}, or positive when
    C{minimum} is C{None}.
    """

    def parse(text: str):
        kind = "a whole number" if integer else "a number"
        try:
            value = int(text) if integer else float(text)
        except ValueError:
            raise ValueError(f"{text!r} is not {kind}") from None
        if not math.isfinite(value):
            raise ValueError(f"{text!r} is not {kind}")
        if minimum is None and value <= 0:
            raise ValueError(f"must be positive, not {text}")
        if minimum is not None and value < minimum:
            raise ValueError(f"must be at least {minimum:g}, not {text}")
        return value

    return parse


def _boolean(text: str) -> bool:
    lowered = text.lower()
    if lowered in ("1", "yes", "on", "true"):
        return True
    if lowered in ("0", "no", "off", "false"):
        return False
    raise ValueError(f"expected 0 or 1, not {text!r}")


def _controlEndpoint(text: str) -> str:
    """
    Check the syntax of a server endpoint description; the endpoint itself
    is made by L{makeService} with the reactor.
    """
    try:
        endpoint = endpoints.serverFromString(_NoReactor(), text)
    except Exception as e:
        raise ValueError(f"{text!r} is not a Twisted server endpoint: {e}") from None
    # Twisted takes any number as a TCP port; bind() would refuse it later.
    port = getattr(endpoint, "_port", None)
    if isinstance(port, int) and not 0 <= port <= 65535:
        raise ValueError(f"{text!r}: port {port} is out of range")
    return text


class _NoReactor:
    """
    Stands for the reactor while an endpoint description is only parsed:
    nothing listens then.
    """


def loadPeer(name: str) -> object:
    """
    Import the object named C{name} for C{--peer}: an L{IDMQPeer} provider,
    or a callable that makes one (a factory, or a class implementing
    L{IDMQPeer}), which L{makeService} calls with the L{DMQNodeService}.

    @raise ValueError: if it cannot be imported or is neither.
    """
    try:
        found = reflect.namedAny(name)
    except Exception as e:
        raise ValueError(f"cannot import {name!r}: {e}") from None
    if not IDMQPeer.providedBy(found) and not callable(found):
        raise ValueError(
            f"{name!r} is neither an IDMQPeer provider nor a callable that makes one"
        )
    return found


@attr.frozen
class _Parameter:
    """
    One option, named as Kamailio's module parameter (C{ping_interval} is
    C{--ping-interval} and the C{ping_interval} key of the config file).
    """

    name: str
    default: Any
    parse: Callable[[str], Any]
    help: str
    short: Optional[str] = None
    repeatable: bool = False
    flag: bool = False

    @property
    def option(self) -> str:
        return self.name.replace("_", "-")

    def describe(self) -> str:
        if self.repeatable or self.flag or self.default is None:
            return self.help
        default = int(self.default) if isinstance(self.default, bool) else self.default
        return f"{self.help} [default: {default}]"


_PARAMETERS = [
    _Parameter(
        "server_address",
        "sip:127.0.0.1:5060",
        parseServerAddress,
        "This node's SIP URI, sip:IP:PORT: how the other nodes know it, and the UDP socket it binds.",
        short="s",
    ),
    _Parameter(
        "server_socket",
        None,
        parseServerSocket,
        "The socket to bind, as Kamailio writes it, udp:IP:PORT, when it is not --server-address's "
        "(say, behind a NAT) [default: the one of --server-address].",
    ),
    _Parameter(
        "notification_address",
        (),
        parseNodeAddress,
        "A node to join the bus through (repeatable).",
        short="n",
        repeatable=True,
    ),
    _Parameter("notification_channel", DEFAULT_NOTIFICATION_CHANNEL, checkPeerId, "The membership peer's name."),
    _Parameter(
        "multi_notify",
        False,
        _boolean,
        "Resolve notification addresses given by name to all their IPv4 and IPv6 addresses, each a seed.",
        flag=True,
    ),
    _Parameter("num_workers", 2, _number(1, True), "How many peer calls run at once."),
    _Parameter("ping_interval", 60.0, _number(MIN_PING_INTERVAL), "Seconds between pings (minimum 1)."),
    _Parameter(
        "ping_timeout",
        None,
        _number(),
        "Seconds after which an unanswered ping is a timeout [default: Timer F, 64*T1].",
    ),
    _Parameter(
        "remove_inactive",
        True,
        _boolean,
        "1: a node that times out is disabled, then removed; 0: kept as not_active.",
    ),
    _Parameter(
        "fail_count_enabled", False, _boolean, "1: count timeouts before changing a node's state (Kamailio 6.1)."
    ),
    _Parameter(
        "fail_count_threshold_not_active",
        0,
        _number(0, True),
        "Timeouts past which an active node becomes not_active.",
    ),
    _Parameter(
        "fail_count_threshold_disabled",
        1,
        _number(0, True),
        "Timeouts past which a not_active node becomes disabled.",
    ),
    _Parameter("t1", T1, _number(), "SIP timer T1 in seconds (retransmission base; Timer F is 64*T1)."),
    _Parameter("t2", T2, _number(), "SIP timer T2 in seconds (retransmission cap)."),
    _Parameter("t4", T4, _number(), "SIP timer T4 in seconds (how long duplicates are absorbed)."),
    _Parameter("max_transactions", 10000, _number(1, True), "Cap on live transactions each way."),
    _Parameter(
        "max_nodes",
        DEFAULT_MAX_NODES,
        _number(1, True),
        "Cap on the nodes received node lists may bring in, and on the lines read from one.",
    ),
    _Parameter("max_queue", 1024, _number(1, True), "Cap on requests waiting for a worker; past it, 503."),
    _Parameter(
        "handler_timeout",
        10.0,
        _number(),
        "Seconds a peer has to answer before the request gets 500.",
    ),
    _Parameter(
        "control",
        None,
        _controlEndpoint,
        "Serve JSON-RPC at POST /RPC and metrics at GET /metrics on this Twisted server endpoint, "
        "e.g. tcp:5080:interface=127.0.0.1 [default: no control endpoint].",
    ),
    _Parameter(
        "htable",
        (),
        parseTableSpec,
        "Serve the htable peer with this hash table, in Kamailio's syntax, e.g. "
        "'kdmq=>size=8;autoexpire=0;dmqreplicate=1' (repeatable; dmqreplicate=1 tables "
        "are replicated).",
        repeatable=True,
    ),
    _Parameter(
        "htable_init_sync",
        False,
        _boolean,
        "Fetch the htable peer's replicated tables from the bus on joining (Kamailio's "
        "htable dmq_init_sync).",
        flag=True,
    ),
    _Parameter(
        "peer",
        (),
        lambda name: (name, loadPeer(name)),
        "A peer to register, by dotted name: an IDMQPeer provider, or a callable that makes one "
        "when called with the node service (repeatable).",
        repeatable=True,
    ),
]

_BY_NAME = {parameter.name: parameter for parameter in _PARAMETERS}

# Kamailio parameters with no meaning here, refused by name so that a
# config written for Kamailio gets a clear answer.
_KAMAILIO_ONLY = {"worker_usleep", "init_with_single", "event_callback", "sl_send"}


def _configValue(parameter: _Parameter, value: object) -> Any:
    """
    A config file value as the text the command line would give.
    """
    if parameter.repeatable:
        values = list(value) if isinstance(value, (list, tuple)) else [value]
        return [_configScalar(one) for one in values]
    return _configScalar(value)


def _configScalar(value: object) -> Optional[str]:
    if value is None:
        # A default of "none".
        return None
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, (int, float, str)):
        return str(value)
    kind = {list: "an array", dict: "a table"}.get(type(value), type(value).__name__)
    raise ValueError(f"expected a string or a number, not {kind}")


def _readConfig(path: str) -> Dict[str, Tuple[str, Any]]:
    """
    Read a TOML config file.

    @return: for each parameter in it, where it came from (for errors) and
        its text.
    @raise usage.UsageError: if the file cannot be read, is not TOML, or has
        a key that is not a parameter or a value of the wrong shape.
    """
    try:
        with open(path, "rb") as f:
            data = tomllib.load(f)
    except OSError as e:
        raise usage.UsageError(f"--config: cannot read {path}: {e.strerror}") from None
    except tomllib.TOMLDecodeError as e:
        raise usage.UsageError(f"--config: {path} is not valid TOML: {e}") from None
    given: Dict[str, Tuple[str, Any]] = {}
    for key, value in data.items():
        where = f"--config {path}: {key}"
        parameter = _BY_NAME.get(key)
        if parameter is None:
            if key in _KAMAILIO_ONLY:
                raise usage.UsageError(f"{where}: a Kamailio parameter that dmq does not support")
            close = difflib.get_close_matches(key, list(_BY_NAME), n=1)
            hint = f" (did you mean {close[0]}?)" if close else ""
            raise usage.UsageError(f"{where}: unknown parameter{hint}")
        try:
            given[key] = (where, _configValue(parameter, value))
        except ValueError as e:
            raise usage.UsageError(f"{where}: {e}") from None
    return given


class Options(usage.Options):
    """
    C{twistd dmq} options.  Each long name is a Kamailio DMQ module parameter
    with C{-} for C{_}; C{--config FILE} reads them from a TOML file with
    Kamailio's names as keys, and the command line overrides the file (a
    repeatable option given on the command line replaces the file's list).

    After parsing, each option holds its value: C{server-address} and
    C{notification-address} L{sip.URI}s, C{server-socket} a L{ServerSocket}
    or C{None}, C{bind-address} the C{(host, port)} to bind, numbers and
    booleans as such, C{control} an endpoint description or C{None}, C{peer}
    a list of C{(name, object)} from L{loadPeer}.
    """

    synopsis = "[options]"
    longdesc = (
        "Run a DMQ node: a member of a Kamailio-compatible KDMQ bus. "
        "Option names follow Kamailio's dmq module parameters."
    )

    optParameters = [
        [parameter.option, parameter.short, None, parameter.describe()]
        for parameter in _PARAMETERS
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
        for parameter in _PARAMETERS
        if parameter.flag
    ]

    def __init__(self) -> None:
        usage.Options.__init__(self)
        self._repeated: Dict[str, List[str]] = {
            parameter.name: [] for parameter in _PARAMETERS if parameter.repeatable
        }

    # The repeatable options; their help, as usage shows it, is the
    # docstring, taken from the table.

    def opt_notification_address(self, address: str) -> None:
        self._repeated["notification_address"].append(address)

    opt_notification_address.__doc__ = _BY_NAME["notification_address"].help
    opt_n = opt_notification_address

    def opt_htable(self, spec: str) -> None:
        self._repeated["htable"].append(spec)

    opt_htable.__doc__ = _BY_NAME["htable"].help

    def opt_peer(self, name: str) -> None:
        self._repeated["peer"].append(name)

    opt_peer.__doc__ = _BY_NAME["peer"].help

    def postOptions(self) -> None:
        given: Dict[str, Tuple[str, Any]] = {}
        if self["config"] is not None:
            given.update(_readConfig(self["config"]))
        for parameter in _PARAMETERS:
            where = f"--{parameter.option}"
            if parameter.repeatable:
                if self._repeated[parameter.name]:
                    given[parameter.name] = (where, self._repeated[parameter.name])
            elif parameter.flag:
                if self[parameter.option]:
                    given[parameter.name] = (where, "1")
            elif self[parameter.option] is not None:
                given[parameter.name] = (where, self[parameter.option])

        origin: Dict[str, str] = {}
        for parameter in _PARAMETERS:
            origin[parameter.name], text = given.get(
                parameter.name, (f"--{parameter.option}", _configValue(parameter, parameter.default))
            )
            try:
                if parameter.repeatable:
                    value = [parameter.parse(one) for one in text]
                else:
                    value = None if text is None else parameter.parse(text)
            except ValueError as e:
                raise usage.UsageError(f"{origin[parameter.name]}: {e}") from None
            self[parameter.option] = value

        self._checkTogether(origin)

    def _checkTogether(self, origin: Dict[str, str]) -> None:
        address: sip.URI = self["server-address"]
        serverSocket: Optional[ServerSocket] = self["server-socket"]
        if serverSocket is None:
            self["bind-address"] = (address.host, address.port)
            bindOrigin = origin["server_address"]
        else:
            self["bind-address"] = (serverSocket.host, serverSocket.port)
            bindOrigin = origin["server_socket"]
        try:
            _checkLocal(self["bind-address"][0])
        except ValueError as e:
            raise usage.UsageError(f"{bindOrigin}: {e}") from None
        if self["t2"] < self["t1"]:
            raise usage.UsageError(f"{origin['t2']}: must not be smaller than t1 ({self['t1']:g})")
        if self["handler-timeout"] >= 64 * self["t1"]:
            raise usage.UsageError(
                f"{origin['handler_timeout']}: must be shorter than Timer F (64*T1 = "
                f"{64 * self['t1']:g} s), or senders see a timeout instead of our 500"
            )
        tables = [spec.name for spec in self["htable"]]
        for name in tables:
            if tables.count(name) > 1:
                raise usage.UsageError(f"{origin['htable']}: the table {name!r} is declared twice")
        if self["htable-init-sync"] and not self["htable"]:
            raise usage.UsageError(f"{origin['htable_init_sync']}: needs at least one --htable")
        taken = {self["notification-channel"]: "the notification channel"}
        if self["htable"]:
            taken[HTABLE_PEER_ID] = "the htable peer (--htable)"
        for name, found in self["peer"]:
            if not IDMQPeer.providedBy(found):
                # A factory: its peer's id is known once it is called.
                continue
            try:
                peerId = checkPeerId(found.peerId)
            except ValueError as e:
                raise usage.UsageError(f"{origin['peer']}: {name}: bad peer id: {e}") from None
            if peerId in taken:
                raise usage.UsageError(
                    f"{origin['peer']}: {name}: duplicate peer id {peerId!r}, already {taken[peerId]}"
                )
            taken[peerId] = f"the peer {name}"


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
        self.rpc = RPCMethods()
        self.metrics = nodeRegistry(self)
        self.handlerLatency = HandlerLatency()
        self.control: Optional[ControlService] = None
        self.htable: Optional[HTablePeer] = None

    def startService(self) -> None:
        service.MultiService.startService(self)
        host, port = self.bindAddress
        self._log.info(
            "dmq {version} node {node} listening on UDP {address}; "
            "notification addresses: {seeds}; peers: {peers}; control: {control}",
            version=__version__,
            node=self.nodeManager.localNode.uri.toString(),
            address=f"[{host}]:{port}" if ":" in host else f"{host}:{port}",
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
        endpoint = endpoints.serverFromString(reactor, description)
        self.control = ControlService(endpoint, ControlResource(self.rpc, self.metrics), description)
        self.control.setServiceParent(self)
        return self.control


def makeNodeService(
    reactor,
    serverAddress: sip.URI,
    notificationAddresses: Sequence[sip.URI] = (),
    notificationChannel: str = DEFAULT_NOTIFICATION_CHANNEL,
    numWorkers: int = 2,
    pingInterval: float = 60.0,
    pingTimeout: Optional[float] = None,
    removeInactive: bool = True,
    failCountEnabled: bool = False,
    failCountThresholdNotActive: int = 0,
    failCountThresholdDisabled: int = 1,
    T1: float = T1,
    T2: float = T2,
    T4: float = T4,
    maxTransactions: int = 10000,
    maxNodes: int = DEFAULT_MAX_NODES,
    maxQueue: int = 1024,
    handlerTimeout: float = 10.0,
    multiNotify: bool = False,
    resolver=None,
    listen: bool = True,
    bindAddress: Optional[Address] = None,
    control: Optional[str] = None,
    htables: Sequence[Union[TableSpec, str]] = (),
    htableInitSync: bool = False,
) -> DMQNodeService:
    """
    Build a node listening on C{serverAddress}.  Register your peers on the
    returned service's C{bus} (or with its C{addPeer}) before or after
    starting it.

    @param reactor: provides C{IReactorTime} and, when C{listen} is true,
        C{IReactorUDP}; with C{control}, what its endpoint needs (say
        C{IReactorTCP}).
    @param multiNotify: resolve notification addresses named by a host name
        into one seed per IPv4 and IPv6 address (Kamailio's C{multi_notify}).
    @param resolver: the L{IResolver} for C{multiNotify}; by default one
        made from the system's resolver configuration.
    @param listen: C{False} to leave the socket out: the caller connects
        C{protocol} itself (tests do, to an in-memory network).
    @param bindAddress: the C{(host, port)} to bind, when it is not the one
        of C{serverAddress} (Kamailio's C{server_socket}).
    @param control: a server endpoint description on which to serve the
        control endpoint, or C{None}.
    @param htables: tables for an L{HTablePeer} (Kamailio's htable
        replication), as L{TableSpec}s or in Kamailio's syntax; with none,
        there is no htable peer.  It is the node's C{htable} attribute, and its
        C{htable.*} control methods are registered.
    @param htableInitSync: the htable peer fetches the replicated tables from
        the bus on joining.
    """
    node = DMQNodeService()
    node.seeds = list(notificationAddresses)
    host, port = serverAddress.host, serverAddress.port
    node.bindAddress = bindAddress or (host, port)
    node.protocol = SIPDatagramProtocol(
        reactor, (host, port), T1=T1, T2=T2, T4=T4, maxTransactions=maxTransactions
    )
    if listen:
        internet.UDPServer(
            node.bindAddress[1],
            node.protocol,
            interface=node.bindAddress[0],
            maxPacketSize=MAX_DATAGRAM,
            reactor=reactor,
        ).setServiceParent(node)
    seeds = list(notificationAddresses)
    expand = []
    if multiNotify:
        expand = [uri for uri in seeds if ipLiteral(uri.host) is None]
        seeds = [uri for uri in seeds if ipLiteral(uri.host) is not None]
        if expand and resolver is None:
            from twisted.names import client

            resolver = client.createResolver(reactor=reactor)
    node.nodeManager = NodeManager(
        reactor,
        serverAddress,
        seeds,
        removeInactive=removeInactive,
        failCountEnabled=failCountEnabled,
        failCountThresholdNotActive=failCountThresholdNotActive,
        failCountThresholdDisabled=failCountThresholdDisabled,
        maxNodes=maxNodes,
    )
    node.nodeManager.setServiceParent(node)
    node.bus = DMQBus(
        reactor,
        node.protocol,
        node.nodeManager,
        numWorkers=numWorkers,
        maxQueue=maxQueue,
        handlerTimeout=handlerTimeout,
        notificationChannel=notificationChannel,
        resolve=getattr(reactor, "resolve", None),
    )
    node.bus.setServiceParent(node)
    node.bus.latencyObserver = node.handlerLatency.observe
    node.notification = NotificationPeer(
        reactor,
        node.bus,
        node.nodeManager,
        peerId=notificationChannel,
        expandSeeds=expand,
        resolver=resolver,
    )
    node.bus.registerPeer(node.notification)
    node.notification.setServiceParent(node)
    node.ping = PingService(
        reactor, node.notification, node.nodeManager, pingInterval, pingTimeout
    )
    node.ping.setServiceParent(node)
    addDMQMethods(node.rpc, node)
    if htables:
        node.htable = HTablePeer(reactor, node.bus, htables, initSync=htableInitSync)
        node.addPeer(node.htable)
        for name, method in HTableRPC(node.htable).methods().items():
            node.rpc.addMethod(name, method)
    if control is not None:
        node.serveControl(reactor, control)
    return node


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
    node = makeNodeService(
        reactor,
        config["server-address"],
        config["notification-address"],
        notificationChannel=config["notification-channel"],
        numWorkers=config["num-workers"],
        pingInterval=config["ping-interval"],
        pingTimeout=config["ping-timeout"],
        removeInactive=config["remove-inactive"],
        failCountEnabled=config["fail-count-enabled"],
        failCountThresholdNotActive=config["fail-count-threshold-not-active"],
        failCountThresholdDisabled=config["fail-count-threshold-disabled"],
        T1=config["t1"],
        T2=config["t2"],
        T4=config["t4"],
        maxTransactions=config["max-transactions"],
        maxNodes=config["max-nodes"],
        maxQueue=config["max-queue"],
        handlerTimeout=config["handler-timeout"],
        multiNotify=config["multi-notify"],
        bindAddress=config["bind-address"],
        htables=config["htable"],
        htableInitSync=config["htable-init-sync"],
    )
    for name, found in config["peer"]:
        _addNamedPeer(node, name, found)
    if config["control"] is not None:
        node.serveControl(reactor, config["control"])
    return node


def _addNamedPeer(node: DMQNodeService, name: str, found: object) -> None:
    peer = found
    if not IDMQPeer.providedBy(found):
        try:
            peer = found(node)  # type: ignore[operator]
        except Exception as e:
            raise usage.UsageError(f"--peer: {name}: calling it with the node failed: {e!r}") from None
        if not IDMQPeer.providedBy(peer):
            raise usage.UsageError(
                f"--peer: {name}: made {peer!r}, which does not provide IDMQPeer"
            )
    try:
        node.addPeer(peer)
    except (TypeError, ValueError) as e:
        raise usage.UsageError(f"--peer: {name}: {e}") from None
