# -*- test-case-name: dmq.test.test_usrloc_peer -*-
"""
L{BusChanges}: what the changes a node receives from the bus do to its
L{UsrlocStore} (Kamailio's C{usrloc_dmq_execute_action}), and how the
request is answered.

See C{doc/peers.md} (usrloc) for the whole design.
"""

from __future__ import annotations

from typing import Counter, Optional, Union

from dmq.interfaces import PeerResponse
from dmq.peers.usrloc.store import StoreFull, UsrlocStore
from dmq.peers.usrloc.wire import BadEntry, Batch, Nothing, Remove, Update
from dmq.ratelimit import RateLimitedWarnings

__all__ = ["BusChanges"]


class BusChanges:
    """
    Applies changes from the bus to a store, labelled C{"replicated"} so
    that they are never sent on, counting and warning of what it skips.
    """

    def __init__(self, store: UsrlocStore, statistics: Counter[str], warnings: RateLimitedWarnings) -> None:
        """
        @param statistics: where to count C{badEntries} and C{dropped}.
        @param warnings: how to warn, once per cause and minute.
        """
        self._store = store
        self._statistics = statistics
        self._warnings = warnings

    def apply(self, message: Union[Update, Remove, Nothing, Batch], sender: object) -> PeerResponse:
        """
        Apply a change, or every good entry of a batch.

        @param sender: who sent it, for the warnings.
        @return: C{200}, or C{400} naming the first bad entry of a batch
            (Kamailio applies the entries before it, stops there and
            answers C{400} too).
        """
        entries = message.entries if isinstance(message, Batch) else (message,)
        firstBad: Optional[BadEntry] = None
        for entry in entries:
            if isinstance(entry, BadEntry):
                self._statistics["badEntries"] += 1
                firstBad = firstBad or entry
                self._warnings.warn(
                    "usrloc bad entry",
                    "Skipped entry {key} of a usrloc batch from {sender}: {detail}",
                    key=entry.key,
                    sender=sender,
                    detail=entry.detail,
                )
            else:
                self._applyOne(entry, sender)
        if firstBad is not None:
            return PeerResponse(400, f"Bad Request (entry {firstBad.key}: {firstBad.detail})")
        return PeerResponse(200, "OK")

    def _applyOne(self, message: Union[Update, Remove, Nothing], sender: object) -> None:
        """
        A contact that would pass a bound is dropped and counted; Kamailio
        too answers C{200} when applying fails.
        """
        if isinstance(message, Update):
            try:
                self._store.save(message.contact, "replicated")
            except StoreFull as e:
                self._statistics["dropped"] += 1
                self._warnings.warn(
                    "usrloc store full",
                    "Dropped a usrloc contact from {sender}: {detail}",
                    sender=sender,
                    detail=str(e),
                )
        elif isinstance(message, Remove):
            self._store.remove(message.aor, message.ruid, "replicated")
