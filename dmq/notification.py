# -*- test-case-name: dmq.test.test_notification -*-
"""
The built-in membership peer, C{notification_peer}: it answers node lists
with ours, merges what it hears into the L{NodeManager}, passes news on while
Max-Forwards allows, and joins the bus through the notification addresses.

Nodes swap their lists (a C{text/plain} body, see L{dmq.nodelist}) when one
joins, at every ping, and whenever one hears something new.  The outcomes of
those exchanges (200, timeout) move node states; the L{DMQBus} reports them to
the L{NodeManager}, and this peer merges the lists that come back.
"""

from __future__ import annotations

from typing import Iterable, Optional

from twisted.application import service
from twisted.internet.defer import Deferred, DeferredList, succeed
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger
from zope.interface import implementer

from dmq import sip
from dmq.bus import DEFAULT_NOTIFICATION_CHANNEL, DMQBus
from dmq.interfaces import IDMQPeer, PeerResponse
from dmq.node import Node, NodeManager
from dmq.nodelist import parseNodeList

__all__ = ["NotificationPeer", "CONTENT_TYPE"]

CONTENT_TYPE = "text/plain"

# Max-Forwards of a join (the receiver passes it on once) and of a ping.
JOIN_MAX_FORWARDS = 2
PING_MAX_FORWARDS = 1


@implementer(IDMQPeer)
class NotificationPeer(service.Service):
    """
    The membership channel, as a peer and as the Service that joins the bus.

    On start it announces our list with Max-Forwards 2 to every node it knows
    (the seeds at first) and keeps trying, with a backoff, until one of them
    answers C{200}; Kamailio waits for its next ping instead, which is why
    start order matters there and not here.  On stop it tells the active
    nodes that we leave (ourselves as C{disabled}), waiting at most
    C{leaveTimeout} seconds for their answers.
    """

    _log = Logger()

    description = "DMQ membership: node lists"

    def __init__(
        self,
        clock: IReactorTime,
        bus: DMQBus,
        nodeManager: NodeManager,
        peerId: str = DEFAULT_NOTIFICATION_CHANNEL,
        joinRetryInitial: float = 1.0,
        joinRetryMax: float = 60.0,
        leaveTimeout: float = 2.0,
    ) -> None:
        self._clock = clock
        self._bus = bus
        self._nodeManager = nodeManager
        self.peerId = peerId
        self._joinRetryInitial = joinRetryInitial
        self._joinRetryMax = joinRetryMax
        self._leaveTimeout = leaveTimeout
        self._joinDelay = joinRetryInitial
        self._joinCall: Optional[IDelayedCall] = None
        self._joining: Optional[Deferred] = None
        self.joined = False

    # IDMQPeer

    def messageReceived(self, request: sip.Request, node: Optional[Node]) -> PeerResponse:
        """
        Merge the received list, answer with ours, and pass the news on when
        it changed something and Max-Forwards − 1 is still above 0.
        """
        forwards = (request.maxForwards or 0) - 1
        changed = self._merge(request.body, self._senderURI(request), "request")
        body = self._nodeManager.nodeListBody()
        if changed and forwards > 0:
            self._bus.broadcast(self.peerId, body, CONTENT_TYPE, maxForwards=forwards)
        return PeerResponse(200, "OK", body, CONTENT_TYPE)

    def nodeAdded(self, node: Node) -> None:
        pass

    def _senderURI(self, request: sip.Request) -> Optional[sip.URI]:
        try:
            return request.fromAddress.uri
        except sip.SIPParseError:
            return None

    def _merge(self, body: bytes, sender: Optional[sip.URI], what: str) -> int:
        parsed = parseNodeList(body)
        for error in parsed.errors:
            self._log.warn(
                "Skipped a bad node-list line in a {what} from {sender}: {error}",
                what=what,
                sender=sender,
                error=error,
            )
        return self._nodeManager.merge(parsed.entries, sender=sender)

    # Sending our list

    def announce(
        self, targets: Iterable[Node], maxForwards: int, timeout: Optional[float] = None
    ) -> Deferred:
        """
        Send our node list to each of C{targets} and merge the lists they
        answer with.

        @param timeout: seconds after which a node that has not answered
            counts as timed out; C{None} for the transaction's Timer F.

        @return: a L{Deferred} firing with the number of nodes that answered
            C{200}, once every exchange has ended.
        """
        body = self._nodeManager.nodeListBody()
        deferreds = []
        for node in targets:
            d = self._bus.send(self.peerId, body, node, CONTENT_TYPE, maxForwards, timeout=timeout)
            d.addCallback(self._answered, node)
            d.addErrback(self._notSent, node)
            deferreds.append(d)
        result = DeferredList(deferreds)
        result.addCallback(lambda results: sum(1 for ok, value in results if ok and value))
        return result

    def _answered(self, response: sip.Response, node: Node) -> bool:
        if response.code != 200:
            return False
        self._merge(response.body, node.uri, "reply")
        return True

    def _notSent(self, failure, node: Node) -> bool:
        self._log.warn(
            "Could not send our node list to {node}: {error}",
            node=node.uri,
            error=failure.getErrorMessage(),
        )
        return False

    # Joining and leaving

    def startService(self) -> None:
        service.Service.startService(self)
        self._join()

    def _join(self) -> None:
        self._joinCall = None
        targets = self._nodeManager.pingTargets()
        if not targets:
            # A node with no seeds is a bus of one until someone joins it.
            return
        self._joining = self.announce(targets, JOIN_MAX_FORWARDS)
        self._joining.addCallback(self._joinDone)

    def _joinDone(self, answered: int) -> None:
        self._joining = None
        if not self.running:
            return
        if answered:
            self.joined = True
            self._log.info("Joined the bus: {count} node(s) answered", count=answered)
            return
        self._log.warn(
            "No notification address answered; trying again in {delay} s", delay=self._joinDelay
        )
        self._joinCall = self._clock.callLater(self._joinDelay, self._join)
        self._joinDelay = min(self._joinDelay * 2, self._joinRetryMax)

    def stopService(self) -> Deferred:
        service.Service.stopService(self)
        if self._joinCall is not None:
            self._joinCall.cancel()
            self._joinCall = None
        targets = self._nodeManager.activeNodes()
        if not targets:
            return succeed(None)
        body = self._nodeManager.leavingBody()
        sends = [
            self._bus.send(self.peerId, body, node, CONTENT_TYPE, PING_MAX_FORWARDS)
            for node in targets
        ]
        leaving = DeferredList(sends, consumeErrors=True)
        leaving.addTimeout(self._leaveTimeout, self._clock)
        leaving.addErrback(lambda _: None)
        for d in sends:
            d.addErrback(lambda _: None)
        return leaving
