# -*- test-case-name: dmq.test.test_forgotten -*-
"""
Node identities forgotten for a while: nodes we removed (tombstones) and
spellings found to name a node known otherwise (aliases), so that other
nodes' stale lists do not bring them back.  Bounded, and expiring by an
injected clock.  Why, in doc/design.md ("Membership", rule 2).
"""

from __future__ import annotations

from typing import List, Optional

import attr
from twisted.internet.interfaces import IReactorTime

from dmq.nodelist import NodeIdentity

__all__ = ["Forgotten", "ForgottenIdentities"]


@attr.frozen
class Forgotten:
    """
    One forgotten identity.

    @ivar identity: what was forgotten.
    @ivar until: the clock time at which it is remembered again.
    @ivar spellingOnly: C{True} for an alias, which covers only its own
        spelling (its L{dmq.nodelist.nodeKey}): its address is that of a
        node we know, which it must not cover.  C{False} for a tombstone,
        which covers every spelling of the node (L{NodeIdentity.sameNode}).
    """

    identity: NodeIdentity
    until: float
    spellingOnly: bool

    def covers(self, identity: NodeIdentity) -> bool:
        """
        Whether C{identity} is what this entry forgot.
        """
        if self.spellingOnly:
            return self.identity.key == identity.key
        return self.identity.sameNode(identity)


@attr.define
class ForgottenIdentities:
    """
    A set of forgotten identities, each for C{lifetime} seconds from when it
    was forgotten, at most C{maxSize} at a time: past that, the oldest is
    let go first.

    @ivar lifetime: seconds an identity stays forgotten.
    @ivar maxSize: the most identities held.
    """

    _clock: IReactorTime
    lifetime: float
    maxSize: int
    _entries: List[Forgotten] = attr.Factory(list)

    def __attrs_post_init__(self) -> None:
        if self.maxSize < 1:
            raise ValueError("maxSize must be at least 1")

    def __len__(self) -> int:
        """
        How many identities are forgotten now.
        """
        self._expire()
        return len(self._entries)

    def forgetNode(self, identity: NodeIdentity) -> None:
        """
        Forget a node, under every spelling (a tombstone).
        """
        self._add(identity, spellingOnly=False)

    def forgetSpelling(self, identity: NodeIdentity) -> None:
        """
        Forget one spelling of a node we know otherwise (an alias).
        """
        self._add(identity, spellingOnly=True)

    def find(self, identity: NodeIdentity) -> Optional[Forgotten]:
        """
        The entry that covers C{identity}, or C{None}.  A spelling forgotten
        comes before a node forgotten, since nothing revives a spelling.
        """
        self._expire()
        node = None
        for entry in self._entries:
            if entry.covers(identity):
                if entry.spellingOnly:
                    return entry
                if node is None:
                    node = entry
        return node

    def remember(self, identity: NodeIdentity) -> None:
        """
        The node C{identity} names is known again: drop the tombstones that
        cover it.  Aliases stay: they name a node we know otherwise.
        """
        self._entries = [
            entry
            for entry in self._entries
            if entry.spellingOnly or not entry.covers(identity)
        ]

    def _add(self, identity: NodeIdentity, spellingOnly: bool) -> None:
        self._expire()
        if len(self._entries) >= self.maxSize:
            del self._entries[: len(self._entries) - self.maxSize + 1]
        until = self._clock.seconds() + self.lifetime
        self._entries.append(Forgotten(identity, until, spellingOnly))

    def _expire(self) -> None:
        now = self._clock.seconds()
        self._entries = [entry for entry in self._entries if entry.until > now]
