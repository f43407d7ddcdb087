# -*- test-case-name: dmq.test.test_transaction -*-
"""
The non-INVITE client transaction (RFC 3261 §17.1.2): a request sent, sent
again on Timer E over an unreliable transport, and answered by one final
response, or by a locally made C{408} on Timer F; and L{ClientTransactions},
the table of a layer's client transactions.
"""

from __future__ import annotations

import secrets
from typing import TYPE_CHECKING, Callable, Dict, List, Optional, Tuple

import attrs
from twisted.internet.defer import Deferred, fail
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger

from dmq.sip import MAGIC_COOKIE, Request, Response, SIPParseError, responseFor, serialise
from dmq.transaction.base import (
    MAX_UDP_PAYLOAD,
    Address,
    MessageTooLarge,
    RateLimitedWarnings,
    TransactionLayerStopped,
    TransactionLimitExceeded,
    TransactionState,
)

if TYPE_CHECKING:
    from dmq.transaction.layer import TransactionLayer

__all__ = ["ClientTransactions"]


@attrs.define(eq=False)
class ClientTransactions:
    """
    The client transactions of one L{TransactionLayer}: the table that
    routes responses to them, its cap, and what they ask of it (their
    timers, sending, counting).

    @ivar T2: the longest interval of Timer E.
    """

    _layer: TransactionLayer
    _clock: IReactorTime
    # Our Via, up to its branch.
    _via: str
    _reliable: bool
    _T1: float
    T2: float
    _T4: float
    _maxTransactions: int
    _warnings: RateLimitedWarnings
    _clients: Dict[Tuple[str, str], _ClientTransaction] = attrs.field(
        init=False, factory=dict
    )

    @property
    def live(self) -> int:
        """
        How many client transactions exist, in any state but Terminated.
        """
        return len(self._clients)

    def request(self, request: Request, destination: Address) -> Deferred[Response]:
        """
        Send C{request} to C{destination} in a new client transaction; see
        L{TransactionLayer.request}.
        """
        where = f"{request.method} to {destination[0]}:{destination[1]} not sent"
        if len(self._clients) >= self._maxTransactions:
            self.count("refusedOverCapacity")
            self._warnings.warn(
                "clientCap",
                "{count} client transactions are live, the most allowed: "
                "{method} to {destination} not sent",
                count=len(self._clients),
                method=request.method,
                destination=destination,
            )
            return fail(
                TransactionLimitExceeded(
                    f"{len(self._clients)} client transactions are live, the most "
                    f"allowed (maxTransactions={self._maxTransactions}): {where}"
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
        data = serialise(sent)
        if len(data) > MAX_UDP_PAYLOAD and not self._reliable:
            self.count("refusedTooLarge")
            return fail(
                MessageTooLarge(
                    f"{len(data)} octets, more than one datagram carries"
                    f" ({MAX_UDP_PAYLOAD}): {where}"
                )
            )
        transaction = _ClientTransaction(self, key, sent, data, destination)
        self._clients[key] = transaction
        self.count("clientTransactions")
        transaction.start()
        return transaction.deferred

    def handleResponse(self, response: Response) -> bool:
        """
        Hand C{response} to the client transaction it belongs to; see
        L{TransactionLayer.handleResponse}.
        """
        try:
            key = (response.via[0].branch, response.cseq.method)
        except SIPParseError:
            return False
        # A Via without a branch (None) is no key of ours: get() misses.
        transaction = self._clients.get(key)  # type: ignore[arg-type]
        if transaction is None:
            return False
        transaction.responseReceived(response)
        return True

    def failDestination(self, destination: Address, reason: str) -> int:
        """
        End every client transaction to C{destination} that has no final
        response yet with a local C{408 reason}: a reliable transport could
        not reach it, and nothing will be sent again (RFC 3261 §17.1.4).

        @return: how many were ended.
        """
        failing = [
            client
            for client in self._clients.values()
            if client.destination == destination
            and client.state is not TransactionState.COMPLETED
        ]
        for client in failing:
            client.transportFailed(reason)
        return len(failing)

    def stop(self) -> None:
        """
        End every client transaction, failing the pending ones.
        """
        pending: List[_ClientTransaction] = list(self._clients.values())
        for client in pending:
            client.stop()

    # What a client transaction asks of its table.

    @property
    def timerE(self) -> Optional[float]:
        """
        The first interval of Timer E, after which a client transaction sends
        its request again: T1, or C{None} over a reliable transport, where
        nothing is sent again.
        """
        return None if self._reliable else self._T1

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

    def callLater(self, delay: float, f: Callable[[], None]) -> IDelayedCall:
        """
        Call C{f} after C{delay} seconds by the layer's clock.
        """
        return self._clock.callLater(delay, f)

    def count(self, counter: str) -> None:
        """
        Add one to C{counter}, one of the layer's statistics.
        """
        self._layer.count(counter)

    def transmit(self, data: bytes, address: Address) -> Optional[str]:
        """
        Send a request; see L{TransactionLayer.transmit}.
        """
        return self._layer.transmit(data, address, "request")

    def forget(self, key: Tuple[str, str], transaction: _ClientTransaction) -> None:
        """
        A client transaction ended: stop routing responses to it.
        """
        if self._clients.get(key) is transaction:
            del self._clients[key]


@attrs.define(eq=False)
class _ClientTransaction:
    """
    A non-INVITE client transaction.  L{ClientTransactions.request} makes
    one and hands out only its L{Deferred}.

    @ivar request: the request as sent, with our Via on top.
    @ivar data: the bytes of C{request}, sent again on Timer E.
    @ivar deferred: fires with the final response.
    """

    _log = Logger()

    _layer: ClientTransactions
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
        self._transmit()

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
        self._transmit()

    def _transmit(self) -> None:
        """
        Send the request.  When it cannot ever be sent to its destination,
        end now with a local C{408} that says why, rather than sending in
        vain until Timer F: whoever asked learns at once that the node is
        out of reach, as if it had timed out.
        """
        reason = self._layer.transmit(self.data, self.destination)
        if reason is None:
            return
        self._end()
        if reason == "Message Too Large":
            self._layer.count("refusedTooLarge")
            self.deferred.errback(
                MessageTooLarge(
                    f"{self.request.method} to {self.destination[0]}:"
                    f"{self.destination[1]} not sent: the socket refused its"
                    f" {len(self.data)} octets"
                )
            )
        else:
            self.deferred.callback(responseFor(self.request, 408, reason))

    def transportFailed(self, reason: str) -> None:
        """
        The transport could not deliver the request: end now with a local
        C{408 reason}.
        """
        self._end()
        self.deferred.callback(responseFor(self.request, 408, reason))

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
        self._layer.forget(self.key, self)

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
