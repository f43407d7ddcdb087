# -*- test-case-name: dmq.test.test_tap -*-
"""
The twistd wiring: L{Options} named after Kamailio's DMQ module parameters,
and L{makeService}, which builds one node.

L{makeNodeService} is the same wiring for programs that embed a node instead
of running it under twistd.
"""

from __future__ import annotations

import ipaddress
from typing import List, Optional, Sequence

from twisted.application import internet, service
from twisted.internet.defer import Deferred, succeed
from twisted.logger import Logger
from twisted.python import usage

from dmq import __version__, sip
from dmq.bus import DEFAULT_NOTIFICATION_CHANNEL, DMQBus
from dmq.node import NodeManager
from dmq.notification import NotificationPeer
from dmq.ping import MIN_PING_INTERVAL, PingService
from dmq.transaction import T1, T2, T4
from dmq.transport import MAX_DATAGRAM, SIPDatagramProtocol

__all__ = ["Options", "makeService", "makeNodeService", "DMQNodeService", "parseServerAddress"]


def _isIPAddress(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


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
    try:
        ipaddress.ip_address(uri.host)
    except ValueError:
        raise ValueError(
            f"{text!r}: the host must be the IP address to listen on, not a name"
        ) from None
    if uri.port is None or uri.port == 0:
        raise ValueError(f"{text!r}: give the port explicitly, e.g. sip:{uri.host}:5060")
    if uri.transport not in (None, "udp"):
        raise ValueError(f"{text!r}: only UDP is supported so far, not {uri.transport}")
    return uri


def parseNodeAddress(text: str) -> sip.URI:
    """
    Parse a C{notification_address}: a C{sip:} URI naming a node.

    @raise ValueError: saying what is wrong.
    """
    try:
        uri = sip.parseURI(text)
    except sip.SIPParseError as e:
        raise ValueError(f"{text!r} is not a SIP URI: {e.reason}") from None
    if uri.transport not in (None, "udp"):
        raise ValueError(f"{text!r}: only UDP is supported so far, not {uri.transport}")
    return uri


def _number(name: str, minimum: Optional[float] = None, integer: bool = False):
    """
    A coercer for a numeric option: at least C{minimum}, or positive when
    C{minimum} is C{None}.
    """

    def check(text: str):
        try:
            value = int(text) if integer else float(text)
        except ValueError:
            kind = "a whole number" if integer else "a number"
            raise usage.UsageError(f"--{name}: {text!r} is not {kind}") from None
        if minimum is None and value <= 0:
            raise usage.UsageError(f"--{name}: must be positive, not {text}")
        if minimum is not None and value < minimum:
            raise usage.UsageError(f"--{name}: must be at least {minimum:g}, not {text}")
        return value

    check.coerceDoc = ""  # type: ignore[attr-defined]
    return check


def _flag(name: str):
    def check(text: str) -> bool:
        if text in ("1", "yes", "on", "true"):
            return True
        if text in ("0", "no", "off", "false"):
            return False
        raise usage.UsageError(f"--{name}: expected 0 or 1, not {text!r}")

    check.coerceDoc = "0 or 1."  # type: ignore[attr-defined]
    return check


class Options(usage.Options):
    """
    C{twistd dmq} options.  Each long name is a Kamailio DMQ module parameter
    with C{-} for C{_}.
    """

    synopsis = "[options]"
    longdesc = (
        "Run a DMQ node: a member of a Kamailio-compatible KDMQ bus. "
        "Option names follow Kamailio's dmq module parameters."
    )

    optParameters = [
        ["server-address", "s", "sip:127.0.0.1:5060", "This node's SIP URI; we listen on and send from it."],
        ["notification-channel", None, DEFAULT_NOTIFICATION_CHANNEL, "The membership peer's name."],
        ["num-workers", None, 2, "How many peer calls run at once.", _number("num-workers", 1, True)],
        ["ping-interval", None, 60, "Seconds between pings (minimum 1).", _number("ping-interval", MIN_PING_INTERVAL)],
        ["ping-timeout", None, None, "Seconds after which an unanswered ping is a timeout (default: Timer F, 64*T1).", _number("ping-timeout")],
        ["remove-inactive", None, True, "1: a node that times out is disabled, then removed; 0: kept as not_active.", _flag("remove-inactive")],
        ["fail-count-enabled", None, False, "Count timeouts before changing a node's state (Kamailio 6.1).", _flag("fail-count-enabled")],
        ["fail-count-threshold-not-active", None, 0, "Timeouts past which an active node becomes not_active.", _number("fail-count-threshold-not-active", 0, True)],
        ["fail-count-threshold-disabled", None, 1, "Timeouts past which a not_active node becomes disabled.", _number("fail-count-threshold-disabled", 0, True)],
        ["t1", None, T1, "SIP timer T1 in seconds (retransmission base; Timer F is 64*T1).", _number("t1")],
        ["t2", None, T2, "SIP timer T2 in seconds (retransmission cap).", _number("t2")],
        ["t4", None, T4, "SIP timer T4 in seconds (how long duplicates are absorbed).", _number("t4")],
        ["max-transactions", None, 10000, "Cap on live transactions each way.", _number("max-transactions", 1, True)],
        ["max-queue", None, 1024, "Cap on requests waiting for a worker; past it, 503.", _number("max-queue", 1, True)],
        ["handler-timeout", None, 10.0, "Seconds a peer has to answer before the request gets 500.", _number("handler-timeout")],
    ]

    optFlags = [
        ["multi-notify", None, "Resolve notification addresses given by name to all their IPv4 and IPv6 addresses, each a seed."],
    ]

    def __init__(self) -> None:
        usage.Options.__init__(self)
        self["notification-address"] = []

    def opt_notification_address(self, address: str) -> None:
        """
        A node to join the bus through (repeatable).
        """
        try:
            uri = parseNodeAddress(address)
        except ValueError as e:
            raise usage.UsageError(f"--notification-address: {e}") from None
        self["notification-address"].append(uri)

    opt_n = opt_notification_address

    def postOptions(self) -> None:
        try:
            self["server-address"] = parseServerAddress(self["server-address"])
        except ValueError as e:
            raise usage.UsageError(f"--server-address: {e}") from None
        if self["t2"] < self["t1"]:
            raise usage.UsageError("--t2 must not be smaller than --t1")
        if self["handler-timeout"] >= 64 * self["t1"]:
            raise usage.UsageError(
                "--handler-timeout must be shorter than Timer F (64*T1), "
                "or senders see a timeout instead of our 500"
            )


class DMQNodeService(service.MultiService):
    """
    One node: the SIP socket, the node manager, the bus, the membership peer
    and the ping.  Children start in the order they were added and stop in
    the reverse order, each only once the previous one has finished stopping,
    so that our goodbye is sent while the bus and the socket still work.

    @ivar protocol: the L{SIPDatagramProtocol}.
    @ivar nodeManager: the L{NodeManager}.
    @ivar bus: the L{DMQBus}; register peers on it.
    @ivar notification: the L{NotificationPeer}.
    @ivar ping: the L{PingService}.
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

    def startService(self) -> None:
        service.MultiService.startService(self)
        self._log.info(
            "dmq {version} node {node} listening on UDP {host}:{port}; "
            "notification addresses: {seeds}; peers: {peers}",
            version=__version__,
            node=self.nodeManager.localNode.uri.toString(),
            host=self.protocol.sentBy[0],
            port=self.protocol.sentBy[1],
            seeds=", ".join(uri.toString() for uri in self.seeds) or "none",
            peers=", ".join(peer.peerId for peer in self.bus.peers),
        )

    def stopService(self) -> Deferred:
        service.Service.stopService(self)
        d: Deferred = succeed(None)
        for child in reversed(list(self)):
            d.addCallback(lambda _, child=child: child.stopService() if child.running else None)
        return d


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
    maxQueue: int = 1024,
    handlerTimeout: float = 10.0,
    multiNotify: bool = False,
    resolver=None,
    listen: bool = True,
) -> DMQNodeService:
    """
    Build a node listening on C{serverAddress}.  Register your peers on the
    returned service's C{bus} before or after starting it.

    @param reactor: provides C{IReactorTime} and, when C{listen} is true,
        C{IReactorUDP}.
    @param multiNotify: resolve notification addresses named by a host name
        into one seed per IPv4 and IPv6 address (Kamailio's C{multi_notify}).
    @param resolver: the L{IResolver} for C{multiNotify}; by default one
        made from the system's resolver configuration.
    @param listen: C{False} to leave the socket out: the caller connects
        C{protocol} itself (tests do, to an in-memory network).
    """
    node = DMQNodeService()
    node.seeds = list(notificationAddresses)
    host, port = serverAddress.host, serverAddress.port
    node.protocol = SIPDatagramProtocol(
        reactor, (host, port), T1=T1, T2=T2, T4=T4, maxTransactions=maxTransactions
    )
    if listen:
        internet.UDPServer(
            port, node.protocol, interface=host, maxPacketSize=MAX_DATAGRAM, reactor=reactor
        ).setServiceParent(node)
    seeds = list(notificationAddresses)
    expand = []
    if multiNotify:
        expand = [uri for uri in seeds if not _isIPAddress(uri.host)]
        seeds = [uri for uri in seeds if _isIPAddress(uri.host)]
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
    return node


def makeService(config: Options, reactor=None) -> DMQNodeService:
    """
    Build the twistd service from parsed L{Options}.
    """
    if reactor is None:
        from twisted.internet import reactor  # type: ignore[no-redef]
    return makeNodeService(
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
        maxQueue=config["max-queue"],
        handlerTimeout=config["handler-timeout"],
        multiNotify=config["multi-notify"],
    )
