# -*- test-case-name: dmq.test.test_htable -*-
"""
A replicated in-memory hash table, wire-compatible with Kamailio's htable
module and its DMQ replication (the peer C{htable}).

Tables are declared as Kamailio declares them (L{parseTableSpec}); a program
reads and changes them through L{HTablePeer}, and operators through
Kamailio's RPC names (L{HTableRPC}).  See C{doc/design.md} (the htable peer)
for the wire format, where we differ from Kamailio and why, and which module
of this package does what.
"""

from dmq.interfaces import RPCError
from dmq.peers.htable.outbox import ReplicationRefused
from dmq.peers.htable.pattern import BadPattern, TooCostly
from dmq.peers.htable.peer import PEER_ID, HTablePeer
from dmq.peers.htable.rpc import HTableRPC
from dmq.peers.htable.spec import MATCH_NAME, MATCH_VALUE, TableSpec, coreCaseHash, parseTableSpec
from dmq.peers.htable.store import MAX_BYTES, MAX_CELLS, Change, NoSuchTable, TableFull
from dmq.peers.htable.sync import MAX_DUMP_BYTES
from dmq.peers.htable.wire import CONTENT_TYPE, MAX_BODY, MAX_SYNC_BODY, Action

__all__ = [
    "PEER_ID",
    "CONTENT_TYPE",
    "MAX_SYNC_BODY",
    "MAX_BODY",
    "MAX_CELLS",
    "MAX_BYTES",
    "MAX_DUMP_BYTES",
    "Action",
    "MATCH_NAME",
    "MATCH_VALUE",
    "TableSpec",
    "parseTableSpec",
    "Change",
    "NoSuchTable",
    "TableFull",
    "ReplicationRefused",
    "BadPattern",
    "TooCostly",
    "HTablePeer",
    "RPCError",
    "HTableRPC",
    "coreCaseHash",
]
