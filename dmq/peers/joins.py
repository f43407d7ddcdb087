# -*- test-case-name: dmq.test.test_joins -*-
"""
When a stateful peer (htable, usrloc, dialog) has joined the bus and should
ask one node for a sync: the rule the three share, in one place.
"""

from __future__ import annotations

from typing import Iterable, Set

import attr

from dmq.node import Node, NodeStatus

__all__ = ["Joins"]


@attr.define
class Joins:
    """
    Tells, from the nodes the bus reports active one by one, when we have
    joined the bus: when no other node it reported is still active (at
    first, or after losing every node).
    """

    _reported: Set[Node] = attr.Factory(set)

    def joined(self, node: Node, nodes: Iterable[Node]) -> bool:
        """
        @param node: the node the bus reports active now.
        @param nodes: the bus's nodes now (L{dmq.interfaces.IDMQBus.nodes}).
        @return: whether no other node reported is among the active ones.
        """
        active = {n for n in nodes if not n.local and n.status is NodeStatus.ACTIVE}
        # The bus tells us when a node becomes active, not when it stops
        # being so: forget the nodes that are no longer active now.
        self._reported.discard(node)
        self._reported &= active
        alone = not self._reported
        self._reported.add(node)
        return alone
