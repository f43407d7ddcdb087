# -*- test-case-name: dmq.test.test_usrloc_peer -*-
"""
The registrations of a Kamailio cluster, replicated as Kamailio's
C{dmq_usrloc} module replicates them (the peer C{usrloc}).

A program reads them, changes them and hears of every change through
L{UsrlocPeer}; operators read them through Kamailio's RPC names
(L{UsrlocRPC}: C{ul.dump}, C{ul.lookup}).  See C{doc/peers.md} (usrloc)
for the wire format, where we differ from Kamailio and why, and which
module of this package does what.
"""

from dmq.interfaces import RPCError
from dmq.peers.usrloc.contact import ALL_METHODS, Q_UNSPECIFIED, Contact, coreHash, newRUID
from dmq.peers.usrloc.peer import PEER_ID, NoSuchContact, UsrlocPeer
from dmq.peers.usrloc.rpc import DOMAIN, UsrlocRPC
from dmq.peers.usrloc.store import DELETE, EXPIRE, INSERT, UPDATE, Change, StoreFull
from dmq.peers.usrloc.wire import (
    CONTENT_TYPE,
    MAX_BATCH_CONTACTS,
    MAX_BATCH_SIZE,
    Action,
    SocketInfo,
)

__all__ = [
    "PEER_ID",
    "CONTENT_TYPE",
    "DOMAIN",
    "MAX_BATCH_CONTACTS",
    "MAX_BATCH_SIZE",
    "ALL_METHODS",
    "Q_UNSPECIFIED",
    "Action",
    "SocketInfo",
    "Contact",
    "newRUID",
    "coreHash",
    "Change",
    "INSERT",
    "UPDATE",
    "DELETE",
    "EXPIRE",
    "StoreFull",
    "NoSuchContact",
    "UsrlocPeer",
    "UsrlocRPC",
    "RPCError",
]
