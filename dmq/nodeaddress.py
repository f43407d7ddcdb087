# -*- test-case-name: dmq.test.test_nodelist -*-
"""
What may name a node: a C{sip:} URI whose host is an IP literal or a valid
DNS name, and whose every part keeps to SIP's grammar in plain ASCII, so that
whatever we store we can also write back, resolve and send to.

Every node URI we take in passes L{checkNodeURI}: the lines of received node
lists (L{dmq.nodelistbody.parseNodeList}), the notification addresses and the
argument of the C{dmq.add} RPC (L{parseNodeAddress}).  A host such as
C{127.1} or C{12} is refused although C{getaddrinfo} resolves it (to
C{127.0.0.1} and C{0.0.0.12}): one node would be two spellings, one of
which reaches another address; and a label of more than 63 characters is
refused before the resolver raises on it.
"""

from __future__ import annotations

import functools
import ipaddress
import re
import socket
from typing import Optional

from dmq.sip import URI, SIPParseError, parseURI

__all__ = [
    "BadNodeURI",
    "MAX_NODE_URI_LENGTH",
    "checkNodeHost",
    "checkNodeURI",
    "ipLiteral",
    "isTransport",
    "parseNodeAddress",
    "shown",
    "withoutStatus",
]

MAX_NODE_URI_LENGTH = 400
"""
The longest node URI, or node-list line, we take, in octets.  The longest
valid DNS name (253 octets) with a port, a transport and a status fits with
room to spare; what is longer is no node of any bus, and would let a few
lines fill a datagram.
"""

MAX_NAME_LENGTH = 253
MAX_LABEL_LENGTH = 63

# RFC 3261's hostname: labels of letters, digits and inner hyphens.
_LABEL = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9\-]*[A-Za-z0-9])?\Z")
_NUMERIC = re.compile(r"[0-9]+\Z")
# RFC 3261's paramchar (param-unreserved, unreserved, escaped), for
# parameter names and values; a transport is a token as well.
_PARAMCHARS = re.compile(r"(?:[\[\]/:&+$A-Za-z0-9\-_.!~*'()]|%[0-9A-Fa-f]{2})+\Z")
_TRANSPORT = re.compile(r"[A-Za-z0-9\-_.!~*'+]+\Z")
# RFC 3261's headers: hname=hvalue joined by &.
_HCHAR = r"(?:[\[\]/?:+$A-Za-z0-9\-_.!~*'()]|%[0-9A-Fa-f]{2})"
_HEADERS = re.compile(rf"{_HCHAR}+={_HCHAR}*(?:&{_HCHAR}+={_HCHAR}*)*\Z")


class BadNodeURI(ValueError):
    """
    A URI that cannot name a node.

    @ivar cause: what kind of fault, a fixed name to count and rate-limit
        by: C{"badHost"}, C{"badParameter"}, C{"badHeaders"} or
        C{"tooLong"}.
    @ivar reason: what is wrong, in words (quoting at most the start of
        the offending text).
    """

    def __init__(self, cause: str, reason: str) -> None:
        ValueError.__init__(self, reason)
        self.cause = cause
        self.reason = reason


def shown(text: str, most: int = 40) -> str:
    """
    C{text} as a log message may quote it: its C{repr}, cut after C{most}
    characters.
    """
    if len(text) <= most:
        return repr(text)
    return repr(text[:most]) + f"... ({len(text)} characters)"


@functools.lru_cache(maxsize=1024)
def ipLiteral(host: str) -> Optional[str]:
    """
    The normal text of C{host} when it is an IP address, else C{None}.  An
    IPv4 address written as IPv6 (C{::ffff:127.0.0.11}) is the IPv4 address:
    it is the same host, and our UDP socket reaches it only that way.
    """
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return None
    if address.version == 6 and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return str(address)


@functools.lru_cache(maxsize=1024)
def _hostFault(host: str) -> Optional[str]:
    if ipLiteral(host) is not None:
        return None
    name = host[:-1] if host.endswith(".") else host
    if not name:
        return "empty"
    if len(name) > MAX_NAME_LENGTH:
        return f"longer than {MAX_NAME_LENGTH} characters"
    labels = name.split(".")
    for label in labels:
        if not 0 < len(label) <= MAX_LABEL_LENGTH:
            return f"a label is empty or longer than {MAX_LABEL_LENGTH} characters"
        if _LABEL.match(label) is None:
            return "a label is not letters, digits and inner hyphens"
    if _NUMERIC.match(labels[-1]) is not None:
        return "numeric, but not an IP address (a shorthand the resolver would read as one)"
    try:
        socket.inet_aton(name)
    except OSError:
        return None
    # 0x7f000001 and the like.
    return "a shorthand the resolver would read as an IP address"


def checkNodeHost(host: str) -> None:
    """
    Check that C{host} is an IP literal, or a DNS name of letter-digit-hyphen
    labels of 1 to 63 characters, at most 253 characters in all (a final
    dot aside), whose last label is not all digits, and that no resolver
    reads as an address.

    @raise BadNodeURI: if not.
    """
    fault = _hostFault(host)
    if fault is not None:
        raise BadNodeURI("badHost", f"host {shown(host)} is not an IP address or a DNS name: {fault}")


def checkNodeURI(uri: URI) -> None:
    """
    Check that C{uri} can name a node: its host passes L{checkNodeHost}, its
    parameters and headers keep to SIP's grammar (ASCII, no white space),
    its transport is a token.  The user part and password are checked by
    the URI parser already.

    @raise BadNodeURI: if not.
    """
    checkNodeHost(uri.host)
    for name, value in uri.parameters:
        if _PARAMCHARS.match(name) is None or (
            value is not None and _PARAMCHARS.match(value) is None
        ):
            raise BadNodeURI("badParameter", f"parameter {shown(name)} is not SIP's grammar")
        if name.lower() == "transport" and not isTransport(value or ""):
            raise BadNodeURI("badParameter", f"transport {shown(value or '')} is not a token")
    if uri.headers is not None and _HEADERS.match(uri.headers) is None:
        raise BadNodeURI("badHeaders", f"headers {shown(uri.headers)} are not SIP's grammar")


def isTransport(text: str) -> bool:
    """
    Whether C{text} may be the C{transport} of a node URI: a token, no
    escapes.
    """
    return _TRANSPORT.match(text) is not None


def withoutStatus(uri: URI) -> URI:
    """
    Return C{uri} without its C{status} parameter(s), so that it names a node
    rather than a node and its state.
    """
    if uri.parameter("status") is None:
        return uri
    kept = tuple(
        (name, value) for name, value in uri.parameters if name.lower() != "status"
    )
    return uri.replace(parameters=kept)


def parseNodeAddress(text: str) -> URI:
    """
    Parse the URI of a node we can talk to: a C{sip:} URI over UDP, TCP or
    TLS (C{;transport=tcp}, C{;transport=tls}), such as
    a C{notification_address} or the argument of C{dmq.add}, that passes
    L{checkNodeURI}.

    @raise ValueError: saying what is wrong.
    """
    if len(text) > MAX_NODE_URI_LENGTH:
        raise ValueError(
            f"{shown(text)}: longer than {MAX_NODE_URI_LENGTH} characters, no node's URI"
        )
    try:
        uri = parseURI(text)
    except SIPParseError as e:
        raise ValueError(f"{text!r} is not a SIP URI: {e.reason}") from None
    if uri.scheme != "sip":
        raise ValueError(f"{text!r}: only sip: URIs are supported so far, not {uri.scheme}:")
    try:
        checkNodeURI(uri)
    except BadNodeURI as e:
        raise ValueError(f"{text!r}: {e.reason}") from None
    if uri.port == 0:
        raise ValueError(f"{text!r}: port 0 names no node")
    if uri.transport not in (None, "udp", "tcp", "tls"):
        raise ValueError(f"{text!r}: the transport is udp, tcp or tls, not {uri.transport}")
    return uri
