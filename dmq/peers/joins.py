# -*- test-case-name: dmq.test.test_joins -*-
"""
When a stateful peer (htable, usrloc, dialog) has joined the bus and should
ask one node for a sync: the rule the three share, in one place.
"""

from __future__ import annotations

from typing import Set

import attr

from dmq.node import Node

__all__ = ["Joins"]


@attr.define
class Joins:
    """
    Tells, from the nodes the bus reports active one by one, when we have
    joined the bus: when no other node it reported is still active (at
    first, or after losing every node).
    """

    _reported: Set[Node] = attr.Factory(set)

    def joined(self, node: Node, active: Set[Node]) -> bool:
        """
        @param node: the node the bus reports active now.
        @param active: the nodes but the local one that are active now.
        @return: whether no other node reported is among C{active}.
        """
        # The bus tells us when a node becomes active, not when it stops
        # being so: forget the nodes that are no longer active now.
        self._reported.discard(node)
        self._reported &= active
        alone = not self._reported
        self._reported.add(node)
        return alone
