# -*- test-case-name: dmq.test.test_nodelist -*-
"""
The node-list body, the wire form of a node list that the
C{notification_peer} carries: its lines (L{NodeLine}, with a L{NodeStatus}
each), how we write it (L{formatNodeList}, L{encodeNodeList}) and read it
(L{parseNodeList}).  Nothing here does I/O.

A node-list body is one line per node, each a SIP URI with a C{status}
parameter, every line ending in CRLF::

    sip:127.0.0.1:5062;status=active\\r\\n
    sip:10.0.0.9:5061;transport=tls;status=active\\r\\n

L{formatNodeList} writes the exact bytes Kamailio writes
(C{build_node_str()} in its C{dmqnode.c}): C{sip:}, the host (an IPv6
address in brackets), C{:}, the port (empty when the node's URI has none, so
C{sip:10.0.0.5:;status=active}), C{;transport=} for any transport but UDP,
C{;status=}, and nothing else: no user part, no other parameter.  It never
raises: a line it could not write as the reader would read it is left out,
and so are the lines past a size budget (L{MAX_BODY_LENGTH}) that keeps a
body, whatever the nodes, within one datagram.

L{parseNodeList} reads what any Kamailio version writes, and more
forgivingly than Kamailio does: the last line may lack its line end, a bare
LF ends a line as well as CRLF, blank lines are skipped, and a bad line is
skipped and reported while the rest of the body is still read.  (Kamailio
stops at the first bad line; 5.6.3 even keeps its node-list lock held when
the bad line has C{status=bogus}, and stops answering.)  It is stricter than
Kamailio about what a line may hold: only what we could write back and send
to (see L{dmq.nodeaddress}), so that no stored node can break our own body,
our resolver or our pings.
"""

from __future__ import annotations

import enum
import functools
import re
from typing import Iterable, List, Optional

import attr

from dmq.nodeaddress import (
    MAX_NODE_URI_LENGTH,
    BadNodeURI,
    checkNodeHost,
    checkNodeURI,
    isTransport,
    shown,
    withoutStatus,
)
from dmq.sip import URI, SIPParseError, parseURI

__all__ = [
    "NodeStatus",
    "NodeLine",
    "ParsedNodeList",
    "EncodedNodeList",
    "formatNodeList",
    "encodeNodeList",
    "parseNodeList",
    "fitsKamailio",
    "NBODY_LIMIT",
    "CONTENT_TYPE",
    "MAX_LINE_LENGTH",
    "MAX_BODY_LENGTH",
]

NBODY_LIMIT = 1024
"""
The size of the buffer Kamailio builds its node-list body in (C{NBODY_LEN}).
"""

CONTENT_TYPE = "text/plain"
"""
The Content-Type of a node-list body.  Kamailio never checks it on receipt.
"""

# Kamailio checks, before writing each line, that the room left (minus two
# octets for the CRLF) is at least the node's original URI text plus this.
_KAMAILIO_LINE_SLACK = 32


class NodeStatus(enum.Enum):
    """
    The status of a node, valued by its wire string (the C{;status=}
    parameter of a node-list line, Kamailio 6.1 and later).

    @cvar ACTIVE: the node answers; it is sent broadcasts and is listed in
        node-list bodies.
    @cvar NOT_ACTIVE: the node is still pinged but gets no broadcasts and is
        left out of bodies.  Kamailio 6.0 and older called this C{timeout}
        (and had a C{pending} state, which we read as this one too).
    @cvar DISABLED: the node left or stopped answering: still pinged, one
        more timeout removes it.
    """

    ACTIVE = "active"
    NOT_ACTIVE = "not_active"
    DISABLED = "disabled"

    @classmethod
    def fromString(cls, text: str) -> "NodeStatus":
        """
        Read a status string as Kamailio writes it: C{active},
        C{not_active}, C{disabled}, or the old C{timeout} and C{pending},
        both read as L{NOT_ACTIVE}.  Like Kamailio, the match is exact (case
        sensitive).

        @raise ValueError: for any other string.
        """
        status = _STATUS_NAMES.get(text)
        if status is None:
            raise ValueError(f"unknown node status {text!r}")
        return status


_STATUS_NAMES = {
    "active": NodeStatus.ACTIVE,
    "not_active": NodeStatus.NOT_ACTIVE,
    "disabled": NodeStatus.DISABLED,
    # Kamailio 6.0 and older.
    "timeout": NodeStatus.NOT_ACTIVE,
    "pending": NodeStatus.NOT_ACTIVE,
}


MAX_LINE_LENGTH = MAX_NODE_URI_LENGTH
"""
The longest node-list line read or written, in octets, its line end aside.
"""

MAX_BODY_LENGTH = 60000
"""
The most octets of node-list body we write.  A UDP datagram over IPv4
carries 65,507 octets; this leaves more than 5,000 for the start line and
headers of the request or reply (under 1,500 in ours).  The lines we write
are at most L{MAX_LINE_LENGTH} octets and the received lists bring in at
most C{maxNodes} nodes, so with the default 128 the budget is never reached.
"""


@attr.frozen
class NodeLine:
    """
    One line of a node list.

    @ivar uri: the node's URI, without its C{status} parameter.
    @ivar status: the status the line gives, or L{NodeStatus.ACTIVE} (the
        Kamailio 6.1 default) when it gives none.
    @ivar statusGiven: whether the line had a C{;status=} parameter.  Only a
        line that has one changes the status of a node already known.
    """

    uri: URI = attr.ib(converter=withoutStatus)
    status: NodeStatus = NodeStatus.ACTIVE
    statusGiven: bool = True



@attr.frozen
class ParsedNodeList:
    """
    What L{parseNodeList} read.

    @ivar entries: the good lines, in body order.
    @ivar errors: one reason for each line that was skipped, in body order,
        each naming the line by its number (from 1).
    @ivar causes: for each of C{errors}, its kind, a fixed name to count and
        rate-limit by: C{"tooLong"}, C{"notAscii"}, C{"badUri"},
        C{"badHost"}, C{"badParameter"}, C{"badHeaders"} or C{"badStatus"}.
    """

    entries: List[NodeLine]
    errors: List[str]
    causes: List[str] = attr.Factory(list)


@attr.frozen
class EncodedNodeList:
    """
    What L{encodeNodeList} wrote.

    @ivar body: the body.
    @ivar unwritable: the lines left out because they could not be written
        as L{parseNodeList} would read them back (a node made by hand with a
        host or transport no node list may carry).
    @ivar overBudget: the lines left out because the body would have grown
        past its budget.
    """

    body: bytes
    unwritable: List[NodeLine]
    overBudget: List[NodeLine]


# What a written line may hold: printable ASCII, no white space.
_WRITABLE = re.compile(r"[!-~]{1,%d}\Z" % MAX_LINE_LENGTH)


@functools.lru_cache(maxsize=1024)
def _formatLine(line: NodeLine) -> Optional[bytes]:
    """
    The line for C{line}, CRLF included, or C{None} when it cannot be
    written as the reader would read it back.
    """
    uri = line.uri
    try:
        checkNodeHost(uri.host)
    except BadNodeURI:
        return None
    host = f"[{uri.host}]" if ":" in uri.host else uri.host
    port = "" if uri.port is None else str(uri.port)
    transport = uri.transport
    text = f"sip:{host}:{port}"
    if transport is not None and transport != "udp":
        if not isTransport(transport):
            return None
        text += f";transport={transport}"
    text += f";status={line.status.value}"
    if _WRITABLE.match(text) is None:
        return None
    return text.encode("ascii") + b"\r\n"


def encodeNodeList(
    entries: Iterable[NodeLine], budget: int = MAX_BODY_LENGTH
) -> EncodedNodeList:
    """
    Write a node-list body, byte for byte as Kamailio writes one, and say
    what was left out.  Never raises.

    @param entries: the lines, in the order to write them.
    @param budget: the most octets the body may have: a line that would
        take it past this is left out (and the lines after it are still
        tried).
    """
    written: List[bytes] = []
    used = 0
    unwritable: List[NodeLine] = []
    overBudget: List[NodeLine] = []
    for line in entries:
        text = _formatLine(line)
        if text is None:
            unwritable.append(line)
        elif used + len(text) > budget:
            overBudget.append(line)
        else:
            written.append(text)
            used += len(text)
    return EncodedNodeList(b"".join(written), unwritable, overBudget)


def formatNodeList(entries: Iterable[NodeLine], budget: int = MAX_BODY_LENGTH) -> bytes:
    """
    Write a node-list body, byte for byte as Kamailio writes one; see
    L{encodeNodeList} for what is left out.  Never raises.

    @param entries: the lines, in the order to write them.
    @return: the body: every line followed by CRLF, the last one included;
        C{b""} when there are no lines.
    """
    return encodeNodeList(entries, budget).body


def parseNodeList(body: bytes) -> ParsedNodeList:
    """
    Read a node-list body.

    Lines end at LF (an optional CR before it, and trailing NULs, are
    dropped, as Kamailio drops them; so is surrounding white space); the last
    line needs no line end; blank lines are skipped.  A line longer than
    L{MAX_LINE_LENGTH}, not ASCII, not a C{sip:}/C{sips:} URI, not a URI that
    can name a node (L{dmq.nodeaddress.checkNodeURI}: an IP literal or a
    valid DNS name, SIP's grammar in every parameter) or with an unknown
    status is skipped and its reason recorded, and reading goes on with the
    next line.  A line without C{;status=} reads as active.

    @param body: the body of a notification request or of its C{200} reply.
    @return: the lines read and the reasons for those skipped.
    """
    entries: List[NodeLine] = []
    errors: List[str] = []
    causes: List[str] = []

    def skip(number: int, cause: str, reason: str) -> None:
        errors.append(f"line {number}: {reason}")
        causes.append(cause)

    for number, raw in enumerate(body.split(b"\n"), 1):
        raw = raw.rstrip(b"\r\x00").strip(b" \t")
        if not raw:
            continue
        if len(raw) > MAX_LINE_LENGTH:
            skip(number, "tooLong", f"longer than {MAX_LINE_LENGTH} octets ({len(raw)})")
            continue
        if not raw.isascii():
            skip(number, "notAscii", "not ASCII")
            continue
        text = raw.decode("ascii")
        try:
            uri = parseURI(text)
            checkNodeURI(uri)
        except SIPParseError as e:
            skip(number, "badUri", f"{e.reason}: {shown(text, 80)}")
            continue
        except BadNodeURI as e:
            skip(number, e.cause, e.reason)
            continue
        statusText = uri.parameter("status")
        if statusText is None:
            entries.append(NodeLine(uri, NodeStatus.ACTIVE, statusGiven=False))
            continue
        try:
            status = NodeStatus.fromString(statusText)
        except ValueError:
            skip(number, "badStatus", f"unknown node status {shown(statusText)}")
            continue
        entries.append(NodeLine(uri, status))
    return ParsedNodeList(entries, errors, causes)


def fitsKamailio(body: bytes) -> bool:
    """
    Whether a Kamailio node could build a body with these lines.

    Kamailio writes its node list into a buffer of L{NBODY_LIMIT} octets and,
    before each line, checks that the room left, less the two octets of the
    CRLF, is at least the length of the node's original URI text plus 32; if
    not, it builds no body at all: its ping is not sent, and a notification
    request gets no reply (a 408 at the sender).  A node Kamailio learned
    from our body has that very line (C{;status=active} included) as its
    original URI text, so the check is made here with each line's length.
    The Kamailio node's own entry is usually shorter than the line it writes
    for it, so this errs on the safe side.

    @param body: a node-list body, as L{formatNodeList} writes it.
    """
    used = 0
    for line in body.split(b"\r\n"):
        if not line:
            continue
        if NBODY_LIMIT - used - 2 < len(line) + _KAMAILIO_LINE_SLACK:
            return False
        used += len(line) + 2
    return True
