# -*- test-case-name: dmq.test.test_listmerge -*-
"""
Tests for L{dmq.listmerge}: our rules over Kamailio's merge, on a bare
L{NodeList}, without a node manager.
"""

from __future__ import annotations

from typing import List

from twisted.internet.task import Clock
from twisted.logger import capturedLogs
from twisted.trial.unittest import SynchronousTestCase

from dmq.forgotten import ForgottenIdentities
from dmq.listmerge import ListMerge
from dmq.liveness import LivenessPolicy
from dmq.nodelist import Node, NodeChange, NodeLine, NodeList, NodeStatus, parseNodeList
from dmq.sip import parseURI

ACTIVE = NodeStatus.ACTIVE
NOT_ACTIVE = NodeStatus.NOT_ACTIVE
DISABLED = NodeStatus.DISABLED


def uri(text: str):
    return parseURI(text)


def lines(body: bytes) -> List[NodeLine]:
    parsed = parseNodeList(body)
    assert not parsed.errors, parsed.errors
    return parsed.entries


class ListMergeTests(SynchronousTestCase):
    """
    Tests for L{ListMerge.merge}.
    """

    def setUp(self) -> None:
        self.clock = Clock()
        self.nodes = NodeList(Node(uri("sip:127.0.0.1:5061"), local=True))
        self.forgotten = ForgottenIdentities(self.clock, 120.0, 8)
        self.merger = ListMerge(self.nodes, LivenessPolicy(), self.forgotten, 4, self.clock)

    def add(self, text: str, status: NodeStatus = ACTIVE) -> Node:
        node = Node(uri(text), status)
        self.nodes.add(node)
        return node

    def test_thirdPartyAddsAndDemotes(self) -> None:
        """
        Another node's list adds unknown nodes and demotes known ones.
        """
        n2 = self.add("sip:127.0.0.1:5062")
        changes = self.merger.merge(
            lines(b"sip:127.0.0.1:5062;status=not_active\r\nsip:127.0.0.1:5063;status=active\r\n"),
            sender=uri("sip:127.0.0.1:5064"),
        )
        [n3] = self.nodes.others()[1:]
        self.assertEqual(
            changes, [NodeChange(n2, ACTIVE, NOT_ACTIVE), NodeChange(n3, None, ACTIVE)]
        )

    def test_onlyOwnWordPromotes(self) -> None:
        """
        Another node's line does not make a node active; its own does.
        """
        n2 = self.add("sip:127.0.0.1:5062", NOT_ACTIVE)
        body = lines(b"sip:127.0.0.1:5062;status=active\r\n")
        self.assertEqual(self.merger.merge(body, sender=uri("sip:127.0.0.1:5063")), [])
        self.assertEqual(self.merger.merge(body, sender=n2), [NodeChange(n2, NOT_ACTIVE, ACTIVE)])

    def test_forgottenNodeStaysOut(self) -> None:
        """
        A forgotten node is not re-added by another node's line, but is by
        its own C{active} line, which also remembers it.
        """
        self.forgotten.forgetNode(Node(uri("sip:127.0.0.1:5062")).identity())
        body = lines(b"sip:127.0.0.1:5062;status=active\r\n")
        self.assertEqual(self.merger.merge(body, sender=uri("sip:127.0.0.1:5063")), [])
        self.assertEqual(len(self.merger.merge(body, sender=uri("sip:127.0.0.1:5062"))), 1)
        self.assertEqual(len(self.forgotten), 0)

    def test_forgottenSpellingStaysOut(self) -> None:
        """
        A forgotten spelling is not re-added, even by a line of its own.
        """
        self.forgotten.forgetSpelling(Node(uri("sip:node2.example.com:5060")).identity())
        body = lines(b"sip:node2.example.com:5060;status=active\r\n")
        self.assertEqual(self.merger.merge(body, sender=uri("sip:node2.example.com:5060")), [])
        self.assertEqual(self.nodes.others(), [])

    def test_bounds(self) -> None:
        """
        Only the first C{maxNodes} lines are read, and no line adds a node
        past C{maxNodes}; both are logged.
        """
        body = b"".join(b"sip:127.0.1.%d:5060;status=active\r\n" % i for i in range(1, 9))
        with capturedLogs() as events:
            self.assertEqual(len(self.merger.merge(lines(body))), 4)
            self.assertEqual(self.merger.merge(lines(b"sip:127.0.2.1:5060;status=active\r\n")), [])
        self.assertEqual(len(self.nodes), 5)
        formats = [e["log_format"] for e in events]
        self.assertTrue(any("reading the first" in f for f in formats))
        self.assertTrue(any("the most allowed" in f for f in formats))
        self.assertEqual(
            self.merger.statistics, {"nodeListLinesIgnored": 4, "nodesRefusedFull": 1}
        )

    def test_boundsLoggedOnceAMinute(self) -> None:
        """
        However many lists overstep the bounds, each bound is logged once a
        minute; every line left out is counted.
        """
        body = b"".join(b"sip:127.0.1.%d:5060;status=active\r\n" % i for i in range(1, 9))
        with capturedLogs() as events:
            for _ in range(50):
                self.merger.merge(lines(body))
        self.assertEqual([e["cause"] for e in events], ["nodeListTooLong"])
        self.assertEqual(self.merger.statistics["nodeListLinesIgnored"], 50 * 4)
        self.assertEqual(self.merger.statistics["nodesRefusedFull"], 0)
        self.clock.advance(60)
        with capturedLogs() as events:
            self.merger.merge(lines(body))
            self.merger.merge(lines(b"sip:127.0.2.1:5060;status=active\r\n"))
        self.assertEqual(
            sorted(e["cause"] for e in events if e["log_level"].name == "warn"),
            ["nodeListTooLong", "nodesRefusedFull"],
        )

    def test_ownSpellingAdopted(self) -> None:
        """
        A node known under another spelling of its address takes the
        spelling of its own line; not that of another node's line.
        """
        seed = self.add("sip:127.0.0.2", NOT_ACTIVE)
        self.merger.merge(
            lines(b"sip:127.0.0.2:5060;status=active\r\n"), sender=uri("sip:127.0.0.3:5060")
        )
        self.assertEqual(str(seed), "sip:127.0.0.2")
        self.merger.merge(
            lines(b"sip:127.0.0.2:5060;status=active\r\n"), sender=uri("sip:127.0.0.2:5060")
        )
        self.assertEqual(str(seed), "sip:127.0.0.2:5060")
        self.assertIs(seed.status, ACTIVE)
