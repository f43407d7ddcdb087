# -*- test-case-name: dmq.test.test_nodelist,dmq.test.test_node -*-
"""
The node list: the nodes a node knows (L{Node}, L{NodeList}), with
Kamailio's rules for telling nodes apart and for merging a received list,
and its wire form, the node-list body that the C{notification_peer}
carries.  Nothing here does I/O.  See doc/design.md ("Membership") for the
identity rules and where they differ from Kamailio's.

A node-list body is one line per node, each a SIP URI with a C{status}
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
"""

from __future__ import annotations

import enum
import functools
import ipaddress
from typing import Callable, Iterable, Iterator, List, Optional, Tuple

import attr

from dmq.sip import URI, SIPParseError, parseURI

__all__ = [
    "NodeStatus",
    "Node",
    "NodeChange",
    "NodeIdentity",
    "NodeList",
    "nodeKey",
    "ipLiteral",
    "parseNodeAddress",
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


NodeKey = Tuple[str, Optional[int], str]


def parseNodeAddress(text: str) -> URI:
    """
    Parse the URI of a node we can talk to: a C{sip:} URI over UDP, such as
    a C{notification_address} or the argument of C{dmq.add}.

    @raise ValueError: saying what is wrong.
    """
    try:
        uri = parseURI(text)
    except SIPParseError as e:
        raise ValueError(f"{text!r} is not a SIP URI: {e.reason}") from None
    if uri.scheme != "sip":
        raise ValueError(f"{text!r}: only sip: URIs are supported so far, not {uri.scheme}:")
    if uri.port == 0:
        raise ValueError(f"{text!r}: port 0 names no node")
    if uri.transport not in (None, "udp"):
        raise ValueError(f"{text!r}: only UDP is supported so far, not {uri.transport}")
    return uri


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


def _normaliseIP(value: Optional[str]) -> Optional[str]:
    if value is None:
        return None
    normal = ipLiteral(value)
    if normal is None:
        raise ValueError(f"{value!r} is not an IP address")
    return normal


def _transport(uri: URI) -> str:
    return uri.transport or "udp"


def _effectivePort(uri: URI) -> int:
    if uri.port is not None:
        return uri.port
    if uri.scheme == "sips" or uri.transport == "tls":
        return 5061
    return 5060


def nodeKey(uri: URI) -> NodeKey:
    """
    The identity Kamailio gives the node named by C{uri}: host text, port
    (C{None} when the URI has none) and transport, with no transport read as
    C{"udp"}.
    """
    return (uri.host, uri.port, _transport(uri))


@attr.frozen
class NodeIdentity:
    """
    What is needed to tell whether two URIs name one node: the L{nodeKey},
    and for the IP fall-back the IP address (when known) with the effective
    port and the transport.

    @ivar key: the L{nodeKey}.
    @ivar ip: the IP address, or C{None} when not known.
    @ivar address: the effective port and the transport.
    """

    key: NodeKey
    ip: Optional[str]
    address: Tuple[int, str]

    @classmethod
    def of(cls, uri: URI, resolvedIP: Optional[str] = None) -> "NodeIdentity":
        ip = ipLiteral(uri.host) if resolvedIP is None else resolvedIP
        return cls(nodeKey(uri), ip, (_effectivePort(uri), _transport(uri)))

    def sameAddress(self, other: "NodeIdentity") -> bool:
        """
        Whether C{other} has the same known IP address, effective port and
        transport: the IP fall-back.
        """
        return (
            self.ip is not None
            and self.ip == other.ip
            and self.address == other.address
        )

    def sameNode(self, other: "NodeIdentity") -> bool:
        """
        Whether C{other} names the same node: the same key, or failing that
        the same address (L{sameAddress}).
        """
        return self.key == other.key or self.sameAddress(other)


@attr.define(eq=False)
class Node:
    """
    One node of the bus: its identity and what we know of its state.

    Compared by identity: the bus and the peers may hold on to a node while
    its status changes.

    @ivar uri: the node's URI as configured or as received, without its
        C{status} parameter.
    @ivar status: its L{NodeStatus}.
    @ivar local: C{True} only for ourselves.
    @ivar resolvedIP: its IP address: the host itself when that is an IP
        literal, otherwise C{None} until something resolves it.  Assigned
        text is normalised (C{0:0::1} becomes C{::1}).
    @ivar failCount: timeouts counted since the last C{200} (only with
        C{failCountEnabled}).
    @ivar lastNotification: the clock time we last heard from the node (a
        C{200} to our notification, or a request whose From is this node),
        or C{None}.
    """

    uri: URI = attr.ib(converter=withoutStatus)
    status: NodeStatus = NodeStatus.ACTIVE
    local: bool = False
    resolvedIP: Optional[str] = attr.ib(
        default=attr.Factory(lambda self: ipLiteral(self.uri.host), takes_self=True),
        converter=_normaliseIP,
    )
    failCount: int = 0
    lastNotification: Optional[float] = None

    @property
    def key(self) -> NodeKey:
        """
        Kamailio's identity of this node: see L{nodeKey}.
        """
        return nodeKey(self.uri)

    @property
    def address(self) -> Tuple[str, int]:
        """
        Where to send to: C{(host, port)}, the host being the resolved IP
        when known, the port 5060 (5061 for TLS) when the URI has none.
        """
        return (self.resolvedIP or self.uri.host, _effectivePort(self.uri))

    def identity(self) -> NodeIdentity:
        """
        What tells this node from others: see L{NodeIdentity}.
        """
        return NodeIdentity.of(self.uri, self.resolvedIP)

    def __str__(self) -> str:
        return self.uri.toString()


@attr.frozen
class NodeChange:
    """
    A node was added, changed status, or was removed.

    @ivar node: the node.
    @ivar previous: its status before, or C{None} when it was added.
    @ivar current: its status now, or C{None} when it was removed.
    """

    node: Node
    previous: Optional[NodeStatus]
    current: Optional[NodeStatus]


def _endingState(node: Node, line: NodeLine) -> bool:
    # Kamailio up to 6.1: a disabled node is not changed by a received line.
    return node.status is not NodeStatus.DISABLED


class NodeList:
    """
    The nodes we know, ourselves included, in the order they were added.

    @ivar local: our own node.
    """

    def __init__(self, local: Node) -> None:
        if not local.local:
            raise ValueError("the first node of a node list is the local node")
        self.local = local
        self._others: List[Node] = []

    def __iter__(self) -> Iterator[Node]:
        """
        The local node, then the others, oldest first.
        """
        yield self.local
        yield from self._others

    def __len__(self) -> int:
        return 1 + len(self._others)

    def __contains__(self, node: object) -> bool:
        return node is self.local or any(node is other for other in self._others)

    def others(self) -> List[Node]:
        """
        Every node but the local one, oldest first.
        """
        return list(self._others)

    def _find(self, identity: NodeIdentity) -> Optional[Node]:
        # As Kamailio: the key over the whole list first, then the address.
        for node in self:
            if node.key == identity.key:
                return node
        for node in self:
            if node.identity().sameAddress(identity):
                return node
        return None

    def find(self, uri: URI, resolvedIP: Optional[str] = None) -> Optional[Node]:
        """
        Find the node C{uri} names: by L{nodeKey}, and failing that by IP
        address (the host of C{uri} when it is an IP literal, or
        C{resolvedIP}), effective port and transport.

        @return: the node, the local one included, or C{None}.
        """
        return self._find(NodeIdentity.of(withoutStatus(uri), _normaliseIP(resolvedIP)))

    def findNode(self, node: Node) -> Optional[Node]:
        """
        The entry of this list for C{node}: C{node} itself when it is in the
        list, else the entry it matches (say, the same node re-added after
        C{node} was removed), else C{None}.
        """
        if node in self:
            return node
        return self._find(node.identity())

    def duplicate(self) -> Optional[Tuple[Node, Node]]:
        """
        Find a node listed twice: the first entry that names the same node
        as an entry before it (the local node comes first), as can happen
        once a host name has resolved.

        @return: that entry and the earlier one, or C{None}.  The local node
            is never the one returned first.
        """
        known: List[Node] = []
        for entry in self:
            identity = entry.identity()
            same = next((k for k in known if k.identity().sameNode(identity)), None)
            if same is not None and not entry.local:
                return entry, same
            known.append(entry)
        return None

    def bodyLines(self) -> List["NodeLine"]:
        """
        The lines of this node's own node-list body, in Kamailio's order:
        every active node, newest first, then the local node, all as
        active.
        """
        lines = [
            NodeLine(node.uri, NodeStatus.ACTIVE)
            for node in reversed(self._others)
            if node.status is NodeStatus.ACTIVE
        ]
        lines.append(NodeLine(self.local.uri, NodeStatus.ACTIVE))
        return lines

    def add(self, node: Node) -> None:
        """
        Append a non-local node.
        """
        if node.local:
            raise ValueError("a node list has one local node")
        self._others.append(node)

    def remove(self, node: Node) -> None:
        """
        Remove a non-local node.

        @raise ValueError: if C{node} is not in the list, or is local.
        """
        for index, other in enumerate(self._others):
            if other is node:
                del self._others[index]
                return
        raise ValueError(f"{node} is not in the node list")

    def merge(
        self,
        lines: Iterable[NodeLine],
        admit: Optional[Callable[[NodeLine], bool]] = None,
        accept: Callable[[Node, NodeLine], bool] = _endingState,
    ) -> List[NodeChange]:
        """
        Merge the lines of a received node list, as Kamailio 6.1 does
        (C{extract_node_list()}, steps 4 to 7 of the reference's 4.1).

        For each line, in order: the node it names is looked up (L{find}).
        Not found: a node is added with the line's status (if C{admit(line)}
        allows).  Found, not local, the line has a C{;status=} that differs
        from the node's: the node takes it if C{accept(node, line)} allows;
        by default, unless the node is C{disabled}.  A line about the local
        node changes nothing; a node no line names stays.

        @param admit: whether a line naming an unknown node may add it; by
            default always.
        @param accept: whether a line may change a known node's status.
        @return: the nodes added or changed, one L{NodeChange} each.
        """
        changes: List[NodeChange] = []
        for line in lines:
            node = self.find(line.uri)
            if node is None:
                if admit is not None and not admit(line):
                    continue
                node = Node(line.uri, line.status)
                self.add(node)
                changes.append(NodeChange(node, None, line.status))
            elif (
                not node.local
                and line.statusGiven
                and node.status is not line.status
                and accept(node, line)
            ):
                changes.append(NodeChange(node, node.status, line.status))
                node.status = line.status
        return changes


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
