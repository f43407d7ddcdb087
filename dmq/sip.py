# -*- test-case-name: dmq.test.test_sip -*-
"""
The SIP message model and a strict bytes codec, just large enough for KDMQ.

One datagram is one message. L{parse} turns bytes into a L{Request} or a
L{Response}; L{serialise} turns either back into bytes, always with a
Content-Length that counts octets.  Header names are case-insensitive and
every compact form is expanded; folded lines are unfolded; comma-joined values
of list headers (two Vias on one line) are split into one entry each.  A CR
or LF other than a line ending is an error, and L{serialise} refuses to write
one (or anything else L{parse} would not read back), so that no header value
can forge another header.

Structured header values (L{Via}, L{NameAddress}, L{CSeq}) are parsed on
demand, and a malformed one raises L{SIPParseError} at that point.  Call
L{checkRequest} on a request before it is handed to anything that relies on
the mandatory headers.

Nothing here does I/O, and nothing here imports C{twisted.protocols.sip}.
"""

from __future__ import annotations

import random
import re
from ipaddress import IPv6Address
from typing import Any, Callable, Iterable, Optional, Tuple, Union

import attr

__all__ = [
    "SIPParseError",
    "URI",
    "Via",
    "NameAddress",
    "CSeq",
    "Request",
    "Response",
    "Headers",
    "Parameters",
    "parse",
    "parseURI",
    "parseVia",
    "parseNameAddress",
    "serialise",
    "checkRequest",
    "responseFor",
    "newTag",
    "isHeaderValue",
    "fromURI",
    "MAGIC_COOKIE",
    "REASONS",
]

SIP_VERSION = "SIP/2.0"
MAGIC_COOKIE = "z9hG4bK"

Parameters = Tuple[Tuple[str, Optional[str]], ...]
Headers = Tuple[Tuple[str, str], ...]

REASONS = {
    100: "Trying",
    200: "OK",
    202: "Accepted",
    400: "Bad Request",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    408: "Request Timeout",
    413: "Request Entity Too Large",
    415: "Unsupported Media Type",
    481: "Call/Transaction Does Not Exist",
    482: "Loop Detected",
    483: "Too Many Hops",
    500: "Server Internal Error",
    501: "Not Implemented",
    503: "Service Unavailable",
    504: "Server Time-out",
}


class SIPParseError(ValueError):
    """
    Bytes or a header value that are not a SIP message we accept.

    @ivar reason: a short human-readable reason, fit to be the reason phrase of
        a C{400} reply.
    @ivar headers: the headers read before the error, when the start line was a
        request line; enough to address a C{400} reply.  C{None} otherwise.
    """

    def __init__(self, reason: str, headers: Optional[Headers] = None) -> None:
        ValueError.__init__(self, reason)
        self.reason = reason
        self.headers = headers


# Every compact form of RFC 3261 and of the extensions that define one, plus
# the canonical spelling of the headers we and Kamailio write.
_CANONICAL_NAMES = {
    "i": "Call-ID",
    "m": "Contact",
    "e": "Content-Encoding",
    "l": "Content-Length",
    "c": "Content-Type",
    "f": "From",
    "s": "Subject",
    "k": "Supported",
    "t": "To",
    "v": "Via",
    "o": "Event",
    "r": "Refer-To",
    "b": "Referred-By",
    "u": "Allow-Events",
    "a": "Accept-Contact",
    "j": "Reject-Contact",
    "d": "Request-Disposition",
    "x": "Session-Expires",
    "y": "Identity",
    "n": "Identity-Info",
}
for _name in [
    "Accept",
    "Accept-Contact",
    "Accept-Encoding",
    "Accept-Language",
    "Alert-Info",
    "Allow",
    "Allow-Events",
    "Authorization",
    "Call-ID",
    "Call-Info",
    "Contact",
    "Content-Disposition",
    "Content-Encoding",
    "Content-Language",
    "Content-Length",
    "Content-Type",
    "CSeq",
    "Date",
    "Error-Info",
    "Event",
    "Expires",
    "From",
    "Identity",
    "Identity-Info",
    "In-Reply-To",
    "Max-Forwards",
    "Min-Expires",
    "MIME-Version",
    "Organization",
    "Path",
    "Priority",
    "Proxy-Authenticate",
    "Proxy-Authorization",
    "Proxy-Require",
    "Reason",
    "Record-Route",
    "Refer-To",
    "Referred-By",
    "Reject-Contact",
    "Reply-To",
    "Request-Disposition",
    "Require",
    "Retry-After",
    "Route",
    "Server",
    "Service-Route",
    "Session-Expires",
    "Subject",
    "Supported",
    "Timestamp",
    "To",
    "Unsupported",
    "User-Agent",
    "Via",
    "Warning",
    "WWW-Authenticate",
]:
    _CANONICAL_NAMES[_name.lower()] = _name
    _CANONICAL_NAMES[_name] = _name
for _name, _long in list(_CANONICAL_NAMES.items()):
    if len(_name) == 1:
        _CANONICAL_NAMES[_name.upper()] = _long
del _name, _long

# Headers whose grammar is a comma-separated list (RFC 3261 §7.3.1), so that
# "Via: a, b" is two Via entries.  Contact "*" has no comma and passes as is.
_LIST_HEADERS = frozenset(
    [
        "Accept",
        "Accept-Contact",
        "Accept-Encoding",
        "Accept-Language",
        "Alert-Info",
        "Allow",
        "Allow-Events",
        "Call-Info",
        "Contact",
        "Content-Encoding",
        "Content-Language",
        "Error-Info",
        "In-Reply-To",
        "Path",
        "Proxy-Require",
        "Reason",
        "Record-Route",
        "Reject-Contact",
        "Require",
        "Route",
        "Service-Route",
        "Supported",
        "Unsupported",
        "Via",
        "Warning",
    ]
)

# The headers L{parse} does more with than append them.
_SPECIAL_NAMES = _LIST_HEADERS | {"Content-Length"}

_TOKEN_CHARS = frozenset(
    "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-.!%*_+`'~"
)
_TOKEN = re.compile(r"[A-Za-z0-9\-.!%*_+`'~]+\Z")
_DIGITS = re.compile(r"[0-9]{1,10}\Z")
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

# Methods that need no token check.
_METHODS = frozenset(["KDMQ", "OPTIONS", "INVITE", "ACK", "BYE", "CANCEL"])


def canonicalName(name: str) -> str:
    """
    Return the canonical spelling of a header name: the long form of a
    compact one, the usual capitalisation of a known one, and any other name
    as it was given.
    """
    canonical = _CANONICAL_NAMES.get(name)
    if canonical is None:
        canonical = _CANONICAL_NAMES.get(name.lower(), name)
    return canonical


def _isToken(text: str) -> bool:
    return _TOKEN.match(text) is not None


# The canonical names of the headers we know: lookups by a known name can
# compare spellings exactly, as L{parse} writes known names canonically.
_KNOWN_NAMES = frozenset(_CANONICAL_NAMES.values())

# Header-name spellings met on the wire, as they come before the colon, each
# mapped to its canonical name.  Only valid names are ever stored, so a hit
# both validates and canonicalises a name with one dictionary lookup.
# Bounded, so that a peer sending made-up names cannot grow it forever.
_SPELLINGS = dict(_CANONICAL_NAMES)
_SPELLINGS_LIMIT = 2048


def _headerName(spelling: str) -> Optional[str]:
    """
    Return the canonical name for a header name as written before the colon
    (trailing blanks included), or C{None} if it is not a valid name.
    """
    canonical = _SPELLINGS.get(spelling)
    if canonical is not None:
        return canonical
    name = spelling.rstrip(" \t")
    if not name or _TOKEN.match(name) is None:
        return None
    canonical = canonicalName(name)
    if len(_SPELLINGS) < _SPELLINGS_LIMIT:
        _SPELLINGS[spelling] = canonical
    return canonical


def _splitOutside(text: str, separator: str) -> list[str]:
    """
    Split C{text} at C{separator}, except inside double quotes or angle
    brackets.
    """
    if '"' not in text and "<" not in text:
        return text.split(separator)
    parts = []
    start = 0
    inQuotes = False
    inBrackets = False
    i = 0
    length = len(text)
    while i < length:
        char = text[i]
        if inQuotes:
            if char == "\\":
                i += 1
            elif char == '"':
                inQuotes = False
        elif char == '"':
            inQuotes = True
        elif char == "<":
            inBrackets = True
        elif char == ">":
            inBrackets = False
        elif char == separator and not inBrackets:
            parts.append(text[start:i])
            start = i + 1
        i += 1
    if inQuotes:
        raise SIPParseError("Unterminated quoted string")
    parts.append(text[start:])
    return parts


def _parseParameters(text: str, where: str) -> Parameters:
    """
    Parse C{;name[=value]} pairs (the leading C{;} already removed).
    """
    if not text:
        raise SIPParseError(f"Empty parameter in {where}")
    result: list[Tuple[str, Optional[str]]] = []
    for part in _splitOutside(text, ";") if '"' in text else text.split(";"):
        name, equals, value = part.partition("=")
        name = name.strip(" \t")
        if not name or not _isToken(name):
            raise SIPParseError(f"Bad parameter in {where}")
        if equals:
            value = value.strip(" \t")
            if not value:
                raise SIPParseError(f"Empty parameter value in {where}")
            result.append((name, value))
        else:
            result.append((name, None))
    return tuple(result)


def _formatParameters(parameters: Parameters) -> str:
    return "".join(
        f";{name}" if value is None else f";{name}={value}"
        for name, value in parameters
    )


def _lookup(parameters: Parameters, name: str) -> Optional[str]:
    name = name.lower()
    for key, value in parameters:
        if key.lower() == name:
            return value if value is not None else ""
    return None


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


@attr.frozen
class Via:
    """
    One Via header value.

    @ivar transport: the transport in upper case, such as C{"UDP"}.
    @ivar host: the sent-by host (IPv6 without brackets).
    @ivar port: the sent-by port, or C{None}.
    @ivar parameters: the Via parameters in order.
    """

    transport: str
    host: str
    port: Optional[int] = None
    parameters: Parameters = ()

    @property
    def branch(self) -> Optional[str]:
        return _lookup(self.parameters, "branch")

    @property
    def received(self) -> Optional[str]:
        return _lookup(self.parameters, "received")

    @property
    def rport(self) -> Optional[str]:
        """
        C{""} for a bare C{rport}, its value when it has one, else C{None}.
        """
        return _lookup(self.parameters, "rport")

    def toString(self) -> str:
        text = f"{SIP_VERSION}/{self.transport} {_formatHost(self.host)}"
        if self.port is not None:
            text += f":{self.port}"
        return text + _formatParameters(self.parameters)

    __str__ = toString


_VIA = re.compile(
    r"\s*SIP\s*/\s*2\.0\s*/\s*([A-Za-z0-9\-.!%*_+`'~]+)\s+([^;\s]+)\s*(?:;(.*))?\Z",
    re.DOTALL,
)


def parseVia(text: str) -> Via:
    """
    Parse one Via value.

    @raise SIPParseError: if it is not one.
    """
    match = _VIA.match(text)
    if match is None:
        raise SIPParseError("Bad Via header")
    transport, hostport, params = match.groups()
    host, port = _parseHostPort(hostport, "Via")
    parameters = _parseParameters(params.strip(), "Via") if params is not None else ()
    return Via(transport.upper(), host, port, parameters)


@attr.frozen
class NameAddress:
    """
    A name-addr or addr-spec with header parameters, as in From, To, Contact.

    @ivar uri: the L{URI}.
    @ivar displayName: the display name without quotes, or C{None}.
    @ivar parameters: the header parameters (such as C{tag}) in order.
    """

    uri: URI
    displayName: Optional[str] = None
    parameters: Parameters = ()

    @property
    def tag(self) -> Optional[str]:
        return _lookup(self.parameters, "tag")

    def withTag(self, tag: str) -> "NameAddress":
        """
        Return a copy with C{tag} set, replacing any tag it had.
        """
        kept = tuple((k, v) for k, v in self.parameters if k.lower() != "tag")
        return attr.evolve(self, parameters=kept + (("tag", tag),))

    def toString(self) -> str:
        text = f"<{self.uri.toString()}>"
        if self.displayName is not None:
            escaped = self.displayName.replace("\\", "\\\\").replace('"', '\\"')
            text = f'"{escaped}" {text}'
        return text + _formatParameters(self.parameters)

    __str__ = toString


def parseNameAddress(text: str) -> NameAddress:
    """
    Parse a name-addr (C{"Name" <uri>;params}, C{Name <uri>;params}) or an
    addr-spec (C{uri;params}, where the parameters belong to the header).

    @raise SIPParseError: if C{text} is neither.
    """
    text = text.strip()
    displayName = None
    if text.startswith('"'):
        i = 1
        chars = []
        while i < len(text):
            char = text[i]
            if char == "\\" and i + 1 < len(text):
                chars.append(text[i + 1])
                i += 2
                continue
            if char == '"':
                break
            chars.append(char)
            i += 1
        else:
            raise SIPParseError("Unterminated display name")
        displayName = "".join(chars)
        text = text[i + 1 :].lstrip()
        if not text.startswith("<"):
            raise SIPParseError("Display name without <URI>")
    lt = text.find("<")
    if lt >= 0:
        if displayName is None and lt > 0:
            displayName = text[:lt].strip() or None
        gt = text.find(">", lt)
        if gt < 0:
            raise SIPParseError("Unterminated <URI>")
        uri = parseURI(text[lt + 1 : gt].strip())
        rest = text[gt + 1 :].strip()
    else:
        uriText, semicolon, params = text.partition(";")
        uri = parseURI(uriText.strip())
        rest = semicolon + params
    if rest:
        if not rest.startswith(";"):
            raise SIPParseError("Bad address header")
        parameters = _parseParameters(rest[1:], "address header")
    else:
        parameters = ()
    return NameAddress(uri, displayName, parameters)


@attr.frozen
class CSeq:
    number: int
    method: str

    def toString(self) -> str:
        return f"{self.number} {self.method}"

    __str__ = toString


def _parseCSeq(text: str) -> CSeq:
    parts = text.split()
    if (
        len(parts) != 2
        or not _DIGITS.match(parts[0])
        or int(parts[0]) >= 2**31
        or not _isToken(parts[1])
    ):
        raise SIPParseError("Bad CSeq header")
    return CSeq(int(parts[0]), parts[1])


class _cachedProperty:
    """
    Like L{functools.cached_property}: compute an attribute on first use and
    keep it in the instance's C{__dict__}, even on a frozen attrs class.
    Unlike it on Python 3.11, without taking a lock on every first use, which
    cost as much as the parsing it guards.
    """

    def __init__(self, function: Callable[[Any], Any]) -> None:
        self.function = function
        self.name = function.__name__
        self.__doc__ = function.__doc__

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    def __get__(self, instance: Any, owner: Optional[type] = None) -> Any:
        if instance is None:
            return self
        value = self.function(instance)
        instance.__dict__[self.name] = value
        return value


class _Message:
    """
    What requests and responses share: headers, a body, and parsed views of
    the headers every transaction needs.
    """

    headers: Headers
    body: bytes

    def header(self, name: str) -> Optional[str]:
        """
        Return the first value of the header C{name} (any spelling), or C{None}.
        """
        name = canonicalName(name)
        if name in _KNOWN_NAMES:
            for key, value in self.headers:
                if key == name:
                    return value
        else:
            # Unknown names keep the spelling they came with.
            lowered = name.lower()
            for key, value in self.headers:
                if key.lower() == lowered:
                    return value
        return None

    def headerValues(self, name: str) -> list[str]:
        """
        Return every value of the header C{name} (any spelling), in order.
        """
        name = canonicalName(name)
        if name in _KNOWN_NAMES:
            return [value for key, value in self.headers if key == name]
        lowered = name.lower()
        return [value for key, value in self.headers if key.lower() == lowered]

    def _required(self, name: str) -> str:
        value = self.header(name)
        if value is None:
            raise SIPParseError(f"Missing {name} header")
        return value

    @_cachedProperty
    def via(self) -> Tuple[Via, ...]:
        """
        Every Via, top first.

        @raise SIPParseError: when there is none or one is malformed.
        """
        values = self.headerValues("Via")
        if not values:
            raise SIPParseError("Missing Via header")
        return tuple(parseVia(value) for value in values)

    @_cachedProperty
    def fromAddress(self) -> NameAddress:
        return parseNameAddress(self._required("From"))

    @_cachedProperty
    def to(self) -> NameAddress:
        return parseNameAddress(self._required("To"))

    @_cachedProperty
    def callID(self) -> str:
        value = self._required("Call-ID")
        if not value or " " in value:
            raise SIPParseError("Bad Call-ID header")
        return value

    @_cachedProperty
    def cseq(self) -> CSeq:
        return _parseCSeq(self._required("CSeq"))

    @_cachedProperty
    def maxForwards(self) -> Optional[int]:
        value = self.header("Max-Forwards")
        if value is None:
            return None
        if not _DIGITS.match(value) or int(value) > 255:
            raise SIPParseError("Bad Max-Forwards header")
        return int(value)

    @property
    def contentType(self) -> Optional[str]:
        return self.header("Content-Type")


@attr.frozen(slots=False)
class Request(_Message):
    """
    A SIP request.  Content-Length is not a header here: it is always the
    length of C{body} and L{serialise} writes it.
    """

    method: str
    uri: URI
    headers: Headers = ()
    body: bytes = b""


@attr.frozen(slots=False)
class Response(_Message):
    """
    A SIP response.  As for L{Request}, Content-Length is derived from C{body}.
    """

    code: int
    reason: str
    headers: Headers = ()
    body: bytes = b""


Message = Union[Request, Response]


def parse(data: bytes) -> Message:
    """
    Parse one datagram as one SIP message.

    Lines end with CRLF, or all with a bare LF; a CR or LF anywhere else in
    the start line and headers is an error.  Octets past Content-Length are
    discarded; a body shorter than Content-Length is an error.  A message
    without Content-Length takes the rest of the datagram as its body.  The
    Request-URI is parsed and checked here; the other structured headers are
    parsed when first used (see L{checkRequest}).

    @raise SIPParseError: if C{data} is not a message we accept.  For a
        request, the exception carries the headers read so far.
    """
    if data[:1] in (b"\r", b"\n", b""):
        data = data.lstrip(b"\r\n")
        if not data:
            raise SIPParseError("Empty message")

    # The common case, a CRLF message with a blank line and clean headers,
    # costs one search; anything else is sorted out by _readHead.
    end = data.find(b"\r\n\r\n")
    lines = None
    if end >= 0:
        try:
            head = data[:end].decode("utf-8")
        except UnicodeDecodeError:
            pass
        else:
            lines = head.split("\r\n")
            breaks = len(lines) - 1
            if head.count("\n") != breaks or head.count("\r") != breaks:
                lines = None
            else:
                bodyStart = end + 4
    if lines is None:
        lines, bodyStart = _readHead(data)

    startLine = lines[0]
    if startLine.startswith("SIP/2.0 "):
        request = False
        codeText, _, reason = startLine[8:].partition(" ")
        if (
            len(codeText) != 3
            or not "1" <= codeText[0] <= "6"
            or not "0" <= codeText[1] <= "9"
            or not "0" <= codeText[2] <= "9"
            or "\x00" in reason
        ):
            raise SIPParseError("Bad status line")
    else:
        request = True
        parts = startLine.split(" ")
        if len(parts) != 3 or parts[2] != SIP_VERSION:
            raise SIPParseError("Bad request line")
        method, uriText, _ = parts
        if method not in _METHODS and _TOKEN.match(method) is None:
            raise SIPParseError("Bad method")

    spellings = _SPELLINGS
    special = _SPECIAL_NAMES
    unfolded = False
    while True:
        headers: list[Tuple[str, str]] = []
        append = headers.append
        contentLength = None
        try:
            for line in lines[1:]:
                name, colon, value = line.partition(":")
                try:
                    canonical = spellings[name]
                except KeyError:
                    found = _headerName(name)
                    if found is None:
                        if not colon:
                            raise _error(
                                "Header line without a colon", headers, request
                            )
                        raise _error("Bad header name", headers, request)
                    canonical = found
                if not colon:
                    raise _error("Header line without a colon", headers, request)
                value = value.strip(" \t")
                if canonical in special:
                    if canonical == "Content-Length":
                        # As _DIGITS: isdigit() alone takes other scripts.
                        if not (
                            value.isdigit() and value.isascii() and len(value) <= 10
                        ):
                            raise _error("Bad Content-Length", headers, request)
                        length = int(value)
                        if contentLength is not None and contentLength != length:
                            raise _error(
                                "Conflicting Content-Length headers", headers, request
                            )
                        contentLength = length
                    elif "," in value:
                        _appendList(append, canonical, value, headers, request)
                    else:
                        append((canonical, value))
                else:
                    append((canonical, value))
        except SIPParseError:
            # Folded lines are rare, so they are looked for only when the
            # lines as they are do not make sense: a continuation line reads
            # as a bad header name, or completes the line before it.
            if unfolded or not any(line[:1] in (" ", "\t") for line in lines):
                raise
        else:
            break
        lines = _unfold(lines, request)
        unfolded = True

    if contentLength is None:
        body = data[bodyStart:]
    else:
        bodyEnd = bodyStart + contentLength
        if bodyEnd > len(data):
            raise _error("Body shorter than Content-Length", headers, request)
        body = data[bodyStart:bodyEnd]
    if request:
        # parseURI's fast path, inlined.
        simple = _SIMPLE_URI.match(uriText)
        if simple is not None:
            scheme, user, host, portText = simple.groups()
            if not portText:
                return Request(
                    method, _simpleURI(host, None, user, scheme), tuple(headers), body
                )
            port = int(portText)
            if port <= 65535:
                return Request(
                    method, _simpleURI(host, port, user, scheme), tuple(headers), body
                )
        try:
            uri = parseURI(uriText)
        except SIPParseError as e:
            raise _error(f"Bad Request-URI: {e.reason}", headers, True) from None
        return Request(method, uri, tuple(headers), body)
    return Response(int(codeText), reason, tuple(headers), body)


def _readHead(data: bytes) -> Tuple[list[str], int]:
    """
    Find the end of the start line and headers of C{data}, whatever its line
    endings, and return its lines and where the body starts.

    @raise SIPParseError: if there is no end of the headers, if they are not
        UTF-8, or if their line endings are mixed.
    """
    crlf = data.find(b"\r\n\r\n")
    bare = data.find(b"\n\n", 0, crlf) if crlf >= 0 else data.find(b"\n\n")
    if bare >= 0:
        end = bare
        bodyStart = bare + 2
        newline = "\n"
    elif crlf >= 0:
        end = crlf
        bodyStart = crlf + 4
        newline = "\r\n"
    elif data.endswith(b"\r\n"):
        # A message with no body may end right after its last header line.
        end = len(data) - 2
        bodyStart = len(data)
        newline = "\r\n"
    else:
        raise SIPParseError("No end of headers")
    try:
        head = data[:end].decode("utf-8")
    except UnicodeDecodeError:
        raise SIPParseError("Headers are not UTF-8") from None
    lines = head.split(newline)
    breaks = len(lines) - 1
    if newline == "\n":
        if "\r" in head:
            raise SIPParseError("Mixed line endings")
    elif head.count("\n") != breaks or head.count("\r") != breaks:
        raise SIPParseError("Stray CR or LF in headers")
    return lines, bodyStart


def _appendList(
    append: Callable[[Tuple[str, str]], None],
    name: str,
    value: str,
    headers: list,
    request: bool,
) -> None:
    """
    Append each element of the comma-separated C{value} of the list header
    C{name} as one header.
    """
    try:
        values = _splitOutside(value, ",")
    except SIPParseError as e:
        raise _error(e.reason, headers, request) from None
    values = [part.strip(" \t") for part in values]
    if "" in values:
        raise _error(f"Empty value in {name} list", headers, request)
    for part in values:
        append((name, part))


def _unfold(lines: list[str], request: bool) -> list[str]:
    """
    Join each continuation line (one that starts with a blank) to the line
    before it with a single space.
    """
    result = [lines[0]]
    for i in range(1, len(lines)):
        line = lines[i]
        if line[:1] in (" ", "\t"):
            if len(result) == 1:
                raise _error("Continuation line before any header", [], request)
            result[-1] = result[-1].rstrip(" \t") + " " + line.strip(" \t")
        else:
            result.append(line)
    return result


def _error(reason: str, headers: list, request: bool) -> SIPParseError:
    return SIPParseError(reason, tuple(headers) if request else None)


def serialise(message: Message) -> bytes:
    """
    Serialise a message, writing Content-Length (the length of the body in
    octets) after its other headers.  A Content-Length among the message's
    headers is left out: the body decides.

    @raise ValueError: if the message cannot be written as one that
        L{parse} would read back: a method or header name that is not a
        token, a status code out of C{100}-C{699}, a NUL in the reason
        phrase, or a CR or LF in the start line or a header (which would let
        a value forge headers).
    """
    if isinstance(message, Request):
        method = message.method
        if method not in _METHODS and _TOKEN.match(method) is None:
            raise ValueError(f"Bad method {method!r}")
        startLine = f"{method} {message.uri.toString()} {SIP_VERSION}"
    else:
        code = message.code
        reason = message.reason
        if not 100 <= code <= 699 or "\x00" in reason:
            raise ValueError(f"Bad status line {code!r} {reason!r}")
        startLine = f"{SIP_VERSION} {code} {reason}"
    lines = [startLine]
    written = _WRITTEN_NAMES
    lines.extend(
        [
            f"{name}: {value}"
            for name, value in message.headers
            if name in written or _isWritten(name)
        ]
    )
    head = "\r\n".join(lines)
    breaks = len(lines) - 1
    if head.count("\n") != breaks or head.count("\r") != breaks:
        raise ValueError("CR or LF in the start line or a header of a SIP message")
    return (
        f"{head}\r\nContent-Length: {len(message.body)}\r\n\r\n".encode("utf-8")
        + message.body
    )


# Header names that serialise writes (every name but Content-Length's), as
# met; bounded like _SPELLINGS.
_WRITTEN_NAMES = set(_KNOWN_NAMES) - {"Content-Length"}


def _isWritten(name: str) -> bool:
    """
    Whether L{serialise} writes a header called C{name}: unless it is
    Content-Length.

    @raise ValueError: if C{name} is not a token.
    """
    if not isinstance(name, str) or _TOKEN.match(name) is None:
        raise ValueError(f"Bad header name {name!r}")
    if canonicalName(name) == "Content-Length":
        return False
    if len(_WRITTEN_NAMES) < _SPELLINGS_LIMIT:
        _WRITTEN_NAMES.add(name)
    return True


def checkRequest(request: Request) -> None:
    """
    Check that C{request} has well-formed mandatory headers: Via (with a
    branch or not), From, To, Call-ID, a CSeq naming the request's method,
    and a valid Max-Forwards when present.

    @raise SIPParseError: naming the first problem found.
    """
    request.via
    request.fromAddress
    request.to
    request.callID
    if request.cseq.method != request.method:
        raise SIPParseError("CSeq method does not match the request")
    request.maxForwards


def responseFor(
    request: Request,
    code: int,
    reason: Optional[str] = None,
    headers: Iterable[Tuple[str, str]] = (),
    body: bytes = b"",
    toTag: Optional[str] = None,
) -> Response:
    """
    Build a response to C{request} as RFC 3261 §8.2.6 says: the Vias, From,
    Call-ID and CSeq copied, the To copied with C{toTag} added when it has no
    tag yet (and the code is not 100).

    Only the headers present in C{request} are copied, so this also answers a
    request that failed L{checkRequest}.
    """
    copied: list[Tuple[str, str]] = []
    firstTo = True
    for name, value in request.headers:
        if name in ("Via", "From", "Call-ID", "CSeq"):
            copied.append((name, value))
        elif name == "To":
            if toTag is not None and code != 100:
                try:
                    # The first To is what request.to parses, and
                    # checkRequest has parsed it already.
                    to = request.to if firstTo else parseNameAddress(value)
                except SIPParseError:
                    pass
                else:
                    if to.tag is None:
                        value = value + ";tag=" + toTag
            firstTo = False
            copied.append((name, value))
    copied.extend(headers)
    return Response(
        code,
        reason if reason is not None else REASONS.get(code, "Unknown"),
        tuple(copied),
        body,
    )


def newTag() -> str:
    """
    A fresh From or To tag: 64 random bits in hex.  Tags must be unique,
    not secret.
    """
    return f"{random.getrandbits(64):016x}"


def isHeaderValue(text: object) -> bool:
    """
    Whether C{text} can be written as one header value: a non-empty string
    with no CR, LF or NUL.
    """
    return (
        isinstance(text, str)
        and bool(text.strip())
        and "\r" not in text
        and "\n" not in text
        and "\x00" not in text
    )


def fromURI(request: Request) -> Optional[URI]:
    """
    The URI of C{request}'s From header (who sent it, for KDMQ), or C{None}
    when it has no From or a malformed one.
    """
    try:
        return request.fromAddress.uri
    except SIPParseError:
        return None

