# -*- test-case-name: dmq.test.test_transaction -*-
"""
Tests for L{dmq.transaction}: RFC 3261 non-INVITE client and server
transactions, driven by a L{Clock} and a fake C{send} that records what would
have gone out.
"""

from __future__ import annotations

import errno
import gc
import socket
import weakref
from typing import Any, Callable, List, Optional, Tuple

import attr
from hypothesis import given, settings, strategies as st
from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.error import InvalidAddressError, MessageLengthError
from twisted.internet.task import Clock
from twisted.internet.testing import EventLoggingObserver
from twisted.logger import LogLevel, globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase

from dmq import sip
from dmq.sip import Request, Response, Via
from dmq.transaction import (
    T1,
    T4,
    MessageTooLarge,
    ServerTransaction,
    TransactionLayer,
    TransactionLayerStopped,
    TransactionLimitExceeded,
    TransactionState,
    responseAddress,
)

Address = Tuple[str, int]

LOCAL = ("127.0.0.12", 5060)
REMOTE = ("127.0.0.11", 5060)

# The send times of RFC 3261's non-INVITE client over UDP with the default
# timers, and the moment Timer F gives up.
DEFAULT_SCHEDULE = [0.0, 0.5, 1.5, 3.5, 7.5, 11.5, 15.5, 19.5, 23.5, 27.5, 31.5]
DEFAULT_TIMEOUT = 32.0


def kdmqBytes(
    branch: Optional[str] = "z9hG4bKabc123def456",
    cseq: int = 10,
    method: str = "KDMQ",
    sentBy: str = "127.0.0.11:5060",
    viaParameters: str = "",
    callID: str = "call-1@127.0.0.11",
    toTag: Optional[str] = None,
    body: bytes = b"hello",
) -> bytes:
    """
    Return the bytes of a KDMQ-like request from C{REMOTE} to C{LOCAL}.
    """
    via = f"SIP/2.0/UDP {sentBy}"
    if branch is not None:
        via += f";branch={branch}"
    via += viaParameters
    to = "<sip:notification_peer@127.0.0.12:5060>"
    if toTag is not None:
        to += f";tag={toTag}"
    return (
        f"{method} sip:notification_peer@127.0.0.12:5060 SIP/2.0\r\n"
        f"Via: {via}\r\n"
        f"To: {to}\r\n"
        f"From: <sip:notification_peer@127.0.0.11:5060>;tag=from-1\r\n"
        f"CSeq: {cseq} {method}\r\n"
        f"Call-ID: {callID}\r\n"
        f"Max-Forwards: 1\r\n"
        f"Content-Type: text/plain\r\n"
        f"Content-Length: {len(body)}\r\n"
        f"\r\n"
    ).encode("ascii") + body


def kdmqRequest(**kwargs: Any) -> Request:
    """
    Return a parsed and checked request; see L{kdmqBytes}.
    """
    request = sip.parse(kdmqBytes(**kwargs))
    assert isinstance(request, Request)
    sip.checkRequest(request)
    return request


def respond(transaction: ServerTransaction, code: int, reason: Optional[str] = None) -> None:
    """
    Answer C{transaction}, which holds its request until it is answered.
    """
    request = transaction.request
    assert request is not None, "answered already"
    transaction.respond(sip.responseFor(request, code, reason, toTag="t"))


def outgoingRequest() -> Request:
    """
    Return a request as the bus would hand it to L{TransactionLayer.request}:
    no Via yet.
    """
    return Request(
        "KDMQ",
        sip.URI("127.0.0.11", 5060, user="notification_peer"),
        (
            ("To", "<sip:notification_peer@127.0.0.11:5060>"),
            ("From", "<sip:notification_peer@127.0.0.12:5060>;tag=from-2"),
            ("CSeq", "10 KDMQ"),
            ("Call-ID", "call-2@127.0.0.12"),
            ("Max-Forwards", "1"),
            ("Content-Type", "text/plain"),
        ),
        b"sip:127.0.0.12:5060;status=active\r\n",
    )


class FakeSend:
    """
    A C{send} callable that records every datagram with the time it left,
    and can be told to raise.

    @ivar sent: C{(time, bytes, address)} for every successful send.
    @ivar error: raised by the next calls, when not C{None}.
    """

    def __init__(self, clock: Clock) -> None:
        self._clock = clock
        self.sent: List[Tuple[float, bytes, Address]] = []
        self.error: Optional[Exception] = None

    def __call__(self, data: bytes, address: Address) -> None:
        if self.error is not None:
            raise self.error
        self.sent.append((self._clock.seconds(), data, address))

    def responses(self) -> List[Response]:
        """
        What was sent, parsed: responses only, as the test knows.
        """
        messages = self.messages()
        assert all(isinstance(m, Response) for m in messages), messages
        return [m for m in messages if isinstance(m, Response)]

    @property
    def times(self) -> List[float]:
        return [time for time, _, _ in self.sent]

    @property
    def datagrams(self) -> List[bytes]:
        return [data for _, data, _ in self.sent]

    def messages(self) -> List[sip.Message]:
        return [sip.parse(data) for data in self.datagrams]


def runUntilIdle(clock: Clock) -> None:
    """
    Advance C{clock} from one delayed call to the next until none is left, so
    that every call runs at exactly its scheduled time.
    """
    while clock.getDelayedCalls():
        next = min(call.getTime() for call in clock.getDelayedCalls())
        clock.advance(next - clock.seconds())


class LayerTestCase(SynchronousTestCase):
    """
    Build a L{TransactionLayer} on a L{Clock} with a L{FakeSend}, and watch
    the log.
    """

    clock: Clock
    send: FakeSend
    received: List[ServerTransaction]
    layer: TransactionLayer

    def observeLogs(self) -> EventLoggingObserver:
        """
        Return an observer of every event logged until the test ends.
        """
        observer = EventLoggingObserver()
        globalLogPublisher.addObserver(observer)
        self.addCleanup(globalLogPublisher.removeObserver, observer)
        return observer

    def makeLayer(
        self,
        handler: Optional[Callable[[ServerTransaction], None]] = None,
        sentBy: Address = LOCAL,
        **kwargs: Any,
    ) -> TransactionLayer:
        self.clock = Clock()
        self.send = FakeSend(self.clock)
        self.received = []

        def requestReceived(transaction: ServerTransaction) -> None:
            self.received.append(transaction)
            if handler is not None:
                handler(transaction)

        self.layer = TransactionLayer(
            self.clock,
            self.send,
            requestReceived,
            sentBy,
            **kwargs,
        )
        return self.layer


class ResponseAddressTests(SynchronousTestCase):
    """
    Tests for L{responseAddress}.
    """

    def test_sentBy(self) -> None:
        """
        Without C{received} or C{rport}, the sent-by host and port are used.
        """
        via = Via("UDP", "10.0.0.1", 5070)
        self.assertEqual(responseAddress(via, ("10.0.0.1", 5070)), ("10.0.0.1", 5070))

    def test_received(self) -> None:
        """
        C{received} replaces the sent-by host.
        """
        via = Via("UDP", "node.example", 5070, (("received", "10.0.0.9"),))
        self.assertEqual(responseAddress(via, ("10.0.0.9", 5070)), ("10.0.0.9", 5070))

    def test_rportWithValue(self) -> None:
        """
        The value of C{rport} replaces the sent-by port.
        """
        via = Via(
            "UDP",
            "10.0.0.1",
            5060,
            (("branch", "z9hG4bK1"), ("rport", "40000"), ("received", "10.0.0.2")),
        )
        self.assertEqual(responseAddress(via, ("10.0.0.2", 40000)), ("10.0.0.2", 40000))

    def test_bareRport(self) -> None:
        """
        A C{rport} without a value that nobody filled in means the source
        port (RFC 3581).
        """
        via = Via("UDP", "10.0.0.1", 5060, (("rport", None),))
        self.assertEqual(responseAddress(via, ("10.0.0.1", 40001)), ("10.0.0.1", 40001))

    def test_rportValueNotBelieved(self) -> None:
        """
        With C{rport}, responses go to the source port, whatever value the
        sender wrote (a port of someone else's, or none at all).
        """
        for value in ["99999", "6000", "x"]:
            via = Via("UDP", "10.0.0.1", 5070, (("rport", value),))
            self.assertEqual(responseAddress(via, ("10.0.0.1", 1)), ("10.0.0.1", 1))

    def test_receivedNotBelieved(self) -> None:
        """
        Responses go to the source address, never to a C{received} the
        sender wrote, nor to a sent-by host that is not the source: a
        request cannot make us send to a third party.
        """
        for parameters in [(("received", "10.0.0.66"),), ()]:
            via = Via("UDP", "10.0.0.66", 5070, parameters)
            self.assertEqual(
                responseAddress(via, ("10.0.0.1", 5070)), ("10.0.0.1", 5070)
            )

    def test_hostNotAnAddress(self) -> None:
        """
        A sent-by or C{received} that is not an IP address of ours to reach
        (a name, an address of the other family, a number that is not an
        address) is no obstacle: responses go to the source address.
        """
        for text in [
            "SIP/2.0/UDP 127.0.0.1e9:5070",
            "SIP/2.0/UDP localhost:5070",
            "SIP/2.0/UDP [::1]:5070",
            "SIP/2.0/UDP 10.0.0.1:5070;received=localhost",
            "SIP/2.0/UDP 10.0.0.1:5070;received=[::1]",
            "SIP/2.0/UDP 10.0.0.1:5070;received=127.0.0.1e9",
        ]:
            self.assertEqual(
                responseAddress(sip.parseVia(text), ("10.0.0.1", 40000)),
                ("10.0.0.1", 5070),
            )

    def test_noPort(self) -> None:
        """
        A Via without a port means 5060.
        """
        via = Via("UDP", "10.0.0.1")
        self.assertEqual(responseAddress(via, ("10.0.0.1", 5060)), ("10.0.0.1", 5060))

    def test_maddrIgnored(self) -> None:
        """
        C{maddr} does not change where responses go.
        """
        via = Via("UDP", "10.0.0.1", 5070, (("maddr", "224.0.1.75"),))
        self.assertEqual(responseAddress(via, ("10.0.0.1", 5070)), ("10.0.0.1", 5070))

    def test_ipv6(self) -> None:
        """
        IPv6 hosts come back without brackets, from the sent-by or from
        C{received}.
        """
        via = sip.parseVia("SIP/2.0/UDP [::1]:5062;branch=z9hG4bK1")
        self.assertEqual(responseAddress(via, ("::1", 5062)), ("::1", 5062))
        via = sip.parseVia(
            "SIP/2.0/UDP [2001:db8::2];received=2001:db8::1;rport=5064"
        )
        self.assertEqual(
            responseAddress(via, ("2001:db8::1", 5064)), ("2001:db8::1", 5064)
        )


class ClientTransactionTests(LayerTestCase):
    """
    Tests for client transactions: L{TransactionLayer.request} and
    L{TransactionLayer.handleResponse}.
    """

    def setUp(self) -> None:
        self.makeLayer()

    def sentRequest(self, index: int = 0) -> Request:
        message = sip.parse(self.send.datagrams[index])
        assert isinstance(message, Request)
        return message

    def answer(
        self, code: int, reason: Optional[str] = None, index: int = 0
    ) -> Tuple[Response, bool]:
        """
        Deliver a response to the request sent at C{index}.
        """
        response = sip.parse(
            sip.serialise(
                sip.responseFor(self.sentRequest(index), code, reason, toTag="to-1")
            )
        )
        assert isinstance(response, Response)
        return response, self.layer.handleResponse(response, REMOTE)

    def test_via(self) -> None:
        """
        The request goes out at once to the destination, with our Via (a
        C{z9hG4bK} branch of at least 16 hex digits) as its first header and
        the caller's headers and body after it.
        """
        request = outgoingRequest()
        self.layer.request(request, REMOTE)
        [(time, data, address)] = self.send.sent
        self.assertEqual((time, address), (0.0, REMOTE))
        sent = self.sentRequest()
        name, value = sent.headers[0]
        self.assertEqual(name, "Via")
        self.assertRegex(
            value, r"\ASIP/2\.0/UDP 127\.0\.0\.12:5060;branch=z9hG4bK[0-9a-f]{16,}\Z"
        )
        self.assertEqual(sent.headers[1:], request.headers)
        self.assertEqual(sent.body, request.body)
        self.assertEqual((sent.method, sent.uri), (request.method, request.uri))

    def test_branchesDiffer(self) -> None:
        """
        Every request gets a branch of its own.
        """
        self.layer.request(outgoingRequest(), REMOTE)
        self.layer.request(outgoingRequest(), REMOTE)
        self.assertNotEqual(
            self.sentRequest(0).via[0].branch, self.sentRequest(1).via[0].branch
        )
        self.assertEqual(self.layer.liveClientTransactions, 2)

    def test_ipv6AndTransport(self) -> None:
        """
        An IPv6 sent-by is bracketed in the Via, and the Via names the
        transport.
        """
        self.makeLayer(sentBy=("::1", 5062), transport="TCP", reliable=True)
        self.layer.request(outgoingRequest(), ("::1", 5060))
        self.assertTrue(
            self.sentRequest().headers[0][1].startswith(
                "SIP/2.0/TCP [::1]:5062;branch=z9hG4bK"
            )
        )

    def test_retransmissionSchedule(self) -> None:
        """
        Over UDP the request is sent again on Timer E, starting at T1 and
        doubling up to T2, the same bytes each time, and at 64*T1 Timer F
        fires the L{Deferred} with a C{408}, not an error.
        """
        d = self.layer.request(outgoingRequest(), REMOTE)
        fired: List[Tuple[float, Response]] = []
        d.addCallback(lambda response: fired.append((self.clock.seconds(), response)))
        runUntilIdle(self.clock)
        self.assertEqual(self.send.times, DEFAULT_SCHEDULE)
        self.assertEqual(len(set(self.send.datagrams)), 1)
        self.assertEqual({address for _, _, address in self.send.sent}, {REMOTE})
        [(time, response)] = fired
        self.assertEqual(time, DEFAULT_TIMEOUT)
        self.assertEqual((response.code, response.reason), (408, "Request Timeout"))
        self.assertEqual(self.layer.liveClientTransactions, 0)
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.assertEqual(self.layer.statistics["retransmissionsSent"], 10)
        self.assertEqual(self.layer.statistics["timeouts"], 1)

    def test_timeoutResponse(self) -> None:
        """
        The local C{408} answers the request as sent: our Via and its
        branch, its Call-ID, From and CSeq.
        """
        d = self.layer.request(outgoingRequest(), REMOTE)
        self.clock.advance(DEFAULT_TIMEOUT)
        response = self.successResultOf(d)
        sent = self.sentRequest()
        self.assertEqual(response.via[0].branch, sent.via[0].branch)
        self.assertEqual(response.callID, sent.callID)
        self.assertEqual(response.cseq, sent.cseq)
        self.assertEqual(response.header("From"), sent.header("From"))

    def test_notBeforeTimerF(self) -> None:
        """
        Nothing fires the L{Deferred} before 64*T1.
        """
        d = self.layer.request(outgoingRequest(), REMOTE)
        self.clock.advance(DEFAULT_TIMEOUT - 0.25)
        self.assertNoResult(d)
        self.clock.advance(0.25)
        self.assertEqual(self.successResultOf(d).code, 408)

    def test_customTimers(self) -> None:
        """
        T1 and T2 are parameters of the layer.
        """
        self.makeLayer(T1=0.25, T2=1.0)
        d = self.layer.request(outgoingRequest(), REMOTE)
        fired: List[float] = []
        d.addCallback(lambda _: fired.append(self.clock.seconds()))
        runUntilIdle(self.clock)
        self.assertEqual(
            self.send.times, [0.0, 0.25, 0.75] + [1.75 + i for i in range(15)]
        )
        self.assertEqual(fired, [16.0])

    @settings(max_examples=50, deadline=None)
    @given(
        st.integers(min_value=1, max_value=2048),
        st.integers(min_value=0, max_value=7),
    )
    def test_scheduleProperty(self, t1Units: int, t2Shift: int) -> None:
        """
        For any T1 and T2 = T1 * 2**n, the gaps between sends are
        min(T1 * 2**i, T2), every send comes before 64*T1, and the C{408}
        comes at 64*T1 exactly.
        """
        t1 = t1Units / 1024
        t2 = t1 * 2**t2Shift
        self.makeLayer(T1=t1, T2=t2)
        d = self.layer.request(outgoingRequest(), REMOTE)
        fired: List[float] = []
        d.addCallback(lambda _: fired.append(self.clock.seconds()))
        runUntilIdle(self.clock)
        times = self.send.times
        gaps = [later - earlier for earlier, later in zip(times, times[1:])]
        self.assertEqual(gaps, [min(t1 * 2**i, t2) for i in range(len(gaps))])
        self.assertLess(times[-1], 64 * t1)
        self.assertLessEqual(64 * t1, times[-1] + min(t1 * 2 ** len(gaps), t2))
        self.assertEqual(fired, [64 * t1])

    def test_provisionalThenEveryT2(self) -> None:
        """
        A provisional response does not fire the L{Deferred}; from the next
        Timer E on, the request is sent again every T2, and Timer F still
        ends it.
        """
        d = self.layer.request(outgoingRequest(), REMOTE)
        # Clock.advance runs calls at the end of the step, so step to each.
        self.clock.advance(0.5)
        self.clock.advance(0.5)
        _, matched = self.answer(100, "Trying")
        self.assertTrue(matched)
        self.assertNoResult(d)
        runUntilIdle(self.clock)
        self.assertEqual(
            self.send.times, [0.0, 0.5, 1.5, 5.5, 9.5, 13.5, 17.5, 21.5, 25.5, 29.5]
        )
        self.assertEqual(self.successResultOf(d).code, 408)

    def test_finalResponse(self) -> None:
        """
        A final response fires the L{Deferred} with it, once, and stops the
        retransmissions.
        """
        d = self.layer.request(outgoingRequest(), REMOTE)
        fired: List[Response] = []
        d.addCallback(fired.append)
        self.clock.advance(0.5)
        self.clock.advance(0.5)
        response, matched = self.answer(200, "OK")
        self.assertTrue(matched)
        self.assertEqual(fired, [response])
        self.assertIs(fired[0], response)
        runUntilIdle(self.clock)
        self.assertEqual(self.send.times, [0.0, 0.5])
        self.assertEqual(fired, [response])

    def test_duplicateFinalAbsorbed(self) -> None:
        """
        A final response that comes again within T4 is matched and absorbed;
        after T4 the transaction is forgotten.
        """
        d = self.layer.request(outgoingRequest(), REMOTE)
        fired: List[Response] = []
        d.addCallback(fired.append)
        self.answer(200)
        self.clock.advance(T4 - 0.5)
        _, matched = self.answer(200)
        self.assertTrue(matched)
        self.assertEqual(len(fired), 1)
        self.assertEqual(self.layer.statistics["retransmissionsAbsorbed"], 1)
        self.assertEqual(self.layer.liveClientTransactions, 1)
        self.clock.advance(0.5)
        self.assertEqual(self.layer.liveClientTransactions, 0)
        self.assertEqual(self.clock.getDelayedCalls(), [])
        _, matched = self.answer(200)
        self.assertFalse(matched)
        self.assertEqual(len(fired), 1)

    def test_provisionalAfterFinal(self) -> None:
        """
        A provisional response after the final one changes nothing.
        """
        d = self.layer.request(outgoingRequest(), REMOTE)
        self.answer(202)
        _, matched = self.answer(100)
        self.assertTrue(matched)
        self.assertEqual(self.successResultOf(d).code, 202)

    def test_unmatchedResponse(self) -> None:
        """
        A response with another branch, or the same branch and another CSeq
        method, matches nothing.
        """
        d = self.layer.request(outgoingRequest(), REMOTE)
        sent = self.sentRequest()
        otherBranch = sip.responseFor(
            kdmqRequest(branch="z9hG4bKsomethingelse0000"), 200
        )
        self.assertFalse(self.layer.handleResponse(otherBranch, REMOTE))
        headers = tuple(
            (name, "10 OPTIONS" if name == "CSeq" else value)
            for name, value in sip.responseFor(sent, 200).headers
        )
        otherMethod = Response(200, "OK", headers)
        self.assertFalse(self.layer.handleResponse(otherMethod, REMOTE))
        noVia = Response(200, "OK", (("CSeq", "10 KDMQ"),))
        self.assertFalse(self.layer.handleResponse(noVia, REMOTE))
        self.assertNoResult(d)

    def test_reliable(self) -> None:
        """
        Over a reliable transport the request is sent once and Timer F still
        gives a C{408} at 64*T1.
        """
        self.makeLayer(transport="TCP", reliable=True)
        d = self.layer.request(outgoingRequest(), REMOTE)
        fired: List[float] = []
        d.addCallback(lambda _: fired.append(self.clock.seconds()))
        runUntilIdle(self.clock)
        self.assertEqual(self.send.times, [0.0])
        self.assertEqual(fired, [64 * T1])

    def test_reliableForgottenAtOnce(self) -> None:
        """
        Over a reliable transport Timer K is zero: a final response ends the
        transaction at once.
        """
        self.makeLayer(transport="TCP", reliable=True)
        d = self.layer.request(outgoingRequest(), REMOTE)
        self.answer(200)
        self.assertEqual(self.successResultOf(d).code, 200)
        self.assertEqual(self.layer.liveClientTransactions, 0)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_limit(self) -> None:
        """
        With C{maxTransactions} client transactions live, another request
        fails with L{TransactionLimitExceeded} and sends nothing, until one
        ends.
        """
        self.makeLayer(maxTransactions=2)
        self.layer.request(outgoingRequest(), REMOTE)
        self.layer.request(outgoingRequest(), REMOTE)
        sends = len(self.send.sent)
        failure = self.failureResultOf(
            self.layer.request(outgoingRequest(), REMOTE), TransactionLimitExceeded
        )
        self.assertIn("maxTransactions=2", str(failure.value))
        self.assertEqual(len(self.send.sent), sends)
        self.assertEqual(self.layer.statistics["refusedOverCapacity"], 1)
        self.assertEqual(self.layer.liveClientTransactions, 2)
        self.answer(200, index=0)
        self.clock.advance(T4)
        self.assertNoResult(self.layer.request(outgoingRequest(), REMOTE))

    def test_cancel(self) -> None:
        """
        Cancelling the L{Deferred} ends the transaction: no more sends, no
        timers, and a later response matches nothing.
        """
        d = self.layer.request(outgoingRequest(), REMOTE)
        self.clock.advance(0.5)
        d.cancel()
        self.failureResultOf(d, CancelledError)
        self.assertEqual(self.layer.liveClientTransactions, 0)
        self.assertEqual(self.clock.getDelayedCalls(), [])
        _, matched = self.answer(200)
        self.assertFalse(matched)
        self.assertEqual(self.send.times, [0.0, 0.5])
        self.assertEqual(self.layer.statistics["cancelled"], 1)

    def test_cancelAfterFinal(self) -> None:
        """
        Cancelling a L{Deferred} that has fired changes nothing.
        """
        d = self.layer.request(outgoingRequest(), REMOTE)
        self.answer(200)
        d.cancel()
        self.assertEqual(self.successResultOf(d).code, 200)
        self.assertEqual(self.layer.statistics["cancelled"], 0)

    def test_sendErrorInRequest(self) -> None:
        """
        An C{OSError} from C{send} on the first send is logged as a warning
        without a traceback; the transaction goes on, and the retransmission
        goes out.
        """
        observer = self.observeLogs()
        self.send.error = OSError("Network is unreachable")
        d = self.layer.request(outgoingRequest(), REMOTE)
        self.assertNoResult(d)
        self.send.error = None
        self.clock.advance(0.5)
        self.assertEqual(self.send.times, [0.5])
        warnings = [e for e in observer if e["log_level"] == LogLevel.warn]
        self.assertEqual(len(warnings), 1)
        self.assertNotIn("log_failure", warnings[0])
        self.assertIn("Network is unreachable", str(warnings[0]["error"]))
        self.assertEqual(self.layer.statistics["sendErrors"], 1)

    def test_sendErrorInTimer(self) -> None:
        """
        A C{send} that always raises C{OSError} does not break Timer E, and
        Timer F still ends the transaction with a C{408}; each failure is
        counted, and warned about once a minute.
        """
        observer = self.observeLogs()
        d = self.layer.request(outgoingRequest(), REMOTE)
        self.send.error = OSError("No buffer space available")
        runUntilIdle(self.clock)
        self.assertEqual(self.successResultOf(d).code, 408)
        self.assertEqual(self.layer.statistics["sendErrors"], 10)
        self.assertEqual(
            len([e for e in observer if e["log_level"] == LogLevel.warn]), 1
        )

    def test_sendBug(self) -> None:
        """
        Any other exception from C{send} is a bug: it is logged with its
        traceback, does not escape either, and ends the transaction at once
        with a local C{408}, since sending again would only repeat it.
        """
        self.send.error = ZeroDivisionError()
        d = self.layer.request(outgoingRequest(), REMOTE)
        self.assertEqual(len(self.flushLoggedErrors(ZeroDivisionError)), 1)
        response = self.successResultOf(d)
        self.assertEqual((response.code, response.reason), (408, "Could Not Send"))
        self.assertEqual(self.layer.liveClientTransactions, 0)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_unreachableAddress(self) -> None:
        """
        A request that cannot be sent to its destination at all (Twisted's
        UDP port refuses an IPv6 address on an IPv4 socket, and a name; the
        socket refuses an address of the other family) ends at once with a
        local C{408 Unreachable Address}, without a traceback, one warning,
        and nothing sent again.
        """
        for error in [
            InvalidAddressError("::1", "IPv4 port write() called with IPv6 address"),
            socket.gaierror(-9, "Address family for hostname not supported"),
            OSError(errno.EAFNOSUPPORT, "Address family not supported by protocol"),
        ]:
            self.makeLayer()
            observer = self.observeLogs()
            self.send.error = error
            d = self.layer.request(outgoingRequest(), ("::1", 5060))
            response = self.successResultOf(d)
            self.assertEqual((response.code, response.reason), (408, "Unreachable Address"))
            self.assertEqual(self.layer.liveClientTransactions, 0)
            self.assertEqual(self.clock.getDelayedCalls(), [])
            self.assertEqual(self.layer.statistics["sendErrors"], 1)
            self.assertEqual(self.layer.statistics["retransmissionsSent"], 0)
            [warning] = [e for e in observer if e["log_level"] == LogLevel.warn]
            self.assertNotIn("log_failure", warning)
            self.assertEqual(self.flushLoggedErrors(), [])

    def test_messageTooLong(self) -> None:
        """
        A request the socket refuses as too long fails at once with
        L{MessageTooLarge}: no node is at fault, and sending again would
        not help.
        """
        for error in [
            MessageLengthError("message too long"),
            OSError(errno.EMSGSIZE, "Message too long"),
        ]:
            self.makeLayer()
            self.send.error = error
            d = self.layer.request(outgoingRequest(), REMOTE)
            self.failureResultOf(d, MessageTooLarge)
            self.assertEqual(self.layer.liveClientTransactions, 0)
            self.assertEqual(self.clock.getDelayedCalls(), [])
            self.assertEqual(self.flushLoggedErrors(), [])

    def test_tooLargeForOneDatagram(self) -> None:
        """
        A request whose datagram would be longer than 65,507 octets, the
        most one UDP datagram carries, fails at once with a clear error,
        and nothing is sent.  One octet less is sent.
        """
        request = outgoingRequest()
        via = ("Via", "SIP/2.0/UDP 127.0.0.12:5060;branch=z9hG4bK0123456789abcdef")
        sized = attr.evolve(request, headers=(via,) + request.headers, body=b"x" * 10000)
        # The rest of the datagram, with a five-digit Content-Length.
        rest = len(sip.serialise(sized)) - 10000
        fits = attr.evolve(request, body=b"x" * (65507 - rest))
        d = self.layer.request(fits, REMOTE)
        self.assertNoResult(d)
        self.assertEqual(len(self.send.datagrams[0]), 65507)
        tooLarge = attr.evolve(request, body=fits.body + b"x")
        failure = self.failureResultOf(self.layer.request(tooLarge, REMOTE), MessageTooLarge)
        self.assertIn("65508 octets", failure.getErrorMessage())
        self.assertEqual(len(self.send.sent), 1)
        self.assertEqual(self.layer.statistics["refusedTooLarge"], 1)

    def test_callbackSendsAgain(self) -> None:
        """
        A callback on the L{Deferred} may start another transaction.
        """
        d = self.layer.request(outgoingRequest(), REMOTE)
        d.addCallback(lambda _: self.layer.request(outgoingRequest(), REMOTE))
        self.answer(200)
        self.assertEqual(len(self.send.sent), 2)
        self.assertEqual(self.layer.liveClientTransactions, 2)


class ServerTransactionTests(LayerTestCase):
    """
    Tests for server transactions: L{TransactionLayer.handleRequest} and
    L{ServerTransaction}.
    """

    def setUp(self) -> None:
        self.makeLayer()

    def receive(self, request: Optional[Request] = None, **kwargs: object) -> Request:
        if request is None:
            request = kdmqRequest(**kwargs)
        self.layer.handleRequest(request, REMOTE)
        return request

    def test_newRequest(self) -> None:
        """
        A new request is handed to C{requestReceived} as a
        L{ServerTransaction} in Trying, and nothing is sent.
        """
        request = self.receive()
        [transaction] = self.received
        self.assertIs(transaction.request, request)
        self.assertEqual(transaction.source, REMOTE)
        self.assertEqual(transaction.state, TransactionState.TRYING)
        self.assertFalse(transaction.answered)
        self.assertEqual(self.layer.liveServerTransactions, 1)
        self.assertEqual(self.send.sent, [])

    def test_duplicateInTrying(self) -> None:
        """
        A retransmission in Trying is absorbed: not handed on, not answered.
        """
        request = self.receive()
        self.receive(kdmqRequest())
        self.assertEqual(len(self.received), 1)
        self.assertEqual(self.send.sent, [])
        self.assertEqual(self.layer.statistics["retransmissionsAbsorbed"], 1)
        self.received[0].respond(sip.responseFor(request, 200, toTag="t"))
        self.assertEqual(len(self.send.sent), 1)

    def test_duplicateInProceeding(self) -> None:
        """
        A retransmission in Proceeding is answered with the last provisional
        response, byte for byte.
        """
        request = self.receive()
        transaction = self.received[0]
        transaction.respond(sip.responseFor(request, 100))
        transaction.respond(sip.responseFor(request, 180, "Still here"))
        self.assertEqual(transaction.state, TransactionState.PROCEEDING)
        self.assertFalse(transaction.answered)
        self.receive(kdmqRequest())
        self.assertEqual(len(self.received), 1)
        self.assertEqual(len(self.send.sent), 3)
        self.assertEqual(self.send.datagrams[2], self.send.datagrams[1])
        self.assertEqual(self.send.sent[2][2], REMOTE)

    def test_duplicateInCompleted(self) -> None:
        """
        A retransmission in Completed is answered with the stored final
        response, byte for byte, and is not handed on.
        """
        request = self.receive()
        transaction = self.received[0]
        transaction.respond(sip.responseFor(request, 200, "OK", toTag="t"))
        self.assertTrue(transaction.answered)
        self.assertEqual(transaction.state, TransactionState.COMPLETED)
        self.receive(kdmqRequest())
        self.receive(kdmqRequest())
        self.assertEqual(len(self.received), 1)
        self.assertEqual(len(self.send.sent), 3)
        self.assertEqual(len(set(self.send.datagrams)), 1)
        self.assertEqual(self.layer.statistics["retransmissionsAbsorbed"], 2)
        self.assertEqual(self.layer.statistics["responsesResent"], 2)

    def test_timerJ(self) -> None:
        """
        After Timer J (64*T1) the transaction is forgotten, and the same
        request is a new transaction.
        """
        request = self.receive()
        self.received[0].respond(sip.responseFor(request, 200, toTag="t"))
        self.clock.advance(64 * T1 - 0.5)
        self.receive(kdmqRequest())
        self.assertEqual(len(self.received), 1)
        self.clock.advance(0.5)
        self.assertEqual(self.received[0].state, TransactionState.TERMINATED)
        self.assertEqual(self.layer.liveServerTransactions, 0)
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.receive(kdmqRequest())
        self.assertEqual(len(self.received), 2)

    def test_reliable(self) -> None:
        """
        Over a reliable transport Timer J is zero: the final response ends
        the transaction at once.
        """
        self.makeLayer(transport="TCP", reliable=True)
        request = self.receive()
        self.received[0].respond(sip.responseFor(request, 200, toTag="t"))
        self.assertEqual(self.layer.liveServerTransactions, 0)
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.assertEqual(len(self.send.sent), 1)

    def test_respondInHandler(self) -> None:
        """
        A handler may answer before it returns.
        """
        self.makeLayer(
            lambda t: respond(t, 200)
        )
        self.receive()
        [response] = self.send.messages()
        assert isinstance(response, Response)
        self.assertEqual(response.code, 200)
        self.assertTrue(self.received[0].answered)

    def test_secondFinalIgnored(self) -> None:
        """
        A second final response, or a provisional one after the final one,
        is a bug: not sent, and logged as a warning.
        """
        observer = self.observeLogs()
        request = self.receive()
        transaction = self.received[0]
        first = sip.responseFor(request, 200, toTag="t")
        transaction.respond(first)
        transaction.respond(sip.responseFor(request, 500, toTag="t"))
        transaction.respond(sip.responseFor(request, 100))
        self.assertEqual(len(self.send.sent), 1)
        self.assertIs(transaction.response, first)
        warnings = [e for e in observer if e["log_level"] == LogLevel.warn]
        self.assertEqual(len(warnings), 2)
        self.assertEqual([e["code"] for e in warnings], [500, 100])
        self.assertTrue(warnings[0]["log_format"].startswith("Bug"))

    def test_requestDroppedWhenAnswered(self) -> None:
        """
        Once answered, a transaction keeps the response bytes but not the
        request: it only lives on to absorb retransmissions.
        """
        request = self.receive(body=b"x" * 60000)
        transaction = self.received[0]
        transaction.respond(sip.responseFor(request, 100))
        self.assertIs(transaction.request, request)
        transaction.respond(sip.responseFor(request, 200, toTag="t"))
        dropped = weakref.ref(request)
        del request
        gc.collect()
        self.assertIsNone(dropped())
        self.assertIsNone(transaction.request)
        self.assertEqual(transaction.method, "KDMQ")
        self.receive(kdmqRequest(body=b"x" * 60000))
        self.assertEqual(len(self.received), 1)
        self.assertEqual(self.send.datagrams[2], self.send.datagrams[1])

    def test_responseAddress(self) -> None:
        """
        Responses go to the address the top Via names, with C{received} and
        C{rport}.
        """
        request = kdmqRequest(viaParameters=";received=10.0.0.9;rport=6000")
        self.layer.handleRequest(request, ("10.0.0.9", 6000))
        self.received[0].respond(sip.responseFor(request, 200, toTag="t"))
        self.assertEqual(self.send.sent[0][2], ("10.0.0.9", 6000))

    def test_sameBranchOtherMethod(self) -> None:
        """
        The method is part of the key: the same branch with another method is
        another transaction.
        """
        self.receive()
        self.receive(method="OPTIONS")
        self.assertEqual(len(self.received), 2)

    def test_sameBranchOtherSentBy(self) -> None:
        """
        The sent-by is part of the key.
        """
        self.receive()
        self.receive(sentBy="127.0.0.13:5060")
        self.receive(sentBy="127.0.0.11:5062")
        self.assertEqual(len(self.received), 3)

    def test_rfc2543Fallback(self) -> None:
        """
        Without a C{z9hG4bK} branch, retransmissions are matched by Request-URI,
        tags, Call-ID, CSeq and top Via.
        """
        for branch in ["1234abcd", None]:
            self.makeLayer()
            request = self.receive(branch=branch)
            self.receive(branch=branch)
            self.assertEqual(len(self.received), 1)
            self.received[0].respond(sip.responseFor(request, 200, toTag="t"))
            self.receive(branch=branch)
            self.assertEqual(self.send.datagrams[0], self.send.datagrams[1])
            self.receive(branch=branch, cseq=11)
            self.receive(branch=branch, callID="call-2@127.0.0.11")
            self.receive(branch=branch, toTag="other")
            self.receive(branch=branch, sentBy="127.0.0.11:5062")
            self.assertEqual(len(self.received), 5)

    def test_ackIgnored(self) -> None:
        """
        ACK starts no transaction and gets no reply.
        """
        self.receive(method="ACK")
        self.assertEqual(self.received, [])
        self.assertEqual(self.send.sent, [])
        self.assertEqual(self.layer.liveServerTransactions, 0)
        self.assertEqual(self.layer.statistics["acksIgnored"], 1)

    def test_limit(self) -> None:
        """
        With C{maxTransactions} server transactions live, a new request is
        answered C{503} with a To tag and no transaction; its retransmission
        is answered C{503} again.
        """
        self.makeLayer(maxTransactions=1)
        self.receive()
        self.receive(branch="z9hG4bKsecond0000000000")
        self.receive(branch="z9hG4bKsecond0000000000")
        self.assertEqual(len(self.received), 1)
        self.assertEqual(self.layer.liveServerTransactions, 1)
        responses = self.send.messages()
        self.assertEqual(len(responses), 2)
        for response in responses:
            assert isinstance(response, Response)
            self.assertEqual(response.code, 503)
            self.assertEqual(response.via[0].branch, "z9hG4bKsecond0000000000")
            self.assertIsNotNone(response.to.tag)
        self.assertEqual(self.send.sent[0][2], REMOTE)
        self.assertEqual(self.layer.statistics["rejectedOverCapacity"], 2)

    def test_limitEvictsAnsweredFirst(self) -> None:
        """
        At the cap, the oldest transaction that was already answered is
        forgotten to make room, rather than a new request being refused; its
        retransmission is then a new request.
        """
        self.makeLayer(
            lambda t: respond(t, 200, "OK"),
            maxTransactions=2,
        )
        self.receive(branch="z9hG4bKfirst00000000000")
        self.clock.advance(1)
        self.receive(branch="z9hG4bKsecond0000000000")
        self.receive(branch="z9hG4bKthird00000000000")
        self.assertEqual(len(self.received), 3)
        self.assertEqual(self.layer.liveServerTransactions, 2)
        self.assertEqual(self.layer.statistics["evicted"], 1)
        self.assertEqual(self.layer.statistics["rejectedOverCapacity"], 0)
        self.receive(branch="z9hG4bKfirst00000000000")
        self.assertEqual(len(self.received), 4)
        self.receive(branch="z9hG4bKthird00000000000")
        self.assertEqual(len(self.received), 4)
        self.assertEqual([r.code for r in self.send.responses()], [200] * 5)

    def test_handlerRaises(self) -> None:
        """
        An exception from C{requestReceived} does not escape: it is logged
        and the request answered C{500}.
        """

        def handler(transaction: ServerTransaction) -> None:
            raise RuntimeError("boom")

        self.makeLayer(handler)
        self.receive()
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)
        [response] = self.send.messages()
        assert isinstance(response, Response)
        self.assertEqual(response.code, 500)
        self.assertIsNotNone(response.to.tag)
        self.assertTrue(self.received[0].answered)
        self.assertEqual(self.layer.statistics["handlerErrors"], 1)

    def test_handlerRaisesAfterAnswering(self) -> None:
        """
        An exception from C{requestReceived} after it answered is logged,
        and the answer stands.
        """

        def handler(transaction: ServerTransaction) -> None:
            respond(transaction, 202)
            raise RuntimeError("boom")

        self.makeLayer(handler)
        self.receive()
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)
        [response] = self.send.messages()
        assert isinstance(response, Response)
        self.assertEqual(response.code, 202)

    def test_sendErrorInRespond(self) -> None:
        """
        An C{OSError} from C{send} in L{ServerTransaction.respond} is logged
        and does not escape; the response is still stored and sent again for
        a retransmission.
        """
        request = self.receive()
        self.send.error = OSError("Network is unreachable")
        self.received[0].respond(sip.responseFor(request, 200, toTag="t"))
        self.assertEqual(self.received[0].state, TransactionState.COMPLETED)
        self.send.error = None
        self.receive(kdmqRequest())
        [response] = self.send.messages()
        assert isinstance(response, Response)
        self.assertEqual(response.code, 200)
        self.assertEqual(self.layer.statistics["sendErrors"], 1)

    def test_replyNotSent(self) -> None:
        """
        A reply the socket refuses (too long, say) is a counted drop with
        one warning and no traceback; a retransmission of the request is
        answered from the stored reply, and that failure is counted too.
        """
        observer = self.observeLogs()
        self.makeLayer(lambda t: t.reply(200, "OK", body=b"x"))
        self.send.error = MessageLengthError("message too long")
        self.receive()
        self.receive()
        self.assertEqual(self.layer.statistics["sendErrors"], 2)
        self.assertEqual(self.layer.statistics["responsesResent"], 1)
        self.assertEqual(self.flushLoggedErrors(), [])
        warnings = [e for e in observer if e["log_level"] == LogLevel.warn]
        self.assertEqual(len(warnings), 1)
        self.assertNotIn("log_failure", warnings[0])

    def test_reply(self) -> None:
        """
        L{ServerTransaction.reply} answers with what L{sip.responseFor}
        would make, a fresh To tag added; it gives final responses only.
        """
        self.makeLayer(
            lambda t: t.reply(202, headers=[("Server", "x")], body=b"ok")
        )
        request = self.receive()
        [response] = self.send.messages()
        assert isinstance(response, Response)
        self.assertEqual((response.code, response.reason), (202, "Accepted"))
        self.assertEqual(response.header("Server"), "x")
        self.assertEqual(response.body, b"ok")
        self.assertEqual(response.via, request.via)
        self.assertIsNotNone(response.to.tag)
        self.assertEqual(self.received[0].code, 202)
        self.assertIsNone(self.received[0].response)
        self.makeLayer(lambda t: t.reply(180))
        self.receive()
        self.assertEqual(len(self.flushLoggedErrors(ValueError)), 1)
        [response] = self.send.responses()
        self.assertEqual(response.code, 500)

    def test_abandoned(self) -> None:
        """
        A request that gets no final response within 64*T1 (when its client
        has given up) is forgotten, and a late response is not sent.
        """
        observer = self.observeLogs()
        request = self.receive()
        self.received[0].respond(sip.responseFor(request, 100))
        self.clock.advance(64 * T1)
        self.assertEqual(self.layer.liveServerTransactions, 0)
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.assertEqual(self.layer.statistics["abandoned"], 1)
        self.assertEqual(
            len([e for e in observer if e["log_level"] == LogLevel.warn]), 1
        )
        self.received[0].respond(sip.responseFor(request, 200, toTag="t"))
        self.assertEqual(len(self.send.sent), 1)

    def test_answerReplacesGuard(self) -> None:
        """
        Once answered, a transaction is no longer abandoned: Timer J, from
        the answer, ends it.
        """
        request = self.receive()
        self.clock.advance(10)
        self.received[0].respond(sip.responseFor(request, 200, toTag="t"))
        self.clock.advance(64 * T1 - 10)
        self.assertEqual(self.layer.statistics["abandoned"], 0)
        self.assertEqual(self.received[0].state, TransactionState.COMPLETED)
        self.clock.advance(9.9)
        self.assertEqual(self.layer.liveServerTransactions, 1)
        self.clock.advance(0.1)
        self.assertEqual(self.layer.liveServerTransactions, 0)
        self.assertEqual(self.received[0].state, TransactionState.TERMINATED)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_oneTimer(self) -> None:
        """
        However many requests are live, answered or not, one timer ends
        them all, each on time (or at most T1/8 late, when it comes due
        with others).
        """

        def handler(transaction: ServerTransaction) -> None:
            request = transaction.request
            assert request is not None
            if request.callID.startswith("answer"):
                respond(transaction, 200)

        self.makeLayer(handler)
        for i in range(100):
            self.receive(branch=f"z9hG4bKa{i}", callID=f"answer-{i}")
            self.receive(branch=f"z9hG4bKp{i}", callID=f"pending-{i}")
            self.clock.advance(0.01)
        self.assertEqual(len(self.clock.getDelayedCalls()), 1)
        self.assertEqual(self.layer.liveServerTransactions, 200)
        self.clock.advance(64 * T1 - 1.5)
        self.assertEqual(self.layer.liveServerTransactions, 200)
        for _ in range(20):
            self.clock.advance(0.1)
            self.assertLessEqual(len(self.clock.getDelayedCalls()), 1)
        self.assertEqual(self.layer.liveServerTransactions, 0)
        self.assertEqual(self.layer.statistics["abandoned"], 100)
        self.assertEqual(self.clock.getDelayedCalls(), [])


class StopTests(LayerTestCase):
    """
    Tests for L{TransactionLayer.stop}.
    """

    def setUp(self) -> None:
        self.makeLayer()

    def test_stop(self) -> None:
        """
        Stopping fails pending client L{Deferred}s with
        L{TransactionLayerStopped}, leaves answered ones alone, forgets server
        transactions and leaves no delayed call behind.
        """
        pending = self.layer.request(outgoingRequest(), REMOTE)
        answered = self.layer.request(outgoingRequest(), REMOTE)
        sent = sip.parse(self.send.datagrams[1])
        assert isinstance(sent, Request)
        self.layer.handleResponse(sip.responseFor(sent, 200, toTag="t"), REMOTE)
        request = kdmqRequest()
        self.layer.handleRequest(request, REMOTE)
        self.layer.handleRequest(kdmqRequest(branch="z9hG4bKother00000000000"), REMOTE)
        self.received[0].respond(sip.responseFor(request, 200, toTag="t"))

        self.assertIsNone(self.successResultOf(self.layer.stop()))
        self.failureResultOf(pending, TransactionLayerStopped)
        self.assertEqual(self.successResultOf(answered).code, 200)
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.assertEqual(self.layer.liveClientTransactions, 0)
        self.assertEqual(self.layer.liveServerTransactions, 0)

        sends = len(self.send.sent)
        respond(self.received[1], 200)
        self.assertEqual(len(self.send.sent), sends)

    def test_afterStop(self) -> None:
        """
        After stopping, L{TransactionLayer.request} fails at once and
        L{TransactionLayer.handleRequest} ignores what it is given.
        """
        self.successResultOf(self.layer.stop())
        self.failureResultOf(
            self.layer.request(outgoingRequest(), REMOTE), TransactionLayerStopped
        )
        self.layer.handleRequest(kdmqRequest(), REMOTE)
        self.assertEqual(self.received, [])
        self.assertEqual(self.send.sent, [])
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.successResultOf(self.layer.stop())

    def test_startAfterStop(self) -> None:
        """
        After L{TransactionLayer.start}, a stopped layer sends requests and
        hands on received ones again.
        """
        self.layer.stop()
        self.layer.start()
        d = self.layer.request(outgoingRequest(), REMOTE)
        self.assertEqual(len(self.send.sent), 1)
        sent = sip.parse(self.send.datagrams[0])
        assert isinstance(sent, Request)
        self.layer.handleResponse(sip.responseFor(sent, 200, toTag="t"), REMOTE)
        self.assertEqual(self.successResultOf(d).code, 200)
        request = kdmqRequest()
        self.layer.handleRequest(request, REMOTE)
        [transaction] = self.received
        transaction.respond(sip.responseFor(request, 200, toTag="t"))
        self.assertEqual(len(self.send.sent), 2)

    def test_startStarted(self) -> None:
        """
        Starting a started layer, new or started again, does nothing: its
        transactions go on.
        """
        pending = self.layer.request(outgoingRequest(), REMOTE)
        self.layer.start()
        self.assertNoResult(pending)
        self.assertEqual(self.layer.liveClientTransactions, 1)
        self.layer.stop()
        self.failureResultOf(pending, TransactionLayerStopped)
        self.layer.start()
        self.layer.start()
        self.layer.request(outgoingRequest(), REMOTE)
        self.assertEqual(self.layer.liveClientTransactions, 1)

    def test_errbackStartsAnother(self) -> None:
        """
        An errback that tries to send again while the layer stops gets
        L{TransactionLayerStopped} too, and leaves nothing behind.
        """
        again: List[Deferred[Response]] = []

        def retry(failure: object) -> None:
            again.append(self.layer.request(outgoingRequest(), REMOTE))

        self.layer.request(outgoingRequest(), REMOTE).addErrback(retry)
        self.layer.stop()
        self.failureResultOf(again[0], TransactionLayerStopped)
        self.assertEqual(self.clock.getDelayedCalls(), [])
