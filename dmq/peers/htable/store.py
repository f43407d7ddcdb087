# -*- test-case-name: dmq.test.test_htable_store,dmq.test.test_htable -*-
"""
L{HTableStore}: the cells of declared tables on an injected clock, with
Kamailio's expiry, removal by match and slot order, and L{Change}
notifications.  It knows nothing of the bus, SIP or the wire.

See C{doc/design.md} (the htable peer) for the whole design.
"""

from __future__ import annotations

from typing import Callable, Dict, Iterable, List, Optional, Tuple, Union

import attr
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

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
from dmq.peers.htable.pattern import MAX_REMOVAL_WORK, TooCostly, compilePattern

__all__ = ["MATCHES", "MAX_CELLS", "MAX_BYTES", "Change", "NoSuchTable", "TableFull", "HTableStore"]

MAX_CELLS = 100_000
"""
The default cap on the cells of one table.  Kamailio has none (its tables
grow until its shared memory is used up); ours are Python objects of a few
hundred bytes each besides their key and value.
"""

MAX_BYTES = 64 * 1024 * 1024
"""
The default cap on the octets of one table's keys and values, UTF-8 (an
integer counts 4).
"""

# How a removal matches, by the operator names of Kamailio's sht_rm_name():
# a regular expression (searched), starts with, ends with, contains.
MATCHES = ("re", "sw", "ew", "in")


@attr.frozen
class Change:
    """
    One change to one cell, as told to L{HTableStore.subscribe} callbacks.

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


class TableFull(Exception):
    """
    A change that would take a table past its cap on cells or on octets:
    it is refused, and the table is left as it was.  The message says which.
    """


def cellSize(key: str, value: Value) -> int:
    """
    The octets a cell counts against its table's cap: its key's and its
    string value's UTF-8, 4 for an integer value.
    """
    # ASCII text (nearly all) has as many octets as characters.
    size = len(key) if key.isascii() else len(key.encode("utf-8"))
    if isinstance(value, str):
        return size + (len(value) if value.isascii() else len(value.encode("utf-8")))
    return size + 4


@attr.define
class _Cell:
    value: Value
    expireAt: Optional[float]
    hash: int
    size: int


@attr.define
class _Table:
    spec: TableSpec
    cells: Dict[str, _Cell] = attr.Factory(dict)
    # The octets of the cells (cellSize).
    size: int = 0

    def put(self, key: str, cell: _Cell) -> None:
        old = self.cells.get(key)
        if old is not None:
            self.size -= old.size
        self.cells[key] = cell
        self.size += cell.size

    def drop(self, key: str) -> _Cell:
        cell = self.cells.pop(key)
        self.size -= cell.size
        return cell

    def ordered(self) -> List[Tuple[str, _Cell]]:
        """
        The cells in Kamailio's order: by slot, then by hash, then oldest
        first (Python's sort is stable and dicts keep insertion order).
        """
        mask = self.spec.slots - 1
        return sorted(self.cells.items(), key=lambda item: (item[1].hash & mask, item[1].hash))


def _matcher(how: str, pattern: str) -> Tuple[Callable[[str], bool], Optional[Callable[[str], int]]]:
    """
    @return: the test of a name or value against C{pattern}, matched as
        C{how} says (one of L{MATCHES}), and for a regular expression the
        cost of that test (L{Pattern.cost<dmq.peers.htable.pattern.Pattern.cost>}).
    @raise ValueError: for a regular expression that is refused
        (L{BadPattern<dmq.peers.htable.pattern.BadPattern>}).
    """
    if how == "re":
        compiled = compilePattern(pattern)
        return compiled.search, compiled.cost
    if how == "sw":
        return (lambda text: text.startswith(pattern)), None
    if how == "ew":
        return (lambda text: text.endswith(pattern)), None
    return (lambda text: pattern in text), None


class HTableStore:
    """
    The cells of the declared tables, with Kamailio's semantics.

    Expiry is in the seconds of the clock: a table with C{autoexpire} gives
    each cell set that many seconds (restarted when set again, unless the
    table says C{updateexpire=0}).  Expired cells are dropped when next
    read or changed, and by L{purgeExpired}, which nothing here calls: the
    owner runs it on a timer.  Each change, expiry included, is told to the
    subscribers (L{subscribe}) as a L{Change}, labelled with the origin the
    caller gives.

    Keys and values are checked (L{checkKey}, L{checkValue}) on every
    change, and each table is capped: at most C{maxCells} cells and
    C{maxBytes} octets of keys and values (L{cellSize}); a change past
    either is refused with L{TableFull}.
    """

    _log = Logger()

    def __init__(
        self,
        clock: IReactorTime,
        tables: Iterable[Union[TableSpec, str]],
        maxCells: int = MAX_CELLS,
        maxBytes: int = MAX_BYTES,
        maxRemovalWork: int = MAX_REMOVAL_WORK,
    ) -> None:
        """
        @param clock: the source of time.
        @param tables: the tables, as L{TableSpec}s or as Kamailio specs.
        @param maxCells: the most cells one table holds.
        @param maxBytes: the most octets of keys and values one table holds.
        @param maxRemovalWork: the most work one removal by regular
            expression may do (see L{dmq.peers.htable.pattern}).

        @raise ValueError: for two tables of one name, or a bad spec.
        """
        if maxCells < 1 or maxBytes < 1:
            raise ValueError("maxCells and maxBytes must be positive")
        self._clock = clock
        self.maxCells = maxCells
        self.maxBytes = maxBytes
        self._maxRemovalWork = maxRemovalWork
        self._tables: Dict[str, _Table] = {}
        for table in tables:
            spec = parseTableSpec(table) if isinstance(table, str) else table
            if spec.name in self._tables:
                raise ValueError(f"table {spec.name!r} is declared twice")
            self._tables[spec.name] = _Table(spec)
        self._subscribers: List[Callable[[Change], object]] = []

    # Reading

    def tables(self) -> List[str]:
        """
        @return: the table names, in the order they were declared.
        """
        return list(self._tables)

    def __contains__(self, table: object) -> bool:
        """
        @return: whether a table of that name is declared.
        """
        return table in self._tables

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
        cell = self._live(self._table(table), key)
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
        return [(key, value) for key, value, expireAt in self.cells(table)]

    def size(self, table: str) -> Tuple[int, int]:
        """
        @return: the cells of C{table} and their octets (L{cellSize}),
            expired ones not yet dropped included.
        @raise NoSuchTable: when C{table} is not declared.
        """
        t = self._table(table)
        return len(t.cells), t.size

    def cells(self, table: str) -> List[Tuple[str, Value, Optional[float]]]:
        """
        @return: the C{(key, value, expireAt)} of each live cell of
            C{table}, in Kamailio's dump order (by hash slot), as a list made
            now; C{expireAt} as L{expiresAt} gives it.
        @raise NoSuchTable: when C{table} is not declared.
        """
        t = self._table(table)
        self._purgeTable(t)
        return [(key, cell.value, cell.expireAt) for key, cell in t.ordered()]

    # Changing

    def set(
        self,
        table: str,
        key: str,
        value: Value,
        origin: str = "local",
        expireAt: Optional[float] = None,
    ) -> None:
        """
        Set cell C{key} of C{table} to C{value}, a str or a 32-bit int.

        @param expireAt: when the cell expires, in clock time, if the table
            has C{autoexpire} (a cell of a sync dump keeps its expiry);
            C{None} for the table's rule.
        @raise NoSuchTable: when C{table} is not declared.
        @raise TypeError: for a key that is not a str, a value that is
            neither int nor str.
        @raise ValueError: for an empty key or an int beyond 32 bits.
        @raise TableFull: when the cell would take the table past its cap
            on cells or octets.
        """
        t = self._table(table)
        checkKey(key)
        checkValue(value)
        cell = self._live(t, key)
        size = cellSize(key, value)
        self._checkRoom(t, cell, size)
        spec = t.spec
        if expireAt is None or not spec.autoexpire:
            if cell is None or spec.updateexpire:
                expireAt = self._defaultExpiry(t)
            else:
                expireAt = cell.expireAt
        # A cell's key is its hash's: an old cell's saves computing it.
        t.put(key, _Cell(value, expireAt, coreCaseHash(key) if cell is None else cell.hash, size))
        self._notify(Change(table, key, None if cell is None else cell.value, value, origin))

    def checkRoom(self, table: str, key: str, value: Value) -> None:
        """
        Check that L{set} would not take C{table} past its caps.

        @raise NoSuchTable: when C{table} is not declared.
        @raise TableFull: when it would.
        """
        t = self._table(table)
        self._checkRoom(t, self._live(t, key), cellSize(key, value))

    def _checkRoom(self, t: _Table, cell: Optional[_Cell], size: int) -> None:
        for attempt in (0, 1):
            cells = len(t.cells) + (cell is None)
            octets = t.size - (0 if cell is None else cell.size) + size
            if cells <= self.maxCells and octets <= self.maxBytes:
                return
            if attempt == 0 and t.spec.autoexpire:
                # Expired cells may make room.
                self._purgeTable(t)
        if cells > self.maxCells:
            raise TableFull(f"table {t.spec.name!r} is full: {self.maxCells} cells, the most allowed")
        raise TableFull(
            f"table {t.spec.name!r} is full: {octets} octets of keys and values "
            f"would pass the {self.maxBytes} allowed"
        )

    def setExpire(self, table: str, key: str, seconds: int) -> None:
        """
        Make cell C{key} expire C{seconds} from now (never, when 0 or less).
        Nothing happens to a cell that does not exist.

        @raise NoSuchTable: when C{table} is not declared.
        @raise ValueError: when C{table} has no C{autoexpire} (Kamailio
            ignores expiry there), or C{seconds} is beyond 32 bits.
        """
        t = self._table(table)
        checkKey(key)
        if (
            not isinstance(seconds, int)
            or isinstance(seconds, bool)
            or not INT32_MIN <= seconds <= INT32_MAX
        ):
            raise ValueError(f"seconds must be a 32-bit integer, not {seconds!r}")
        if not t.spec.autoexpire:
            raise ValueError(
                f"table {table!r} has no autoexpire: Kamailio ignores expiry changes there"
            )
        cell = self._live(t, key)
        if cell is not None:
            cell.expireAt = self._clock.seconds() + seconds if seconds > 0 else None

    def delete(self, table: str, key: str, origin: str = "local") -> bool:
        """
        Delete cell C{key} of C{table}.

        @return: whether it existed.
        @raise NoSuchTable: when C{table} is not declared.
        """
        t = self._table(table)
        checkKey(key)
        cell = self._live(t, key)
        if cell is None:
            return False
        t.drop(key)
        self._notify(Change(table, key, cell.value, None, origin))
        return True

    def removeMatching(
        self, table: str, how: str, pattern: str, mode: int = MATCH_NAME, origin: str = "local"
    ) -> List[str]:
        """
        Remove the cells whose name (C{mode} L{MATCH_NAME}) or string value
        (L{MATCH_VALUE}) matches C{pattern}: Kamailio's
        C{sht_rm_name}/C{sht_rm_value}.  Integer values never match.

        @param how: one of L{MATCHES}: C{"re"} (a POSIX extended regular
            expression, searched, case-insensitive, C{^}/C{$} at line ends),
            C{"sw"} (starts with), C{"ew"} (ends with) or C{"in"}
            (contains); the last three are case-sensitive.

        @return: the names of the cells removed, in slot order.
        @raise NoSuchTable: when C{table} is not declared.
        @raise ValueError: for an unknown C{how} or C{mode}, an empty
            pattern or a regular expression that is refused
            (L{BadPattern<dmq.peers.htable.pattern.BadPattern>}), or
            L{TooCostly<dmq.peers.htable.pattern.TooCostly>} when its
            searches would do too much work: nothing is removed then.
        """
        t = self._table(table)
        if how not in MATCHES:
            raise ValueError(f"how must be one of {sorted(MATCHES)}, not {how!r}")
        if mode not in (MATCH_NAME, MATCH_VALUE) or isinstance(mode, bool):
            raise ValueError(f"mode must be {MATCH_NAME} (names) or {MATCH_VALUE} (values)")
        if not isinstance(pattern, str) or not pattern:
            raise ValueError("the pattern must be a non-empty str")
        checkText(pattern, "pattern")
        matches, cost = _matcher(how, pattern)
        self._purgeTable(t)
        texts = []
        work = 0
        for key, cell in t.ordered():
            if mode == MATCH_NAME:
                text = key
            elif isinstance(cell.value, str):
                text = cell.value
            else:
                continue
            if cost is not None:
                work += cost(text)
                if work > self._maxRemovalWork:
                    raise TooCostly(
                        f"searching {pattern!r} through table {table!r} would take too long "
                        f"(more than {self._maxRemovalWork} steps): nothing removed"
                    )
            texts.append((key, cell, text))
        removed = []
        for key, cell, text in texts:
            if matches(text) and t.cells.get(key) is cell:
                t.drop(key)
                removed.append(key)
                self._notify(Change(table, key, cell.value, None, origin))
        return removed

    def purgeExpired(self) -> None:
        """
        Drop every expired cell now.
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

    # Internals

    def _table(self, name: str) -> _Table:
        table = self._tables.get(name)
        if table is None:
            raise NoSuchTable(f"no such htable: {name!r}")
        return table

    def _expired(self, cell: _Cell) -> bool:
        return cell.expireAt is not None and cell.expireAt <= self._clock.seconds()

    def _live(self, table: _Table, key: str) -> Optional[_Cell]:
        cell = table.cells.get(key)
        if cell is not None and cell.expireAt is not None and cell.expireAt <= self._clock.seconds():
            table.drop(key)
            self._notify(Change(table.spec.name, key, cell.value, None, "expired"))
            return None
        return cell

    def _purgeTable(self, table: _Table) -> None:
        if not table.spec.autoexpire:
            return
        for key, cell in list(table.cells.items()):
            if self._expired(cell) and table.cells.get(key) is cell:
                table.drop(key)
                self._notify(Change(table.spec.name, key, cell.value, None, "expired"))

    def _defaultExpiry(self, table: _Table) -> Optional[float]:
        if not table.spec.autoexpire:
            return None
        return self._clock.seconds() + table.spec.autoexpire

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
