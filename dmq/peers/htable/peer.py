# -*- test-case-name: dmq.test.test_htable -*-
"""
L{HTablePeer}: replicated hash tables, and the bus peer that replicates them.

See C{doc/design.md} (the htable peer) for the whole design.
"""

from __future__ import annotations

import enum
import json
from typing import Callable, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple, Union

from twisted.application import service
from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from zope.interface import implementer

from dmq import sip
from dmq.interfaces import IDMQBus, IDMQPeer, PeerResponse
from dmq.node import Node, NodeStatus
from dmq.peers.htable.store import Change, HTableStore
from dmq.peers.htable.spec import (
    INT32_MAX,
    INT32_MIN,
    MATCH_NAME,
    MATCH_VALUE,
    TableSpec,
    Value,
    checkText,
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
_HOW = {action: how for how, action in _REMOVALS.items()}


class _BadMessage(Exception):
    """
    A message we answer C{400}; the argument is the detail for the reason.
    """


class _Failed(Exception):
    """
    A message we answer C{500}, as Kamailio does when a replay fails.
    """


def _dumps(obj: object) -> bytes:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def _isInt(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _rejectConstant(name: str) -> object:
    raise ValueError(f"{name} is not JSON")


# json.loads with any keyword builds a new decoder (and its scanner) per call.
_DECODER = json.JSONDecoder(parse_constant=_rejectConstant)


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
        self._store = HTableStore(clock, tables)
        self._purger: Optional[LoopingCall] = None
        self._upNodes: set = set()

    # Service

    def startService(self) -> None:
        service.Service.startService(self)
        if any(self._store.spec(name).autoexpire for name in self._store.tables()):
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
        return self._store.tables()

    def spec(self, table: str) -> TableSpec:
        """
        @return: the L{TableSpec} of C{table}.
        @raise NoSuchTable: when it is not declared.
        """
        return self._store.spec(table)

    def get(self, table: str, key: str) -> Optional[Value]:
        """
        @return: the value of cell C{key} of C{table}, or C{None}.
        @raise NoSuchTable: when C{table} is not declared.
        """
        return self._store.get(table, key)

    def expiresAt(self, table: str, key: str) -> Optional[float]:
        """
        @return: the clock time at which cell C{key} expires, or C{None}
            when it does not exist or never expires.
        @raise NoSuchTable: when C{table} is not declared.
        """
        return self._store.expiresAt(table, key)

    def items(self, table: str) -> List[Tuple[str, Value]]:
        """
        @return: the C{(key, value)} pairs of C{table}, in Kamailio's dump
            order, as a list made now.
        @raise NoSuchTable: when C{table} is not declared.
        """
        return self._store.items(table)

    # Changing

    def set(self, table: str, key: str, value: Value) -> Deferred:
        """
        Set cell C{key} of C{table} to C{value}, a str or a 32-bit int, and
        replicate it.

        @raise NoSuchTable: when C{table} is not declared.
        @raise TypeError: for a value that is neither int nor str.
        @raise ValueError: for an empty key or an int beyond 32 bits.
        """
        self._store.set(table, key, value, "local")
        return self._replicate(table, self._setBody(table, key, value))

    def setExpire(self, table: str, key: str, seconds: int) -> Deferred:
        """
        Make cell C{key} expire C{seconds} from now (never, when 0 or less),
        and replicate that.  Nothing happens to a cell that does not exist.

        @raise NoSuchTable: when C{table} is not declared.
        @raise ValueError: when C{table} has no C{autoexpire} (Kamailio
            ignores expiry there), or C{seconds} is beyond 32 bits.
        """
        self._store.setExpire(table, key, seconds)
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
        return self._replicate(table, body)

    def delete(self, table: str, key: str) -> Deferred:
        """
        Delete cell C{key} of C{table}, and replicate that (whether it
        existed here or not: it may exist elsewhere).

        @raise NoSuchTable: when C{table} is not declared.
        """
        self._store.delete(table, key, "local")
        body = _dumps({"action": int(Action.DEL_CELL), "htname": table, "cname": key, "mode": 0})
        return self._replicate(table, body)

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
        self._store.removeMatching(table, how, pattern, mode, "local")
        body = _dumps(
            {
                "action": int(_REMOVALS[how]),
                "htname": table,
                "type": TYPE_STR,
                "strval": pattern,
                "mode": mode,
            }
        )
        return self._replicate(table, body)

    def purgeExpired(self) -> None:
        """
        Drop every expired cell now (the purge timer calls this).
        """
        self._store.purgeExpired()

    def subscribe(self, callback: Callable[[Change], object]) -> Callable[[], None]:
        """
        Call C{callback} with a L{Change} after each change to any cell,
        whatever its origin.  Exceptions it raises are logged and ignored.

        @return: a function that cancels the subscription.
        """
        return self._store.subscribe(callback)

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
        for name in reversed(self._store.tables()):
            if not self._store.spec(name).dmqreplicate or (table and name != table):
                continue
            for key, value, expireAt in self._store.cells(name):
                entry: Dict[str, object] = {"htname": name, "cname": key}
                if isinstance(value, str):
                    entry["type"] = TYPE_STR
                    entry["strval"] = value
                else:
                    entry["type"] = TYPE_INT
                    entry["intval"] = value
                entry["expire"] = 0 if expireAt is None else int(expireAt)
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
            known = htname in self._store
            if action is Action.SET_CELL:
                value = _value(message, f"action {int(action)}")
                if not known:
                    raise _Failed(f"no table {htname!r}")
                self._store.set(htname, cname, value, "replicated")
            elif action is Action.SET_CELL_EXPIRE:
                seconds = message.get("intval")
                if (
                    not isinstance(seconds, int)
                    or isinstance(seconds, bool)
                    or not INT32_MIN <= seconds <= INT32_MAX
                ):
                    raise _BadMessage("action 3 without a 32-bit intval")
                if not known:
                    raise _Failed(f"no table {htname!r}")
                if self._store.spec(htname).autoexpire:
                    self._store.setExpire(htname, cname, seconds)
            else:
                if not known:
                    raise _Failed(f"no table {htname!r}")
                self._store.delete(htname, cname, "replicated")
            return PeerResponse(200, "OK")
        pattern = message.get("strval")
        if pattern is None:
            raise _BadMessage(f"action {int(action)} without strval")
        if not isinstance(pattern, str):
            raise _BadMessage("strval is not a string")
        _textField(pattern, "strval")
        if htname not in self._store:
            raise _Failed(f"no table {htname!r}")
        if not pattern:
            raise _Failed("empty pattern")
        try:
            self._store.removeMatching(htname, _HOW[action], pattern, mode, "replicated")
        except ValueError as e:
            raise _Failed(str(e)) from None
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
                if htname not in self._store:
                    raise _BadMessage(f"a cell of unknown table {htname!r}")
            except _BadMessage as e:
                skipped += 1
                self._log.warn("Skipped a synced htable cell: {detail}", detail=e.args[0])
                continue
            # expire is absolute; Kamailio gives the cell the table's
            # default expiry when it is 0 or past.
            expireAt = float(expire) if expire - now > 0 else None
            self._store.set(htname, cname, value, "sync", expireAt)
        self._log.info(
            "Applied {count} synced htable cells", count=len(cells) - skipped, skipped=skipped
        )

    # Internals

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

    def _replicate(self, table: str, body: bytes) -> Deferred:
        if not self._store.spec(table).dmqreplicate:
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
