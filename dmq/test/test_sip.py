# -*- test-case-name: dmq.test.test_sip -*-
"""
Tests for L{dmq.sip}, the SIP message model and codec, and for
L{dmq.test.captures}, the loader of the captured Kamailio traffic the tests
use as wire vectors.
"""

from __future__ import annotations

import pickle
from typing import Callable, List, Tuple

import attr
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from dmq import sip
from dmq.sip import (
    CSeq,
    NameAddress,
    Request,
    Response,
    SIPParseError,
    URI,
    Via,
    checkRequest,
    parse,
    parseNameAddress,
    parseURI,
    parseVia,
    responseFor,
    serialise,
)
from dmq.sip.headers import _CANONICAL_NAMES, _KNOWN_NAMES, _LIST_HEADERS, canonicalName
from dmq.test.captures import Capture, datagrams

# The traffic of a real Kamailio 5.6.3 bus: every datagram is a valid message.
BUS_CAPTURES = [
    "01-bus-formation.txt",
    "02-pings.txt",
    "03-htable-replication.txt",
    "04-stop-n3-sigterm.txt",
    "05-rejoin-n3.txt",
    "06-kill-n1-notification-node.txt",
    "07-restart-n1.txt",
    "08-join-n4-init-sync.txt",
]

# Hand-crafted probes and Kamailio's replies to them.
PROBE_CAPTURES = [
    "probe-01-errors.txt",
    "probe-02-htable-sync-unknown.txt",
    "probe-03-notify-new-node.txt",
    "probe-04-notify-disabled.txt",
    "probe-05-badstatus-deadlock.txt",
    "probe-06-htable-emptyobj-crash.txt",
]


def busDatagrams() -> List[Capture]:
    """
    Return every datagram of the bus captures.
    """
    return [capture for name in BUS_CAPTURES for capture in datagrams(name)]


def parseRequest(data: bytes) -> Request:
    """
    Parse C{data}, which must be a request.
    """
    message = parse(data)
    if not isinstance(message, Request):
        raise AssertionError(f"Not a request: {message!r}")
    return message


def parseResponse(data: bytes) -> Response:
    """
    Parse C{data}, which must be a response.
    """
    message = parse(data)
    if not isinstance(message, Response):
        raise AssertionError(f"Not a response: {message!r}")
    return message


def request(*headerLines: str, body: bytes = b"", startLine: str = "") -> bytes:
    """
    Build a request datagram from header lines, with CRLF line endings.
    """
    lines = [startLine or "KDMQ sip:notification_peer@127.0.0.1:5061 SIP/2.0"]
    lines.extend(headerLines)
    return ("\r\n".join(lines) + "\r\n\r\n").encode("utf-8") + body


# The mandatory headers of a KDMQ request, as Kamailio writes them.
MANDATORY = (
    "Via: SIP/2.0/UDP 127.0.0.1:5062;branch=z9hG4bK7cb7.a369c4f5.0",
    "To: <sip:notification_peer@127.0.0.1:5061>",
    "From: <sip:notification_peer@127.0.0.1:5062>;tag=40bd18ec",
    "CSeq: 10 KDMQ",
    "Call-ID: 45ea467209d0b5ca-12986@127.0.0.1",
    "Max-Forwards: 1",
)


def touch(message: sip.Message) -> None:
    """
    Read every structured view of C{message}, ignoring L{SIPParseError} (and
    only that).
    """
    for name in ["via", "fromAddress", "to", "callID", "cseq", "maxForwards"]:
        try:
            getattr(message, name)
        except SIPParseError:
            pass
    message.contentType
    if isinstance(message, Request):
        try:
            checkRequest(message)
        except SIPParseError:
            pass


class CaptureLoaderTests(SynchronousTestCase):
    """
    Tests for L{dmq.test.captures.datagrams}.
    """

    def test_busCapture(self) -> None:
        """
        A bus capture gives every datagram with its addresses and exact octets.
        """
        captures = datagrams("01-bus-formation.txt")
        self.assertEqual(len(captures), 10)
        first = captures[0]
        self.assertEqual(first.source, "127.0.0.1:5062")
        self.assertEqual(first.destination, "127.0.0.1:5061")
        self.assertEqual(len(first.data), 476)
        self.assertTrue(first.data.startswith(b"KDMQ sip:notification_peer@"))
        self.assertTrue(
            first.data.endswith(b"\r\n\r\nsip:127.0.0.1:5062;status=active\r\n")
        )

    def test_bodyWithoutNewline(self) -> None:
        """
        A datagram whose body does not end with a newline is read exactly.
        """
        data = datagrams("03-htable-replication.txt")[0].data
        self.assertEqual(len(data), 491)
        self.assertTrue(data.endswith(b'"mode":1}'))

    def test_counts(self) -> None:
        """
        Every capture file gives as many datagrams as it has records.
        """
        self.assertEqual(
            [len(datagrams(name)) for name in BUS_CAPTURES],
            [10, 24, 28, 288, 42, 570, 14, 40],
        )
        self.assertEqual(
            [len(datagrams(name)) for name in PROBE_CAPTURES], [28, 2, 16, 6, 5, 1]
        )

    def test_probeAddresses(self) -> None:
        """
        In a probe transcript, the prober's address comes from its own Via.
        """
        captures = datagrams("probe-01-errors.txt")
        self.assertEqual(
            (captures[0].source, captures[0].destination),
            ("127.0.0.1:5099", "127.0.0.1:5061"),
        )
        self.assertEqual(
            (captures[1].source, captures[1].destination),
            ("127.0.0.1:5061", "127.0.0.1:5099"),
        )
        self.assertEqual(captures[7].data, b"this is not a SIP message\r\n\r\n")
        self.assertEqual(
            datagrams("probe-06-htable-emptyobj-crash.txt")[0].source,
            "127.0.0.1:5098",
        )

    def test_captureIsFrozen(self) -> None:
        """
        A L{Capture} is an immutable value.
        """
        capture = Capture("127.0.0.1:1", "127.0.0.1:2", b"x")
        self.assertRaises(
            attr.exceptions.FrozenInstanceError, setattr, capture, "data", b"y"
        )
        self.assertEqual(capture, Capture("127.0.0.1:1", "127.0.0.1:2", b"x"))


class CaptureTests(SynchronousTestCase):
    """
    Every datagram Kamailio sent or received parses, checks and round-trips.
    """

    def test_busDatagramsParse(self) -> None:
        """
        Every datagram of the bus captures parses to a KDMQ request or a 200.
        """
        for capture in busDatagrams():
            message = parse(capture.data)
            if isinstance(message, Request):
                self.assertEqual(message.method, "KDMQ")
            else:
                self.assertEqual(message.code, 200)

    def test_busRequestsCheck(self) -> None:
        """
        Every request of the bus captures passes L{checkRequest}.
        """
        for capture in busDatagrams():
            message = parse(capture.data)
            if isinstance(message, Request):
                checkRequest(message)
                self.assertEqual(message.via[0].host, capture.source.split(":")[0])

    def test_busResponsesHaveHeaders(self) -> None:
        """
        Every response of the bus captures has well-formed transaction headers.
        """
        for capture in busDatagrams():
            message = parse(capture.data)
            if isinstance(message, Response):
                self.assertEqual(len(message.via), 1)
                self.assertIsNotNone(message.to.tag)
                self.assertIsNotNone(message.fromAddress.tag)
                self.assertEqual(message.cseq, CSeq(10, "KDMQ"))
                self.assertTrue(message.callID)

    def test_roundTrip(self) -> None:
        """
        Every captured message serialises to bytes that parse to it again.
        """
        for name in BUS_CAPTURES + PROBE_CAPTURES:
            for capture in datagrams(name):
                try:
                    message = parse(capture.data)
                except SIPParseError:
                    continue
                self.assertEqual(parse(serialise(message)), message)

    def test_serialiseLikeKamailio(self) -> None:
        """
        A parsed Kamailio reply, which puts Content-Length last, serialises to
        the very bytes it came from.
        """
        data = datagrams("01-bus-formation.txt")[2].data
        self.assertEqual(serialise(parse(data)), data)

    def test_probes(self) -> None:
        """
        The probe datagrams parse, except the two that are not SIP messages
        Kamailio would accept.
        """
        failures = []
        for name in PROBE_CAPTURES:
            for capture in datagrams(name):
                try:
                    message = parse(capture.data)
                except SIPParseError as e:
                    failures.append(e.reason)
                else:
                    touch(message)
        self.assertEqual(
            failures, ["Body shorter than Content-Length", "Bad request line"]
        )

    def test_probeShortBody(self) -> None:
        """
        The probe whose Content-Length (200) is longer than its body fails
        with the request's headers, enough to answer it.
        """
        data = datagrams("probe-01-errors.txt")[5].data
        error = self.assertRaises(SIPParseError, parse, data)
        self.assertEqual(error.reason, "Body shorter than Content-Length")
        self.assertEqual(
            [name for name, value in error.headers],
            [
                "Via",
                "To",
                "From",
                "CSeq",
                "Call-ID",
                "User-Agent",
                "Max-Forwards",
                "Content-Type",
            ],
        )
        self.assertEqual(error.headers[4], ("Call-ID", "858ce7999923ece2@127.0.0.1"))

    def test_probeMissingHeaders(self) -> None:
        """
        The probes without Call-ID or From parse, and fail L{checkRequest}.
        """
        captures = datagrams("probe-01-errors.txt")
        noCallID = parseRequest(captures[3].data)
        noFrom = parseRequest(captures[4].data)
        self.assertEqual(
            self.assertRaises(SIPParseError, checkRequest, noCallID).reason,
            "Missing Call-ID header",
        )
        self.assertEqual(
            self.assertRaises(SIPParseError, checkRequest, noFrom).reason,
            "Missing From header",
        )

    def test_probeNoUser(self) -> None:
        """
        A Request-URI without a user part parses, with no user.
        """
        message = parseRequest(datagrams("probe-01-errors.txt")[2].data)
        self.assertEqual(message.uri, URI("127.0.0.1", 5061))
        checkRequest(message)

    def test_probeOptions(self) -> None:
        """
        An OPTIONS request parses and checks like a KDMQ one.
        """
        message = parseRequest(datagrams("probe-01-errors.txt")[8].data)
        self.assertEqual(message.method, "OPTIONS")
        self.assertEqual(message.cseq, CSeq(10, "OPTIONS"))
        checkRequest(message)

    def test_probeReasonPhrase(self) -> None:
        """
        A reason phrase of several words is kept whole.
        """
        message = parseResponse(datagrams("probe-01-errors.txt")[1].data)
        self.assertEqual((message.code, message.reason), (404, "User Not Found"))
        self.assertEqual(message.body, b"")


class VectorTests(SynchronousTestCase):
    """
    Captured messages read field by field.
    """

    def test_kdmqRequest(self) -> None:
        """
        A notification_peer KDMQ request from Kamailio, field by field.
        """
        message = parseRequest(datagrams("01-bus-formation.txt")[0].data)
        self.assertIsInstance(message, Request)
        self.assertEqual(message.method, "KDMQ")
        self.assertEqual(message.uri.scheme, "sip")
        self.assertEqual(message.uri.user, "notification_peer")
        self.assertEqual(message.uri.host, "127.0.0.1")
        self.assertEqual(message.uri.port, 5061)
        self.assertEqual(message.uri.parameters, ())
        self.assertEqual(len(message.via), 1)
        via = message.via[0]
        self.assertEqual(via.branch, "z9hG4bK7cb7.a369c4f5000000000000000000000000.0")
        self.assertTrue(str(via.branch).startswith(sip.MAGIC_COOKIE))
        self.assertEqual(via.transport, "UDP")
        self.assertEqual(via.host, "127.0.0.1")
        self.assertEqual(via.port, 5062)
        self.assertEqual(
            message.fromAddress,
            NameAddress(
                URI("127.0.0.1", 5062, "notification_peer"),
                None,
                (("tag", "40bd18ec79e1d8f7e9c3f54805d1ecb3-47fad6ec"),),
            ),
        )
        self.assertEqual(
            message.fromAddress.tag, "40bd18ec79e1d8f7e9c3f54805d1ecb3-47fad6ec"
        )
        self.assertEqual(
            message.to, NameAddress(URI("127.0.0.1", 5061, "notification_peer"))
        )
        self.assertIsNone(message.to.tag)
        self.assertEqual(message.cseq, CSeq(10, "KDMQ"))
        self.assertEqual(message.callID, "45ea467209d0b5ca-12986@127.0.0.1")
        self.assertEqual(message.maxForwards, 2)
        self.assertEqual(message.contentType, "text/plain")
        self.assertEqual(
            message.header("User-Agent"), "kamailio (5.6.3 (x86_64/linux))"
        )
        self.assertIsNone(message.header("Content-Length"))
        self.assertEqual(message.body, b"sip:127.0.0.1:5062;status=active\r\n")
        self.assertEqual(
            [name for name, value in message.headers],
            [
                "Via",
                "To",
                "From",
                "CSeq",
                "Call-ID",
                "User-Agent",
                "Max-Forwards",
                "Content-Type",
            ],
        )

    def test_okWithBody(self) -> None:
        """
        A 200 reply carrying the node list, field by field.
        """
        message = parseResponse(datagrams("01-bus-formation.txt")[2].data)
        self.assertIsInstance(message, Response)
        self.assertEqual(message.code, 200)
        self.assertEqual(message.reason, "OK")
        self.assertEqual(
            message.via,
            (
                Via(
                    "UDP",
                    "127.0.0.1",
                    5062,
                    (("branch", "z9hG4bK7cb7.a369c4f5000000000000000000000000.0"),),
                ),
            ),
        )
        self.assertEqual(message.to.tag, "a7cd718e5030b88d7105b9466cccc0a9.55a07a69")
        self.assertEqual(message.to.uri, URI("127.0.0.1", 5061, "notification_peer"))
        self.assertEqual(
            message.fromAddress.tag, "40bd18ec79e1d8f7e9c3f54805d1ecb3-47fad6ec"
        )
        self.assertEqual(message.cseq, CSeq(10, "KDMQ"))
        self.assertEqual(message.callID, "45ea467209d0b5ca-12986@127.0.0.1")
        self.assertIsNone(message.maxForwards)
        self.assertEqual(message.contentType, "text/plain")
        self.assertEqual(message.header("Server"), "kamailio (5.6.3 (x86_64/linux))")
        self.assertEqual(
            message.body,
            b"sip:127.0.0.1:5062;status=active\r\nsip:127.0.0.1:5061;status=active\r\n",
        )

    def test_htableRequest(self) -> None:
        """
        An htable request carries its JSON body with no final newline.
        """
        message = parseRequest(datagrams("03-htable-replication.txt")[0].data)
        self.assertEqual(message.uri, URI("127.0.0.1", 5063, "htable"))
        self.assertEqual(message.contentType, "application/json")
        self.assertEqual(message.maxForwards, 1)
        self.assertEqual(
            message.body,
            b'{"action":2,"htname":"kdmq","cname":"k1","type":2,'
            b'"strval":"hello","mode":1}',
        )


class HeaderNameTests(SynchronousTestCase):
    """
    Header names are case-insensitive and compact forms are expanded.
    """

    compact = {
        "i": "Call-ID",
        "m": "Contact",
        "e": "Content-Encoding",
        "l": "Content-Length",
        "c": "Content-Type",
        "f": "From",
        "s": "Subject",
        "k": "Supported",
        "t": "To",
        "v": "Via",
        "o": "Event",
        "r": "Refer-To",
        "b": "Referred-By",
        "u": "Allow-Events",
        "a": "Accept-Contact",
        "j": "Reject-Contact",
        "d": "Request-Disposition",
        "x": "Session-Expires",
        "y": "Identity",
        "n": "Identity-Info",
    }

    def test_compactForms(self) -> None:
        """
        Every compact form, in either case, reads as its long name.
        """
        for letter, name in self.compact.items():
            for spelling in [letter, letter.upper()]:
                self.assertEqual(canonicalName(spelling), name)
                if name == "Content-Length":
                    continue
                message = parseRequest(request(f"{spelling}: value"))
                self.assertEqual(message.headers, ((name, "value"),))
                self.assertEqual(message.header(letter), "value")
                self.assertEqual(message.header(name.upper()), "value")

    def test_compactContentLength(self) -> None:
        """
        C{l} and C{L} are Content-Length: they delimit the body and are not
        kept as headers.
        """
        for spelling in ["l", "L"]:
            message = parseRequest(request(f"{spelling}: 2", body=b"hello"))
            self.assertEqual((message.headers, message.body), ((), b"he"))

    def test_compactMandatoryHeaders(self) -> None:
        """
        A request written with compact forms only passes L{checkRequest}.
        """
        message = parseRequest(
            request(
                "v: SIP/2.0/UDP 127.0.0.1:5062;branch=z9hG4bKa",
                "t: <sip:htable@127.0.0.1:5061>",
                "f: <sip:htable@127.0.0.1:5062>;tag=1",
                "CSeq: 10 KDMQ",
                "i: abc@127.0.0.1",
                "c: text/plain",
                "l: 2",
                body=b"hi",
            )
        )
        checkRequest(message)
        self.assertEqual(message.fromAddress.tag, "1")
        self.assertEqual(message.callID, "abc@127.0.0.1")
        self.assertEqual(message.contentType, "text/plain")
        self.assertEqual(message.body, b"hi")

    def test_caseInsensitive(self) -> None:
        """
        Known names are written canonically whatever their case on the wire.
        """
        message = parse(
            request(
                "VIA: SIP/2.0/UDP 127.0.0.1;branch=z9hG4bKa",
                "call-id: x@y",
                "cseq: 1 KDMQ",
                "MAX-FORWARDS: 3",
                "content-TYPE: text/plain",
                "www-authenticate: Digest",
            )
        )
        self.assertEqual(
            [name for name, value in message.headers],
            [
                "Via",
                "Call-ID",
                "CSeq",
                "Max-Forwards",
                "Content-Type",
                "WWW-Authenticate",
            ],
        )
        self.assertEqual(message.callID, "x@y")
        self.assertEqual(message.header("CALL-ID"), "x@y")
        self.assertEqual(
            message.headerValues("v"), ["SIP/2.0/UDP 127.0.0.1;branch=z9hG4bKa"]
        )

    def test_unknownNames(self) -> None:
        """
        An unknown name keeps its spelling and is looked up in any case.
        """
        message = parseRequest(request("X-Node-Id: 1", "x-node-id: 2", "X-Other: 3"))
        self.assertEqual(
            message.headers, (("X-Node-Id", "1"), ("x-node-id", "2"), ("X-Other", "3"))
        )
        self.assertEqual(message.header("X-NODE-ID"), "1")
        self.assertEqual(message.headerValues("x-node-id"), ["1", "2"])
        self.assertIsNone(message.header("X-Missing"))
        self.assertEqual(canonicalName("X-Node-Id"), "X-Node-Id")

    def test_blanksAroundColon(self) -> None:
        """
        Blanks before and after the colon, and after the value, are dropped.
        """
        message = parseRequest(request("Call-ID \t:  \tx@y \t", "Subject:"))
        self.assertEqual(message.headers, (("Call-ID", "x@y"), ("Subject", "")))


class FoldingTests(SynchronousTestCase):
    """
    Folded header lines (RFC 3261 §7.3.1) are unfolded.
    """

    def test_folded(self) -> None:
        """
        A line starting with a space or a tab continues the one before, with
        one space between the two.
        """
        message = parse(
            request(
                "Subject: hello",
                "   big",
                "\t world  ",
                "Call-ID: x@y",
            )
        )
        self.assertEqual(
            message.headers, (("Subject", "hello big world"), ("Call-ID", "x@y"))
        )

    def test_foldedEmptyValue(self) -> None:
        """
        A value that starts on a continuation line has no leading space.
        """
        message = parseRequest(request("Subject:", " hello"))
        self.assertEqual(message.headers, (("Subject", "hello"),))
        self.assertEqual(parse(serialise(message)), message)

    def test_foldedVia(self) -> None:
        """
        A folded list of Vias is unfolded, then split.
        """
        message = parse(
            request(
                "Via: SIP/2.0/UDP 127.0.0.1:5062;branch=z9hG4bKa,",
                " SIP/2.0/UDP 127.0.0.1:5063;branch=z9hG4bKb",
            )
        )
        self.assertEqual([via.port for via in message.via], [5062, 5063])

    def test_foldedBareLineEndings(self) -> None:
        """
        Folding works with bare LF line endings too.
        """
        data = b"KDMQ sip:h SIP/2.0\nSubject: a\n b\nCall-ID: x\n\nbody"
        message = parse(data)
        self.assertEqual(message.headers, (("Subject", "a b"), ("Call-ID", "x")))
        self.assertEqual(message.body, b"body")

    def test_continuationFirst(self) -> None:
        """
        A continuation line before any header is an error.
        """
        error = self.assertRaises(SIPParseError, parse, request(" Subject: a"))
        self.assertEqual(error.reason, "Continuation line before any header")
        self.assertEqual(error.headers, ())


class ListHeaderTests(SynchronousTestCase):
    """
    Comma-joined values of list headers become one header each.
    """

    def test_twoVias(self) -> None:
        """
        Two Vias on one line are two Via entries, in order.
        """
        message = parse(
            request(
                "Via: SIP/2.0/UDP 127.0.0.1:5062;branch=z9hG4bKa ,SIP/2.0/TCP"
                " 127.0.0.1:5063;branch=z9hG4bKb",
                "Via: SIP/2.0/UDP 127.0.0.1:5064;branch=z9hG4bKc",
            )
        )
        self.assertEqual(
            message.headerValues("Via"),
            [
                "SIP/2.0/UDP 127.0.0.1:5062;branch=z9hG4bKa",
                "SIP/2.0/TCP 127.0.0.1:5063;branch=z9hG4bKb",
                "SIP/2.0/UDP 127.0.0.1:5064;branch=z9hG4bKc",
            ],
        )
        self.assertEqual(
            [(via.transport, via.branch) for via in message.via],
            [("UDP", "z9hG4bKa"), ("TCP", "z9hG4bKb"), ("UDP", "z9hG4bKc")],
        )

    def test_compactVias(self) -> None:
        """
        Comma-joined values of a compact list header are split too.
        """
        message = parseRequest(
            request("v: SIP/2.0/UDP a;branch=1, SIP/2.0/UDP b;branch=2")
        )
        self.assertEqual([via.host for via in message.via], ["a", "b"])

    def test_quotedComma(self) -> None:
        """
        A comma inside a quoted display name does not split a Contact.
        """
        message = parse(
            request('Contact: "Doe, John" <sip:jd@example.com>, <sip:b@example.com>')
        )
        self.assertEqual(
            message.headerValues("Contact"),
            ['"Doe, John" <sip:jd@example.com>', "<sip:b@example.com>"],
        )
        self.assertEqual(
            parseNameAddress(str(message.header("Contact"))).displayName, "Doe, John"
        )

    def test_bracketedComma(self) -> None:
        """
        A comma inside C{<...>} does not split a Contact.
        """
        message = parse(
            request("Contact: <sip:a@example.com;x=1,2?h=a,b>;q=1, <sip:b@example.com>")
        )
        self.assertEqual(
            message.headerValues("Contact"),
            ["<sip:a@example.com;x=1,2?h=a,b>;q=1", "<sip:b@example.com>"],
        )

    def test_notAList(self) -> None:
        """
        Commas in headers that are not lists (From, User-Agent) are kept.
        """
        message = parse(
            request(
                'From: "a, b" <sip:x@y>;tag=1',
                "User-Agent: kamailio, more",
                "Subject: a, b",
            )
        )
        self.assertEqual(
            message.headers,
            (
                ("From", '"a, b" <sip:x@y>;tag=1'),
                ("User-Agent", "kamailio, more"),
                ("Subject", "a, b"),
            ),
        )

    def test_emptyElement(self) -> None:
        """
        An empty element in a list is an error naming the header.
        """
        error = self.assertRaises(
            SIPParseError,
            parse,
            request("Call-ID: x", "Via: SIP/2.0/UDP a, ,SIP/2.0/UDP b"),
        )
        self.assertEqual(error.reason, "Empty value in Via list")
        self.assertEqual(error.headers, (("Call-ID", "x"),))

    def test_unterminatedQuote(self) -> None:
        """
        An unterminated quoted string in a list is an error carrying the
        headers before it.
        """
        error = self.assertRaises(
            SIPParseError, parse, request("Call-ID: x", 'Contact: "a, <sip:b@c>')
        )
        self.assertEqual(error.reason, "Unterminated quoted string")
        self.assertEqual(error.headers, (("Call-ID", "x"),))


class ContentLengthTests(SynchronousTestCase):
    """
    Content-Length counts octets and delimits the body within the datagram.
    """

    def test_absent(self) -> None:
        """
        Without Content-Length the body is the rest of the datagram.
        """
        message = parseRequest(request("Call-ID: x", body=b"rest\r\nof it\r\n\r\n"))
        self.assertEqual(message.body, b"rest\r\nof it\r\n\r\n")

    def test_shorterBody(self) -> None:
        """
        A body shorter than Content-Length is an error that carries the
        request's headers.
        """
        error = self.assertRaises(
            SIPParseError,
            parse,
            request(*MANDATORY, "Content-Length: 6", body=b"hello"),
        )
        self.assertEqual(error.reason, "Body shorter than Content-Length")
        self.assertEqual(len(error.headers), len(MANDATORY))
        self.assertEqual(error.headers[0][0], "Via")
        self.assertEqual(
            error.headers[4], ("Call-ID", "45ea467209d0b5ca-12986@127.0.0.1")
        )

    def test_shorterResponseBody(self) -> None:
        """
        The error for a response carries no headers.
        """
        data = b"SIP/2.0 200 OK\r\nCall-ID: x\r\nContent-Length: 9\r\n\r\nshort"
        error = self.assertRaises(SIPParseError, parse, data)
        self.assertEqual(error.reason, "Body shorter than Content-Length")
        self.assertIsNone(error.headers)

    def test_extraOctets(self) -> None:
        """
        Octets past Content-Length are discarded.
        """
        message = parseRequest(request("Content-Length: 5", body=b"hello\r\ngarbage"))
        self.assertEqual(message.body, b"hello")

    def test_zero(self) -> None:
        """
        Content-Length 0 means no body, whatever follows.
        """
        message = parseRequest(request("Content-Length: 0", body=b"\r\n"))
        self.assertEqual(message.body, b"")

    def test_octetsNotCharacters(self) -> None:
        """
        Content-Length counts the octets of a UTF-8 body, not its characters.
        """
        body = '{"cname":"ключ","strval":"héllo ☃"}'.encode("utf-8")
        message = parse(
            request(
                "Content-Type: application/json",
                f"Content-Length: {len(body)}",
                body=body + b"\r\n",
            )
        )
        self.assertEqual(message.body, body)
        self.assertEqual(
            message.body.decode("utf-8"), '{"cname":"ключ","strval":"héllo ☃"}'
        )
        self.assertIn(
            f"\r\nContent-Length: {len(body)}\r\n".encode(), serialise(message)
        )

    def test_nonASCIIHeaders(self) -> None:
        """
        Headers may carry UTF-8 text, and the body still starts where it
        should.
        """
        message = parse(
            request('From: "Zoë ☃" <sip:z@h>;tag=1', "Content-Length: 2", body=b"ok")
        )
        self.assertEqual(message.fromAddress.displayName, "Zoë ☃")
        self.assertEqual(message.body, b"ok")

    def test_identicalDuplicates(self) -> None:
        """
        Two equal Content-Lengths are accepted.
        """
        message = parseRequest(request("Content-Length: 2", "l: 2", body=b"hello"))
        self.assertEqual(message.body, b"he")

    def test_conflictingDuplicates(self) -> None:
        """
        Two different Content-Lengths are an error.
        """
        error = self.assertRaises(
            SIPParseError,
            parse,
            request("Content-Length: 2", "Content-Length: 3", body=b"hello"),
        )
        self.assertEqual(error.reason, "Conflicting Content-Length headers")

    def test_notDigits(self) -> None:
        """
        A Content-Length that is not a decimal number is an error.
        """
        for value in ["", "x", "-1", "+1", "1 2", "0x10", "１２", "²", "12345678901"]:
            error = self.assertRaises(
                SIPParseError, parse, request(f"Content-Length: {value}", body=b"hello")
            )
            self.assertEqual(error.reason, "Bad Content-Length")


class URITests(SynchronousTestCase):
    """
    Tests for L{parseURI} and L{URI}.
    """

    def test_node(self) -> None:
        """
        A node URI with a port.
        """
        self.assertEqual(parseURI("sip:127.0.0.1:5061"), URI("127.0.0.1", 5061))

    def test_emptyPort(self) -> None:
        """
        An empty port, which Kamailio writes for a node URI without one, reads
        as no port.
        """
        uri = parseURI("sip:1.2.3.4:")
        self.assertEqual(uri, URI("1.2.3.4"))
        self.assertIsNone(uri.port)
        self.assertEqual(parseURI("sip:peer@1.2.3.4:;transport=tcp").port, None)
        self.assertEqual(str(uri), "sip:1.2.3.4")

    def test_parameters(self) -> None:
        """
        Parameters with and without values are kept in order, and looked up
        by any case.
        """
        uri = parseURI("sip:peer@10.0.0.1:5060;transport=TCP;lr;maddr=10.0.0.2")
        self.assertEqual(
            uri.parameters, (("transport", "TCP"), ("lr", None), ("maddr", "10.0.0.2"))
        )
        self.assertEqual(uri.transport, "tcp")
        self.assertEqual(uri.parameter("LR"), "")
        self.assertEqual(uri.parameter("Maddr"), "10.0.0.2")
        self.assertIsNone(uri.parameter("ttl"))
        self.assertIsNone(parseURI("sip:h").transport)
        self.assertEqual(
            str(uri), "sip:peer@10.0.0.1:5060;transport=TCP;lr;maddr=10.0.0.2"
        )

    def test_sips(self) -> None:
        """
        C{sips:} URIs are read, and schemes are case-insensitive.
        """
        self.assertEqual(parseURI("sips:a@b:5061"), URI("b", 5061, "a", "sips"))
        self.assertEqual(parseURI("SIP:a@b").scheme, "sip")
        self.assertEqual(parseURI("SiPs:b").scheme, "sips")

    def test_userAndPassword(self) -> None:
        """
        The user info may carry a password, possibly empty.
        """
        uri = parseURI("sip:alice:secret@example.com")
        self.assertEqual(
            (uri.user, uri.password, uri.host), ("alice", "secret", "example.com")
        )
        self.assertEqual(parseURI("sip:alice:@h").password, "")
        self.assertIsNone(parseURI("sip:alice@h").password)
        self.assertEqual(str(uri), "sip:alice:secret@example.com")

    def test_userCharacters(self) -> None:
        """
        A user part may hold the unreserved and escaped characters of RFC 3261.
        """
        uri = parseURI("sip:a%20b;c=d&e+$,/~*'()!.-_@h")
        self.assertEqual(uri.user, "a%20b;c=d&e+$,/~*'()!.-_")
        self.assertEqual(uri.host, "h")

    def test_headers(self) -> None:
        """
        The text after C{?} is kept as the URI headers.
        """
        uri = parseURI("sip:a@b;lr?subject=x&priority=urgent")
        self.assertEqual(uri.headers, "subject=x&priority=urgent")
        self.assertEqual(uri.parameters, (("lr", None),))
        self.assertEqual(str(uri), "sip:a@b;lr?subject=x&priority=urgent")

    def test_ipv6(self) -> None:
        """
        An IPv6 reference is read without its brackets and written with them.
        """
        uri = parseURI("sip:peer@[2001:db8::1]:5060;transport=udp")
        self.assertEqual((uri.host, uri.port), ("2001:db8::1", 5060))
        self.assertEqual(str(uri), "sip:peer@[2001:db8::1]:5060;transport=udp")
        self.assertEqual(parseURI("sip:[::1]").host, "::1")
        self.assertEqual(parseURI("sip:[::ffff:10.0.0.1]:5060").host, "::ffff:10.0.0.1")
        message = parseRequest(request(startLine="KDMQ sip:htable@[::1]:5061 SIP/2.0"))
        self.assertEqual(message.uri, URI("::1", 5061, "htable"))

    def test_simpleShape(self) -> None:
        """
        The usual C{sip:user@host:port} shape reads the same as any other.
        """
        uri = parseURI("sip:notification_peer@127.0.0.1:5061")
        self.assertEqual(
            uri,
            URI(
                host="127.0.0.1",
                port=5061,
                user="notification_peer",
                scheme="sip",
                password=None,
                parameters=(),
                headers=None,
            ),
        )
        self.assertEqual(hash(uri), hash(URI("127.0.0.1", 5061, "notification_peer")))
        self.assertEqual(uri.replace(port=5062).port, 5062)
        self.assertRaises(attr.exceptions.FrozenInstanceError, setattr, uri, "port", 1)
        self.assertEqual(pickle.loads(pickle.dumps(uri)), uri)

    def test_fromString(self) -> None:
        """
        L{URI.fromString} is L{parseURI}, and L{URI.withoutParameters} drops
        parameters and headers.
        """
        uri = URI.fromString("sip:a@b;lr?x=y")
        self.assertEqual(uri.withoutParameters(), URI("b", None, "a"))

    def test_bad(self) -> None:
        """
        Text that is not a SIP URI raises L{SIPParseError} with a reason.
        """
        cases = {
            "": "Unsupported URI scheme",
            "sip": "Unsupported URI scheme",
            "tel:+123": "Unsupported URI scheme",
            "http://example.com": "Unsupported URI scheme",
            "sip:": "Bad host in URI",
            "sip:@h": "Bad user part in URI",
            "sip:a b@h": "Bad user part in URI",
            "sip:a:p@ss@h": "Bad password in URI",
            "sip:a:p w@h": "Bad password in URI",
            "sip:h_h": "Bad host in URI",
            "sip:h:p": "Bad port in URI",
            "sip:h:65536": "Bad port in URI",
            "sip:h:123456": "Bad port in URI",
            "sip:h:-1": "Bad port in URI",
            "sip:h:５０６０": "Bad port in URI",
            "sip:h:5²": "Bad port in URI",
            "sip:h:٥٠٦٠": "Bad port in URI",
            "sip:[::1": "Unterminated IPv6 reference in URI",
            "sip:[]": "Bad IPv6 reference in URI",
            "sip:[g::1]": "Bad IPv6 reference in URI",
            "sip:[:::]": "Bad IPv6 reference in URI",
            "sip:[1::2::3]": "Bad IPv6 reference in URI",
            "sip:[::1]5060": "Bad host in URI",
            "sip:h;": "Empty parameter in URI",
            "sip:h;;lr": "Bad parameter in URI",
            "sip:h;a b": "Bad parameter in URI",
            "sip:h;a=": "Empty parameter value in URI",
            'sip:h;a="b': "Unterminated quoted string",
            "sip:h?": "Empty URI headers",
        }
        for text, reason in cases.items():
            error = self.assertRaises(SIPParseError, parseURI, text)
            self.assertEqual((text, error.reason), (text, reason))

    def test_badRequestURI(self) -> None:
        """
        A bad Request-URI fails L{parse <dmq.sip.codec.parse>}, with the request's headers.
        """
        error = self.assertRaises(
            SIPParseError,
            parse,
            request("Call-ID: x", startLine="KDMQ sip:peer@h:99999 SIP/2.0"),
        )
        self.assertEqual(error.reason, "Bad Request-URI: Bad port in URI")
        self.assertEqual(error.headers, (("Call-ID", "x"),))


class ViaTests(SynchronousTestCase):
    """
    Tests for L{parseVia} and L{Via}.
    """

    def test_kamailio(self) -> None:
        """
        The Via Kamailio writes.
        """
        via = parseVia("SIP/2.0/UDP 127.0.0.1:5061;branch=z9hG4bK60e4.50bdb503.0")
        self.assertEqual(
            via, Via("UDP", "127.0.0.1", 5061, (("branch", "z9hG4bK60e4.50bdb503.0"),))
        )
        self.assertEqual(
            str(via), "SIP/2.0/UDP 127.0.0.1:5061;branch=z9hG4bK60e4.50bdb503.0"
        )

    def test_parameters(self) -> None:
        """
        C{received}, C{rport} with and without a value, and a lower-case
        transport.
        """
        via = parseVia("SIP/2.0/udp h;rport;received=10.0.0.1;BRANCH=z9hG4bKx")
        self.assertEqual(via.transport, "UDP")
        self.assertIsNone(via.port)
        self.assertEqual(via.rport, "")
        self.assertEqual(via.received, "10.0.0.1")
        self.assertEqual(via.branch, "z9hG4bKx")
        self.assertEqual(parseVia("SIP/2.0/UDP h;rport=5060").rport, "5060")
        self.assertIsNone(parseVia("SIP/2.0/UDP h").branch)

    def test_blanks(self) -> None:
        """
        Blanks are allowed around the slashes and before the parameters.
        """
        via = parseVia("SIP / 2.0 / TCP  h:1 ;branch=z9hG4bKx")
        self.assertEqual(via, Via("TCP", "h", 1, (("branch", "z9hG4bKx"),)))

    def test_ipv6(self) -> None:
        """
        An IPv6 sent-by.
        """
        via = parseVia("SIP/2.0/UDP [2001:db8::5]:5062;branch=z9hG4bKx;received=::1")
        self.assertEqual((via.host, via.port), ("2001:db8::5", 5062))
        self.assertEqual(via.received, "::1")
        self.assertEqual(
            str(via), "SIP/2.0/UDP [2001:db8::5]:5062;branch=z9hG4bKx;received=::1"
        )
        message = parseRequest(request("Via: SIP/2.0/UDP [::1]:5062;branch=z9hG4bKa"))
        self.assertEqual(message.via[0].host, "::1")

    def test_bad(self) -> None:
        """
        Malformed Vias raise L{SIPParseError}.
        """
        cases = {
            "": "Bad Via header",
            "SIP/2.0/UDP": "Bad Via header",
            "SIP/3.0/UDP h": "Bad Via header",
            "UDP h": "Bad Via header",
            "SIP/2.0/U(P h": "Bad Via header",
            "SIP/2.0/UDP h;": "Empty parameter in Via",
            "SIP/2.0/UDP h;branch=": "Empty parameter value in Via",
            "SIP/2.0/UDP h:x": "Bad port in Via",
            "SIP/2.0/UDP h:٥٠٦٠": "Bad port in Via",
            "SIP/2.0/UDP [::1:5060": "Unterminated IPv6 reference in Via",
            "SIP/2.0/UDP h^h": "Bad host in Via",
        }
        for text, reason in cases.items():
            error = self.assertRaises(SIPParseError, parseVia, text)
            self.assertEqual((text, error.reason), (text, reason))

    def test_missing(self) -> None:
        """
        A message without Via has no C{via}.
        """
        message = parseRequest(request("Call-ID: x"))
        self.assertEqual(
            self.assertRaises(SIPParseError, lambda: message.via).reason,
            "Missing Via header",
        )


class NameAddressTests(SynchronousTestCase):
    """
    Tests for L{parseNameAddress} and L{NameAddress}.
    """

    def test_bracketed(self) -> None:
        """
        C{<uri>;params}: the parameters belong to the header.
        """
        address = parseNameAddress("<sip:htable@127.0.0.1:5061;transport=udp>;tag=abc")
        self.assertEqual(
            address.uri,
            URI("127.0.0.1", 5061, "htable", parameters=(("transport", "udp"),)),
        )
        self.assertEqual(address.tag, "abc")
        self.assertIsNone(address.displayName)

    def test_addrSpec(self) -> None:
        """
        Without brackets the parameters belong to the header too.
        """
        address = parseNameAddress("sip:a@b;tag=1")
        self.assertEqual(
            address, NameAddress(URI("b", None, "a"), None, (("tag", "1"),))
        )
        self.assertEqual(str(address), "<sip:a@b>;tag=1")

    def test_displayNames(self) -> None:
        """
        Quoted display names, with escapes, and bare ones.
        """
        quoted = parseNameAddress('"Al \\"the\\" \\\\ <pal>" <sip:al@h>')
        self.assertEqual(quoted.displayName, 'Al "the" \\ <pal>')
        self.assertEqual(parseNameAddress(str(quoted)), quoted)
        bare = parseNameAddress("Bob Smith <sip:bob@h>;tag=2")
        self.assertEqual(bare.displayName, "Bob Smith")
        self.assertEqual(str(bare), '"Bob Smith" <sip:bob@h>;tag=2')
        self.assertEqual(parseNameAddress('""<sip:h>').displayName, "")

    def test_withTag(self) -> None:
        """
        L{NameAddress.withTag} replaces any tag and keeps other parameters.
        """
        address = parseNameAddress("<sip:h>;x=1;TAG=old")
        self.assertEqual(
            address.withTag("new").parameters, (("x", "1"), ("tag", "new"))
        )

    def test_bad(self) -> None:
        """
        Malformed addresses raise L{SIPParseError}.
        """
        cases = {
            "": "Unsupported URI scheme",
            '"unterminated <sip:h>': "Unterminated display name",
            '"name" sip:h': "Display name without <URI>",
            "<sip:h": "Unterminated <URI>",
            "<sip:h> tag=1": "Bad address header",
            "<sip:h>;": "Empty parameter in address header",
            "<tel:1>": "Unsupported URI scheme",
            "<sip:h>;tag=": "Empty parameter value in address header",
        }
        for text, reason in cases.items():
            error = self.assertRaises(SIPParseError, parseNameAddress, text)
            self.assertEqual((text, error.reason), (text, reason))


class CheckRequestTests(SynchronousTestCase):
    """
    Tests for L{checkRequest} and the structured views of the mandatory
    headers.
    """

    def test_valid(self) -> None:
        """
        A request with every mandatory header passes.
        """
        checkRequest(parseRequest(request(*MANDATORY)))

    def test_missing(self) -> None:
        """
        Each missing mandatory header is named.
        """
        for index, name in enumerate(["Via", "To", "From", "CSeq", "Call-ID"]):
            lines = MANDATORY[:index] + MANDATORY[index + 1 :]
            error = self.assertRaises(
                SIPParseError, checkRequest, parseRequest(request(*lines))
            )
            self.assertEqual(error.reason, f"Missing {name} header")

    def test_maxForwardsOptional(self) -> None:
        """
        Max-Forwards may be absent.
        """
        message = parseRequest(request(*MANDATORY[:-1]))
        checkRequest(message)
        self.assertIsNone(message.maxForwards)

    def test_bad(self) -> None:
        """
        A malformed mandatory header fails with a reason naming it.
        """
        cases = [
            ("Via: SIP/2.0/UDP", "Bad Via header"),
            ("To: sip:", "Bad host in URI"),
            ("From: <sip:h", "Unterminated <URI>"),
            ("CSeq: x KDMQ", "Bad CSeq header"),
            ("CSeq: 10", "Bad CSeq header"),
            ("CSeq: 10 KDMQ x", "Bad CSeq header"),
            ("CSeq: 2147483648 KDMQ", "Bad CSeq header"),
            ("CSeq: ١٠ KDMQ", "Bad CSeq header"),
            ("CSeq: 10 OPTIONS", "CSeq method does not match the request"),
            ("Call-ID: a b", "Bad Call-ID header"),
            ("Call-ID:", "Bad Call-ID header"),
            ("Max-Forwards: 256", "Bad Max-Forwards header"),
            ("Max-Forwards: x", "Bad Max-Forwards header"),
            ("Max-Forwards: -1", "Bad Max-Forwards header"),
        ]
        for line, reason in cases:
            name = line.split(":")[0]
            lines = [m for m in MANDATORY if not m.startswith(name + ":")] + [line]
            error = self.assertRaises(
                SIPParseError, checkRequest, parseRequest(request(*lines))
            )
            self.assertEqual((line, error.reason), (line, reason))

    def test_cseqBlanks(self) -> None:
        """
        Any blanks may separate the CSeq number from its method.
        """
        for value in ["10 KDMQ", "10  KDMQ", "10\tKDMQ", " 10 KDMQ "]:
            message = parseRequest(request(f"CSeq: {value}"))
            self.assertEqual(message.cseq, CSeq(10, "KDMQ"))
        self.assertEqual(str(CSeq(10, "KDMQ")), "10 KDMQ")

    def test_cached(self) -> None:
        """
        A structured view is parsed once.
        """
        message = parseRequest(request(*MANDATORY))
        self.assertIs(message.via, message.via)
        self.assertIs(message.fromAddress, message.fromAddress)

    def test_everyViaChecked(self) -> None:
        """
        Every Via is parsed and checked, not only the top one, whether the
        Vias are on lines of their own or joined by commas.
        """
        top = MANDATORY[0]
        for vias in [
            (top, "Via: SIP/2.0/UDP"),
            (top + ", SIP/2.0/UDP",),
            (top, "Via: SIP/2.0/UDP b:5060;branch=z9hG4bK2;;"),
        ]:
            message = parseRequest(request(*vias, *MANDATORY[1:]))
            error = self.assertRaises(SIPParseError, checkRequest, message)
            self.assertIn("Via", error.reason)
        message = parseRequest(
            request(top, "Via: SIP/2.0/UDP b:5070;branch=z9hG4bK2", *MANDATORY[1:])
        )
        checkRequest(message)
        self.assertEqual([via.host for via in message.via], ["127.0.0.1", "b"])

    def test_repeatedNamesOneVia(self) -> None:
        """
        A request with one Via and other headers repeated has one Via.
        """
        message = parseRequest(request(*MANDATORY, "Supported: a", "Supported: b"))
        checkRequest(message)
        self.assertEqual(len(message.via), 1)
        self.assertEqual(message.headerValues("Supported"), ["a", "b"])
        self.assertEqual(message.header("supported"), "a")


class MemoTests(SynchronousTestCase):
    """
    Tests for L{dmq.sip.memo.Memo} and the parsers that keep what they made.
    """

    def test_parsedOnce(self) -> None:
        """
        A text is parsed once; later lookups give the same value.
        """
        from dmq.sip.memo import Memo

        calls: List[str] = []

        def parser(text: str) -> int:
            calls.append(text)
            return len(text)

        memo = Memo(parser)
        self.assertEqual((memo["ab"], memo["ab"], memo["abc"]), (2, 2, 3))
        self.assertEqual(calls, ["ab", "abc"])

    def test_failuresNotKept(self) -> None:
        """
        A text the parser refuses is refused again every time, and not kept.
        """
        from dmq.sip.memo import Memo

        calls: List[str] = []

        def parser(text: str) -> int:
            calls.append(text)
            raise SIPParseError("no")

        memo = Memo(parser)
        for _ in range(2):
            self.assertRaises(SIPParseError, memo.__getitem__, "x")
        self.assertEqual((calls, len(memo)), (["x", "x"], 0))

    def test_bounded(self) -> None:
        """
        A full memo starts again from empty: made-up values cannot grow it.
        """
        from dmq.sip.memo import Memo

        memo = Memo(str.upper, size=3)
        for text in "abcdefg":
            memo[text]
        self.assertLessEqual(len(memo), 3)
        self.assertEqual(memo["g"], "G")

    def test_requestURIShared(self) -> None:
        """
        Requests with the same Request-URI, From or To URI share one parsed
        L{URI}; values are the same as a parse of their own.
        """
        first = parseRequest(request(*MANDATORY))
        second = parseRequest(request(*MANDATORY))
        self.assertIs(first.uri, second.uri)
        self.assertIs(first.to.uri, second.to.uri)
        self.assertEqual(first.uri, parseURI("sip:notification_peer@127.0.0.1:5061"))

    def test_badValuesStillRefused(self) -> None:
        """
        A bad value is refused however often it comes, and a good one
        after it is read as it should be.
        """
        for _ in range(3):
            self.assertRaises(SIPParseError, parse, request(startLine="KDMQ sip:h:99999 SIP/2.0"))
            self.assertRaises(SIPParseError, parseVia, "SIP/2.0/UDP h:99999")
            self.assertRaises(SIPParseError, sip.parseCSeq, "99999999999 KDMQ")
        self.assertEqual(parseVia("SIP/2.0/UDP h:9;branch=b").port, 9)


class BadInputTests(SynchronousTestCase):
    """
    Bad datagrams raise L{SIPParseError}, never anything else, with a reason
    fit for a 400.
    """

    cases = [
        (b"", "Empty message"),
        (b"\r\n\r\n\r\n", "Empty message"),
        (b"garbage", "No end of headers"),
        (b"KDMQ sip:h SIP/2.0\r\nVia: x", "No end of headers"),
        (b"this is not a SIP message\r\n\r\n", "Bad request line"),
        (b"KDMQ sip:h\r\n\r\n", "Bad request line"),
        (b"KDMQ sip:h SIP/3.0\r\n\r\n", "Bad request line"),
        (b"KDMQ  sip:h SIP/2.0\r\n\r\n", "Bad request line"),
        (b"KDMQ sip:h SIP/2.0 \r\n\r\n", "Bad request line"),
        (b"KD(MQ sip:h SIP/2.0\r\n\r\n", "Bad method"),
        (b"KDMQ http:h SIP/2.0\r\n\r\n", "Bad Request-URI: Unsupported URI scheme"),
        (
            b"KDMQ sip:h:\xef\xbc\x95 SIP/2.0\r\n\r\n",
            "Bad Request-URI: Bad port in URI",
        ),
        (b"SIP/2.0 20 OK\r\n\r\n", "Bad status line"),
        (b"SIP/2.0 2000 OK\r\n\r\n", "Bad status line"),
        (b"SIP/2.0 099 Low\r\n\r\n", "Bad status line"),
        (b"SIP/2.0 700 High\r\n\r\n", "Bad status line"),
        (b"SIP/2.0 2x0 OK\r\n\r\n", "Bad status line"),
        (b"SIP/2.0 \xd9\xa2\xd9\xa0\xd9\xa0 OK\r\n\r\n", "Bad status line"),
        (b"SIP/2.0 \xc2\xb200 OK\r\n\r\n", "Bad status line"),
        (b"SIP/2.0 200 O\x00K\r\n\r\n", "Bad status line"),
        (b"KDMQ sip:h SIP/2.0\r\nno colon\r\n\r\n", "Header line without a colon"),
        (b"KDMQ sip:h SIP/2.0\r\nVia\r\n\r\n", "Header line without a colon"),
        (b"KDMQ sip:h SIP/2.0\r\nVi a: x\r\n\r\n", "Bad header name"),
        (b"KDMQ sip:h SIP/2.0\r\n: x\r\n\r\n", "Bad header name"),
        (b"KDMQ sip:h SIP/2.0\r\nV\xc3\xada: x\r\n\r\n", "Bad header name"),
        (b"KDMQ sip:h SIP/2.0\r\nVia: \xff\r\n\r\n", "Headers are not UTF-8"),
        (b"KDMQ sip:h SIP/2.0\r\nVia: x\n\n", "Mixed line endings"),
        (b"KDMQ sip:h SIP/2.0\nVia: x\r\n\n", "Mixed line endings"),
        (b"KDMQ sip:h SIP/2.0\r\nVia: a\nTo: b\r\n\r\n", "Stray CR or LF in headers"),
        (b"KDMQ sip:h SIP/2.0\r\nVia: a\rTo: b\r\n\r\n", "Stray CR or LF in headers"),
        (b"KDMQ sip:h\rx SIP/2.0\r\n\r\n", "Stray CR or LF in headers"),
        (b"KDMQ sip:h:x SIP/2.0\r\nVia: a\r\n", "Bad Request-URI: Bad port in URI"),
    ]

    def test_reasons(self) -> None:
        """
        Each bad datagram fails with its reason.
        """
        for data, reason in self.cases:
            error = self.assertRaises(SIPParseError, parse, data)
            self.assertEqual((data, error.reason), (data, reason))

    def test_errorIsValueError(self) -> None:
        """
        L{SIPParseError} is a C{ValueError} whose message is its reason.
        """
        error = SIPParseError("Bad thing")
        self.assertIsInstance(error, ValueError)
        self.assertEqual(str(error), "Bad thing")
        self.assertIsNone(error.headers)

    def test_headersForRequests(self) -> None:
        """
        An error in the headers of a request carries the headers before it;
        an error in the request line carries none.
        """
        error = self.assertRaises(
            SIPParseError, parse, request("Call-ID: x", "CSeq: 1 KDMQ", "bad line")
        )
        self.assertEqual(error.headers, (("Call-ID", "x"), ("CSeq", "1 KDMQ")))
        error = self.assertRaises(
            SIPParseError, parse, b"KD(MQ sip:h SIP/2.0\r\nCall-ID: x\r\n\r\n"
        )
        self.assertIsNone(error.headers)

    def test_leadingBlankLines(self) -> None:
        """
        Blank lines before the start line are skipped (RFC 3261 §7.5).
        """
        message = parse(b"\r\n\r\n" + request("Call-ID: x"))
        self.assertEqual(message.callID, "x")

    def test_noBlankLine(self) -> None:
        """
        A message without a body may end right after its last header line.
        """
        message = parse(b"KDMQ sip:h SIP/2.0\r\nCall-ID: x\r\n")
        self.assertEqual((message.headers, message.body), ((("Call-ID", "x"),), b""))

    def test_bareLineFeeds(self) -> None:
        """
        A message whose lines all end with a bare LF is read, even when its
        body holds a CRLF blank line.
        """
        message = parse(b"KDMQ sip:h SIP/2.0\nCall-ID: x\n\nbody\r\n\r\nmore")
        self.assertEqual(message.headers, (("Call-ID", "x"),))
        self.assertEqual(message.body, b"body\r\n\r\nmore")

    def test_binaryBody(self) -> None:
        """
        A body need not be UTF-8.
        """
        message = parseRequest(request("Content-Length: 3", body=b"\xff\x00\xfe"))
        self.assertEqual(message.body, b"\xff\x00\xfe")


class ResponseForTests(SynchronousTestCase):
    """
    Tests for L{responseFor}.
    """

    def setUp(self) -> None:
        self.request = parseRequest(datagrams("01-bus-formation.txt")[0].data)

    def test_copies(self) -> None:
        """
        The Via, From, To, Call-ID and CSeq are copied, in order, and nothing
        else.
        """
        response = responseFor(self.request, 200, toTag="t1")
        self.assertEqual((response.code, response.reason), (200, "OK"))
        self.assertEqual(
            [name for name, value in response.headers],
            ["Via", "To", "From", "CSeq", "Call-ID"],
        )
        self.assertEqual(response.via, self.request.via)
        self.assertEqual(response.fromAddress, self.request.fromAddress)
        self.assertEqual(response.callID, self.request.callID)
        self.assertEqual(response.cseq, self.request.cseq)
        self.assertEqual(response.to, self.request.to.withTag("t1"))
        self.assertEqual(response.to.tag, "t1")
        self.assertEqual(response.body, b"")

    def test_allVias(self) -> None:
        """
        Every Via is copied, in order.
        """
        message = parseRequest(
            request("Via: SIP/2.0/UDP a;branch=1, SIP/2.0/UDP b;branch=2")
        )
        response = responseFor(message, 408)
        self.assertEqual([via.host for via in response.via], ["a", "b"])
        self.assertEqual(response.reason, "Request Timeout")

    def test_keepsTag(self) -> None:
        """
        A To that has a tag keeps it.
        """
        message = parseRequest(request("To: <sip:h>;tag=old"))
        self.assertEqual(responseFor(message, 200, toTag="new").to.tag, "old")

    def test_noTagOn100(self) -> None:
        """
        A 100 gets no To tag.
        """
        self.assertIsNone(responseFor(self.request, 100, toTag="t").to.tag)

    def test_noTagGiven(self) -> None:
        """
        Without C{toTag}, the To is copied as it is.
        """
        self.assertIsNone(responseFor(self.request, 200).to.tag)

    def test_extras(self) -> None:
        """
        Extra headers come after the copied ones; the reason and the body are
        as given, and an unknown code has reason C{Unknown}.
        """
        response = responseFor(
            self.request,
            488,
            headers=[("Content-Type", "text/plain")],
            body=b"x",
        )
        self.assertEqual(response.headers[-1], ("Content-Type", "text/plain"))
        self.assertEqual((response.reason, response.body), ("Unknown", b"x"))
        self.assertEqual(responseFor(self.request, 400, "Bad JSON").reason, "Bad JSON")

    def test_broken(self) -> None:
        """
        A request that failed L{checkRequest} can still be answered.
        """
        message = parseRequest(request("To: garbage", "Call-ID: x"))
        response = responseFor(message, 400, toTag="t")
        self.assertEqual(response.headers, (("To", "garbage"), ("Call-ID", "x")))

    def test_fromParseError(self) -> None:
        """
        A 400 can be addressed with the headers a L{SIPParseError} carries.
        """
        error = self.assertRaises(
            SIPParseError, parse, request(*MANDATORY, "Content-Length: 9")
        )
        partial = Request("KDMQ", URI("h"), error.headers)
        response = responseFor(partial, 400, error.reason, toTag="t")
        self.assertEqual(response.callID, "45ea467209d0b5ca-12986@127.0.0.1")
        self.assertEqual(response.reason, "Body shorter than Content-Length")

    def test_serialised(self) -> None:
        """
        A response serialises to what Kamailio would send.
        """
        response = responseFor(self.request, 200, toTag="abc")
        self.assertEqual(
            serialise(response),
            b"SIP/2.0 200 OK\r\n"
            b"Via: SIP/2.0/UDP 127.0.0.1:5062;branch=z9hG4bK7cb7.a369c4f5000000000000000000000000.0\r\n"
            b"To: <sip:notification_peer@127.0.0.1:5061>;tag=abc\r\n"
            b"From: <sip:notification_peer@127.0.0.1:5062>;tag=40bd18ec79e1d8f7e9c3f54805d1ecb3-47fad6ec\r\n"
            b"CSeq: 10 KDMQ\r\n"
            b"Call-ID: 45ea467209d0b5ca-12986@127.0.0.1\r\n"
            b"Content-Length: 0\r\n\r\n",
        )


class SerialiseTests(SynchronousTestCase):
    """
    Tests for L{serialise}.
    """

    def test_request(self) -> None:
        """
        A request is its request line, its headers, a Content-Length counting
        octets, a blank line and its body.
        """
        message = Request(
            "KDMQ",
            URI("127.0.0.1", 5061, "htable"),
            (("Via", "SIP/2.0/UDP 127.0.0.1:5062;branch=z9hG4bKx"), ("Subject", "é")),
            "☃".encode("utf-8"),
        )
        self.assertEqual(
            serialise(message),
            b"KDMQ sip:htable@127.0.0.1:5061 SIP/2.0\r\n"
            b"Via: SIP/2.0/UDP 127.0.0.1:5062;branch=z9hG4bKx\r\n"
            b"Subject: \xc3\xa9\r\n"
            b"Content-Length: 3\r\n\r\n\xe2\x98\x83",
        )

    def test_contentLengthHeaderIgnored(self) -> None:
        """
        A Content-Length among the headers, in any spelling, is not written:
        the body decides.
        """
        for name in ["Content-Length", "content-length", "l", "L", "CONTENT-length"]:
            message = Response(200, "OK", (("Call-ID", "x"), (name, "99")), b"abc")
            self.assertEqual(
                serialise(message),
                b"SIP/2.0 200 OK\r\nCall-ID: x\r\nContent-Length: 3\r\n\r\nabc",
            )

    def test_contentLengthLikeValue(self) -> None:
        """
        A header that only looks like Content-Length is written.
        """
        message = Response(200, "OK", (("Subject", "l: 4"), ("X-Content-Length", "1")))
        self.assertEqual(parse(serialise(message)), message)

    def test_lineBreakInjection(self) -> None:
        """
        A CR or LF in a header or in the start line is refused, so that a value
        cannot forge headers.
        """
        for message in [
            Response(200, "OK", (("Subject", "a\r\nVia: forged"),)),
            Response(200, "OK", (("Subject", "a\nb"),)),
            Response(200, "OK", (("Subject\r\nX", "a"),)),
            Response(200, "O\rK"),
            Request("KDMQ", URI("h", parameters=(("a", "b\r\nc"),))),
        ]:
            self.assertRaises(ValueError, serialise, message)

    def test_badModel(self) -> None:
        """
        A message L{parse <dmq.sip.codec.parse>} could not read back is refused.
        """
        for message in [
            Request("KD MQ", URI("h")),
            Request("", URI("h")),
            Response(200, "OK", (("Bad Name", "a"),)),
            Response(200, "OK", ((" Via", "a"),)),
            Response(200, "OK", (("", "a"),)),
            Response(99, "Low"),
            Response(700, "High"),
            Response(200, "O\x00K"),
        ]:
            self.assertRaises(ValueError, serialise, message)


# Strategies over the model, for the property tests.

TOKEN_ALPHABET = (
    "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-.!%*_+`'~"
)
tokens = st.text(TOKEN_ALPHABET, min_size=1, max_size=10)
hostNames = st.text(
    "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-.",
    min_size=1,
    max_size=20,
)
hosts = st.one_of(
    hostNames,
    st.ip_addresses(v=4).map(str),
    st.ip_addresses(v=6).map(str),
)
ports = st.none() | st.integers(0, 65535)
# A ? would start the URI headers, so it is left out.
users = st.text(
    "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.!~*'()%&=+$,;/",
    min_size=1,
    max_size=12,
)
passwords = st.text(
    "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.!~*'()%&=+$,",
    max_size=8,
)
parameterValues = st.text(TOKEN_ALPHABET + "[]/:&+$", min_size=1, max_size=10)
parameters = st.lists(st.tuples(tokens, st.none() | parameterValues), max_size=4).map(
    tuple
)
uriHeaders = st.none() | st.text(TOKEN_ALPHABET + "=&@:/", min_size=1, max_size=12)


@st.composite
def uris(draw: Callable) -> URI:
    """
    Draw a L{URI}.
    """
    user = draw(st.none() | users)
    return URI(
        host=draw(hosts),
        port=draw(ports),
        user=user,
        scheme=draw(st.sampled_from(["sip", "sips"])),
        password=None if user is None else draw(st.none() | passwords),
        parameters=draw(parameters),
        headers=draw(uriHeaders),
    )


vias = st.builds(
    Via,
    transport=tokens.map(str.upper),
    host=hosts,
    port=ports,
    parameters=parameters,
)
simpleVias = st.builds(
    Via,
    transport=tokens.map(str.upper),
    host=hosts,
    port=ports,
    parameters=tokens.map(lambda branch: (("branch", branch),)),
)
lineText = st.text(
    st.characters(blacklist_categories=["Cs"], blacklist_characters="\r\n"),
    max_size=20,
)
nameAddresses = st.builds(
    NameAddress,
    uri=uris(),
    displayName=st.none() | lineText,
    parameters=parameters,
)

taggedAddresses = st.builds(
    NameAddress,
    uri=uris(),
    parameters=tokens.map(lambda tag: (("tag", tag),)),
)

# Names written canonically, as parse writes them: known names, and unknown
# tokens (which keep their spelling).  Content-Length is not a header of the
# model.
knownNames = sorted(set(_CANONICAL_NAMES.values()) - {"Content-Length"})
headerNames = st.one_of(
    st.sampled_from(knownNames),
    tokens.filter(lambda name: canonicalName(name) == name),
)


@st.composite
def headerLists(draw: Callable) -> Tuple[Tuple[str, str], ...]:
    """
    Draw the headers of a message: values without CR or LF, without blanks
    around them, and without commas in list headers.
    """
    result = []
    for name in draw(st.lists(headerNames, max_size=6)):
        value = draw(
            st.one_of(
                lineText,
                vias.map(str),
                nameAddresses.map(str),
                uris().map(str),
            )
        )
        if name in _LIST_HEADERS:
            value = value.replace(",", "")
        result.append((name, value.strip(" \t")))
    return tuple(result)


bodies = st.binary(max_size=64)
requests = st.builds(
    Request, method=tokens, uri=uris(), headers=headerLists(), body=bodies
)
responses = st.builds(
    Response,
    code=st.integers(100, 699),
    reason=st.text(
        st.characters(blacklist_categories=["Cs"], blacklist_characters="\r\n\x00"),
        max_size=20,
    ),
    headers=headerLists(),
    body=bodies,
)

COMPACT = {
    long: short
    for short, long in _CANONICAL_NAMES.items()
    if len(short) == 1 and short.islower()
}


def _foldable(value: str) -> List[int]:
    """
    Return where C{value} can be folded: at single spaces between non-blanks.
    """
    return [
        i
        for i in range(1, len(value) - 1)
        if value[i] == " " and value[i - 1] not in " \t" and value[i + 1] not in " \t"
    ]


def otherSpellings(message: sip.Message) -> st.SearchStrategy:
    """
    Return a strategy of C{(message, data)}: C{message} and a datagram that
    writes it differently from L{serialise}, but means the same.
    """

    @st.composite
    def write(draw: Callable) -> Tuple[sip.Message, bytes]:
        if isinstance(message, Request):
            startLine = f"{message.method} {message.uri} SIP/2.0"
        else:
            startLine = f"SIP/2.0 {message.code} {message.reason}"
        lines = [startLine]
        # Where a header may go: not between a line and its continuation.
        boundaries = [1]
        headers = list(message.headers)
        i = 0
        while i < len(headers):
            name, value = headers[i]
            i += 1
            if name in _KNOWN_NAMES:
                spelling = draw(
                    st.sampled_from(
                        [name, name.lower(), name.upper(), COMPACT.get(name, name)]
                    )
                )
            else:
                spelling = name
            if name in _LIST_HEADERS and value and not set('"<>') & set(value):
                # Join the next values of the same header, as a list.
                while (
                    i < len(headers)
                    and headers[i][0] == name
                    and headers[i][1]
                    and not set('"<>') & set(headers[i][1])
                    and draw(st.booleans())
                ):
                    value += draw(st.sampled_from([",", ", ", " ,\t"])) + headers[i][1]
                    i += 1
            folds = _foldable(value)
            if folds and draw(st.booleans()):
                where = draw(st.sampled_from(folds))
                value = (
                    value[:where]
                    + draw(st.sampled_from(["\n ", "\n\t", "\n   "]))
                    + value[where + 1 :]
                )
            colon = draw(st.sampled_from([": ", ":", " : ", "\t:\t", ":  "]))
            lines.extend(f"{spelling}{colon}{value}".split("\n"))
            boundaries.append(len(lines))
        trailer = b""
        if draw(st.booleans()):
            lines.insert(
                draw(st.sampled_from(boundaries)),
                draw(st.sampled_from(["Content-Length", "content-length", "l", "L"]))
                + f": {len(message.body)}",
            )
            trailer = draw(st.binary(max_size=8))
        newline = draw(st.sampled_from(["\r\n", "\n"]))
        data = draw(st.sampled_from(["", "\r\n", "\r\n\r\n"])).encode()
        data += (newline.join(lines) + newline + newline).encode("utf-8")
        return message, data + message.body + trailer

    return write()


propertySettings = settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)


class PropertyTests(SynchronousTestCase):
    """
    Whatever the model can hold, serialising then parsing gives it back.
    """

    @propertySettings
    @given(requests)
    def test_requestRoundTrip(self, message: Request) -> None:
        """
        A request survives L{serialise} then L{parse <dmq.sip.codec.parse>}.
        """
        self.assertEqual(parse(serialise(message)), message)

    @propertySettings
    @given(responses)
    def test_responseRoundTrip(self, message: Response) -> None:
        """
        A response survives L{serialise} then L{parse <dmq.sip.codec.parse>}.
        """
        self.assertEqual(parse(serialise(message)), message)

    @propertySettings
    @given(uris())
    def test_uriRoundTrip(self, uri: URI) -> None:
        """
        A URI survives L{URI.toString} then L{parseURI}.
        """
        self.assertEqual(parseURI(uri.toString()), uri)

    @propertySettings
    @given(vias)
    def test_viaRoundTrip(self, via: Via) -> None:
        """
        A Via survives L{Via.toString} then L{parseVia}.
        """
        self.assertEqual(parseVia(via.toString()), via)

    @propertySettings
    @given(st.one_of(vias, simpleVias))
    def test_viaFastPath(self, via: Via) -> None:
        """
        L{parseVia} reads the usual shape of Via (one C{branch}) in one
        match, to what its general path reads.
        """
        from dmq.sip.address import _parseVia

        text = via.toString()
        self.assertEqual(parseVia(text), _parseVia(text))

    @propertySettings
    @given(st.one_of(nameAddresses, taggedAddresses))
    def test_nameAddressFastPaths(self, address: NameAddress) -> None:
        """
        L{parseNameAddress} reads the usual shapes (no parameters, or only a
        tag) to what its general path reads.
        """
        from dmq.sip.address import _parseNameAddress

        text = address.toString()
        self.assertEqual(parseNameAddress(text), _parseNameAddress(text))

    @propertySettings
    @given(nameAddresses)
    def test_nameAddressRoundTrip(self, address: NameAddress) -> None:
        """
        A name-addr survives L{NameAddress.toString} then L{parseNameAddress}.
        """
        self.assertEqual(parseNameAddress(address.toString()), address)

    @propertySettings
    @given(
        requests,
        st.integers(0, 800),
        st.none() | st.text(max_size=12),
        st.lists(st.tuples(headerNames | st.text(max_size=6), lineText), max_size=3),
        bodies,
        st.none() | tokens,
    )
    def test_serialiseReply(
        self,
        message: Request,
        code: int,
        reason: object,
        extras: List[Tuple[str, str]],
        body: bytes,
        toTag: object,
    ) -> None:
        """
        L{sip.serialiseReply} writes what L{serialise} writes of
        L{responseFor}'s response, and refuses what it refuses.
        """
        arguments = (message, code, reason, extras, body, toTag)
        try:
            # Drawn to include what responseFor refuses: wrong types on purpose.
            expected = serialise(responseFor(*arguments))  # type: ignore[arg-type]
        except ValueError:
            self.assertRaises(ValueError, sip.serialiseReply, *arguments)
        else:
            self.assertEqual(sip.serialiseReply(*arguments), expected)  # type: ignore[arg-type]

    @propertySettings
    @given(st.one_of(requests, responses).flatmap(otherSpellings))
    def test_otherSpellings(self, case: Tuple[sip.Message, bytes]) -> None:
        """
        A message written in any of the ways SIP allows (compact or
        differently-cased names, blanks around colons, folded lines, list
        headers joined by commas, bare LF line endings, leading blank lines,
        a Content-Length in any spelling with octets after the body) parses
        to the same message.
        """
        message, data = case
        self.assertEqual(parse(data), message)


# Mutations of captured datagrams, for the fuzz tests.

seeds = [
    capture.data
    for name in [
        "01-bus-formation.txt",
        "03-htable-replication.txt",
        "probe-01-errors.txt",
    ]
    for capture in datagrams(name)
]
# Octets that mean something to the parser.
interesting = st.sampled_from(
    [
        b"\r\n",
        b"\n",
        b"\r",
        b" ",
        b"\t",
        b":",
        b";",
        b",",
        b"<",
        b">",
        b'"',
        b"\\",
        b"@",
        b"[",
        b"]",
        b"=",
        b"?",
        b"\r\n ",
        b"\r\n\r\n",
        b"\x00",
        b"\xff",
        b"\xc3",
        b"\xc2\xb2",
        b"9",
        b"0",
        b"l: 3\r\n",
        b"Via: ",
        b"SIP/2.0 ",
        b"sip:",
    ]
)


@st.composite
def mutated(draw: Callable) -> bytes:
    """
    Draw a captured datagram with a few truncations, flips, insertions and
    deletions.
    """
    data = bytearray(draw(st.sampled_from(seeds)))
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(
            st.sampled_from(["flip", "insert", "delete", "replace", "truncate"])
        )
        where = draw(st.integers(0, len(data)))
        if kind == "truncate":
            del data[where:]
        elif kind == "flip" and where < len(data):
            data[where] ^= 1 << draw(st.integers(0, 7))
        elif kind == "insert":
            data[where:where] = draw(interesting | st.binary(min_size=1, max_size=4))
        elif kind == "delete":
            del data[where : where + draw(st.integers(1, 8))]
        elif kind == "replace" and where < len(data):
            data[where] = draw(st.integers(0, 255))
    return bytes(data)


fragments = st.lists(
    st.sampled_from(
        [
            "KDMQ ",
            "SIP/2.0",
            " 200 OK",
            "sip:",
            "a@",
            "h",
            "[::1]",
            ":5060",
            ";tag=1",
            ";",
            ",",
            "\r\n",
            "\n",
            " ",
            "\t",
            ":",
            "Via",
            "v",
            "Content-Length",
            "l",
            "5",
            '"',
            "<",
            ">",
            "\\",
            "Call-ID",
            "CSeq: 1 KDMQ",
            "\r\n\r\n",
            "é",
            "٥",
            "²",
        ]
    ),
    max_size=12,
).map("".join)
headerLines = st.one_of(
    fragments,
    st.sampled_from(
        [
            "Via",
            "v",
            "Content-Length",
            "l",
            "Contact",
            "From",
            "To",
            "CSeq",
            "Call-ID",
            "Max-Forwards",
            "X-Other",
            " ",
            "",
        ]
    ).flatmap(lambda name: fragments.map(lambda value: f"{name}:{value}")),
    st.sampled_from(MANDATORY),
)


@st.composite
def sipish(draw: Callable) -> bytes:
    """
    Draw a datagram made of SIP's words and delimiters: a start line, header
    lines and a body.
    """
    startLine = draw(
        st.sampled_from(
            ["KDMQ sip:notification_peer@127.0.0.1:5061 SIP/2.0", "SIP/2.0 200 OK"]
        )
        | fragments
    )
    lines = [startLine] + draw(st.lists(headerLines, max_size=8))
    newline = draw(st.sampled_from(["\r\n", "\r\n", "\n"]))
    text: str = newline.join(lines) + newline + newline
    body: bytes = draw(st.binary(max_size=8))
    return text.encode("utf-8") + body


fuzzSettings = settings(
    max_examples=1000, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)


class FuzzTests(SynchronousTestCase):
    """
    Whatever arrives, L{parse <dmq.sip.codec.parse>} returns a message or raises L{SIPParseError}.
    """

    def check(self, data: bytes) -> None:
        """
        Parse C{data}.  If that works, read every view of the message, check
        that it round-trips, and that a request can be answered.  If not,
        check that the error has a reason and, for a request, that a C{400}
        can be built from its headers and serialised.
        """
        try:
            message = parse(data)
        except SIPParseError as e:
            self.assertIsInstance(e.reason, str)
            self.assertTrue(e.reason)
            if e.headers is not None:
                partial = Request("KDMQ", URI("h"), e.headers)
                serialise(responseFor(partial, 400, e.reason, toTag="t"))
            return
        touch(message)
        self.assertEqual(parse(serialise(message)), message)
        if isinstance(message, Request):
            serialise(responseFor(message, 200, toTag="t"))

    @fuzzSettings
    @given(st.binary(max_size=200))
    def test_randomBytes(self, data: bytes) -> None:
        """
        Random octets.
        """
        self.check(data)

    @fuzzSettings
    @given(sipish())
    def test_sipishText(self, data: bytes) -> None:
        """
        Random strings of SIP's words and delimiters.
        """
        self.check(data)

    @fuzzSettings
    @given(mutated())
    def test_mutatedCaptures(self, data: bytes) -> None:
        """
        Captured datagrams, truncated, flipped, with octets inserted and
        deleted.
        """
        self.check(data)

    def test_everyTruncation(self) -> None:
        """
        Every prefix of a captured request and reply.
        """
        for data in seeds[:3]:
            for end in range(len(data) + 1):
                self.check(data[:end])
