# -*- test-case-name: dmq.test.test_usrloc_wire -*-
"""
The bodies of Kamailio's C{usrloc} KDMQ requests (the C{dmq_usrloc}
module): L{decode} turns one into a typed message (L{Update}, L{Remove},
L{SyncRequest}, L{Nothing}, or a L{Batch} of them) or refuses it with
L{BadMessage}; L{encodeContact}, L{encodeSyncRequest} and L{encodeBatches}
write them byte for byte as Kamailio 5.6 does.  Every check of a received
body is here.

Pure, no I/O.  See C{doc/peers.md} (usrloc) for the whole design.
"""

from __future__ import annotations

import enum
import json
import re
from typing import Dict, Iterable, Iterator, List, Tuple, Union

import attr

from dmq.peers.usrloc.contact import Q_UNSPECIFIED, UINT32_MAX, Contact, checkText
from dmq.peers.jsonbody import BadMessage, decodeObject

__all__ = [
    "CONTENT_TYPE",
    "MAX_BATCH_CONTACTS",
    "MAX_BATCH_SIZE",
    "MAX_CONTACT_BODY",
    "Action",
    "SocketInfo",
    "BadMessage",
    "Update",
    "Remove",
    "SyncRequest",
    "Nothing",
    "BadEntry",
    "Batch",
    "Message",
    "decode",
    "encodeContact",
    "encodeSyncRequest",
    "encodeBatches",
    "parseSocket",
]

CONTENT_TYPE = "application/json"

#: Kamailio's caps on C{batch_msg_contacts} and C{batch_msg_size}.
MAX_BATCH_CONTACTS = 150
MAX_BATCH_SIZE = 60000

#: The largest body one contact may need on its own: what is left of a
#: datagram for it under Kamailio's batch size cap.
MAX_CONTACT_BODY = MAX_BATCH_SIZE


class Action(enum.IntEnum):
    """
    The C{action} codes of Kamailio's C{usrloc_sync.h}.
    """

    NONE = 0
    UPDATE = 1
    REMOVE = 2
    SYNC = 3


class SocketInfo(enum.IntEnum):
    """
    Kamailio's C{replicate_socket_info}: what a contact's socket is sent as.
    """

    NONE = 0
    #: C{"sock":"proto:host:port"}.
    SOCKET = 1
    #: C{"sockname":"name"} (Kamailio 5.7 and later).
    SOCKNAME = 2


@attr.frozen
class Update:
    """
    Add or update a contact (action 1).
    """

    contact: Contact


@attr.frozen
class Remove:
    """
    Remove the contact C{ruid} of C{aor} (action 2).
    """

    aor: str
    ruid: str


@attr.frozen
class SyncRequest:
    """
    Ask for every contact (action 3).
    """


@attr.frozen
class Nothing:
    """
    Action 0, which Kamailio answers C{200} and ignores.
    """


@attr.frozen
class BadEntry:
    """
    An entry of a batch that is not applied.

    @ivar key: its key in the batch (C{"1"}, C{"2"}, ...).
    @ivar detail: what is wrong with it.
    """

    key: str
    detail: str


@attr.frozen
class Batch:
    """
    A C{{"multi":{"1":{...},...}}} body (Kamailio sends them in sync dumps
    when C{batch_msg_contacts} is over 1): its entries, in order.
    """

    entries: Tuple[Union[Update, Remove, Nothing, BadEntry], ...] = ()


Message = Union[Update, Remove, SyncRequest, Nothing, Batch]

# The keys of a contact, in the order Kamailio writes them, and our names.
_HEAD = (("aor", "aor"), ("ruid", "ruid"), ("c", "uri"), ("received", "received"))
_TEXTS = (("path", "path"), ("callid", "callID"), ("user_agent", "userAgent"), ("instance", "instance"))
_NUMBERS = (
    ("expires", "expires"),
    ("cseq", "cseq"),
    ("flags", "flags"),
    ("cflags", "cflags"),
    ("q", "q"),
    ("last_modified", "lastModified"),
    ("methods", "methods"),
    ("reg_id", "regID"),
    ("server_id", "serverID"),
)

# What Kamailio's parse_phostport() reads: [proto:]host[:port].
_SOCKET = re.compile(
    r"(?:(?P<proto>udp|tcp|tls|sctp|ws|wss):)?"
    r"(?P<host>\[[0-9A-Fa-f:.]+\]|[^\s:\[\]]+)"
    r"(?::(?P<port>[0-9]{1,5}))?\Z",
    re.IGNORECASE,
)


def _cut(text: str) -> str:
    return text if len(text) <= 40 else text[:37] + "..."


def _show(value: object) -> str:
    """
    C{value} as a reason phrase may show it: its repr, cut short.
    """
    return _cut(repr(value))


def parseSocket(text: str) -> str:
    """
    Check a C{sock} value, a Kamailio socket C{[proto:]host[:port]}.

    @return: C{text}.
    @raise ValueError: when it is not one.
    """
    match = _SOCKET.match(text)
    if match is None or (match.group("port") and not 0 < int(match.group("port")) <= 65535):
        raise ValueError(f"sock {_show(text)} is not proto:host:port")
    return text


def _isInt(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)




def decode(body: bytes, socketInfo: int = SocketInfo.NONE) -> Message:
    """
    Read one usrloc request body, as Kamailio writes them.  Keys we do not
    know (C{xavps} of Kamailio 5.7 and later, for one) are ignored, as
    Kamailio ignores them; so are C{sock} and C{sockname} unless
    C{socketInfo} asks for them.  A missing string is C{""} and a missing
    number 0, as in Kamailio.

    @param socketInfo: the L{SocketInfo} of this node.
    @return: the message.
    @raise BadMessage: for an empty body, bad JSON (or not UTF-8), a root
        that is not a non-empty object, a missing or unknown action, a
        contact without C{aor}, C{ruid} or C{c}, a field of the wrong
        type, a number out of Kamailio's range, text with NUL, a C{sock}
        that is not C{[proto:]host[:port]}, a contact larger than
        L{MAX_CONTACT_BODY}.  The entries of a batch are not refused one
        by one: the bad ones are L{BadEntry}s.
    """
    message = decodeObject(body)
    if not message:
        raise BadMessage()
    # Kamailio looks at the first key only.
    if next(iter(message)) == "multi":
        entries = message["multi"]
        if not isinstance(entries, dict):
            raise BadMessage("multi is not an object")
        return Batch(tuple(_decodeEntry(_cut(key) if key.isprintable() else _show(key), entry, socketInfo) for key, entry in entries.items()))
    return _decodeAction(message, socketInfo)


def _decodeEntry(key: str, entry: object, socketInfo: int) -> Union[Update, Remove, Nothing, BadEntry]:
    try:
        if not isinstance(entry, dict):
            raise BadMessage("not an object")
        message = _decodeAction(entry, socketInfo)
        if isinstance(message, SyncRequest):
            raise BadMessage("a sync request in a batch")
    except BadMessage as e:
        return BadEntry(key, e.detail or "")
    return message  # type: ignore[return-value]


def _decodeAction(fields: Dict[str, object], socketInfo: int) -> Message:
    action = fields.get("action")
    if action is None:
        raise BadMessage("no action")
    if not _isInt(action) or action not in tuple(Action):
        raise BadMessage(f"unknown action {_show(action)}")
    if action == Action.NONE:
        return Nothing()
    if action == Action.SYNC:
        return SyncRequest()
    values: Dict[str, object] = {}
    for key, name in _HEAD + _TEXTS:
        values[name] = _string(fields, key)
    for key, name in _NUMBERS:
        value = fields.get(key, 0)
        low = Q_UNSPECIFIED if key == "q" else 0
        if not _isInt(value) or not low <= value <= (1000 if key == "q" else UINT32_MAX):  # type: ignore[operator]
            raise BadMessage(f"bad {key} {_show(value)}")
        values[name] = value
    if socketInfo == SocketInfo.SOCKET and "sock" in fields:
        try:
            values["socket"] = parseSocket(_string(fields, "sock"))
        except ValueError as e:
            raise BadMessage(str(e)) from None
    elif socketInfo == SocketInfo.SOCKNAME and "sockname" in fields:
        values["socketName"] = _string(fields, "sockname")
    for key, name in (("aor", "aor"), ("ruid", "ruid")) + ((("c", "uri"),) if action == Action.UPDATE else ()):
        if not values[name]:
            raise BadMessage(f"no {key}")
    if action == Action.REMOVE:
        return Remove(values["aor"], values["ruid"])  # type: ignore[arg-type]
    try:
        contact = Contact(**values)  # type: ignore[arg-type]
    except ValueError as e:
        raise BadMessage(str(e)) from None
    if len(encodeContact(Action.UPDATE, contact, socketInfo)) > MAX_CONTACT_BODY:
        raise BadMessage("contact too large")
    return Update(contact)


def _string(fields: Dict[str, object], key: str) -> str:
    try:
        return checkText(fields.get(key, ""), key)
    except ValueError as e:
        raise BadMessage(str(e)) from None


def _dumps(obj: object) -> bytes:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def contactFields(action: int, contact: Contact, socketInfo: int = SocketInfo.NONE) -> Dict[str, object]:
    """
    The JSON object Kamailio 5.6 writes for C{contact}, its keys in
    Kamailio's order: C{sock} (or C{sockname}) only with that
    C{socketInfo} and when the contact has one.
    """
    fields: Dict[str, object] = {"action": int(action)}
    for key, name in _HEAD:
        fields[key] = getattr(contact, name)
    if socketInfo == SocketInfo.SOCKET and contact.socket:
        fields["sock"] = contact.socket
    elif socketInfo == SocketInfo.SOCKNAME and contact.socketName:
        fields["sockname"] = contact.socketName
    for key, name in _TEXTS + _NUMBERS:
        fields[key] = getattr(contact, name)
    return fields


def encodeContact(action: int, contact: Contact, socketInfo: int = SocketInfo.NONE) -> bytes:
    """
    The body of one contact's request (action 1, or 2 for a removal, which
    Kamailio also sends whole), as Kamailio writes it: no spaces, raw
    UTF-8, keys in its order.
    """
    return _dumps(contactFields(action, contact, socketInfo))


def encodeSyncRequest() -> bytes:
    """
    The body of a sync request, C{{"action":3}}.
    """
    return _dumps({"action": int(Action.SYNC)})


_MULTI_HEAD = b'{"multi":{'
_MULTI_TAIL = b"}}"


def encodeBatches(
    contacts: Iterable[Contact],
    maxContacts: int = 1,
    maxSize: int = MAX_BATCH_SIZE,
    socketInfo: int = SocketInfo.NONE,
) -> Iterator[bytes]:
    """
    The bodies of a sync dump of C{contacts}, in their order, made as they
    are needed: with C{maxContacts} 1, one action 1 body per contact, as
    Kamailio sends them; else C{{"multi":{"1":{...},"2":{...}}}} bodies
    (numbered from 1 in each) of at most C{maxContacts} contacts and
    C{maxSize} octets (a contact larger than that goes alone).  Nothing is
    sent for no contact.
    """
    if maxContacts <= 1:
        for contact in contacts:
            yield encodeContact(Action.UPDATE, contact, socketInfo)
        return
    batch: List[bytes] = []
    size = len(_MULTI_HEAD) + len(_MULTI_TAIL)
    for contact in contacts:
        entry = encodeContact(Action.UPDATE, contact, socketInfo)
        added = len(entry) + len(str(len(batch) + 1)) + 3 + (1 if batch else 0)
        if batch and size + added > maxSize:
            yield _multi(batch)
            batch = []
            size = len(_MULTI_HEAD) + len(_MULTI_TAIL)
            added = len(entry) + 4
        batch.append(entry)
        size += added
        if len(batch) >= maxContacts:
            yield _multi(batch)
            batch = []
            size = len(_MULTI_HEAD) + len(_MULTI_TAIL)
    if batch:
        yield _multi(batch)


def _multi(entries: List[bytes]) -> bytes:
    return (
        _MULTI_HEAD
        + b",".join(b'"%d":%s' % (number, entry) for number, entry in enumerate(entries, 1))
        + _MULTI_TAIL
    )
