# -*- test-case-name: dmq.test.test_htable_wire,dmq.test.test_htable -*-
"""
The bodies of Kamailio's htable KDMQ requests: L{decode} turns one into a
typed message (L{SetCell}, L{SetExpire}, L{DeleteCell}, L{RemoveMatching},
L{SyncRequest}, L{Cells}) or refuses it with L{BadMessage}; L{encode} and
L{encodeCells} write them byte for byte as Kamailio does.  Every check of a
received body is here.

Pure, no I/O.  See C{doc/design.md} (the htable peer) for the whole design.
"""

from __future__ import annotations

import enum
import json
from typing import TYPE_CHECKING, Dict, Iterable, Iterator, List, Mapping, Optional, Sequence, Tuple, Union

import attr

from dmq.peers.htable.spec import INT32_MAX, INT32_MIN, MATCH_NAME, MATCH_VALUE, Value, checkText
from dmq.peers.jsonbody import BadMessage, decodeObject

if TYPE_CHECKING:
    from typing import TypeGuard  # Python 3.10; annotations only


__all__ = [
    "CONTENT_TYPE",
    "MAX_SYNC_BODY",
    "MAX_BODY",
    "TYPE_STR",
    "TYPE_INT",
    "Action",
    "BadMessage",
    "SetCell",
    "SetExpire",
    "DeleteCell",
    "RemoveMatching",
    "SyncRequest",
    "Cell",
    "BadCell",
    "Cells",
    "Message",
    "decode",
    "encode",
    "encodeCells",
    "iterCells",
]

CONTENT_TYPE = "application/json"

# Kamailio flushes a sync message once it reaches this size.
MAX_SYNC_BODY = 60000

MAX_BODY = 60000
"""
The largest body of a change we send or keep: one UDP datagram carries
65,507 octets, and the SIP headers of our requests take well under the
5,507 left.  A cell whose change fits also fits a sync body alone (its
entry there is a few octets longer).
"""

# Kamailio's AVP_VAL_STR: the "type" of a string cell on the wire.
TYPE_STR = 2
TYPE_INT = 0


class Action(enum.IntEnum):
    """
    The C{action} codes of Kamailio's C{ht_dmq.h}.
    """

    NONE = 0
    SYNC = 1
    SET_CELL = 2
    SET_CELL_EXPIRE = 3
    DEL_CELL = 4
    RM_CELL_RE = 5
    RM_CELL_SW = 6
    RM_CELL_EW = 7
    RM_CELL_IN = 8


# The removal actions, by the names of the store's match kinds (Kamailio's
# sht_rm_name() operators).
_REMOVALS = {
    "re": Action.RM_CELL_RE,
    "sw": Action.RM_CELL_SW,
    "ew": Action.RM_CELL_EW,
    "in": Action.RM_CELL_IN,
}
_HOW = {int(action): how for how, action in _REMOVALS.items()}

# The actions a message may carry (NONE is not one).
_ACTIONS = frozenset(int(action) for action in Action if action)

# As plain ints, which decode compares faster than the enum's members.
_SYNC = int(Action.SYNC)
_SET_CELL = int(Action.SET_CELL)
_SET_CELL_EXPIRE = int(Action.SET_CELL_EXPIRE)
_DEL_CELL = int(Action.DEL_CELL)
_CELL_ACTIONS = frozenset([_SET_CELL, _SET_CELL_EXPIRE, _DEL_CELL])


@attr.frozen
class SetCell:
    """
    Set a cell (action 2).
    """

    table: str
    key: str
    value: Value


@attr.frozen
class SetExpire:
    """
    Make a cell expire C{seconds} from now, never when 0 or less (action 3).
    """

    table: str
    key: str
    seconds: int


@attr.frozen
class DeleteCell:
    """
    Delete a cell (action 4).
    """

    table: str
    key: str


@attr.frozen
class RemoveMatching:
    """
    Remove the cells whose name or string value matches (actions 5 to 8).

    @ivar how: the match, as the store names it: C{"re"}, C{"sw"}, C{"ew"}
        or C{"in"}.
    @ivar pattern: what to match; possibly empty, which Kamailio answers
        C{500} rather than C{400}, as we do when it is applied.
    @ivar mode: L{MATCH_NAME} or L{MATCH_VALUE}.
    """

    table: str
    how: str
    pattern: str
    mode: int = MATCH_NAME


@attr.frozen
class SyncRequest:
    """
    Ask for the cells of every replicated table, or of C{table} (action 1).
    """

    table: Optional[str] = None


@attr.frozen
class Cell:
    """
    One cell of a sync dump.

    @ivar expire: when it expires, in absolute Unix seconds; 0 for never.
    """

    table: str
    key: str
    value: Value
    expire: int = 0


@attr.frozen
class BadCell:
    """
    An entry of a sync dump that is skipped.

    @ivar detail: what is wrong with it.
    """

    detail: str


@attr.frozen
class Cells:
    """
    A part of a sync dump (C{{"cells":[...]}}): its entries, in order.
    """

    cells: Tuple[Union[Cell, BadCell], ...] = ()


Message = Union[SetCell, SetExpire, DeleteCell, RemoveMatching, SyncRequest, Cells]


def _isInt(value: object) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool)




def decode(body: bytes) -> Message:
    """
    Read one htable request body, as Kamailio writes them (unknown keys are
    ignored, as Kamailio master does).

    @return: the message.
    @raise BadMessage: for an empty body, bad JSON (or not UTF-8), a root
        that is not a non-empty object, a missing or mistyped field, an
        unknown action, a C{mode} other than 0 or 1, a number beyond 32
        bits, text with NUL.  The entries of a sync dump are not refused:
        the bad ones are L{BadCell}s.
    """
    message = decodeObject(body)
    if not message:
        raise BadMessage()
    if next(iter(message)) == "cells":
        cells = message["cells"]
        if not isinstance(cells, list):
            raise BadMessage("cells is not an array")
        return Cells(tuple(_decodeCell(entry) for entry in cells))
    action = message.get("action")
    if action is None:
        raise BadMessage("no action")
    # JSON makes ints of exactly int's type: so no bool (and no float) passes.
    if type(action) is not int or action not in _ACTIONS:
        raise BadMessage(f"unknown action {action!r}")
    htname = message.get("htname")
    if action == _SYNC:
        if htname is not None and not isinstance(htname, str):
            raise BadMessage("htname is not a string")
        return SyncRequest(htname or None)
    if not isinstance(htname, str) or not htname:
        raise BadMessage("no htname")
    mode = message.get("mode", 0)
    if type(mode) is not int or mode not in (MATCH_NAME, MATCH_VALUE):
        raise BadMessage(f"bad mode {mode!r}")
    if action in _CELL_ACTIONS:
        cname = message.get("cname")
        if not isinstance(cname, str) or not cname:
            raise BadMessage("no cname")
        _checkText(cname, "cname")
        if action == _SET_CELL:
            return SetCell(htname, cname, _value(message, f"action {action}"))
        if action == _SET_CELL_EXPIRE:
            seconds = message.get("intval")
            if not _isInt(seconds) or not INT32_MIN <= seconds <= INT32_MAX:
                raise BadMessage("action 3 without a 32-bit intval")
            return SetExpire(htname, cname, seconds)
        return DeleteCell(htname, cname)
    pattern = message.get("strval")
    if pattern is None:
        raise BadMessage(f"action {action} without strval")
    if not isinstance(pattern, str):
        raise BadMessage("strval is not a string")
    _checkText(pattern, "strval")
    return RemoveMatching(htname, _HOW[action], pattern, mode)


def _decodeCell(entry: object) -> Union[Cell, BadCell]:
    try:
        if not isinstance(entry, dict):
            raise BadMessage("a cell is not an object")
        htname, cname = entry.get("htname"), entry.get("cname")
        if not isinstance(htname, str) or not htname:
            raise BadMessage("a cell without htname")
        if not isinstance(cname, str) or not cname:
            raise BadMessage("a cell without cname")
        _checkText(cname, "cname")
        value = _value(entry, "a cell")
        expire = entry.get("expire", 0)
        if not _isInt(expire):
            raise BadMessage("a cell with a bad expire")
        if not INT32_MIN <= expire <= INT32_MAX:
            raise BadMessage("a cell with an expire beyond 32 bits")
    except BadMessage as e:
        return BadCell(e.detail or "")
    return Cell(htname, cname, value, expire)


def _checkText(text: str, what: str) -> None:
    try:
        checkText(text, what)
    except ValueError as e:
        raise BadMessage(str(e)) from None


def _value(message: Mapping[str, object], what: str) -> Value:
    """
    The typed value of a set-cell message or a synced cell.
    """
    kind = message.get("type", TYPE_INT)
    if type(kind) is not int or not INT32_MIN <= kind <= INT32_MAX:
        raise BadMessage(f"{what} with a bad type")
    if kind & TYPE_STR:
        value = message.get("strval")
        if not isinstance(value, str):
            raise BadMessage(f"{what} of type 2 without strval")
        _checkText(value, "strval")
        return value
    value = message.get("intval")
    if type(value) is not int:
        raise BadMessage(f"{what} of type 0 without intval")
    if not INT32_MIN <= value <= INT32_MAX:
        raise BadMessage(f"{what} with an intval beyond 32 bits")
    return value


def _dumps(obj: object) -> bytes:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def _typed(fields: Dict[str, object], value: Value) -> Dict[str, object]:
    if isinstance(value, str):
        fields["type"] = TYPE_STR
        fields["strval"] = value
    else:
        fields["type"] = TYPE_INT
        fields["intval"] = value
    return fields


def encode(message: Message) -> bytes:
    """
    Write C{message} as Kamailio writes it: no spaces, raw UTF-8, its keys
    in Kamailio's order.  A L{Cells} is written whole, however large; a
    sync dump is sent as L{encodeCells} cuts it.
    """
    fields: Dict[str, object]
    if isinstance(message, SetCell):
        fields = {"action": int(Action.SET_CELL), "htname": message.table, "cname": message.key}
        _typed(fields, message.value)["mode"] = 1
    elif isinstance(message, SetExpire):
        fields = {
            "action": int(Action.SET_CELL_EXPIRE),
            "htname": message.table,
            "cname": message.key,
            "type": TYPE_INT,
            "intval": message.seconds,
            "mode": 0,
        }
    elif isinstance(message, DeleteCell):
        fields = {
            "action": int(Action.DEL_CELL),
            "htname": message.table,
            "cname": message.key,
            "mode": 0,
        }
    elif isinstance(message, RemoveMatching):
        fields = {
            "action": int(_REMOVALS[message.how]),
            "htname": message.table,
            "type": TYPE_STR,
            "strval": message.pattern,
            "mode": message.mode,
        }
    elif isinstance(message, SyncRequest):
        fields = {"action": int(Action.SYNC)}
        if message.table:
            fields["htname"] = message.table
    elif isinstance(message, Cells):
        return _cellsBody([_encodeCell(cell) for cell in message.cells])  # type: ignore[arg-type]
    else:
        raise TypeError(f"not an htable message: {message!r}")
    return _dumps(fields)


def _encodeCell(cell: Cell) -> bytes:
    if not isinstance(cell, Cell):
        raise TypeError(f"not a cell: {cell!r}")
    fields = _typed({"htname": cell.table, "cname": cell.key}, cell.value)
    fields["expire"] = cell.expire
    return _dumps(fields)


def encodeCells(cells: Iterable[Cell]) -> List[bytes]:
    """
    The bodies of a sync dump of C{cells}, in their order: C{{"cells":[...]}}
    bodies of at most L{MAX_SYNC_BODY} octets (a cell larger than that goes
    alone), and always one more body after a full one, so that the last may
    be C{{"cells":[]}}.
    """
    return list(iterCells(cells))


def iterCells(cells: Iterable[Cell]) -> Iterator[bytes]:
    """
    L{encodeCells}, one body at a time: each cell is encoded when the body
    that holds it is asked for.
    """
    return _chunk(_encodeCell(cell) for cell in cells)


def _cellsBody(encoded: Sequence[bytes]) -> bytes:
    return b'{"cells":[' + b",".join(encoded) + b"]}"


_EMPTY_CELLS = len(_cellsBody([]))


def _chunk(encoded: Iterable[bytes]) -> Iterator[bytes]:
    """
    Group encoded cells into C{cells} bodies of at most L{MAX_SYNC_BODY}
    octets.  Like Kamailio, flush as soon as a body is full, and always
    flush once more at the end.
    """
    current: List[bytes] = []
    size = _EMPTY_CELLS
    for cell in encoded:
        added = len(cell) + (1 if current else 0)
        if current and size + added > MAX_SYNC_BODY:
            yield _cellsBody(current)
            current, size = [], _EMPTY_CELLS
            added = len(cell)
        current.append(cell)
        size += added
        if size >= MAX_SYNC_BODY:
            yield _cellsBody(current)
            current, size = [], _EMPTY_CELLS
    yield _cellsBody(current)
