# -*- test-case-name: dmq.test.test_node -*-
"""
Our own node-list body, the one we send and answer with: written within
what one datagram carries whatever the list holds, with what is left out
counted and logged, and a warning when a Kamailio node could not hold it.
The L{dmq.node.NodeManager} writes its bodies through an L{OwnBody}.
"""

from __future__ import annotations

from collections import Counter
from typing import List

import attr
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from dmq.nodeaddress import shown
from dmq.nodelistbody import (
    MAX_BODY_LENGTH,
    NBODY_LIMIT,
    NodeLine,
    encodeNodeList,
    fitsKamailio,
)
from dmq.ratelimit import RateLimitedWarnings

__all__ = ["OwnBody"]


@attr.define
class OwnBody:
    """
    Writes our node-list bodies.

    @ivar statistics: where the lines left out are counted:
        C{bodyLinesUnwritable} (no node-list line may carry them: nodes
        made by hand past the checks), C{bodyLinesOverBudget} (past
        L{MAX_BODY_LENGTH}; with valid hosts and the default C{maxNodes},
        never).
    """

    _log = Logger()

    _clock: IReactorTime
    statistics: Counter[str] = attr.Factory(Counter)
    _warnings: RateLimitedWarnings = attr.ib(init=False)
    _tooLargeForKamailio: bool = attr.ib(init=False, default=False)

    def __attrs_post_init__(self) -> None:
        self._warnings = RateLimitedWarnings(self._clock, self._log)

    def write(self, lines: List[NodeLine]) -> bytes:
        """
        Write C{lines}, ours last, within L{MAX_BODY_LENGTH}: lines that
        cannot be written, and lines past that budget, are left out,
        counted and logged (at most once a minute), our own line never.
        Logs a warning (once, until it fits again) when a Kamailio node
        could not hold the body (L{fitsKamailio}).
        """
        # Our own line is how the others learn of us: it goes in whatever
        # else is left out.
        own = encodeNodeList(lines[-1:])
        others = encodeNodeList(lines[:-1], MAX_BODY_LENGTH - len(own.body))
        body = others.body + own.body
        unwritable = others.unwritable + own.unwritable
        if unwritable:
            self.statistics["bodyLinesUnwritable"] += len(unwritable)
            self._warnings.warn(
                "bodyLinesUnwritable",
                "Left {count} node(s) out of our node list, such as {node}: "
                "not a node-list line we may write",
                count=len(unwritable),
                node=shown(unwritable[0].uri.toString(), 80),
            )
        if others.overBudget:
            self.statistics["bodyLinesOverBudget"] += len(others.overBudget)
            self._warnings.warn(
                "bodyLinesOverBudget",
                "Left {count} node(s) out of our node list: it would outgrow "
                "{budget} octets, what one datagram carries",
                count=len(others.overBudget),
                budget=MAX_BODY_LENGTH,
            )
        if fitsKamailio(body):
            self._tooLargeForKamailio = False
        elif not self._tooLargeForKamailio:
            self._tooLargeForKamailio = True
            self._log.warn(
                "node list of {count} nodes ({size} bytes) is too large for "
                "Kamailio's {limit}-byte buffer: Kamailio nodes will fail to "
                "build theirs, and stop answering notifications",
                count=len(lines),
                size=len(body),
                limit=NBODY_LIMIT,
            )
        return body
