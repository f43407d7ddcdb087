# -*- test-case-name: dmq.test.test_htable_store,dmq.test.test_htable -*-
"""
L{HTableStore}: the cells of declared tables on an injected clock, with
Kamailio's expiry, removal by match and slot order, and L{Change}
notifications.  It knows nothing of the bus, SIP or the wire.

See C{doc/design.md} (the htable peer) for the whole design.
"""

from __future__ import annotations

import re
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

__all__ = ["MATCHES", "Change", "NoSuchTable", "HTableStore"]

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
    """
    Compile a POSIX extended regular expression as Kamailio's C{REG_ICASE |
    REG_NEWLINE}, its character classes translated.
    """
    for posix, python in _POSIX_CLASSES.items():
        pattern = pattern.replace(posix, python)
    return re.compile(pattern, re.IGNORECASE | re.MULTILINE)


def _matcher(how: str, pattern: str) -> Callable[[str], bool]:
    """
    @return: the test of a name or value against C{pattern}, matched as
        C{how} says (one of L{MATCHES}).
    @raise ValueError: for a bad regular expression.
    """
    if how == "re":
        try:
            compiled = _compilePattern(pattern)
        except re.error as e:
            raise ValueError(f"bad regular expression {pattern!r}: {e}") from None
        return lambda text: compiled.search(text) is not None
    if how == "sw":
        return lambda text: text.startswith(pattern)
    if how == "ew":
        return lambda text: text.endswith(pattern)
    return lambda text: pattern in text


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
    change.
    """

    _log = Logger()

    def __init__(self, clock: IReactorTime, tables: Iterable[Union[TableSpec, str]]) -> None:
        """
        @param clock: the source of time.
        @param tables: the tables, as L{TableSpec}s or as Kamailio specs.

        @raise ValueError: for two tables of one name, or a bad spec.
        """
        self._clock = clock
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
        """
        t = self._table(table)
        checkKey(key)
        checkValue(value)
        cell = self._live(t, key)
        if expireAt is None or not t.spec.autoexpire:
            if cell is None or t.spec.updateexpire:
                expireAt = self._defaultExpiry(t)
            else:
                expireAt = cell.expireAt
        if cell is None:
            t.cells[key] = _Cell(value, expireAt, coreCaseHash(key))
            self._notify(Change(table, key, None, value, origin))
        else:
            old = cell.value
            cell.value = value
            cell.expireAt = expireAt
            self._notify(Change(table, key, old, value, origin))

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
        del t.cells[key]
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
            pattern or a bad regular expression.
        """
        t = self._table(table)
        if how not in MATCHES:
            raise ValueError(f"how must be one of {sorted(MATCHES)}, not {how!r}")
        if mode not in (MATCH_NAME, MATCH_VALUE) or isinstance(mode, bool):
            raise ValueError(f"mode must be {MATCH_NAME} (names) or {MATCH_VALUE} (values)")
        if not isinstance(pattern, str) or not pattern:
            raise ValueError("the pattern must be a non-empty str")
        checkText(pattern, "pattern")
        matches = _matcher(how, pattern)
        self._purgeTable(t)
        removed = []
        for key, cell in t.ordered():
            if mode == MATCH_NAME:
                text = key
            elif isinstance(cell.value, str):
                text = cell.value
            else:
                continue
            if matches(text):
                del t.cells[key]
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
        if cell is not None and self._expired(cell):
            del table.cells[key]
            self._notify(Change(table.spec.name, key, cell.value, None, "expired"))
            return None
        return cell

    def _purgeTable(self, table: _Table) -> None:
        if not table.spec.autoexpire:
            return
        for key, cell in list(table.cells.items()):
            if self._expired(cell) and table.cells.get(key) is cell:
                del table.cells[key]
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
