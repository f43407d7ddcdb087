# -*- test-case-name: dmq.test.test_nodelist -*-
"""
Tests for L{dmq.nodelist}, the node-list body codec.
"""

from __future__ import annotations

from twisted.python.filepath import FilePath
from twisted.trial.unittest import SynchronousTestCase

from dmq.nodelist import (
    NBODY_LIMIT,
    NodeLine,
    NodeStatus,
    ParsedNodeList,
    fitsKamailio,
    formatNodeList,
    parseNodeList,
    withoutStatus,
)
from dmq.sip import URI, parseURI

NODELISTS = FilePath(__file__).sibling("data").child("nodelists")

# Bodies copied from the Kamailio 5.6.3 captures (see the README beside them).
CAPTURED = [
    "01-n2-join.txt",
    "01-n1-notify-n2.txt",
    "01-n2-reply-n1.txt",
    "01-n3-join.txt",
    "01-n1-notify-n3.txt",
    "01-n2-reply-n1-after-n3.txt",
    "01-n3-reply-n1.txt",
    "04-n1-reply-n2-n3-disabled.txt",
]


def captured(name: str) -> bytes:
    """
    A node-list body from the captures.
    """
    return NODELISTS.child(name).getContent()


def line(text: str, status: NodeStatus = NodeStatus.ACTIVE) -> NodeLine:
    return NodeLine(parseURI(text), status)


class NodeStatusTests(SynchronousTestCase):
    """
    Tests for L{NodeStatus}.
    """

    def test_values(self) -> None:
        """
        The values are Kamailio 6.1's wire strings.
        """
        self.assertEqual(
            [s.value for s in NodeStatus], ["active", "not_active", "disabled"]
        )

    def test_fromString(self) -> None:
        """
        The three current strings read as their status.
        """
        for status in NodeStatus:
            self.assertIs(NodeStatus.fromString(status.value), status)

    def test_fromStringOldNames(self) -> None:
        """
        Kamailio 6.0's C{timeout} and C{pending} read as C{not_active}.
        """
        self.assertIs(NodeStatus.fromString("timeout"), NodeStatus.NOT_ACTIVE)
        self.assertIs(NodeStatus.fromString("pending"), NodeStatus.NOT_ACTIVE)

    def test_fromStringUnknown(self) -> None:
        """
        Any other string, other case included, is a L{ValueError}.
        """
        for text in ["bogus", "", "Active", "ACTIVE", "active "]:
            self.assertRaises(ValueError, NodeStatus.fromString, text)


class NodeLineTests(SynchronousTestCase):
    """
    Tests for L{NodeLine} and L{withoutStatus}.
    """

    def test_statusParameterDropped(self) -> None:
        """
        A L{NodeLine}'s URI never carries a C{status} parameter.
        """
        entry = NodeLine(parseURI("sip:10.0.0.1:5060;transport=tcp;status=disabled"))
        self.assertEqual(entry.uri, parseURI("sip:10.0.0.1:5060;transport=tcp"))
        self.assertIs(entry.status, NodeStatus.ACTIVE)
        self.assertTrue(entry.statusGiven)

    def test_withoutStatusUnchanged(self) -> None:
        """
        A URI without a status parameter is returned as it is.
        """
        uri = parseURI("sip:10.0.0.1:5060;transport=tcp")
        self.assertIs(withoutStatus(uri), uri)

    def test_withoutStatusAnyCase(self) -> None:
        """
        The parameter name is matched without regard to case.
        """
        self.assertEqual(
            withoutStatus(parseURI("sip:10.0.0.1;Status=active;lr")),
            parseURI("sip:10.0.0.1;lr"),
        )


class FormatNodeListTests(SynchronousTestCase):
    """
    Tests for L{formatNodeList}.
    """

    def test_kamailioBody(self) -> None:
        """
        Lines are C{sip:host:port;status=s}, each followed by CRLF.
        """
        self.assertEqual(
            formatNodeList([line("sip:127.0.0.1:5062"), line("sip:127.0.0.1:5061")]),
            b"sip:127.0.0.1:5062;status=active\r\nsip:127.0.0.1:5061;status=active\r\n",
        )

    def test_empty(self) -> None:
        """
        No lines, no bytes.
        """
        self.assertEqual(formatNodeList([]), b"")

    def test_statuses(self) -> None:
        """
        Every status is written as its wire string.
        """
        self.assertEqual(
            formatNodeList(
                [
                    line("sip:10.0.0.1:5060", NodeStatus.DISABLED),
                    line("sip:10.0.0.2:5060", NodeStatus.NOT_ACTIVE),
                ]
            ),
            b"sip:10.0.0.1:5060;status=disabled\r\n"
            b"sip:10.0.0.2:5060;status=not_active\r\n",
        )

    def test_noPort(self) -> None:
        """
        A URI without a port is written with an empty port, as Kamailio does.
        """
        self.assertEqual(
            formatNodeList([line("sip:10.0.0.5")]), b"sip:10.0.0.5:;status=active\r\n"
        )

    def test_ipv6(self) -> None:
        """
        An IPv6 host is written in brackets.
        """
        self.assertEqual(
            formatNodeList([NodeLine(URI(host="2001:db8::1", port=5060))]),
            b"sip:[2001:db8::1]:5060;status=active\r\n",
        )

    def test_transport(self) -> None:
        """
        A transport other than UDP is written, in lower case, before the
        status; UDP is not written.
        """
        self.assertEqual(
            formatNodeList(
                [
                    line("sip:10.0.0.9:5061;transport=TLS"),
                    line("sip:10.0.0.8:5060;transport=tcp"),
                    line("sip:10.0.0.7:5060;transport=udp"),
                ]
            ),
            b"sip:10.0.0.9:5061;transport=tls;status=active\r\n"
            b"sip:10.0.0.8:5060;transport=tcp;status=active\r\n"
            b"sip:10.0.0.7:5060;status=active\r\n",
        )

    def test_onlyHostPortTransport(self) -> None:
        """
        The scheme is always C{sip:}; the user part, password, headers and
        every other parameter are dropped.
        """
        uri = parseURI(
            "sips:peer:secret@node1.example.com:5070;lr;transport=tcp;x=y?h=v"
        )
        self.assertEqual(
            formatNodeList([NodeLine(uri)]),
            b"sip:node1.example.com:5070;transport=tcp;status=active\r\n",
        )

    def test_capturedBodiesRoundTrip(self) -> None:
        """
        Every captured body, parsed and written again, is byte for byte what
        Kamailio sent.
        """
        for name in CAPTURED:
            body = captured(name)
            self.assertEqual(formatNodeList(parseNodeList(body).entries), body, name)


class ParseNodeListTests(SynchronousTestCase):
    """
    Tests for L{parseNodeList}.
    """

    def test_captured(self) -> None:
        """
        A captured body reads as its lines, in order, with no errors.
        """
        parsed = parseNodeList(captured("01-n1-notify-n3.txt"))
        self.assertEqual(
            parsed,
            ParsedNodeList(
                [
                    line("sip:127.0.0.1:5063"),
                    line("sip:127.0.0.1:5062"),
                    line("sip:127.0.0.1:5061"),
                ],
                [],
            ),
        )

    def test_allCaptured(self) -> None:
        """
        Every captured body reads without an error.
        """
        for name in CAPTURED:
            parsed = parseNodeList(captured(name))
            self.assertEqual(parsed.errors, [], name)
            self.assertTrue(parsed.entries, name)

    def test_empty(self) -> None:
        """
        An empty body has no lines.
        """
        self.assertEqual(parseNodeList(b""), ParsedNodeList([], []))

    def test_lastLineWithoutLineEnd(self) -> None:
        """
        The last line may lack its line end, and loses nothing.
        """
        parsed = parseNodeList(
            b"sip:10.0.0.1:5060;status=active\r\nsip:10.0.0.2:5060;status=disabled"
        )
        self.assertEqual(
            parsed.entries,
            [line("sip:10.0.0.1:5060"), line("sip:10.0.0.2:5060", NodeStatus.DISABLED)],
        )

    def test_bareLF(self) -> None:
        """
        A bare LF ends a line as well as CRLF does.
        """
        parsed = parseNodeList(b"sip:10.0.0.1:5060;status=active\nsip:10.0.0.2:5060\n")
        self.assertEqual(
            [e.uri for e in parsed.entries],
            [parseURI("sip:10.0.0.1:5060"), parseURI("sip:10.0.0.2:5060")],
        )
        self.assertEqual(parsed.errors, [])

    def test_blankLinesSkipped(self) -> None:
        """
        Blank lines, white space only included, are skipped without error.
        """
        parsed = parseNodeList(
            b"\r\nsip:10.0.0.1:5060;status=active\r\n\r\n  \r\n"
            b"sip:10.0.0.2:5060;status=active\r\n\r\n"
        )
        self.assertEqual(len(parsed.entries), 2)
        self.assertEqual(parsed.errors, [])

    def test_trailingNULsAndSpaces(self) -> None:
        """
        Trailing NULs (which Kamailio trims) and surrounding white space are
        dropped.
        """
        parsed = parseNodeList(b" sip:10.0.0.1:5060;status=active\x00\x00\r\n")
        self.assertEqual(parsed, ParsedNodeList([line("sip:10.0.0.1:5060")], []))

    def test_noStatus(self) -> None:
        """
        A line without C{;status=} reads as active, and says it gave none.
        """
        [entry] = parseNodeList(b"sip:10.0.0.1:5060;transport=tcp\r\n").entries
        self.assertEqual(entry.uri, parseURI("sip:10.0.0.1:5060;transport=tcp"))
        self.assertIs(entry.status, NodeStatus.ACTIVE)
        self.assertFalse(entry.statusGiven)

    def test_oldStatuses(self) -> None:
        """
        Kamailio 6.0's C{timeout} and C{pending} read as C{not_active}.
        """
        parsed = parseNodeList(
            b"sip:10.0.0.1:5060;status=timeout\r\nsip:10.0.0.2:5060;status=pending\r\n"
        )
        self.assertEqual(
            [e.status for e in parsed.entries],
            [NodeStatus.NOT_ACTIVE, NodeStatus.NOT_ACTIVE],
        )

    def test_bogusStatusInTheMiddle(self) -> None:
        """
        A line with an unknown status (the line that wedges Kamailio 5.6.3)
        is skipped and reported; the lines after it are still read.
        """
        parsed = parseNodeList(
            b"sip:127.0.0.1:5063;status=active\r\n"
            b"sip:127.0.0.1:5098;status=bogus\r\n"
            b"sip:127.0.0.1:5061;status=active\r\n"
        )
        self.assertEqual(
            parsed.entries, [line("sip:127.0.0.1:5063"), line("sip:127.0.0.1:5061")]
        )
        self.assertEqual(len(parsed.errors), 1)
        self.assertIn("line 2", parsed.errors[0])
        self.assertIn("bogus", parsed.errors[0])

    def test_capturedBogusProbe(self) -> None:
        """
        The probe's body, a single C{status=bogus} line, reads as no line
        and one error.
        """
        parsed = parseNodeList(b"sip:127.0.0.1:5098;status=bogus\r\n")
        self.assertEqual(parsed.entries, [])
        self.assertEqual(len(parsed.errors), 1)

    def test_emptyStatus(self) -> None:
        """
        A C{status} parameter without a value is an unknown status.
        """
        parsed = parseNodeList(
            b"sip:10.0.0.1:5060;status\r\nsip:10.0.0.2:5060;status=\r\n"
        )
        self.assertEqual(parsed.entries, [])
        self.assertEqual(len(parsed.errors), 2)

    def test_badURI(self) -> None:
        """
        A line that is not a SIP URI is skipped and reported, one error per
        line, numbered from 1.
        """
        parsed = parseNodeList(
            b"hello\r\nsip:10.0.0.1:5060;status=active\r\nhttp://x/\r\nsip:bad host\r\n"
            b"sip:10.0.0.1:99999;status=active\r\n"
        )
        self.assertEqual(parsed.entries, [line("sip:10.0.0.1:5060")])
        self.assertEqual(
            [error.split(":")[0] for error in parsed.errors],
            ["line 1", "line 3", "line 4", "line 5"],
        )

    def test_notUTF8(self) -> None:
        """
        A line that is not UTF-8 is skipped and reported.
        """
        parsed = parseNodeList(
            b"sip:10.0.0.1:5060;status=active\r\nsip:\xff\xfe:5060;status=active\r\n"
        )
        self.assertEqual(parsed.entries, [line("sip:10.0.0.1:5060")])
        self.assertEqual(parsed.errors, ["line 2: not UTF-8"])

    def test_emptyPort(self) -> None:
        """
        Kamailio's empty-port form reads as a URI without a port, and is
        written back the same way.
        """
        body = b"sip:10.0.0.5:;status=active\r\n"
        [entry] = parseNodeList(body).entries
        self.assertIsNone(entry.uri.port)
        self.assertEqual(formatNodeList([entry]), body)

    def test_ipv6(self) -> None:
        """
        An IPv6 line reads with the host without its brackets.
        """
        [entry] = parseNodeList(b"sip:[2001:db8::1]:5060;status=active\r\n").entries
        self.assertEqual(entry.uri.host, "2001:db8::1")
        self.assertEqual(entry.uri.port, 5060)


class FitsKamailioTests(SynchronousTestCase):
    """
    Tests for L{fitsKamailio}.
    """

    def body(self, count: int) -> bytes:
        # Lines of 32 octets, the length of every captured line.
        lines = [line(f"sip:127.0.{i:03d}:5062") for i in range(count)]
        body = formatNodeList(lines)
        self.assertEqual({len(x) for x in body.split(b"\r\n") if x}, {32})
        return body

    def test_limit(self) -> None:
        """
        The limit is Kamailio's 1024-octet buffer.
        """
        self.assertEqual(NBODY_LIMIT, 1024)

    def test_small(self) -> None:
        """
        Captured bodies fit, and so does an empty one.
        """
        self.assertTrue(fitsKamailio(captured("01-n1-notify-n3.txt")))
        self.assertTrue(fitsKamailio(b""))

    def test_boundary(self) -> None:
        """
        Kamailio needs, before each line, room for the line plus 32 octets
        beyond the CRLF: 29 lines of 32 octets fit, 30 do not, although
        those 1020 octets would fit the buffer.
        """
        self.assertTrue(fitsKamailio(self.body(29)))
        self.assertEqual(len(self.body(30)), 1020)
        self.assertFalse(fitsKamailio(self.body(30)))

    def test_oneLongLine(self) -> None:
        """
        A single line longer than the buffer less 34 octets does not fit.
        """
        host = "n" * (NBODY_LIMIT - 34 - len("sip::5060;status=active") + 1)
        body = formatNodeList([line(f"sip:{host}:5060")])
        self.assertFalse(fitsKamailio(body))
        body = formatNodeList([line(f"sip:{host[1:]}:5060")])
        self.assertTrue(fitsKamailio(body))
