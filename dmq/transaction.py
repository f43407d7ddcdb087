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
callable and time comes from an injected L{IReactorTime}.
"""

from __future__ import annotations

import secrets
from enum import Enum
from typing import Callable, Dict, Hashable, List, Optional, Tuple

import attrs
from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger

from dmq.sip import (
    MAGIC_COOKIE,
    Request,
    Response,
    SIPParseError,
    Via,
    newTag,
    responseFor,
    serialise,
)

__all__ = [
    "T1",
    "T2",
    "T4",
    "TransactionState",
    "TransactionLimitExceeded",
    "TransactionLayerStopped",
    "ServerTransaction",
    "TransactionLayer",
    "responseAddress",
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


def responseAddress(via: Via, source: Address) -> Address:
    """
    Where to send responses to a request received over an unreliable
    transport, by RFC 3261 §18.2.2 and RFC 3581.

    The host is the Via's C{received} parameter, or else its sent-by host
    (C{maddr} is ignored).  The port is the value of C{rport}, or the source
    port for a bare C{rport} that nobody filled in, or else the sent-by port,
    or 5060.

    @param via: the top Via of the request.
    @param source: the C{(host, port)} the request came from.
    @return: a C{(host, port)}.
    """
    host = via.received or via.host
    rport = via.rport
    if rport:
        if rport.isdigit() and 0 < int(rport) < 65536:
            return host, int(rport)
    elif rport == "":
        return host, source[1]
    return host, via.port or 5060


@attrs.define(eq=False)
class ServerTransaction:
    """
    A non-INVITE server transaction: one request received, answered through
    L{respond}.

    Instances are made by L{TransactionLayer.handleRequest} and handed to its
    C{requestReceived} callable; they are not made directly.

    @ivar request: the request that started this transaction, until a final
        response is given; then C{None}, so that an answered transaction,
        which lives on until Timer J to absorb retransmissions, does not
        keep the request (and its body) in memory.  Read what you need from
        it before giving the final response.
    @ivar method: the method of the request.
    @ivar source: the C{(host, port)} the request came from.
    @ivar response: the final response given, or C{None}.
    @ivar state: the current L{TransactionState}.
    """

    _log = Logger()

    request: Optional[Request]
    source: Address
    _layer: TransactionLayer
    _key: Hashable
    _address: Address
    method: str = attrs.field(init=False)
    state: TransactionState = attrs.field(default=TransactionState.TRYING, init=False)
    response: Optional[Response] = attrs.field(default=None, init=False)
    _lastProvisional: Optional[bytes] = attrs.field(default=None, init=False)
    _finalBytes: Optional[bytes] = attrs.field(default=None, init=False)
    # Until answered, the guard that abandons a request nobody answers.  Timer
    # J, once answered, is the layer's.
    _timer: Optional[IDelayedCall] = attrs.field(default=None, init=False)

    def __attrs_post_init__(self) -> None:
        assert self.request is not None
        self.method = self.request.method

    @property
    def answered(self) -> bool:
        """
        Whether a final response has been given.
        """
        return self.response is not None

    def respond(self, response: Response) -> None:
        """
        Send C{response} to the request of this transaction.

        A provisional (1xx) response moves the transaction to Proceeding and
        is sent again if the request is.  A final response is sent, stored
        and sent again for every retransmission of the request until Timer J
        ends the transaction; L{request} is then C{None}.  Responses after
        the final one are a bug in the caller: they are logged and not sent.
        So are responses after the layer stopped, or after the transaction
        was abandoned for want of a final response within 64*T1 (when the
        client has given up).

        @param response: the response, usually made with
            L{dmq.sip.responseFor} from L{request}.
        """
        if self.response is not None:
            self._log.warn(
                "Bug: response {code} {reason} to {method} from {source} ignored:"
                " the final response {firstCode} was given already",
                code=response.code,
                reason=response.reason,
                method=self.method,
                source=self.source,
                firstCode=self.response.code,
            )
            return
        if self.state is TransactionState.TERMINATED:
            self._log.info(
                "Response {code} to {method} from {source} not sent: the "
                "transaction was abandoned or the layer stopped",
                code=response.code,
                method=self.method,
                source=self.source,
            )
            return
        data = serialise(response)
        if response.code < 200:
            self.state = TransactionState.PROCEEDING
            self._lastProvisional = data
            self._layer.transmit(data, self._address, "response")
            return
        self.response = response
        self._finalBytes = data
        self.state = TransactionState.COMPLETED
        # Retransmissions are answered from _finalBytes and matched by _key.
        self.request = None
        self._cancelTimer()
        if not self._layer.keepCompleted(self._key, self):
            self._terminate()
        self._layer.transmit(data, self._address, "response")

    def _start(self) -> None:
        """
        Start the guard against a request that is never answered: by the
        time it fires, the client's Timer F has fired too, so nobody is
        waiting for an answer any more and the transaction only takes room.
        """
        self._timer = self._layer.callLater(self._layer.abandonAfter, self._abandon)

    def _abandon(self) -> None:
        """
        No final response came in time: forget this transaction.
        """
        self._timer = None
        self.state = TransactionState.TERMINATED
        self._layer.forgetServer(self._key, self)
        self._layer.count("abandoned")
        self._log.warn(
            "No final response to {method} from {source} within {seconds} s: "
            "transaction abandoned",
            method=self.method,
            source=self.source,
            seconds=self._layer.abandonAfter,
        )

    def _retransmissionReceived(self) -> None:
        """
        The request came again: answer it as the state says.
        """
        layer = self._layer
        layer.count("retransmissionsAbsorbed")
        if self.state is TransactionState.PROCEEDING:
            data = self._lastProvisional
        elif self.state is TransactionState.COMPLETED:
            data = self._finalBytes
        else:
            return
        assert data is not None
        layer.count("responsesResent")
        layer.transmit(data, self._address, "response")

    def _terminate(self) -> None:
        """
        Timer J fired (or the transport is reliable): forget this transaction.
        """
        self._timer = None
        self.state = TransactionState.TERMINATED
        self._layer.forgetServer(self._key, self)

    def _stop(self) -> None:
        """
        The layer is stopping: cancel the timer and end.
        """
        self._cancelTimer()
        self.state = TransactionState.TERMINATED

    def _cancelTimer(self) -> None:
        """
        Cancel the pending timer, if any.
        """
        if self._timer is not None:
            if self._timer.active():
                self._timer.cancel()
            self._timer = None


@attrs.define(eq=False)
class _ClientTransaction:
    """
    A non-INVITE client transaction.

    @ivar request: the request as sent, with our Via on top.
    @ivar data: the bytes of C{request}, sent again on Timer E.
    @ivar deferred: fires with the final response.
    """

    _log = Logger()

    _layer: TransactionLayer
    key: Tuple[str, str]
    request: Request
    data: bytes
    destination: Address
    deferred: Deferred[Response] = attrs.field(init=False)
    state: TransactionState = attrs.field(default=TransactionState.TRYING, init=False)
    _interval: float = attrs.field(default=0.0, init=False)
    _timerE: Optional[IDelayedCall] = attrs.field(default=None, init=False)
    _timerF: Optional[IDelayedCall] = attrs.field(default=None, init=False)
    _timerK: Optional[IDelayedCall] = attrs.field(default=None, init=False)

    def __attrs_post_init__(self) -> None:
        self.deferred = Deferred(lambda d: self._cancel())

    def start(self) -> None:
        """
        Send the request and start Timer F, and Timer E when retransmitting.
        """
        layer = self._layer
        self._timerF = layer.callLater(layer.timerF, self._timeout)
        interval = layer.timerE
        if interval is not None:
            self._interval = interval
            self._timerE = layer.callLater(interval, self._retransmit)
        layer.transmit(self.data, self.destination, "request")

    def _retransmit(self) -> None:
        """
        Timer E fired: send the request again and back off.
        """
        layer = self._layer
        if self.state is TransactionState.TRYING:
            self._interval = min(2 * self._interval, layer.T2)
        else:
            self._interval = layer.T2
        self._timerE = layer.callLater(self._interval, self._retransmit)
        layer.count("retransmissionsSent")
        layer.transmit(self.data, self.destination, "request")

    def _timeout(self) -> None:
        """
        Timer F fired with no final response: answer C{408} ourselves.
        """
        self._timerF = None
        self._end()
        self._layer.count("timeouts")
        self._log.info(
            "{method} to {destination} timed out",
            method=self.request.method,
            destination=self.destination,
        )
        self.deferred.callback(responseFor(self.request, 408, "Request Timeout"))

    def responseReceived(self, response: Response) -> None:
        """
        A response matched this transaction.
        """
        if self.state is TransactionState.COMPLETED:
            if response.code >= 200:
                self._layer.count("retransmissionsAbsorbed")
            return
        if response.code < 200:
            self.state = TransactionState.PROCEEDING
            return
        self._cancelTimers()
        self.state = TransactionState.COMPLETED
        timerK = self._layer.timerK
        if timerK > 0:
            self._timerK = self._layer.callLater(timerK, self._end)
        else:
            self._end()
        self.deferred.callback(response)

    def _cancel(self) -> None:
        """
        Whoever asked cancelled the Deferred: end without an answer.
        """
        self._layer.count("cancelled")
        self._end()

    def stop(self) -> None:
        """
        The layer is stopping: end, failing the Deferred if it is pending.
        """
        pending = self.state is not TransactionState.COMPLETED
        self._end()
        if pending:
            self.deferred.errback(
                TransactionLayerStopped(
                    f"The transaction layer stopped before {self.request.method} "
                    f"to {self.destination[0]}:{self.destination[1]} was answered"
                )
            )

    def _end(self) -> None:
        """
        Cancel every timer, enter Terminated and be forgotten.
        """
        self._cancelTimers()
        self.state = TransactionState.TERMINATED
        self._layer.forgetClient(self.key, self)

    def _cancelTimers(self) -> None:
        """
        Cancel Timers E, F and K, those that are pending.
        """
        for name in ("_timerE", "_timerF", "_timerK"):
            timer = getattr(self, name)
            if timer is not None:
                if timer.active():
                    timer.cancel()
                setattr(self, name, None)


def _serverKey(request: Request) -> Hashable:
    """
    The key that matches retransmissions of C{request} to its server
    transaction (RFC 3261 §17.2.3), with the RFC 2543 fallback for a top Via
    branch without the magic cookie.
    """
    via = request.via[0]
    branch = via.branch
    if branch is not None and branch.startswith(MAGIC_COOKIE):
        return (branch, via.host.lower(), via.port, request.method)
    cseq = request.cseq
    return (
        request.uri.toString(),
        request.fromAddress.tag,
        request.to.tag,
        request.callID,
        cseq.number,
        cseq.method,
        request.headerValues("Via")[0],
    )


@attrs.define(eq=False)
class TransactionLayer:
    """
    The non-INVITE transactions of one transport.

    @ivar statistics: counters of what happened, by name:
        C{clientTransactions} and C{serverTransactions} (started),
        C{retransmissionsSent} (requests sent again on Timer E),
        C{retransmissionsAbsorbed} (duplicate requests, and duplicate final
        responses, not passed on), C{responsesResent} (stored responses sent
        again for a duplicate request), C{timeouts} (Timer F, answered
        C{408}), C{cancelled}, C{rejectedOverCapacity} (incoming requests
        answered C{503}), C{evicted} (answered server transactions forgotten
        before Timer J to make room for new requests),
        C{refusedOverCapacity} (outgoing requests failed with
        L{TransactionLimitExceeded}), C{abandoned} (server transactions given
        no final response within 64*T1), C{handlerErrors}, C{sendErrors},
        C{acksIgnored}.
    """

    _log = Logger()

    _clock: IReactorTime
    _send: Callable[[bytes, Address], None]
    _requestReceived: Callable[[ServerTransaction], None]
    _sentBy: Address
    _transport: str = "UDP"
    _reliable: bool = False
    _T1: float = T1
    _T2: float = T2
    _T4: float = T4
    _maxTransactions: int = 10000
    statistics: Dict[str, int] = attrs.field(
        init=False, factory=lambda: dict.fromkeys(_COUNTERS, 0)
    )
    _clients: Dict[Tuple[str, str], _ClientTransaction] = attrs.field(
        init=False, factory=dict
    )
    _servers: Dict[Hashable, ServerTransaction] = attrs.field(init=False, factory=dict)
    # The answered ones among them, oldest first (what can be evicted), each
    # with the time its Timer J ends it.
    _completedServers: Dict[Hashable, Tuple[float, ServerTransaction]] = attrs.field(
        init=False, factory=dict
    )
    _stopped: bool = attrs.field(default=False, init=False)
    _via: str = attrs.field(init=False)
    # One timer ends every completed server transaction whose Timer J is
    # due: they all wait as long, so _completedServers is in expiry order.
    _sweeper: Optional[IDelayedCall] = attrs.field(default=None, init=False)

    def __attrs_post_init__(self) -> None:
        host, port = self._sentBy
        if ":" in host:
            host = f"[{host}]"
        self._via = f"SIP/2.0/{self._transport.upper()} {host}:{port};branch="

    @property
    def liveClientTransactions(self) -> int:
        """
        How many client transactions exist, in any state but Terminated.
        """
        return len(self._clients)

    @property
    def liveServerTransactions(self) -> int:
        """
        How many server transactions exist, in any state but Terminated.
        """
        return len(self._servers)

    def handleRequest(self, request: Request, source: Address) -> None:
        """
        Handle a request that passed L{dmq.sip.checkRequest}.

        A retransmission of a request whose transaction is still live is
        answered from that transaction (nothing in Trying, the last
        provisional response in Proceeding, the final response in
        Completed) and goes no further.  A new request starts a
        L{ServerTransaction} that is handed to C{requestReceived}; if that
        raises, the error is logged and the request answered C{500} unless it
        was answered already.  A transaction given no final response within
        64*T1 is abandoned, since its client has given up by then.  Over the
        transaction cap, a new request is
        answered C{503} without a transaction.  ACK is ignored, as is
        everything once the layer is stopped.

        @param request: the request, with C{received} and C{rport} already
            on its top Via.
        @param source: the C{(host, port)} it came from.
        """
        if self._stopped:
            return
        if request.method == "ACK":
            self.statistics["acksIgnored"] += 1
            return
        try:
            key = _serverKey(request)
            address = responseAddress(request.via[0], source)
        except SIPParseError as e:
            self._log.warn(
                "Dropped a request from {source} that cannot be matched: {error}",
                source=source,
                error=e.reason,
            )
            return
        existing = self._servers.get(key)
        if existing is not None:
            existing._retransmissionReceived()
            return
        if len(self._servers) >= self._maxTransactions and not self._evictCompleted():
            self.statistics["rejectedOverCapacity"] += 1
            self._log.warn(
                "{count} server transactions are live, the most allowed: "
                "answered {method} from {source} with 503",
                count=len(self._servers),
                method=request.method,
                source=source,
            )
            response = responseFor(
                request, 503, "Service Unavailable", toTag=newTag()
            )
            self.transmit(serialise(response), address, "response")
            return
        transaction = ServerTransaction(request, source, self, key, address)
        self._servers[key] = transaction
        self.statistics["serverTransactions"] += 1
        transaction._start()
        try:
            self._requestReceived(transaction)
        except Exception:
            self.statistics["handlerErrors"] += 1
            self._log.failure(
                "Error handling {method} from {source}",
                method=request.method,
                source=source,
            )
            if not transaction.answered:
                transaction.respond(
                    responseFor(
                        request, 500, "Server Internal Error", toTag=newTag()
                    )
                )

    def handleResponse(self, response: Response, source: Address) -> bool:
        """
        Hand a response to the client transaction it belongs to, matched by
        its top Via branch and CSeq method (RFC 3261 §17.1.3).

        @param response: the response.
        @param source: the C{(host, port)} it came from.
        @return: C{True} if it matched a transaction (which may have absorbed
            it as a duplicate), C{False} if it matched none.
        """
        try:
            key = (response.via[0].branch, response.cseq.method)
        except SIPParseError:
            return False
        transaction = self._clients.get(key)  # type: ignore[arg-type]
        if transaction is None:
            return False
        transaction.responseReceived(response)
        return True

    def request(self, request: Request, destination: Address) -> Deferred[Response]:
        """
        Send C{request} to C{destination} in a new client transaction.

        Our Via, with a new branch, is put on top of the request's headers.
        Over an unreliable transport the request is sent again on Timer E
        until a response comes.

        @param request: the request, without our Via.
        @param destination: the C{(host, port)} to send it to.
        @return: a L{Deferred} that fires with the final response, or with a
            locally made C{408 Request Timeout} when none came within Timer F
            (64*T1).  Provisional responses do not fire it.  It fails with
            L{TransactionLimitExceeded} at once, sending nothing, when too many
            client transactions are live, and with L{TransactionLayerStopped}
            if the layer is or gets stopped first.  Cancelling it ends the
            transaction.
        """
        if self._stopped:
            return fail(
                TransactionLayerStopped(
                    f"The transaction layer is stopped: {request.method} to "
                    f"{destination[0]}:{destination[1]} not sent"
                )
            )
        if len(self._clients) >= self._maxTransactions:
            self.statistics["refusedOverCapacity"] += 1
            self._log.warn(
                "{count} client transactions are live, the most allowed: "
                "{method} to {destination} not sent",
                count=len(self._clients),
                method=request.method,
                destination=destination,
            )
            return fail(
                TransactionLimitExceeded(
                    f"{len(self._clients)} client transactions are live, the most "
                    f"allowed (maxTransactions={self._maxTransactions}): "
                    f"{request.method} to {destination[0]}:{destination[1]} not sent"
                )
            )
        branch = MAGIC_COOKIE + secrets.token_hex(8)
        key = (branch, request.method)
        while key in self._clients:
            branch = MAGIC_COOKIE + secrets.token_hex(8)
            key = (branch, request.method)
        sent = attrs.evolve(
            request, headers=(("Via", self._via + branch),) + request.headers
        )
        transaction = _ClientTransaction(
            self, key, sent, serialise(sent), destination
        )
        self._clients[key] = transaction
        self.statistics["clientTransactions"] += 1
        transaction.start()
        return transaction.deferred

    def start(self) -> None:
        """
        Take transactions again after L{stop}: L{request} sends and
        L{handleRequest} hands requests on, as before the layer was stopped.
        A new layer is started already; starting a started layer does
        nothing.
        """
        self._stopped = False

    def stop(self) -> Deferred[None]:
        """
        End every transaction: cancel every timer, fail every pending client
        L{Deferred} with L{TransactionLayerStopped} and forget every server
        transaction.  Afterwards, until L{start}, L{request} fails at once
        and L{handleRequest} ignores what it is given.

        @return: a L{Deferred} that has already fired with C{None}, since
            nothing is left to wait for.
        """
        self._stopped = True
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None
        servers: List[ServerTransaction] = list(self._servers.values())
        self._servers.clear()
        self._completedServers.clear()
        for server in servers:
            server._stop()
        for client in list(self._clients.values()):
            client.stop()
        return succeed(None)

    # What its transactions ask of the layer; nothing else needs these.

    @property
    def timerE(self) -> Optional[float]:
        """
        The first interval of Timer E, after which a client transaction sends
        its request again: T1, or C{None} over a reliable transport, where
        nothing is sent again.
        """
        return None if self._reliable else self._T1

    @property
    def T2(self) -> float:
        """
        The longest interval of Timer E.
        """
        return self._T2

    @property
    def timerF(self) -> float:
        """
        How long a client transaction waits for a final response: 64*T1.
        """
        return 64 * self._T1

    @property
    def timerK(self) -> float:
        """
        How long a completed client transaction absorbs duplicate responses:
        T4, or no time over a reliable transport.
        """
        return 0.0 if self._reliable else self._T4

    @property
    def timerJ(self) -> float:
        """
        How long an answered server transaction answers retransmissions of its
        request: 64*T1, or no time over a reliable transport.
        """
        return 0.0 if self._reliable else 64 * self._T1

    @property
    def abandonAfter(self) -> float:
        """
        How long a server transaction may wait for its final response: 64*T1,
        by when its client has given up.
        """
        return 64 * self._T1

    def callLater(self, delay: float, f: Callable[[], None]) -> IDelayedCall:
        """
        Call C{f} after C{delay} seconds by the layer's clock.
        """
        return self._clock.callLater(delay, f)

    def count(self, counter: str) -> None:
        """
        Add one to C{counter}, one of the L{statistics}.
        """
        self.statistics[counter] += 1

    def transmit(self, data: bytes, address: Address, what: str) -> None:
        """
        Send C{data}; a failure is logged, not raised, since a retransmission
        may still get through and Timer F ends the transaction anyway.

        @param what: C{"request"} or C{"response"}, for the log.
        """
        try:
            self._send(data, address)
        except OSError as e:
            self.statistics["sendErrors"] += 1
            self._log.warn(
                "Could not send a {what} to {address}: {error}",
                what=what,
                address=address,
                error=e,
            )
        except Exception:
            self.statistics["sendErrors"] += 1
            self._log.failure(
                "Unexpected error sending a {what} to {address}",
                what=what,
                address=address,
            )

    def keepCompleted(self, key: Hashable, transaction: ServerTransaction) -> bool:
        """
        Keep C{transaction}, which has just given its final response, so that
        it answers retransmissions of its request until its Timer J ends it,
        unless it is evicted earlier to make room.

        @return: C{False} when there is no Timer J (over a reliable
            transport): the transaction is to end now.
        """
        timerJ = self.timerJ
        if timerJ <= 0:
            return False
        self._completedServers[key] = (self._clock.seconds() + timerJ, transaction)
        if self._sweeper is None:
            self._sweeper = self._clock.callLater(timerJ, self._sweep)
        return True

    def forgetClient(
        self, key: Tuple[str, str], transaction: _ClientTransaction
    ) -> None:
        """
        A client transaction ended: stop routing responses to it.
        """
        if self._clients.get(key) is transaction:
            del self._clients[key]

    def forgetServer(self, key: Hashable, transaction: ServerTransaction) -> None:
        """
        A server transaction ended: a request with its key starts a new one.
        """
        if self._servers.get(key) is transaction:
            del self._servers[key]
        entry = self._completedServers.get(key)
        if entry is not None and entry[1] is transaction:
            del self._completedServers[key]

    def _evictCompleted(self) -> bool:
        """
        Make room by forgetting the oldest server transaction that has been
        answered already: it only waits on Timer J to absorb retransmissions,
        which after a while are unlikely.  Its loss costs at most a duplicate
        request handed to the application; a 503 would cost the request.

        @return: whether one was forgotten.
        """
        if not self._completedServers:
            return False
        key, (_, transaction) = next(iter(self._completedServers.items()))
        transaction._stop()
        self.forgetServer(key, transaction)
        self.statistics["evicted"] += 1
        return True

    def _sweep(self) -> None:
        """
        Timer J: end every answered server transaction whose time is up, and
        wait for the next one.
        """
        self._sweeper = None
        now = self._clock.seconds()
        completed = self._completedServers
        while completed:
            expiresAt, transaction = next(iter(completed.values()))
            if expiresAt > now:
                self._sweeper = self._clock.callLater(expiresAt - now, self._sweep)
                return
            transaction._terminate()
