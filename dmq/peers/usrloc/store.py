# -*- test-case-name: dmq.test.test_usrloc_store -*-
"""
L{UsrlocStore}: the addresses of record and their contacts on an injected
clock, with Kamailio usrloc's matching (by record id, else by contact URI
with its CSeq check), order (AoRs by hash slot, contacts by q) and expiry,
bounds on what it holds, and L{Change} notifications.  It knows nothing of
the bus, SIP or the wire.

See C{doc/peers.md} (usrloc) for the whole design.
"""

from __future__ import annotations

import heapq
import itertools
from typing import Callable, Dict, List, Optional, Tuple

import attr
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from dmq.peers.usrloc.contact import HASH_SIZE, Contact, coreHash

__all__ = ["INSERT", "UPDATE", "DELETE", "EXPIRE", "Change", "StoreFull", "UsrlocStore"]

INSERT = "insert"
UPDATE = "update"
DELETE = "delete"
EXPIRE = "expire"


@attr.frozen
class Change:
    """
    One change to one contact, as told to L{UsrlocStore.subscribe}
    callbacks.

    @ivar event: L{INSERT}, L{UPDATE}, L{DELETE} or L{EXPIRE}.
    @ivar contact: the contact now, or the one that is gone.
    @ivar previous: the contact before an update, else C{None}.
    @ivar origin: C{"local"} (this program or an RPC), C{"replicated"}
        (received from the bus: a change or a sync dump) or C{"clock"}
        (expiry).
    """

    event: str
    contact: Contact
    previous: Optional[Contact]
    origin: str


class StoreFull(Exception):
    """
    A new contact would take the store past one of its bounds; the argument
    says which.
    """


@attr.define
class _Record:
    aor: str
    hash: int
    order: int
    contacts: List[Contact] = attr.Factory(list)

    def find(self, ruid: str) -> Optional[int]:
        for i, contact in enumerate(self.contacts):
            if contact.ruid == ruid:
                return i
        return None

    def insert(self, contact: Contact) -> None:
        """
        Put C{contact} where usrloc puts a new one: after every contact of
        the same or a higher q.
        """
        position = len(self.contacts)
        for i, other in enumerate(self.contacts):
            if other.q < contact.q:
                position = i
                break
        self.contacts.insert(position, contact)


class UsrlocStore:
    """
    The contacts of the addresses of record, with Kamailio's semantics.

    Expiry is in the seconds of the clock, taken as Unix time: a contact
    whose C{expires} has come is left out of L{lookup} and L{contacts},
    and is removed, with an L{EXPIRE} change, by L{purgeExpired}, which
    nothing here calls: the peer runs it on a timer.

    Reading returns the frozen L{Contact} values; nothing a caller does
    with them changes the store.
    """

    _log = Logger()

    def __init__(
        self,
        clock: IReactorTime,
        maxAoRs: int = 100000,
        maxContacts: int = 200000,
        maxContactsPerAoR: int = 100,
    ) -> None:
        """
        @param clock: the source of time (Unix seconds).
        @param maxAoRs: the most addresses of record held.
        @param maxContacts: the most contacts held in all.
        @param maxContactsPerAoR: the most contacts of one address of record.
        """
        for name, bound in (("maxAoRs", maxAoRs), ("maxContacts", maxContacts), ("maxContactsPerAoR", maxContactsPerAoR)):
            if isinstance(bound, bool) or not isinstance(bound, int) or bound < 1:
                raise ValueError(f"{name} must be a positive integer, not {bound!r}")
        self._clock = clock
        self.maxAoRs = maxAoRs
        self.maxContacts = maxContacts
        self.maxContactsPerAoR = maxContactsPerAoR
        self._records: Dict[str, _Record] = {}
        self._count = 0
        self._order = itertools.count()
        # (expires, tie, aor, ruid); entries of contacts since changed or
        # removed stay until popped, and are skipped then.
        self._expiries: List[Tuple[int, int, str, str]] = []
        self._subscribers: List[Callable[[Change], object]] = []

    # Reading

    def __len__(self) -> int:
        """
        @return: how many contacts are held, expired ones not yet purged
            included.
        """
        return self._count

    def __contains__(self, aor: object) -> bool:
        """
        @return: whether C{aor} has contacts, live or expired not yet purged.
        """
        return aor in self._records

    def lookup(self, aor: str) -> List[Contact]:
        """
        @return: the live contacts of C{aor}, in usrloc's order (highest q
            first, then oldest first); C{[]} when it has none.
        """
        record = self._records.get(aor)
        if record is None:
            return []
        now = self._clock.seconds()
        return [contact for contact in record.contacts if not contact.expired(now)]

    def find(self, aor: str, ruid: str) -> Optional[Contact]:
        """
        @return: the contact C{ruid} of C{aor}, live or expired, or C{None}.
        """
        record = self._records.get(aor)
        if record is None:
            return None
        i = record.find(ruid)
        return None if i is None else record.contacts[i]

    def aors(self) -> List[str]:
        """
        @return: the addresses of record held, in usrloc's order: by hash
            slot, then oldest first.
        """
        return [record.aor for record in self._ordered()]

    def records(self) -> List[Tuple[str, int, List[Contact]]]:
        """
        @return: C{(aor, hash, contacts)} for every address of record, in
            the order of L{aors}, with every contact held, expired ones not
            yet purged included (what Kamailio's C{ul.dump} shows).
        """
        return [(record.aor, record.hash, list(record.contacts)) for record in self._ordered()]

    def contacts(self) -> List[Contact]:
        """
        @return: every live contact, address of record by address of record
            in the order of L{aors}.
        """
        now = self._clock.seconds()
        return [
            contact
            for record in self._ordered()
            for contact in record.contacts
            if not contact.expired(now)
        ]

    # Changing

    def save(self, contact: Contact, origin: str) -> Optional[Change]:
        """
        Add or update C{contact} as Kamailio's C{dmq_usrloc} applies an
        action 1: the contact of its AoR with its C{ruid} is replaced;
        else the one with its contact URI, which keeps its C{ruid}, unless
        (for a change from the bus) that one has the same Call-ID and a
        CSeq at least as high (usrloc's "invalid cseq"); else it is added.

        @param origin: C{"local"} or C{"replicated"}, for the L{Change}.
        @return: the L{Change} (its C{contact} is the one now held), or
            C{None} when nothing changed (the same contact again, or a
            stale CSeq).
        @raise StoreFull: when a new contact or AoR would pass a bound.
        """
        record = self._records.get(contact.aor)
        if record is None:
            self._checkRoom(None)
            record = _Record(contact.aor, coreHash(contact.aor), next(self._order))
            self._records[contact.aor] = record
            return self._insert(record, contact, origin)
        i = record.find(contact.ruid)
        if i is None:
            i = next((n for n, c in enumerate(record.contacts) if c.uri == contact.uri), None)
            if i is not None:
                old = record.contacts[i]
                if origin != "local" and old.callID == contact.callID and contact.cseq <= old.cseq:
                    return None
                # usrloc updates the contact it found, which keeps its ruid.
                contact = attr.evolve(contact, ruid=old.ruid)
        if i is None:
            self._checkRoom(record)
            return self._insert(record, contact, origin)
        old = record.contacts[i]
        if old == contact:
            return None
        if old.q == contact.q:
            record.contacts[i] = contact
        else:
            del record.contacts[i]
            record.insert(contact)
        self._scheduleExpiry(contact)
        return self._notify(Change(UPDATE, contact, old, origin))

    def remove(self, aor: str, ruid: str, origin: str) -> Optional[Contact]:
        """
        Remove the contact C{ruid} of C{aor}, and the AoR with its last
        contact.

        @return: the contact removed, or C{None} when there was none.
        """
        removed = self._take(aor, ruid)
        if removed is not None:
            self._notify(Change(DELETE, removed, None, origin))
        return removed

    def purgeExpired(self) -> List[Contact]:
        """
        Remove every contact whose time has come, each with an L{EXPIRE}
        change.

        @return: the contacts removed.
        """
        now = self._clock.seconds()
        expired = []
        while self._expiries and self._expiries[0][0] <= now:
            expires, _, aor, ruid = heapq.heappop(self._expiries)
            contact = self.find(aor, ruid)
            if contact is None or contact.expires != expires:
                continue
            self._take(aor, ruid)
            expired.append(contact)
            self._notify(Change(EXPIRE, contact, None, "clock"))
        return expired

    def subscribe(self, callback: Callable[[Change], object]) -> Callable[[], None]:
        """
        Call C{callback} with a L{Change} after each change to any contact,
        whatever its origin.  Exceptions it raises are logged and ignored.

        @return: a function that cancels the subscription.
        """
        self._subscribers.append(callback)

        def unsubscribe() -> None:
            if callback in self._subscribers:
                self._subscribers.remove(callback)

        return unsubscribe

    # Internals

    def _ordered(self) -> List[_Record]:
        return sorted(self._records.values(), key=lambda r: (r.hash & (HASH_SIZE - 1), r.order))

    def _checkRoom(self, record: Optional[_Record]) -> None:
        if record is None and len(self._records) >= self.maxAoRs:
            raise StoreFull(f"the store holds {self.maxAoRs} AoRs already")
        if record is not None and len(record.contacts) >= self.maxContactsPerAoR:
            raise StoreFull(f"{record.aor!r} has {self.maxContactsPerAoR} contacts already")
        if self._count >= self.maxContacts:
            raise StoreFull(f"the store holds {self.maxContacts} contacts already")

    def _insert(self, record: _Record, contact: Contact, origin: str) -> Change:
        record.insert(contact)
        self._count += 1
        self._scheduleExpiry(contact)
        return self._notify(Change(INSERT, contact, None, origin))

    def _take(self, aor: str, ruid: str) -> Optional[Contact]:
        record = self._records.get(aor)
        i = None if record is None else record.find(ruid)
        if record is None or i is None:
            return None
        contact = record.contacts.pop(i)
        self._count -= 1
        if not record.contacts:
            del self._records[aor]
        return contact

    def _scheduleExpiry(self, contact: Contact) -> None:
        if not contact.expires:
            return
        heapq.heappush(self._expiries, (contact.expires, next(self._order), contact.aor, contact.ruid))
        # Entries of contacts changed since are only dropped when popped:
        # rebuild the heap when they outnumber the live ones.
        if len(self._expiries) > 2 * self._count + 64:
            self._expiries = [
                (c.expires, next(self._order), c.aor, c.ruid)
                for record in self._records.values()
                for c in record.contacts
                if c.expires
            ]
            heapq.heapify(self._expiries)

    def _notify(self, change: Change) -> Change:
        for callback in list(self._subscribers):
            try:
                callback(change)
            except Exception:
                self._log.failure(
                    "usrloc subscriber {callback!r} failed on {change!r}",
                    callback=callback,
                    change=change,
                )
        return change
