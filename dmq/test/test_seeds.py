# -*- test-case-name: dmq.test.test_seeds -*-
"""
Tests for L{dmq.seeds}.
"""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from dmq.nodelist import Node, NodeList
from dmq.seeds import Seeds
from dmq.sip import parseURI


def uri(text: str):
    return parseURI(text)


class SeedsTests(SynchronousTestCase):
    """
    Tests for L{Seeds}.
    """

    def setUp(self) -> None:
        self.nodes = NodeList(Node(uri("sip:127.0.0.1:5060"), local=True))
        self.seeds = Seeds()

    def seed(self, text: str) -> Node:
        node = Node(uri(text))
        self.seeds.add(uri(text), node)
        self.nodes.add(node)
        return node

    def test_iteration(self) -> None:
        """
        The seeds come in the order added, each with its configured URI.
        """
        a = self.seed("sip:127.0.0.2:5060")
        b = self.seed("sip:127.0.0.3:5060")
        self.assertEqual(
            list(self.seeds), [(uri("sip:127.0.0.2:5060"), a), (uri("sip:127.0.0.3:5060"), b)]
        )

    def test_covers(self) -> None:
        """
        A seed's node, and any node naming the same node, is a seed; others
        are not.
        """
        a = self.seed("sip:127.0.0.2")
        self.assertTrue(self.seeds.covers(a))
        self.assertTrue(self.seeds.covers(Node(uri("sip:127.0.0.2:5060"))))
        self.assertFalse(self.seeds.covers(Node(uri("sip:127.0.0.3:5060"))))

    def test_coversConfiguredSpelling(self) -> None:
        """
        Once its node is known by another spelling, a node named by the
        configured URI is still a seed.
        """
        a = self.seed("sip:seed.example.com:5060")
        a.resolvedIP = "127.0.0.2"
        a.uri = uri("sip:127.0.0.2:5060")
        self.assertTrue(self.seeds.covers(Node(uri("sip:seed.example.com:5060"))))

    def test_missingFrom(self) -> None:
        """
        The seeds missing from the list are those whose node is gone and
        whose configured URI names no node either.
        """
        a = self.seed("sip:127.0.0.2:5060")
        b = self.seed("sip:127.0.0.3:5060")
        c = self.seed("sip:127.0.0.4:5060")
        self.assertEqual(list(self.seeds.missingFrom(self.nodes)), [])
        self.nodes.remove(a)
        self.nodes.remove(b)
        self.nodes.add(Node(uri("sip:127.0.0.3:5060")))
        self.assertEqual(
            list(self.seeds.missingFrom(self.nodes)), [(uri("sip:127.0.0.2:5060"), a)]
        )
        self.assertIn(c, self.nodes)

    def test_missingCheckedWhenReached(self) -> None:
        """
        A seed put back while the missing ones are being gone through is
        not given again.
        """
        a = self.seed("sip:127.0.0.2:5060")
        self.nodes.remove(a)
        missing = self.seeds.missingFrom(self.nodes)
        self.nodes.add(a)
        self.assertEqual(list(missing), [])
