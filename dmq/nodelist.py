# -*- test-case-name: dmq.test.test_nodelist -*-
"""
The node-list body: what the C{notification_peer} carries (C{text/plain}).

A node list is one line per node, each a SIP URI with a C{status}
parameter, every line ending in CRLF::

    sip:127.0.0.1:5062;status=active\\r\\n
    sip:10.0.0.9:5061;transport=tls;status=active\\r\\n

L{formatNodeList} writes the exact bytes Kamailio writes
(C{build_node_str()} in its C{dmqnode.c}): C{sip:}, the host (an IPv6
address in brackets), C{:}, the port (empty when the node's URI has none, so
C{sip:10.0.0.5:;status=active}), C{;transport=} for any transport but UDP,
C{;status=}, and nothing else: no user part, no other parameter.

L{parseNodeList} reads what any Kamailio version writes, and more
forgivingly than Kamailio does: the last line may lack its line end, a bare
LF ends a line as well as CRLF, blank lines are skipped, and a bad line is
skipped and reported while the rest of the body is still read.  (Kamailio
stops at the first bad line; 5.6.3 even keeps its node-list lock held when
the bad line has C{status=bogus}, and stops answering.)

L{NodeStatus} lives here because its values are wire strings; L{dmq.node}
re-exports it.

Nothing here does I/O.
"""

from __future__ import annotations

import enum
from typing import Iterable, List

import attr

from dmq.sip import URI, SIPParseError, parseURI

__all__ = [
    "NodeStatus",
    "NodeLine",
    "ParsedNodeList",
    "formatNodeList",
    "parseNodeList",
    "fitsKamailio",
    "withoutStatus",
    "NBODY_LIMIT",
    "CONTENT_TYPE",
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
    """

    entries: List[NodeLine]
    errors: List[str]


def _formatLine(line: NodeLine) -> str:
    uri = line.uri
    host = f"[{uri.host}]" if ":" in uri.host else uri.host
    port = "" if uri.port is None else str(uri.port)
    transport = uri.transport
    text = f"sip:{host}:{port}"
    if transport is not None and transport != "udp":
        text += f";transport={transport}"
    return text + f";status={line.status.value}"


def formatNodeList(entries: Iterable[NodeLine]) -> bytes:
    """
    Write a node-list body, byte for byte as Kamailio writes one.

    @param entries: the lines, in the order to write them.
    @return: the body: every line followed by CRLF, the last one included;
        C{b""} when there are no lines.
    """
    return "".join(_formatLine(line) + "\r\n" for line in entries).encode("ascii")


def parseNodeList(body: bytes) -> ParsedNodeList:
    """
    Read a node-list body.

    Lines end at LF (an optional CR before it, and trailing NULs, are
    dropped, as Kamailio drops them; so is surrounding white space); the last
    line needs no line end; blank lines are skipped.  A line that is not
    UTF-8, is not a C{sip:}/C{sips:} URI, or has an unknown status is
    skipped and its reason recorded, and reading goes on with the next line.
    A line without C{;status=} reads as active.

    @param body: the body of a notification request or of its C{200} reply.
    @return: the lines read and the reasons for those skipped.
    """
    entries: List[NodeLine] = []
    errors: List[str] = []
    for number, raw in enumerate(body.split(b"\n"), 1):
        raw = raw.rstrip(b"\r\x00").strip(b" \t")
        if not raw:
            continue
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            errors.append(f"line {number}: not UTF-8")
            continue
        try:
            uri = parseURI(text)
        except SIPParseError as e:
            errors.append(f"line {number}: {e.reason}: {text!r}")
            continue
        statusText = uri.parameter("status")
        if statusText is None:
            entries.append(NodeLine(uri, NodeStatus.ACTIVE, statusGiven=False))
            continue
        try:
            status = NodeStatus.fromString(statusText)
        except ValueError:
            errors.append(f"line {number}: unknown node status {statusText!r}")
            continue
        entries.append(NodeLine(uri, status))
    return ParsedNodeList(entries, errors)


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
