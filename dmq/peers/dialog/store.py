# -*- test-case-name: dmq.test.test_dialog_store,dmq.test.test_dialog -*-
"""
L{DialogStore}: the dialogs the bus tells us of, as Kamailio's dialog
module keeps its replicas: each message applied as C{dlg_dmq_handle_msg}
applies it, states only ever moving forward; bounded, with expiry on an
injected clock, and L{DialogChange} notifications.  It knows nothing of the
bus, SIP or JSON.

See C{doc/peers.md} (dialog) for the whole design.
"""

from __future__ import annotations

from typing import Callable, Dict, Iterable, List, Optional, Tuple

import attr
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from dmq.observers import Observers
from dmq.peers.dialog.wire import DialogId, DialogState, Leg, Profile, Remove, StateChange, Update

__all__ = [
    "DEFAULT_LIFETIME",
    "Dialog",
    "DialogChange",
    "UnknownDialog",
    "StoreFull",
    "DialogStore",
]

# Kamailio's default_timeout: a dialog's lifetime when it has none yet.
DEFAULT_LIFETIME = 43200

NEW = "new"
STATE = "state"
UPDATE = "update"
REMOVED = "removed"
EXPIRED = "expired"


@attr.frozen
class Dialog:
    """
    One dialog, as the node that owns it last told us.

    @ivar id: its L{DialogId}.
    @ivar callee: the callee's leg, C{None} until the dialog is confirmed.
    @ivar initTS: when it was made, Unix seconds (the owner's clock).
    @ivar startTS: when it was answered, 0 before.
    @ivar lifetime: seconds it may last once answered (0 until then).
    @ivar variables: C{(name, value)} pairs, in the order first set.
    @ivar endTS: when we learnt it was deleted, in our clock's seconds; 0
        before.
    @ivar node: the URI of the node that last told us of it, if known.
    """

    id: DialogId
    callID: str
    state: DialogState
    fromURI: str = ""
    toURI: str = ""
    reqURI: str = ""
    initTS: int = 0
    startTS: int = 0
    lifetime: int = 0
    caller: Leg = Leg()
    callee: Optional[Leg] = None
    variables: Tuple[Tuple[str, str], ...] = ()
    profiles: Tuple[Profile, ...] = ()
    endTS: int = 0
    node: Optional[str] = None

    def toUpdate(self) -> Update:
        """
        The L{Update} that tells another node of this dialog.
        """
        return Update(
            self.id, self.callID, self.state, self.fromURI, self.toURI, self.reqURI,
            self.initTS, self.startTS, self.lifetime, self.caller, self.callee,
            self.variables, self.profiles,
        )


@attr.frozen
class DialogChange:
    """
    One change to one dialog, as told to L{DialogStore.subscribe} callbacks.

    @ivar kind: C{"new"} (first heard of), C{"state"} (its state moved
        forward), C{"update"} (something else changed), C{"removed"} (its
        owner removed it) or C{"expired"} (we dropped it: its lifetime
        passed, or it stayed deleted without being removed).
    @ivar dialog: the dialog after the change (the last one known, for
        C{"removed"} and C{"expired"}).
    @ivar previous: the dialog before, or C{None} for C{"new"}.
    """

    kind: str
    dialog: Dialog
    previous: Optional[Dialog]


class UnknownDialog(LookupError):
    """
    A state change or removal for a dialog we do not hold (Kamailio answers
    those C{500}).
    """


class StoreFull(Exception):
    """
    A new dialog, and the store already holds its most.
    """


@attr.define
class _Entry:
    dialog: Dialog
    # The order dialogs arrived in, for Kamailio's listing order.
    sequence: int
    expiresAt: float


class DialogStore:
    """
    The dialogs, by L{DialogId}, on an injected clock.

    A dialog expires C{lifetime} seconds (L{DEFAULT_LIFETIME} when it has
    none) after its last state change, and C{deletedKeep} seconds after it
    was deleted if its owner never removes it; L{purgeExpired} drops the
    expired ones.  At most C{maxDialogs} are held.
    """

    _log = Logger()

    def __init__(self, clock: IReactorTime, maxDialogs: int = 100000, deletedKeep: float = 120.0) -> None:
        if maxDialogs < 1:
            raise ValueError("maxDialogs must be at least 1")
        if deletedKeep < 0:
            raise ValueError("deletedKeep must not be negative")
        self._clock = clock
        self.maxDialogs = maxDialogs
        self._deletedKeep = deletedKeep
        self._entries: Dict[DialogId, _Entry] = {}
        self._sequence = 0
        self._subscribers: Observers[Callable[[DialogChange], object]] = Observers("dialog")

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, dialogId: object) -> bool:
        return dialogId in self._entries

    # Reading

    def get(self, dialogId: DialogId) -> Optional[Dialog]:
        """
        @return: the dialog C{dialogId}, or C{None}.
        """
        entry = self._entries.get(dialogId)
        return None if entry is None else entry.dialog

    def dialogs(self) -> List[Dialog]:
        """
        @return: every dialog, in Kamailio's order: by C{h_entry}, then in
            the order they arrived.
        """
        entries = sorted(self._entries.values(), key=lambda e: (e.dialog.id.hEntry, e.sequence))
        return [entry.dialog for entry in entries]

    def expiresAt(self, dialogId: DialogId) -> Optional[float]:
        """
        @return: when dialog C{dialogId} expires, in clock time, or C{None}.
        """
        entry = self._entries.get(dialogId)
        return None if entry is None else entry.expiresAt

    # Changing

    def apply(self, message: object, node: Optional[str] = None) -> None:
        """
        Apply an L{Update}, a L{StateChange} or a L{Remove} from the bus.

        @param node: the URI of the node it came from, if known.
        @raise UnknownDialog: for a state change or removal of a dialog we
            do not hold.
        @raise StoreFull: for an update of a new dialog when the store holds
            C{maxDialogs}.
        """
        if isinstance(message, Update):
            self._update(message, node)
        elif isinstance(message, StateChange):
            entry = self._entries.get(message.id)
            if entry is None:
                raise UnknownDialog(message.id)
            self._replace(entry, self._changeState(entry.dialog, message, node))
        elif isinstance(message, Remove):
            entry = self._entries.pop(message.id, None)
            if entry is None:
                raise UnknownDialog(message.id)
            self._notify(DialogChange(REMOVED, entry.dialog, entry.dialog))
        else:
            raise TypeError(f"not a dialog change: {message!r}")

    def _update(self, message: Update, node: Optional[str]) -> None:
        entry = self._entries.get(message.id)
        if entry is None:
            if len(self._entries) >= self.maxDialogs:
                raise StoreFull(message.id)
            # A new dialog is made in state 1 from the message, as
            # Kamailio's build_new_dlg(), then moved to its state.
            dialog = Dialog(
                message.id, message.callID, DialogState.UNCONFIRMED,
                message.fromURI, message.toURI, message.reqURI,
                message.initTS, message.startTS, 0, message.caller, None,
                _merged((), message.variables), message.profiles, 0, node,
            )
            if message.state is not DialogState.UNCONFIRMED:
                dialog = self._changeState(dialog, _stateOf(message), node)
            self._sequence += 1
            self._entries[message.id] = _Entry(dialog, self._sequence, self._expiry(dialog))
            self._notify(DialogChange(NEW, dialog, None))
            return
        # An existing dialog keeps its identity and legs; its times,
        # variables and profiles are the message's.
        dialog = attr.evolve(
            entry.dialog,
            initTS=message.initTS,
            startTS=message.startTS,
            variables=_merged(entry.dialog.variables, message.variables),
            profiles=message.profiles,
            node=node or entry.dialog.node,
        )
        if message.state is not entry.dialog.state:
            dialog = self._changeState(dialog, _stateOf(message), node)
        self._replace(entry, dialog)

    def _changeState(self, dialog: Dialog, change: StateChange, node: Optional[str]) -> Dialog:
        """
        The dialog after C{change}, as Kamailio applies one: a state before
        the current one is ignored; early brings the caller's leg, confirmed
        both legs, deleted drops the profiles.
        """
        if change.state < dialog.state:
            self._log.info(
                "Ignored a backwards state change of dialog {id} from {old} to {new}",
                id=str(dialog.id),
                old=dialog.state.name,
                new=change.state.name,
            )
            return dialog
        fields: Dict[str, object] = {"state": change.state, "node": node or dialog.node}
        if change.state in (DialogState.EARLY, DialogState.CONFIRMED):
            fields.update(startTS=change.startTS or 0, lifetime=change.lifetime or 0)
            fields["caller"] = change.caller or Leg()
            if change.state is DialogState.CONFIRMED:
                fields["callee"] = change.callee or Leg()
        elif change.state is DialogState.DELETED:
            fields["profiles"] = ()
            if dialog.state is not DialogState.DELETED:
                fields["endTS"] = int(self._clock.seconds())
        # fields holds Dialog's own names with values of their types, which
        # a Dict[str, object] cannot tell mypy.
        return attr.evolve(dialog, **fields)  # type: ignore[arg-type]

    def _replace(self, entry: _Entry, dialog: Dialog) -> None:
        previous = entry.dialog
        if dialog == previous:
            return
        entry.dialog = dialog
        if dialog.state is not previous.state:
            entry.expiresAt = self._expiry(dialog)
            self._notify(DialogChange(STATE, dialog, previous))
        else:
            self._notify(DialogChange(UPDATE, dialog, previous))

    def _expiry(self, dialog: Dialog) -> float:
        now = self._clock.seconds()
        if dialog.state is DialogState.DELETED:
            return now + self._deletedKeep
        return now + (dialog.lifetime or DEFAULT_LIFETIME)

    def purgeExpired(self) -> int:
        """
        Drop every expired dialog now.

        @return: how many were dropped.
        """
        now = self._clock.seconds()
        expired = [entry for entry in self._entries.values() if entry.expiresAt <= now]
        for entry in expired:
            del self._entries[entry.dialog.id]
            self._notify(DialogChange(EXPIRED, entry.dialog, entry.dialog))
        return len(expired)

    def subscribe(self, callback: Callable[[DialogChange], object]) -> Callable[[], None]:
        """
        Call C{callback} with a L{DialogChange} after each change to any
        dialog.  Exceptions it raises are logged and ignored.

        @return: a function that cancels the subscription.
        """
        self._subscribers.add(callback)

        def unsubscribe() -> None:
            try:
                self._subscribers.remove(callback)
            except ValueError:
                pass

        return unsubscribe

    def _notify(self, change: DialogChange) -> None:
        self._subscribers.tell(lambda callback: callback(change), change)


def _stateOf(message: Update) -> StateChange:
    return StateChange(
        message.id, message.state, message.startTS, message.lifetime, message.caller, message.callee
    )


def _merged(
    old: Iterable[Tuple[str, str]], new: Iterable[Tuple[str, str]]
) -> Tuple[Tuple[str, str], ...]:
    """
    C{old} with each of C{new} set, as Kamailio's set_dlg_variable() sets
    them one by one: a variable keeps its place, a new one goes last.
    """
    variables = dict(old)
    variables.update(new)
    return tuple(variables.items())
