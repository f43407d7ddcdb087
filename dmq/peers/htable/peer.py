# -*- test-case-name: dmq.test.test_htable -*-
"""
L{HTablePeer}: replicated hash tables, and the bus peer that replicates them.

See C{doc/design.md} (the htable peer) for the whole design.
"""

from __future__ import annotations

import enum
import json
import re
from typing import Callable, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple, Union

import attr
from twisted.application import service
from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from zope.interface import implementer

from dmq import sip
from dmq.interfaces import IDMQBus, IDMQPeer, PeerResponse
from dmq.node import Node, NodeStatus
from dmq.peers.htable.spec import (
    INT32_MAX,
    INT32_MIN,
    MATCH_NAME,
    MATCH_VALUE,
    TableSpec,
    Value,
    checkKey,
    checkText,
    checkValue,
    coreCaseHash,
    parseTableSpec,
)

PEER_ID = "htable"
CONTENT_TYPE = "application/json"

# Kamailio flushes a sync message once it reaches this size.
MAX_SYNC_BODY = 60000

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


# The removal actions, by the operator names of Kamailio's sht_rm_name().
_REMOVALS = {
    "re": Action.RM_CELL_RE,
    "sw": Action.RM_CELL_SW,
    "ew": Action.RM_CELL_EW,
    "in": Action.RM_CELL_IN,
}


# State


@attr.frozen
class Change:
    """
    One change to one cell, as told to L{HTablePeer.subscribe} callbacks.

    @ivar table: the table name.
    @ivar key: the cell name.
    @ivar old: the value before, or C{None} when the cell did not exist.
    @ivar new: the value after, or C{None} when the cell is gone.
    @ivar origin: C{"local"} (this program or an RPC), C{"replicated"} (a
        change received from the bus), C{"sync"} (a cell of a sync dump) or
        C{"expired"}.
    """

    table: str
    key: str
    old: Optional[Value]
    new: Optional[Value]
    origin: str


class NoSuchTable(LookupError):
    """
    No table of that name is declared.
    """


@attr.define
class _Cell:
    value: Value
    expireAt: Optional[float]
    hash: int


@attr.define
class _Table:
    spec: TableSpec
    cells: Dict[str, _Cell] = attr.Factory(dict)

    def ordered(self) -> List[Tuple[str, _Cell]]:
        """
        The cells in Kamailio's order: by slot, then by hash, then oldest
        first (Python's sort is stable and dicts keep insertion order).
        """
        mask = self.spec.slots - 1
        return sorted(self.cells.items(), key=lambda item: (item[1].hash & mask, item[1].hash))


class _BadMessage(Exception):
    """
    A message we answer C{400}; the argument is the detail for the reason.
    """


class _Failed(Exception):
    """
    A message we answer C{500}, as Kamailio does when a replay fails.
    """


_DEFAULT = object()

_POSIX_CLASSES = {
    "[:alnum:]": "a-zA-Z0-9",
    "[:alpha:]": "a-zA-Z",
    "[:blank:]": " \\t",
    "[:cntrl:]": "\\x00-\\x1f\\x7f",
    "[:digit:]": "0-9",
    "[:graph:]": "\\x21-\\x7e",
    "[:lower:]": "a-z",
    "[:print:]": "\\x20-\\x7e",
    "[:punct:]": "!-/:-@\\[-`{-~",
    "[:space:]": " \\t\\n\\r\\f\\v",
    "[:upper:]": "A-Z",
    "[:xdigit:]": "0-9A-Fa-f",
}


def _compilePattern(pattern: str) -> "re.Pattern[str]":
    for posix, python in _POSIX_CLASSES.items():
        pattern = pattern.replace(posix, python)
    return re.compile(pattern, re.IGNORECASE | re.MULTILINE)


def _dumps(obj: object) -> bytes:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def _isInt(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _rejectConstant(name: str) -> object:
    raise ValueError(f"{name} is not JSON")


# json.loads with any keyword builds a new decoder (and its scanner) per call.
_DECODER = json.JSONDecoder(parse_constant=_rejectConstant)


def _matches(how: Action, pattern: str, compiled: Optional["re.Pattern[str]"], text: str) -> bool:
    if how is Action.RM_CELL_RE:
        assert compiled is not None
        return compiled.search(text) is not None
    if how is Action.RM_CELL_SW:
        return text.startswith(pattern)
    if how is Action.RM_CELL_EW:
        return text.endswith(pattern)
    return pattern in text


@implementer(IDMQPeer)
class HTablePeer(service.Service):
    """
    Replicated hash tables, and the bus peer that replicates them.

    Register it on the bus and start it (it is a Service: its only timer is
    the periodic purge of expired cells, stopped by L{stopService})::

        peer = HTablePeer(reactor, node.bus, [parseTableSpec(
            "kdmq=>size=8;autoexpire=0;dmqreplicate=1")], initSync=True)
        node.bus.registerPeer(peer)
        peer.setServiceParent(node)

    Reading never touches the network.  Each change applies at once, and
    returns a L{Deferred} that fires, when the change was broadcast, with
    the L{IDMQBus.broadcast} result (each target node's final response);
    with C{{}} for a table without C{dmqreplicate}.  It never fails: sending
    is best effort, as in Kamailio.

    Expired cells are dropped when next read or changed, and by a purge
    every C{purgeInterval} seconds.  Expiry is per node and never sent.

    @ivar peerId: the channel name, C{"htable"} by default.
    @ivar initSync: whether to ask for the tables when joining the bus.
    """

    _log = Logger()

    description = "htable: replicated hash tables (Kamailio's htable DMQ)"

    def __init__(
        self,
        clock: IReactorTime,
        bus: IDMQBus,
        tables: Iterable[Union[TableSpec, str]],
        peerId: str = PEER_ID,
        initSync: bool = False,
        purgeInterval: float = 20.0,
    ) -> None:
        """
        @param clock: the source of time; cell expiry is in its seconds,
            taken as Unix time on the wire.
        @param bus: the bus to send on.
        @param tables: the tables, as L{TableSpec}s or as Kamailio specs.
        @param peerId: the channel name (Kamailio master's C{dmq_peer_id}).
        @param initSync: ask for the tables on joining (Kamailio's
            C{dmq_init_sync}).
        @param purgeInterval: seconds between purges of expired cells
            (Kamailio's C{timer_interval}, 20 by default).

        @raise ValueError: for two tables of one name, or a bad spec.
        """
        if purgeInterval <= 0:
            raise ValueError("purgeInterval must be positive")
        self._clock = clock
        self._bus = bus
        self.peerId = peerId
        self.initSync = initSync
        self._purgeInterval = purgeInterval
        self._tables: Dict[str, _Table] = {}
        for table in tables:
            spec = parseTableSpec(table) if isinstance(table, str) else table
            if spec.name in self._tables:
                raise ValueError(f"table {spec.name!r} is declared twice")
            self._tables[spec.name] = _Table(spec)
        self._subscribers: List[Callable[[Change], object]] = []
        self._purger: Optional[LoopingCall] = None
        self._upNodes: set = set()

    # Service

    def startService(self) -> None:
        service.Service.startService(self)
        if any(table.spec.autoexpire for table in self._tables.values()):
            self._purger = LoopingCall(self.purgeExpired)
            self._purger.clock = self._clock
            self._purger.start(self._purgeInterval, now=False).addErrback(
                lambda f: self._log.failure("htable purge failed", f)
            )

    def stopService(self) -> Deferred:
        """
        Stop the purge timer.

        @return: a L{Deferred} that has fired: nothing else is left running.
        """
        service.Service.stopService(self)
        self._upNodes.clear()
        if self._purger is not None:
            if self._purger.running:
                self._purger.stop()
            self._purger = None
        return succeed(None)

    # Reading

    def tables(self) -> List[str]:
        """
        @return: the table names, in the order they were declared.
        """
        return list(self._tables)

    def spec(self, table: str) -> TableSpec:
        """
        @return: the L{TableSpec} of C{table}.
        @raise NoSuchTable: when it is not declared.
        """
        return self._table(table).spec

    def get(self, table: str, key: str) -> Optional[Value]:
        """
        @return: the value of cell C{key} of C{table}, or C{None}.
        @raise NoSuchTable: when C{table} is not declared.
        """
        t = self._table(table)
        cell = self._live(t, key)
        return None if cell is None else cell.value

    def expiresAt(self, table: str, key: str) -> Optional[float]:
        """
        @return: the clock time at which cell C{key} expires, or C{None}
            when it does not exist or never expires.
        @raise NoSuchTable: when C{table} is not declared.
        """
        cell = self._live(self._table(table), key)
        return None if cell is None else cell.expireAt

    def items(self, table: str) -> List[Tuple[str, Value]]:
        """
        @return: the C{(key, value)} pairs of C{table}, in Kamailio's dump
            order, as a list made now.
        @raise NoSuchTable: when C{table} is not declared.
        """
        t = self._table(table)
        self._purgeTable(t)
        return [(key, cell.value) for key, cell in t.ordered()]

    # Changing

    def set(self, table: str, key: str, value: Value) -> Deferred:
        """
        Set cell C{key} of C{table} to C{value}, a str or a 32-bit int, and
        replicate it.

        @raise NoSuchTable: when C{table} is not declared.
        @raise TypeError: for a value that is neither int nor str.
        @raise ValueError: for an empty key or an int beyond 32 bits.
        """
        t = self._table(table)
        checkKey(key)
        checkValue(value)
        self._setCell(t, key, value, "local")
        return self._replicate(t, self._setBody(table, key, value))

    def setExpire(self, table: str, key: str, seconds: int) -> Deferred:
        """
        Make cell C{key} expire C{seconds} from now (never, when 0 or less),
        and replicate that.  Nothing happens to a cell that does not exist.

        @raise NoSuchTable: when C{table} is not declared.
        @raise ValueError: when C{table} has no C{autoexpire} (Kamailio
            ignores expiry there), or C{seconds} is beyond 32 bits.
        """
        t = self._table(table)
        checkKey(key)
        if not _isInt(seconds) or not INT32_MIN <= seconds <= INT32_MAX:
            raise ValueError(f"seconds must be a 32-bit integer, not {seconds!r}")
        if not t.spec.autoexpire:
            raise ValueError(
                f"table {table!r} has no autoexpire: Kamailio ignores expiry changes there"
            )
        self._setExpire(t, key, seconds)
        body = _dumps(
            {
                "action": int(Action.SET_CELL_EXPIRE),
                "htname": table,
                "cname": key,
                "type": TYPE_INT,
                "intval": seconds,
                "mode": 0,
            }
        )
        return self._replicate(t, body)

    def delete(self, table: str, key: str) -> Deferred:
        """
        Delete cell C{key} of C{table}, and replicate that (whether it
        existed here or not: it may exist elsewhere).

        @raise NoSuchTable: when C{table} is not declared.
        """
        t = self._table(table)
        checkKey(key)
        self._delete(t, key, "local")
        body = _dumps({"action": int(Action.DEL_CELL), "htname": table, "cname": key, "mode": 0})
        return self._replicate(t, body)

    def removeMatching(self, table: str, how: str, pattern: str, mode: int = MATCH_NAME) -> Deferred:
        """
        Remove the cells whose name (C{mode} L{MATCH_NAME}) or string value
        (L{MATCH_VALUE}) matches C{pattern}, and replicate that: Kamailio's
        C{sht_rm_name}/C{sht_rm_value}.

        @param how: C{"re"} (a POSIX extended regular expression, searched,
            case-insensitive), C{"sw"} (starts with), C{"ew"} (ends with) or
            C{"in"} (contains).  Kamailio receivers apply only C{"re"} and
            C{"sw"}.

        @raise NoSuchTable: when C{table} is not declared.
        @raise ValueError: for an unknown C{how} or C{mode}, an empty
            pattern or a bad regular expression.
        """
        t = self._table(table)
        action = _REMOVALS.get(how)  # type: ignore[call-overload]
        if action is None:
            raise ValueError(f"how must be one of {sorted(_REMOVALS)}, not {how!r}")
        if mode not in (MATCH_NAME, MATCH_VALUE) or isinstance(mode, bool):
            raise ValueError(f"mode must be {MATCH_NAME} (names) or {MATCH_VALUE} (values)")
        if not isinstance(pattern, str) or not pattern:
            raise ValueError("the pattern must be a non-empty str")
        checkText(pattern, "pattern")
        try:
            self._remove(t, action, pattern, mode, "local")
        except _Failed as e:
            raise ValueError(str(e)) from None
        body = _dumps(
            {
                "action": int(action),
                "htname": table,
                "type": TYPE_STR,
                "strval": pattern,
                "mode": mode,
            }
        )
        return self._replicate(t, body)

    def purgeExpired(self) -> None:
        """
        Drop every expired cell now (the purge timer calls this).
        """
        for t in list(self._tables.values()):
            self._purgeTable(t)

    def subscribe(self, callback: Callable[[Change], object]) -> Callable[[], None]:
        """
        Call C{callback} with a L{Change} after each change to any cell,
        whatever its origin.  Exceptions it raises are logged and ignored.

        @return: a function that cancels the subscription.
        """
        self._subscribers.append(callback)

        def unsubscribe() -> None:
            if callback in self._subscribers:
                self._subscribers.remove(callback)

        return unsubscribe

    # Sync

    def requestSync(self, node: Optional[Node] = None, table: Optional[str] = None) -> Deferred:
        """
        Ask C{node}, or every active node, for the cells of every replicated
        table (or of C{table}): Kamailio's C{htable.dmqsync}.  The cells
        arrive as their own requests, applied as they come.

        @return: a L{Deferred} that fires with the final response of
            C{node} (C{None} if it could not be sent), or with the broadcast
            result.
        """
        request: Dict[str, object] = {"action": int(Action.SYNC)}
        if table:
            request["htname"] = table
        body = _dumps(request)
        if node is None:
            d = self._bus.broadcast(self.peerId, body, contentType=CONTENT_TYPE)
        else:
            d = self._bus.send(self.peerId, body, node, contentType=CONTENT_TYPE)
        return self._logged(d, "sync request")

    def syncBodies(self, table: Optional[str] = None) -> List[bytes]:
        """
        The bodies of the C{cells} requests a sync dump sends now: every
        live cell of every replicated table (or of C{table}), in Kamailio's
        order, in bodies of at most L{MAX_SYNC_BODY} octets (one cell larger
        than that goes alone), and always one more body after a full one,
        so that the last may be C{{"cells":[]}}.
        """
        encoded: List[bytes] = []
        for t in reversed(list(self._tables.values())):
            if not t.spec.dmqreplicate or (table and t.spec.name != table):
                continue
            self._purgeTable(t)
            for key, cell in t.ordered():
                entry: Dict[str, object] = {"htname": t.spec.name, "cname": key}
                if isinstance(cell.value, str):
                    entry["type"] = TYPE_STR
                    entry["strval"] = cell.value
                else:
                    entry["type"] = TYPE_INT
                    entry["intval"] = cell.value
                entry["expire"] = 0 if cell.expireAt is None else int(cell.expireAt)
                encoded.append(_dumps(entry))
        return _chunk(encoded)

    def _sendSync(self, node: Optional[Node], table: Optional[str]) -> None:
        bodies = self.syncBodies(table)
        self._log.info(
            "Sending {cells} octets of htable cells in {count} messages to {node}",
            cells=sum(len(b) for b in bodies),
            count=len(bodies),
            node=node if node is not None else "every active node",
        )
        for body in bodies:
            if node is not None:
                d = self._bus.send(self.peerId, body, node, contentType=CONTENT_TYPE)
            else:
                d = self._bus.broadcast(self.peerId, body, contentType=CONTENT_TYPE)
            self._logged(d, "sync dump")

    # IDMQPeer

    def nodeAdded(self, node: Node) -> None:
        """
        With C{initSync}, ask C{node} for the tables when no other node we
        were told of is still active: we just joined, or rejoined after
        losing every node.
        """
        if not self.initSync:
            return
        # The bus tells us when a node becomes active, not when it stops
        # being so: forget the nodes that are no longer active now.
        active = {n for n in self._bus.nodes() if not n.local and n.status is NodeStatus.ACTIVE}
        self._upNodes.discard(node)
        self._upNodes &= active
        alone = not self._upNodes
        self._upNodes.add(node)
        if alone:
            self._log.info("Asking {node} for the htables", node=node)
            self.requestSync(node)

    def messageReceived(self, request, node: Optional[Node]) -> PeerResponse:
        """
        Apply a change, a sync dump, or answer a sync request; see the
        answers in C{doc/design-htable.md}.
        """
        sender = node if node is not None else sip.fromURI(request)
        try:
            return self._handle(request.body, node)
        except _BadMessage as e:
            detail = e.args[0] if e.args else None
            self._log.warn(
                "Bad htable message from {sender}: {detail}; answered 400",
                sender=sender,
                detail=detail or "not a JSON object",
                body=request.body[:200],
            )
            return PeerResponse(400, f"Bad Request ({detail})" if detail else "Bad Request")
        except _Failed as e:
            self._log.warn(
                "htable message from {sender} failed: {detail}; answered 500",
                sender=sender,
                detail=e.args[0],
            )
            return PeerResponse(500, "Server Internal Error")

    def _handle(self, body: bytes, node: Optional[Node]) -> PeerResponse:
        if not body:
            raise _BadMessage()
        try:
            message = _DECODER.decode(body.decode("utf-8"))
        except (ValueError, RecursionError):
            raise _BadMessage() from None
        if not isinstance(message, dict) or not message:
            raise _BadMessage()
        if next(iter(message)) == "cells":
            self._receiveCells(message["cells"])
            return PeerResponse(200, "OK")
        action = message.get("action")
        if action is None:
            raise _BadMessage("no action")
        if not _isInt(action) or action not in Action.__members__.values() or action == 0:
            raise _BadMessage(f"unknown action {action!r}")
        action = Action(action)
        htname = message.get("htname")
        if action is Action.SYNC:
            if htname is not None and not isinstance(htname, str):
                raise _BadMessage("htname is not a string")
            self._sendSync(node, htname or None)
            return PeerResponse(200, "OK")
        if not isinstance(htname, str) or not htname:
            raise _BadMessage("no htname")
        mode = message.get("mode", 0)
        if mode not in (MATCH_NAME, MATCH_VALUE) or not _isInt(mode):
            raise _BadMessage(f"bad mode {mode!r}")
        if action in (Action.SET_CELL, Action.SET_CELL_EXPIRE, Action.DEL_CELL):
            cname = message.get("cname")
            if not isinstance(cname, str) or not cname:
                raise _BadMessage("no cname")
            _textField(cname, "cname")
            table = self._tables.get(htname)
            if action is Action.SET_CELL:
                value = _value(message, f"action {int(action)}")
                if table is None:
                    raise _Failed(f"no table {htname!r}")
                self._setCell(table, cname, value, "replicated")
            elif action is Action.SET_CELL_EXPIRE:
                seconds = message.get("intval")
                if (
                    not isinstance(seconds, int)
                    or isinstance(seconds, bool)
                    or not INT32_MIN <= seconds <= INT32_MAX
                ):
                    raise _BadMessage("action 3 without a 32-bit intval")
                if table is None:
                    raise _Failed(f"no table {htname!r}")
                if table.spec.autoexpire:
                    self._setExpire(table, cname, seconds)
            else:
                if table is None:
                    raise _Failed(f"no table {htname!r}")
                self._delete(table, cname, "replicated")
            return PeerResponse(200, "OK")
        pattern = message.get("strval")
        if pattern is None:
            raise _BadMessage(f"action {int(action)} without strval")
        if not isinstance(pattern, str):
            raise _BadMessage("strval is not a string")
        _textField(pattern, "strval")
        table = self._tables.get(htname)
        if table is None:
            raise _Failed(f"no table {htname!r}")
        if not pattern:
            raise _Failed("empty pattern")
        self._remove(table, action, pattern, mode, "replicated")
        return PeerResponse(200, "OK")

    def _receiveCells(self, cells: object) -> None:
        if not isinstance(cells, list):
            raise _BadMessage("cells is not an array")
        now = int(self._clock.seconds())
        skipped = 0
        for entry in cells:
            try:
                if not isinstance(entry, dict):
                    raise _BadMessage("a cell is not an object")
                htname, cname = entry.get("htname"), entry.get("cname")
                if not isinstance(htname, str) or not htname:
                    raise _BadMessage("a cell without htname")
                if not isinstance(cname, str) or not cname:
                    raise _BadMessage("a cell without cname")
                _textField(cname, "cname")
                value = _value(entry, "a cell")
                expire = entry.get("expire", 0)
                if not _isInt(expire):
                    raise _BadMessage("a cell with a bad expire")
                if not INT32_MIN <= expire <= INT32_MAX:
                    raise _BadMessage("a cell with an expire beyond 32 bits")
                table = self._tables.get(htname)
                if table is None:
                    raise _BadMessage(f"a cell of unknown table {htname!r}")
            except _BadMessage as e:
                skipped += 1
                self._log.warn("Skipped a synced htable cell: {detail}", detail=e.args[0])
                continue
            expireAt: object = _DEFAULT
            if table.spec.autoexpire and expire - now > 0:
                expireAt = float(expire)
            self._setCell(table, cname, value, "sync", expireAt)
        self._log.info(
            "Applied {count} synced htable cells", count=len(cells) - skipped, skipped=skipped
        )

    # Internals

    def _table(self, name: str) -> _Table:
        table = self._tables.get(name)
        if table is None:
            raise NoSuchTable(f"no such htable: {name!r}")
        return table

    def _expired(self, table: _Table, cell: _Cell) -> bool:
        return cell.expireAt is not None and cell.expireAt <= self._clock.seconds()

    def _live(self, table: _Table, key: str) -> Optional[_Cell]:
        cell = table.cells.get(key)
        if cell is not None and self._expired(table, cell):
            del table.cells[key]
            self._notify(Change(table.spec.name, key, cell.value, None, "expired"))
            return None
        return cell

    def _purgeTable(self, table: _Table) -> None:
        if not table.spec.autoexpire:
            return
        for key, cell in list(table.cells.items()):
            if self._expired(table, cell) and table.cells.get(key) is cell:
                del table.cells[key]
                self._notify(Change(table.spec.name, key, cell.value, None, "expired"))

    def _defaultExpiry(self, table: _Table) -> Optional[float]:
        if not table.spec.autoexpire:
            return None
        return self._clock.seconds() + table.spec.autoexpire

    def _setCell(
        self, table: _Table, key: str, value: Value, origin: str, expireAt: object = _DEFAULT
    ) -> None:
        cell = self._live(table, key)
        if expireAt is _DEFAULT or not table.spec.autoexpire:
            if cell is None or table.spec.updateexpire:
                expireAt = self._defaultExpiry(table)
            else:
                expireAt = cell.expireAt
        old = None if cell is None else cell.value
        if cell is None:
            table.cells[key] = _Cell(value, expireAt, coreCaseHash(key))  # type: ignore[arg-type]
        else:
            cell.value = value
            cell.expireAt = expireAt  # type: ignore[assignment]
        self._notify(Change(table.spec.name, key, old, value, origin))

    def _setExpire(self, table: _Table, key: str, seconds: int) -> None:
        cell = self._live(table, key)
        if cell is not None:
            cell.expireAt = self._clock.seconds() + seconds if seconds > 0 else None

    def _delete(self, table: _Table, key: str, origin: str) -> bool:
        cell = self._live(table, key)
        if cell is None:
            return False
        del table.cells[key]
        self._notify(Change(table.spec.name, key, cell.value, None, origin))
        return True

    def _remove(self, table: _Table, action: Action, pattern: str, mode: int, origin: str) -> None:
        compiled = None
        if action is Action.RM_CELL_RE:
            try:
                compiled = _compilePattern(pattern)
            except re.error as e:
                raise _Failed(f"bad regular expression {pattern!r}: {e}") from None
        self._purgeTable(table)
        for key, cell in table.ordered():
            if mode == MATCH_NAME:
                text = key
            elif isinstance(cell.value, str):
                text = cell.value
            else:
                continue
            if _matches(action, pattern, compiled, text):
                del table.cells[key]
                self._notify(Change(table.spec.name, key, cell.value, None, origin))

    def _setBody(self, table: str, key: str, value: Value) -> bytes:
        message: Dict[str, object] = {"action": int(Action.SET_CELL), "htname": table, "cname": key}
        if isinstance(value, str):
            message["type"] = TYPE_STR
            message["strval"] = value
        else:
            message["type"] = TYPE_INT
            message["intval"] = value
        message["mode"] = 1
        return _dumps(message)

    def _replicate(self, table: _Table, body: bytes) -> Deferred:
        if not table.spec.dmqreplicate:
            return succeed({})
        d = self._bus.broadcast(self.peerId, body, contentType=CONTENT_TYPE)
        return self._logged(d, "replication")

    def _logged(self, d: Deferred, what: str) -> Deferred:
        def failed(failure):
            # The bus fails a send only when it cannot send at all (stopped,
            # full): not a bug, and Kamailio does not retry either.
            self._log.warn(
                "htable {what} could not be sent: {error}",
                what=what,
                error=failure.getErrorMessage(),
            )

        return d.addErrback(failed)

    def _notify(self, change: Change) -> None:
        for callback in list(self._subscribers):
            try:
                callback(change)
            except Exception:
                self._log.failure(
                    "htable subscriber {callback!r} failed on {change!r}",
                    callback=callback,
                    change=change,
                )


def _textField(text: str, what: str) -> None:
    try:
        checkText(text, what)
    except ValueError as e:
        raise _BadMessage(str(e)) from None


def _value(message: Mapping[str, object], what: str) -> Value:
    """
    The typed value of a set-cell message or a synced cell.
    """
    kind = message.get("type", TYPE_INT)
    if not _isInt(kind) or not INT32_MIN <= kind <= INT32_MAX:  # type: ignore[operator]
        raise _BadMessage(f"{what} with a bad type")
    if kind & TYPE_STR:  # type: ignore[operator]
        value = message.get("strval")
        if not isinstance(value, str):
            raise _BadMessage(f"{what} of type 2 without strval")
        _textField(value, "strval")
        return value
    value = message.get("intval")
    if not _isInt(value):
        raise _BadMessage(f"{what} of type 0 without intval")
    if not INT32_MIN <= value <= INT32_MAX:  # type: ignore[operator]
        raise _BadMessage(f"{what} with an intval beyond 32 bits")
    return value  # type: ignore[return-value]


_EMPTY_CELLS = len(b'{"cells":[]}')


def _chunk(encoded: Sequence[bytes]) -> List[bytes]:
    """
    Group encoded cells into C{cells} bodies of at most L{MAX_SYNC_BODY}
    octets.  Like Kamailio, flush as soon as a body is full, and always
    flush once more at the end.
    """
    bodies = []
    current: List[bytes] = []
    size = _EMPTY_CELLS

    def flush() -> None:
        nonlocal current, size
        bodies.append(b'{"cells":[' + b",".join(current) + b"]}")
        current = []
        size = _EMPTY_CELLS

    for cell in encoded:
        added = len(cell) + (1 if current else 0)
        if current and size + added > MAX_SYNC_BODY:
            flush()
            added = len(cell)
        current.append(cell)
        size += added
        if size >= MAX_SYNC_BODY:
            flush()
    flush()
    return bodies
