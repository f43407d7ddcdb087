# -*- test-case-name: dmq.test.test_config -*-
"""
A node's settings: L{NodeConfig}, one field per Kamailio DMQ module
parameter, each declared once with its Kamailio name, default, parser (from
L{dmq.settingvalues}) and help; and the reading of them from text, as the
command line and a TOML file (C{--config}) give them.

L{dmq.tap} turns the table into twistd options and a L{NodeConfig} into a
node.  A program that embeds a node builds a L{NodeConfig} itself::

    NodeConfig(
        serverAddress=parseServerAddress("sip:127.0.0.11:5060"),
        notificationAddresses=(parseNodeAddress("sip:127.0.0.12:5060"),),
    )
"""

from __future__ import annotations

from typing import Any, Callable, Dict, List, Mapping, Optional, Tuple

import attr
from twisted.python import usage

from dmq import sip
from dmq.bus import DEFAULT_NOTIFICATION_CHANNEL, checkPeerId
from dmq.control.guard import checkControl
from dmq.interfaces import IDMQPeer
from dmq.node import DEFAULT_MAX_NODES, parseNodeAddress
from dmq.peers.htable import MAX_BYTES as HTABLE_MAX_BYTES, MAX_CELLS as HTABLE_MAX_CELLS
from dmq.peers.htable import PEER_ID as HTABLE_PEER_ID, TableSpec, parseTableSpec
from dmq.peers.htable.entropy import ENTROPY_PEER_ID
from dmq.ping import MIN_PING_INTERVAL
from dmq.signing import Keyring, loadKeyring
from dmq.trust import Network, parseNetwork
from dmq.probe import PROBE_PEER_ID
from dmq.tls import TLSSettings
# Renamed: NodeConfig has fields of these names.
from dmq.transaction import T1 as _T1, T2 as _T2, T4 as _T4
from dmq.settingvalues import (  # ServerSocket, parseServerAddress, parseServerSocket, loadPeer: re-exported
    Address,
    ServerSocket,
    _boolean,
    _checkLocal,
    _configScalar,
    _controlEndpoint,
    _namedPeer,
    _number,
    _readableFile,
    _tableSpecs,
    _tokenFile,
    loadPeer,
    parseServerAddress,
    parseServerSocket,
)

# dmq.peers.usrloc's limits (wire.py) and peer id, copied so that a node
# without the usrloc peer does not import it (dmq.test.test_imports checks
# that they are equal).
MAX_BATCH_CONTACTS = 150
MAX_BATCH_SIZE = 60000
USRLOC_PEER_ID = "usrloc"

__all__ = [
    "NodeConfig", "ServerSocket", "Parameter", "PARAMETERS", "parseServerAddress", "parseServerSocket",
    "loadPeer", "readConfigFile", "parseSettings",
]


@attr.frozen
class Parameter:
    """
    One setting, named as Kamailio's module parameter (C{ping_interval} is
    C{--ping-interval} and the C{ping_interval} key of the config file), and
    the L{NodeConfig} field it fills.

    @ivar default: the default as the table writes it (text or a number);
        the field's default is this, parsed.
    @ivar parse: the parser of one value's text, raising C{ValueError}.
    @ivar repeatable: the setting is a list, one value per use of the option.
    @ivar flag: a boolean: on the command line, the flags C{--name} (on) and
        C{--no-name} (off), without a value; in a config file, C{0} or C{1}
        (or C{false} or C{true}).
    """

    name: str
    default: Any
    parse: Callable[[str], Any]
    help: str
    short: Optional[str] = None
    repeatable: bool = False
    flag: bool = False
    field: str = ""

    @property
    def option(self) -> str:
        return self.name.replace("_", "-")

    @property
    def negation(self) -> str:
        """
        The command line flag that turns a boolean setting off.
        """
        return f"no-{self.option}"

    def describe(self) -> str:
        """
        The help of the option, with its default.
        """
        if self.flag:
            return f"{self.help} [default: {'on' if self.default else 'off'}]"
        if self.repeatable or self.default is None:
            return self.help
        default = int(self.default) if isinstance(self.default, bool) else self.default
        return f"{self.help} [default: {default}]"

    def configValue(self, value: object) -> Any:
        """
        A config file value (or the default) as the command line's text (a
        list of texts when repeatable); C{ValueError} if of the wrong shape.
        """
        if self.repeatable:
            values = list(value) if isinstance(value, (list, tuple)) else [value]
            return [_configScalar(one) for one in values]
        return _configScalar(value)

    def parseValue(self, text: Any) -> Any:
        """
        Parse the text (a list of texts when repeatable), or raise C{ValueError}.
        """
        if self.repeatable:
            return [self.parse(one) for one in text]
        return None if text is None else self.parse(text)


_PARAMETER = "dmq.parameter"


def _setting(
    name: str, default: Any, parse: Callable[[str], Any], help: str, *, short: Optional[str] = None,
    repeatable: bool = False, flag: bool = False, converter: Optional[Callable[[Any], Any]] = None,
) -> Any:
    """
    Declare one field of L{NodeConfig}: the table row of its setting, whose
    parsed default is the field's.
    """
    parameter = Parameter(name, default, parse, help, short, repeatable, flag)
    parsed = parameter.parseValue(parameter.configValue(default))
    if repeatable:
        return attr.field(default=tuple(parsed), converter=converter or tuple, metadata={_PARAMETER: parameter})
    return attr.field(default=parsed, metadata={_PARAMETER: parameter})


@attr.frozen
class NodeConfig:
    """
    Everything a node is built from: one field per setting, each declared
    with its row of the table, and defaulting to Kamailio's default or ours.
    L{dmq.tap.Options} makes one from the command line and C{--config};
    L{dmq.tap.makeNodeService} makes a node of one.

    A list setting is held as a tuple.  The values are not checked against
    each other here (L{parseSettings} does that for text).
    """

    serverAddress: sip.URI = _setting(
        "server_address", "sip:127.0.0.1:5060", parseServerAddress,
        "This node's SIP URI, sip:IP:PORT[;transport=tcp|tls]: how the other nodes know it, and the "
        "socket it listens on.",
        short="s",
    )
    serverSocket: Optional[ServerSocket] = _setting(
        "server_socket", None, parseServerSocket,
        "The socket to bind, as Kamailio writes it, udp|tcp|tls:IP:PORT, when it is not --server-address's "
        "(say, behind a NAT) [default: the server address's].",
    )
    listen: Tuple[ServerSocket, ...] = _setting(
        "listen", (), parseServerSocket,
        "Another socket to listen on, as Kamailio's listen=: udp|tcp|tls:IP:PORT, one per transport "
        "(repeatable).",
        repeatable=True,
    )
    tlsCertificate: Optional[str] = _setting(
        "tls_certificate", None, _readableFile, "The PEM file of this node's TLS certificate (and chain)."
    )
    tlsPrivateKey: Optional[str] = _setting(
        "tls_private_key", None, _readableFile, "The PEM file of the TLS certificate's private key."
    )
    tlsCA: Optional[str] = _setting(
        "tls_ca", None, _readableFile,
        "The PEM file of the CA(s) TLS peers must have certificates from [default: the system's, "
        "and clients are not asked for one].",
    )
    tlsVerifyClient: Optional[bool] = _setting(
        "tls_verify_client", None, _boolean,
        "A TLS client must present a certificate from --tls-ca (mutual TLS); when off, none is asked "
        "for [default: on when --tls-ca is given].",
        flag=True,
    )
    maxMessageSize: int = _setting(
        "max_message_size", 1024 * 1024, _number(1024, True),
        "The largest SIP message taken or sent over TCP and TLS, in octets (UDP: one datagram).",
    )
    tcpConnectionLifetime: float = _setting(
        "tcp_connection_lifetime", 120.0, _number(),
        "Seconds a TCP or TLS connection may carry nothing before it is closed (Kamailio's name).",
    )
    notificationAddresses: Tuple[sip.URI, ...] = _setting(
        "notification_address", (), parseNodeAddress,
        "A node to join the bus through (repeatable).", repeatable=True,
    )
    notificationChannel: str = _setting(
        "notification_channel", DEFAULT_NOTIFICATION_CHANNEL, checkPeerId, "The membership peer's name."
    )
    multiNotify: bool = _setting(
        "multi_notify", False, _boolean,
        "Resolve notification addresses given by name to all their IPv4 and IPv6 addresses, each a seed.",
        flag=True,
    )
    notifyRefresh: Optional[float] = _setting(
        "notify_refresh", None, _number(),
        "With --multi-notify, seconds between resolutions of the notification addresses' names, so that "
        "new members behind a name are found after the join [default: the ping interval].",
    )
    numWorkers: int = _setting("num_workers", 2, _number(1, True), "How many peer calls run at once.")
    pingInterval: float = _setting(
        "ping_interval", 60.0, _number(MIN_PING_INTERVAL), "Seconds between pings (minimum 1)."
    )
    pingTimeout: Optional[float] = _setting(
        "ping_timeout", None, _number(),
        "Seconds after which an unanswered ping is a timeout [default: Timer F, 64*T1].",
    )
    removeInactive: bool = _setting(
        "remove_inactive", True, _boolean,
        "A node that times out is disabled, then removed (off: kept as not_active).",
        flag=True,
    )
    failCountEnabled: bool = _setting(
        "fail_count_enabled", False, _boolean,
        "Count timeouts before changing a node's state (Kamailio 6.1).", flag=True,
    )
    failCountThresholdNotActive: int = _setting(
        "fail_count_threshold_not_active", 0, _number(0, True),
        "Timeouts past which an active node becomes not_active.",
    )
    failCountThresholdDisabled: int = _setting(
        "fail_count_threshold_disabled", 1, _number(0, True),
        "Timeouts past which a not_active node becomes disabled.",
    )
    probe: bool = _setting(
        "probe", False, _boolean,
        "Run the failure detector with the other dmq nodes (like SWIM, channel dmq_probe): a dead "
        "node is disabled in seconds; Kamailio nodes (they answer it 404) keep the ping's rules.",
        flag=True,
    )
    probeInterval: float = _setting(
        "probe_interval", 0.5, _number(0.1), "Seconds between the detector's rounds (one node each)."
    )
    probeTimeout: float = _setting(
        "probe_timeout", 0.25, _number(),
        "Seconds a direct probe waits before probing through other nodes (under --probe-round).",
    )
    probeRound: float = _setting(
        "probe_round", 1.0, _number(),
        "Seconds a round waits for an answer, direct or indirect, before the node is suspected.",
    )
    probeIndirect: int = _setting(
        "probe_indirect", 3, _number(0, True), "How many nodes a failed direct probe goes through."
    )
    probeSuspicion: float = _setting(
        "probe_suspicion", 1.5, _number(),
        "Seconds a suspect has to refute a suspicion that this node's own check confirmed.",
    )
    probeSuspicionMax: float = _setting(
        "probe_suspicion_max", 6.0, _number(),
        "Seconds a suspect has to refute a suspicion that this node's own check did not confirm.",
    )
    probeRemoveAfter: float = _setting(
        "probe_remove_after", 4.0, _number(0), "Seconds a node the detector disabled stays before removal."
    )
    T1: float = _setting("t1", _T1, _number(), "SIP timer T1 in seconds (retransmission base; Timer F is 64*T1).")
    T2: float = _setting("t2", _T2, _number(), "SIP timer T2 in seconds (retransmission cap).")
    T4: float = _setting("t4", _T4, _number(), "SIP timer T4 in seconds (how long duplicates are absorbed).")
    maxTransactions: int = _setting("max_transactions", 10000, _number(1, True), "Cap on live transactions each way.")
    maxNodes: int = _setting(
        "max_nodes", DEFAULT_MAX_NODES, _number(1, True),
        "Cap on the nodes received node lists may bring in, and on the lines read from one.",
    )
    maxQueue: int = _setting("max_queue", 1024, _number(1, True), "Cap on requests waiting for a worker; past it, 503.")
    maxQueuePerSource: Optional[int] = _setting(
        "max_queue_per_source", None, _number(1, True),
        "Cap on one source address's requests waiting for a worker; past it, that source gets 503 with "
        "Retry-After while others are still answered [default: a quarter of the queue's cap].",
    )
    allowFrom: Tuple[Network, ...] = _setting(
        "allow_from", (), parseNetwork,
        "A network (CIDR) admitted to the bus; with none (and no --secret-file) anyone is. With a keyring, "
        "the networks whose unsigned requests are taken (Kamailio nodes). Repeatable; doc/security.md.",
        repeatable=True,
    )
    keyring: Optional[Keyring] = _setting(
        "secret_file", None, loadKeyring,
        "A file of shared keys, one a line, mode 0600: the first signs our requests and replies, all "
        "verify; unsigned requests are refused but from --allow-from networks.",
    )
    handlerTimeout: float = _setting(
        "handler_timeout", 10.0, _number(), "Seconds a peer has to answer before the request gets 500."
    )
    control: Optional[str] = _setting(
        "control", None, _controlEndpoint,
        "Serve JSON-RPC at POST /RPC, metrics at GET /metrics and a status page at GET / on this Twisted "
        "server endpoint, e.g. tcp:5080, which listens on 127.0.0.1 unless interface= says otherwise. "
        "Any other address, or a unix: socket open beyond mode 600, needs a token "
        "(--control-token-file) [default: no control endpoint].",
    )
    controlTokenFile: Optional[str] = _setting(
        "control_token_file", None, _tokenFile,
        "A file only its owner may read holding the token every control request must carry "
        "(Authorization: Bearer TOKEN; dmqctl --token-file).",
    )
    controlOpenMetrics: bool = _setting(
        "control_open_metrics", False, _boolean,
        "With --control-token-file, serve GET /metrics without the token, for a scraper that cannot send one.",
        flag=True,
    )
    htables: Tuple[TableSpec, ...] = _setting(
        "htable", (), parseTableSpec,
        "Serve the htable peer with this hash table, in Kamailio's syntax, e.g. "
        "'kdmq=>size=8;dmqreplicate=1' (repeatable; dmqreplicate=1 tables are replicated).",
        repeatable=True, converter=_tableSpecs,
    )
    htableInitSync: bool = _setting(
        "htable_init_sync", False, _boolean,
        "Fetch the htable peer's replicated tables from the bus on joining (Kamailio's htable dmq_init_sync).",
        flag=True,
    )
    htableMaxCells: int = _setting(
        "htable_max_cells", HTABLE_MAX_CELLS, _number(1, True),
        "Cap on the cells of each htable; a set past it is refused (503 from the bus, an error from RPC). "
        "Kamailio has none.",
    )
    htableMaxBytes: int = _setting(
        "htable_max_bytes", HTABLE_MAX_BYTES, _number(1, True),
        "Cap on the octets of keys and values of each htable (64 MiB); a set past it is refused as past "
        "--htable-max-cells.",
    )
    htableEntropy: bool = _setting(
        "htable_entropy", False, _boolean,
        "Anti-entropy for the replicated htables between dmq nodes (channel htable_entropy): per-slot "
        "digests compared with one random node a round, differing cells settled by last writer wins.",
        flag=True,
    )
    htableEntropyInterval: float = _setting(
        "htable_entropy_interval", 10.0, _number(), "Seconds between anti-entropy rounds."
    )
    dialog: bool = _setting(
        "dialog", False, _boolean,
        "Serve the dialog peer: keep the calls that Kamailio's dialog module replicates (enable_dmq=1), "
        "readable with dlg.list, and give them back to a Kamailio node that asks (sync).",
        flag=True,
    )
    # The usrloc peer (Kamailio's dmq_usrloc).
    usrloc: bool = _setting(
        "usrloc", False, _boolean,
        "Serve the usrloc peer: the registrations of a Kamailio cluster, replicated as dmq_usrloc does.",
        flag=True,
    )
    usrlocSync: bool = _setting(
        "usrloc_sync", True, _boolean, "Fetch the usrloc contacts from the bus on joining (dmq_usrloc's sync).",
        flag=True,
    )
    usrlocBatchMsgContacts: int = _setting(
        "usrloc_batch_msg_contacts", 1, _number(1, True, MAX_BATCH_CONTACTS),
        f"Contacts per usrloc sync dump message, 1 to {MAX_BATCH_CONTACTS}; over 1, multi messages "
        "(dmq_usrloc's batch_msg_contacts).",
    )
    usrlocBatchMsgSize: int = _setting(
        "usrloc_batch_msg_size", MAX_BATCH_SIZE, _number(1, True, MAX_BATCH_SIZE),
        f"Octets per usrloc multi message, up to {MAX_BATCH_SIZE} (dmq_usrloc's batch_msg_size).",
    )
    usrlocReplicateSocketInfo: int = _setting(
        "usrloc_replicate_socket_info", 0, _number(0, True, 2),
        "Replicate a contact's socket: 0 no, 1 as sock (proto:host:port), 2 as sockname "
        "(dmq_usrloc's replicate_socket_info).",
    )
    peers: Tuple[Tuple[str, object], ...] = _setting(
        "peer", (), _namedPeer,
        "A peer to register, by dotted name: an IDMQPeer provider, or a callable that makes one "
        "when called with the node service (repeatable).",
        repeatable=True,
    )

    @property
    def bindAddress(self) -> Address:
        """
        The C{(host, port)} to bind: C{serverSocket}'s, else C{serverAddress}'s.
        """
        if self.serverSocket is not None:
            return (self.serverSocket.host, self.serverSocket.port)
        # parseServerAddress refuses a serverAddress without a port.
        return (self.serverAddress.host, self.serverAddress.port)  # type: ignore[return-value]

    @property
    def listeners(self) -> List[ServerSocket]:
        """
        Every socket to listen on: C{serverSocket}, else C{serverAddress}'s,
        over its transport, then those of C{listen}.
        """
        if self.serverSocket is not None:
            first = self.serverSocket
        else:
            # parseServerAddress refuses a serverAddress without a port.
            first = ServerSocket(
                self.serverAddress.transport or "udp", self.serverAddress.host, self.serverAddress.port  # type: ignore[arg-type]
            )
        return [first, *self.listen]

    def tlsSettings(self) -> Optional[TLSSettings]:
        """
        The TLS settings, or C{None} when no certificate is given.
        """
        if self.tlsCertificate is None or self.tlsPrivateKey is None:
            return None
        return TLSSettings(self.tlsCertificate, self.tlsPrivateKey, self.tlsCA, self.tlsVerifyClient)


# The table: the settings in the order of NodeConfig's fields, each knowing its field.
PARAMETERS: List[Parameter] = [
    attr.evolve(field.metadata[_PARAMETER], field=field.name) for field in attr.fields(NodeConfig)
]

_BY_NAME = {parameter.name: parameter for parameter in PARAMETERS}

# Kamailio parameters with no meaning here, refused by name so that a
# config written for Kamailio gets a clear answer.
_KAMAILIO_ONLY = {"worker_usleep", "init_with_single", "event_callback", "sl_send"}


def readConfigFile(path: str) -> Dict[str, Tuple[str, Any]]:
    """
    Read a TOML config file.

    @return: for each parameter in it, where it came from (for errors) and
        its text.
    @raise usage.UsageError: if the file cannot be read, is not TOML, or has
        a key that is not a parameter or a value of the wrong shape.
    """
    # Only a node with a config file needs a TOML parser.
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.9 and 3.10
        import tomli as tomllib  # type: ignore[no-redef]

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
            import difflib

            close = difflib.get_close_matches(key, list(_BY_NAME), n=1)
            hint = f" (did you mean {close[0]}?)" if close else ""
            raise usage.UsageError(f"{where}: unknown parameter{hint}")
        try:
            given[key] = (where, parameter.configValue(value))
        except ValueError as e:
            raise usage.UsageError(f"{where}: {e}") from None
    return given


def parseSettings(given: Mapping[str, Tuple[str, Any]]) -> NodeConfig:
    """
    Make a L{NodeConfig} of settings given as text, the others taking their
    defaults, and check them against each other and against this host (the
    socket to bind must be one of its addresses).

    @param given: by Kamailio name, where the setting came from and its
        text (a list of texts when repeatable).
    @raise usage.UsageError: for a bad value or a bad combination, naming
        where the value came from.
    """
    values: Dict[str, Any] = {}
    origin: Dict[str, str] = {}
    for parameter in PARAMETERS:
        origin[parameter.name], text = given.get(
            parameter.name, (f"--{parameter.option}", parameter.configValue(parameter.default))
        )
        try:
            values[parameter.field] = parameter.parseValue(text)
        except ValueError as e:
            raise usage.UsageError(f"{origin[parameter.name]}: {e}") from None
    config = NodeConfig(**values)
    _checkTogether(config, origin)
    return config


def _checkTogether(config: NodeConfig, origin: Dict[str, str]) -> None:
    bindOrigin = origin["server_address" if config.serverSocket is None else "server_socket"]
    try:
        _checkLocal(config.bindAddress[0])
    except ValueError as e:
        raise usage.UsageError(f"{bindOrigin}: {e}") from None
    protos = [listener.proto for listener in config.listeners]
    for proto in set(protos):
        if protos.count(proto) > 1:
            raise usage.UsageError(f"{origin['listen']}: one socket per transport: {proto} twice")
    if config.serverSocket is not None and config.serverSocket.proto != (
        config.serverAddress.transport or "udp"
    ):
        raise usage.UsageError(f"{origin['server_socket']}: not the transport of --server-address")
    if "tls" in protos and (config.tlsCertificate is None or config.tlsPrivateKey is None):
        raise usage.UsageError("listening over TLS needs --tls-certificate and --tls-private-key")
    if config.tlsVerifyClient and config.tlsCA is None:
        raise usage.UsageError(f"{origin['tls_verify_client']}: verifying clients needs --tls-ca")
    if config.tlsCertificate is not None:
        try:
            config.tlsSettings().serverOptions()  # type: ignore[union-attr]
        except Exception as e:
            raise usage.UsageError(f"{origin['tls_certificate']}: unusable: {e}") from None
    if config.T2 < config.T1:
        raise usage.UsageError(f"{origin['t2']}: must not be smaller than t1 ({config.T1:g})")
    if config.handlerTimeout >= 64 * config.T1:
        raise usage.UsageError(
            f"{origin['handler_timeout']}: must be shorter than Timer F (64*T1 = "
            f"{64 * config.T1:g} s), or senders see a timeout instead of our 500"
        )
    if config.control is not None:
        try:
            checkControl(config.control, config.controlTokenFile)
        except ValueError as e:
            raise usage.UsageError(f"{origin['control']}: {e}") from None
    elif config.controlTokenFile is not None:
        raise usage.UsageError(f"{origin['control_token_file']}: needs --control")
    if config.controlOpenMetrics and config.controlTokenFile is None:
        raise usage.UsageError(f"{origin['control_open_metrics']}: needs --control-token-file")
    if config.probeTimeout >= config.probeRound:
        raise usage.UsageError(f"{origin['probe_timeout']}: must be shorter than --probe-round")
    if config.probeSuspicionMax < config.probeSuspicion:
        raise usage.UsageError(f"{origin['probe_suspicion_max']}: must not be shorter than --probe-suspicion")
    tables = [spec.name for spec in config.htables]
    for name in tables:
        if tables.count(name) > 1:
            raise usage.UsageError(f"{origin['htable']}: the table {name!r} is declared twice")
    if config.htableEntropy and not config.htables:
        raise usage.UsageError(f"{origin['htable_entropy']}: needs at least one --htable")
    if config.htableInitSync and not config.htables:
        raise usage.UsageError(f"{origin['htable_init_sync']}: needs at least one --htable")
    taken = {config.notificationChannel: "the notification channel"}
    if config.probe:
        taken[PROBE_PEER_ID] = "the failure detector (--probe)"
    if config.htableEntropy:
        taken[ENTROPY_PEER_ID] = "htable anti-entropy (--htable-entropy)"
    if config.htables:
        taken[HTABLE_PEER_ID] = "the htable peer (--htable)"
    if config.usrloc:
        taken[USRLOC_PEER_ID] = "the usrloc peer (--usrloc)"
    for name, found in config.peers:
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
