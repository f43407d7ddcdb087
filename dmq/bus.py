# -*- test-case-name: dmq.test.test_bus -*-
"""
The bus: the registry of peers, the dispatch of incoming KDMQ requests to
them through a bounded job queue, and the ways out, L{DMQBus.send} and
L{DMQBus.broadcast}.

This is Kamailio's C{register_dmq_peer}, C{dmq_handle_message},
C{send_message} and C{bcast_message}, with two promises Kamailio does not
make: every request accepted gets a final reply before the sender gives up
(a peer that raises or is too slow is answered C{500}), and requests from one
node to one peer reach that peer in the order they arrived.
"""

from __future__ import annotations

import itertools
import random
from collections import OrderedDict, deque
from typing import Callable, Deque, Dict, Hashable, List, Optional, Sequence, Tuple

import attr
from twisted.application import service
from twisted.internet.defer import Deferred, DeferredList, fail, maybeDeferred, succeed
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.python.failure import Failure
from twisted.logger import Logger
from zope.interface import implementer

from dmq import __version__, sip
from dmq.interfaces import IDMQBus, IDMQPeer, PeerResponse
from dmq.node import Node, NodeManager, ipLiteral
from dmq.transaction import ServerTransaction
from dmq.transport import KDMQ

__all__ = ["DMQBus", "DEFAULT_NOTIFICATION_CHANNEL", "UNKNOWN_PEER", "checkPeerId"]

DEFAULT_NOTIFICATION_CHANNEL = "notification_peer"

# What requests for a peer not registered here count under, so that
# senders cannot grow the statistics without bound.
UNKNOWN_PEER = "_unknown"

Address = Tuple[str, int]


def checkPeerId(peerId: object) -> str:
    """
    Check that C{peerId} can name a peer: a non-empty SIP user part without
    C{;}, since it travels as the Request-URI user.

    @return: C{peerId}.
    @raise ValueError: saying what is wrong.
    """
    if not isinstance(peerId, str) or not peerId:
        raise ValueError("a peer id is a non-empty string")
    try:
        uri = sip.parseURI(f"sip:{peerId}@127.0.0.1")
    except sip.SIPParseError:
        uri = None
    if uri is None or uri.user != peerId or ";" in peerId:
        raise ValueError(f"{peerId!r} is not a valid SIP user part")
    return peerId


@attr.define(eq=False)
class _Job:
    """
    One accepted request waiting for, or being handled by, its peer.
    """

    request: sip.Request
    peer: object
    node: Optional[Node]
    key: Hashable
    result: Deferred
    arrived: float
    deadline: Optional[IDelayedCall] = None
    running: Optional[Deferred] = None


@implementer(IDMQBus)
class DMQBus(service.Service):
    """
    A node's view of the bus, as a Service.

    @ivar localNode: our own L{Node}.
    @ivar statistics: counters of requests answered and sent, keyed
        C{("in" or "out", peerId, code)}; requests for peers not registered
        here count under L{UNKNOWN_PEER}.
    @ivar latencyObserver: called with C{(peerId, seconds)} for every request
        a peer was given, with the time from its arrival to its answer.
    """

    _log = Logger()

    def __init__(
        self,
        clock: IReactorTime,
        protocol,
        nodeManager: NodeManager,
        numWorkers: int = 2,
        maxQueue: int = 1024,
        handlerTimeout: float = 10.0,
        notificationChannel: str = DEFAULT_NOTIFICATION_CHANNEL,
        resolve: Optional[Callable[[str], Deferred]] = None,
    ) -> None:
        """
        @param protocol: the SIP transport (a L{dmq.transport.SIPDatagramProtocol}
            or anything with its C{setHandler} and C{sendRequest}).
        @param nodeManager: the L{NodeManager} that holds the node list; the bus
            reports the outcome of every send to it.
        @param numWorkers: how many peer calls may run at once (Kamailio's
            C{num_workers}).
        @param maxQueue: how many accepted requests may wait for a worker;
            past that, requests are answered C{503} at once.
        @param handlerTimeout: seconds from arrival within which a peer must
            answer; past it the request is answered C{500}.  Keep it well under
            the sender's Timer F (32 s), so a slow peer never makes the sender
            see a silent timeout.
        @param notificationChannel: the membership channel, whose 200s and
            timeouts move node states as Kamailio's notification callback does.
        @param resolve: turns a host name into an address, for nodes named by
            a host name; C{None} when only IP addresses are expected.
        """
        if numWorkers < 1:
            raise ValueError("numWorkers must be at least 1")
        if maxQueue < 0:
            raise ValueError("maxQueue must not be negative")
        if handlerTimeout <= 0:
            raise ValueError("handlerTimeout must be positive")
        self._clock = clock
        self._protocol = protocol
        self._nodeManager = nodeManager
        self._numWorkers = numWorkers
        self._maxQueue = maxQueue
        self._handlerTimeout = handlerTimeout
        self._resolve = resolve
        self.notificationChannel = notificationChannel
        self._peers: Dict[str, object] = OrderedDict()
        # Per (sender, peer) FIFO queues, and the keys that have a job ready
        # to run and none running, in the order they became ready.
        self._waiting: Dict[Hashable, Deque[_Job]] = {}
        self._ready: Deque[Hashable] = deque()
        self._busy: set = set()
        self._queued = 0
        self._running: set = set()
        self._callIDs = itertools.count(random.getrandbits(32))
        self._idle: List[Deferred] = []
        self.statistics: Dict[Tuple[str, str, int], int] = {}
        self.latencyObserver: Optional[Callable[[str, float], None]] = None

    @property
    def localNode(self) -> Node:
        return self._nodeManager.localNode

    @property
    def queueDepth(self) -> int:
        """
        How many accepted requests wait for a worker.
        """
        return self._queued

    @property
    def peers(self) -> List[object]:
        """
        The registered peers, in registration order.
        """
        return list(self._peers.values())

    def nodes(self) -> List[Node]:
        return self._nodeManager.nodes()

    def startService(self) -> None:
        service.Service.startService(self)
        self._protocol.start()
        self._protocol.setHandler(KDMQ, self._transactionReceived)
        self._nodeManager.addObserver(self)

    def stopService(self) -> Deferred:
        """
        Stop taking requests (new ones are answered C{503 Shutting Down}),
        let the ones accepted finish (each is bounded by the handler timeout),
        then end every transaction: a send still waiting for its answer then
        fails with L{dmq.transaction.TransactionLayerStopped}.

        @return: a L{Deferred} that fires when no job, timer or transaction is
            left.
        """
        service.Service.stopService(self)
        self._nodeManager.removeObserver(self)
        d = self._whenIdle()
        d.addCallback(self._stopped)
        return d

    def _stopped(self, ignored: object) -> Deferred:
        self._protocol.setHandler(KDMQ, None)
        return self._protocol.stop()

    def _whenIdle(self) -> Deferred:
        if not self._running and not self._queued:
            return succeed(None)
        d = Deferred()
        self._idle.append(d)
        return d

    def _checkIdle(self) -> None:
        if not self._running and not self._queued and self._idle:
            waiting, self._idle = self._idle, []
            for d in waiting:
                d.callback(None)

    # Peers

    def registerPeer(self, peer) -> None:
        if not IDMQPeer.providedBy(peer):
            raise TypeError(f"{peer!r} does not provide IDMQPeer")
        peerId = checkPeerId(peer.peerId)
        if peerId in self._peers:
            raise ValueError(f"a peer named {peerId!r} is already registered")
        self._peers[peerId] = peer

    def unregisterPeer(self, peerId: str) -> None:
        del self._peers[peerId]

    def nodeActivated(self, node: Node) -> None:
        """
        The node manager saw C{node} become active: tell every peer.
        """
        for peer in list(self._peers.values()):
            d = maybeDeferred(peer.nodeAdded, node)
            d.addErrback(
                lambda f, peer=peer: self._log.failure(
                    "Peer {peer} failed in nodeAdded({node})",
                    f,
                    peer=peer.peerId,
                    node=node.uri,
                )
            )

    def nodeDeactivated(self, node: Node) -> None:
        pass

    # The way in

    def _transactionReceived(self, transaction: ServerTransaction) -> None:
        request = transaction.request
        d = self.handleRequest(request, transaction.source)
        d.addCallback(transaction.respond)
        d.addErrback(self._couldNotAnswer, transaction, request)

    def _couldNotAnswer(self, failure: Failure, transaction: ServerTransaction, request) -> None:
        """
        A bug kept the reply from going out: log it, and still answer.
        """
        self._log.failure("Could not answer {request}", failure, request=request.uri)
        if not transaction.answered:
            transaction.respond(self._reply(request, 500, "Server Internal Error"))

    def handleRequest(self, request: sip.Request, source: Address) -> Deferred:
        """
        Dispatch a KDMQ request to its peer; see L{IDMQBus.handleRequest}.
        """
        peerId = request.uri.user
        if peerId is None:
            return self._early(request, UNKNOWN_PEER, 400, "Missing Peer In Request-URI")
        peer = self._peers.get(peerId)
        if peer is None:
            return self._early(request, UNKNOWN_PEER, 404, "User Not Found")
        if not self.running:
            return self._early(request, peerId, 503, "Shutting Down")
        senderURI = sip.fromURI(request)
        node = self._nodeManager.find(senderURI) if senderURI is not None else None
        senderKey: Hashable = node if node is not None else (
            (senderURI.host, senderURI.port) if senderURI is not None else source
        )
        key = (senderKey, peerId)
        canStartNow = len(self._running) < self._numWorkers and key not in self._busy
        if self._queued >= self._maxQueue and not canStartNow:
            self._log.warn(
                "Queue full ({depth} waiting): answered 503 to {peer} from {source}",
                depth=self._queued,
                peer=peerId,
                source=source,
            )
            return self._early(request, peerId, 503, "Queue Full")
        if node is not None:
            self._nodeManager.heardFrom(node)
        job = _Job(request, peer, node, key, Deferred(), self._clock.seconds())
        job.deadline = self._clock.callLater(self._handlerTimeout, self._timedOut, job)
        self._enqueue(job)
        return job.result

    def _enqueue(self, job: _Job) -> None:
        queue = self._waiting.get(job.key)
        if queue is None:
            queue = self._waiting[job.key] = deque()
            if job.key not in self._busy:
                self._ready.append(job.key)
        queue.append(job)
        self._queued += 1
        self._pump()

    def _pump(self) -> None:
        while self._ready and len(self._running) < self._numWorkers:
            key = self._ready.popleft()
            queue = self._waiting[key]
            job = queue.popleft()
            if not queue:
                del self._waiting[key]
            self._queued -= 1
            self._busy.add(key)
            self._run(job)

    def _run(self, job: _Job) -> None:
        self._running.add(job)
        try:
            result = job.peer.messageReceived(job.request, job.node)
        except BaseException:
            d = fail()
        else:
            if isinstance(result, PeerResponse):
                # Most peers answer at once: no Deferred to build and run.
                self._answered(result, job)
                return
            d = maybeDeferred(lambda: result)
        job.running = d
        d.addCallbacks(self._answered, self._failed, callbackArgs=(job,), errbackArgs=(job,))

    def _answered(self, result: object, job: _Job) -> None:
        if not isinstance(result, PeerResponse):
            self._log.error(
                "Peer {peer} answered {result!r}, not a PeerResponse",
                peer=job.peer.peerId,
                result=result,
            )
            self._finish(job, self._reply(job.request, 500, "Peer Error"))
            return
        headers = [("Content-Type", result.contentType)] if result.contentType else []
        self._finish(
            job, self._reply(job.request, result.code, result.reason, headers, result.body)
        )

    def _failed(self, failure: Failure, job: _Job) -> None:
        if job.result.called:
            # The deadline answered already and cancelled the peer's Deferred.
            return
        self._log.failure(
            "Peer {peer} failed on a message from {sender}",
            failure,
            peer=job.peer.peerId,
            sender=job.node.uri if job.node is not None else None,
        )
        self._finish(job, self._reply(job.request, 500, "Peer Error"))

    def _timedOut(self, job: _Job) -> None:
        job.deadline = None
        self._log.warn(
            "Peer {peer} did not answer within {timeout} s; answered 500",
            peer=job.peer.peerId,
            timeout=self._handlerTimeout,
        )
        if job.running is None:
            queue = self._waiting[job.key]
            queue.remove(job)
            self._queued -= 1
            if not queue:
                del self._waiting[job.key]
                # The key waits in _ready only while none of its jobs runs;
                # deadlines need not fire in arrival order.
                if job.key in self._ready:
                    self._ready.remove(job.key)
            self._respond(job, self._reply(job.request, 500, "Peer Timed Out"))
            self._checkIdle()
        else:
            self._finish(job, self._reply(job.request, 500, "Peer Timed Out"))
            job.running.cancel()

    def _finish(self, job: _Job, response: sip.Response) -> None:
        if job.result.called:
            return
        if job.deadline is not None:
            job.deadline.cancel()
            job.deadline = None
        self._running.discard(job)
        self._busy.discard(job.key)
        if job.key in self._waiting:
            self._ready.append(job.key)
        self._respond(job, response)
        self._pump()
        self._checkIdle()

    def _early(self, request: sip.Request, peerId: str, code: int, reason: str) -> Deferred:
        """
        Answer a request that reaches no peer.
        """
        self._count("in", peerId, code)
        return succeed(self._reply(request, code, reason))

    def _respond(self, job: _Job, response: sip.Response) -> None:
        peerId = job.peer.peerId
        self._count("in", peerId, response.code)
        if self.latencyObserver is not None:
            self.latencyObserver(peerId, self._clock.seconds() - job.arrived)
        job.result.callback(response)

    def _reply(
        self,
        request: sip.Request,
        code: int,
        reason: str,
        headers: Sequence[Tuple[str, str]] = (),
        body: bytes = b"",
    ) -> sip.Response:
        return sip.responseFor(
            request,
            code,
            reason,
            headers=[*headers, ("Server", f"dmq/{__version__}")],
            body=body,
            toTag=sip.newTag(),
        )

    def _count(self, direction: str, peerId: str, code: int) -> None:
        key = (direction, peerId, code)
        self.statistics[key] = self.statistics.get(key, 0) + 1

    # The way out

    def buildRequest(
        self,
        peerId: str,
        body: bytes,
        node: Node,
        contentType: str = "text/plain",
        maxForwards: int = 1,
    ) -> sip.Request:
        """
        Build a KDMQ request as Kamailio does (its reference, §2.1): Request-URI
        and To C{sip:<peer>@<node host:port>[;transport=t]}, From the same for
        our server address with a tag, then CSeq, Call-ID, User-Agent,
        Max-Forwards and Content-Type.  The transaction layer adds the Via.
        """
        _checkMaxForwards(maxForwards)
        if not sip.isHeaderValue(contentType):
            raise ValueError(f"not a one-line content type: {contentType!r}")
        checkPeerId(peerId)
        target = _peerURI(peerId, node.uri)
        local = self.localNode.uri
        fromURI = _peerURI(peerId, local)
        return sip.Request(
            KDMQ,
            target,
            (
                ("To", f"<{target.toString()}>"),
                ("From", f"<{fromURI.toString()}>;tag={sip.newTag()}"),
                ("CSeq", "10 KDMQ"),
                ("Call-ID", f"{next(self._callIDs) & 0xFFFFFFFFFFFF:x}-{random.getrandbits(32):08x}@{local.host}"),
                ("User-Agent", f"dmq/{__version__}"),
                ("Max-Forwards", str(maxForwards)),
                ("Content-Type", contentType),
            ),
            body,
        )

    def send(
        self,
        peerId: str,
        body: bytes,
        node: Node,
        contentType: str = "text/plain",
        maxForwards: int = 1,
        timeout: Optional[float] = None,
    ) -> Deferred:
        """
        Send to one node; see L{IDMQBus.send}.

        @param timeout: seconds after which to give up and fire with a local
            C{408}, when that is sooner than the transaction's own Timer F.
        """
        request = self.buildRequest(peerId, body, node, contentType, maxForwards)
        statusAtSend = node.status
        d = self._address(node, request)
        d.addCallback(
            lambda address: address
            if isinstance(address, sip.Response)
            else self._protocol.sendRequest(request, address)
        )
        if timeout is not None:
            d.addTimeout(
                timeout,
                self._clock,
                onTimeoutCancel=lambda result, timeout: sip.responseFor(
                    request, 408, "Request Timeout"
                ),
            )
        d.addCallback(self._sent, node, peerId, statusAtSend)
        return d

    def _address(self, node: Node, request: sip.Request) -> Deferred:
        """
        Where to send C{request} for C{node}: its address, once its host name
        (if it has one) is resolved.  The first address found is kept, as
        Kamailio keeps it.

        @return: a L{Deferred} firing with C{(ip, port)}, or with a local
            C{408} response when the name does not resolve or names a node
            known otherwise (ourselves, say): the node is then demoted and
            removed like one that does not answer.
        """
        host, port = node.address
        if ipLiteral(host) is not None or self._resolve is None:
            return succeed((host, port))
        d = self._resolve(host)

        def resolved(ip: str):
            survivor = self._nodeManager.setResolvedIP(node, ipLiteral(ip) or ip)
            if survivor is not node:
                self._log.info(
                    "{node} is {other}: not sending to it",
                    node=node.uri.toString(),
                    other="ourselves" if survivor.local else survivor.uri.toString(),
                )
                return sip.responseFor(request, 408, "Same As Another Node")
            return survivor.address

        def failed(failure: Failure):
            self._log.warn(
                "Cannot resolve {host} for node {node}: {error}",
                host=host,
                node=node.uri.toString(),
                error=failure.getErrorMessage(),
            )
            return sip.responseFor(request, 408, "Host Not Resolved")

        d.addCallbacks(resolved, failed)
        return d

    def _sent(self, response: sip.Response, node: Node, peerId: str, statusAtSend) -> sip.Response:
        self._count("out", peerId, response.code)
        manager = self._nodeManager
        if peerId == self.notificationChannel:
            if response.code == 200:
                manager.notificationSucceeded(node)
            elif response.code == 408:
                manager.notificationTimedOut(node, statusAtSend)
        elif response.code == 408:
            manager.otherRequestTimedOut(node)
        return response

    def broadcast(
        self,
        peerId: str,
        body: bytes,
        contentType: str = "text/plain",
        exclude: Optional[object] = None,
        maxForwards: int = 1,
        includeInactive: bool = False,
    ) -> Deferred:
        """
        Send to every active node but ourselves and C{exclude}; see
        L{IDMQBus.broadcast}.

        @param includeInactive: also send to nodes that are not active, as
            Kamailio's ping and join do.
        """
        _checkMaxForwards(maxForwards)
        excluded = _asSet(exclude)
        manager = self._nodeManager
        nodes = manager.pingTargets() if includeInactive else manager.activeNodes()
        targets = [node for node in nodes if node not in excluded and not node.local]
        deferreds = [
            self.send(peerId, body, node, contentType, maxForwards) for node in targets
        ]
        d = DeferredList(deferreds, consumeErrors=True)
        d.addCallback(
            lambda results: {
                node: value for node, (ok, value) in zip(targets, results)
            }
        )
        return d


def _checkMaxForwards(maxForwards: int) -> None:
    if maxForwards < 1:
        raise ValueError("maxForwards must be at least 1: Kamailio refuses Max-Forwards: 0")


def _asSet(exclude: object) -> set:
    if exclude is None:
        return set()
    if isinstance(exclude, Node):
        return {exclude}
    return set(exclude)  # type: ignore[call-overload]


def _peerURI(peerId: str, node: sip.URI) -> sip.URI:
    transport = node.transport
    parameters: sip.Parameters = ()
    if transport is not None and transport != "udp":
        parameters = (("transport", transport),)
    return sip.URI(host=node.host, port=node.port, user=peerId, parameters=parameters)
