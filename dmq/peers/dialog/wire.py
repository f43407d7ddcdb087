# -*- test-case-name: dmq.test.test_dialog_wire -*-
"""
The bodies of Kamailio's dialog KDMQ requests (C{dlg_dmq.c}): L{decode}
turns one into a typed message (L{Update}, L{StateChange}, L{Remove},
L{SyncRequest}) or refuses it with L{BadMessage}; L{encode} writes them as
Kamailio does.  Every check of a received body is here.

Pure, no I/O.  See C{doc/peers.md} (dialog) for the format and where we
differ from Kamailio.
"""

from __future__ import annotations

import enum
import json
from typing import TYPE_CHECKING, Any, Dict, List, Mapping, Optional, Tuple, Union

import attr
from dmq.peers.jsonbody import BadMessage, decodeObject

if TYPE_CHECKING:
    from typing import TypeGuard  # Python 3.10; annotations only


__all__ = [
    "CONTENT_TYPE",
    "MAX_VARIABLES",
    "MAX_PROFILES",
    "Action",
    "DialogState",
    "DialogId",
    "Leg",
    "Profile",
    "BadMessage",
    "Update",
    "StateChange",
    "Remove",
    "SyncRequest",
    "Message",
    "decode",
    "encode",
]

CONTENT_TYPE = "application/json"

# Bounds on what one dialog may carry: Kamailio has none, but a datagram of
# thousands of tiny variables would cost us far more memory than its size.
MAX_VARIABLES = 100
MAX_PROFILES = 100

UINT32_MAX = 2**32 - 1


class Action(enum.IntEnum):
    """
    The C{action} codes of Kamailio's C{dlg_dmq.h}.
    """

    NONE = 0
    UPDATE = 1
    STATE = 2
    RM = 3
    SYNC = 4


class DialogState(enum.IntEnum):
    """
    A dialog's state, as Kamailio's C{dlg_hash.h} numbers them.
    """

    UNCONFIRMED = 1
    EARLY = 2
    CONFIRMED_NA = 3
    CONFIRMED = 4
    DELETED = 5


@attr.frozen(order=True)
class DialogId:
    """
    A dialog's identity on the bus: Kamailio's C{h_entry} (the slot of its
    hash table, from the Call-ID) and C{h_id} (a counter of the node that
    made it).
    """

    hEntry: int
    hId: int

    def __str__(self) -> str:
        return f"{self.hEntry}:{self.hId}"


@attr.frozen
class Leg:
    """
    What a dialog knows of one side: the caller's (leg 1 on the wire) or
    the callee's (leg 2).
    """

    tag: str = ""
    cseq: str = ""
    routeSet: str = ""
    contact: str = ""


@attr.frozen
class Profile:
    """
    A dialog's membership of one profile: C{value} is C{None} for a profile
    without values.  C{puid} names the membership across the bus; C{expires}
    and C{flags} are 0 unless set (remote profiles).
    """

    name: str
    value: Optional[str] = None
    puid: str = ""
    expires: int = 0
    flags: int = 0


@attr.frozen
class Update:
    """
    A whole dialog (action 1): sent when a dialog is made and to answer a
    sync request.

    @ivar callee: the callee's leg, carried only in states C{CONFIRMED}.
    @ivar startTS: when the dialog was answered (Unix seconds), 0 before.
    @ivar lifetime: its lifetime in seconds (0 until early or confirmed).
    @ivar variables: its variables, C{(name, value)} in order.
    @ivar profiles: its profiles.
    @ivar initTS: when it was made (Unix seconds).
    """

    id: DialogId
    callID: str
    state: DialogState = DialogState.UNCONFIRMED
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


@attr.frozen
class StateChange:
    """
    A dialog's new state (action 2), with what that state brings: the
    caller's leg when early, both legs when confirmed, nothing when deleted.
    """

    id: DialogId
    state: DialogState
    startTS: Optional[int] = None
    lifetime: Optional[int] = None
    caller: Optional[Leg] = None
    callee: Optional[Leg] = None


@attr.frozen
class Remove:
    """
    A dialog is gone (action 3); C{state} is its last state, if given.
    """

    id: DialogId
    state: Optional[DialogState] = None


@attr.frozen
class SyncRequest:
    """
    Ask for every dialog (action 4).
    """


Message = Union[Update, StateChange, Remove, SyncRequest]



_NUMBERS = ("action", "h_entry", "h_id", "init_ts", "start_ts", "state", "lifetime", "last_modified")
_TEXTS = (
    "callid", "from_uri", "to_uri", "req_uri", "profiles",
    "tag1", "cseq1", "route_set1", "contact1", "tag2", "cseq2", "route_set2", "contact2",
)


def decode(body: bytes) -> Message:
    """
    Read one dialog request body.  Unknown keys are ignored, as Kamailio
    does (it logs them).

    @return: the message.
    @raise BadMessage: for an empty body, bad JSON (or not UTF-8), a root
        that is not a non-empty object, an unknown action, a missing
        dialog identity or Call-ID, a field of the wrong type, a number
        that is not an unsigned 32-bit integer, a state Kamailio does not
        have, text with NUL, variables that are not text, a C{profiles}
        that is not Kamailio's profiles document, or more than
        L{MAX_VARIABLES} variables or L{MAX_PROFILES} profiles.
    """
    # Any: each value's type is checked, key by key, before it is used.
    message: Dict[str, Any] = decodeObject(body)
    if not message:
        raise BadMessage()
    for key in _NUMBERS:
        if key in message:
            _uint(message[key], key)
    for key in _TEXTS:
        if key in message:
            _text(message[key], key)
    action = message.get("action")
    if action is None:
        raise BadMessage("no action")
    if not _isInt(action) or action not in (1, 2, 3, 4):
        raise BadMessage(f"unknown action {action!r}")
    if action == Action.SYNC:
        return SyncRequest()
    if "h_entry" not in message or "h_id" not in message:
        raise BadMessage("no h_entry and h_id")
    dialogId = DialogId(message["h_entry"], message["h_id"])
    state = message.get("state")
    if state is not None and state not in set(DialogState):
        raise BadMessage(f"unknown state {state!r}")
    if action == Action.RM:
        return Remove(dialogId, None if state is None else DialogState(state))
    if action == Action.STATE:
        if state is None:
            raise BadMessage("action 2 without a state")
        return StateChange(
            dialogId,
            DialogState(state),
            message.get("start_ts"),
            message.get("lifetime"),
            _leg(message, "1"),
            _leg(message, "2"),
        )
    callID = message.get("callid")
    if not callID:
        raise BadMessage("action 1 without a callid")
    return Update(
        dialogId,
        callID,
        DialogState(state if state is not None else DialogState.UNCONFIRMED),
        message.get("from_uri", ""),
        message.get("to_uri", ""),
        message.get("req_uri", ""),
        message.get("init_ts", 0),
        message.get("start_ts", 0),
        message.get("lifetime", 0),
        _leg(message, "1") or Leg(),
        _leg(message, "2"),
        _variables(message.get("vars")),
        _profiles(message.get("profiles")),
    )




def _isInt(value: object) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool)


def _uint(value: object, key: str) -> int:
    if not _isInt(value) or not 0 <= value <= UINT32_MAX:
        raise BadMessage(f"{key} is not an unsigned 32-bit integer")
    return value


def _text(value: object, key: str) -> str:
    if not isinstance(value, str):
        raise BadMessage(f"{key} is not a string")
    if "\0" in value:
        raise BadMessage(f"{key} contains NUL")
    return value


def _leg(message: Mapping[str, object], number: str) -> Optional[Leg]:
    keys = ("tag", "cseq", "route_set", "contact")
    if not any(key + number in message for key in keys):
        return None
    tag, cseq, routeSet, contact = (message.get(key + number, "") for key in keys)
    return Leg(tag, cseq, routeSet, contact)  # type: ignore[arg-type]


def _variables(value: object) -> Tuple[Tuple[str, str], ...]:
    if value is None:
        return ()
    if not isinstance(value, dict):
        raise BadMessage("vars is not an object")
    if len(value) > MAX_VARIABLES:
        raise BadMessage(f"more than {MAX_VARIABLES} vars")
    for name, text in value.items():
        _text(name, "a var's name")
        _text(text, f"var {name!r}")
    return tuple(value.items())


def _profiles(value: Optional[str]) -> Tuple[Profile, ...]:
    """
    Kamailio sends a dialog's profiles as a JSON document in a string:
    C{{"profiles":[{"name","value","puid","expires","flags"}, ...]}}.
    Entries without a name are skipped, as by Kamailio.
    """
    if value is None:
        return ()
    try:
        document = decodeObject(value.encode("utf-8"))
    except BadMessage:
        raise BadMessage("profiles is not a JSON object") from None
    entries = document.get("profiles", [])
    if not isinstance(entries, list):
        raise BadMessage("profiles is not an array")
    if len(entries) > MAX_PROFILES:
        raise BadMessage(f"more than {MAX_PROFILES} profiles")
    profiles = []
    for entry in entries:
        if not isinstance(entry, dict):
            raise BadMessage("a profile is not an object")
        name = entry.get("name")
        if name is None:
            continue
        value = entry.get("value")
        profiles.append(
            Profile(
                _text(name, "a profile's name"),
                None if value is None else _text(value, "a profile's value"),
                _text(entry.get("puid", ""), "a profile's puid"),
                _uint(entry.get("expires", 0), "a profile's expires"),
                _uint(entry.get("flags", 0), "a profile's flags"),
            )
        )
    return tuple(profiles)


def _dumps(obj: object) -> str:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False)


def _addLeg(fields: Dict[str, object], leg: Leg, number: str) -> None:
    fields["tag" + number] = leg.tag
    fields["cseq" + number] = leg.cseq
    fields["route_set" + number] = leg.routeSet
    fields["contact" + number] = leg.contact


def _encodeProfiles(profiles: Tuple[Profile, ...]) -> str:
    entries: List[Dict[str, object]] = []
    for profile in profiles:
        entry: Dict[str, object] = {"name": profile.name}
        if profile.value is not None:
            entry["value"] = profile.value
        if profile.puid:
            entry["puid"] = profile.puid
        if profile.expires:
            entry["expires"] = profile.expires
        if profile.flags:
            entry["flags"] = profile.flags
        entries.append(entry)
    return _dumps({"profiles": entries})


def _addState(
    fields: Dict[str, object],
    state: DialogState,
    startTS: Optional[int],
    lifetime: Optional[int],
    caller: Optional[Leg],
    callee: Optional[Leg],
) -> None:
    fields["state"] = int(state)
    if state not in (DialogState.EARLY, DialogState.CONFIRMED):
        return
    fields["start_ts"] = startTS or 0
    fields["lifetime"] = lifetime or 0
    if state is DialogState.EARLY:
        if caller is not None:
            _addLeg(fields, caller, "1")
    elif caller is None:
        _addLeg(fields, callee or Leg(), "2")
    else:
        # Kamailio 5.6 writes both legs of a confirmed dialog key by key.
        legs: Dict[str, object] = {}
        _addLeg(legs, caller, "1")
        _addLeg(legs, callee or Leg(), "2")
        for key in ("tag", "cseq", "route_set", "contact"):
            fields[key + "1"] = legs[key + "1"]
            fields[key + "2"] = legs[key + "2"]


def encode(message: Message) -> bytes:
    """
    Write C{message} as Kamailio writes it: no spaces, raw UTF-8, its keys
    in Kamailio's order.  An L{Update} is written as Kamailio 6 writes it,
    each key once (5.6 repeats the caller's fields), without
    C{last_modified} (which 5.x logs as unrecognised).
    """
    fields: Dict[str, object]
    if isinstance(message, SyncRequest):
        return b'{"action":4}'
    if not isinstance(message, (Update, StateChange, Remove)):
        raise TypeError(f"not a dialog message: {message!r}")
    action = {Update: Action.UPDATE, StateChange: Action.STATE, Remove: Action.RM}[type(message)]
    fields = {"action": int(action), "h_entry": message.id.hEntry, "h_id": message.id.hId}
    if isinstance(message, Update):
        fields.update(
            init_ts=message.initTS,
            callid=message.callID,
            from_uri=message.fromURI,
            to_uri=message.toURI,
            req_uri=message.reqURI,
        )
        _addLeg(fields, message.caller, "1")
        if message.variables:
            fields["vars"] = dict(message.variables)
        if message.profiles:
            fields["profiles"] = _encodeProfiles(message.profiles)
        _addState(fields, message.state, message.startTS, message.lifetime, None, message.callee)
    elif isinstance(message, StateChange):
        _addState(
            fields, message.state, message.startTS, message.lifetime, message.caller, message.callee
        )
    elif message.state is not None:
        fields["state"] = int(message.state)
    return _dumps(fields).encode("utf-8")
