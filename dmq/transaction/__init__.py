# -*- test-case-name: dmq.test.test_transaction -*-
"""
RFC 3261 §17 non-INVITE client and server transactions.

A L{TransactionLayer} sits between the transport and everything above it.
Going out, L{TransactionLayer.request} puts a fresh Via on a request, sends it,
retransmits it over an unreliable transport (Timer E) and gives up with a
locally made C{408} (Timer F), so that whoever asked gets exactly one final
response.  Coming in, L{TransactionLayer.handleRequest} hands each request to
the layer above once, as a L{ServerTransaction}, and answers retransmissions of
it from the stored reply; L{TransactionLayer.handleResponse} routes responses
to the client transaction they belong to and absorbs duplicates.

Only non-INVITE transactions exist here: KDMQ is the only method the bus uses.
ACK, which is never answered and never starts a non-INVITE transaction, is
dropped.

Nothing here touches a socket: bytes leave through an injected C{send}
callable and time comes from an injected L{IReactorTime <twisted.internet.interfaces.IReactorTime>}.

Import the names from here.  They live in L{dmq.transaction.base} (timer
values, states, errors, what a failed send means), L{dmq.transaction.server},
L{dmq.transaction.client} and L{dmq.transaction.layer}.
"""

from dmq.transaction.base import (
    MAX_UDP_PAYLOAD,
    T1,
    T2,
    T4,
    MessageTooLarge,
    TransactionLayerStopped,
    TransactionLimitExceeded,
    TransactionState,
)
from dmq.transaction.layer import TransactionLayer
from dmq.transaction.server import ServerTransaction, responseAddress

__all__ = [
    "T1",
    "T2",
    "T4",
    "TransactionState",
    "TransactionLimitExceeded",
    "TransactionLayerStopped",
    "MessageTooLarge",
    "MAX_UDP_PAYLOAD",
    "ServerTransaction",
    "TransactionLayer",
    "responseAddress",
]
