# -*- test-case-name: dmq.test.test_joins -*-
"""
Tests for L{dmq.peers.joins}.
"""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from dmq.node import Node
from dmq.peers.joins import Joins
from dmq.sip import parseURI


def _node(host: str) -> Node:
    return Node(parseURI(f"sip:{host}:5060"))


class JoinsTests(SynchronousTestCase):
    """
    L{Joins} says when a peer has joined the bus: the first node reported
    active, and the first after every reported node has gone.
    """

    def test_firstNode(self) -> None:
        """
        The first node reported active is a join; the next, while the first
        is still active, is not.
        """
        joins = Joins()
        a, b = _node("127.0.0.11"), _node("127.0.0.12")
        self.assertTrue(joins.joined(a, {a}))
        self.assertFalse(joins.joined(b, {a, b}))

    def test_afterIsolation(self) -> None:
        """
        A node reported active after every node reported before has stopped
        being active is a join again, even the same node.
        """
        joins = Joins()
        a, b = _node("127.0.0.11"), _node("127.0.0.12")
        joins.joined(a, {a})
        self.assertTrue(joins.joined(b, {b}))
        self.assertTrue(joins.joined(b, {b}))

    def test_onlyActiveOthersCount(self) -> None:
        """
        Of the bus's nodes, only the active ones other than the local node
        keep an earlier report alive: a node reported before and now
        disabled, or the local node, do not.
        """
        from dmq.node import NodeStatus

        joins = Joins()
        local = Node(parseURI("sip:127.0.0.10:5060"), local=True)
        a, b = _node("127.0.0.11"), _node("127.0.0.12")
        self.assertTrue(joins.joined(a, [local, a]))
        a.status = NodeStatus.DISABLED
        self.assertTrue(joins.joined(b, [local, a, b]))
