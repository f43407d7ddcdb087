# -*- test-case-name: dmq.test.test_sip -*-
"""
The lexical layer of SIP headers, which the rest of L{dmq.sip} builds on.

Header names (their compact forms and canonical spellings, and which headers
are comma-separated lists), the token grammar, C{;name=value} parameters, the
check that a string can be written as a header value, and L{SIPParseError},
which every parser in L{dmq.sip} raises.
"""

from __future__ import annotations

import re
from typing import Optional, Tuple

__all__ = [
    "SIP_VERSION",
    "Parameters",
    "Headers",
    "SIPParseError",
    "canonicalName",
    "isHeaderValue",
]

SIP_VERSION = "SIP/2.0"

Parameters = Tuple[Tuple[str, Optional[str]], ...]
Headers = Tuple[Tuple[str, str], ...]


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


# The canonical names of the headers we know: lookups by a known name can
# compare spellings exactly, as L{dmq.sip.codec.parse} writes known names canonically.
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
        if _TOKEN.match(name) is None:
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
    if not parameters:
        return None
    name = name.lower()
    for key, value in parameters:
        if key.lower() == name:
            return value if value is not None else ""
    return None


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
