# -*- test-case-name: dmq.test.test_nodelist,dmq.test.test_node -*-
"""
The node list: the nodes a node knows (L{Node}, L{NodeList}), with
Kamailio's rules for telling nodes apart and for merging a received list.
Nothing here does I/O.  See doc/design-membership.md for the identity rules
and where they differ from Kamailio's.

What may name a node is in L{dmq.nodeaddress}; the wire form of a list, the
node-list body, in L{dmq.nodelistbody}.  Their names are offered here too.
"""

from __future__ import annotations

from typing import Callable, Dict, Iterable, Iterator, List, Optional, Tuple

import attr

from dmq.nodeaddress import ipLiteral, parseNodeAddress, withoutStatus
from dmq.nodelistbody import (
    CONTENT_TYPE,
    MAX_BODY_LENGTH,
    NBODY_LIMIT,
    EncodedNodeList,
    NodeLine,
    NodeStatus,
    ParsedNodeList,
    encodeNodeList,
    fitsKamailio,
    formatNodeList,
    parseNodeList,
)
from dmq.sip import URI

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
    "EncodedNodeList",
    "formatNodeList",
    "encodeNodeList",
    "parseNodeList",
    "fitsKamailio",
    "withoutStatus",
    "NBODY_LIMIT",
    "MAX_BODY_LENGTH",
    "CONTENT_TYPE",
]

NodeKey = Tuple[str, Optional[int], str]


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


def _changed(node: "Node", attribute: "attr.Attribute[object]", value: object) -> object:
    # A node's identity or status changed: the list that holds it must
    # rebuild its index of members (NodeList.memberAt).
    owner = node._owner
    if owner is not None:
        owner.invalidate()
    return value


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

    uri: URI = attr.ib(
        converter=withoutStatus, on_setattr=attr.setters.pipe(attr.setters.convert, _changed)
    )
    status: NodeStatus = attr.ib(default=NodeStatus.ACTIVE, on_setattr=_changed)
    local: bool = False
    resolvedIP: Optional[str] = attr.ib(
        default=attr.Factory(lambda self: ipLiteral(self.uri.host), takes_self=True),
        converter=_normaliseIP,
        on_setattr=attr.setters.pipe(attr.setters.convert, _changed),
    )
    failCount: int = attr.ib(default=0, on_setattr=attr.setters.NO_OP)
    lastNotification: Optional[float] = attr.ib(default=None, on_setattr=attr.setters.NO_OP)
    # The NodeList that holds this node, told when the fields above change.
    _owner: Optional["NodeList"] = attr.ib(
        default=None, init=False, repr=False, on_setattr=attr.setters.NO_OP
    )

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

    def __init__(self, local: Node, pinned: Callable[[Node], bool] = lambda node: False) -> None:
        """
        @param pinned: whether a node is a member whatever its status (a
            seed); asked again whenever the index of members is rebuilt.
        """
        if not local.local:
            raise ValueError("the first node of a node list is the local node")
        self.local = local
        self._others: List[Node] = []
        self._pinned = pinned
        # The members by source address, rebuilt on first use after any
        # change (see memberAt).
        self._members: Optional[Dict[Tuple[str, Optional[int]], Node]] = None

    def invalidate(self) -> None:
        """
        Something that decides membership changed (a node's status, URI or
        resolved IP, or which nodes are seeds): rebuild the index of members
        when it is next used.
        """
        self._members = None

    def memberAt(self, host: str, port: int) -> Optional[Node]:
        """
        The member that sends from C{(host, port)}, as Kamailio's
        C{dmq_is_from_node()} decides it: the source IP is the node's IP (its
        IP literal host, or its resolved IP), and the source port its URI's
        port when the URI gives one.  Members are the active nodes and the
        pinned ones (the seeds), never the local node.

        One or two dictionary look-ups: the index is rebuilt only after a
        change, and changes are rare next to requests.

        @param host: the source IP, as the transport gives it.
        @return: the node, or C{None} for a non-member.
        """
        members = self._members
        if members is None:
            members = self._members = self._indexMembers()
        node = members.get((host, port))
        if node is None:
            node = members.get((host, None))
        return node

    def _indexMembers(self) -> Dict[Tuple[str, Optional[int]], Node]:
        members: Dict[Tuple[str, Optional[int]], Node] = {}
        for node in self._others:
            if node.resolvedIP is None:
                continue
            if node.status is not NodeStatus.ACTIVE and not self._pinned(node):
                continue
            # A node over TCP or TLS sends from any port: its IP alone names
            # it, as Kamailio's dmq_is_from_node() names every node.  The
            # oldest entry wins an address two entries share.
            port = None if node.uri.transport in ("tcp", "tls") else node.uri.port
            members.setdefault((node.resolvedIP, port), node)
        return members

    def __iter__(self) -> Iterator[Node]:
        """
        The local node, then the others, oldest first.
        """
        yield self.local
        yield from self._others

    def __len__(self) -> int:
        return 1 + len(self._others)

    def __contains__(self, node: object) -> bool:
        # A node knows the list that holds it.
        return node is self.local or (isinstance(node, Node) and node._owner is self)

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
        node._owner = self
        self._members = None

    def remove(self, node: Node) -> None:
        """
        Remove a non-local node.

        @raise ValueError: if C{node} is not in the list, or is local.
        """
        for index, other in enumerate(self._others):
            if other is node:
                del self._others[index]
                node._owner = None
                self._members = None
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
