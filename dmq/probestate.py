# -*- test-case-name: dmq.test.test_probe -*-
"""
What the failure detector (L{dmq.probe.ProbeDetector}) keeps: a L{Member}
for each other node, a L{Round} for each probe in progress, and the
L{DeadNodes} it pings now and then after declaring them dead.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Callable, List, Optional, Tuple

import attr
from twisted.internet.interfaces import IDelayedCall, IReactorTime

from dmq import sip
from dmq.node import Node

__all__ = ["Member", "Round", "DeadNodes", "GONE_TIME", "GONE_MAX"]

#: For how long after its death (or its removal) a node is pinged, and how
#: many such nodes are remembered.
GONE_TIME = 600.0
GONE_MAX = 256


@attr.define(eq=False)
class Member:
    """
    What the detector knows of one other node.

    @ivar capable: C{True} once it answered a probe, C{False} once it
        answered C{404} (not a dmq node with the detector), C{None} before.
    @ivar state: C{alive}, C{suspect} or C{dead}.
    """

    node: Node
    incarnation: int = 0
    capable: Optional[bool] = None
    state: str = "alive"
    probing: bool = False
    suspectedAt: float = 0.0
    confirmed: bool = False
    deadline: Optional[IDelayedCall] = None
    removal: Optional[IDelayedCall] = None

    def cancel(self) -> None:
        for call in (self.deadline, self.removal):
            if call is not None and call.active():
                call.cancel()
        self.deadline = self.removal = None


@attr.define(eq=False)
class Round:
    """
    One probe of C{member} in progress: its direct ping, then its indirect
    ones, and the timers that end each.

    @ivar check: whether it checks a suspicion another node spread.
    """

    member: Member
    check: bool
    acked: bool = False
    calls: List[IDelayedCall] = attr.Factory(list)


class DeadNodes:
    """
    The nodes declared dead, by key, each to be pinged in turn for
    L{GONE_TIME} seconds from its death or its removal, whichever came
    last; the L{GONE_MAX} most recent are kept.  A partition that healed
    would otherwise leave each side without the other until a tombstone
    expires, or, before the removal, for good: nothing else brings back a
    node both sides declared dead.
    """

    def __init__(self, clock: IReactorTime) -> None:
        self._clock = clock
        self._nodes: "OrderedDict[object, Tuple[sip.URI, float]]" = OrderedDict()

    def __len__(self) -> int:
        return len(self._nodes)

    def add(self, key: object, uri: sip.URI) -> None:
        """
        Count the node C{uri} among the dead from now (its L{GONE_TIME}
        starts again), last in turn.
        """
        self._nodes.pop(key, None)
        self._nodes[key] = (uri, self._clock.seconds())
        while len(self._nodes) > GONE_MAX:
            self._nodes.popitem(last=False)

    def discard(self, key: object) -> None:
        """
        Forget the node of C{key}, if it is one.
        """
        self._nodes.pop(key, None)

    def next(self, back: Callable[[sip.URI], bool]) -> Optional[Tuple[object, sip.URI]]:
        """
        The node to ping now, put last in turn; those whose time is over,
        and those C{back} says are back, forgotten first.

        @return: its key and URI, or C{None} when none is left.
        """
        horizon = self._clock.seconds() - GONE_TIME
        for key, (uri, goneAt) in list(self._nodes.items()):
            if goneAt < horizon or back(uri):
                del self._nodes[key]
        if not self._nodes:
            return None
        key = next(iter(self._nodes))
        self._nodes.move_to_end(key)
        return key, self._nodes[key][0]
