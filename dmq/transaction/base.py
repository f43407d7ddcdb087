# -*- test-case-name: dmq.test.test_transaction -*-
"""
What client transactions, server transactions and their layer share: RFC
3261's timer values, the states of a non-INVITE transaction, the errors a
client transaction fails with, and the names of what the layer counts.
"""

from __future__ import annotations

from enum import Enum
from typing import Tuple

__all__ = [
    "T1",
    "T2",
    "T4",
    "Address",
    "TransactionState",
    "TransactionLimitExceeded",
    "TransactionLayerStopped",
]

T1 = 0.5
"""RFC 3261 Timer T1: the round-trip time estimate, in seconds."""

T2 = 4.0
"""RFC 3261 Timer T2: the longest interval between request retransmissions."""

T4 = 5.0
"""RFC 3261 Timer T4: how long a message may linger in the network."""

Address = Tuple[str, int]

# Every counter in TransactionLayer.statistics, so that a metrics page shows
# zeros rather than nothing.
_COUNTERS = (
    "clientTransactions",
    "serverTransactions",
    "retransmissionsSent",
    "retransmissionsAbsorbed",
    "responsesResent",
    "timeouts",
    "cancelled",
    "rejectedOverCapacity",
    "evicted",
    "refusedOverCapacity",
    "abandoned",
    "handlerErrors",
    "sendErrors",
    "acksIgnored",
)


# A plain Enum rather than an Automat machine: each machine has four states
# and three inputs, the methods that handle an input read like the arrows of
# RFC 3261's figures, and a transaction is made for every message, so it is
# kept as light as a few attributes.
class TransactionState(Enum):
    """
    The states of a non-INVITE transaction, client or server (RFC 3261
    figures 6 and 8).
    """

    TRYING = "Trying"
    PROCEEDING = "Proceeding"
    COMPLETED = "Completed"
    TERMINATED = "Terminated"


class TransactionLimitExceeded(Exception):
    """
    A new client transaction was refused because too many are live.
    """


class TransactionLayerStopped(Exception):
    """
    The transaction layer was stopped while this transaction was pending, or
    before it was asked to start one.
    """
