# -*- test-case-name: dmq.test.test_forgotten -*-
"""
Tests for L{dmq.forgotten}: tombstones and aliases, on a L{Clock}.
"""

from __future__ import annotations

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from dmq.forgotten import Forgotten, ForgottenIdentities
from dmq.nodelist import NodeIdentity
from dmq.sip import parseURI


def identity(text: str, resolvedIP=None) -> NodeIdentity:
    return NodeIdentity.of(parseURI(text), resolvedIP)


class ForgottenIdentitiesTests(SynchronousTestCase):
    """
    Tests for L{ForgottenIdentities}.
    """

    def setUp(self) -> None:
        self.clock = Clock()
        self.forgotten = ForgottenIdentities(self.clock, 10.0, 4)

    def found(self, identity: NodeIdentity) -> Forgotten:
        """
        What is remembered of C{identity}, which the test knows is forgotten.
        """
        forgotten = self.forgotten.find(identity)
        assert forgotten is not None, identity
        return forgotten

    def test_emptyForgetsNothing(self) -> None:
        """
        A new set covers no identity.
        """
        self.assertIsNone(self.forgotten.find(identity("sip:10.0.0.1:5060")))
        self.assertEqual(len(self.forgotten), 0)

    def test_nodeCoversEverySpelling(self) -> None:
        """
        A forgotten node is found under every spelling of its address, and
        not another node sharing its IP.
        """
        self.forgotten.forgetNode(identity("sip:10.0.0.1:5060"))
        found = self.forgotten.find(identity("sip:10.0.0.1"))
        self.assertEqual(found, Forgotten(identity("sip:10.0.0.1:5060"), 10.0, False))
        self.assertIsNotNone(
            self.forgotten.find(identity("sip:node1.example.com:5060", "10.0.0.1"))
        )
        self.assertIsNone(self.forgotten.find(identity("sip:10.0.0.1:5061")))

    def test_spellingCoversOnlyItself(self) -> None:
        """
        A forgotten spelling is found only by its own key, not by the
        address it shares with the node we know.
        """
        self.forgotten.forgetSpelling(identity("sip:node2.example.com:5060", "10.0.0.2"))
        self.assertTrue(self.found(identity("sip:node2.example.com:5060")).spellingOnly)
        self.assertIsNone(self.forgotten.find(identity("sip:10.0.0.2:5060")))

    def test_spellingFirst(self) -> None:
        """
        When an identity is covered both as a node and as a spelling, the
        spelling is what L{ForgottenIdentities.find} gives.
        """
        self.forgotten.forgetNode(identity("sip:10.0.0.1:5060"))
        self.forgotten.forgetSpelling(identity("sip:10.0.0.1:5060"))
        self.assertTrue(self.found(identity("sip:10.0.0.1:5060")).spellingOnly)

    def test_expiry(self) -> None:
        """
        An identity is forgotten for C{lifetime} seconds, then found no more.
        """
        self.forgotten.forgetNode(identity("sip:10.0.0.1:5060"))
        self.clock.advance(5)
        self.forgotten.forgetSpelling(identity("sip:10.0.0.2:5060"))
        self.clock.advance(4.9)
        self.assertIsNotNone(self.forgotten.find(identity("sip:10.0.0.1:5060")))
        self.clock.advance(0.1)
        self.assertIsNone(self.forgotten.find(identity("sip:10.0.0.1:5060")))
        self.assertEqual(len(self.forgotten), 1)
        self.clock.advance(5)
        self.assertIsNone(self.forgotten.find(identity("sip:10.0.0.2:5060")))
        self.assertEqual(len(self.forgotten), 0)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_rememberDropsTombstones(self) -> None:
        """
        Remembering a node drops its tombstones, under any spelling, and
        keeps the aliases.
        """
        self.forgotten.forgetNode(identity("sip:10.0.0.1:5060"))
        self.forgotten.forgetNode(identity("sip:10.0.0.1:5060;transport=udp"))
        self.forgotten.forgetSpelling(identity("sip:10.0.0.1:5060"))
        self.forgotten.forgetNode(identity("sip:10.0.0.3:5060"))
        self.forgotten.remember(identity("sip:10.0.0.1"))
        self.assertEqual(len(self.forgotten), 2)
        self.assertIsNotNone(self.forgotten.find(identity("sip:10.0.0.3:5060")))
        self.assertTrue(self.found(identity("sip:10.0.0.1:5060")).spellingOnly)
        self.assertIsNone(self.forgotten.find(identity("sip:10.0.0.1")))

    def test_forgottenAgain(self) -> None:
        """
        A node forgotten again is forgotten for a new lifetime.
        """
        self.forgotten.forgetNode(identity("sip:10.0.0.1:5060"))
        self.forgotten.remember(identity("sip:10.0.0.1:5060"))
        self.clock.advance(8)
        self.forgotten.forgetNode(identity("sip:10.0.0.1:5060"))
        self.clock.advance(8)
        self.assertEqual(self.found(identity("sip:10.0.0.1:5060")).until, 18.0)

    def test_bounded(self) -> None:
        """
        At most C{maxSize} identities are held; past that the oldest is let
        go first, whatever its kind.
        """
        for i in range(1, 7):
            self.clock.advance(1)
            if i % 2:
                self.forgotten.forgetNode(identity(f"sip:10.0.0.{i}:5060"))
            else:
                self.forgotten.forgetSpelling(identity(f"sip:10.0.0.{i}:5060"))
        self.assertEqual(len(self.forgotten), 4)
        self.assertIsNone(self.forgotten.find(identity("sip:10.0.0.1:5060")))
        self.assertIsNone(self.forgotten.find(identity("sip:10.0.0.2:5060")))
        for i in range(3, 7):
            self.assertIsNotNone(self.forgotten.find(identity(f"sip:10.0.0.{i}:5060")))

    def test_maxSizeAtLeastOne(self) -> None:
        """
        A set that can hold nothing is refused.
        """
        self.assertRaises(ValueError, ForgottenIdentities, self.clock, 10.0, 0)
