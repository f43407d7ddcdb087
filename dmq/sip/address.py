# -*- test-case-name: dmq.test.test_sip -*-
"""
The structured header values a transaction reads: L{Via}, L{NameAddress} (From,
To, Contact) and L{CSeq}, with their parsers.
"""

from __future__ import annotations

import re
from typing import Optional, Tuple

import attr

from dmq.sip.headers import (
    SIP_VERSION,
    Parameters,
    SIPParseError,
    _DIGITS,
    _formatParameters,
    _isToken,
    _lookup,
    _parseParameters,
)
from dmq.sip.memo import Memo
from dmq.sip.uri import _URIS, URI, _formatHost, _parseHostPort

__all__ = [
    "MAGIC_COOKIE",
    "Via",
    "NameAddress",
    "CSeq",
    "parseVia",
    "parseNameAddress",
    "parseCSeq",
]

# The prefix of a Via branch made by an RFC 3261 element.
MAGIC_COOKIE = "z9hG4bK"


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


_SENT_BY = re.compile(
    r"\s*SIP\s*/\s*2\.0\s*/\s*([A-Za-z0-9\-.!%*_+`'~]+)\s+([^;\s]+)\s*\Z", re.DOTALL
)


def _parseSentBy(text: str) -> Tuple[str, str, Optional[int]]:
    """
    Parse the part of a Via value before its parameters, C{SIP/2.0/UDP
    host:port}, into its transport (upper case), host and port.
    """
    match = _SENT_BY.match(text)
    if match is None:
        raise SIPParseError("Bad Via header")
    transport, hostport = match.groups()
    host, port = _parseHostPort(hostport, "Via")
    return transport.upper(), host, port


# The sent-bys met: a bus has one per node.
_SENT_BYS: Memo[Tuple[str, str, Optional[int]]] = Memo(_parseSentBy)


# The shape of nearly every Via on a bus, C{SIP/2.0/UDP host:port;branch=
# token}, which the rest of parseVia would read the same way.
_SIMPLE_VIA = re.compile(
    r"(SIP/2\.0/[A-Za-z0-9\-.!%*_+`'~]+ [^;\s]+);branch=([A-Za-z0-9\-.!%*_+`'~]+)\Z"
)


def parseVia(text: str) -> Via:
    """
    Parse one Via value.

    @raise SIPParseError: if it is not one.
    """
    simple = _SIMPLE_VIA.match(text)
    if simple is not None:
        sentBy, branch = simple.groups()
        transport, host, port = _SENT_BYS[sentBy]
        return Via(transport, host, port, (("branch", branch),))
    return _parseVia(text)


def _parseVia(text: str) -> Via:
    # Nothing before the parameters may hold a semicolon, so the first one
    # starts them.
    sentBy, semicolon, params = text.partition(";")
    transport, host, port = _SENT_BYS[sentBy]
    parameters = _parseParameters(params.strip(), "Via") if semicolon else ()
    return Via(transport, host, port, parameters)


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
    if ";" not in text:
        # No tag: a value that comes again and again, as a To does.
        return _UNTAGGED[text]
    tagged = _TAGGED.match(text)
    if tagged is not None:
        uriText, tag = tagged.groups()
        return NameAddress(_URIS[uriText.strip()], None, (("tag", tag),))
    return _parseNameAddress(text)


# The shape of nearly every From on a bus, C{<uri>;tag=token}, which
# _parseNameAddress would read the same way.
_TAGGED = re.compile(r"<([^<>]*)>;tag=([A-Za-z0-9\-.!%*_+`'~]+)\Z")


def _parseNameAddress(text: str) -> NameAddress:
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
        uri = _URIS[text[lt + 1 : gt].strip()]
        rest = text[gt + 1 :].strip()
    else:
        uriText, semicolon, params = text.partition(";")
        uri = _URIS[uriText.strip()]
        rest = semicolon + params
    if rest:
        if not rest.startswith(";"):
            raise SIPParseError("Bad address header")
        parameters = _parseParameters(rest[1:], "address header")
    else:
        parameters = ()
    return NameAddress(uri, displayName, parameters)


# The name-addrs without parameters met.
_UNTAGGED: Memo[NameAddress] = Memo(_parseNameAddress)


@attr.frozen
class CSeq:
    number: int
    method: str

    def toString(self) -> str:
        return f"{self.number} {self.method}"

    __str__ = toString


def parseCSeq(text: str) -> CSeq:
    """
    Parse a CSeq value: a number below 2**31 and a method, with any blanks
    around them.

    @raise SIPParseError: if it is not one.
    """
    parts = text.split()
    if (
        len(parts) != 2
        or not _DIGITS.match(parts[0])
        or int(parts[0]) >= 2**31
        or not _isToken(parts[1])
    ):
        raise SIPParseError("Bad CSeq header")
    return CSeq(int(parts[0]), parts[1])


# The CSeqs met: Kamailio numbers every KDMQ request 10.
_CSEQS: Memo[CSeq] = Memo(parseCSeq)
