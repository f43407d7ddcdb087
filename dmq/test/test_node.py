# -*- test-case-name: dmq.test.test_node -*-
"""
Tests for L{dmq.node}: the L{NodeManager}'s rules for merges, replies,
timeouts, tombstones and observers.  The node model and its identity rules
are tested in L{dmq.test.test_nodelist}.
"""

from __future__ import annotations

from typing import List, Tuple

from twisted.internet.task import Clock
from twisted.logger import capturedLogs
from twisted.python.filepath import FilePath
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import implementer
from zope.interface.verify import verifyObject

from dmq.node import (
    DEFAULT_TOMBSTONE_TIME,
    INodeObserver,
    Node,
    NodeError,
    NodeManager,
    NodeStatus,
)
from dmq.nodelist import (
    MAX_BODY_LENGTH,
    NodeLine,
    NodeStatus as CodecNodeStatus,
    parseNodeList,
)
from dmq.sip import URI, parseURI

ACTIVE = NodeStatus.ACTIVE
NOT_ACTIVE = NodeStatus.NOT_ACTIVE
DISABLED = NodeStatus.DISABLED

NODELISTS = FilePath(__file__).sibling("data").child("nodelists")

N1 = parseURI("sip:127.0.0.1:5061")
N2 = parseURI("sip:127.0.0.1:5062")
N3 = parseURI("sip:127.0.0.1:5063")


def uri(text: str):
    return parseURI(text)


def captured(name: str) -> List[NodeLine]:
    """
    The lines of a node-list body copied from the captures.
    """
    parsed = parseNodeList(NODELISTS.child(name).getContent())
    assert not parsed.errors
    return parsed.entries


def lines(body: bytes) -> List[NodeLine]:
    parsed = parseNodeList(body)
    assert not parsed.errors, parsed.errors
    return parsed.entries


@implementer(INodeObserver)
class RecordingObserver:
    """
    Records what it is told.
    """

    def __init__(self) -> None:
        self.events: List[Tuple[str, Node]] = []

    def nodeActivated(self, node: Node) -> None:
        self.events.append(("activated", node))

    def nodeDeactivated(self, node: Node) -> None:
        self.events.append(("deactivated", node))

    def named(self) -> List[Tuple[str, str]]:
        return [(event, str(node)) for event, node in self.events]


class ReexportTests(SynchronousTestCase):
    """
    L{dmq.node} still offers the names that moved to other modules.
    """

    def test_statusReexported(self) -> None:
        """
        L{dmq.node.NodeStatus <dmq.nodelistbody.NodeStatus>} is the codec's L{NodeStatus}.
        """
        self.assertIs(NodeStatus, CodecNodeStatus)

    def test_movedNames(self) -> None:
        """
        The node model, the identity helpers and L{INodeObserver} are the
        ones of L{dmq.nodelist} and L{dmq.interfaces}.
        """
        from dmq import interfaces, node, nodelist

        for name in ["Node", "NodeChange", "NodeList", "nodeKey", "ipLiteral", "parseNodeAddress"]:
            self.assertIs(getattr(node, name), getattr(nodelist, name))
        self.assertIs(node.INodeObserver, interfaces.INodeObserver)
        for name in node.__all__:
            self.assertTrue(hasattr(node, name), name)


class ManagerTestCase(SynchronousTestCase):
    """
    Helpers for L{NodeManager} tests.
    """

    def manager(self, local=N1, seeds=(), **kwargs) -> NodeManager:
        self.clock = Clock()
        manager = NodeManager(self.clock, local, seeds, **kwargs)
        self.observer = RecordingObserver()
        manager.addObserver(self.observer)
        return manager

    def status(self, manager: NodeManager, text: str):
        node = manager.find(uri(text))
        return None if node is None else node.status

    def assertNoDelayedCalls(self) -> None:
        self.assertEqual(self.clock.getDelayedCalls(), [])


class ManagerBasicsTests(ManagerTestCase):
    """
    Tests for L{NodeManager}'s queries, seeds, bodies and service.
    """

    def test_local(self) -> None:
        """
        The local node is active, local, and first in L{NodeManager.nodes}.
        """
        manager = self.manager(local=uri("sip:127.0.0.1:5061;status=disabled"))
        local = manager.localNode
        self.assertTrue(local.local)
        self.assertIs(local.status, ACTIVE)
        self.assertEqual(local.uri, N1)
        self.assertEqual(manager.nodes(), [local])
        self.assertIs(manager.find(uri("sip:notification_peer@127.0.0.1:5061")), local)
        self.assertEqual(manager.activeNodes(), [])
        self.assertEqual(manager.pingTargets(), [])

    def test_seeds(self) -> None:
        """
        Seeds are added in order, C{not_active} until they answer: pinged,
        but not broadcast to or listed.
        """
        manager = self.manager(local=N3, seeds=[N1, N2])
        s1, s2 = manager.pingTargets()
        self.assertEqual([str(s1), str(s2)], [str(N1), str(N2)])
        self.assertEqual([s1.status, s2.status], [NOT_ACTIVE, NOT_ACTIVE])
        self.assertTrue(manager.isSeed(s1))
        self.assertTrue(manager.isSeed(s2))
        self.assertEqual(manager.activeNodes(), [])
        self.assertEqual(
            manager.nodeListBody(), b"sip:127.0.0.1:5063;status=active\r\n"
        )

    def test_duplicateSeedsFolded(self) -> None:
        """
        Several spellings of one seed make one entry; a seed naming
        ourselves makes none.
        """
        manager = self.manager(
            local=uri("sip:127.0.0.1:5060"),
            seeds=[
                uri("sip:127.0.0.2:5060"),
                uri("sip:127.0.0.2:5060;transport=udp"),
                uri("sip:127.0.0.2"),
                uri("sip:notification_peer@127.0.0.2:5060;status=active"),
                uri("sip:127.0.0.1:5060"),
                uri("sip:127.0.0.1"),
                uri("sip:127.0.0.3:5060"),
            ],
        )
        self.assertEqual(
            [str(n) for n in manager.pingTargets()],
            ["sip:127.0.0.2:5060", "sip:127.0.0.3:5060"],
        )

    def test_isSeed(self) -> None:
        """
        A node is a seed when it is one of the notification addresses, in
        any spelling, even re-added as a new object after removal.
        """
        manager = self.manager(seeds=[N2])
        self.assertTrue(manager.isSeed(Node(uri("sip:127.0.0.1:5062;transport=udp"))))
        self.assertFalse(manager.isSeed(Node(N3)))
        self.assertFalse(manager.isSeed(manager.localNode))

    def test_nodeListBodyOrder(self) -> None:
        """
        The body lists the active nodes newest first and ourselves last, as
        Kamailio does; nodes that are not active are left out.
        """
        manager = self.manager()
        manager.add(uri("sip:127.0.0.1:5062"))
        manager.add(uri("sip:127.0.0.1:5063"), NOT_ACTIVE)
        manager.add(uri("sip:127.0.0.1:5064;transport=tcp"))
        manager.add(uri("sip:127.0.0.1:5065"), DISABLED)
        self.assertEqual(
            manager.nodeListBody(),
            b"sip:127.0.0.1:5064;transport=tcp;status=active\r\n"
            b"sip:127.0.0.1:5062;status=active\r\n"
            b"sip:127.0.0.1:5061;status=active\r\n",
        )

    def test_nodeListBodyLocalSpelling(self) -> None:
        """
        Our line is written as Kamailio writes a node: no user part, no
        C{;transport=udp}, an empty port when we have none.
        """
        manager = self.manager(local=uri("sip:dmq@10.0.0.1;transport=udp"))
        self.assertEqual(manager.nodeListBody(), b"sip:10.0.0.1:;status=active\r\n")

    def test_leavingBody(self) -> None:
        """
        The leaving body is ourselves as C{disabled}, alone; our status does
        not change.
        """
        manager = self.manager(seeds=[N2])
        manager.notificationSucceeded(manager.pingTargets()[0])
        self.assertEqual(
            manager.leavingBody(), b"sip:127.0.0.1:5061;status=disabled\r\n"
        )
        self.assertIs(manager.localNode.status, ACTIVE)

    def test_bodyTooLargeWarnsOnce(self) -> None:
        """
        A body a Kamailio node could not hold is logged as a warning, once
        until it fits again.
        """
        manager = self.manager()
        # With our own line, 29 lines of 32 octets: the most that fit.
        for i in range(28):
            manager.add(uri(f"sip:n{i:03d}.xmpl:5062"))
        with capturedLogs() as events:
            manager.nodeListBody()
        self.assertEqual([e for e in events if e["log_level"].name == "warn"], [])
        manager.add(uri("sip:n100.xmpl:5062"))
        with capturedLogs() as events:
            body = manager.nodeListBody()
            manager.nodeListBody()
        warnings = [e for e in events if e["log_level"].name == "warn"]
        self.assertEqual(len(warnings), 1)
        self.assertEqual(warnings[0]["size"], len(body))
        self.assertEqual(warnings[0]["limit"], 1024)
        manager.remove(uri("sip:n100.xmpl:5062"))
        manager.remove(uri("sip:n000.xmpl:5062"))
        manager.nodeListBody()
        manager.add(uri("sip:n101.xmpl:5062"))
        manager.add(uri("sip:n102.xmpl:5062"))
        with capturedLogs() as events:
            manager.nodeListBody()
        self.assertEqual(len([e for e in events if e["log_level"].name == "warn"]), 1)

    def test_statusChangesLogged(self) -> None:
        """
        Each status change is logged at info level with the node and its new
        status.
        """
        manager = self.manager()
        with capturedLogs() as events:
            node = manager.add(N2)
            manager.notificationTimedOut(node, ACTIVE)
            manager.notificationTimedOut(node, DISABLED)
        changes = [
            (e["node"], e["status"])
            for e in events
            if e.get("log_format") == "node {node} is now {status}"
        ]
        self.assertEqual(
            changes, [(node, "active"), (node, "disabled"), (node, "removed")]
        )
        self.assertTrue(
            all(
                e["log_level"].name == "info"
                for e in events
                if e.get("log_format") == "node {node} is now {status}"
            )
        )

    def test_service(self) -> None:
        """
        The manager is a service; stopping it returns a fired Deferred and
        leaves nothing on the clock, tombstones included.
        """
        manager = self.manager(seeds=[N2])
        manager.startService()
        self.assertTrue(manager.running)
        manager.remove(N2)
        d = manager.stopService()
        self.assertIsNone(self.successResultOf(d))
        self.assertFalse(manager.running)
        self.assertNoDelayedCalls()


class CaptureTests(ManagerTestCase):
    """
    Our bodies are byte for byte Kamailio's for the same list, replaying the
    captured bus formation.
    """

    def body(self, name: str) -> bytes:
        return NODELISTS.child(name).getContent()

    def test_n1(self) -> None:
        """
        As n1 (no seed), after n2's then n3's joins: n1's rebroadcasts.
        """
        n1 = self.manager(local=N1)
        self.assertEqual(n1.merge(captured("01-n2-join.txt"), sender=N2), 1)
        self.assertEqual(n1.nodeListBody(), self.body("01-n1-notify-n2.txt"))
        self.assertEqual(n1.merge(captured("01-n3-join.txt"), sender=N3), 1)
        self.assertEqual(n1.nodeListBody(), self.body("01-n1-notify-n3.txt"))

    def test_n2(self) -> None:
        """
        As n2 (seed n1): its join (5.6.3, like us, leaves an unanswered seed
        out), its 200 to n1's rebroadcast, and its 200 after n3 joined.
        """
        n2 = self.manager(local=N2, seeds=[N1])
        self.assertEqual(n2.nodeListBody(), self.body("01-n2-join.txt"))
        seed = n2.find(N1)
        assert seed is not None
        self.assertEqual(n2.merge(captured("01-n1-notify-n2.txt"), sender=seed), 1)
        self.assertIs(seed.status, ACTIVE)
        self.assertEqual(n2.nodeListBody(), self.body("01-n2-reply-n1.txt"))
        self.assertEqual(n2.merge(captured("01-n1-notify-n3.txt"), sender=seed), 1)
        self.assertEqual(n2.nodeListBody(), self.body("01-n2-reply-n1-after-n3.txt"))

    def test_n3(self) -> None:
        """
        As n3 (seed n1): its join, then its 200 to n1's rebroadcast.
        """
        n3 = self.manager(local=N3, seeds=[N1])
        self.assertEqual(n3.nodeListBody(), self.body("01-n3-join.txt"))
        self.assertEqual(
            n3.merge(captured("01-n1-notify-n3.txt"), sender=n3.find(N1)), 2
        )
        self.assertEqual(n3.nodeListBody(), self.body("01-n3-reply-n1.txt"))

    def test_stopN3(self) -> None:
        """
        C{04-stop-n3-sigterm}, as n1: n3's first timeout disables it and
        drops it from our body at once (n1's reply at 33.6 s); n2's stale
        lists do not bring it back; the next timeout removes it; and, unlike
        Kamailio, n2's stale lists do not re-add it until the tombstone
        expires.
        """
        n1 = self.manager(local=N1)
        n1.merge(captured("01-n2-join.txt"), sender=N2)
        n1.merge(captured("01-n3-join.txt"), sender=N3)
        n3 = n1.find(N3)
        assert n3 is not None
        n1.notificationTimedOut(n3, ACTIVE)
        self.assertIs(n3.status, DISABLED)
        self.assertEqual(n1.nodeListBody(), self.body("04-n1-reply-n2-n3-disabled.txt"))
        n2 = n1.find(N2)
        self.assertEqual(
            n1.merge(captured("01-n2-reply-n1-after-n3.txt"), sender=n2), 0
        )
        self.assertIs(n3.status, DISABLED)
        self.assertIn(n3, n1.pingTargets())
        self.clock.advance(35)
        n1.notificationTimedOut(n3, DISABLED)
        self.assertIsNone(n1.find(N3))
        self.assertEqual(
            n1.merge(captured("01-n2-reply-n1-after-n3.txt"), sender=n2), 0
        )
        self.assertIsNone(n1.find(N3))
        self.clock.advance(DEFAULT_TOMBSTONE_TIME)
        self.assertEqual(
            n1.merge(captured("01-n2-reply-n1-after-n3.txt"), sender=n2), 1
        )
        self.assertIs(self.status(n1, "sip:127.0.0.1:5063"), ACTIVE)

    def test_killSeed(self) -> None:
        """
        C{06-kill-n1-notification-node}, as n2: the seed n1 times out and
        becomes C{not_active}; n3's lists, which keep calling n1 active, do
        not make it active again (Kamailio 5.6.3 listed the dead n1 for
        127 s and counting); n1 is never removed, and only its own 200 brings
        it back.
        """
        n2 = self.manager(local=N2, seeds=[N1])
        seed = n2.find(N1)
        assert seed is not None
        n2.notificationSucceeded(seed)
        n2.merge(captured("01-n1-notify-n3.txt"), sender=seed)
        n3 = n2.find(N3)
        n2.notificationTimedOut(seed, ACTIVE)
        self.assertIs(seed.status, NOT_ACTIVE)
        fromN3 = lines(
            b"sip:127.0.0.1:5062;status=active\r\n"
            b"sip:127.0.0.1:5061;status=active\r\n"
            b"sip:127.0.0.1:5063;status=active\r\n"
        )
        for i in range(30):
            self.clock.advance(5)
            self.assertEqual(n2.merge(fromN3, sender=n3), 0)
            n2.notificationTimedOut(seed, NOT_ACTIVE)
        self.assertIs(seed.status, NOT_ACTIVE)
        self.assertIn(seed, n2.pingTargets())
        self.assertEqual(n2.activeNodes(), [n3])
        self.assertEqual(
            n2.nodeListBody(),
            b"sip:127.0.0.1:5063;status=active\r\nsip:127.0.0.1:5062;status=active\r\n",
        )
        n2.notificationSucceeded(seed)
        self.assertIs(seed.status, ACTIVE)

    def test_gracefulLeave(self) -> None:
        """
        C{probe-04-notify-disabled}, as n1: a node's C{disabled} line about
        itself disables it at once (still pinged, no longer listed); others'
        stale lines leave it so; its timeout removes it, and the stale lines
        that re-added it to Kamailio a second later do not re-add it here.
        """
        n1 = self.manager(local=N1)
        n1.merge(captured("01-n2-join.txt"), sender=N2)
        prober = uri("sip:notification_peer@127.0.0.1:5099")
        n1.merge(lines(b"sip:127.0.0.1:5099;status=active\r\n"), sender=prober)
        node = n1.find(prober)
        assert node is not None
        self.assertEqual(
            n1.merge(lines(b"sip:127.0.0.1:5099;status=disabled\r\n"), sender=prober), 1
        )
        self.assertIs(node.status, DISABLED)
        self.assertIn(node, n1.pingTargets())
        self.assertNotIn(b"5099", n1.nodeListBody())
        stale = lines(
            b"sip:127.0.0.1:5099;status=active\r\n"
            b"sip:127.0.0.1:5061;status=active\r\n"
            b"sip:127.0.0.1:5062;status=active\r\n"
        )
        self.assertEqual(n1.merge(stale, sender=n1.find(N2)), 0)
        self.assertIs(node.status, DISABLED)
        self.clock.advance(30)
        n1.notificationTimedOut(node, DISABLED)
        self.assertIsNone(n1.find(prober))
        self.clock.advance(1)
        self.assertEqual(n1.merge(stale, sender=n1.find(N2)), 0)
        self.assertIsNone(n1.find(prober))


class MergeRulesTests(ManagerTestCase):
    """
    Tests for L{NodeManager.merge}: only a node's own word makes it active.
    """

    def test_newNodesFromThirdParty(self) -> None:
        """
        Another node's list adds unknown nodes with their status.
        """
        manager = self.manager()
        self.assertEqual(
            manager.merge(
                lines(
                    b"sip:127.0.0.1:5063;status=active\r\nsip:127.0.0.1:5062;status=active\r\n"
                ),
                sender=N2,
            ),
            2,
        )
        self.assertEqual(
            [(str(n), n.status) for n in manager.nodes()],
            [(str(N1), ACTIVE), (str(N3), ACTIVE), (str(N2), ACTIVE)],
        )

    def test_localLineIgnored(self) -> None:
        """
        A line about ourselves changes nothing, even from ourselves.
        """
        manager = self.manager()
        self.assertEqual(
            manager.merge(lines(b"sip:127.0.0.1:5061;status=disabled\r\n"), sender=N1),
            0,
        )
        self.assertIs(manager.localNode.status, ACTIVE)
        self.assertEqual(manager.pingTargets(), [])

    def test_thirdPartyDoesNotPromote(self) -> None:
        """
        Another node's C{active} line does not make a C{not_active} node
        active.
        """
        manager = self.manager()
        n3 = manager.add(N3, NOT_ACTIVE)
        self.assertEqual(
            manager.merge(lines(b"sip:127.0.0.1:5063;status=active\r\n"), sender=N2), 0
        )
        self.assertEqual(
            manager.merge(lines(b"sip:127.0.0.1:5063;status=active\r\n")), 0
        )
        self.assertIs(n3.status, NOT_ACTIVE)

    def test_thirdPartyDoesNotReviveDisabled(self) -> None:
        """
        Another node's line does not change a C{disabled} node.
        """
        manager = self.manager()
        n3 = manager.add(N3, DISABLED)
        manager.merge(lines(b"sip:127.0.0.1:5063;status=active\r\n"), sender=N2)
        manager.merge(lines(b"sip:127.0.0.1:5063;status=not_active\r\n"), sender=N2)
        self.assertIs(n3.status, DISABLED)

    def test_thirdPartyDemotes(self) -> None:
        """
        Another node's line may demote a node, as in Kamailio.
        """
        manager = self.manager()
        n3 = manager.add(N3)
        self.assertEqual(
            manager.merge(lines(b"sip:127.0.0.1:5063;status=disabled\r\n"), sender=N2),
            1,
        )
        self.assertIs(n3.status, DISABLED)

    def test_ownLinePromotes(self) -> None:
        """
        A node's own C{active} line makes it active, from C{not_active} or
        C{disabled}.
        """
        manager = self.manager()
        n2 = manager.add(N2, NOT_ACTIVE)
        self.assertEqual(
            manager.merge(lines(b"sip:127.0.0.1:5062;status=active\r\n"), sender=n2), 1
        )
        self.assertIs(n2.status, ACTIVE)
        manager.changeStatus(N2, DISABLED)
        self.assertEqual(
            manager.merge(
                lines(b"sip:127.0.0.1:5062;status=active\r\n"),
                sender=uri("sip:notification_peer@127.0.0.1:5062"),
            ),
            1,
        )
        self.assertIs(n2.status, ACTIVE)

    def test_ownLineOtherSpelling(self) -> None:
        """
        The sender's own line is recognised in another spelling of its
        address, and its own spelling is adopted for the node (a seed
        configured without a port).
        """
        manager = self.manager(
            local=uri("sip:127.0.0.1:5060"), seeds=[uri("sip:127.0.0.2")]
        )
        seed = manager.pingTargets()[0]
        manager.notificationSucceeded(seed)
        self.assertEqual(
            manager.nodeListBody(),
            b"sip:127.0.0.2:;status=active\r\nsip:127.0.0.1:5060;status=active\r\n",
        )
        manager.merge(lines(b"sip:127.0.0.2:5060;status=active\r\n"), sender=seed)
        self.assertEqual(manager.pingTargets(), [seed])
        self.assertEqual(str(seed), "sip:127.0.0.2:5060")
        self.assertTrue(manager.isSeed(seed))
        self.assertEqual(
            manager.nodeListBody(),
            b"sip:127.0.0.2:5060;status=active\r\nsip:127.0.0.1:5060;status=active\r\n",
        )

    def test_thirdPartyOtherSpellingNotAdopted(self) -> None:
        """
        Another node's spelling of a node is not adopted.
        """
        manager = self.manager(
            local=uri("sip:127.0.0.1:5060"), seeds=[uri("sip:127.0.0.2")]
        )
        manager.merge(
            lines(b"sip:127.0.0.2:5060;status=active\r\n"), sender=uri("sip:127.0.0.3")
        )
        self.assertEqual([str(n) for n in manager.pingTargets()], ["sip:127.0.0.2"])

    def test_gracefulLeave(self) -> None:
        """
        A node's own C{disabled} line disables it at once, even when the node
        was active; it is still pinged and no longer broadcast to.
        """
        manager = self.manager()
        n2 = manager.add(N2)
        self.assertEqual(
            manager.merge(lines(b"sip:127.0.0.1:5062;status=disabled\r\n"), sender=n2),
            1,
        )
        self.assertIs(n2.status, DISABLED)
        self.assertEqual(manager.pingTargets(), [n2])
        self.assertEqual(manager.activeNodes(), [])
        self.assertEqual(self.observer.events, [("activated", n2), ("deactivated", n2)])

    def test_ownLineWithoutStatus(self) -> None:
        """
        An own line without C{;status=} does not change the node.
        """
        manager = self.manager()
        n2 = manager.add(N2, NOT_ACTIVE)
        self.assertEqual(manager.merge(lines(b"sip:127.0.0.1:5062\r\n"), sender=n2), 0)
        self.assertIs(n2.status, NOT_ACTIVE)

    def test_count(self) -> None:
        """
        The result counts the nodes added or changed.
        """
        manager = self.manager()
        manager.add(N2)
        body = lines(
            b"sip:127.0.0.1:5062;status=active\r\n"
            b"sip:127.0.0.1:5063;status=active\r\n"
            b"sip:127.0.0.1:5064;status=active\r\n"
            b"sip:127.0.0.1:5061;status=active\r\n"
        )
        self.assertEqual(manager.merge(body, sender=N2), 2)
        self.assertEqual(manager.merge(body, sender=N2), 0)

    def test_linesIterator(self) -> None:
        """
        Lines may be given as any iterable.
        """
        manager = self.manager()
        self.assertEqual(
            manager.merge(
                iter(lines(b"sip:127.0.0.1:5062;status=active\r\n")), sender=N2
            ),
            1,
        )


class OutcomeTests(ManagerTestCase):
    """
    Tests for the outcomes of our requests: 200s, 408s, other channels'
    timeouts, and requests heard from a node.
    """

    def test_successActivates(self) -> None:
        """
        A 200 makes the node active whatever it was, resets its fail count,
        and records the time.
        """
        manager = self.manager()
        for status in [NOT_ACTIVE, DISABLED]:
            node = manager.add(
                uri(f"sip:127.0.0.1:{5062 + len(manager.pingTargets())}"), status
            )
            node.failCount = 3
            self.clock.advance(7)
            manager.notificationSucceeded(node)
            self.assertIs(node.status, ACTIVE)
            self.assertEqual(node.failCount, 0)
            self.assertEqual(node.lastNotification, self.clock.seconds())

    def test_successOfLocalIgnored(self) -> None:
        """
        A 200 from ourselves changes nothing.
        """
        manager = self.manager()
        manager.notificationSucceeded(manager.localNode)
        self.assertEqual(manager.nodes(), [manager.localNode])
        self.assertIsNone(manager.localNode.lastNotification)

    def test_timeoutNonSeed(self) -> None:
        """
        A timeout disables a node that is not a seed; the next, of a request
        sent while it was disabled, removes it.
        """
        manager = self.manager()
        n2 = manager.add(N2)
        manager.notificationTimedOut(n2, ACTIVE)
        self.assertIs(n2.status, DISABLED)
        self.assertEqual(manager.pingTargets(), [n2])
        self.assertEqual(manager.activeNodes(), [])
        manager.notificationTimedOut(n2, DISABLED)
        self.assertEqual(manager.pingTargets(), [])
        self.assertIsNone(manager.find(N2))

    def test_removedNodeLooksDisabled(self) -> None:
        """
        A removed node object reads as C{disabled}, for whoever still holds
        it.
        """
        manager = self.manager()
        n2 = manager.add(N2)
        manager.remove(N2)
        self.assertIs(n2.status, DISABLED)

    def test_timeoutSeed(self) -> None:
        """
        A timeout makes a seed C{not_active}, never removed, however many
        follow.
        """
        manager = self.manager(seeds=[N2])
        seed = manager.find(N2)
        assert seed is not None
        manager.notificationSucceeded(seed)
        for i in range(5):
            manager.notificationTimedOut(seed, seed.status)
            self.assertIs(seed.status, NOT_ACTIVE)
        self.assertEqual(manager.pingTargets(), [seed])

    def test_timeoutNeverPromotes(self) -> None:
        """
        A timeout does not move a C{disabled} seed to C{not_active}.
        """
        manager = self.manager(seeds=[N2])
        seed = manager.find(N2)
        assert seed is not None
        manager.changeStatus(N2, DISABLED)
        manager.notificationTimedOut(seed, NOT_ACTIVE)
        self.assertIs(seed.status, DISABLED)

    def test_timeoutDisabledSeedKept(self) -> None:
        """
        A seed that was C{disabled} when the request went out (it said
        goodbye) is not removed, unlike other nodes: it stays, still pinged,
        for when it comes back.  A seed removed by hand is restored for a
        re-join.
        """
        manager = self.manager(seeds=[uri("sip:127.0.0.1:5062;transport=udp")])
        seed = manager.find(N2)
        assert seed is not None
        manager.merge(lines(b"sip:127.0.0.1:5062;status=disabled\r\n"), sender=seed)
        manager.notificationTimedOut(seed, DISABLED)
        self.assertEqual(manager.pingTargets(), [seed])
        self.assertIs(seed.status, DISABLED)
        manager.remove(N2)
        self.assertEqual(manager.pingTargets(), [])
        self.assertEqual(manager.restoreSeeds(), [seed])
        self.assertEqual(manager.pingTargets(), [seed])
        self.assertIs(seed.status, NOT_ACTIVE)
        self.assertEqual(str(seed), "sip:127.0.0.1:5062;transport=udp")
        self.assertEqual(manager.restoreSeeds(), [])

    def test_timeoutRemoveInactiveOff(self) -> None:
        """
        Without C{removeInactive}, a timeout makes a node C{not_active}, and
        it stays so.
        """
        manager = self.manager(removeInactive=False)
        n2 = manager.add(N2)
        manager.notificationTimedOut(n2, ACTIVE)
        self.assertIs(n2.status, NOT_ACTIVE)
        manager.notificationTimedOut(n2, NOT_ACTIVE)
        self.assertIs(n2.status, NOT_ACTIVE)
        self.assertEqual(manager.pingTargets(), [n2])

    def test_timeoutAfterRevival(self) -> None:
        """
        A timeout of a request sent while the node was C{disabled} does not
        remove it if it came back since; it counts as a timeout of an active
        node.
        """
        manager = self.manager()
        n2 = manager.add(N2, DISABLED)
        manager.notificationSucceeded(n2)
        manager.notificationTimedOut(n2, DISABLED)
        self.assertIs(manager.find(N2), n2)
        self.assertIs(n2.status, DISABLED)

    def test_timeoutUnknownNode(self) -> None:
        """
        Timeouts for a node no longer in the list, or for ourselves, change
        nothing.
        """
        manager = self.manager()
        n2 = manager.add(N2)
        manager.remove(N2)
        manager.notificationTimedOut(n2, ACTIVE)
        manager.notificationTimedOut(manager.localNode, ACTIVE)
        manager.otherRequestTimedOut(n2)
        self.assertEqual(manager.nodes(), [manager.localNode])
        self.assertIs(manager.localNode.status, ACTIVE)

    def test_failCountDefaults(self) -> None:
        """
        With fail counts and the default thresholds (0, 1): the first
        timeout makes a node C{not_active}, the second C{disabled}, the third
        removes it, but not a seed (Kamailio 6.1 would remove it too, and
        then have no address left to re-join through): it stays, pinged.
        """
        manager = self.manager(seeds=[N2], failCountEnabled=True)
        seed = manager.find(N2)
        assert seed is not None
        manager.notificationSucceeded(seed)
        manager.notificationTimedOut(seed, ACTIVE)
        self.assertEqual((seed.status, seed.failCount), (NOT_ACTIVE, 1))
        manager.notificationTimedOut(seed, NOT_ACTIVE)
        self.assertEqual((seed.status, seed.failCount), (DISABLED, 2))
        manager.notificationTimedOut(seed, DISABLED)
        self.assertIs(manager.find(N2), seed)
        self.assertEqual(manager.pingTargets(), [seed])
        n3 = manager.add(N3)
        for status in (ACTIVE, NOT_ACTIVE, DISABLED):
            manager.notificationTimedOut(n3, status)
        self.assertIsNone(manager.find(N3))

    def test_failCountThresholds(self) -> None:
        """
        A node becomes C{not_active} when its count exceeds the first
        threshold, C{disabled} when it exceeds the second; a 200 resets the
        count.
        """
        manager = self.manager(
            failCountEnabled=True,
            failCountThresholdNotActive=2,
            failCountThresholdDisabled=3,
        )
        n2 = manager.add(N2)
        seen = []
        for i in range(5):
            manager.notificationTimedOut(n2, n2.status)
            seen.append((n2.failCount, n2.status))
        # The fifth timeout, of a request sent while disabled, removes it.
        self.assertEqual(
            seen,
            [(1, ACTIVE), (2, ACTIVE), (3, NOT_ACTIVE), (4, DISABLED), (4, DISABLED)],
        )
        self.assertIsNone(manager.find(N2))
        n3 = manager.add(N3)
        manager.notificationTimedOut(n3, ACTIVE)
        manager.notificationTimedOut(n3, ACTIVE)
        manager.notificationSucceeded(n3)
        self.assertEqual((n3.status, n3.failCount), (ACTIVE, 0))

    def test_failCountNotActiveAtThreshold(self) -> None:
        """
        A C{not_active} node whose count has not exceeded the C{disabled}
        threshold stays C{not_active}.
        """
        manager = self.manager(
            failCountEnabled=True,
            failCountThresholdNotActive=0,
            failCountThresholdDisabled=3,
        )
        n2 = manager.add(N2)
        for expected in [NOT_ACTIVE, NOT_ACTIVE, NOT_ACTIVE, DISABLED]:
            manager.notificationTimedOut(n2, n2.status)
            self.assertIs(n2.status, expected)

    def test_otherRequestWithoutFailCount(self) -> None:
        """
        Without fail counts, other channels' timeouts change nothing.
        """
        manager = self.manager()
        n2 = manager.add(N2)
        for i in range(3):
            manager.otherRequestTimedOut(n2)
        self.assertEqual((n2.status, n2.failCount), (ACTIVE, 0))

    def test_otherRequestWithFailCount(self) -> None:
        """
        With fail counts, other channels' timeouts count against an active
        node only, and at most make it C{not_active}.
        """
        manager = self.manager(failCountEnabled=True, failCountThresholdNotActive=1)
        n2 = manager.add(N2)
        manager.otherRequestTimedOut(n2)
        self.assertEqual((n2.status, n2.failCount), (ACTIVE, 1))
        manager.otherRequestTimedOut(n2)
        self.assertEqual((n2.status, n2.failCount), (NOT_ACTIVE, 2))
        for i in range(5):
            manager.otherRequestTimedOut(n2)
        self.assertEqual((n2.status, n2.failCount), (NOT_ACTIVE, 2))

    def test_heardFrom(self) -> None:
        """
        A request from a node records the time, and nothing else.
        """
        manager = self.manager()
        n2 = manager.add(N2, NOT_ACTIVE)
        self.clock.advance(12)
        manager.heardFrom(n2)
        self.assertEqual(n2.lastNotification, 12)
        self.assertIs(n2.status, NOT_ACTIVE)

    def test_heardFromRemoved(self) -> None:
        """
        A request from a node we removed does not re-add it.
        """
        manager = self.manager()
        n2 = manager.add(N2)
        manager.remove(N2)
        manager.heardFrom(n2)
        self.assertIsNone(manager.find(N2))
        self.assertIsNone(n2.lastNotification)


class TombstoneTests(ManagerTestCase):
    """
    Tests for tombstones: no ghost nodes.
    """

    STALE = b"sip:127.0.0.1:5063;status=active\r\nsip:127.0.0.1:5062;status=active\r\n"

    def removedN3(self, **kwargs) -> Tuple[NodeManager, Node]:
        manager = self.manager(**kwargs)
        n3 = manager.add(N3)
        manager.add(N2)
        manager.notificationTimedOut(n3, ACTIVE)
        manager.notificationTimedOut(n3, DISABLED)
        self.assertIsNone(manager.find(N3))
        return manager, n3

    def test_notRevivedByThirdParty(self) -> None:
        """
        Within the grace period, another node's list does not re-add a node
        we removed.
        """
        manager, n3 = self.removedN3()
        self.clock.advance(DEFAULT_TOMBSTONE_TIME - 1)
        self.assertEqual(manager.merge(lines(self.STALE), sender=N2), 0)
        self.assertIsNone(manager.find(N3))

    def test_revivedAfterGrace(self) -> None:
        """
        After the grace period another node's list adds it again.
        """
        manager, n3 = self.removedN3()
        self.clock.advance(DEFAULT_TOMBSTONE_TIME)
        self.assertEqual(manager.merge(lines(self.STALE), sender=N2), 1)
        self.assertIs(self.status(manager, "sip:127.0.0.1:5063"), ACTIVE)

    def test_tombstoneTimeOption(self) -> None:
        """
        The grace period is C{tombstoneTime}.
        """
        manager, n3 = self.removedN3(tombstoneTime=10)
        self.clock.advance(9)
        self.assertEqual(manager.merge(lines(self.STALE), sender=N2), 0)
        self.clock.advance(1)
        self.assertEqual(manager.merge(lines(self.STALE), sender=N2), 1)

    def test_revivedByOwnLine(self) -> None:
        """
        The node's own C{active} line re-adds it at once.
        """
        manager, n3 = self.removedN3()
        self.assertEqual(
            manager.merge(
                lines(self.STALE), sender=uri("sip:notification_peer@127.0.0.1:5063")
            ),
            1,
        )
        self.assertIs(self.status(manager, "sip:127.0.0.1:5063"), ACTIVE)

    def test_ownLineRevivalClearsTombstone(self) -> None:
        """
        Once re-added by its own line, a node removed again is tombstoned
        afresh, and re-added by others only after a new grace period.
        """
        manager, n3 = self.removedN3()
        manager.merge(lines(b"sip:127.0.0.1:5063;status=active\r\n"), sender=N3)
        manager.remove(N3)
        self.clock.advance(DEFAULT_TOMBSTONE_TIME - 1)
        self.assertEqual(manager.merge(lines(self.STALE), sender=N2), 0)

    def test_ownDisabledLineDoesNotRevive(self) -> None:
        """
        A removed node's own C{disabled} line does not re-add it.
        """
        manager, n3 = self.removedN3()
        self.assertEqual(
            manager.merge(lines(b"sip:127.0.0.1:5063;status=disabled\r\n"), sender=N3),
            0,
        )
        self.assertIsNone(manager.find(N3))

    def test_revivedBy200(self) -> None:
        """
        The node's own 200 re-adds it at once: the same object, active.
        """
        manager, n3 = self.removedN3()
        manager.notificationSucceeded(n3)
        self.assertIs(manager.find(N3), n3)
        self.assertIs(n3.status, ACTIVE)
        self.assertEqual(
            self.observer.named(),
            [
                ("activated", "sip:127.0.0.1:5063"),
                ("activated", "sip:127.0.0.1:5062"),
                ("deactivated", "sip:127.0.0.1:5063"),
                ("activated", "sip:127.0.0.1:5063"),
            ],
        )

    def test_200AfterReadded(self) -> None:
        """
        A 200 for a node object that was removed and meanwhile re-added as
        another object updates the entry in the list.
        """
        manager, n3 = self.removedN3()
        self.clock.advance(DEFAULT_TOMBSTONE_TIME)
        manager.merge(lines(b"sip:127.0.0.1:5063;status=disabled\r\n"), sender=N2)
        again = manager.find(N3)
        assert again is not None
        self.assertIsNot(again, n3)
        manager.notificationSucceeded(n3)
        self.assertIs(again.status, ACTIVE)
        self.assertNotIn(n3, manager.nodes())

    def test_adminRemove(self) -> None:
        """
        An administrative removal tombstones too.
        """
        manager = self.manager()
        manager.add(N3)
        self.assertTrue(manager.remove(N3))
        self.assertEqual(manager.merge(lines(self.STALE), sender=N2), 1)
        self.assertIsNone(manager.find(N3))

    def test_adminAddClearsTombstone(self) -> None:
        """
        An administrative add brings a removed node back at once.
        """
        manager, n3 = self.removedN3()
        manager.add(N3)
        manager.remove(N2)
        self.assertIs(self.status(manager, "sip:127.0.0.1:5063"), ACTIVE)

    def test_tombstoneOtherSpelling(self) -> None:
        """
        A tombstone covers other spellings of the node's address.
        """
        manager, n3 = self.removedN3()
        manager.merge(
            lines(b"sip:127.0.0.1:5063;transport=udp;status=active\r\n"), sender=N2
        )
        self.assertIsNone(manager.find(N3))


class ObserverTests(ManagerTestCase):
    """
    Tests for the observers of a L{NodeManager}.
    """

    def test_interface(self) -> None:
        """
        The recording observer provides L{INodeObserver}.
        """
        verifyObject(INodeObserver, RecordingObserver())

    def test_oncePerTransition(self) -> None:
        """
        Observers hear once of each move into or out of C{active}, and
        nothing of moves between other states.
        """
        manager = self.manager()
        n2 = manager.add(N2, NOT_ACTIVE)
        self.assertEqual(self.observer.events, [])
        manager.notificationSucceeded(n2)
        manager.notificationSucceeded(n2)
        manager.merge(lines(b"sip:127.0.0.1:5062;status=active\r\n"), sender=n2)
        manager.changeStatus(N2, NOT_ACTIVE)
        manager.changeStatus(N2, DISABLED)
        manager.notificationTimedOut(n2, DISABLED)
        self.assertEqual(self.observer.events, [("activated", n2), ("deactivated", n2)])

    def test_addedActive(self) -> None:
        """
        A node added as active is activated; removing an active node
        deactivates it.
        """
        manager = self.manager()
        manager.merge(lines(b"sip:127.0.0.1:5062;status=active\r\n"), sender=N2)
        n2 = manager.find(N2)
        manager.remove(N2)
        self.assertEqual(self.observer.events, [("activated", n2), ("deactivated", n2)])

    def test_removedDisabled(self) -> None:
        """
        Removing a node that was not active tells observers nothing.
        """
        manager = self.manager()
        manager.add(N2, DISABLED)
        manager.remove(N2)
        self.assertEqual(self.observer.events, [])

    def test_neverForLocal(self) -> None:
        """
        Observers never hear of the local node.
        """
        manager = self.manager()
        manager.merge(lines(b"sip:127.0.0.1:5061;status=active\r\n"), sender=N1)
        manager.notificationSucceeded(manager.localNode)
        manager.notificationTimedOut(manager.localNode, ACTIVE)
        manager.heardFrom(manager.localNode)
        self.assertEqual(self.observer.events, [])

    def test_failingObserver(self) -> None:
        """
        An observer that raises is logged, and the others are still told.
        """
        manager = self.manager()

        @implementer(INodeObserver)
        class Broken:
            def nodeActivated(self, node):
                raise RuntimeError("broken")

            def nodeDeactivated(self, node):
                raise RuntimeError("broken")

        manager.removeObserver(self.observer)
        manager.addObserver(Broken())
        manager.addObserver(self.observer)
        with capturedLogs() as events:
            n2 = manager.add(N2)
        self.assertEqual(self.observer.events, [("activated", n2)])
        failures = [e for e in events if "log_failure" in e]
        self.assertEqual(len(failures), 1)
        self.assertIsInstance(failures[0]["log_failure"].value, RuntimeError)
        self.flushLoggedErrors(RuntimeError)

    def test_removeObserver(self) -> None:
        """
        A removed observer is told nothing more.
        """
        manager = self.manager()
        manager.removeObserver(self.observer)
        manager.add(N2)
        self.assertEqual(self.observer.events, [])


class AdminTests(ManagerTestCase):
    """
    Tests for L{NodeManager.add}, L{NodeManager.remove} and
    L{NodeManager.changeStatus}.
    """

    def test_add(self) -> None:
        """
        A node is added as active, or with the given status, or the status
        of its URI.
        """
        manager = self.manager()
        self.assertIs(manager.add(N2).status, ACTIVE)
        self.assertIs(manager.add(N3, DISABLED).status, DISABLED)
        node = manager.add(uri("sip:127.0.0.1:5064;status=not_active"))
        self.assertIs(node.status, NOT_ACTIVE)
        self.assertEqual(str(node), "sip:127.0.0.1:5064")
        self.assertRaises(
            ValueError, manager.add, uri("sip:127.0.0.1:5065;status=bogus")
        )

    def test_addPresent(self) -> None:
        """
        Adding a node that is there, or ourselves, is an error.
        """
        manager = self.manager()
        manager.add(N2)
        self.assertRaises(
            NodeError, manager.add, uri("sip:127.0.0.1:5062;transport=udp")
        )
        self.assertRaises(NodeError, manager.add, N1)

    def test_remove(self) -> None:
        """
        Removing says whether a node was removed; ourselves cannot be.
        """
        manager = self.manager()
        manager.add(N2)
        self.assertTrue(manager.remove(N2))
        self.assertFalse(manager.remove(N2))
        self.assertRaises(NodeError, manager.remove, N1)
        self.assertRaises(
            NodeError, manager.remove, uri("sip:127.0.0.1:5061;transport=udp")
        )

    def test_changeStatus(self) -> None:
        """
        A node's status can be set; not ours, not an unknown node's.
        """
        manager = self.manager()
        n2 = manager.add(N2)
        manager.changeStatus(N2, NOT_ACTIVE)
        self.assertIs(n2.status, NOT_ACTIVE)
        self.assertRaises(NodeError, manager.changeStatus, N1, DISABLED)
        self.assertRaises(NodeError, manager.changeStatus, N3, DISABLED)


class ResolutionTests(ManagerTestCase):
    """
    Tests for L{NodeManager.setResolvedIP}.
    """

    def test_seedIsOurselves(self) -> None:
        """
        A seed whose name resolves to our own address is dropped.
        """
        manager = self.manager(
            local=uri("sip:127.0.0.1:5060"), seeds=[uri("sip:kam.example.com")]
        )
        [seed] = manager.pingTargets()
        self.assertIs(manager.setResolvedIP(seed, "127.0.0.1"), manager.localNode)
        self.assertEqual(manager.pingTargets(), [])

    def test_duplicate(self) -> None:
        """
        A node whose name resolves to a node known longer is dropped in its
        favour.
        """
        manager = self.manager()
        first = manager.add(uri("sip:127.0.0.2:5060"))
        named = manager.add(uri("sip:node2.example.com"))
        self.assertIs(manager.setResolvedIP(named, "127.0.0.2"), first)
        self.assertEqual(manager.pingTargets(), [first])

    def test_distinct(self) -> None:
        """
        A resolution that shows no duplicate changes only the address.
        """
        manager = self.manager()
        named = manager.add(uri("sip:node2.example.com"))
        self.assertIs(manager.setResolvedIP(named, "127.0.0.2"), named)
        self.assertEqual(named.address, ("127.0.0.2", 5060))
        self.assertIs(manager.find(uri("sip:127.0.0.2")), named)

    def test_localResolved(self) -> None:
        """
        When our own name resolves, nodes that turn out to be us are dropped.
        """
        manager = self.manager(local=uri("sip:me.example.com:5060"))
        twin = manager.add(uri("sip:10.0.0.1:5060"))
        self.assertIs(
            manager.setResolvedIP(manager.localNode, "10.0.0.1"), manager.localNode
        )
        self.assertEqual(manager.pingTargets(), [])
        self.assertEqual(
            self.observer.events, [("activated", twin), ("deactivated", twin)]
        )


class BoundsTests(ManagerTestCase):
    """
    What a hostile or broken node list can make a node hold.
    """

    def test_maxNodes(self) -> None:
        """
        Received lists bring in at most C{maxNodes} nodes; past that, new
        lines are refused (and logged once), while known nodes still change.
        """
        manager = self.manager(maxNodes=5)
        body = b"".join(b"sip:127.0.1.%d:5060;status=active\r\n" % i for i in range(1, 9))
        with capturedLogs() as events:
            manager.merge(lines(body))
            manager.merge(lines(b"sip:127.0.2.1:5060;status=active\r\n"))
        self.assertEqual(len(manager.pingTargets()), 5)
        self.assertEqual(len([e for e in events if "most allowed" in e["log_format"]]), 1)
        manager.merge(lines(b"sip:127.0.1.1:5060;status=disabled\r\n"), sender=uri("sip:127.0.1.1:5060"))
        self.assertIs(self.status(manager, "sip:127.0.1.1:5060"), DISABLED)

    def test_longListTruncated(self) -> None:
        """
        Only the first C{maxNodes} lines of a list are read.
        """
        manager = self.manager(maxNodes=3)
        body = b"".join(b"sip:127.0.1.%d:5060;status=active\r\n" % i for i in range(1, 200))
        with capturedLogs() as events:
            self.assertEqual(manager.merge(lines(body)), 3)
        self.assertEqual(
            sorted(n.uri.host for n in manager.pingTargets()),
            ["127.0.1.1", "127.0.1.2", "127.0.1.3"],
        )
        self.assertTrue(any("reading the first" in e["log_format"] for e in events))

    def test_unwritableNodeLeftOut(self) -> None:
        """
        A node no node-list line could carry (here one with a non-ASCII
        transport, added by a caller that skipped the checks) is left out
        of our body, counted and logged once; the body is still written.
        """
        manager = self.manager()
        manager.add(uri("sip:127.0.0.1:5062"))
        bad = URI(host="127.0.3.45", port=5060, parameters=(("transport", "\u00e9"),))
        manager.merge([NodeLine(bad)])
        self.assertEqual(len(manager.activeNodes()), 2)
        with capturedLogs() as events:
            body = manager.nodeListBody()
            self.assertEqual(manager.nodeListBody(), body)
        self.assertEqual(
            body, b"sip:127.0.0.1:5062;status=active\r\nsip:127.0.0.1:5061;status=active\r\n"
        )
        self.assertEqual(manager.statistics["bodyLinesUnwritable"], 2)
        self.assertEqual(len([e for e in events if e["log_level"].name == "warn"]), 1)

    def test_bodyBudget(self) -> None:
        """
        However many nodes are held, our body stays within one datagram
        (L{MAX_BODY_LENGTH}) and ends with our own line; what is left out
        is counted and logged, once a minute.
        """
        manager = self.manager(maxNodes=300)
        labels = ".".join(["a" * 62] * 4)
        body = b"".join(
            b"sip:n%03d%s:5060;status=active\r\n" % (i, labels[4:].encode()) for i in range(250)
        )
        self.assertEqual(manager.merge(lines(body)), 250)
        with capturedLogs() as events:
            ours = manager.nodeListBody()
            manager.nodeListBody()
        self.assertLessEqual(len(ours), MAX_BODY_LENGTH)
        self.assertGreater(len(ours), MAX_BODY_LENGTH - 300)
        self.assertTrue(ours.endswith(b"\r\nsip:127.0.0.1:5061;status=active\r\n"))
        written = ours.count(b"\r\n") - 1
        self.assertEqual(manager.statistics["bodyLinesOverBudget"], 2 * (250 - written))
        self.assertEqual(len([e for e in events if e.get("cause") == "bodyLinesOverBudget"]), 1)

    def test_defaultMaxNodesFitsTheBudget(self) -> None:
        """
        With the default C{maxNodes}, 128 nodes of the longest names a line
        may carry make a body within the budget: nothing is left out.
        """
        manager = self.manager()
        rest = "b" * 59 + "." + "b" * 63 + "." + "b" * 63 + "." + "b" * 61
        hosts = [f"n{i:03d}{rest}" for i in range(128)]
        self.assertEqual({len(host) for host in hosts}, {253})
        body = b"".join(
            f"sip:{host}:65535;status=active\r\n".encode("ascii") for host in hosts
        )
        self.assertEqual(manager.merge(lines(body)), 128)
        ours = manager.nodeListBody()
        self.assertEqual(ours.count(b"\r\n"), 129)
        self.assertLessEqual(len(ours), MAX_BODY_LENGTH)
        self.assertEqual(manager.statistics["bodyLinesOverBudget"], 0)

    def test_addRefusesBadURIs(self) -> None:
        """
        L{NodeManager.add} and L{NodeManager.addSeed} refuse a URI that
        cannot name a node, and store nothing.
        """
        manager = self.manager()
        for text in ["sip:127.1:5060", "sip:" + "x" * 64 + ".example:5060"]:
            self.assertRaises(ValueError, manager.add, uri(text))
            self.assertRaises(ValueError, manager.addSeed, uri(text))
        bad = URI(host="127.0.3.45", port=5060, parameters=(("transport", "\u00e9"),))
        self.assertRaises(ValueError, manager.add, bad)
        self.assertEqual(manager.pingTargets(), [])

    def test_ipv4MappedIsIPv4(self) -> None:
        """
        An IPv4 address written as IPv6 names the same node, ourselves
        included.
        """
        manager = self.manager(local=uri("sip:127.0.0.11:5060"))
        self.assertIs(manager.find(uri("sip:[::ffff:127.0.0.11]:5060")), manager.localNode)
        n2 = manager.add(uri("sip:127.0.0.12:5060"))
        self.assertIs(manager.find(uri("sip:[::ffff:127.0.0.12]:5060")), n2)
        self.assertEqual(n2.address, ("127.0.0.12", 5060))

