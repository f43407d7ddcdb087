# -*- test-case-name: dmq.test.test_notification -*-
"""
The built-in membership peer, C{notification_peer}: it answers node lists
with ours, merges what it hears into the L{NodeManager}, passes news on while
Max-Forwards allows, and joins the bus through the notification addresses.

Nodes swap their lists (a C{text/plain} body, see L{dmq.nodelist}) when one
joins, at every ping, and whenever one hears something new.  The outcomes of
the bus's sends (200, timeout) move node states: this peer hears of them
from the L{DMQBus}, applies Kamailio's response callbacks to the
L{NodeManager}, and merges the lists that come back.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable, Dict, Iterable, List, Optional, Sequence, Tuple, Union

from twisted.application import service
from twisted.internet.defer import CancelledError, Deferred, DeferredList, succeed
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.internet.interfaces import IResolver
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from dmq import sip
from dmq.bus import DEFAULT_NOTIFICATION_CHANNEL, DMQBus
from dmq.interfaces import IDMQPeer, PeerResponse
from dmq.node import Node, NodeManager, NodeStatus
from dmq.nodeaddress import shown
from dmq.nodelist import CONTENT_TYPE, NodeIdentity, NodeLine, parseNodeList
from dmq.ratelimit import RateLimitedWarnings
from dmq.sender import SendOutcome
from dmq.transaction import TransactionLayerStopped

if TYPE_CHECKING:
    from dmq.discovery import Discovery

__all__ = ["NotificationPeer", "CONTENT_TYPE"]

def _at(line: NodeLine, source: Tuple[str, int]) -> bool:
    """
    Whether C{line} names the node at C{source}: its host is that IP
    address, and its effective port that port, unless it is a node over
    TCP or TLS, whose connections come from any port.
    """
    identity = NodeIdentity.of(line.uri)
    port, transport = identity.address
    return identity.ip == source[0] and (port == source[1] or transport in ("tcp", "tls"))


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

    From its creation it tells the node manager the outcome of every send of
    the bus, on every channel (L{sendEnded}).

    A bad line in a received list is skipped, counted in the node manager's
    C{statistics} (as C{nodeLine<Cause>}, say C{nodeLineBadHost}) and
    logged at most once a minute for each cause.
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
        expandSeeds: Sequence[sip.URI] = (),
        resolver: Optional[IResolver] = None,
        refreshInterval: Optional[float] = None,
    ) -> None:
        """
        @param expandSeeds: notification addresses named by a host name, to
            resolve (L{dmq.discovery}: SRV, A and AAAA records) into one seed
            per address before each join attempt and every
            C{refreshInterval} seconds: Kamailio's C{multi_notify}.
        @param resolver: the L{IResolver} that resolves them.
        @param refreshInterval: seconds between resolutions of
            C{expandSeeds} once started, or C{None} for none but the joins'.
        """
        if expandSeeds and resolver is None:
            raise ValueError("expanding notification addresses needs a resolver")
        self._expandSeeds = list(expandSeeds)
        self._discovery: Optional[Discovery] = None
        if self._expandSeeds:
            assert resolver is not None  # checked above; for mypy
            # twisted.names comes with discovery: only nodes that resolve
            # names (multi_notify) pay for it.
            from dmq.discovery import Discovery

            self._discovery = Discovery(
                clock, resolver, self._expandSeeds, self._seedFound, self._seedLost, refreshInterval
            )
        self._clock = clock
        self._warnings = RateLimitedWarnings(clock, self._log)
        self._bus = bus
        self._nodeManager = nodeManager
        self.peerId = peerId
        self._joinRetryInitial = joinRetryInitial
        self._joinRetryMax = joinRetryMax
        self._leaveTimeout = leaveTimeout
        self._joinDelay = joinRetryInitial
        self._joinCall: Optional[IDelayedCall] = None
        self._joining: Optional[Deferred[int]] = None
        self._leaving = False
        self.joined = False
        #: A predicate saying which nodes a failure detector watches
        #: (L{dmq.probe.ProbeDetector.covers}): their notification timeouts
        #: are its business, not Kamailio's rules'.
        self.covered: Optional[Callable[[Node], bool]] = None
        bus.addOutcomeObserver(self.sendEnded)

    def sendEnded(self, outcome: SendOutcome) -> None:
        """
        One of the bus's sends ended: move the node's state as Kamailio's
        response callbacks do.  On this channel, a C{200} makes the node
        active and a C{408} demotes or removes it
        (L{NodeManager.notificationSucceeded},
        L{NodeManager.notificationTimedOut}); on any other, a C{408} counts
        as a failure (L{NodeManager.otherRequestTimedOut}).
        """
        code = outcome.response.code
        if outcome.peerId == self.peerId:
            if code == 200:
                self._nodeManager.notificationSucceeded(outcome.node)
            elif code == 408 and not (self.covered is not None and self.covered(outcome.node)):
                self._nodeManager.notificationTimedOut(outcome.node, outcome.statusAtSend)
        elif code == 408:
            self._nodeManager.otherRequestTimedOut(outcome.node)

    # IDMQPeer

    acceptsStrangers = True
    """
    A node not yet a member joins through us: its node list is taken, but
    only its own line (L{messageReceivedFrom}).
    """

    def messageReceived(self, request: sip.Request, node: Optional[Node]) -> PeerResponse:
        """
        Merge the received list, answer with ours, and pass the news on when
        it changed something and Max-Forwards − 1 is still above 0.

        Without the source address (a request handed over by another way
        than the bus's), a sender that is not a member is taken for a
        stranger whose address is unknown: none of its lines is merged.
        """
        return self.messageReceivedFrom(request, node, None)

    def messageReceivedFrom(
        self, request: sip.Request, node: Optional[Node], source: Optional[Tuple[str, int]]
    ) -> PeerResponse:
        """
        L{messageReceived}, told where the request came from.  A member's
        list is merged whole, as Kamailio merges it; a non-member's (the
        join) introduces only its sender: the lines naming the node at
        C{source}.  Its other lines are ignored and counted as
        C{strangerLines} (L{dmq.trust.Refusals}), so that one datagram from
        a stranger cannot add, disable or remove other nodes.  No line
        changes our own entry.
        """
        if self._leaving:
            # Our goodbye may cross a ping: answer it with the goodbye too, or
            # the 200 would make the pinger take us for active again.
            return PeerResponse(200, "OK", self._nodeManager.leavingBody(), CONTENT_TYPE)
        forwards = (request.maxForwards or 0) - 1
        if node is not None:
            changed = self._merge(request.body, node, "request")
        else:
            changed = self._merge(request.body, None, "request", stranger=source)
        if changed and forwards > 0:
            # As Kamailio's, the news goes to every active node, the sender
            # included, and their answers are merged too.
            self.announce(self._nodeManager.activeNodes(), forwards)
        return PeerResponse(200, "OK", self._nodeManager.nodeListBody(), CONTENT_TYPE)

    def nodeAdded(self, node: Node) -> None:
        pass

    def _merge(
        self,
        body: bytes,
        sender: Union[Node, sip.URI, None],
        what: str,
        stranger: Optional[Tuple[str, int]] = None,
    ) -> int:
        parsed = parseNodeList(body)
        if parsed.errors:
            statistics = self._nodeManager.statistics
            first: Dict[str, str] = {}
            for cause, error in zip(parsed.causes, parsed.errors):
                statistics["nodeLine" + cause[0].upper() + cause[1:]] += 1
                first.setdefault(cause, error)
            for cause, error in first.items():
                self._warnings.warn(
                    "nodeLine." + cause,
                    "Skipped {count} bad node-list line(s) in a {what} from {sender}, such as {error}",
                    count=len(parsed.errors),
                    what=what,
                    sender=shown(str(sender if stranger is None else stranger), 80),
                    error=error,
                )
        entries = parsed.entries
        if sender is None:
            own = [line for line in entries if stranger is not None and _at(line, stranger)]
            if len(own) < len(entries):
                self._bus.refusals.refuse(
                    "strangerLines", stranger, "node list's other lines", len(entries) - len(own)
                )
            if not own:
                return 0
            entries, sender = own, own[0].uri
        return self._nodeManager.merge(entries, sender=sender)

    # Sending our list

    def announce(
        self, targets: Iterable[Node], maxForwards: int, timeout: Optional[float] = None
    ) -> Deferred[int]:
        """
        Send our node list to each of C{targets} and merge the lists they
        answer with.

        @param timeout: seconds after which a node that has not answered
            counts as timed out; C{None} for the transaction's Timer F.

        @return: a L{Deferred} firing with the number of nodes that answered
            C{200}, once every exchange has ended.
        """
        body = self._nodeManager.nodeListBody()
        deferreds: List[Deferred[bool]] = []
        for node in targets:
            d = self._bus.send(self.peerId, body, node, CONTENT_TYPE, maxForwards, timeout=timeout)
            deferreds.append(d.addCallback(self._answered, node).addErrback(self._notSent, node))
        result = DeferredList(deferreds)
        return result.addCallback(lambda results: sum(1 for ok, value in results if ok and value))

    def _answered(self, response: sip.Response, node: Node) -> bool:
        if response.code != 200:
            return False
        self._merge(response.body, node.uri, "reply")
        return True

    def _notSent(self, failure: Failure, node: Node) -> bool:
        if failure.check(TransactionLayerStopped, CancelledError):
            # We are stopping: nothing to tell.
            return False
        self._warnings.warn(
            "notSent",
            "Could not send our node list to {node}: {error}",
            node=node.uri,
            error=failure.getErrorMessage(),
        )
        return False

    # Joining and leaving

    def startService(self) -> None:
        service.Service.startService(self)
        self._leaving = False
        self.joined = False
        self._joinDelay = self._joinRetryInitial
        self._join()
        if self._discovery is not None:
            self._discovery.start()

    def _join(self) -> None:
        self._joinCall = None
        if self._expandSeeds:
            d = self._expand()
            d.addCallback(lambda _: self._announceJoin() if self.running else None)
        else:
            self._announceJoin()

    def _expand(self) -> Deferred[List[sip.URI]]:
        """
        Resolve every host name in C{expandSeeds} (L{Discovery.refresh}):
        each new address is added as a seed, each address gone is a seed no
        more.
        """
        if self._discovery is None:
            return succeed([])
        return self._discovery.refresh()

    def _seedFound(self, name: sip.URI, uri: sip.URI) -> None:
        node = self._nodeManager.addSeed(uri)
        if node is None:
            return
        self._log.info(
            "Notification address {name} gave seed {node}",
            name=name.toString(),
            node=node.uri.toString(),
        )
        if self.joined and self.running:
            # Found by a refresh: join it now rather than at the next ping.
            self.announce([node], JOIN_MAX_FORWARDS)

    def _seedLost(self, name: sip.URI, uri: sip.URI) -> None:
        self._nodeManager.dropSeed(uri)

    def _announceJoin(self) -> None:
        targets = self._nodeManager.pingTargets()
        if not targets:
            if self._expandSeeds:
                # The names did not resolve (yet): try them again later.
                self._joinDone(0)
            # Otherwise a node with no seeds is a bus of one until someone
            # joins it.
            return
        self._joining = self.announce(targets, JOIN_MAX_FORWARDS)
        self._joining.addCallback(self._joinDone, targets)

    def _joinDone(self, answered: int, asked: Sequence[Node] = ()) -> None:
        self._joining = None
        if not self.running:
            return
        if answered:
            self.joined = True
            self._log.info("Joined the bus: {count} node(s) answered", count=answered)
            # Introduce ourselves to the nodes the answers told us of.  Their
            # relayed news of us may not be enough: a node that removed us
            # (we crashed and restarted) takes only our own word for it.
            others = [node for node in self._nodeManager.activeNodes() if node not in asked]
            if others:
                self.announce(others, PING_MAX_FORWARDS)
            return
        self._log.warn(
            "No notification address answered; trying again in {delay} s", delay=self._joinDelay
        )
        self._joinCall = self._clock.callLater(self._joinDelay, self._join)
        self._joinDelay = min(self._joinDelay * 2, self._joinRetryMax)

    # Any: it fires with None or with the DeferredList's results, which
    # nobody reads; the service parent only waits for it.
    def stopService(self) -> Deferred[Any]:
        service.Service.stopService(self)
        self._leaving = True
        if self._discovery is not None:
            self._discovery.stop()
        if self._joinCall is not None:
            self._joinCall.cancel()
            self._joinCall = None
        # Every node we know hears it, as from Kamailio: one we think down
        # may only have missed our pings.
        body = self._nodeManager.leavingBody()
        sends = []
        for node in self._nodeManager.pingTargets():
            d = self._bus.send(self.peerId, body, node, CONTENT_TYPE, PING_MAX_FORWARDS)
            d.addErrback(lambda _: None)
            # Waiting is for the nodes that answer; the others get the one
            # datagram.
            if node.status is NodeStatus.ACTIVE:
                sends.append(d)
        if not sends:
            return succeed(None)
        leaving = DeferredList(sends, consumeErrors=True)
        leaving.addTimeout(self._leaveTimeout, self._clock)
        leaving.addErrback(lambda _: None)
        return leaving
