# -*- test-case-name: dmq.test.test_htable -*-
"""
L{HTablePeer}: replicated hash tables, and the bus peer that replicates
them.  It holds the replication and sync policy: local changes are
checked, applied to its L{HTableStore} and broadcast through its
L{Outbox}; changes from the bus are applied by its L{Receiver} and never
sent again; a sync request is answered with a dump (L{SyncDumps}); with
C{initSync} one node is asked on joining.

See C{doc/design-htable.md} for the whole design.
"""

from __future__ import annotations

from collections import Counter
from typing import Callable, Iterable, Iterator, List, Optional, Set, Tuple, Union

from twisted.application import service
from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from zope.interface import implementer

from dmq.interfaces import IDMQBus, IDMQPeer, PeerResponse
from dmq.node import Node
from dmq.peers.htable.outbox import Outbox, ReplicationRefused
from dmq.peers.htable.receive import Receiver
from dmq.peers.htable.spec import MATCH_NAME, TableSpec, Value, checkKey, checkValue
from dmq.peers.htable.store import MATCHES, MAX_BYTES, MAX_CELLS, Change, HTableStore, TableFull
from dmq.peers.htable.sync import MAX_DUMP_BYTES, SYNC_INTERVAL, SyncDumps
from dmq.peers.htable.wire import (
    CONTENT_TYPE,
    MAX_BODY,
    Cell,
    DeleteCell,
    RemoveMatching,
    SetCell,
    SetExpire,
    SyncRequest,
    encode,
    iterCells,
)
from dmq.ratelimit import RateLimitedWarnings
from dmq.sip import Request
from dmq.peers.joins import Joins

__all__ = ["PEER_ID", "HTablePeer"]

PEER_ID = "htable"


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
    with C{{}} for a table without C{dmqreplicate}.  It never fails.

    Nothing accepted is dropped: a change is sent when the transaction
    layer has room (L{Outbox}), and one that could not be sent is refused
    before it is applied, with L{ReplicationRefused} (its request would not
    fit one datagram, L{MAX_BODY<dmq.peers.htable.wire.MAX_BODY>}, or too
    many changes wait already), or L{TableFull} (the table is at its cap
    on cells or octets).  Sync dumps are paced and bounded (L{SyncDumps}).

    Expired cells are dropped when next read or changed, and by a purge
    every C{purgeInterval} seconds.  Expiry is per node and never sent.

    @ivar peerId: the channel name, C{"htable"} by default.
    @ivar initSync: whether to ask for the tables when joining the bus.
    @ivar statistics: a C{Counter} of what was refused, skipped, queued
        and sent again (see L{Outbox} and L{SyncDumps}, and
        C{badMessages}, C{failedMessages}, C{tableFull}, C{tooLarge},
        C{skippedCells}, C{patternsRefused}).
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
        maxCells: int = MAX_CELLS,
        maxBytes: int = MAX_BYTES,
        clientRoom: Optional[Callable[[], int]] = None,
        maxDumpBytes: int = MAX_DUMP_BYTES,
        syncInterval: float = SYNC_INTERVAL,
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
        @param maxCells: the most cells one table holds.
        @param maxBytes: the most octets of keys and values one table holds.
        @param clientRoom: how many more client transactions the bus's
            transaction layer would start now (its cap less its
            C{liveClientTransactions}); C{None} when not known.
        @param maxDumpBytes: the most octets one sync dump sends.
        @param syncInterval: the fewest seconds between two dumps to one
            node.

        @raise ValueError: for two tables of one name, or a bad spec.
        """
        if purgeInterval <= 0:
            raise ValueError("purgeInterval must be positive")
        self._clock = clock
        self._bus = bus
        self.peerId = peerId
        self.initSync = initSync
        self._purgeInterval = purgeInterval
        self._store = HTableStore(clock, tables, maxCells, maxBytes)
        self._purger: Optional[LoopingCall] = None
        self._joins = Joins()
        self.statistics: Counter[str] = Counter()
        self._warnings = RateLimitedWarnings(clock, self._log)
        self._outbox = Outbox(clock, bus, peerId, CONTENT_TYPE, clientRoom, statistics=self.statistics)
        self._dumps = SyncDumps(
            clock, self._outbox, self._dumpBodies, maxDumpBytes, syncInterval, statistics=self.statistics
        )
        self._receiver = Receiver(clock, self._store, self._dumps, self.statistics, self._warnings, self._log)

    # Service

    def startService(self) -> None:
        service.Service.startService(self)
        if any(self._store.spec(name).autoexpire for name in self._store.tables()):
            self._purger = LoopingCall(self.purgeExpired)
            self._purger.clock = self._clock
            self._purger.start(self._purgeInterval, now=False).addErrback(
                lambda f: self._log.failure("htable purge failed", f)
            )

    def stopService(self) -> Deferred[object]:
        """
        Stop the purge timer, and forget the dumps and the changes not yet
        sent (the bus is stopping).

        @return: a L{Deferred} that has fired: nothing else is left running.
        """
        service.Service.stopService(self)
        self._joins = Joins()
        self._dumps.stop()
        self._outbox.stop()
        if self._purger is not None:
            if self._purger.running:
                self._purger.stop()
            self._purger = None
        return succeed(None)

    @property
    def store(self) -> HTableStore:
        """
        The tables (for L{AntiEntropy<dmq.peers.htable.entropy.AntiEntropy>},
        which changes them without replicating).
        """
        return self._store

    # Reading, as the store reads

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
        @return: when cell C{key} expires, in clock time, or C{None}.
        @raise NoSuchTable: when C{table} is not declared.
        """
        return self._store.expiresAt(table, key)

    def items(self, table: str) -> List[Tuple[str, Value]]:
        """
        @return: the C{(key, value)} pairs of C{table}, in Kamailio's order.
        @raise NoSuchTable: when C{table} is not declared.
        """
        return self._store.items(table)

    def size(self, table: str) -> Tuple[int, int]:
        """
        @return: the cells of C{table} and their octets, against its caps.
        @raise NoSuchTable: when C{table} is not declared.
        """
        return self._store.size(table)

    @property
    def replicationPending(self) -> int:
        """
        How many changes (and dump bodies) wait for room to be sent.
        """
        return self._outbox.pending

    # Changing, as the store changes (with its exceptions), then replicating

    def set(self, table: str, key: str, value: Value) -> Deferred[object]:
        """
        Set cell C{key} of C{table} to C{value}, a str or a 32-bit int
        (L{HTableStore.set}), and replicate it.

        @raise TableFull: when the table is at its cap.
        @raise ReplicationRefused: when the change cannot be replicated:
            nothing is changed.
        """
        self._store.spec(table)
        checkKey(key)
        checkValue(value)
        body = self._prepare(SetCell(table, key, value))
        self._store.set(table, key, value, "local")
        return self._replicate(body)

    def setExpire(self, table: str, key: str, seconds: int) -> Deferred[object]:
        """
        Make cell C{key} expire C{seconds} from now, never when 0 or less
        (L{HTableStore.setExpire}: only on a table with C{autoexpire}), and
        replicate that.

        @raise ReplicationRefused: as L{set}.
        """
        self._store.spec(table)
        checkKey(key)
        body = self._prepare(SetExpire(table, key, seconds))
        self._store.setExpire(table, key, seconds)
        return self._replicate(body)

    def delete(self, table: str, key: str) -> Deferred[object]:
        """
        Delete cell C{key} of C{table}, and replicate that (whether it
        existed here or not: it may exist elsewhere).

        @raise ReplicationRefused: as L{set}.
        """
        self._store.spec(table)
        checkKey(key)
        body = self._prepare(DeleteCell(table, key))
        self._store.delete(table, key, "local")
        return self._replicate(body)

    def removeMatching(self, table: str, how: str, pattern: str, mode: int = MATCH_NAME) -> Deferred[object]:
        """
        Remove the cells whose name or string value matches C{pattern}
        (L{HTableStore.removeMatching}: a regular expression it refuses
        raises L{BadPattern<dmq.peers.htable.pattern.BadPattern>} or
        L{TooCostly<dmq.peers.htable.pattern.TooCostly>}, both
        C{ValueError}s), and replicate that.  Kamailio receivers apply only
        C{how} C{"re"} and C{"sw"}.

        @raise ReplicationRefused: as L{set}.
        """
        self._store.spec(table)
        message = RemoveMatching(table, how, pattern, mode)
        body = self._prepare(message if isinstance(pattern, str) and how in MATCHES else None)
        self._store.removeMatching(table, how, pattern, mode, "local")
        return self._replicate(body)

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

    def requestSync(self, node: Optional[Node] = None, table: Optional[str] = None) -> Deferred[object]:
        """
        Ask C{node}, or every active node, for the cells of every replicated
        table (or of C{table}): Kamailio's C{htable.dmqsync}.  The cells
        arrive as their own requests, applied as they come.

        @return: a L{Deferred} that fires with the final response of
            C{node} (C{None} if it could not be sent), or with the broadcast
            result.
        """
        return self._outbox.send(encode(SyncRequest(table or None)), node, "sync request")

    def syncBodies(self, table: Optional[str] = None) -> List[bytes]:
        """
        The bodies of the C{cells} requests a sync dump sends now: every
        live cell of every replicated table (or of C{table}), the last
        declared table first, each in Kamailio's order, in bodies of at
        most L{MAX_SYNC_BODY<dmq.peers.htable.wire.MAX_SYNC_BODY>} octets (see
        L{encodeCells<dmq.peers.htable.wire.encodeCells>}).
        """
        return list(self._dumpBodies(None if table is None else {table}))

    def _dumpBodies(self, tables: Optional[Set[str]]) -> Iterator[bytes]:
        cells = []
        for name in reversed(self._store.tables()):
            if not self._store.spec(name).dmqreplicate or (tables and name not in tables):
                continue
            for key, value, expireAt in self._store.cells(name):
                cells.append(Cell(name, key, value, 0 if expireAt is None else int(expireAt)))
        return iterCells(cells)

    # IDMQPeer

    def nodeAdded(self, node: Node) -> None:
        """
        With C{initSync}, ask C{node} for the tables when no other node we
        were told of is still active: we just joined, or rejoined after
        losing every node.
        """
        if not self.initSync:
            return
        if self._joins.joined(node, self._bus.nodes()):
            self._log.info("Asking {node} for the htables", node=node)
            self.requestSync(node)

    def messageReceived(self, request: Request, node: Optional[Node]) -> PeerResponse:
        """
        Apply a change, a sync dump, or answer a sync request (see
        L{Receiver.messageReceived}).
        """
        return self._receiver.messageReceived(request, node)

    # Sending

    def _prepare(self, message: Union[SetCell, SetExpire, DeleteCell, RemoveMatching, None]) -> Optional[bytes]:
        """
        The body that replicates C{message}, or C{None} when its table is
        not replicated; checked before the change is applied.

        @raise ReplicationRefused: when it would not fit one datagram, or
            the outbox is full.
        """
        if message is None or not self._store.spec(message.table).dmqreplicate:
            return None
        body = encode(message)
        if len(body) > MAX_BODY:
            self.statistics["replicationRefused"] += 1
            raise ReplicationRefused(
                f"the change's request would be {len(body)} octets, more than the {MAX_BODY} "
                "one datagram carries"
            )
        self._outbox.check(len(body))
        return body

    def _replicate(self, body: Optional[bytes]) -> Deferred[object]:
        if body is None:
            return succeed({})
        return self._outbox.send(body, None, "replication")
