# -*- test-case-name: dmq.test.test_htable -*-
"""
Kamailio's C{htable.*} RPC commands (C{htable.get}, C{htable.sets}, ...)
over an L{HTablePeer}, for the control endpoint.

See C{doc/design.md} (the htable peer) for the whole design.
"""

from __future__ import annotations

import re
import time
from typing import Callable, Dict, List, Optional, Sequence

from dmq.interfaces import RPCError
from dmq.peers.htable.outbox import ReplicationRefused
from dmq.peers.htable.peer import HTablePeer
from dmq.peers.htable.spec import INT32_MAX, INT32_MIN, Value, coreCaseHash
from dmq.peers.htable.store import TableFull
from dmq.peers.htable.wire import TYPE_INT, TYPE_STR

__all__ = ["HTableRPC", "RPCError"]

# What htable.seti takes as an integer given as text.
_DECIMAL = re.compile(r"[+-]?[0-9]+\Z")


def _rpcText(value: object) -> Optional[str]:
    if isinstance(value, str):
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return None


def _refused(error: ReplicationRefused) -> RPCError:
    """
    The fault for a change refused because it could not be replicated: 413
    when it is too large, 503 when too many wait (try again later).
    """
    code = 413 if "datagram" in str(error) else 503
    return RPCError(code, f"Refused, nothing changed: {error}")


class HTableRPC:
    """
    Kamailio's htable RPC commands, with its names, parameters, results and
    faults, over an L{HTablePeer}.  Each method takes the positional
    parameters of the call and returns a JSON-able result or raises
    L{RPCError}; L{methods} maps the RPC names to them.
    """

    def __init__(self, peer: HTablePeer) -> None:
        self._peer = peer

    def methods(self) -> Dict[str, Callable[..., object]]:
        """
        @return: C{{"htable.get": self.get, ...}}, to register on an RPC
            server.
        """
        return {
            "htable.get": self.get,
            "htable.sets": self.sets,
            "htable.seti": self.seti,
            "htable.delete": self.delete,
            "htable.dump": self.dump,
            "htable.listTables": self.listTables,
        }

    def _names(self, params: Sequence[object], count: int, fault: str) -> List[str]:
        texts = [_rpcText(p) for p in params[:count]]
        if len(texts) < count or any(t is None for t in texts):
            raise RPCError(500, fault)
        return texts  # type: ignore[return-value]

    def _table(self, name: str) -> str:
        if name not in self._peer.tables():
            raise RPCError(500, "No such htable")
        return name

    def get(self, *params: object) -> Dict[str, Dict[str, object]]:
        """
        C{htable.get table key}: C{{"item": {"name", "value", "flags",
        "expire"}}}; C{flags} is 2 for a string, 0 for an integer, C{expire}
        C{"NEVER"} or a local time C{"YYYY-MM-DD hh:mm:ss"}.
        """
        table, key = self._names(params, 2, "Not enough parameters (htable name and key name)")
        self._table(table)
        value = self._peer.get(table, key)
        if value is None:
            raise RPCError(500, "Key name doesn't exist in htable.")
        expireAt = self._peer.expiresAt(table, key)
        expire = "NEVER"
        if expireAt is not None:
            expire = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(int(expireAt)))
        return {
            "item": {
                "name": key,
                "value": value,
                "flags": TYPE_STR if isinstance(value, str) else TYPE_INT,
                "expire": expire,
            }
        }

    def sets(self, *params: object) -> str:
        """
        C{htable.sets table key value}: set a string, and replicate it.
        """
        table, key, value = self._names(
            params, 3, "Not enough parameters (htable name, key name and value)"
        )
        return self._set(table, key, value)

    def seti(self, *params: object) -> str:
        """
        C{htable.seti table key value}: set a 32-bit integer (given as a
        number or as decimal text), and replicate it.
        """
        table, key, text = self._names(
            params, 3, "Not enough parameters (htable name, key name and value)"
        )
        if not _DECIMAL.match(text) or not INT32_MIN <= int(text) <= INT32_MAX:
            raise RPCError(400, f"Invalid integer value: {text}")
        return self._set(table, key, int(text))

    def _set(self, table: str, key: str, value: Value) -> str:
        self._table(table)
        try:
            self._peer.set(table, key, value)
        except (TypeError, ValueError, TableFull) as e:
            raise RPCError(500, f"Failed to set the item: {e}") from None
        except ReplicationRefused as e:
            raise _refused(e) from None
        return self._replicated("Ok. Key set to new value.")

    def _replicated(self, answer: str) -> str:
        """
        Kamailio's C{answer} when the change was sent at once (or needs no
        sending), and says so when it waits for room to be sent.
        """
        pending = self._peer.replicationPending
        if pending:
            return f"{answer[:-1]}; its replication is queued ({pending} waiting)."
        return answer

    def delete(self, *params: object) -> str:
        """
        C{htable.delete table key}: delete a cell, and replicate that.
        """
        table, key = self._names(params, 2, "Not enough parameters (htable name & key name")
        self._table(table)
        if not key or self._peer.get(table, key) is None:
            raise RPCError(404, "Key not found in htable.")
        try:
            self._peer.delete(table, key)
        except ReplicationRefused as e:
            raise _refused(e) from None
        return self._replicated("Ok. Key deleted.")

    def dump(self, *params: object) -> List[Dict[str, object]]:
        """
        C{htable.dump table}: one entry per non-empty slot, C{{"entry":
        slot, "size": cells, "slot": [{"name", "value", "type": "str" or
        "int"}]}}, in slot order.
        """
        [table] = self._names(params, 1, "No htable name given")
        self._table(table)
        slots = self._peer.spec(table).slots
        result: List[Dict[str, object]] = []
        for key, value in self._peer.items(table):
            entry = coreCaseHash(key) & (slots - 1)
            if not result or result[-1]["entry"] != entry:
                result.append({"entry": entry, "size": 0, "slot": []})
            result[-1]["size"] += 1  # type: ignore[operator]
            result[-1]["slot"].append(  # type: ignore[attr-defined]
                {"name": key, "value": value, "type": "str" if isinstance(value, str) else "int"}
            )
        return result

    def listTables(self, *params: object) -> List[Dict[str, object]]:
        """
        C{htable.listTables}: C{{"name", "dbtable", "dbmode", "expire",
        "updateexpire", "size", "dmqreplicate"}} per table, the last
        declared first as in Kamailio; C{size} is the slot count.
        """
        names = self._peer.tables()
        if not names:
            raise RPCError(500, "No htables")
        result = []
        for name in reversed(names):
            spec = self._peer.spec(name)
            result.append(
                {
                    "name": spec.name,
                    "dbtable": spec.dbtable,
                    "dbmode": spec.dbmode,
                    "expire": spec.autoexpire,
                    "updateexpire": int(spec.updateexpire),
                    "size": spec.slots,
                    "dmqreplicate": int(spec.dmqreplicate),
                }
            )
        return result
