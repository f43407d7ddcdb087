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
from dmq.peers.htable.peer import PEER_ID, HTablePeer
from dmq.peers.htable.rpc import HTableRPC
from dmq.peers.htable.spec import MATCH_NAME, MATCH_VALUE, TableSpec, coreCaseHash, parseTableSpec
from dmq.peers.htable.store import Change, NoSuchTable
from dmq.peers.htable.wire import CONTENT_TYPE, MAX_SYNC_BODY, Action

__all__ = [
    "PEER_ID",
    "CONTENT_TYPE",
    "MAX_SYNC_BODY",
    "Action",
    "MATCH_NAME",
    "MATCH_VALUE",
    "TableSpec",
    "parseTableSpec",
    "Change",
    "NoSuchTable",
    "HTablePeer",
    "RPCError",
    "HTableRPC",
    "coreCaseHash",
]
