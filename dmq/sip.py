# -*- test-case-name: dmq.test.test_sip -*-
"""
The SIP message model and a strict bytes codec, just large enough for KDMQ.

One datagram is one message. L{parse} turns bytes into a L{Request} or a
L{Response}; L{serialise} turns either back into bytes, always with a
Content-Length that counts octets.  Header names are case-insensitive and
every compact form is expanded; folded lines are unfolded; comma-joined values
of list headers (two Vias on one line) are split into one entry each.

Structured header values (L{Via}, L{NameAddress}, L{CSeq}) are parsed on
demand, and a malformed one raises L{SIPParseError} at that point.  Call
L{checkRequest} on a request before it is handed to anything that relies on
the mandatory headers.

Nothing here does I/O, and nothing here imports C{twisted.protocols.sip}.
"""

from __future__ import annotations

import re
from functools import cached_property
from typing import Iterable, Optional, Sequence, Tuple, Union

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

_TOKEN_CHARS = frozenset(
    "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-.!%*_+`'~"
)
_TOKEN = re.compile(r"[A-Za-z0-9\-.!%*_+`'~]+\Z")
_DIGITS = re.compile(r"[0-9]{1,10}\Z")


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
    result = []
    for part in _splitOutside(text, ";") if '"' in text else text.split(";"):
        name, equals, value = part.partition("=")
        name = name.strip()
        if not name or not _isToken(name):
            raise SIPParseError(f"Bad parameter in {where}")
        if equals:
            value = value.strip()
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
        if not host or any(c not in "0123456789abcdefABCDEF:." for c in host):
            raise SIPParseError(f"Bad IPv6 reference in {where}")
        rest = text[close + 1 :]
        if not rest:
            return host, None
        if rest[0] != ":":
            raise SIPParseError(f"Bad host in {where}")
        portText = rest[1:]
    else:
        host, colon, portText = text.partition(":")
        if not host or any(c not in _HOST_CHARS for c in host):
            raise SIPParseError(f"Bad host in {where}")
        if not colon:
            return host, None
    if not portText:
        return host, None
    if not portText.isdigit() or len(portText) > 5 or int(portText) > 65535:
        raise SIPParseError(f"Bad port in {where}")
    return host, int(portText)


_HOST_CHARS = frozenset(
    "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-."
)


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
        return attr.evolve(self, **changes)

    def withoutParameters(self) -> "URI":
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


_USER_CHARS = frozenset(
    "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
    "-_.!~*'()%&=+$,;?/"
)
_PASSWORD_CHARS = frozenset(
    "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
    "-_.!~*'()%&=+$,"
)


def parseURI(text: str) -> URI:
    """
    Parse a C{sip:} or C{sips:} URI.

    @raise SIPParseError: if C{text} is not one.
    """
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
        if not user or any(c not in _USER_CHARS for c in user):
            raise SIPParseError("Bad user part in URI")
        if colon:
            if any(c not in _PASSWORD_CHARS for c in password):
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
    number, _, method = text.strip().partition(" ")
    method = method.strip()
    if not _DIGITS.match(number) or int(number) >= 2**31 or not _isToken(method):
        raise SIPParseError("Bad CSeq header")
    return CSeq(int(number), method)


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
        for key, value in self.headers:
            if key == name:
                return value
        return None

    def headerValues(self, name: str) -> list[str]:
        """
        Return every value of the header C{name} (any spelling), in order.
        """
        name = canonicalName(name)
        return [value for key, value in self.headers if key == name]

    def _required(self, name: str) -> str:
        value = self.header(name)
        if value is None:
            raise SIPParseError(f"Missing {name} header")
        return value

    @cached_property
    def via(self) -> Tuple[Via, ...]:
        """
        Every Via, top first.

        @raise SIPParseError: when there is none or one is malformed.
        """
        values = self.headerValues("Via")
        if not values:
            raise SIPParseError("Missing Via header")
        return tuple(parseVia(value) for value in values)

    @cached_property
    def fromAddress(self) -> NameAddress:
        return parseNameAddress(self._required("From"))

    @cached_property
    def to(self) -> NameAddress:
        return parseNameAddress(self._required("To"))

    @cached_property
    def callID(self) -> str:
        value = self._required("Call-ID")
        if not value or " " in value:
            raise SIPParseError("Bad Call-ID header")
        return value

    @cached_property
    def cseq(self) -> CSeq:
        return _parseCSeq(self._required("CSeq"))

    @cached_property
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


def _findEnd(data: bytes) -> Tuple[int, int, bytes]:
    end = data.find(b"\r\n\r\n")
    if end >= 0:
        return end, end + 4, b"\r\n"
    end = data.find(b"\n\n")
    if end >= 0:
        return end, end + 2, b"\n"
    # A message with no body may end right after its last header line.
    if data.endswith(b"\r\n"):
        return len(data) - 2, len(data), b"\r\n"
    raise SIPParseError("No end of headers")


def parse(data: bytes) -> Message:
    """
    Parse one datagram as one SIP message.

    Octets past Content-Length are discarded; a body shorter than
    Content-Length is an error.  A message without Content-Length takes the
    rest of the datagram as its body.

    @raise SIPParseError: if C{data} is not a message we accept.  For a
        request, the exception carries the headers read so far.
    """
    data = data.lstrip(b"\r\n")
    if not data:
        raise SIPParseError("Empty message")
    end, bodyStart, newline = _findEnd(data)
    try:
        head = data[:end].decode("utf-8")
    except UnicodeDecodeError:
        raise SIPParseError("Headers are not UTF-8") from None
    lines = head.split(newline.decode("ascii"))
    startLine = lines[0]
    if "\r" in head and newline == b"\n":
        raise SIPParseError("Mixed line endings")
    if startLine.startswith(SIP_VERSION + " "):
        request = False
        codeText, _, reason = startLine[8:].partition(" ")
        if len(codeText) != 3 or not codeText.isdigit() or codeText[0] == "0":
            raise SIPParseError("Bad status line")
        code = int(codeText)
        if any(c in reason for c in "\r\n\x00"):
            raise SIPParseError("Bad status line")
    else:
        request = True
        parts = startLine.split(" ")
        if len(parts) != 3 or parts[2] != SIP_VERSION:
            raise SIPParseError("Bad request line")
        method, uriText, _ = parts
        if not _isToken(method):
            raise SIPParseError("Bad method")

    headers: list[Tuple[str, str]] = []
    contentLength = None
    pending = None
    for line in lines[1:]:
        if line[:1] in (" ", "\t"):
            if pending is None:
                raise SIPParseError("Continuation line before any header")
            pending = (pending[0], pending[1] + " " + line.strip())
            continue
        if pending is not None:
            contentLength = _addHeader(headers, pending, contentLength, request)
        name, colon, value = line.partition(":")
        if not colon:
            raise _error("Header line without a colon", headers, request)
        name = name.rstrip(" \t")
        if not name or not _isToken(name):
            raise _error("Bad header name", headers, request)
        pending = (name, value.strip())
    if pending is not None:
        contentLength = _addHeader(headers, pending, contentLength, request)

    body = data[bodyStart:]
    if contentLength is not None:
        if len(body) < contentLength:
            raise _error("Body shorter than Content-Length", headers, request)
        body = body[:contentLength]
    if request:
        try:
            uri = parseURI(uriText)
        except SIPParseError as e:
            raise _error(f"Bad Request-URI: {e.reason}", headers, True) from None
        return Request(method, uri, tuple(headers), body)
    return Response(code, reason, tuple(headers), body)


def _error(reason: str, headers: list, request: bool) -> SIPParseError:
    return SIPParseError(reason, tuple(headers) if request else None)


def _addHeader(
    headers: list, pending: Tuple[str, str], contentLength: Optional[int], request: bool
) -> Optional[int]:
    name, value = pending
    canonical = _CANONICAL_NAMES.get(name)
    if canonical is None:
        canonical = _CANONICAL_NAMES.get(name.lower(), name)
    if canonical == "Content-Length":
        if not _DIGITS.match(value):
            raise _error("Bad Content-Length", headers, request)
        length = int(value)
        if contentLength is not None and contentLength != length:
            raise _error("Conflicting Content-Length headers", headers, request)
        return length
    if "," in value and canonical in _LIST_HEADERS:
        for part in _splitOutside(value, ","):
            part = part.strip()
            if not part:
                raise _error(f"Empty value in {canonical} list", headers, request)
            headers.append((canonical, part))
    else:
        headers.append((canonical, value))
    return contentLength


def serialise(message: Message) -> bytes:
    """
    Serialise a message, writing Content-Length after its other headers.
    """
    if isinstance(message, Request):
        startLine = f"{message.method} {message.uri.toString()} {SIP_VERSION}"
    else:
        startLine = f"{SIP_VERSION} {message.code} {message.reason}"
    lines = [startLine]
    lines.extend([f"{name}: {value}" for name, value in message.headers])
    lines.append(f"Content-Length: {len(message.body)}\r\n\r\n")
    return "\r\n".join(lines).encode("utf-8") + message.body


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
    for name, value in request.headers:
        if name in ("Via", "From", "Call-ID", "CSeq"):
            copied.append((name, value))
        elif name == "To":
            if toTag is not None and code != 100:
                try:
                    to = parseNameAddress(value)
                except SIPParseError:
                    pass
                else:
                    if to.tag is None:
                        value = value + ";tag=" + toTag
            copied.append((name, value))
    copied.extend(headers)
    return Response(
        code,
        reason if reason is not None else REASONS.get(code, "Unknown"),
        tuple(copied),
        body,
    )
