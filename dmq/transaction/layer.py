# -*- test-case-name: dmq.test.test_transaction -*-
"""
L{TransactionLayer}: the non-INVITE transactions of one transport.  It routes
requests and responses to their transactions, starts new ones, bounds how many
are live, ends answered server transactions on Timer J, and stops them all.
"""

from __future__ import annotations

import secrets
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
    newTag,
    responseFor,
    serialise,
)
from dmq.transaction.base import (
    _COUNTERS,
    T1,
    T2,
    T4,
    Address,
    TransactionLayerStopped,
    TransactionLimitExceeded,
)
from dmq.transaction.client import _ClientTransaction
from dmq.transaction.server import ServerTransaction, _serverKey, responseAddress

__all__ = ["TransactionLayer"]


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
