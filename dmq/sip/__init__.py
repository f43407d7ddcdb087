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

Import the names from here.  They live in modules that each import only the
ones before them: L{dmq.sip.headers} (header names, tokens, parameters,
L{SIPParseError}), L{dmq.sip.uri} (L{URI}), L{dmq.sip.address} (L{Via},
L{NameAddress}, L{CSeq}), L{dmq.sip.message} (L{Request}, L{Response} and
what is built or checked from a request) and L{dmq.sip.codec} (L{parse},
L{serialise}).
"""

from dmq.sip.address import (
    MAGIC_COOKIE,
    CSeq,
    NameAddress,
    Via,
    parseCSeq,
    parseNameAddress,
    parseVia,
)
from dmq.sip.codec import parse, serialise, serialiseReply
from dmq.sip.headers import (
    SIP_VERSION,
    Headers,
    Parameters,
    SIPParseError,
    canonicalName,
    isHeaderValue,
)
from dmq.sip.message import (
    REASONS,
    Message,
    Request,
    Response,
    checkRequest,
    fromURI,
    newTag,
    responseFor,
)
from dmq.sip.uri import URI, parseURI

# The header tables, which the tests of the codec enumerate.
from dmq.sip.headers import _CANONICAL_NAMES, _KNOWN_NAMES, _LIST_HEADERS  # noqa: F401

__all__ = [
    "SIPParseError",
    "URI",
    "Via",
    "NameAddress",
    "CSeq",
    "Request",
    "Response",
    "Message",
    "Headers",
    "Parameters",
    "parse",
    "parseURI",
    "parseVia",
    "parseNameAddress",
    "parseCSeq",
    "serialise",
    "serialiseReply",
    "checkRequest",
    "responseFor",
    "newTag",
    "isHeaderValue",
    "fromURI",
    "MAGIC_COOKIE",
    "REASONS",
]
