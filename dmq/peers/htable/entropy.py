# -*- test-case-name: dmq.test.test_htable_entropy -*-
"""
Anti-entropy for the replicated tables between dmq nodes: L{AntiEntropy},
the peer of the dmq-only channel C{htable_entropy} (a Kamailio node answers
it C{404}, and is then left out).

Replication is fire-and-forget: a node that misses a change (partitioned
longer than Timer F) would stay different for ever.  So every C{interval}
seconds a node sends one other node, chosen at random, a digest of each
replicated table, one per bucket of hash slots (the slot itself for tables
of up to 256 slots); the other answers with its cells, and its deletions,
of the buckets that differ, each with the time it was written; the asker
keeps, cell by cell, the newer (last writer wins), and sends back those of
its own that are newer.  The times are ours, carried on this channel only:
the htable JSON that Kamailio reads is unchanged.

A cell's time is when this node applied the change (a local change, or one
replicated to it: within a transaction of the write), or the time the
exchange carried; a cell from a Kamailio sync dump counts as oldest (0).
Deletions are remembered for C{tombstoneTime} seconds, at most
C{maxTombstones} of them.
"""

from __future__ import annotations

import hashlib
import json
import math
import random as _random
from collections import Counter, OrderedDict
from typing import Any, Callable, Dict, Iterable, List, Optional, Set, Tuple

from twisted.application import service
from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger
from zope.interface import implementer

from dmq.interfaces import IDMQBus, IDMQPeer, PeerResponse
from dmq.nodelist import Node, NodeKey
from dmq.peers.htable.spec import Value, coreCaseHash
from dmq.peers.htable.store import Change, HTableStore, TableFull
from dmq.ratelimit import RateLimitedWarnings
from dmq.sip import Request, Response

__all__ = ["AntiEntropy", "ENTROPY_PEER_ID"]

ENTROPY_PEER_ID = "htable_entropy"
CONTENT_TYPE = "application/x-dmq-entropy+json"

#: The most buckets of a table's digest.
MAX_BUCKETS = 256

#: The most octets of cells one answer or push carries; the buckets past
#: it wait for the next round.
MAX_CELLS_BODY = 50000

_ORIGIN = "entropy"

Stamp = Tuple[float, str]


# A JSON object of a message (the message, a table's part of it), and a
# cell, the JSON array [key, value or None for a deletion, time]: what
# json.loads gives, checked by EntropyPeer._decode, so of Any.
_JSONObject = Dict[str, Any]
_Cell = List[Any]


def _rank(stamp: float, value: Optional[Value]) -> Tuple[float, int, str]:
    # Last writer wins; equal times are settled the same way everywhere:
    # a value beats a deletion, then by type and text.
    if value is None:
        return (stamp, 0, "")
    return (stamp, 1 if isinstance(value, int) else 2, str(value))


class BadEntropy(ValueError):
    """
    A body of the channel that is not as we write them.
    """


@implementer(IDMQPeer)
class AntiEntropy(service.Service):
    """
    The anti-entropy rounds over an L{HTableStore}, and the peer that
    answers them.

    @ivar statistics: C{rounds}, C{bucketsDiffering}, C{cellsApplied}
        and C{deletionsApplied} (taken from another node, whichever way),
        C{badMessages}, C{notDmq} (nodes that answered 404).
    """

    _log = Logger()

    description = "htable anti-entropy (dmq nodes only)"

    def __init__(
        self,
        clock: IReactorTime,
        bus: IDMQBus,
        store: HTableStore,
        members: Callable[[], List[Node]],
        *,
        peerId: str = ENTROPY_PEER_ID,
        interval: float = 10.0,
        tombstoneTime: float = 600.0,
        maxTombstones: int = 100000,
        random: Optional[_random.Random] = None,
    ) -> None:
        self._clock = clock
        self._bus = bus
        self._store = store
        self._members = members
        self.peerId = peerId
        self.interval = interval
        self._tombstoneTime = tombstoneTime
        self._maxTombstones = maxTombstones
        self._random = random if random is not None else _random.Random()
        self._warnings = RateLimitedWarnings(clock, self._log)
        self.statistics: Counter[str] = Counter()
        self._stamps: Dict[Tuple[str, str], float] = {}
        self._tombstones: "OrderedDict[Tuple[str, str], float]" = OrderedDict()
        self._notDmq: Set[NodeKey] = set()
        self._call: Optional[IDelayedCall] = None
        self._tables = [name for name in store.tables() if store.spec(name).dmqreplicate]
        # The keys of each bucket, and each bucket's digest until it
        # changes: a round costs the buckets changed since, not the table.
        self._index: Dict[str, Dict[int, Set[str]]] = {table: {} for table in self._tables}
        self._digestCache: Dict[str, Dict[int, str]] = {table: {} for table in self._tables}
        for table in self._tables:
            count = self._buckets(table)
            for key, _ in store.items(table):
                self._index[table].setdefault(coreCaseHash(key) % count, set()).add(key)
        self._unsubscribe = store.subscribe(self._changed)

    # Times

    def _changed(self, change: Change) -> None:
        if change.table in self._index:
            bucket = coreCaseHash(change.key) % self._buckets(change.table)
            keys = self._index[change.table].setdefault(bucket, set())
            if change.new is None:
                keys.discard(change.key)
            else:
                keys.add(change.key)
            self._digestCache[change.table].pop(bucket, None)
        if change.origin == _ORIGIN:
            return
        cell = (change.table, change.key)
        if change.new is None:
            self._stamps.pop(cell, None)
            if change.origin != "expired":
                self._bury(cell, self._clock.seconds())
            return
        self._tombstones.pop(cell, None)
        self._stamps[cell] = 0.0 if change.origin == "sync" else self._clock.seconds()

    def _bury(self, cell: Tuple[str, str], stamp: float) -> None:
        self._tombstones.pop(cell, None)
        self._tombstones[cell] = stamp
        while len(self._tombstones) > self._maxTombstones:
            self._tombstones.popitem(last=False)

    def _expireTombstones(self) -> None:
        horizon = self._clock.seconds() - self._tombstoneTime
        while self._tombstones:
            cell, stamp = next(iter(self._tombstones.items()))
            if stamp >= horizon:
                break
            del self._tombstones[cell]

    # Digests

    def _buckets(self, table: str) -> int:
        return min(self._store.spec(table).slots, MAX_BUCKETS)

    def _bucketValues(self, table: str, bucket: int) -> List[Tuple[str, Value]]:
        values = []
        for key in sorted(self._index[table].get(bucket, ())):
            value = self._store.get(table, key)
            if value is not None:
                values.append((key, value))
        return values

    def digests(self, table: str) -> Dict[int, str]:
        """
        The digest of each non-empty bucket of C{table}: its cells' names
        and values (not their times).
        """
        cache = self._digestCache[table]
        result = {}
        for bucket, keys in list(self._index[table].items()):
            if not keys:
                del self._index[table][bucket]
                cache.pop(bucket, None)
                continue
            if bucket not in cache:
                h = hashlib.sha1()
                for key, value in self._bucketValues(table, bucket):
                    kind = "i" if isinstance(value, int) else "s"
                    h.update(json.dumps([key, kind, value], ensure_ascii=False).encode("utf-8", "surrogatepass"))
                cache[bucket] = h.hexdigest()[:16]
            result[bucket] = cache[bucket]
        return result

    def _bucketCells(self, table: str, buckets: Iterable[int]) -> List[_Cell]:
        """
        Our cells and deletions in C{buckets}: C{[key, value, time]}, the
        value C{None} for a deletion.
        """
        wanted = set(buckets)
        count = self._buckets(table)
        out: List[_Cell] = []
        for bucket in sorted(wanted):
            for key, value in self._bucketValues(table, bucket):
                out.append([key, value, self._stamps.get((table, key), 0.0)])
        for (name, key), stamp in self._tombstones.items():
            if name == table and coreCaseHash(key) % count in wanted:
                out.append([key, None, stamp])
        return out

    # Rounds

    def startService(self) -> None:
        service.Service.startService(self)
        self._call = self._clock.callLater(self.interval, self._round)

    def stopService(self) -> Deferred[None]:
        service.Service.stopService(self)
        if self._call is not None and self._call.active():
            self._call.cancel()
        self._call = None
        return succeed(None)

    def _round(self) -> None:
        self._call = self._clock.callLater(self.interval, self._round)
        try:
            self.exchange()
        except Exception:
            self._warnings.failure("entropyRound", "An anti-entropy round failed; the next runs as usual")

    def exchange(self, node: Optional[Node] = None) -> Optional[Deferred[None]]:
        """
        One round: send our digests to C{node} (by default one other node
        at random), and settle the differences.

        @return: a L{Deferred} that fires when the round ended, or C{None}
            when there was nobody to ask.
        """
        self._expireTombstones()
        if node is None:
            candidates = [n for n in self._members() if n.key not in self._notDmq]
            if not candidates or not self._tables:
                return None
            node = self._random.choice(candidates)
        self.statistics["rounds"] += 1
        body = {"op": "digest", "tables": {t: self.digests(t) for t in self._tables}}
        return self._send(node, body).addCallback(self._answered, node)

    def _answered(self, response: Optional[Response], node: Node) -> None:
        if response is None:
            return
        if response.code == 404:
            if len(self._notDmq) > 4096:
                # Bounded: a node that left long ago is asked once more.
                self._notDmq.clear()
            self._notDmq.add(node.key)
            self.statistics["notDmq"] += 1
            return
        if response.code != 200:
            return
        try:
            answer = self._decode(response.body, "cells")
        except BadEntropy as e:
            self._bad(str(node), str(e))
            return
        push: Dict[str, _JSONObject] = {}
        for table, part in answer["tables"].items():
            if table not in self._tables:
                continue
            buckets = part["buckets"]
            theirs = {cell[0]: cell for cell in part["cells"]}
            self.statistics["bucketsDiffering"] += len(buckets)
            ours = {cell[0]: cell for cell in self._bucketCells(table, buckets)}
            newer: List[_Cell] = []
            for key, cell in theirs.items():
                self._settle(table, cell, ours.get(key))
            for key, cell in ours.items():
                other = theirs.get(key)
                if other is None or _rank(cell[2], cell[1]) > _rank(other[2], other[1]):
                    if cell[1] is None and other is None:
                        continue
                    newer.append(cell)
            if newer:
                push[table] = {"buckets": buckets, "cells": newer}
        if push:
            self._send(node, {"op": "cells", "tables": push})

    def _settle(self, table: str, theirs: _Cell, ours: Optional[_Cell]) -> None:
        """
        Keep their cell (or deletion) when it is newer than ours.
        """
        key, value, stamp = theirs
        if ours is not None and _rank(ours[2], ours[1]) >= _rank(stamp, value):
            return
        if ours is None and value is None:
            # A deletion of what we never had: remember it, no more.
            self._bury((table, key), stamp)
            return
        if value is None:
            self._store.delete(table, key, origin=_ORIGIN)
            self._stamps.pop((table, key), None)
            self._bury((table, key), stamp)
            self.statistics["deletionsApplied"] += 1
            return
        try:
            self._store.set(table, key, value, origin=_ORIGIN)
        except (TableFull, TypeError, ValueError) as e:
            self._warnings.warn("entropySkipped", "Anti-entropy skipped a cell of {table}: {error}",
                                table=table, error=str(e))
            return
        self._tombstones.pop((table, key), None)
        self._stamps[(table, key)] = stamp
        self.statistics["cellsApplied"] += 1

    # IDMQPeer

    def messageReceived(self, request: Request, node: Optional[Node]) -> PeerResponse:
        """
        Answer a digest with our cells of the buckets that differ; apply a
        push of newer cells.  Only from a node in our list.
        """
        if node is None:
            return PeerResponse(403, "Forbidden")
        try:
            message = self._decode(request.body, None)
        except BadEntropy as e:
            self._bad(str(node), str(e))
            return PeerResponse(400, "Bad Request")
        if message["op"] == "cells":
            for table, part in message["tables"].items():
                if table not in self._tables:
                    continue
                ours = {cell[0]: cell for cell in self._bucketCells(table, part["buckets"])}
                for cell in part["cells"]:
                    self._settle(table, cell, ours.get(cell[0]))
            return PeerResponse(200, "OK")
        answer: Dict[str, _JSONObject] = {}
        room = MAX_CELLS_BODY
        for table in self._tables:
            theirs = message["tables"].get(table, {})
            digests = self.digests(table)
            differing = sorted(
                b for b in set(digests) | set(theirs) if digests.get(b) != theirs.get(b)
            )
            buckets: List[int] = []
            cells: List[_Cell] = []
            for bucket in differing:
                part = self._bucketCells(table, [bucket])
                size = len(json.dumps(part, ensure_ascii=False))
                if size > room and buckets:
                    break
                room -= size
                buckets.append(bucket)
                cells.extend(part)
            answer[table] = {"buckets": buckets, "cells": cells}
        body = json.dumps({"op": "cells", "tables": answer}, ensure_ascii=False, separators=(",", ":"))
        return PeerResponse(200, "OK", body.encode("utf-8", "surrogatepass"), CONTENT_TYPE)

    def nodeAdded(self, node: Node) -> None:
        pass

    # The body

    def _decode(self, body: bytes, op: Optional[str]) -> _JSONObject:
        try:
            message = json.loads(body.decode("utf-8"))
        except (UnicodeDecodeError, ValueError, RecursionError):
            raise BadEntropy("not JSON") from None
        if not isinstance(message, dict) or message.get("op") not in ("digest", "cells"):
            raise BadEntropy("not a digest nor cells")
        if op is not None and message["op"] != op:
            raise BadEntropy(f"expected {op}")
        tables = message.get("tables")
        if not isinstance(tables, dict):
            raise BadEntropy("no tables")
        for table, part in tables.items():
            if message["op"] == "digest":
                if not isinstance(part, dict) or not all(
                    isinstance(b, str) and b.isdigit() and isinstance(h, str) for b, h in part.items()
                ):
                    raise BadEntropy("bad digest")
                tables[table] = {int(b): h for b, h in part.items()}
                continue
            if not isinstance(part, dict):
                raise BadEntropy("bad cells")
            buckets, cells = part.get("buckets"), part.get("cells")
            if not isinstance(buckets, list) or not all(type(b) is int for b in buckets):
                raise BadEntropy("bad buckets")
            if not isinstance(cells, list):
                raise BadEntropy("bad cells")
            for cell in cells:
                if (
                    not isinstance(cell, list)
                    or len(cell) != 3
                    or not isinstance(cell[0], str)
                    or not (cell[1] is None or type(cell[1]) in (int, str))
                    or type(cell[2]) not in (int, float)
                    or not math.isfinite(cell[2])
                ):
                    raise BadEntropy("bad cell")
        return message

    def _send(self, node: Node, message: _JSONObject) -> Deferred[Optional[Response]]:
        body = json.dumps(message, ensure_ascii=False, separators=(",", ":")).encode("utf-8", "surrogatepass")
        d = self._bus.send(self.peerId, body, node, CONTENT_TYPE, 1)
        return d.addErrback(lambda _: None)

    def _bad(self, sender: str, error: str) -> None:
        self.statistics["badMessages"] += 1
        self._warnings.warn("badEntropy", "Bad anti-entropy message from {sender}: {error}",
                            sender=sender, error=error)
