# -*- test-case-name: dmq.test.test_seeds -*-
"""
The seeds: our notification addresses, as configured, and the node each
became.  A seed is never removed by timeouts and is put back before a
re-join (doc/design.md, "Membership", rule 3); this says which nodes are
seeds and which are missing.  Pure.
"""

from __future__ import annotations

from typing import Iterator, List, Tuple

import attr

from dmq.nodelist import Node, NodeIdentity, NodeList
from dmq.sip import URI

__all__ = ["Seeds"]


@attr.define
class Seeds:
    """
    The notification addresses, in the order they were added, each with
    the node entry made for it.
    """

    _seeds: List[Tuple[URI, Node]] = attr.Factory(list)

    def __iter__(self) -> Iterator[Tuple[URI, Node]]:
        """
        Each seed as C{(configured URI, node)}.
        """
        return iter(list(self._seeds))

    def add(self, configured: URI, node: Node) -> None:
        """
        Remember that C{node} was made for the notification address
        C{configured}.
        """
        self._seeds.append((configured, node))

    def discard(self, configured: URI) -> List[Node]:
        """
        Forget that C{configured} is a notification address (an address a
        name no longer gives): its node is a seed no more.

        @return: the nodes that were its seeds.
        """
        dropped = [seed for uri, seed in self._seeds if uri == configured]
        self._seeds = [(uri, seed) for uri, seed in self._seeds if uri != configured]
        return dropped

    def covers(self, node: Node) -> bool:
        """
        Whether C{node} is one of the seeds: their node, or one naming the
        same node as it or as its configured URI.
        """
        identity = node.identity()
        for configured, seed in self._seeds:
            if (
                seed is node
                or seed.identity().sameNode(identity)
                or NodeIdentity.of(configured, seed.resolvedIP).sameNode(identity)
            ):
                return True
        return False

    def missingFrom(self, nodes: NodeList) -> Iterator[Tuple[URI, Node]]:
        """
        The seeds that C{nodes} holds neither as their node nor under their
        configured URI, as C{(configured URI, node)}.  Each is checked when
        reached, so a seed put back into C{nodes} meanwhile counts.
        """
        for configured, seed in list(self._seeds):
            if nodes.findNode(seed) is None and nodes.find(configured) is None:
                yield configured, seed
