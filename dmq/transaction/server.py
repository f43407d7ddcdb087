# -*- test-case-name: dmq.test.test_transaction -*-
"""
The non-INVITE server transaction (RFC 3261 §17.2.2): one request received,
handed to the application once as a L{ServerTransaction}, and its
retransmissions answered from the stored reply; with how a request is matched
to its transaction and where its responses go.

A server transaction is light on purpose, since every request makes one: a
L{ServerTransaction} lives only until it is answered; what answers the
request's retransmissions afterwards is an entry of the layer's table (the
reply's bytes and address), and one timer of the layer ends them all (see
L{dmq.transaction.layer}).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Hashable, Iterable, Optional, Tuple

from twisted.logger import Logger

from dmq.sip import (
    MAGIC_COOKIE,
    Request,
    Response,
    Via,
    newTag,
    serialise,
    serialiseReply,
)
from dmq.transaction.base import Address, TransactionState

if TYPE_CHECKING:
    from dmq.transaction.layer import TransactionLayer, _Answered

__all__ = ["ServerTransaction", "responseAddress"]


def responseAddress(via: Via, source: Address) -> Address:
    """
    Where to send responses to a request received over an unreliable
    transport: back where it came from.

    The host is always the source address, as if the request's top Via had
    the C{received} parameter that RFC 3261 §18.2.1 stamps on it: a
    C{received} the sender wrote itself, or a sent-by host, never sends a
    reply elsewhere (nor to a name).  The port is the source port when the
    Via has C{rport} (RFC 3581), whatever value the sender gave it, or else
    the sent-by port, or 5060.  Kamailio replies the same way.

    @param via: the top Via of the request.
    @param source: the C{(host, port)} the request came from.
    @return: a C{(host, port)}.
    """
    if via.rport is not None:
        return source
    return source[0], via.port or 5060


class ServerTransaction:
    """
    A non-INVITE server transaction: one request received, answered through
    L{reply} or L{respond}.

    Instances are made by L{TransactionLayer.handleRequest} and handed to its
    C{requestReceived} callable; they are not made directly.

    @ivar request: the request that started this transaction, until a final
        response is given; then C{None}, so that what answers the request's
        retransmissions does not keep the request (and its body) in memory.
        Read what you need from it before giving the final response.
    @ivar method: the method of the request.
    @ivar source: the C{(host, port)} the request came from.
    @ivar response: the final response given with L{respond}, or C{None}.
    @ivar code: the status code of the final response, or C{None}.
    """

    __slots__ = (
        "request",
        "method",
        "source",
        "response",
        "code",
        "_layer",
        "_key",
        "_address",
        "_deadline",
        "_provisional",
        "_entry",
        "_ended",
    )

    _log = Logger()

    def __init__(
        self,
        request: Request,
        source: Address,
        layer: TransactionLayer,
        key: Hashable,
        address: Address,
        deadline: float,
    ) -> None:
        """
        @param key: the key that matches the request's retransmissions.
        @param address: where responses go (L{responseAddress}).
        @param deadline: when to give up on a final response: by then the
            client has given up too.
        """
        self.request: Optional[Request] = request
        self.method = request.method
        self.source = source
        self.response: Optional[Response] = None
        self.code: Optional[int] = None
        self._layer = layer
        self._key = key
        self._address = address
        self._deadline = deadline
        # The last provisional response's bytes, sent again for a
        # retransmission in Proceeding.
        self._provisional: Optional[bytes] = None
        # Once answered, the layer's entry that answers retransmissions.
        self._entry: Optional[_Answered] = None
        # Abandoned, or the layer stopped.
        self._ended = False

    @property
    def answered(self) -> bool:
        """
        Whether a final response has been given.
        """
        return self.code is not None

    @property
    def state(self) -> TransactionState:
        """
        The state of RFC 3261's figure 8 this transaction is in.
        """
        if self.code is not None:
            if self._entry is not None and self._layer._isCompleted(self._key, self._entry):
                return TransactionState.COMPLETED
            return TransactionState.TERMINATED
        if self._ended:
            return TransactionState.TERMINATED
        if self._provisional is not None:
            return TransactionState.PROCEEDING
        return TransactionState.TRYING

    def reply(
        self,
        code: int,
        reason: Optional[str] = None,
        headers: Iterable[Tuple[str, str]] = (),
        body: bytes = b"",
    ) -> None:
        """
        Answer the request with a final response made from it, as
        L{dmq.sip.responseFor} would make it (with a fresh To tag), but
        written straight to bytes: the way a server answers.

        @param code: the status code, 200 to 699.
        @param reason: the reason phrase; by default, the usual one.
        @param headers: headers to add after the copied ones.
        @raise ValueError: for a provisional C{code}, or a response that
            cannot be written (see L{dmq.sip.serialise}).
        """
        if code < 200:
            raise ValueError(f"reply() gives final responses, not {code}")
        if (self.code is not None or self._ended) and self._refused(code, reason):
            return
        assert self.request is not None
        self._final(
            code, serialiseReply(self.request, code, reason, headers, body, newTag())
        )

    def respond(self, response: Response) -> None:
        """
        Send C{response} to the request of this transaction.

        A provisional (1xx) response moves the transaction to Proceeding and
        is sent again if the request is.  A final response is sent, and sent
        again for every retransmission of the request until Timer J ends
        the transaction; L{request} is then C{None}.  Responses after the
        final one are a bug in the caller: they are logged and not sent.
        So are responses after the layer stopped, or after the transaction
        was abandoned for want of a final response within 64*T1 (when the
        client has given up).

        @param response: the response, usually made with
            L{dmq.sip.responseFor} from L{request}.
        """
        if self._refused(response.code, response.reason):
            return
        data = serialise(response)
        if response.code < 200:
            self._provisional = data
            self._layer.transmit(data, self._address, "response")
            return
        self.response = response
        self._final(response.code, data)

    def _refused(self, code: int, reason: Optional[str]) -> bool:
        """
        Whether a response with C{code} must not be sent (and was logged):
        a final one was given already, or the transaction ended.
        """
        if self.code is not None:
            self._log.warn(
                "Bug: response {code} {reason} to {method} from {source} ignored:"
                " the final response {firstCode} was given already",
                code=code,
                reason=reason,
                method=self.method,
                source=self.source,
                firstCode=self.code,
            )
            return True
        if self._ended:
            self._log.info(
                "Response {code} to {method} from {source} not sent: the "
                "transaction was abandoned or the layer stopped",
                code=code,
                method=self.method,
                source=self.source,
            )
            return True
        return False

    def _final(self, code: int, data: bytes) -> None:
        """
        The final response, C{data}, was given: hand the transaction over to
        the layer's table of answered ones, and send it.
        """
        self.code = code
        self.request = None
        self._layer._answered(self, data)

    def _retransmissionReceived(self) -> None:
        """
        The request came again while no final response was given: send the
        last provisional response again, if there is one.
        """
        layer = self._layer
        layer.count("retransmissionsAbsorbed")
        if self._provisional is not None:
            layer.count("responsesResent")
            layer.transmit(self._provisional, self._address, "response")


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
