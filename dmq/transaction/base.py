# -*- test-case-name: dmq.test.test_transaction -*-
"""
What client transactions, server transactions and their layer share: RFC
3261's timer values, the states of a non-INVITE transaction, the errors a
client transaction fails with, the names of what the layer counts, what a
failed send means (L{sendFailure}), and the rate-limited warnings the layer
and the transport log bad input and failed sends with.
"""

from __future__ import annotations

import errno
import socket
from enum import Enum
from typing import Optional, Tuple

from twisted.internet.error import ConnectError, InvalidAddressError, MessageLengthError

from dmq.ratelimit import RateLimitedWarnings

__all__ = [
    "T1",
    "T2",
    "T4",
    "Address",
    "TransactionState",
    "TransactionLimitExceeded",
    "TransactionLayerStopped",
    "MessageTooLarge",
    "MAX_UDP_PAYLOAD",
    "RateLimitedWarnings",
    "SEND_ERRORS",
    "sendFailure",
]

T1 = 0.5
"""RFC 3261 Timer T1: the round-trip time estimate, in seconds."""

T2 = 4.0
"""RFC 3261 Timer T2: the longest interval between request retransmissions."""

T4 = 5.0
"""RFC 3261 Timer T4: how long a message may linger in the network."""

Address = Tuple[str, int]

MAX_UDP_PAYLOAD = 65507
"""
The most octets one UDP datagram carries over IPv4 (65,535 less the IP and
UDP headers): a request longer than this cannot be sent at all.
"""

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
    "refusedTooLarge",
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


class MessageTooLarge(ValueError):
    """
    A request was refused because its datagram would be longer than one
    datagram can be (L{MAX_UDP_PAYLOAD}), or than the socket would send.
    """


# Errors of a send that sending again cannot mend: the destination is not
# an address this socket can reach.
_NO_ADDRESS = (errno.EAFNOSUPPORT, errno.EADDRNOTAVAIL, errno.EINVAL, errno.EDESTADDRREQ)

SEND_ERRORS = (OSError, InvalidAddressError, MessageLengthError, ConnectError)
"""
What a socket's send raises when the datagram cannot go (Twisted's UDP port
raises the middle two for a name or an address of the other family, and for
a datagram too long), and what a stream transport raises when it cannot
connect (L{ConnectError}); anything else from a send is a bug.
"""


def sendFailure(error: BaseException) -> Optional[str]:
    """
    Whether a send that raised C{error} is worth trying again.

    @return: C{None} when sending again may work (the network or the
        socket's buffer may recover); else why it never can, fit to be a
        reason phrase: C{"Message Too Large"}, C{"Connection Failed"} (a
        stream transport could not connect, or failed to lately), C{"Unreachable Address"} (an
        address this socket cannot send to, such as an IPv6 address for an
        IPv4 socket, or a name), or C{"Could Not Send"} (a bug in the send).
    """
    if isinstance(error, ConnectError):
        return "Connection Failed"
    if isinstance(error, MessageLengthError) or (
        isinstance(error, OSError) and error.errno == errno.EMSGSIZE
    ):
        return "Message Too Large"
    if isinstance(error, (InvalidAddressError, socket.gaierror)) or (
        isinstance(error, OSError) and error.errno in _NO_ADDRESS
    ):
        return "Unreachable Address"
    if isinstance(error, OSError):
        return None
    return "Could Not Send"

