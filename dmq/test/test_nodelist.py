# -*- test-case-name: dmq.test.test_nodelist -*-
"""
Tests for L{dmq.nodelist}: nodes, their identity, the node list and its
merge, and the node-list body codec.
"""

from __future__ import annotations

from typing import List

from twisted.python.filepath import FilePath
from twisted.trial.unittest import SynchronousTestCase

from dmq.nodelist import (
    MAX_BODY_LENGTH,
    NBODY_LIMIT,
    EncodedNodeList,
    Node,
    NodeChange,
    NodeLine,
    NodeList,
    NodeStatus,
    ParsedNodeList,
    encodeNodeList,
    fitsKamailio,
    formatNodeList,
    nodeKey,
    parseNodeAddress,
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


ACTIVE = NodeStatus.ACTIVE
NOT_ACTIVE = NodeStatus.NOT_ACTIVE
DISABLED = NodeStatus.DISABLED

N2 = parseURI("sip:127.0.0.1:5062")
N3 = parseURI("sip:127.0.0.1:5063")


def uri(text: str) -> URI:
    return parseURI(text)


def lines(body: bytes) -> List[NodeLine]:
    parsed = parseNodeList(body)
    assert not parsed.errors, parsed.errors
    return parsed.entries


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
        Any other string, other case included, is a C{ValueError}.
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

    def test_notASCII(self) -> None:
        """
        A line that is not ASCII (UTF-8 or not) is skipped and reported.
        """
        parsed = parseNodeList(
            b"sip:10.0.0.1:5060;status=active\r\nsip:\xff\xfe:5060;status=active\r\n"
            + "sip:127.0.3.45:5060;transport=\u00e9;status=active\r\n".encode("utf-8")
        )
        self.assertEqual(parsed.entries, [line("sip:10.0.0.1:5060")])
        self.assertEqual(parsed.errors, ["line 2: not ASCII", "line 3: not ASCII"])
        self.assertEqual(parsed.causes, ["notAscii", "notAscii"])

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


# A DNS label one character too long, and a name of the longest length.
LABEL64 = "a" * 64
NAME253 = ".".join(["b" * 63, "c" * 63, "d" * 63, "e" * 61])


class HostileLineTests(SynchronousTestCase):
    """
    L{parseNodeList} refuses every line we could not write back, resolve or
    send to (issue 14): each is skipped with a reason and a cause.
    """

    def assertRefused(self, text: str, cause: str) -> None:
        body = text.encode("utf-8") + b"\r\nsip:10.0.0.1:5060;status=active\r\n"
        parsed = parseNodeList(body)
        self.assertEqual(parsed.entries, [line("sip:10.0.0.1:5060")], text)
        self.assertEqual(parsed.causes, [cause], text)
        self.assertEqual(len(parsed.errors), 1)
        self.assertTrue(parsed.errors[0].startswith("line 1: "), parsed.errors)
        # Reasons quote a bounded part of the line.
        self.assertLess(len(parsed.errors[0]), 250)

    def test_nonASCIIParameter(self) -> None:
        """
        The line of finding 1 is refused.
        """
        self.assertRefused("sip:127.0.3.45:5060;transport=\u00e9;status=active", "notAscii")

    def test_parametersOutsideTheGrammar(self) -> None:
        """
        Parameter names and values keep to RFC 3261's C{paramchar}, and a
        transport is a token without escapes.
        """
        for text in [
            "sip:10.0.0.2:5060;x=a b;status=active",
            'sip:10.0.0.2:5060;x="q";status=active',
            "sip:10.0.0.2:5060;x=%zz;status=active",
            "sip:10.0.0.2:5060;transport=a%20b;status=active",
            "sip:10.0.0.2:5060;transport=[x];status=active",
            "sip:10.0.0.2:5060;transport;status=active",
        ]:
            self.assertRefused(text, "badParameter")

    def test_headersOutsideTheGrammar(self) -> None:
        """
        URI headers, if any, keep to RFC 3261's grammar.
        """
        self.assertRefused("sip:10.0.0.2:5060;status=active?a b=c", "badHeaders")
        self.assertRefused("sip:10.0.0.2:5060;status=active?abc", "badHeaders")

    def test_badHosts(self) -> None:
        """
        A host is an IP literal or a DNS name: labels of letters, digits
        and inner hyphens, 1 to 63 long, at most 253 in all, the last not
        all digits, and nothing a resolver reads as an address.
        """
        for host in [
            LABEL64,
            f"x.{LABEL64}.example",
            NAME253 + "f",
            "a..b",
            "-a.example",
            "a-.example",
            "127.1",
            "12",
            "10.0.0.256",
            "127.0.0.01",
            "0x7f000001",
            "0x7f.1",
        ]:
            self.assertRefused(f"sip:{host}:5060;status=active", "badHost")
        # SIP's own grammar has no underscore either.
        self.assertRefused("sip:a_b.example:5060;status=active", "badUri")

    def test_goodHosts(self) -> None:
        """
        IP literals and valid DNS names are read.
        """
        for host in [
            "10.0.0.1",
            "[2001:db8::1]",
            "localhost",
            "node-1.example.com",
            "node-1.example.com.",
            "a" * 63 + ".example",
            NAME253,
            "1x.example",
        ]:
            body = f"sip:{host}:5060;status=active\r\n".encode("ascii")
            parsed = parseNodeList(body)
            self.assertEqual(parsed.errors, [], host)
            self.assertEqual(len(parsed.entries), 1)

    def test_tooLong(self) -> None:
        """
        A line over 400 octets is refused without being parsed; its reason
        does not quote it.
        """
        text = f"sip:{'z' * 4700}.example:5060;status=active"
        self.assertRefused(text, "tooLong")
        self.assertNotIn("zzz", parseNodeList(text.encode("ascii")).errors[0])
        longest = f"sip:{NAME253}:65535;transport=tcp;status=not_active;" + "x" * 50
        self.assertEqual(parseNodeList(longest.encode("ascii")).errors, [])

    def test_badStatusQuotedBriefly(self) -> None:
        """
        An unknown status is quoted in its reason, cut short.
        """
        self.assertRefused("sip:10.0.0.2:5060;status=" + "q" * 300, "badStatus")


class WriterTests(SynchronousTestCase):
    """
    L{formatNodeList} and L{encodeNodeList} never raise, never write a line
    the reader would refuse, and keep within a budget.
    """

    def test_unwritableLinesLeftOut(self) -> None:
        """
        Lines whose host or transport no node list may carry (nodes made by
        hand, past the checks) are left out, and said to be.
        """
        good = line("sip:10.0.0.1:5060")
        bad = [
            NodeLine(URI(host="127.0.3.45", port=5060, parameters=(("transport", "\u00e9"),))),
            NodeLine(URI(host="127.0.3.45", port=5060, parameters=(("transport", "tcp\r\nx"),))),
            NodeLine(URI(host=LABEL64, port=5060)),
            NodeLine(URI(host="h\u00e9.example", port=5060)),
            NodeLine(URI(host=NAME253, port=5060, parameters=(("transport", "t" * 200),))),
        ]
        encoded = encodeNodeList([bad[0], good, *bad[1:]])
        self.assertEqual(
            encoded, EncodedNodeList(b"sip:10.0.0.1:5060;status=active\r\n", bad, [])
        )
        self.assertEqual(formatNodeList(bad), b"")

    def test_budget(self) -> None:
        """
        A line that would take the body past the budget is left out, and
        the lines after it are still tried.
        """
        short = line("sip:10.0.0.1:5060")
        long = line(f"sip:{NAME253}:5060")
        size = len(formatNodeList([short]))
        encoded = encodeNodeList([short, long, short], budget=2 * size + 1)
        self.assertEqual(encoded.body, formatNodeList([short, short]))
        self.assertEqual(encoded.overBudget, [long])
        self.assertEqual(formatNodeList([short, long], budget=size), formatNodeList([short]))

    def test_defaultBudget(self) -> None:
        """
        By default a body stays within L{MAX_BODY_LENGTH}, under what one
        UDP datagram carries with our headers.
        """
        self.assertLess(MAX_BODY_LENGTH, 65507 - 4096)
        entries = [line(f"sip:n{i:04d}{NAME253[5:]}:5060") for i in range(300)]
        body = formatNodeList(entries)
        self.assertLessEqual(len(body), MAX_BODY_LENGTH)
        self.assertGreater(len(body), MAX_BODY_LENGTH - 300)

    def test_writtenLinesReadBack(self) -> None:
        """
        Every line written reads back as the same line.
        """
        entries = [
            line(f"sip:{NAME253}:65535;transport=tcp", NodeStatus.NOT_ACTIVE),
            line("sip:[2001:db8::1]:5060"),
            line("sip:10.0.0.5"),
        ]
        parsed = parseNodeList(formatNodeList(entries))
        self.assertEqual(parsed.errors, [])
        self.assertEqual(parsed.entries, entries)


class ParseNodeAddressTests(SynchronousTestCase):
    """
    Tests for L{parseNodeAddress}, which checks the notification addresses
    and the argument of C{dmq.add} as the node-list reader checks lines.
    """

    def test_good(self) -> None:
        """
        An IP literal or a DNS name, over UDP, is a node address.
        """
        for text in ["sip:10.0.0.1:5060", "sip:dmq.example", "sip:[::1]:5060;transport=udp"]:
            self.assertEqual(parseNodeAddress(text), parseURI(text))

    def test_refused(self) -> None:
        """
        What no node list may carry is refused, with a reason.
        """
        for text, reason in [
            ("sip:127.1:5060", "not an IP address or a DNS name"),
            ("sip:12", "not an IP address or a DNS name"),
            (f"sip:{LABEL64}.example:5060", "longer than 63"),
            ("sip:10.0.0.1:5060;transport=\u00e9", "not SIP's grammar"),
            ("sip:10.0.0.1:5060;transport=a%41", "is not a token"),
            ("sip:10.0.0.1:5060;x=\u00e9", "not SIP's grammar"),
            (f"sip:{'z' * 4700}:5060", "longer than 400"),
            ("sip:10.0.0.1:0", "port 0"),
            ("sip:10.0.0.1;transport=sctp", "udp, tcp or tls"),
            ("sips:10.0.0.1", "only sip:"),
            ("http://x", "not a SIP URI"),
        ]:
            error = self.assertRaises(ValueError, parseNodeAddress, text)
            self.assertIn(reason, str(error), text)
            self.assertLess(len(str(error)), 600)


class FitsKamailioTests(SynchronousTestCase):
    """
    Tests for L{fitsKamailio}.
    """

    def body(self, count: int) -> bytes:
        # Lines of 32 octets, the length of every captured line.
        lines = [line(f"sip:n{i:03d}.xmpl:5062") for i in range(count)]
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
        # Longer than any line we write or read: as another node might.
        self.assertFalse(fitsKamailio(f"sip:{host}:5060;status=active\r\n".encode("ascii")))
        self.assertTrue(fitsKamailio(f"sip:{host[1:]}:5060;status=active\r\n".encode("ascii")))


class NodeTests(SynchronousTestCase):
    """
    Tests for L{Node} and L{nodeKey}.
    """

    def test_statusParameterDropped(self) -> None:
        """
        A node's URI never carries a C{status} parameter, even when assigned.
        """
        node = Node(uri("sip:10.0.0.1:5060;status=disabled"))
        self.assertEqual(node.uri, uri("sip:10.0.0.1:5060"))
        node.uri = uri("sip:10.0.0.2:5060;status=active")
        self.assertEqual(node.uri, uri("sip:10.0.0.2:5060"))

    def test_defaults(self) -> None:
        """
        A new node is active, not local, with no failures and never heard
        from.
        """
        node = Node(uri("sip:10.0.0.1:5060"))
        self.assertIs(node.status, ACTIVE)
        self.assertFalse(node.local)
        self.assertEqual(node.failCount, 0)
        self.assertIsNone(node.lastNotification)

    def test_identitySemantics(self) -> None:
        """
        Two nodes with the same URI are still two objects: equality is
        identity, and nodes can be dictionary keys while they change.
        """
        a = Node(uri("sip:10.0.0.1:5060"))
        b = Node(uri("sip:10.0.0.1:5060"))
        self.assertNotEqual(a, b)
        table = {a: 1}
        a.status = DISABLED
        self.assertEqual(table[a], 1)

    def test_resolvedIPLiteral(self) -> None:
        """
        The resolved IP of an IP-literal host is the host, normalised.
        """
        self.assertEqual(Node(uri("sip:10.0.0.1:5060")).resolvedIP, "10.0.0.1")
        self.assertEqual(Node(uri("sip:[0:0::1]:5060")).resolvedIP, "::1")

    def test_resolvedIPHostName(self) -> None:
        """
        A host name has no resolved IP until one is assigned; assigned text
        is normalised, and must be an IP address.
        """
        node = Node(uri("sip:node1.example.com:5060"))
        self.assertIsNone(node.resolvedIP)
        node.resolvedIP = "2001:DB8:0::1"
        self.assertEqual(node.resolvedIP, "2001:db8::1")
        with self.assertRaises(ValueError):
            node.resolvedIP = "node1.example.com"

    def test_address(self) -> None:
        """
        The address is the resolved IP (or the host) and the port, 5060 by
        default, 5061 for TLS.
        """
        self.assertEqual(Node(uri("sip:10.0.0.1:5070")).address, ("10.0.0.1", 5070))
        self.assertEqual(Node(uri("sip:10.0.0.1")).address, ("10.0.0.1", 5060))
        self.assertEqual(
            Node(uri("sip:10.0.0.1;transport=tls")).address, ("10.0.0.1", 5061)
        )
        named = Node(uri("sip:node1.example.com"))
        self.assertEqual(named.address, ("node1.example.com", 5060))
        named.resolvedIP = "10.0.0.7"
        self.assertEqual(named.address, ("10.0.0.7", 5060))

    def test_str(self) -> None:
        """
        A node reads as its URI.
        """
        self.assertEqual(
            str(Node(uri("sip:10.0.0.1:5060;transport=tcp"))),
            "sip:10.0.0.1:5060;transport=tcp",
        )

    def test_keyPort(self) -> None:
        """
        As in Kamailio, a URI with the default port and one without a port
        have different keys.
        """
        self.assertNotEqual(
            nodeKey(uri("sip:1.2.3.4:5060")), nodeKey(uri("sip:1.2.3.4"))
        )

    def test_keyTransport(self) -> None:
        """
        No transport and C{transport=udp} (any case) are one key (Kamailio
        tells them apart; we do not); TCP is another.
        """
        self.assertEqual(
            nodeKey(uri("sip:1.2.3.4:5060")),
            nodeKey(uri("sip:1.2.3.4:5060;transport=UDP")),
        )
        self.assertNotEqual(
            nodeKey(uri("sip:1.2.3.4:5060")),
            nodeKey(uri("sip:1.2.3.4:5060;transport=tcp")),
        )

    def test_keyHostText(self) -> None:
        """
        The host is compared as text; the user part and other parameters do
        not count.
        """
        self.assertNotEqual(
            nodeKey(uri("sip:node1:5060")), nodeKey(uri("sip:NODE1:5060"))
        )
        self.assertEqual(
            nodeKey(uri("sip:notification_peer@node1:5060;lr")),
            nodeKey(uri("sip:node1:5060")),
        )
        self.assertEqual(Node(uri("sip:node1:5060")).key, ("node1", 5060, "udp"))


class NodeListFindTests(SynchronousTestCase):
    """
    Tests for L{NodeList.find}: Kamailio's comparison, then the IP fall-back.
    """

    def setUp(self) -> None:
        self.local = Node(uri("sip:127.0.0.1:5060"), local=True)
        self.nodes = NodeList(self.local)

    def add(self, text: str, **kwargs) -> Node:
        node = Node(uri(text), **kwargs)
        self.nodes.add(node)
        return node

    def test_localFirst(self) -> None:
        """
        Iteration gives the local node, then the others, oldest first.
        """
        a = self.add("sip:10.0.0.1:5060")
        b = self.add("sip:10.0.0.2:5060")
        self.assertEqual(list(self.nodes), [self.local, a, b])
        self.assertEqual(self.nodes.others(), [a, b])
        self.assertEqual(len(self.nodes), 3)

    def test_needsLocal(self) -> None:
        """
        A node list starts from the local node, and holds only that one.
        """
        self.assertRaises(ValueError, NodeList, Node(uri("sip:10.0.0.1")))
        self.assertRaises(
            ValueError, self.nodes.add, Node(uri("sip:10.0.0.1"), local=True)
        )

    def test_byKey(self) -> None:
        """
        A URI finds the node with the same host, port and transport.
        """
        a = self.add("sip:10.0.0.1:5060")
        b = self.add("sip:10.0.0.1:5060;transport=tcp")
        self.assertIs(self.nodes.find(uri("sip:10.0.0.1:5060")), a)
        self.assertIs(self.nodes.find(uri("sip:10.0.0.1:5060;transport=udp")), a)
        self.assertIs(self.nodes.find(uri("sip:10.0.0.1:5060;transport=tcp")), b)
        self.assertIsNone(self.nodes.find(uri("sip:10.0.0.1:5060;transport=tls")))
        self.assertIsNone(self.nodes.find(uri("sip:10.0.0.2:5060")))

    def test_fromURI(self) -> None:
        """
        A From URI (user part, a status parameter) finds its node.
        """
        a = self.add("sip:10.0.0.1:5060")
        self.assertIs(self.nodes.find(uri("sip:htable@10.0.0.1:5060")), a)
        self.assertIs(self.nodes.find(uri("sip:10.0.0.1:5060;status=disabled")), a)

    def test_hostNamePortText(self) -> None:
        """
        For a host name with no known address, a URI without a port and one
        with the default port name different nodes, as in Kamailio.
        """
        self.add("sip:node1.example.com:5060")
        self.assertIsNone(self.nodes.find(uri("sip:node1.example.com")))

    def test_hostText(self) -> None:
        """
        Host names are compared as text.
        """
        self.add("sip:node1.example.com:5060")
        self.assertIsNone(self.nodes.find(uri("sip:node2.example.com:5060")))

    def test_ipFallbackPortless(self) -> None:
        """
        An IP-literal URI without a port finds the node at that IP on the
        default port (Kamailio 5.8+ folds these through the IP fall-back).
        """
        a = self.add("sip:10.0.0.1:5060")
        self.assertIs(self.nodes.find(uri("sip:10.0.0.1")), a)
        b = self.add("sip:10.0.0.2")
        self.assertIs(self.nodes.find(uri("sip:10.0.0.2:5060")), b)

    def test_ipFallbackResolvedHostName(self) -> None:
        """
        A node known by host name, once resolved, is found by its IP address
        with the same port and transport.
        """
        a = self.add("sip:node1.example.com:5070")
        self.assertIsNone(self.nodes.find(uri("sip:10.0.0.1:5070")))
        a.resolvedIP = "10.0.0.1"
        self.assertIs(self.nodes.find(uri("sip:10.0.0.1:5070")), a)
        self.assertIs(self.nodes.find(uri("sip:node1.example.com:5070")), a)

    def test_ipFallbackNeedsSamePort(self) -> None:
        """
        Unlike Kamailio's, our IP fall-back requires the same port: distinct
        nodes sharing one IP (as on the captured 5.6.3 bus) stay distinct.
        """
        self.add("sip:127.0.0.1:5061")
        self.assertIsNone(self.nodes.find(uri("sip:127.0.0.1:5062")))
        named = self.add("sip:node1.example.com:5070", resolvedIP="10.0.0.1")
        self.assertIsNone(self.nodes.find(uri("sip:10.0.0.1:5080")))
        self.assertIsNotNone(named)

    def test_ipFallbackNeedsSameTransport(self) -> None:
        """
        The IP fall-back requires the same transport too.
        """
        self.add("sip:node1.example.com:5060", resolvedIP="10.0.0.1")
        self.assertIsNone(self.nodes.find(uri("sip:10.0.0.1:5060;transport=tcp")))

    def test_ipFallbackIPv6Spellings(self) -> None:
        """
        Two spellings of one IPv6 address name one node.
        """
        a = self.add("sip:[2001:db8:0:0::1]:5060")
        self.assertIs(self.nodes.find(uri("sip:[2001:DB8::1]:5060")), a)

    def test_keyBeforeFallback(self) -> None:
        """
        As in Kamailio, a match by key anywhere in the list wins over a match
        by address earlier in the list.
        """
        self.add("sip:node1.example.com:5060", resolvedIP="10.0.0.1")
        exact = self.add("sip:10.0.0.1:5060")
        self.assertIs(self.nodes.find(uri("sip:10.0.0.1:5060")), exact)

    def test_findWithResolvedIP(self) -> None:
        """
        A caller that resolved a host name may pass its address.
        """
        a = self.add("sip:10.0.0.1:5060")
        self.assertIs(
            self.nodes.find(uri("sip:node1.example.com:5060"), resolvedIP="10.0.0.1"), a
        )

    def test_selfSpellings(self) -> None:
        """
        The local node is found in each of its spellings.
        """
        for text in [
            "sip:127.0.0.1:5060",
            "sip:127.0.0.1:5060;transport=udp",
            "sip:127.0.0.1",
            "sip:notification_peer@127.0.0.1:5060",
            "sip:127.0.0.1:5060;status=disabled",
        ]:
            self.assertIs(self.nodes.find(uri(text)), self.local, text)
        self.assertIsNone(self.nodes.find(uri("sip:127.0.0.1:5060;transport=tcp")))
        self.assertIsNone(self.nodes.find(uri("sip:127.0.0.1:5070")))

    def test_selfByResolvedName(self) -> None:
        """
        A local node configured by host name is found by its IP address once
        that is known.
        """
        local = Node(uri("sip:node1.example.com:5060"), local=True)
        nodes = NodeList(local)
        self.assertIsNone(nodes.find(uri("sip:10.0.0.1:5060")))
        local.resolvedIP = "10.0.0.1"
        self.assertIs(nodes.find(uri("sip:10.0.0.1:5060")), local)
        self.assertIs(nodes.find(uri("sip:10.0.0.1")), local)

    def test_findNode(self) -> None:
        """
        L{NodeList.findNode} gives the node itself when it is in the list,
        else the entry with its identity, else C{None}.
        """
        a = self.add("sip:10.0.0.1:5060")
        self.assertIs(self.nodes.findNode(a), a)
        self.assertIs(self.nodes.findNode(Node(uri("sip:10.0.0.1:5060"))), a)
        self.assertIsNone(self.nodes.findNode(Node(uri("sip:10.0.0.2:5060"))))

    def test_remove(self) -> None:
        """
        A removed node is gone; removing a node not in the list is an error.
        """
        a = self.add("sip:10.0.0.1:5060")
        self.nodes.remove(a)
        self.assertNotIn(a, self.nodes)
        self.assertRaises(ValueError, self.nodes.remove, a)
        self.assertRaises(ValueError, self.nodes.remove, self.local)


class NodeListMergeTests(SynchronousTestCase):
    """
    Tests for L{NodeList.merge}: Kamailio 6.1's merge.
    """

    def setUp(self) -> None:
        self.local = Node(uri("sip:127.0.0.1:5061"), local=True)
        self.nodes = NodeList(self.local)

    def test_newNodes(self) -> None:
        """
        Lines naming unknown nodes add them, with their status, and count as
        changes.
        """
        changes = self.nodes.merge(
            lines(
                b"sip:127.0.0.1:5062;status=active\r\nsip:127.0.0.1:5063;status=disabled\r\n"
            )
        )
        n2, n3 = self.nodes.others()
        self.assertEqual((str(n2), n2.status), ("sip:127.0.0.1:5062", ACTIVE))
        self.assertEqual((str(n3), n3.status), ("sip:127.0.0.1:5063", DISABLED))
        self.assertEqual(
            changes, [NodeChange(n2, None, ACTIVE), NodeChange(n3, None, DISABLED)]
        )

    def test_newNodeDefaultStatus(self) -> None:
        """
        A new node from a line without a status is active.
        """
        self.nodes.merge(lines(b"sip:127.0.0.1:5062\r\n"))
        [n2] = self.nodes.others()
        self.assertIs(n2.status, ACTIVE)

    def test_changed(self) -> None:
        """
        A line whose status differs from a known node's changes it.
        """
        n2 = Node(N2)
        self.nodes.add(n2)
        changes = self.nodes.merge(lines(b"sip:127.0.0.1:5062;status=disabled\r\n"))
        self.assertIs(n2.status, DISABLED)
        self.assertEqual(changes, [NodeChange(n2, ACTIVE, DISABLED)])

    def test_unchanged(self) -> None:
        """
        A line with the status the node has is no change.
        """
        self.nodes.add(Node(N2))
        self.assertEqual(
            self.nodes.merge(lines(b"sip:127.0.0.1:5062;status=active\r\n")), []
        )

    def test_disabledIsEndingState(self) -> None:
        """
        A line does not change a C{disabled} node (Kamailio up to 6.1).
        """
        n2 = Node(N2, DISABLED)
        self.nodes.add(n2)
        self.assertEqual(
            self.nodes.merge(lines(b"sip:127.0.0.1:5062;status=active\r\n")), []
        )
        self.assertIs(n2.status, DISABLED)

    def test_notActiveToActive(self) -> None:
        """
        By Kamailio's rule a line may make a C{not_active} node active.
        """
        n2 = Node(N2, NOT_ACTIVE)
        self.nodes.add(n2)
        self.assertEqual(
            len(self.nodes.merge(lines(b"sip:127.0.0.1:5062;status=active\r\n"))), 1
        )
        self.assertIs(n2.status, ACTIVE)

    def test_noStatusNoChange(self) -> None:
        """
        A line without C{;status=} does not change a known node.
        """
        n2 = Node(N2, NOT_ACTIVE)
        self.nodes.add(n2)
        self.assertEqual(self.nodes.merge(lines(b"sip:127.0.0.1:5062\r\n")), [])
        self.assertIs(n2.status, NOT_ACTIVE)

    def test_localLineIgnored(self) -> None:
        """
        A line about the local node, in any spelling, changes nothing.
        """
        self.assertEqual(
            self.nodes.merge(
                lines(
                    b"sip:127.0.0.1:5061;status=disabled\r\n"
                    b"sip:127.0.0.1:5061;transport=udp;status=not_active\r\n"
                )
            ),
            [],
        )
        self.assertIs(self.local.status, ACTIVE)
        self.assertEqual(self.nodes.others(), [])

    def test_neverRemovedForAbsence(self) -> None:
        """
        A node missing from a list stays.
        """
        n2 = Node(N2)
        self.nodes.add(n2)
        self.nodes.merge(lines(b"sip:127.0.0.1:5063;status=active\r\n"))
        self.assertIn(n2, self.nodes)
        self.assertIs(n2.status, ACTIVE)

    def test_sameNodeTwiceInOneBody(self) -> None:
        """
        A node named twice in one body is added once, then changed by the
        second line.
        """
        changes = self.nodes.merge(
            lines(
                b"sip:127.0.0.1:5062;status=active\r\nsip:127.0.0.1:5062;status=disabled\r\n"
            )
        )
        [n2] = self.nodes.others()
        self.assertEqual(
            changes, [NodeChange(n2, None, ACTIVE), NodeChange(n2, ACTIVE, DISABLED)]
        )

    def test_otherSpellingFoldsIn(self) -> None:
        """
        A line naming a known node by another spelling of its address is that
        node.
        """
        n2 = Node(uri("sip:10.0.0.2"))
        self.nodes.add(n2)
        self.assertEqual(
            self.nodes.merge(lines(b"sip:10.0.0.2:5060;status=active\r\n")), []
        )
        self.assertEqual(self.nodes.others(), [n2])

    def test_hooks(self) -> None:
        """
        C{admit} decides whether an unknown node may be added, C{accept}
        whether a known one may change.
        """
        n2 = Node(N2, DISABLED)
        self.nodes.add(n2)
        seen = []

        def admit(line):
            seen.append(("admit", str(line.uri)))
            return False

        def accept(node, line):
            seen.append(("accept", str(node)))
            return True

        changes = self.nodes.merge(
            lines(
                b"sip:127.0.0.1:5062;status=active\r\nsip:127.0.0.1:5063;status=active\r\n"
            ),
            admit=admit,
            accept=accept,
        )
        self.assertEqual(
            seen, [("accept", "sip:127.0.0.1:5062"), ("admit", "sip:127.0.0.1:5063")]
        )
        self.assertEqual(changes, [NodeChange(n2, DISABLED, ACTIVE)])
        self.assertEqual(self.nodes.others(), [n2])


class NodeListBodyLinesTests(SynchronousTestCase):
    """
    Tests for L{NodeList.bodyLines}.
    """

    def test_kamailioOrder(self) -> None:
        """
        The active nodes come newest first, the local node last, every one
        as active; the others are left out.
        """
        local = Node(uri("sip:127.0.0.1:5061"), NOT_ACTIVE, local=True)
        nodes = NodeList(local)
        for text, status in [
            ("sip:127.0.0.1:5062", ACTIVE),
            ("sip:127.0.0.1:5063", DISABLED),
            ("sip:127.0.0.1:5064", NOT_ACTIVE),
            ("sip:127.0.0.1:5065", ACTIVE),
        ]:
            nodes.add(Node(uri(text), status))
        self.assertEqual(
            formatNodeList(nodes.bodyLines()),
            b"sip:127.0.0.1:5065;status=active\r\n"
            b"sip:127.0.0.1:5062;status=active\r\n"
            b"sip:127.0.0.1:5061;status=active\r\n",
        )


class NodeListDuplicateTests(SynchronousTestCase):
    """
    Tests for L{NodeList.duplicate}.
    """

    def setUp(self) -> None:
        self.local = Node(uri("sip:127.0.0.1:5060"), local=True)
        self.nodes = NodeList(self.local)

    def test_none(self) -> None:
        """
        A list of distinct nodes has no duplicate.
        """
        self.nodes.add(Node(uri("sip:127.0.0.2:5060")))
        self.nodes.add(Node(uri("sip:node3.example.com:5060")))
        self.assertIsNone(self.nodes.duplicate())

    def test_resolvedToKnown(self) -> None:
        """
        A node whose name resolved to the address of a node listed before
        it is a duplicate of that node.
        """
        first = Node(uri("sip:127.0.0.2:5060"))
        named = Node(uri("sip:node2.example.com"))
        self.nodes.add(named)
        self.nodes.add(first)
        self.assertIsNone(self.nodes.duplicate())
        named.resolvedIP = "127.0.0.2"
        self.assertEqual(self.nodes.duplicate(), (first, named))

    def test_localNeverDuplicate(self) -> None:
        """
        When the local node and another name the same node, the other is
        the duplicate.
        """
        twin = Node(uri("sip:127.0.0.1"))
        self.nodes.add(twin)
        self.assertEqual(self.nodes.duplicate(), (twin, self.local))
