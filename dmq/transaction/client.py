# -*- test-case-name: dmq.test.test_transaction -*-
"""
The non-INVITE client transaction (RFC 3261 §17.1.2): a request sent, sent
again on Timer E over an unreliable transport, and answered by one final
response, or by a locally made C{408} on Timer F.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Optional, Tuple

import attrs
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IDelayedCall
from twisted.logger import Logger

from dmq.sip import Request, Response, responseFor
from dmq.transaction.base import (
    Address,
    MessageTooLarge,
    TransactionLayerStopped,
    TransactionState,
)

if TYPE_CHECKING:
    from dmq.transaction.layer import TransactionLayer


@attrs.define(eq=False)
class _ClientTransaction:
    """
    A non-INVITE client transaction.  L{TransactionLayer.request} makes one
    and hands out only its L{Deferred}.

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
        reason = self._layer.transmit(self.data, self.destination, "request")
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
