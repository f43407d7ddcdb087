# -*- test-case-name: dmq.test.test_sip -*-
"""
SIP URIs: the L{URI} value and its grammar (L{parseURI}), with the C{host[:port]}
reading, IPv6 references included, that Via headers share.
"""

from __future__ import annotations

import re
from ipaddress import IPv6Address
from typing import Optional, Tuple

import attr

from dmq.sip.headers import (
    Parameters,
    SIPParseError,
    _formatParameters,
    _lookup,
    _parseParameters,
)
from dmq.sip.memo import Memo

__all__ = ["URI", "parseURI"]

# [0-9], not str.isdigit(): that also accepts digits of other scripts, and
# superscripts that int() then refuses.
_PORT = re.compile(r"[0-9]{1,5}\Z")
_HOST = re.compile(r"[A-Za-z0-9\-.]+\Z")
_IPV6 = re.compile(r"[0-9A-Fa-f:.]+\Z")
_USER = re.compile(r"[A-Za-z0-9\-_.!~*'()%&=+$,;?/]+\Z")
_PASSWORD = re.compile(r"[A-Za-z0-9\-_.!~*'()%&=+$,]*\Z")

# The shape of nearly every Request-URI on a DMQ bus, C{sip:peer@host:port}:
# no parameters, no headers, no IPv6 reference, no password.  What it
# accepts, L{parseURI} would accept too and read the same way.
_SIMPLE_URI = re.compile(
    r"(sips?):(?:([A-Za-z0-9\-_.!~*'()%&=+$,;/]+)@)?([A-Za-z0-9\-.]+)"
    r"(?::([0-9]{0,5}))?\Z"
)


def _formatHost(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def _parseHostPort(text: str, where: str) -> Tuple[str, Optional[int]]:
    """
    Parse C{host[:port]}, with IPv6 references in brackets.  An empty port
    (C{host:}, which Kamailio writes for a node URI without one) reads as no
    port.
    """
    if text.startswith("["):
        close = text.find("]")
        if close < 0:
            raise SIPParseError(f"Unterminated IPv6 reference in {where}")
        host = text[1:close]
        if _IPV6.match(host) is None or not _isIPv6(host):
            raise SIPParseError(f"Bad IPv6 reference in {where}")
        rest = text[close + 1 :]
        if not rest:
            return host, None
        if rest[0] != ":":
            raise SIPParseError(f"Bad host in {where}")
        portText = rest[1:]
    else:
        host, colon, portText = text.partition(":")
        if _HOST.match(host) is None:
            raise SIPParseError(f"Bad host in {where}")
        if not colon:
            return host, None
    if not portText:
        return host, None
    if _PORT.match(portText) is None or int(portText) > 65535:
        raise SIPParseError(f"Bad port in {where}")
    return host, int(portText)


def _isIPv6(text: str) -> bool:
    try:
        IPv6Address(text)
    except ValueError:
        return False
    return True


@attr.frozen
class URI:
    """
    A C{sip:} or C{sips:} URI.

    @ivar scheme: C{"sip"} or C{"sips"}, in lower case.
    @ivar user: the user part (for KDMQ, the peer), or C{None}.
    @ivar password: the password of the user info, or C{None}.
    @ivar host: a host name, an IPv4 address, or an IPv6 address without its
        brackets.
    @ivar port: the port, or C{None} when the URI has none.
    @ivar parameters: the URI parameters in order, each C{(name, value)}
        with C{None} for a parameter without a value.
    @ivar headers: the text after C{?}, or C{None}.
    """

    host: str
    port: Optional[int] = None
    user: Optional[str] = None
    scheme: str = "sip"
    password: Optional[str] = None
    parameters: Parameters = ()
    headers: Optional[str] = None

    def parameter(self, name: str) -> Optional[str]:
        """
        Return the value of the parameter C{name} (case-insensitive), C{""} for
        one without a value, or C{None} when it is absent.
        """
        return _lookup(self.parameters, name)

    @property
    def transport(self) -> Optional[str]:
        """
        The C{transport} parameter in lower case, or C{None}.
        """
        value = _lookup(self.parameters, "transport")
        return value.lower() if value else None

    def replace(self, **changes: object) -> "URI":
        """
        Return a copy of this URI with some fields changed.
        """
        return attr.evolve(self, **changes)  # type: ignore[arg-type]

    def withoutParameters(self) -> "URI":
        """
        Return a copy of this URI without parameters and headers.
        """
        return attr.evolve(self, parameters=(), headers=None)

    def __str__(self) -> str:
        return self.toString()

    def toString(self) -> str:
        """
        Serialise this URI.
        """
        text = self.scheme + ":"
        if self.user is not None:
            text += self.user
            if self.password is not None:
                text += ":" + self.password
            text += "@"
        text += _formatHost(self.host)
        if self.port is not None:
            text += f":{self.port}"
        if self.parameters:
            text += _formatParameters(self.parameters)
        if self.headers is not None:
            text += "?" + self.headers
        return text

    @classmethod
    def fromString(cls, text: str) -> "URI":
        """
        Parse a URI; see L{parseURI}.
        """
        return parseURI(text)


# The slot descriptors' setters of URI's fields, for _simpleURI.
_new = object.__new__
_setHost = URI.__dict__["host"].__set__
_setPort = URI.__dict__["port"].__set__
_setUser = URI.__dict__["user"].__set__
_setScheme = URI.__dict__["scheme"].__set__
_setPassword = URI.__dict__["password"].__set__
_setParameters = URI.__dict__["parameters"].__set__
_setHeaders = URI.__dict__["headers"].__set__


def _simpleURI(host: str, port: Optional[int], user: Optional[str], scheme: str) -> URI:
    """
    Make a L{URI} without parameters, headers or password, as
    C{URI(host, port, user, scheme)} would, in about half the time: the
    arguments are already checked, and the frozen C{__init__} pays for a
    generic C{object.__setattr__} call per field.
    """
    uri = _new(URI)
    _setHost(uri, host)
    _setPort(uri, port)
    _setUser(uri, user)
    _setScheme(uri, scheme)
    _setPassword(uri, None)
    _setParameters(uri, ())
    _setHeaders(uri, None)
    return uri


def parseURI(text: str) -> URI:
    """
    Parse a C{sip:} or C{sips:} URI.

    The first C{?} starts the URI headers, so a user part cannot contain
    one (RFC 3261 allows it; nobody writes it).  An empty port (C{sip:host:})
    reads as no port.

    @raise SIPParseError: if C{text} is not one.
    """
    simple = _SIMPLE_URI.match(text)
    if simple is not None:
        scheme, user, host, portText = simple.groups()
        port = int(portText) if portText else None
        if port is not None and port > 65535:
            raise SIPParseError("Bad port in URI")
        return _simpleURI(host, port, user, scheme)
    scheme, colon, rest = text.partition(":")
    lowered = scheme.lower()
    if not colon or (lowered != "sip" and lowered != "sips"):
        raise SIPParseError("Unsupported URI scheme")
    headers = None
    if "?" in rest:
        rest, _, headers = rest.partition("?")
        if not headers:
            raise SIPParseError("Empty URI headers")
    user = password = None
    at = rest.rfind("@")
    if at >= 0:
        userinfo = rest[:at]
        rest = rest[at + 1 :]
        user, colon, password = userinfo.partition(":")
        if _USER.match(user) is None:
            raise SIPParseError("Bad user part in URI")
        if colon:
            if _PASSWORD.match(password) is None:
                raise SIPParseError("Bad password in URI")
        else:
            password = None
    hostport, semicolon, params = rest.partition(";")
    host, port = _parseHostPort(hostport, "URI")
    parameters = _parseParameters(params, "URI") if semicolon else ()
    return URI(
        host=host,
        port=port,
        user=user,
        scheme=lowered,
        password=password,
        parameters=parameters,
        headers=headers,
    )


# The URIs met, by text: Request-URIs, and the URIs of From and To.
_URIS: Memo[URI] = Memo(parseURI)
