# -*- test-case-name: dmq.test.test_bus -*-
"""
The bus: the registry of peers, the dispatch of incoming KDMQ requests to
them through a bounded job queue (L{dmq.jobqueue}), and the ways out,
L{DMQBus.send} and L{DMQBus.broadcast} (L{dmq.sender}).

This is Kamailio's C{register_dmq_peer}, C{dmq_handle_message},
C{send_message} and C{bcast_message}, with two promises Kamailio does not
make: every request accepted gets a final reply before the sender gives up
(a peer that raises or is too slow is answered C{500}), and requests from one
node to one peer reach that peer in the order they arrived.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any, Callable, Dict, Hashable, List, Optional, Sequence, Tuple, Union

import attr
from twisted.application import service
from twisted.internet.defer import Deferred, maybeDeferred
from twisted.internet.interfaces import IReactorTime
from twisted.python.failure import Failure
from twisted.logger import Logger
from zope.interface import implementer

from dmq import __version__, sip
from dmq.interfaces import IDMQBus, IDMQPeer, INodeObserver, PeerResponse
from dmq.jobqueue import JobTimedOut, KeyedJobQueue, QueueFull, ShareUsed
from dmq.node import NodeManager
from dmq.nodelist import Node
from dmq.sender import KDMQSender, SendOutcome, checkPeerId
from dmq.transaction import ServerTransaction
from dmq.ratelimit import RateLimitedWarnings
from dmq.transport import KDMQ, SIPDatagramProtocol
from dmq.trust import REFUSAL_CAUSES, Refusals, SigningTransport, Trust

__all__ = ["DMQBus", "SendOutcome", "DEFAULT_NOTIFICATION_CHANNEL", "UNKNOWN_PEER", "checkPeerId"]

DEFAULT_NOTIFICATION_CHANNEL = "notification_peer"

# What requests for a peer not registered here count under, so that
# senders cannot grow the statistics without bound.
UNKNOWN_PEER = "_unknown"

Address = Tuple[str, int]

# How the bus answers a request: with the code, reason, headers and body of
# the final response (a server transaction's reply, or the Deferred of
# handleRequest).
_Answer = Callable[[int, str, Sequence[Tuple[str, str]], bytes], None]

_SERVER = ("Server", f"dmq/{__version__}")


def _sourceOf(key: Tuple[Address, str]) -> Address:
    # The job queue's keys are (source, peer); a sender's share is per source.
    return key[0]


@attr.frozen
class _Registered:
    """
    A registered peer, with what the way in asks of it on every request.

    @ivar peerId: its channel name, the key it is registered under.
    @ivar strangers: whether it takes requests from non-members.
    @ivar withSource: whether it is called with C{messageReceivedFrom}
        (and the source address) rather than C{messageReceived}.
    """

    peer: IDMQPeer
    peerId: str
    strangers: bool
    withSource: bool


@implementer(IDMQBus, INodeObserver)
class DMQBus(service.Service):
    """
    A node's view of the bus, as a Service.

    @ivar localNode: our own L{Node}.
    @ivar statistics: counters of requests answered and sent, keyed
        C{("in" or "out", peerId, code)}; requests for peers not registered
        here count under L{UNKNOWN_PEER}.
    @ivar latencyObserver: called with C{(peerId, seconds)} for every request
        a peer was given, with the time from its arrival to its answer.
    @ivar refusals: the requests refused, by cause (L{dmq.trust.Refusals}).
    """

    _log = Logger()

    def __init__(
        self,
        clock: IReactorTime,
        protocol: SIPDatagramProtocol,
        nodeManager: NodeManager,
        numWorkers: int = 2,
        maxQueue: int = 1024,
        handlerTimeout: float = 10.0,
        notificationChannel: str = DEFAULT_NOTIFICATION_CHANNEL,
        resolve: Optional[Callable[[str], Deferred[str]]] = None,
        trust: Optional[Trust] = None,
        share: Optional[int] = None,
    ) -> None:
        """
        @param protocol: the SIP transport (a L{dmq.transport.SIPDatagramProtocol}
            or anything with its C{setHandler} and C{sendRequest}).
        @param nodeManager: the L{NodeManager} that holds the node list: the
            bus finds the senders of requests there, and sends to its nodes.
        @param numWorkers: how many peer calls may run at once (Kamailio's
            C{num_workers}).
        @param maxQueue: how many accepted requests may wait for a worker;
            past that, requests are answered C{503} at once.
        @param handlerTimeout: seconds from arrival within which a peer must
            answer; past it the request is answered C{500}.  Keep it well under
            the sender's Timer F (32 s), so a slow peer never makes the sender
            see a silent timeout.
        @param notificationChannel: the membership channel's name, kept as
            C{notificationChannel} for whoever asks; the bus itself treats
            every channel alike, and reports every send's outcome to its
            outcome observers.
        @param resolve: turns a host name into an address, for nodes named by
            a host name; C{None} when only IP addresses are expected.
        @param trust: who is admitted, and the keyring that signs our
            requests and replies (L{dmq.trust.Trust}); by default everyone
            is, and nothing is signed.
        @param share: how many requests of one source address may wait for
            a worker; past it, that source is answered C{503} with a
            C{Retry-After}.  By default a quarter of C{maxQueue}.
        """
        if handlerTimeout <= 0:
            raise ValueError("handlerTimeout must be positive")
        self._clock = clock
        self._protocol = protocol
        self._nodeManager = nodeManager
        # One FIFO per (source, peer): a node's requests to a peer are
        # handled in the order they came, and no source waits for more
        # than its share.
        self._jobs = KeyedJobQueue(
            clock, numWorkers, maxQueue, handlerTimeout, groupOf=_sourceOf, share=share
        )
        self._retryAfter = (("Retry-After", str(max(1, int(handlerTimeout + 0.999)))), _SERVER)
        self._warnings = RateLimitedWarnings(clock, self._log)
        if trust is None:
            trust = Trust(clock)
        self.refusals: Refusals = trust.refusals
        # None when admission is open: the way in then asks nothing more.
        self._trust: Optional[Trust] = trust if trust.active else None
        self._keyring = trust.keyring
        sending: Union[SIPDatagramProtocol, SigningTransport] = protocol
        if trust.keyring is not None:
            # Our requests leave signed and their replies are checked,
            # under the transaction layer: the sender knows nothing of it.
            sending = SigningTransport(protocol, trust)
        self._sender = KDMQSender(clock, sending, nodeManager, resolve)
        self._sender.addOutcomeObserver(self._countSent)
        self.notificationChannel = notificationChannel
        self._peers: Dict[str, IDMQPeer] = OrderedDict()
        self._registered: Dict[str, _Registered] = {}
        self.statistics: Dict[Tuple[str, str, int], int] = {}
        self.latencyObserver: Optional[Callable[[str, float], None]] = None

    @property
    def localNode(self) -> Node:
        return self._nodeManager.localNode

    @property
    def trustActive(self) -> bool:
        """
        Whether admission is guarded (C{--allow-from} or a keyring); when
        not, anyone may join and send.
        """
        return self._trust is not None

    @property
    def queueDepth(self) -> int:
        """
        How many accepted requests wait for a worker.
        """
        return self._jobs.depth

    @property
    def peers(self) -> List[IDMQPeer]:
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

    def stopService(self) -> Deferred[None]:
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
        d = self._jobs.whenIdle()
        return d.addCallback(self._stopped)

    def _stopped(self, ignored: object) -> Deferred[None]:
        self._protocol.setHandler(KDMQ, None)
        return self._protocol.stop()

    # Peers

    def registerPeer(self, peer: IDMQPeer) -> None:
        if not IDMQPeer.providedBy(peer):
            raise TypeError(f"{peer!r} does not provide IDMQPeer")
        peerId = checkPeerId(peer.peerId)
        if peerId in self._peers:
            raise ValueError(f"a peer named {peerId!r} is already registered")
        self._peers[peerId] = peer
        self._registered[peerId] = _Registered(
            peer,
            peerId,
            bool(getattr(peer, "acceptsStrangers", False)),
            callable(getattr(peer, "messageReceivedFrom", None)),
        )

    def unregisterPeer(self, peerId: str) -> None:
        del self._peers[peerId]
        del self._registered[peerId]

    def nodeActivated(self, node: Node) -> None:
        """
        The node manager saw C{node} become active: tell every peer.
        """
        for peer in list(self._peers.values()):
            d = maybeDeferred(peer.nodeAdded, node)
            # The lambda's default argument (the loop's peer, bound now) is
            # more than addErrback's ParamSpec overloads can match.
            d.addErrback(  # type: ignore[call-overload]
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
        """
        A new KDMQ request came: hand it to its peer, and answer it with
        what the peer answers.
        """
        # A new transaction's request is there until it is answered.
        assert transaction.request is not None
        self._dispatch(transaction.request, transaction.source, transaction.reply)

    def handleRequest(self, request: sip.Request, source: Address) -> Deferred[sip.Response]:
        """
        Dispatch a KDMQ request to its peer; see L{IDMQBus.handleRequest}.
        """
        d: Deferred[sip.Response] = Deferred()

        def answer(
            code: int, reason: str, headers: Sequence[Tuple[str, str]] = (), body: bytes = b""
        ) -> None:
            if not d.called:
                d.callback(
                    sip.responseFor(request, code, reason, headers, body, toTag=sip.newTag())
                )

        self._dispatch(request, source, answer)
        return d

    def _dispatch(self, request: sip.Request, source: Address, answer: _Answer) -> None:
        """
        Hand C{request} to its peer, through the job queue, and give its
        answer to C{answer}; answer requests that reach no peer, or that
        are refused, at once.

        The sender is a member when its source address is an active node's
        or a seed's (L{NodeManager.memberAt}, Kamailio's
        C{dmq_is_from_node()}), never by its From URI, which anyone can
        write.  A non-member reaches only the peers that accept strangers
        (the notification peer, for the join).

        This is the way of every request, and the usual one runs straight
        through: a peer that answers at once, while nothing of its sender
        waits for it, is called from here and answered from here, with no
        L{Deferred} and no timer.  A peer that answers with a L{Deferred},
        or a sender whose earlier requests still wait, takes the queue's
        slower way.
        """
        peerId = request.uri.user
        registered = self._registered.get(peerId) if peerId is not None else None
        if not self.running:
            if self._keyring is not None:
                answer = self._refusing(answer, request)
            self._early(answer, registered.peerId if registered else UNKNOWN_PEER, 503, "Shutting Down")
            return
        node = self._nodeManager.memberAt(source[0], source[1])
        trust = self._trust
        if trust is not None:
            refused = trust.check(request, source, node)
            if refused is not None:
                if self._keyring is not None:
                    answer = self._refusing(answer, request)
                self._refuse(answer, registered.peerId if registered else UNKNOWN_PEER, refused, source)
                return
            if self._keyring is not None:
                answer = self._signing(answer, request)
        if registered is None:
            if peerId is None:
                self._early(answer, UNKNOWN_PEER, 400, "Missing Peer In Request-URI")
            else:
                self._early(answer, UNKNOWN_PEER, 404, "User Not Found")
            return
        peerId = registered.peerId
        if node is None:
            if not registered.strangers:
                self._refuse(answer, peerId, "notMember", source)
                return
        else:
            node.lastNotification = self._clock.seconds()
        peer = registered.peer
        arrived = self._clock.seconds()
        try:
            if registered.withSource:
                # An optional method (IDMQPeer's docstring), left out of the
                # interface so that other peers need not write it: withSource
                # says this peer has it.
                result = self._jobs.call(
                    (source, peerId), peer.messageReceivedFrom, request, node, source  # type: ignore[attr-defined]
                )
            else:
                result = self._jobs.call((source, peerId), peer.messageReceived, request, node)
        except ShareUsed:
            self.refusals.refuse("flooding", source)
            self._count("in", peerId, 503)
            answer(503, REFUSAL_CAUSES["flooding"], self._retryAfter, b"")
            return
        except QueueFull:
            self._warnings.warn(
                "queueFull",
                "Queue full ({depth} waiting): answered 503 to {peer} from {source}",
                depth=self._jobs.depth,
                peer=peerId,
                source=source,
            )
            self._early(answer, peerId, 503, "Queue Full")
            return
        # The queue's Deferreds are its own: a type check tells them apart.
        if type(result) is not Deferred:
            self._answer(result, answer, peer, arrived)
            return
        result.addCallbacks(
            self._answer,
            self._failed,
            callbackArgs=(answer, peer, arrived),
            errbackArgs=(answer, peer, node, arrived),
        )
        result.addErrback(self._couldNotAnswer, answer, request)

    def _refuse(self, answer: _Answer, peerId: str, cause: str, source: Address) -> None:
        """
        Refuse a request with C{403}: counted by C{cause}, logged with its
        source at most once a minute.
        """
        self.refusals.refuse(cause, source)
        self._early(answer, peerId, 403, REFUSAL_CAUSES[cause])

    def _signing(self, answer: _Answer, request: sip.Request) -> _Answer:
        """
        C{answer}, signing each reply to C{request}.
        """
        trust = self._trust
        assert trust is not None

        def signed(
            code: int, reason: str, headers: Sequence[Tuple[str, str]], body: bytes
        ) -> None:
            answer(code, reason, trust.signedReply(request, code, headers, body), body)

        return signed

    def _refusing(self, answer: _Answer, request: sip.Request) -> _Answer:
        """
        C{answer}, signing a refusal of C{request} made before it was
        admitted (L{Trust.signedRefusal}): bound to the whole request and
        its transaction, since its own signature, bad or replayed, proves
        nothing; left unsigned when the request is.
        """
        trust = self._trust
        assert trust is not None

        def signed(
            code: int, reason: str, headers: Sequence[Tuple[str, str]], body: bytes
        ) -> None:
            answer(code, reason, trust.signedRefusal(request, code, reason, headers, body), body)

        return signed

    def _answer(self, result: object, answer: _Answer, peer: IDMQPeer, arrived: float) -> None:
        """
        The peer answered C{result}: count it, and answer the request.
        """
        peerId = peer.peerId
        if isinstance(result, PeerResponse):
            code = result.code
            reason = result.reason
            body = result.body
            headers = (
                (("Content-Type", result.contentType), _SERVER)
                if result.contentType
                else (_SERVER,)
            )
        else:
            self._log.error(
                "Peer {peer} answered {result!r}, not a PeerResponse",
                peer=peerId,
                result=result,
            )
            code, reason, headers, body = 500, "Peer Error", (_SERVER,), b""
        statistics = self.statistics
        counter = ("in", peerId, code)
        statistics[counter] = statistics.get(counter, 0) + 1
        if self.latencyObserver is not None:
            self.latencyObserver(peerId, self._clock.seconds() - arrived)
        answer(code, reason, headers, body)

    def _failed(
        self, failure: Failure, answer: _Answer, peer: IDMQPeer, node: Optional[Node], arrived: float
    ) -> None:
        if failure.check(JobTimedOut):
            self._log.warn(
                "Peer {peer} did not answer within {timeout} s; answered 500",
                peer=peer.peerId,
                timeout=self._jobs.timeout,
            )
            reason = "Peer Timed Out"
        else:
            self._log.failure(
                "Peer {peer} failed on a message from {sender}",
                failure,
                peer=peer.peerId,
                sender=node.uri if node is not None else None,
            )
            reason = "Peer Error"
        self._answer(PeerResponse(500, reason), answer, peer, arrived)

    def _couldNotAnswer(self, failure: Failure, answer: _Answer, request: sip.Request) -> None:
        """
        A bug kept the reply from going out: log it, and still answer.
        """
        self._log.failure("Could not answer {request}", failure, request=request.uri)
        answer(500, "Server Internal Error", (_SERVER,), b"")

    def _early(self, answer: _Answer, peerId: str, code: int, reason: str) -> None:
        """
        Answer a request that reaches no peer.
        """
        self._count("in", peerId, code)
        answer(code, reason, (_SERVER,), b"")

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
        Build a KDMQ request as Kamailio does: see L{KDMQSender.buildRequest}.
        """
        return self._sender.buildRequest(peerId, body, node, contentType, maxForwards)

    def send(
        self,
        peerId: str,
        body: bytes,
        node: Node,
        contentType: str = "text/plain",
        maxForwards: int = 1,
        timeout: Optional[float] = None,
    ) -> Deferred[sip.Response]:
        """
        Send to one node; see L{IDMQBus.send} and L{KDMQSender.send}.
        """
        return self._sender.send(peerId, body, node, contentType, maxForwards, timeout)

    def broadcast(
        self,
        peerId: str,
        body: bytes,
        contentType: str = "text/plain",
        exclude: Optional[object] = None,
        maxForwards: int = 1,
        includeInactive: bool = False,
    ) -> Deferred[Dict[Node, Union[sip.Response, Failure]]]:
        """
        Send to every active node but ourselves and C{exclude}; see
        L{IDMQBus.broadcast} and L{KDMQSender.broadcast}.
        """
        return self._sender.broadcast(
            peerId, body, contentType, exclude, maxForwards, includeInactive
        )

    def addOutcomeObserver(self, observer: Callable[[SendOutcome], None]) -> None:
        """
        Call C{observer} with a L{SendOutcome} each time one of our sends
        ends with a response (the node's, or a local C{408}), before the
        sender's Deferred fires with it.  The membership code moves node
        states on these (see L{dmq.notification.NotificationPeer}).
        """
        self._sender.addOutcomeObserver(observer)

    def removeOutcomeObserver(self, observer: Callable[[SendOutcome], None]) -> None:
        """
        Stop calling C{observer}.
        """
        self._sender.removeOutcomeObserver(observer)

    def _countSent(self, outcome: SendOutcome) -> None:
        self._count("out", outcome.peerId, outcome.response.code)
