# -*- test-case-name: dmq.test.test_dialog_store -*-
"""
Tests for L{dmq.peers.dialog.store}: the dialogs, applied as Kamailio's
dialog module applies what the bus tells it.
"""

from __future__ import annotations

from typing import Any, Dict, List

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from dmq.peers.dialog.store import (
    DEFAULT_LIFETIME,
    Dialog,
    DialogChange,
    DialogStore,
    StoreFull,
    UnknownDialog,
)
from dmq.peers.dialog.wire import DialogId, DialogState, Leg, Profile, Remove, StateChange, Update

ID = DialogId(3816, 1)
CALLER = Leg("a1", "1", "", "sip:alice@h")
CALLEE = Leg("b1", "0", "", "sip:bob@h")
PROFILES = (Profile("calls"), Profile("caller", "alice", "p1"))


def invite(dialogId: DialogId = ID, **fields: Any) -> Update:
    """
    The update a Kamailio node sends on an INVITE.
    """
    values: Dict[str, Any] = dict(
        callID="c1@h", fromURI="sip:alice@h", toURI="sip:bob@h", reqURI="sip:bob@h:5080",
        initTS=1000, caller=CALLER, variables=(("origin", "h"),), profiles=PROFILES,
    )
    values.update(fields)
    return Update(dialogId, **values)


CONFIRM = StateChange(ID, DialogState.CONFIRMED, 1001, 3600, CALLER, CALLEE)


class StoreTests(SynchronousTestCase):
    """
    L{DialogStore} applies updates, state changes and removals.
    """

    def setUp(self) -> None:
        self.clock = Clock()
        self.clock.advance(5000)
        self.store = DialogStore(self.clock, maxDialogs=3, deletedKeep=60)
        self.changes: List[DialogChange] = []
        self.store.subscribe(self.changes.append)

    def held(self) -> Dialog:
        """
        The dialog C{ID}, which the test knows the store holds.
        """
        dialog = self.store.get(ID)
        assert dialog is not None
        return dialog

    def kinds(self) -> List[tuple]:
        return [(c.kind, c.dialog.state) for c in self.changes]

    def test_callInOrder(self) -> None:
        """
        An invite, early, confirmed, deleted, removed: each told to
        subscribers with the dialog before and after.
        """
        self.store.apply(invite(), "sip:k1:5060")
        self.store.apply(StateChange(ID, DialogState.EARLY, 0, 0, CALLER))
        self.store.apply(CONFIRM)
        self.store.apply(StateChange(ID, DialogState.DELETED))
        deleted = self.held()
        self.store.apply(Remove(ID, DialogState.DELETED))
        self.assertEqual(
            self.kinds(),
            [
                ("new", DialogState.UNCONFIRMED),
                ("state", DialogState.EARLY),
                ("state", DialogState.CONFIRMED),
                ("state", DialogState.DELETED),
                ("removed", DialogState.DELETED),
            ],
        )
        self.assertIsNone(self.changes[0].previous)
        previous = self.changes[2].previous
        assert previous is not None
        self.assertEqual(previous.state, DialogState.EARLY)
        self.assertEqual(len(self.store), 0)
        self.assertIsNone(self.store.get(ID))
        self.assertEqual(deleted.profiles, ())
        self.assertEqual(deleted.endTS, 5000)
        self.assertEqual(deleted.node, "sip:k1:5060")

    def test_confirmedBringsLegs(self) -> None:
        """
        Confirmed brings both legs, the start and the lifetime.
        """
        self.store.apply(invite())
        self.store.apply(CONFIRM)
        dialog = self.held()
        self.assertEqual(
            (dialog.caller, dialog.callee, dialog.startTS, dialog.lifetime),
            (CALLER, CALLEE, 1001, 3600),
        )
        self.assertEqual(dialog.variables, (("origin", "h"),))
        self.assertEqual(dialog.profiles, PROFILES)

    def test_backwardsIgnored(self) -> None:
        """
        A state before the current one is ignored, as by Kamailio.
        """
        self.store.apply(invite())
        self.store.apply(CONFIRM)
        self.store.apply(StateChange(ID, DialogState.EARLY, 5, 5, Leg("x")))
        self.assertEqual(self.held().state, DialogState.CONFIRMED)
        self.assertEqual(self.held().caller, CALLER)
        self.assertEqual(len(self.changes), 2)

    def test_syncedConfirmed(self) -> None:
        """
        A sync's update of a dialog we do not hold makes it in its state,
        with both legs.
        """
        self.store.apply(invite(state=DialogState.CONFIRMED, startTS=1001, lifetime=60, callee=CALLEE))
        self.assertEqual(self.kinds(), [("new", DialogState.CONFIRMED)])
        dialog = self.held()
        self.assertEqual((dialog.callee, dialog.lifetime, dialog.startTS), (CALLEE, 60, 1001))

    def test_updateOfKnownDialog(self) -> None:
        """
        An update of a dialog we hold sets its times, its variables one by
        one and its profiles, keeps its identity, and moves its state.
        """
        self.store.apply(invite())
        self.store.apply(
            invite(
                callID="other", initTS=2000, state=DialogState.CONFIRMED, startTS=2001, lifetime=9,
                callee=CALLEE, variables=(("new", "1"), ("origin", "k")), profiles=(),
            )
        )
        dialog = self.held()
        self.assertEqual(dialog.callID, "c1@h")
        self.assertEqual(dialog.variables, (("origin", "k"), ("new", "1")))
        self.assertEqual((dialog.initTS, dialog.state, dialog.profiles), (2000, DialogState.CONFIRMED, ()))
        self.assertEqual(self.kinds()[-1], ("state", DialogState.CONFIRMED))
        self.store.apply(invite(state=DialogState.CONFIRMED, initTS=3000, startTS=2001, callee=CALLEE))
        self.assertEqual(self.kinds()[-1], ("update", DialogState.CONFIRMED))
        self.store.apply(invite(state=DialogState.CONFIRMED, initTS=3000, startTS=2001, callee=CALLEE))
        self.assertEqual(len(self.changes), 3, "an update that changes nothing is not told")

    def test_unknownDialog(self) -> None:
        """
        A state change or removal of a dialog we do not hold raises
        L{UnknownDialog}.
        """
        self.assertRaises(UnknownDialog, self.store.apply, CONFIRM)
        self.assertRaises(UnknownDialog, self.store.apply, Remove(ID))
        self.assertEqual(self.changes, [])

    def test_full(self) -> None:
        """
        Past C{maxDialogs}, a new dialog raises L{StoreFull}; the ones held
        still change.
        """
        for hId in range(3):
            self.store.apply(invite(DialogId(1, hId)))
        self.assertRaises(StoreFull, self.store.apply, invite(DialogId(1, 9)))
        self.store.apply(StateChange(DialogId(1, 0), DialogState.DELETED))
        self.assertEqual(len(self.store), 3)

    def test_order(self) -> None:
        """
        Dialogs are listed by C{h_entry}, then as they arrived.
        """
        for dialogId in (DialogId(9, 1), DialogId(2, 7), DialogId(9, 0)):
            self.store.apply(invite(dialogId))
        self.assertEqual(
            [d.id for d in self.store.dialogs()], [DialogId(2, 7), DialogId(9, 1), DialogId(9, 0)]
        )

    def test_expiry(self) -> None:
        """
        A dialog expires its lifetime after its last state change
        (L{DEFAULT_LIFETIME} before it has one), a deleted one
        C{deletedKeep} after its deletion.
        """
        self.store.apply(invite())
        self.assertEqual(self.store.expiresAt(ID), 5000 + DEFAULT_LIFETIME)
        self.clock.advance(10)
        self.store.apply(CONFIRM)
        self.assertEqual(self.store.expiresAt(ID), 5010 + 3600)
        self.store.apply(invite(DialogId(1, 1)))
        self.store.apply(StateChange(DialogId(1, 1), DialogState.DELETED))
        self.clock.advance(59)
        self.assertEqual(self.store.purgeExpired(), 0)
        self.clock.advance(1)
        self.assertEqual(self.store.purgeExpired(), 1)
        self.assertEqual(self.kinds()[-1], ("expired", DialogState.DELETED))
        self.clock.advance(3600)
        self.assertEqual(self.store.purgeExpired(), 1)
        self.assertEqual(len(self.store), 0)
        self.assertIsNone(self.store.expiresAt(ID))

    def test_subscriberFails(self) -> None:
        """
        A subscriber that raises is logged; the others are still told, and
        one that unsubscribed is not.
        """
        told: List[str] = []

        def broken(change: DialogChange) -> None:
            raise RuntimeError("broken")

        self.store.subscribe(broken)
        unsubscribe = self.store.subscribe(lambda change: told.append(change.kind))
        self.store.apply(invite())
        unsubscribe()
        unsubscribe()
        self.store.apply(CONFIRM)
        self.assertEqual(told, ["new"])
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 2)

    def test_toUpdate(self) -> None:
        """
        A dialog gives back the update that makes it elsewhere.
        """
        self.store.apply(invite())
        self.store.apply(CONFIRM)
        dialog = self.held()
        fresh = DialogStore(Clock())
        fresh.apply(dialog.toUpdate())
        self.assertEqual(fresh.get(ID), dialog)

    def test_badArguments(self) -> None:
        """
        Nonsense bounds and messages are programming errors.
        """
        self.assertRaises(ValueError, DialogStore, self.clock, maxDialogs=0)
        self.assertRaises(ValueError, DialogStore, self.clock, deletedKeep=-1)
        self.assertRaises(TypeError, self.store.apply, object())
