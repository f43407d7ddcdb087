# -*- test-case-name: dmq.test.test_config -*-
"""
The parsers of a node's setting values, as the command line and a TOML
file give them: addresses and sockets, numbers and booleans, files, peers,
table specs.  L{dmq.config}'s parameter table names one of these for each
setting; L{dmq.config} offers the public ones again.
"""

from __future__ import annotations

import ipaddress
import math
import socket
from typing import Any, Callable, Dict, Iterable, Optional, Tuple, Union

import attr
from twisted.python import reflect

from dmq import sip
from dmq.bearer import readTokenFile
from dmq.control.guard import controlBinding
from dmq.interfaces import IDMQPeer
from dmq.node import ipLiteral
from dmq.peers.htable import TableSpec, parseTableSpec

__all__ = ["ServerSocket", "parseServerAddress", "parseServerSocket", "loadPeer"]

Address = Tuple[str, int]


def parseServerAddress(text: str) -> sip.URI:
    """
    Parse and check a C{server_address}: a C{sip:} URI with an IP address we
    can bind and a port, over UDP (no transport), TCP or TLS
    (C{;transport=tcp}, C{;transport=tls}, as Kamailio writes them).

    @raise ValueError: saying what is wrong.
    """
    try:
        uri = sip.parseURI(text)
    except sip.SIPParseError as e:
        raise ValueError(f"{text!r} is not a SIP URI: {e.reason}") from None
    if uri.scheme != "sip":
        raise ValueError(f"{text!r}: only sip: URIs are supported (for TLS: sip:...;transport=tls)")
    if uri.user is not None:
        raise ValueError(f"{text!r}: a node address has no user part")
    if ipLiteral(uri.host) is None:
        raise ValueError(f"{text!r}: the host must be the IP address to listen on, not a name")
    if uri.port is None or uri.port == 0:
        raise ValueError(f"{text!r}: give the port explicitly, e.g. sip:{uri.host}:5060")
    if uri.transport not in (None, "udp", "tcp", "tls"):
        raise ValueError(f"{text!r}: the transport is udp, tcp or tls, not {uri.transport}")
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
    Parse a C{server_socket} or a C{listen}: C{PROTO:HOST:PORT}, C{PROTO}
    C{udp}, C{tcp} or C{tls}, an IPv6 host in brackets.

    @raise ValueError: saying what is wrong.
    """
    proto, _, rest = text.partition(":")
    host, colon, portText = rest.rpartition(":")
    if not proto or not colon or not host:
        raise ValueError(f"{text!r} is not proto:host:port, e.g. udp:127.0.0.1:5060")
    if proto.lower() not in ("udp", "tcp", "tls"):
        raise ValueError(f"{text!r}: the protocol is udp, tcp or tls, not {proto}")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if ipLiteral(host) is None:
        raise ValueError(f"{text!r}: the host must be an IP address, not {host!r}")
    if not portText.isdigit() or not 1 <= int(portText) <= 65535:
        raise ValueError(f"{text!r}: the port must be 1 to 65535, not {portText!r}")
    return ServerSocket(proto.lower(), str(ipaddress.ip_address(host)), int(portText))


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


def _number(
    minimum: Optional[float] = None, integer: bool = False, maximum: Optional[float] = None
) -> Callable[[str], Any]:
    """
    A parser of a numeric value: at least C{minimum}, or positive when
    C{minimum} is C{None}; at most C{maximum} when given.
    """

    def parse(text: str) -> Union[int, float]:
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
        if maximum is not None and value > maximum:
            raise ValueError(f"must be at most {maximum:g}, not {text}")
        return value

    return parse


def _boolean(text: str) -> bool:
    """
    A boolean as a config file gives it: C{1} or C{0}, as Kamailio writes
    its module parameters, or C{true}/C{false} (C{yes}/C{no}, C{on}/C{off}).
    """
    lowered = text.lower()
    if lowered in ("1", "yes", "on", "true"):
        return True
    if lowered in ("0", "no", "off", "false"):
        return False
    raise ValueError(f"expected 0 or 1 (or true or false), not {text!r}")


def _readableFile(text: str) -> str:
    try:
        with open(text, "rb"):
            pass
    except OSError as e:
        raise ValueError(f"cannot read {text!r}: {e.strerror}") from None
    return text


def _controlEndpoint(text: str) -> str:
    """
    Check the syntax of a server endpoint description, made safe by
    default (L{dmq.control.guard.controlBinding}: loopback, or a socket of
    mode 600); the endpoint itself is made by L{dmq.tap.makeNodeService}
    with the reactor.
    """
    return controlBinding(text).description


def _tokenFile(path: str) -> str:
    readTokenFile(path)
    return path


def loadPeer(name: str) -> object:
    """
    Import the object named C{name} for C{--peer}: an L{IDMQPeer} provider,
    or a callable that makes one (a factory, or a class implementing
    L{IDMQPeer}), which L{dmq.tap.makeNodeService} calls with the
    L{dmq.tap.DMQNodeService}.

    @raise ValueError: if it cannot be imported or is neither.
    """
    try:
        found = reflect.namedAny(name)
    except Exception as e:
        raise ValueError(f"cannot import {name!r}: {e}") from None
    if not IDMQPeer.providedBy(found) and not callable(found):
        raise ValueError(f"{name!r} is neither an IDMQPeer provider nor a callable that makes one")
    return found


def _namedPeer(name: str) -> Tuple[str, object]:
    return (name, loadPeer(name))


def _tableSpecs(tables: Iterable[Union[TableSpec, str]]) -> Tuple[TableSpec, ...]:
    return tuple(parseTableSpec(table) if isinstance(table, str) else table for table in tables)


def _configScalar(value: object) -> Optional[str]:
    # A config file value as the text the command line would give.
    if value is None:
        # A default of "none".
        return None
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, (int, float, str)):
        return str(value)
    kinds: Dict[type, str] = {list: "an array", dict: "a table"}
    kind = kinds.get(type(value), type(value).__name__)
    raise ValueError(f"expected a string or a number, not {kind}")
