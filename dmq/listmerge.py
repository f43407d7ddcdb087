# -*- test-case-name: dmq.test.test_listmerge -*-
"""
How a received node list is merged into ours: Kamailio's merge
(L{dmq.nodelist.NodeList.merge}) under our rules: a list is read only up to
a bound, only a node's own word makes it active or brings it back, and the
identities we forgot stay forgotten.  Pure; the L{dmq.node.NodeManager}
tells its observers of the changes.  Why, in doc/design.md ("Membership").
"""

from __future__ import annotations

from collections import Counter
from typing import Callable, Iterable, List, Optional, Union

import attr
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from dmq.forgotten import ForgottenIdentities
from dmq.liveness import LivenessPolicy
from dmq.nodeaddress import shown
from dmq.nodelist import Node, NodeChange, NodeIdentity, NodeLine, NodeList, ipLiteral, nodeKey
from dmq.ratelimit import RateLimitedWarnings
from dmq.sip import URI

__all__ = ["ListMerge"]


@attr.define
class ListMerge:
    """
    Merges received node lists into C{nodes}.

    @ivar maxNodes: the most nodes received lists may bring in, and the most
        lines of one list that are read.
    @ivar statistics: what was refused, by cause: C{nodeListLinesIgnored}
        (lines past C{maxNodes} in one list), C{nodesRefusedFull} (lines
        naming a new node while C{maxNodes} are held),
        C{nodesRefusedNotAllowed} (lines naming a new node that L{admits}
        refuses).
    @ivar admits: whether a node may be added from a received line (the
        admission rules, L{dmq.trust.Trust.admitsNode}); C{None} for any.  Each cause is also
        logged, at most once a minute.
    """

    _log = Logger()

    _nodes: NodeList
    _liveness: LivenessPolicy
    _forgotten: ForgottenIdentities
    maxNodes: int
    _clock: IReactorTime
    statistics: Counter[str] = attr.Factory(Counter)
    admits: Optional[Callable[[URI], bool]] = None
    _warnings: RateLimitedWarnings = attr.ib(init=False)

    def __attrs_post_init__(self) -> None:
        self._warnings = RateLimitedWarnings(self._clock, self._log)

    def merge(
        self, lines: Iterable[NodeLine], sender: Union[Node, URI, None] = None
    ) -> List[NodeChange]:
        """
        Merge the lines of a received node list (a notification request or
        the C{200} to ours).  Another node's line neither promotes a node
        that is not active (L{LivenessPolicy.lineAccepted}) nor re-adds a
        forgotten one (L{LivenessPolicy.lineRevives}); the sender's line
        about itself does both, and when it names a node we know under
        another spelling, that node takes the sender's spelling.

        @param sender: the node that sent the list, or its From URI (the
            URI when the sender is not a node we know, say one we removed):
            its own line is taken as its own word.  C{None} when unknown.
        @return: the nodes added or changed.
        """
        lines = list(lines)
        if len(lines) > self.maxNodes:
            self.statistics["nodeListLinesIgnored"] += len(lines) - self.maxNodes
            self._warnings.warn(
                "nodeListTooLong",
                "A node list from {sender} has {count} lines; reading the first {most}",
                sender=shown(str(sender), 80),
                count=len(lines),
                most=self.maxNodes,
            )
            del lines[self.maxNodes :]
        if isinstance(sender, Node):
            senderIdentity: Optional[NodeIdentity] = sender.identity()
        elif sender is not None:
            senderIdentity = NodeIdentity.of(sender)
        else:
            senderIdentity = None

        def isOwn(line: NodeLine) -> bool:
            return senderIdentity is not None and senderIdentity.sameNode(
                NodeIdentity.of(line.uri)
            )

        for line in lines:
            if isOwn(line):
                self._adoptSpelling(line.uri)

        def accept(node: Node, line: NodeLine) -> bool:
            return self._liveness.lineAccepted(node.status, line.status, isOwn(line))

        return self._nodes.merge(lines, lambda line: self._admit(line, isOwn(line)), accept)

    def _admit(self, line: NodeLine, own: bool) -> bool:
        """
        Whether C{line}, naming no node we know, may add one.
        """
        if len(self._nodes) >= self.maxNodes + 1:
            self.statistics["nodesRefusedFull"] += 1
            self._warnings.warn(
                "nodesRefusedFull",
                "Holding {most} nodes already, the most allowed: not adding {uri}",
                most=self.maxNodes,
                uri=line.uri,
            )
            return False
        if self.admits is not None and not self.admits(line.uri):
            self.statistics["nodesRefusedNotAllowed"] += 1
            self._warnings.warn(
                "nodesRefusedNotAllowed",
                "Not adding {uri}: outside --allow-from",
                uri=line.uri,
            )
            return False
        identity = NodeIdentity.of(line.uri)
        forgotten = self._forgotten.find(identity)
        if forgotten is None:
            return True
        if not forgotten.spellingOnly and self._liveness.lineRevives(line.status, own):
            self._forgotten.remember(identity)
            return True
        self._log.debug(
            "not re-adding removed node {uri} from another node's list",
            uri=line.uri,
        )
        return False

    def _adoptSpelling(self, uri: URI) -> None:
        """
        A node listed itself as C{uri}, and we know it under another spelling
        of the same address (say the notification address C{sip:10.0.0.1}
        for the node that calls itself C{sip:10.0.0.1:5060}): from now on,
        call it what it calls itself, as it will be in every other node's
        list.
        """
        node = self._nodes.find(uri)
        if node is None or node.local or node.key == nodeKey(uri):
            return
        old = str(node)
        node.uri = uri
        ip = ipLiteral(uri.host)
        if ip is not None:
            node.resolvedIP = ip
        self._log.info("node {old} now known as {node}", old=old, node=node)
