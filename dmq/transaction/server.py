# -*- test-case-name: dmq.test.test_transaction -*-
"""
The non-INVITE server transaction (RFC 3261 §17.2.2): one request received,
handed to the application once as a L{ServerTransaction}, and its
retransmissions answered from the stored reply; with how a request is matched
to its transaction and where its responses go.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Hashable, Optional

import attrs
from twisted.internet.interfaces import IDelayedCall
from twisted.logger import Logger

from dmq.sip import MAGIC_COOKIE, Request, Response, Via, serialise
from dmq.transaction.base import Address, TransactionState

if TYPE_CHECKING:
    from dmq.transaction.layer import TransactionLayer

__all__ = ["ServerTransaction", "responseAddress"]


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
