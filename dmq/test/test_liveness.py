# -*- test-case-name: dmq.test.test_liveness -*-
"""
Tests for L{dmq.liveness}: what a timeout, a success or a line does to a
node, without any node manager.
"""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from dmq.liveness import LivenessDecision, LivenessPolicy, worse
from dmq.nodelist import NodeStatus

ACTIVE = NodeStatus.ACTIVE
NOT_ACTIVE = NodeStatus.NOT_ACTIVE
DISABLED = NodeStatus.DISABLED


class WorseTests(SynchronousTestCase):
    """
    Tests for L{worse}.
    """

    def test_order(self) -> None:
        """
        C{disabled} is worse than C{not_active}, which is worse than
        C{active}, whichever comes first.
        """
        self.assertIs(worse(ACTIVE, NOT_ACTIVE), NOT_ACTIVE)
        self.assertIs(worse(NOT_ACTIVE, ACTIVE), NOT_ACTIVE)
        self.assertIs(worse(DISABLED, NOT_ACTIVE), DISABLED)
        self.assertIs(worse(ACTIVE, DISABLED), DISABLED)
        self.assertIs(worse(ACTIVE, ACTIVE), ACTIVE)


class SuccessTests(SynchronousTestCase):
    """
    Tests for L{LivenessPolicy.notificationSucceeded}.
    """

    def test_activeAndReset(self) -> None:
        """
        A 200 makes any node active with no failures counted.
        """
        policy = LivenessPolicy(failCountEnabled=True)
        for status in NodeStatus:
            self.assertEqual(
                policy.notificationSucceeded(status, 3), LivenessDecision(ACTIVE, 0)
            )


class NotificationTimeoutTests(SynchronousTestCase):
    """
    Tests for L{LivenessPolicy.notificationTimedOut}, Kamailio 6.1's
    notification callback.
    """

    def timedOut(self, policy, status, failCount=0, statusAtSend=None, seed=False):
        return policy.notificationTimedOut(
            status,
            failCount,
            statusAtSend=status if statusAtSend is None else statusAtSend,
            seed=seed,
        )

    def test_defaults(self) -> None:
        """
        By default (C{removeInactive}) a timeout makes a node C{disabled},
        and one more, sent while it was C{disabled}, removes it.
        """
        policy = LivenessPolicy()
        self.assertEqual(self.timedOut(policy, ACTIVE), LivenessDecision(DISABLED, 0))
        self.assertEqual(self.timedOut(policy, NOT_ACTIVE), LivenessDecision(DISABLED, 0))
        self.assertEqual(
            self.timedOut(policy, DISABLED), LivenessDecision(DISABLED, 0, remove=True)
        )

    def test_disabledSinceSend(self) -> None:
        """
        A node that became C{disabled} after the request went out is not
        removed by its timeout, nor one that was C{disabled} then and is no
        more.
        """
        policy = LivenessPolicy()
        self.assertEqual(
            self.timedOut(policy, DISABLED, statusAtSend=ACTIVE), LivenessDecision(DISABLED, 0)
        )
        self.assertEqual(
            self.timedOut(policy, ACTIVE, statusAtSend=DISABLED), LivenessDecision(DISABLED, 0)
        )

    def test_removeInactiveOff(self) -> None:
        """
        Without C{removeInactive}, a timeout makes a node C{not_active} and
        never worse.
        """
        policy = LivenessPolicy(removeInactive=False)
        self.assertEqual(self.timedOut(policy, ACTIVE), LivenessDecision(NOT_ACTIVE, 0))
        self.assertEqual(self.timedOut(policy, NOT_ACTIVE), LivenessDecision(NOT_ACTIVE, 0))

    def test_seed(self) -> None:
        """
        A seed becomes C{not_active}, and is never removed.
        """
        policy = LivenessPolicy()
        self.assertEqual(
            self.timedOut(policy, ACTIVE, seed=True), LivenessDecision(NOT_ACTIVE, 0)
        )
        self.assertEqual(
            self.timedOut(policy, DISABLED, seed=True), LivenessDecision(DISABLED, 0)
        )

    def test_neverPromotes(self) -> None:
        """
        A timeout never makes a node better: a C{disabled} seed, or a
        C{disabled} node without C{removeInactive}, stays C{disabled}.
        """
        self.assertEqual(
            self.timedOut(LivenessPolicy(), DISABLED, statusAtSend=ACTIVE, seed=True),
            LivenessDecision(DISABLED, 0),
        )
        self.assertEqual(
            self.timedOut(LivenessPolicy(removeInactive=False), DISABLED, statusAtSend=ACTIVE),
            LivenessDecision(DISABLED, 0),
        )

    def test_failCountDefaults(self) -> None:
        """
        With fail counts and the default thresholds (0 and 1), the first
        timeout makes an active node C{not_active}, the second C{disabled},
        the third removes it.
        """
        policy = LivenessPolicy(failCountEnabled=True)
        first = self.timedOut(policy, ACTIVE, 0)
        self.assertEqual(first, LivenessDecision(NOT_ACTIVE, 1))
        second = self.timedOut(policy, first.status, first.failCount)
        self.assertEqual(second, LivenessDecision(DISABLED, 2))
        third = self.timedOut(policy, second.status, second.failCount)
        self.assertTrue(third.remove)

    def test_failCountThresholds(self) -> None:
        """
        A node is demoted only once its count exceeds the threshold for its
        status; until then only the count grows.
        """
        policy = LivenessPolicy(
            failCountEnabled=True,
            failCountThresholdNotActive=2,
            failCountThresholdDisabled=4,
        )
        self.assertEqual(self.timedOut(policy, ACTIVE, 1), LivenessDecision(ACTIVE, 2))
        self.assertEqual(self.timedOut(policy, ACTIVE, 2), LivenessDecision(NOT_ACTIVE, 3))
        self.assertEqual(self.timedOut(policy, NOT_ACTIVE, 3), LivenessDecision(NOT_ACTIVE, 4))
        self.assertEqual(self.timedOut(policy, NOT_ACTIVE, 4), LivenessDecision(DISABLED, 5))

    def test_failCountActivePastBoth(self) -> None:
        """
        An active node past both thresholds becomes only C{not_active}: one
        step at a time.
        """
        policy = LivenessPolicy(failCountEnabled=True)
        self.assertEqual(self.timedOut(policy, ACTIVE, 5), LivenessDecision(NOT_ACTIVE, 6))

    def test_failCountSeed(self) -> None:
        """
        With fail counts, a seed is demoted by the thresholds like any node,
        but still never removed.
        """
        policy = LivenessPolicy(failCountEnabled=True)
        self.assertEqual(
            self.timedOut(policy, NOT_ACTIVE, 1, seed=True), LivenessDecision(DISABLED, 2)
        )
        self.assertFalse(self.timedOut(policy, DISABLED, 2, seed=True).remove)


class OtherTimeoutTests(SynchronousTestCase):
    """
    Tests for L{LivenessPolicy.otherRequestTimedOut}, Kamailio 6.1's
    default response callback.
    """

    def test_withoutFailCount(self) -> None:
        """
        Without fail counts another channel's timeout changes nothing.
        """
        policy = LivenessPolicy()
        for status in NodeStatus:
            self.assertEqual(
                policy.otherRequestTimedOut(status, 0), LivenessDecision(status, 0)
            )

    def test_withFailCount(self) -> None:
        """
        With fail counts, an active node's count grows, and past the
        C{not_active} threshold it becomes C{not_active}.
        """
        policy = LivenessPolicy(failCountEnabled=True, failCountThresholdNotActive=1)
        self.assertEqual(policy.otherRequestTimedOut(ACTIVE, 0), LivenessDecision(ACTIVE, 1))
        self.assertEqual(
            policy.otherRequestTimedOut(ACTIVE, 1), LivenessDecision(NOT_ACTIVE, 2)
        )

    def test_onlyActive(self) -> None:
        """
        A node that is not active is left as it is, its count too.
        """
        policy = LivenessPolicy(failCountEnabled=True)
        self.assertEqual(
            policy.otherRequestTimedOut(NOT_ACTIVE, 1), LivenessDecision(NOT_ACTIVE, 1)
        )
        self.assertEqual(
            policy.otherRequestTimedOut(DISABLED, 1), LivenessDecision(DISABLED, 1)
        )


class LineTests(SynchronousTestCase):
    """
    Tests for L{LivenessPolicy.lineAccepted} and
    L{LivenessPolicy.lineRevives}: only a node's own word makes it active.
    """

    def test_ownLineAlwaysAccepted(self) -> None:
        """
        A node's own line changes its status, whatever both are.
        """
        policy = LivenessPolicy()
        for status in NodeStatus:
            for lineStatus in NodeStatus:
                self.assertTrue(policy.lineAccepted(status, lineStatus, own=True))

    def test_othersNeverPromote(self) -> None:
        """
        Another node's line never makes a node active.
        """
        policy = LivenessPolicy()
        self.assertFalse(policy.lineAccepted(NOT_ACTIVE, ACTIVE, own=False))
        self.assertFalse(policy.lineAccepted(DISABLED, ACTIVE, own=False))

    def test_othersDemote(self) -> None:
        """
        Another node's line may demote a node that is not C{disabled}, but
        changes nothing about a C{disabled} one (Kamailio's ending state).
        """
        policy = LivenessPolicy()
        self.assertTrue(policy.lineAccepted(ACTIVE, DISABLED, own=False))
        self.assertTrue(policy.lineAccepted(ACTIVE, NOT_ACTIVE, own=False))
        self.assertTrue(policy.lineAccepted(NOT_ACTIVE, DISABLED, own=False))
        self.assertFalse(policy.lineAccepted(DISABLED, NOT_ACTIVE, own=False))

    def test_revives(self) -> None:
        """
        Only the node's own C{active} line brings back a removed node.
        """
        policy = LivenessPolicy()
        self.assertTrue(policy.lineRevives(ACTIVE, own=True))
        self.assertFalse(policy.lineRevives(DISABLED, own=True))
        self.assertFalse(policy.lineRevives(NOT_ACTIVE, own=True))
        self.assertFalse(policy.lineRevives(ACTIVE, own=False))


class PolicyTests(SynchronousTestCase):
    """
    L{LivenessPolicy} is a value.
    """

    def test_defaults(self) -> None:
        """
        The defaults are Kamailio 6.1's module parameters' defaults.
        """
        self.assertEqual(
            LivenessPolicy(),
            LivenessPolicy(
                removeInactive=True,
                failCountEnabled=False,
                failCountThresholdNotActive=0,
                failCountThresholdDisabled=1,
            ),
        )

    def test_frozen(self) -> None:
        """
        A policy cannot be changed once made.
        """
        policy = LivenessPolicy()
        self.assertRaises(AttributeError, setattr, policy, "removeInactive", False)
