# -*- test-case-name: dmq.test.test_transaction -*-
"""
L{TransactionLayer}: the non-INVITE transactions of one transport.  It routes
requests and responses to their transactions, starts new ones, bounds how many
are live, ends them on their timers, and stops them all.

Server transactions are kept as light as a busy node needs, since every
request makes one:

  - one dictionary of the pending ones (no final response yet), by key,
    and one of the answered ones, whose entries are only the reply's bytes,
    its address and the time Timer J ends them: what answers a
    retransmission;
  - one timer, the sweeper, for all of them: every pending transaction
    waits the same 64*T1 to be abandoned, and every answered one the same
    Timer J, so each table is in the order its entries expire, and the
    sweeper only ever looks at their heads.
"""

from __future__ import annotations

from collections import deque
from typing import Callable, Deque, Dict, Hashable, List, Optional, Sequence, Tuple

import attrs
from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger

from dmq.sip import (
    Request,
    Response,
    SIPParseError,
    newTag,
    serialiseReply,
)
from dmq.transaction.base import (
    _COUNTERS,
    SEND_ERRORS,
    T1,
    T2,
    T4,
    Address,
    RateLimitedWarnings,
    TransactionLayerStopped,
    sendFailure,
)
from dmq.transaction.client import ClientTransactions
from dmq.transaction.server import ServerTransaction, _serverKey, responseAddress

__all__ = ["TransactionLayer"]

# An answered server transaction: when Timer J ends it, its key, and the
# final response's bytes and address.
_Answered = Tuple[float, Hashable, bytes, Address]


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
        L{TransactionLimitExceeded}), C{refusedTooLarge} (outgoing requests
        failed with L{MessageTooLarge}), C{abandoned} (server transactions
        given no final response within 64*T1), C{handlerErrors},
        C{sendErrors} (datagrams that could not be sent), C{acksIgnored}.
    @ivar refusalHeaders: what to add to the responses the layer makes by
        itself (C{503} over its cap, C{500} when C{requestReceived} raised),
        given the request, the code and the reason phrase; C{None} for
        nothing.  A node with a keyring signs them there
        (L{dmq.trust.Trust.signedRefusal}).
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
    _warnings: Optional[RateLimitedWarnings] = None
    refusalHeaders: Optional[Callable[[Request, int, str], Sequence[Tuple[str, str]]]] = attrs.field(
        init=False, default=None
    )
    statistics: Dict[str, int] = attrs.field(
        init=False, factory=lambda: dict.fromkeys(_COUNTERS, 0)
    )
    _clientSide: ClientTransactions = attrs.field(init=False)
    # Server transactions with no final response yet, in the order they
    # came, which is the order they are abandoned in.
    _pending: Dict[Hashable, ServerTransaction] = attrs.field(init=False, factory=dict)
    # Answered ones, by key, and in the order Timer J ends them (the oldest
    # is also the one evicted to make room).
    _answeredByKey: Dict[Hashable, _Answered] = attrs.field(init=False, factory=dict)
    _answeredInOrder: Deque[_Answered] = attrs.field(init=False, factory=deque)
    _stopped: bool = attrs.field(default=False, init=False)
    _sweeper: Optional[IDelayedCall] = attrs.field(default=None, init=False)

    def __attrs_post_init__(self) -> None:
        host, port = self._sentBy
        if ":" in host:
            host = f"[{host}]"
        if self._warnings is None:
            self._warnings = RateLimitedWarnings(self._clock, self._log)
        self._clientSide = ClientTransactions(
            self,
            self._clock,
            f"SIP/2.0/{self._transport.upper()} {host}:{port};branch=",
            self._reliable,
            self._T1,
            self._T2,
            self._T4,
            self._maxTransactions,
            self._warnings,
        )

    @property
    def liveClientTransactions(self) -> int:
        """
        How many client transactions exist, in any state but Terminated.
        """
        return self._clientSide.live

    @property
    def liveServerTransactions(self) -> int:
        """
        How many server transactions exist, in any state but Terminated.
        """
        return len(self._pending) + len(self._answeredByKey)

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
        transaction cap, the oldest answered transaction is forgotten to
        make room, and when there is none the new request is answered C{503}
        without a transaction.  ACK is ignored, as is everything once the
        layer is stopped.

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
            self._warnings.warn(  # type: ignore[union-attr]
                "unmatchable",
                "Dropped a request from {source} that cannot be matched: {error}",
                source=source,
                error=e.reason,
            )
            return
        answered = self._answeredByKey.get(key)
        if answered is not None:
            self.statistics["retransmissionsAbsorbed"] += 1
            self.statistics["responsesResent"] += 1
            self.transmit(answered[2], answered[3], "response")
            return
        pending = self._pending.get(key)
        if pending is not None:
            pending._retransmissionReceived()
            return
        live = len(self._pending) + len(self._answeredByKey)
        if live >= self._maxTransactions and not self._evict():
            self.statistics["rejectedOverCapacity"] += 1
            self._warnings.warn(  # type: ignore[union-attr]
                "serverCap",
                "{count} server transactions are live, the most allowed: "
                "answered {method} from {source} with 503",
                count=self.liveServerTransactions,
                method=request.method,
                source=source,
            )
            self.transmit(
                serialiseReply(
                    request, 503, "Service Unavailable",
                    self._refusalHeaders(request, 503, "Service Unavailable"), toTag=newTag(),
                ),
                address,
                "response",
            )
            return
        abandonAfter = 64 * self._T1
        transaction = ServerTransaction(
            request, source, self, key, address, self._clock.seconds() + abandonAfter
        )
        self._pending[key] = transaction
        self.statistics["serverTransactions"] += 1
        if self._sweeper is None:
            self._sweeper = self._clock.callLater(abandonAfter, self._sweep)
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
                reason = "Server Internal Error"
                transaction.reply(500, reason, self._refusalHeaders(request, 500, reason))

    def _refusalHeaders(self, request: Request, code: int, reason: str) -> Sequence[Tuple[str, str]]:
        """
        The headers of a response the layer makes by itself: see
        L{refusalHeaders}.
        """
        if self.refusalHeaders is None:
            return ()
        return self.refusalHeaders(request, code, reason)

    def handleResponse(self, response: Response, source: Address) -> bool:
        """
        Hand a response to the client transaction it belongs to, matched by
        its top Via branch and CSeq method (RFC 3261 §17.1.3).

        @param response: the response.
        @param source: the C{(host, port)} it came from.
        @return: C{True} if it matched a transaction (which may have absorbed
            it as a duplicate), C{False} if it matched none.
        """
        return self._clientSide.handleResponse(response)

    def request(self, request: Request, destination: Address) -> Deferred[Response]:
        """
        Send C{request} to C{destination} in a new client transaction.

        Our Via, with a new branch, is put on top of the request's headers.
        Over an unreliable transport the request is sent again on Timer E
        until a response comes.

        @param request: the request, without our Via.
        @param destination: the C{(host, port)} to send it to.
        @return: a L{Deferred} that fires with the final response, or with a
            locally made C{408}: C{408 Request Timeout} when none came
            within Timer F (64*T1), C{408 Unreachable Address} at once when
            the request cannot be sent to C{destination} at all (an address
            of the other family than our socket's, say).  Provisional
            responses do not fire it.  It fails at once, sending nothing,
            with L{TransactionLimitExceeded} when too many client
            transactions are live, with L{MessageTooLarge} when the request
            does not fit in one datagram, and with L{TransactionLayerStopped}
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
        return self._clientSide.request(request, destination)

    def failDestination(self, destination: Address, reason: str) -> int:
        """
        A reliable transport could not reach C{destination}: end each client
        transaction waiting on it with a local C{408 reason} now, rather
        than on Timer F.

        @return: how many were ended.
        """
        return self._clientSide.failDestination(destination, reason)

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
        pending: List[ServerTransaction] = list(self._pending.values())
        self._pending.clear()
        self._answeredByKey.clear()
        self._answeredInOrder.clear()
        for server in pending:
            server._ended = True
        self._clientSide.stop()
        return succeed(None)

    # What its transactions ask of the layer; nothing else needs these.

    def count(self, counter: str) -> None:
        """
        Add one to C{counter}, one of the L{statistics}.
        """
        self.statistics[counter] += 1

    def transmit(self, data: bytes, address: Address, what: str) -> Optional[str]:
        """
        Send C{data}.  A failure is counted and logged, never raised: as a
        warning once per cause a minute when the socket refused it, with its
        traceback when the send itself is broken.

        @param what: C{"request"} or C{"response"}, for the log.
        @return: C{None} when it was sent, or when sending again may work;
            otherwise why it never can (see L{sendFailure}).
        """
        try:
            self._send(data, address)
        except Exception as e:
            return self.sendFailed(e, address, what)
        return None

    def sendFailed(self, error: Exception, address: Address, what: str) -> Optional[str]:
        """
        Count and log a send to C{address} that raised C{error}, as
        L{transmit} does; call it from the C{except} block that caught it
        (a transport that sends later, L{dmq.transport.SIPPort}'s).

        @return: why sending again never can work, or C{None} (see
            L{sendFailure}).
        """
        self.statistics["sendErrors"] += 1
        reason = sendFailure(error)
        if isinstance(error, SEND_ERRORS):
            self._warnings.warn(  # type: ignore[union-attr]
                f"send {what}: {reason or type(error).__name__}",
                "Could not send a {what} to {address}: {error}",
                what=what,
                address=address,
                error=error,
            )
        else:
            self._log.failure(
                "Unexpected error sending a {what} to {address}",
                what=what,
                address=address,
            )
        return reason

    def _answered(self, transaction: ServerTransaction, data: bytes) -> None:
        """
        C{transaction} gave its final response, C{data}: from now on an
        entry of the answered table answers its retransmissions, until
        Timer J (at once over a reliable transport).  Send it.
        """
        key = transaction._key
        if self._pending.get(key) is transaction:
            del self._pending[key]
        address = transaction._address
        if self._reliable:
            if not self._pending and self._sweeper is not None:
                # Nothing left to time.
                self._sweeper.cancel()
                self._sweeper = None
        else:
            timerJ = 64 * self._T1
            entry = (self._clock.seconds() + timerJ, key, data, address)
            self._answeredByKey[key] = entry
            self._answeredInOrder.append(entry)
            transaction._entry = entry
            if self._sweeper is None:
                self._sweeper = self._clock.callLater(timerJ, self._sweep)
        self.transmit(data, address, "response")

    def _isCompleted(self, key: Hashable, entry: _Answered) -> bool:
        """
        Whether C{entry} still answers the retransmissions of C{key}.
        """
        return self._answeredByKey.get(key) is entry

    def _evict(self) -> bool:
        """
        Make room by forgetting the oldest server transaction that has been
        answered already: it only waits on Timer J to absorb retransmissions,
        which after a while are unlikely.  Its loss costs at most a duplicate
        request handed to the application; a 503 would cost the request.

        @return: whether one was forgotten.
        """
        byKey = self._answeredByKey
        inOrder = self._answeredInOrder
        while inOrder:
            entry = inOrder.popleft()
            if byKey.get(entry[1]) is entry:
                del byKey[entry[1]]
                self.statistics["evicted"] += 1
                return True
        return False

    def _sweep(self) -> None:
        """
        Abandon the pending server transactions whose time is up, end the
        answered ones whose Timer J is, and wait for the next to come due.
        Those due at nearly the same time are swept together: the next
        sweep is at least T1/8 away.
        """
        self._sweeper = None
        now = self._clock.seconds()
        abandoned = []
        for transaction in self._pending.values():
            if transaction._deadline > now:
                break
            abandoned.append(transaction)
        for transaction in abandoned:
            self._abandon(transaction)
        byKey = self._answeredByKey
        inOrder = self._answeredInOrder
        while inOrder and inOrder[0][0] <= now:
            entry = inOrder.popleft()
            if byKey.get(entry[1]) is entry:
                del byKey[entry[1]]
        due = []
        for oldest in self._pending.values():
            due.append(oldest._deadline)
            break
        if inOrder:
            due.append(inOrder[0][0])
        if due:
            self._sweeper = self._clock.callLater(
                max(min(due) - now, self._T1 / 8), self._sweep
            )

    def _abandon(self, transaction: ServerTransaction) -> None:
        """
        No final response came in time: forget C{transaction}.
        """
        del self._pending[transaction._key]
        transaction._ended = True
        self.statistics["abandoned"] += 1
        self._warnings.warn(  # type: ignore[union-attr]
            "abandoned",
            "No final response to {method} from {source} within {seconds} s: "
            "transaction abandoned",
            method=transaction.method,
            source=transaction.source,
            seconds=64 * self._T1,
        )

