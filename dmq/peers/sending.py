# -*- test-case-name: dmq.test.test_usrloc_peer,dmq.test.test_dialog -*-
"""
One way out for the stateful peers (usrloc, dialog): a body to one node,
or to every active node, with a failure to send logged rather than raised.
"""

from __future__ import annotations

from typing import Any, Optional

from twisted.internet.defer import Deferred
from twisted.python.failure import Failure

from dmq.interfaces import IDMQBus
from dmq.node import Node
from dmq.ratelimit import RateLimitedWarnings

__all__ = ["sendOrBroadcast"]


def sendOrBroadcast(
    bus: IDMQBus,
    peerId: str,
    body: bytes,
    node: Optional[Node],
    contentType: str,
    warnings: RateLimitedWarnings,
    cause: str,
    what: str,
) -> Deferred[object]:
    """
    Send C{body} to C{node}, or to every active node when C{node} is
    C{None}.

    @param cause: the rate limit's cause of the warning logged when the bus
        cannot send.
    @param what: what was sent, in that warning (C{"usrloc sync dump"}).
    @return: a L{Deferred} that fires with the response (or a broadcast's
        responses by node), or with C{None} once the failure is logged.
    """
    # Any: a Response, or a broadcast's Responses by node.
    d: Deferred[Any]
    if node is None:
        d = bus.broadcast(peerId, body, contentType=contentType)
    else:
        d = bus.send(peerId, body, node, contentType=contentType)

    def failed(failure: Failure) -> None:
        # The bus fails a send only when it cannot send at all (stopped,
        # full): not a bug, and Kamailio does not retry either.
        warnings.warn(cause, "{what} could not be sent: {error}", what=what, error=failure.getErrorMessage())

    return d.addErrback(failed)
