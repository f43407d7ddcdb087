# -*- test-case-name: dmq.test.test_usrloc_store -*-
"""
Tests for L{dmq.peers.usrloc.store}: contacts on a L{Clock}, matched,
ordered and expired as Kamailio's usrloc does, within bounds.
"""

from __future__ import annotations

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from dmq.peers.usrloc.contact import HASH_SIZE, Contact, coreHash
from dmq.peers.usrloc.store import DELETE, EXPIRE, INSERT, UPDATE, Change, StoreFull, UsrlocStore

NOW = 1_700_000_000


def contact(aor="alice", uri="sip:alice@192.0.2.10", ruid="r1", **fields):
    return Contact(aor, uri, ruid, **fields)


def makeStore(**bounds):
    clock = Clock()
    clock.advance(NOW)
    store = UsrlocStore(clock, **bounds)
    changes: list[Change] = []
    store.subscribe(changes.append)
    return clock, store, changes


class SaveTests(SynchronousTestCase):
    """
    L{UsrlocStore.save} matches as Kamailio's C{dmq_usrloc} does.
    """

    def test_insert(self):
        """
        A new contact is inserted, its AoR created.
        """
        clock, store, changes = makeStore()
        c = contact()
        self.assertEqual(store.save(c, "replicated"), Change(INSERT, c, None, "replicated"))
        self.assertEqual(store.lookup("alice"), [c])
        self.assertEqual(store.find("alice", "r1"), c)
        self.assertIn("alice", store)
        self.assertEqual(len(store), 1)
        self.assertEqual(changes, [Change(INSERT, c, None, "replicated")])

    def test_updateByRUID(self):
        """
        A contact with the record id of one of its AoR replaces it, whatever
        its URI and CSeq.
        """
        clock, store, changes = makeStore()
        old = contact(cseq=5, callID="c")
        store.save(old, "replicated")
        new = contact(uri="sip:other", cseq=1, callID="c", expires=NOW + 60)
        self.assertEqual(store.save(new, "replicated"), Change(UPDATE, new, old, "replicated"))
        self.assertEqual(store.lookup("alice"), [new])
        self.assertEqual(len(store), 1)

    def test_updateByURI(self):
        """
        Else the contact with its URI is updated (keeping its record id, as
        usrloc does), when its Call-ID differs or its CSeq is higher.
        """
        clock, store, changes = makeStore()
        old = contact(cseq=5, callID="c")
        store.save(old, "replicated")
        newer = contact(ruid="r2", cseq=6, callID="c")
        change = store.save(newer, "replicated")
        self.assertEqual((change.contact, change.previous), (contact(cseq=6, callID="c"), old))
        other = contact(ruid="r3", cseq=1, callID="d")
        self.assertEqual(store.save(other, "replicated").previous, contact(cseq=6, callID="c"))
        self.assertEqual(store.lookup("alice"), [contact(cseq=1, callID="d")])
        self.assertIsNone(store.find("alice", "r2"))

    def test_staleCSeq(self):
        """
        From the bus, the same Call-ID with a CSeq not higher is ignored
        (usrloc's "invalid cseq"); a local save is not checked.
        """
        clock, store, changes = makeStore()
        old = contact(cseq=5, callID="c")
        store.save(old, "replicated")
        for cseq in (4, 5):
            self.assertIsNone(store.save(contact(ruid="r2", cseq=cseq, callID="c"), "replicated"))
        self.assertEqual(store.lookup("alice"), [old])
        local = contact(ruid="r2", cseq=1, callID="c")
        self.assertEqual(store.save(local, "local").event, UPDATE)
        self.assertEqual(store.lookup("alice"), [contact(cseq=1, callID="c")])

    def test_sameAgain(self):
        """
        The same contact again changes nothing and tells nobody.
        """
        clock, store, changes = makeStore()
        store.save(contact(), "replicated")
        self.assertIsNone(store.save(contact(), "replicated"))
        self.assertEqual(len(changes), 1)

    def test_order(self):
        """
        Contacts are kept as usrloc keeps them: highest q first, q -1 last,
        the older first among equals; a q change moves a contact.
        """
        clock, store, changes = makeStore()
        for ruid, q in (("a", -1), ("b", 500), ("c", 1000), ("d", 500), ("e", -1), ("f", 0)):
            store.save(contact(uri=f"sip:{ruid}", ruid=ruid, q=q), "local")
        self.assertEqual([c.ruid for c in store.lookup("alice")], ["c", "b", "d", "f", "a", "e"])
        store.save(contact(uri="sip:b", ruid="b", q=0), "local")
        self.assertEqual([c.ruid for c in store.lookup("alice")], ["c", "d", "f", "b", "a", "e"])
        store.save(contact(uri="sip:a", ruid="a", q=-1, cseq=9), "local")
        self.assertEqual([c.ruid for c in store.lookup("alice")], ["c", "d", "f", "b", "a", "e"])

    def test_aorOrder(self):
        """
        AoRs come by hash slot, then oldest first, as in Kamailio's dumps.
        """
        clock, store, changes = makeStore()
        names = ["u3", "alice", "carol", "u2", "bob", "u0", "u1", "zed"]
        for name in names:
            store.save(contact(aor=name, ruid=name), "local")
        expected = sorted(names, key=lambda n: (coreHash(n) & (HASH_SIZE - 1), names.index(n)))
        self.assertEqual(store.aors(), expected)
        # From the captures: u2, u3, u0, u1 (slots 934 to 937), bob 963, alice 989.
        self.assertEqual(
            [n for n in store.aors() if n in ("u0", "u1", "u2", "u3", "bob", "alice")],
            ["u2", "u3", "u0", "u1", "bob", "alice"],
        )
        self.assertEqual([c.aor for c in store.contacts()], expected)
        self.assertEqual([r[0] for r in store.records()], expected)
        self.assertEqual(store.records()[0][1], coreHash(expected[0]))


class RemoveTests(SynchronousTestCase):
    """
    L{UsrlocStore.remove}.
    """

    def test_remove(self):
        """
        A contact is removed by AoR and record id, the AoR with its last
        contact.
        """
        clock, store, changes = makeStore()
        a, b = contact(), contact(uri="sip:b", ruid="r2")
        store.save(a, "local")
        store.save(b, "local")
        self.assertEqual(store.remove("alice", "r1", "replicated"), a)
        self.assertEqual(changes[-1], Change(DELETE, a, None, "replicated"))
        self.assertEqual(store.lookup("alice"), [b])
        store.remove("alice", "r2", "local")
        self.assertNotIn("alice", store)
        self.assertEqual((len(store), store.aors()), (0, []))

    def test_unknown(self):
        """
        Removing what is not there does nothing.
        """
        clock, store, changes = makeStore()
        store.save(contact(), "local")
        self.assertIsNone(store.remove("alice", "r9", "local"))
        self.assertIsNone(store.remove("bob", "r1", "local"))
        self.assertEqual(len(changes), 1)


class ExpiryTests(SynchronousTestCase):
    """
    Contacts expire at their absolute time on the clock.
    """

    def test_expiry(self):
        """
        An expired contact is hidden at once and purged with an L{EXPIRE}
        change; a permanent one stays.
        """
        clock, store, changes = makeStore()
        short, permanent = contact(expires=NOW + 10), contact(uri="sip:p", ruid="p", expires=0)
        store.save(short, "replicated")
        store.save(permanent, "replicated")
        clock.advance(9)
        self.assertEqual(store.purgeExpired(), [])
        self.assertEqual(store.lookup("alice"), [short, permanent])
        clock.advance(1)
        self.assertEqual(store.lookup("alice"), [permanent])
        self.assertEqual(store.contacts(), [permanent])
        # Still held until purged (ul.dump shows it as expired).
        self.assertEqual(store.find("alice", "r1"), short)
        self.assertEqual(store.purgeExpired(), [short])
        self.assertEqual(changes[-1], Change(EXPIRE, short, None, "clock"))
        self.assertEqual(len(store), 1)
        clock.advance(10**6)
        self.assertEqual(store.purgeExpired(), [])

    def test_refreshed(self):
        """
        A contact refreshed before its time expires at its new time only.
        """
        clock, store, changes = makeStore()
        store.save(contact(expires=NOW + 10), "replicated")
        refreshed = contact(expires=NOW + 100)
        store.save(refreshed, "replicated")
        clock.advance(50)
        self.assertEqual(store.purgeExpired(), [])
        self.assertEqual(store.lookup("alice"), [refreshed])
        clock.advance(50)
        self.assertEqual(store.purgeExpired(), [refreshed])

    def test_removedBeforeExpiry(self):
        """
        A contact removed, or updated through its URI to a later time, is not
        expired at its former time.
        """
        clock, store, changes = makeStore()
        store.save(contact(expires=NOW + 10), "replicated")
        store.remove("alice", "r1", "replicated")
        store.save(contact(ruid="r2", expires=NOW + 10, callID="x"), "replicated")
        store.save(contact(ruid="r3", expires=NOW + 20, callID="y"), "replicated")
        clock.advance(10)
        self.assertEqual(store.purgeExpired(), [])
        clock.advance(10)
        self.assertEqual([(c.ruid, c.callID) for c in store.purgeExpired()], [("r2", "y")])

    def test_heapBounded(self):
        """
        Refreshing a contact many times does not grow the expiry queue
        without bound.
        """
        clock, store, changes = makeStore()
        for i in range(1000):
            store.save(contact(expires=NOW + 3600 + i), "replicated")
        self.assertLess(len(store._expiries), 100)
        clock.advance(3600 + 999)
        self.assertEqual(len(store.purgeExpired()), 1)


class BoundTests(SynchronousTestCase):
    """
    The store holds at most so many AoRs, contacts, contacts per AoR.
    """

    def test_perAoR(self):
        """
        Past C{maxContactsPerAoR}, a new contact of that AoR is refused;
        updates still apply.
        """
        clock, store, changes = makeStore(maxContactsPerAoR=2)
        store.save(contact(ruid="a", uri="sip:a"), "local")
        store.save(contact(ruid="b", uri="sip:b"), "local")
        self.assertRaises(StoreFull, store.save, contact(ruid="c", uri="sip:c"), "local")
        store.save(contact(ruid="b", uri="sip:b", cseq=2), "local")
        store.save(contact(aor="bob", ruid="c", uri="sip:c"), "local")
        self.assertEqual(len(store), 3)

    def test_aors(self):
        """
        Past C{maxAoRs}, a new AoR is refused.
        """
        clock, store, changes = makeStore(maxAoRs=2)
        store.save(contact(aor="a"), "local")
        store.save(contact(aor="b"), "local")
        e = self.assertRaises(StoreFull, store.save, contact(aor="c"), "replicated")
        self.assertEqual(str(e), "the store holds 2 AoRs already")
        store.save(contact(aor="a", ruid="r2", uri="sip:2"), "local")
        self.assertEqual(store.aors().count("c"), 0)

    def test_contacts(self):
        """
        Past C{maxContacts}, no contact is added anywhere.
        """
        clock, store, changes = makeStore(maxContacts=2)
        store.save(contact(aor="a"), "local")
        store.save(contact(aor="b"), "local")
        self.assertRaises(StoreFull, store.save, contact(aor="a", ruid="x", uri="sip:x"), "local")
        self.assertRaises(StoreFull, store.save, contact(aor="c"), "local")
        store.remove("a", "r1", "local")
        store.save(contact(aor="c"), "local")

    def test_badBounds(self):
        """
        Bounds are positive integers.
        """
        for bounds in ({"maxAoRs": 0}, {"maxContacts": -1}, {"maxContactsPerAoR": 1.5}, {"maxAoRs": True}):
            self.assertRaises(ValueError, UsrlocStore, Clock(), **bounds)


class SubscribeTests(SynchronousTestCase):
    """
    L{UsrlocStore.subscribe}.
    """

    def test_failingSubscriber(self):
        """
        A subscriber that raises is logged; the others are still told.
        """
        clock, store, changes = makeStore()
        store.subscribe(lambda change: 1 / 0)
        seen: list[Change] = []
        cancel = store.subscribe(seen.append)
        store.save(contact(), "local")
        self.assertEqual(len(seen), 1)
        self.assertEqual(len(changes), 1)
        cancel()
        cancel()
        store.remove("alice", "r1", "local")
        self.assertEqual(len(seen), 1)
        self.assertEqual(len(changes), 2)
        self.assertEqual(len(self.flushLoggedErrors(ZeroDivisionError)), 2)
