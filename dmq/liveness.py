# -*- test-case-name: dmq.test.test_liveness -*-
"""
What becomes of a node after a timeout, a success, or another node's word
about it: L{LivenessPolicy}, pure functions of the node's state and the
event, which the L{dmq.node.NodeManager} applies.  Kamailio 6.1's rules with
ours on top; see doc/design.md ("Membership").
"""

from __future__ import annotations

import attr

from dmq.nodelist import NodeStatus

__all__ = ["LivenessDecision", "LivenessPolicy", "worse"]

# How bad each status is, for rules that may only demote.
_SEVERITY = {NodeStatus.ACTIVE: 0, NodeStatus.NOT_ACTIVE: 1, NodeStatus.DISABLED: 2}


def worse(a: NodeStatus, b: NodeStatus) -> NodeStatus:
    """
    The worse of two statuses: C{disabled} is worse than C{not_active},
    which is worse than C{active}.
    """
    return b if _SEVERITY[b] > _SEVERITY[a] else a


@attr.frozen
class LivenessDecision:
    """
    What becomes of a node after an event.

    @ivar status: its status afterwards (the same as before to keep it).
    @ivar failCount: its fail count afterwards.
    @ivar remove: whether it is to be removed from the node list (and
        tombstoned).
    """

    status: NodeStatus
    failCount: int
    remove: bool = False


@attr.frozen
class LivenessPolicy:
    """
    The rules that move a node between statuses, named after Kamailio 6.1's
    module parameters.

    @ivar removeInactive: a timeout makes a non-seed node C{disabled} (then a
        second one removes it), rather than C{not_active}.
    @ivar failCountEnabled: count timeouts, and demote by the thresholds
        instead.
    @ivar failCountThresholdNotActive: an active node whose count exceeds
        this becomes C{not_active}.
    @ivar failCountThresholdDisabled: a C{not_active} node whose count
        exceeds this becomes C{disabled}.
    """

    removeInactive: bool = True
    failCountEnabled: bool = False
    failCountThresholdNotActive: int = 0
    failCountThresholdDisabled: int = 1

    def notificationSucceeded(self, status: NodeStatus, failCount: int) -> LivenessDecision:
        """
        The node answered C{200} to a notification request: it is active,
        whatever it was, and its fail count is reset.
        """
        return LivenessDecision(NodeStatus.ACTIVE, 0)

    def notificationTimedOut(
        self,
        status: NodeStatus,
        failCount: int,
        *,
        statusAtSend: NodeStatus,
        seed: bool,
    ) -> LivenessDecision:
        """
        A notification request to the node timed out (408), Kamailio 6.1's
        rule:

          - the node was C{disabled} when the request went out (and still
            is): it is removed, unless it is a seed: a notification address
            stays, to be pinged until it comes back;
          - else, with C{failCountEnabled}: its fail count grows; past
            C{failCountThresholdDisabled} a C{not_active} node becomes
            C{disabled}, past C{failCountThresholdNotActive} an active one
            becomes C{not_active};
          - else a seed becomes C{not_active};
          - else the node becomes C{disabled} with C{removeInactive},
            C{not_active} without.

        A timeout never promotes: a C{disabled} node stays C{disabled}.

        @param status: the node's status now.
        @param failCount: its fail count now.
        @param statusAtSend: its status when the request was sent.
        @param seed: whether it is one of our notification addresses.
        """
        if (
            statusAtSend is NodeStatus.DISABLED
            and status is NodeStatus.DISABLED
            and not seed
        ):
            return LivenessDecision(status, failCount, remove=True)
        if self.failCountEnabled:
            failCount += 1
            if (
                failCount > self.failCountThresholdDisabled
                and status is NodeStatus.NOT_ACTIVE
            ):
                proposed = NodeStatus.DISABLED
            elif (
                failCount > self.failCountThresholdNotActive
                and status is NodeStatus.ACTIVE
            ):
                proposed = NodeStatus.NOT_ACTIVE
            else:
                proposed = status
        elif seed:
            proposed = NodeStatus.NOT_ACTIVE
        elif self.removeInactive:
            proposed = NodeStatus.DISABLED
        else:
            proposed = NodeStatus.NOT_ACTIVE
        return LivenessDecision(worse(status, proposed), failCount)

    def otherRequestTimedOut(self, status: NodeStatus, failCount: int) -> LivenessDecision:
        """
        A request of another channel (htable, usrloc, ...) to the node timed
        out.  Only with C{failCountEnabled}, and only for an active node: its
        fail count grows, and past C{failCountThresholdNotActive} it becomes
        C{not_active}.  (Kamailio 6.1's default response callback.)
        """
        if not self.failCountEnabled or status is not NodeStatus.ACTIVE:
            return LivenessDecision(status, failCount)
        failCount += 1
        if failCount > self.failCountThresholdNotActive:
            return LivenessDecision(NodeStatus.NOT_ACTIVE, failCount)
        return LivenessDecision(status, failCount)

    def lineAccepted(self, status: NodeStatus, lineStatus: NodeStatus, own: bool) -> bool:
        """
        Whether a received node-list line giving C{lineStatus} may change
        the status of a known node, now C{status}.  The node's own line
        always may.  Another node's line never changes a C{disabled} node
        (Kamailio's ending state) and never makes a node active: only a
        node's own word does.

        @param own: whether the node wrote the line about itself (it is the
            line of the list's sender).
        """
        if own:
            return True
        if status is NodeStatus.DISABLED:
            return False
        return lineStatus is not NodeStatus.ACTIVE

    def lineRevives(self, lineStatus: NodeStatus, own: bool) -> bool:
        """
        Whether a received line may bring back a node we removed a short
        while ago (it is tombstoned): only the node's own C{active} line.
        """
        return own and lineStatus is NodeStatus.ACTIVE
