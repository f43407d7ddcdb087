# -*- test-case-name: dmq.test.test_dialog -*-
"""
The calls of a Kamailio cluster, as its dialog module replicates them over
DMQ (C{modparam("dialog", "enable_dmq", 1)}, the peer C{dialog}): a
read-mostly store of dialogs with their state changes (L{DialogPeer},
L{DialogPeer.subscribe}), and Kamailio's reading C{dlg.*} RPC commands over
it (L{DialogRPC}).  See C{doc/peers.md} (dialog) for the wire format, where
we differ from Kamailio and why, and which module of this package does
what.
"""

from dmq.interfaces import RPCError
from dmq.peers.dialog.peer import PEER_ID, DialogPeer
from dmq.peers.dialog.rpc import DialogRPC
from dmq.peers.dialog.store import DEFAULT_LIFETIME, Dialog, DialogChange
from dmq.peers.dialog.wire import CONTENT_TYPE, Action, DialogId, DialogState, Leg, Profile

__all__ = [
    "PEER_ID",
    "CONTENT_TYPE",
    "DEFAULT_LIFETIME",
    "Action",
    "DialogState",
    "DialogId",
    "Leg",
    "Profile",
    "Dialog",
    "DialogChange",
    "DialogPeer",
    "DialogRPC",
    "RPCError",
]
