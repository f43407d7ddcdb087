# -*- test-case-name: dmq.test.test_node -*-
"""
Membership state: the nodes of the bus, their status, and the rules that
change it, owned by L{NodeManager}.  Pure: nothing here sends, receives or
resolves anything; the bus and the notification peer report every outcome,
and time comes from an injected clock.  The rules, and where and why they
differ from Kamailio's, are in doc/design.md ("Membership").
"""

from __future__ import annotations

from collections import Counter
from typing import Callable, Iterable, List, Optional, Sequence, Union

from twisted.application import service
from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from dmq.forgotten import ForgottenIdentities
from dmq.interfaces import INodeObserver
from dmq.listmerge import ListMerge
from dmq.liveness import LivenessDecision, LivenessPolicy
from dmq.observers import Observers
from dmq.nodeaddress import checkNodeURI
from dmq.nodelist import (
    Node,
    NodeChange,
    NodeIdentity,
    NodeLine,
    NodeList,
    NodeStatus,
    formatNodeList,
    ipLiteral,
    nodeKey,
    parseNodeAddress,
    withoutStatus,
)
from dmq.ownbody import OwnBody
from dmq.seeds import Seeds
from dmq.sip import URI

# The node model, the identity helpers and INodeObserver lived here before
# they moved to dmq.nodelist and dmq.interfaces: they are still offered.
__all__ = [
    "NodeStatus",
    "ipLiteral",
    "parseNodeAddress",
    "Node",
    "NodeChange",
    "NodeList",
    "NodeManager",
    "NodeError",
    "INodeObserver",
    "DEFAULT_TOMBSTONE_TIME",
    "nodeKey",
]

DEFAULT_TOMBSTONE_TIME = 120.0
"""
Seconds during which a removed node is not re-added by other nodes' lists.
"""

# Kamailio's 1024-byte list buffer holds about 29 nodes; we allow more, but
# not without bound.
DEFAULT_MAX_NODES = 128


class NodeError(Exception):
    """
    An administrative request on the node list was refused: the node is
    already there, is unknown, or is the local node.
    """


class NodeManager(service.Service):
    """
    Owns the node list, and applies to it the outcome of every exchange with
    the other nodes, by the rules of L{LivenessPolicy}, L{ListMerge},
    L{ForgottenIdentities} and L{Seeds}; tells its observers of nodes
    becoming active or not.  Sends nothing itself.

    Parameters are named after Kamailio 6.1's module parameters.

    @ivar localNode: ourselves.
    @ivar statistics: what membership refused or left out, by cause: the
        lines of received lists that were skipped (counted by the
        notification peer, as C{nodeLine<Cause>}), those ignored or refused
        by the bounds (L{ListMerge.statistics}), and the lines left out of
        our own bodies (L{OwnBody.statistics}).
    """

    _log = Logger()

    def __init__(
        self,
        clock: IReactorTime,
        localURI: URI,
        seeds: Sequence[URI] = (),
        *,
        removeInactive: bool = True,
        failCountEnabled: bool = False,
        failCountThresholdNotActive: int = 0,
        failCountThresholdDisabled: int = 1,
        tombstoneTime: float = DEFAULT_TOMBSTONE_TIME,
        maxNodes: int = DEFAULT_MAX_NODES,
    ) -> None:
        """
        @param clock: the source of time.
        @param localURI: our own URI (C{server_address}).
        @param seeds: the notification addresses.  Duplicates and other
            spellings of one node make one entry; an address naming
            ourselves is dropped.  Each starts C{not_active}.
        @param removeInactive: see L{LivenessPolicy}.
        @param failCountEnabled: see L{LivenessPolicy}.
        @param failCountThresholdNotActive: see L{LivenessPolicy}.
        @param failCountThresholdDisabled: see L{LivenessPolicy}.
        @param tombstoneTime: seconds during which a removed node, or a
            spelling found to name another node, is not re-added by other
            nodes' lists.
        @param maxNodes: the most nodes received lists may bring in, the
            most lines of one list that are read, and the most removed
            nodes and spellings remembered: a bound on what a hostile or
            broken node can make us hold, ping and pass on.
        """
        self._clock = clock
        self._liveness = LivenessPolicy(
            removeInactive=removeInactive,
            failCountEnabled=failCountEnabled,
            failCountThresholdNotActive=failCountThresholdNotActive,
            failCountThresholdDisabled=failCountThresholdDisabled,
        )
        # The removed nodes, and the spellings found to name a node known
        # otherwise, that other nodes' lists may not bring back for a while.
        self._forgotten = ForgottenIdentities(clock, tombstoneTime, max(maxNodes, 1))
        self.localNode = Node(localURI, NodeStatus.ACTIVE, local=True)
        self._seeds = Seeds()
        self._nodes = NodeList(self.localNode, pinned=self._seeds.covers)
        self.statistics: Counter[str] = Counter()
        self._body = OwnBody(clock, self.statistics)
        self._merge = ListMerge(
            self._nodes, self._liveness, self._forgotten, maxNodes, clock, self.statistics
        )
        self._observers: Observers[INodeObserver] = Observers("node")
        for uri in seeds:
            self.addSeed(uri)

    def addSeed(self, uri: URI) -> Optional[Node]:
        """
        Add a notification address as a C{not_active} node, unless it names
        ourselves or a node already known.

        @return: the new node, or C{None} when none was added.
        @raise ValueError: if C{uri} cannot name a node
            (L{dmq.nodeaddress.checkNodeURI}).
        """
        checkNodeURI(uri)
        uri = withoutStatus(uri)
        found = self._nodes.find(uri)
        if found is not None:
            self._log.info(
                "notification address {uri} is {found}; not added again",
                uri=uri,
                found="ourselves" if found.local else found,
            )
            return None
        node = Node(uri, NodeStatus.NOT_ACTIVE)
        self._seeds.add(uri, node)
        self._nodes.add(node)
        return node

    def dropSeed(self, uri: URI) -> bool:
        """
        Stop taking C{uri} for a notification address (a name no longer gives
        it): its node stays, and timeouts apply to it as to any other node.

        @return: whether it was one.
        """
        dropped = bool(self._seeds.discard(withoutStatus(uri)))
        self._nodes.invalidate()
        return dropped

    # Queries

    def nodes(self) -> List[Node]:
        """
        Every node, the local one first.
        """
        return list(self._nodes)

    def activeNodes(self) -> List[Node]:
        """
        The nodes broadcasts go to: every active node but ourselves.
        """
        return [n for n in self._nodes.others() if n.status is NodeStatus.ACTIVE]

    def pingTargets(self) -> List[Node]:
        """
        The nodes pings (and the join) go to: every node but ourselves,
        whatever its status.
        """
        return self._nodes.others()

    def find(self, uri: URI) -> Optional[Node]:
        """
        The node C{uri} names (the local one included), or C{None}; see
        L{NodeList.find}.  The user part of C{uri} is ignored, so a request's
        From URI finds its sender.
        """
        return self._nodes.find(uri)

    def memberAt(self, host: str, port: int) -> Optional[Node]:
        """
        The member that sends from C{(host, port)}: an active node or a seed
        at that address (L{NodeList.memberAt}, Kamailio's
        C{dmq_is_from_node()}), or C{None}.  What the bus asks of every
        request, in one or two dictionary look-ups.
        """
        return self._nodes.memberAt(host, port)

    def setAdmission(self, admits: Optional[Callable[[URI], bool]]) -> None:
        """
        From now on, add a node from a received list only when C{admits}
        says its URI may be (C{--allow-from}: L{dmq.trust.Trust.admitsNode});
        C{None} for any.  Seeds and nodes added by hand are not asked.
        """
        self._merge.admits = admits

    def isSeed(self, node: Node) -> bool:
        """
        Whether C{node} is one of our notification addresses.
        """
        return self._seeds.covers(node)

    def nodeListBody(self) -> bytes:
        """
        Our node list, to send or to answer with (L{NodeList.bodyLines}),
        within what one datagram carries: see L{OwnBody.write}.
        """
        return self._body.write(self._nodes.bodyLines())

    def leavingBody(self) -> bytes:
        """
        What we send when we leave: ourselves as C{disabled}, alone.
        """
        return formatNodeList([NodeLine(self.localNode.uri, NodeStatus.DISABLED)])

    # Received node lists

    def merge(
        self, lines: Iterable[NodeLine], sender: Union[Node, URI, None] = None
    ) -> int:
        """
        Merge the lines of a received node list (a notification request or
        the C{200} to ours): see L{ListMerge.merge}.

        @param sender: the node that sent the list, or its From URI, or
            C{None} when unknown.
        @return: the number of nodes added or changed, what decides a
            rebroadcast.
        """
        changes = self._merge.merge(lines, sender)
        for change in changes:
            self._announce(change)
        return len(changes)

    # Outcomes of our requests

    def notificationSucceeded(self, node: Node) -> None:
        """
        C{node} answered C{200} to a notification request (a node list) of
        ours: it is active, whatever it was, and its fail count is reset.  A
        node removed since is re-added.  The caller merges the reply's body
        with L{merge}.
        """
        if node.local:
            return
        now = self._clock.seconds()
        current = self._nodes.findNode(node)
        if current is None:
            # Removed while our request was out: its own 200 brings it back.
            decision = self._liveness.notificationSucceeded(node.status, node.failCount)
            node.status, node.failCount = decision.status, decision.failCount
            node.lastNotification = now
            self._insert(node)
            return
        if current.local:
            return
        current.lastNotification = now
        self._apply(
            current, self._liveness.notificationSucceeded(current.status, current.failCount)
        )

    def notificationTimedOut(self, node: Node, statusAtSend: NodeStatus) -> None:
        """
        A notification request (or any request whose replies are handled as
        notification replies) to C{node} timed out (408): it is demoted or
        removed (and tombstoned) by L{LivenessPolicy.notificationTimedOut}.

        @param statusAtSend: the node's status when the request was sent.
        """
        current = self._nodes.findNode(node)
        if current is None or current.local:
            return
        self._apply(
            current,
            self._liveness.notificationTimedOut(
                current.status,
                current.failCount,
                statusAtSend=statusAtSend,
                seed=self.isSeed(current),
            ),
        )

    def otherRequestTimedOut(self, node: Node) -> None:
        """
        A request of another channel (htable, usrloc, ...) to C{node} timed
        out: see L{LivenessPolicy.otherRequestTimedOut}.
        """
        current = self._nodes.findNode(node)
        if current is None or current.local:
            return
        self._apply(
            current, self._liveness.otherRequestTimedOut(current.status, current.failCount)
        )

    def heardFrom(self, node: Node) -> None:
        """
        A request whose From is C{node} arrived: note the time.  Nothing
        else: a node is added or revived only by lines and replies.
        """
        current = self._nodes.findNode(node)
        if current is not None:
            current.lastNotification = self._clock.seconds()

    # Administration (the control endpoint, start-up)

    def add(self, uri: URI, status: Optional[NodeStatus] = None) -> Node:
        """
        Add a node (RPC C{dmq.add}).  Nothing is sent: the next ping reaches
        it.  Clears its tombstone, if any.

        @param status: its status; by default the C{;status=} of C{uri}, or
            active.
        @raise NodeError: if the node (or ourselves) is already there.
        @raise ValueError: if the C{;status=} of C{uri} is unknown, or
            C{uri} cannot name a node (L{dmq.nodeaddress.checkNodeURI}).
        """
        checkNodeURI(uri)
        if status is None:
            text = uri.parameter("status")
            status = NodeStatus.ACTIVE if text is None else NodeStatus.fromString(text)
        uri = withoutStatus(uri)
        if self._nodes.find(uri) is not None:
            raise NodeError("Node is already added")
        node = Node(uri, status)
        self._insert(node)
        return node

    def remove(self, uri: URI) -> bool:
        """
        Remove a node (RPC C{dmq.remove}), and tombstone it.  Nothing is
        sent.

        @return: whether a node was removed.
        @raise NodeError: if C{uri} names the local node.
        """
        node = self._nodes.find(uri)
        if node is None:
            return False
        if node.local:
            raise NodeError("Cannot remove the local node")
        self._remove(node, tombstone=True)
        return True

    def changeStatus(self, uri: URI, status: NodeStatus) -> None:
        """
        Set a node's status (RPC C{dmq.change_status}).

        @raise NodeError: if C{uri} names no node, or the local node.
        """
        node = self._nodes.find(uri)
        if node is None:
            raise NodeError("Node not found")
        if node.local:
            raise NodeError("Cannot change the status of the local node")
        self._setStatus(node, status)

    def restoreSeeds(self) -> List[Node]:
        """
        Put back every notification address that is no longer in the list, as
        configured, C{not_active} and without a tombstone: what to do before
        a re-join, when the list has shrunk to ourselves.

        @return: the seeds put back.
        """
        restored = []
        for configured, seed in self._seeds.missingFrom(self._nodes):
            seed.uri = configured
            seed.status = NodeStatus.NOT_ACTIVE
            seed.failCount = 0
            self._forgotten.remember(NodeIdentity.of(configured, seed.resolvedIP))
            self._insert(seed)
            restored.append(seed)
        return restored

    def setResolvedIP(self, node: Node, ip: Optional[str]) -> Node:
        """
        Record the IP address C{node}'s host name resolved to.  If that shows
        a node to be another spelling of ourselves, or of a node known
        longer, the newer entry is dropped (not tombstoned).

        @return: the entry that stands for C{node} afterwards.
        """
        node.resolvedIP = ip
        survivor = node
        while (duplicate := self._nodes.duplicate()) is not None:
            entry, same = duplicate
            self._log.info(
                "node {node} is {same}; dropping the duplicate",
                node=entry,
                same="ourselves" if same.local else same,
            )
            if entry is survivor:
                survivor = same
            self._remove(entry, tombstone=False)
            # Other nodes' lists may still carry that spelling.
            self._forgotten.forgetSpelling(NodeIdentity.of(entry.uri))
        return survivor

    # Observers

    def addObserver(self, observer: INodeObserver) -> None:
        """
        Tell C{observer} (an L{INodeObserver}) about nodes becoming active
        or not.
        """
        self._observers.add(observer)

    def removeObserver(self, observer: INodeObserver) -> None:
        """
        Stop telling C{observer}.
        """
        self._observers.remove(observer)

    # Service

    def stopService(self) -> Deferred[None]:
        """
        Stop.  Nothing to cancel: tombstones expire lazily, by the clock.
        """
        service.Service.stopService(self)
        return succeed(None)

    # Internals

    def _insert(self, node: Node) -> None:
        # Added by hand or by its own word: no longer forgotten.
        self._forgotten.remember(node.identity())
        self._nodes.add(node)
        self._announce(NodeChange(node, None, node.status))

    def _apply(self, node: Node, decision: LivenessDecision) -> None:
        if decision.remove:
            self._log.info("removing node {node}: no answer while disabled", node=node)
            self._remove(node, tombstone=True)
            return
        node.failCount = decision.failCount
        self._setStatus(node, decision.status)

    def _setStatus(self, node: Node, status: NodeStatus) -> None:
        previous = node.status
        if previous is status:
            return
        node.status = status
        self._announce(NodeChange(node, previous, status))

    def _remove(self, node: Node, tombstone: bool) -> None:
        previous = node.status
        self._nodes.remove(node)
        # Whoever still holds the node must not take it for active.
        node.status = NodeStatus.DISABLED
        if tombstone:
            self._forgotten.forgetNode(node.identity())
        self._announce(NodeChange(node, previous, None))

    def _announce(self, change: NodeChange) -> None:
        self._log.info(
            "node {node} is now {status}",
            node=change.node,
            status="removed" if change.current is None else change.current.value,
            previous=None if change.previous is None else change.previous.value,
        )
        node = change.node
        isActive = change.current is NodeStatus.ACTIVE
        # Observers hear of a remote node becoming active or ceasing to be.
        if not node.local and (change.previous is NodeStatus.ACTIVE) != isActive:
            if isActive:
                self._observers.tell(lambda o: o.nodeActivated(node), node)
            else:
                self._observers.tell(lambda o: o.nodeDeactivated(node), node)
