# -*- test-case-name: dmq.test.test_control_guard -*-
"""
Tests for the guards of the control endpoint: the token file and header
(L{dmq.bearer}), where it may listen without a token
(L{dmq.control.guard}), the options that ask for them, the token and the
body bound over HTTP on a L{Clock} without sockets, and the status page
(L{dmq.control.status}).
"""

from __future__ import annotations

import base64
import json
import os
from html.parser import HTMLParser
from typing import Dict, List, Optional

from twisted.internet.address import IPv4Address
from twisted.internet.error import ConnectionDone
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.logger import LogLevel, capturedLogs
from twisted.python import usage
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase
from twisted.web import resource, server
from zope.interface import implementer

from dmq import sip
from dmq.bearer import MIN_TOKEN, isAuthorized, readTokenFile
from dmq.config import NodeConfig
from dmq.control import MAX_BATCH, MAX_REQUEST, ControlResource, ControlService, RPCMethods
from dmq.control.guard import checkControl, controlBinding
from dmq.control.status import REFRESH, StatusPage
from dmq.interfaces import IDMQPeer, PeerResponse
from dmq.node import NodeStatus
from dmq.tap import Options, makeNodeService
from dmq.test.fakenet import FakeNetwork, makeNode

TOKEN = b"s3cret-token-0123456789abcdef"


def tokenFile(testCase, token=TOKEN, mode=0o600):
    """
    Write C{token} to a new file of C{mode}; its path.
    """
    path = testCase.mktemp()
    with open(path, "wb") as f:
        f.write(token + b"\n")
    os.chmod(path, mode)
    return path


class TokenFileTests(SynchronousTestCase):
    """
    L{readTokenFile}: one token, in a file only its owner can read.
    """

    def test_read(self):
        """
        The token is the file's one line, white space stripped.
        """
        self.assertEqual(readTokenFile(tokenFile(self)), TOKEN)

    def test_openToOthers(self):
        """
        A file that group or others may read or write is refused, saying
        its mode.
        """
        for mode in (0o644, 0o640, 0o604, 0o620, 0o602):
            e = self.assertRaises(ValueError, readTokenFile, tokenFile(self, mode=mode))
            self.assertIn(f"mode {mode:04o}", str(e))
            self.assertIn("chmod 600", str(e))

    def test_unfit(self):
        """
        An empty file, a short token, one with spaces or control
        characters, and a missing file are refused.
        """
        for token, words in [
            (b"", "empty"),
            (b"x" * (MIN_TOKEN - 1), f"at least {MIN_TOKEN}"),
            (b"two words and more of them", "without spaces"),
            (b"\x00" * 20, "printable ASCII"),
        ]:
            e = self.assertRaises(ValueError, readTokenFile, tokenFile(self, token))
            self.assertIn(words, str(e))
        e = self.assertRaises(ValueError, readTokenFile, self.mktemp())
        self.assertIn("cannot read", str(e))

    def test_isAuthorized(self):
        """
        The token is accepted as a bearer token or as a Basic password;
        anything else is refused.
        """
        basic = base64.b64encode(b"anyone:" + TOKEN)
        self.assertTrue(isAuthorized(b"Bearer " + TOKEN, TOKEN))
        self.assertTrue(isAuthorized(b"bearer  " + TOKEN + b" ", TOKEN))
        self.assertTrue(isAuthorized(b"Basic " + basic, TOKEN))
        for header in [
            None, b"", b"Bearer", b"Bearer " + TOKEN[:-1], b"Bearer " + TOKEN + b"x", TOKEN,
            b"Token " + TOKEN, b"Basic " + base64.b64encode(TOKEN), b"Basic !!!", b"Basic " + basic[:-2],
        ]:
            self.assertFalse(isAuthorized(header, TOKEN), header)


class BindingTests(SynchronousTestCase):
    """
    L{controlBinding} and L{checkControl}: loopback by default, and a token
    for anything wider.
    """

    def test_loopbackByDefault(self):
        """
        A TCP endpoint without an interface listens on loopback.
        """
        self.assertEqual(controlBinding("tcp:5080").description, "tcp:5080:interface=127.0.0.1")
        self.assertTrue(controlBinding("tcp:5080").local)
        binding = controlBinding("tcp6:5080")
        self.assertEqual(binding.description, "tcp6:5080:interface=\\:\\:1")
        self.assertTrue(binding.local)
        self.assertTrue(controlBinding("tcp:5080:interface=127.0.0.12").local)

    def test_wider(self):
        """
        Any other interface, or a name, is not local.
        """
        for description in ["tcp:5080:interface=0.0.0.0", "tcp:5080:interface=192.0.2.1", "tcp6:5080:interface=\\:\\:"]:
            binding = controlBinding(description)
            self.assertEqual(binding.description, description)
            self.assertFalse(binding.local)

    def test_unix(self):
        """
        A UNIX socket is made mode 600 unless its mode is given; one open to
        group or others is not local.
        """
        binding = controlBinding("unix:/run/dmq/control.sock")
        self.assertEqual(binding.description, "unix:/run/dmq/control.sock:mode=600")
        self.assertTrue(binding.local)
        self.assertFalse(controlBinding("unix:/run/dmq/control.sock:mode=660").local)

    def test_check(self):
        """
        L{checkControl} refuses what is not local without a token, and
        takes it with one.
        """
        e = self.assertRaises(ValueError, checkControl, "tcp:5080:interface=0.0.0.0", None)
        self.assertIn("--control-token-file", str(e))
        self.assertIn("interface 0.0.0.0", str(e))
        self.assertFalse(checkControl("tcp:5080:interface=0.0.0.0", "/some/file").local)
        self.assertTrue(checkControl("tcp:5080", None).local)

    def test_bad(self):
        """
        What Twisted cannot parse, or a port out of range, is refused.
        """
        for description in ["nonsense:1", "tcp:port", "tcp:70000"]:
            self.assertRaises(ValueError, controlBinding, description)


LOCAL = ["--server-address", "sip:127.0.0.1:5060"]


class OptionsTests(SynchronousTestCase):
    """
    The options of the control endpoint's guards: a usage error at start,
    not a warning.
    """

    def parse(self, *arguments):
        options = Options()
        options.parseOptions(LOCAL + list(arguments))
        return options

    def assertUsageError(self, arguments, *words):
        e = self.assertRaises(usage.UsageError, self.parse, *arguments)
        for word in words:
            self.assertIn(word, str(e))

    def test_loopbackByDefault(self):
        """
        C{--control tcp:PORT} listens on 127.0.0.1.
        """
        self.assertEqual(self.parse("--control", "tcp:5080")["control"], "tcp:5080:interface=127.0.0.1")

    def test_noToken(self):
        """
        A control endpoint others can reach, without a token, is a usage
        error.
        """
        self.assertUsageError(["--control", "tcp:5080:interface=0.0.0.0"], "--control", "--control-token-file")
        self.assertUsageError(["--control", "unix:/tmp/x.sock:mode=666"], "--control", "--control-token-file")

    def test_token(self):
        """
        With a token file, any address will do.
        """
        path = tokenFile(self)
        options = self.parse("--control", "tcp:5080:interface=0.0.0.0", "--control-token-file", path)
        self.assertEqual(options.nodeConfig.controlTokenFile, path)
        self.assertFalse(options.nodeConfig.controlOpenMetrics)

    def test_badTokenFile(self):
        """
        A token file open to others, or missing, is a usage error.
        """
        self.assertUsageError(
            ["--control", "tcp:5080", "--control-token-file", tokenFile(self, mode=0o644)],
            "--control-token-file", "chmod 600",
        )
        self.assertUsageError(["--control", "tcp:5080", "--control-token-file", self.mktemp()], "cannot read")

    def test_alone(self):
        """
        A token without a control endpoint, and open metrics without a
        token, make no sense.
        """
        self.assertUsageError(["--control-token-file", tokenFile(self)], "needs --control")
        self.assertUsageError(["--control", "tcp:5080", "--control-open-metrics"], "needs --control-token-file")

    def test_configFile(self):
        """
        The config file takes the token file and the open metrics by their
        names; the command line's checks apply.
        """
        path = self.mktemp()
        with open(path, "w") as f:
            f.write(
                'control = "tcp:5080:interface=0.0.0.0"\n'
                f'control_token_file = "{tokenFile(self)}"\ncontrol_open_metrics = 1\n'
            )
        config = self.parse("--config", path).nodeConfig
        self.assertTrue(config.controlOpenMetrics)
        self.assertIsNotNone(config.controlTokenFile)
        with open(path, "w") as f:
            f.write('control = "tcp:5080:interface=0.0.0.0"\n')
        self.assertUsageError(["--config", path], "--control-token-file")

    def test_embedded(self):
        """
        L{makeNodeService} refuses a L{NodeConfig} whose control endpoint
        others can reach without a token.
        """
        config = NodeConfig(serverAddress=sip.URI("127.0.0.1", 5060), control="tcp:0:interface=0.0.0.0")
        e = self.assertRaises(ValueError, makeNodeService, Clock(), config, listen=False)
        self.assertIn("--control-token-file", str(e))


class _FakeEndpoint:
    def __init__(self, host="127.0.0.1"):
        self.host = host

    def listen(self, factory):
        from twisted.internet import defer

        self.factory = factory
        return defer.succeed(self)

    def getHost(self):
        return IPv4Address("TCP", self.host, 5080)

    def stopListening(self):
        pass


class _StatusResource(resource.Resource):
    """
    Stands for the status page.
    """

    isLeaf = True

    def render_GET(self, request):
        return b"<html>status</html>"


class GuardedEndpointTests(SynchronousTestCase):
    """
    The control endpoint over HTTP, without sockets: the token on every
    path, the body bound, the batch bound.
    """

    def setUp(self):
        self.clock = Clock()
        self.methods = RPCMethods()
        self.methods.addMethod("test.echo", lambda value: value)
        self.openPaths = []
        self.token: Optional[bytes] = TOKEN

    def start(self):
        status = _StatusResource()
        self.endpoint = _FakeEndpoint()
        from prometheus_client import CollectorRegistry

        self.root = ControlResource(
            self.methods, CollectorRegistry(), self.clock, token=self.token, openPaths=self.openPaths, status=status
        )
        self.control = ControlService(self.endpoint, self.root, "test", clock=self.clock)
        self.control.startService()
        self.addCleanup(self.control.stopService)

    def connect(self, port=40000):
        """
        A new connection: its protocol, or C{None} when refused.
        """
        if not hasattr(self, "control"):
            self.start()
        protocol = self.endpoint.factory.buildProtocol(IPv4Address("TCP", "127.0.0.1", port))
        if protocol is None:
            return None
        transport = StringTransport(peerAddress=IPv4Address("TCP", "127.0.0.1", port))
        # Not self.patch: its restore would run before the cleanup that stops
        # the service, which aborts this connection through it.
        transport.abortConnection = lambda: protocol.connectionLost(  # type: ignore[method-assign]
            Failure(ConnectionDone())
        )
        protocol.makeConnection(transport)
        self.transport = transport
        return protocol

    def exchange(self, data):
        """
        Send C{data} on a new connection; what came back.
        """
        protocol = self.connect()
        transport = self.transport
        protocol.dataReceived(data)
        self.transport = transport
        return transport.value()

    def get(self, path, authorization=None):
        headers = b"Authorization: %s\r\n" % (authorization,) if authorization else b""
        return self.exchange(b"GET %s HTTP/1.1\r\nHost: x\r\n%s\r\n" % (path, headers))

    def post(self, body, authorization=b"Bearer " + TOKEN):
        headers = b"Authorization: %s\r\n" % (authorization,) if authorization else b""
        return self.exchange(
            b"POST /RPC HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n%s\r\n%s" % (len(body), headers, body)
        )

    def test_noToken(self):
        """
        Without the token, every path is answered 401, asking for one, and
        counted and warned of.
        """
        with capturedLogs() as events:
            for path in (b"/", b"/RPC", b"/metrics", b"/nothing"):
                answer = self.get(path)
                self.assertTrue(answer.startswith(b"HTTP/1.1 401 "), answer)
                self.assertIn(b'Bearer realm="dmq"', answer)
            answer = self.post(json.dumps({"jsonrpc": "2.0", "method": "test.echo", "params": [1], "id": 1}).encode(), None)
        self.assertTrue(answer.startswith(b"HTTP/1.1 401 "))
        self.assertNotIn(b'"result"', answer)
        self.assertEqual(self.control.statistics["noToken"], 5)
        [warning] = [e for e in events if e["log_level"] == LogLevel.warn]
        self.assertEqual(warning["address"], "127.0.0.1:40000")

    def test_wrongToken(self):
        """
        A wrong token is answered 401 and counted apart.
        """
        for header in (b"Bearer " + TOKEN[:-1] + b"X", b"Bearer", b"Basic " + base64.b64encode(b"u:nope")):
            self.assertTrue(self.get(b"/", header).startswith(b"HTTP/1.1 401 "))
        self.assertEqual(self.control.statistics["badToken"], 3)
        self.assertEqual(self.control.statistics["noToken"], 0)

    def test_token(self):
        """
        With the token, as a bearer token or a Basic password, the paths
        are served.
        """
        body = json.dumps({"jsonrpc": "2.0", "method": "test.echo", "params": [7], "id": 1}).encode()
        answer = self.post(body)
        self.assertTrue(answer.startswith(b"HTTP/1.1 200 "))
        self.assertIn(b'"result":7', answer)
        self.assertIn(b"<html>status</html>", self.get(b"/", b"Basic " + base64.b64encode(b"me:" + TOKEN)))
        self.assertTrue(self.get(b"/nothing", b"Bearer " + TOKEN).startswith(b"HTTP/1.1 404 "))

    def test_openMetrics(self):
        """
        A path of C{openPaths} is served without the token; the others
        still ask for it.
        """
        self.openPaths = [b"metrics"]
        self.start()
        self.assertTrue(self.get(b"/metrics").startswith(b"HTTP/1.1 200 "))
        self.assertTrue(self.get(b"/").startswith(b"HTTP/1.1 401 "))

    def test_noTokenAsked(self):
        """
        Without a token, nothing asks for one.
        """
        self.token = None
        self.assertIn(b"<html>status</html>", self.get(b"/"))

    def test_tooLarge(self):
        """
        A body declared larger than 1 MiB is answered 413 at once, before
        it is sent, and the connection closed; counted.
        """
        self.assertEqual(MAX_REQUEST, 1024 * 1024)
        answer = self.exchange(
            b"POST /RPC HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\nContent-Length: %d\r\n\r\n{"
            % (TOKEN, MAX_REQUEST + 1)
        )
        self.assertTrue(answer.startswith(b"HTTP/1.1 413 "), answer)
        self.assertTrue(self.transport.disconnecting)
        self.assertEqual(self.control.statistics["bodiesTooLarge"], 1)

    def test_tooLargeChunked(self):
        """
        A chunked body is answered 413 once its chunks pass 1 MiB; nothing
        of it is handled.
        """
        chunk = b"x" * 65536
        data = b"POST /RPC HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\nTransfer-Encoding: chunked\r\n\r\n" % TOKEN
        data += b"%x\r\n%s\r\n" % (len(chunk), chunk) * 17 + b"0\r\n\r\n"
        answer = self.exchange(data)
        self.assertTrue(answer.startswith(b"HTTP/1.1 413 "), answer[:100])
        self.assertNotIn(b"jsonrpc", answer)
        self.assertEqual(self.control.statistics["bodiesTooLarge"], 1)

    def test_largestBody(self):
        """
        A body of 1 MiB exactly is read and answered.
        """
        call = json.dumps({"jsonrpc": "2.0", "method": "test.echo", "params": ["x"], "id": 1}).encode()
        body = call + b" " * (MAX_REQUEST - len(call))
        answer = self.post(body)
        self.assertTrue(answer.startswith(b"HTTP/1.1 200 "), answer[:100])
        self.assertIn(b'"result":"x"', answer)

    def test_batchTooLarge(self):
        """
        A batch of more than L{MAX_BATCH} calls is refused as an invalid
        request; none of its calls is made.
        """
        called = []
        self.methods.addMethod("test.count", lambda: called.append(1))
        batch = [{"jsonrpc": "2.0", "method": "test.count", "id": i} for i in range(MAX_BATCH + 1)]
        answer = self.post(json.dumps(batch).encode())
        self.assertIn(b"a batch holds at most 100 calls", answer)
        self.assertEqual(called, [])
        self.assertEqual(self.control.statistics["batchesTooLarge"], 1)

    def test_clearTextWarning(self):
        """
        A token on a TCP endpoint beyond loopback is warned of once at
        start: it crosses the network in the clear.  On loopback, or over
        TLS, nothing is said.
        """
        for host, description, warned in [
            ("192.0.2.1", "tcp:5080:interface=192.0.2.1", True),
            ("192.0.2.1", "ssl:5080:interface=192.0.2.1", False),
            ("127.0.0.1", "tcp:5080", False),
        ]:
            endpoint = _FakeEndpoint(host)
            control = ControlService(
                endpoint, ControlResource(self.methods, None, self.clock, token=TOKEN), description, clock=self.clock
            )
            with capturedLogs() as events:
                control.startService()
            warnings = [e for e in events if e["log_level"] == LogLevel.warn]
            self.assertEqual(len(warnings), 1 if warned else 0, description)
            if warned:
                self.assertIn("in the clear", warnings[0]["log_format"])
            control.stopService()

    def test_countersFromZero(self):
        """
        Every refusal is counted from zero, before its first event.
        """
        from dmq.control.endpoint import EVENTS

        self.start()
        self.assertEqual({cause: self.control.statistics[cause] for cause in EVENTS}, dict.fromkeys(EVENTS, 0))
        self.assertIn("noToken", EVENTS)
        self.assertIn("bodiesTooLarge", EVENTS)

    def test_tooManyConnections(self):
        """
        Past the most connections, a new one is refused, token or not.
        """
        opened = [self.connect(40000 + i) for i in range(64)]
        self.assertNotIn(None, opened)
        self.assertIsNone(self.connect(41000))
        self.assertEqual(self.control.statistics["connectionsRefused"], 1)


@implementer(IDMQPeer)
class _HostilePeer:
    peerId = "hostile"
    description = "<script>alert(1)</script> & more"

    def messageReceived(self, request, node):
        return PeerResponse(200, "OK", b"", "text/plain")

    def nodeAdded(self, node):
        pass


class _Page(HTMLParser):
    """
    What a test reads of the status page: the rows of each table by id,
    its meta refresh, its scripts and external references.
    """

    def __init__(self, html):
        HTMLParser.__init__(self)
        self.tables: Dict[Optional[str], List[List[str]]] = {}
        self.rows = []
        self.rowAttributes = []
        self.refresh = None
        self.external = []
        self._table: Optional[List[List[str]]] = None
        self._cell: Optional[List[str]] = None
        self.feed(html)

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "table":
            self._table = self.tables.setdefault(attrs.get("id"), [])
        elif tag == "tr" and self._table is not None:
            self._table.append([])
            self.rowAttributes.append(attrs)
        elif tag == "td" and self._table is not None:
            self._cell = []
        elif tag == "meta" and attrs.get("http-equiv") == "refresh":
            self.refresh = attrs.get("content")
        if tag in ("script", "link", "img", "iframe") or "src" in attrs or "href" in attrs:
            self.external.append(tag)

    def handle_endtag(self, tag):
        if tag == "td" and self._cell is not None:
            assert self._table is not None  # a cell is only opened in a table
            self._table[-1].append("".join(self._cell).strip())
            self._cell = None
        elif tag == "table":
            self._table = None

    def handle_data(self, data):
        if self._cell is not None:
            self._cell.append(data)


def getRequest() -> server.Request:
    """
    A request as twisted.web hands it to a resource, on a channel that goes
    nowhere.
    """
    from twisted.web.test.requesthelper import DummyChannel

    request = server.Request(DummyChannel(), False)
    request.method = b"GET"
    return request


class StatusPageTests(SynchronousTestCase):
    """
    The status page of a node on a bus of three on an in-memory network,
    parsed as HTML.
    """

    def setUp(self):
        self.clock = Clock()
        self.clock.advance(1_700_000_000)
        self.network = FakeNetwork(self.clock)
        hosts = ["127.0.0.11", "127.0.0.12", "127.0.0.13"]
        self.nodes = [makeNode(self.clock, self.network, host, seeds=hosts[:1] if i else []) for i, host in enumerate(hosts)]
        for node in self.nodes:
            self.addCleanup(node.stopService)
        self.network.run(3)
        self.page = StatusPage(self.nodes[0], self.clock)

    def render(self):
        request = getRequest()
        html = self.page.render_GET(request)
        self.assertEqual(request.responseHeaders.getRawHeaders(b"content-type"), [b"text/html; charset=utf-8"])
        self.assertTrue(html.startswith(b"<!DOCTYPE html>"))
        return _Page(html.decode("utf-8"))

    def test_nodes(self):
        """
        The node table has one row per node, with its state, ourselves
        marked local, and when we last heard from the others.
        """
        self.nodes[0].nodeManager.changeStatus(sip.URI("127.0.0.13", 5060), NodeStatus.DISABLED)
        self.clock.advance(7)
        page = self.render()
        rows = {row[0]: row for row in page.tables["nodes"] if row}
        self.assertEqual(set(rows), {"sip:127.0.0.11:5060", "sip:127.0.0.12:5060", "sip:127.0.0.13:5060"})
        self.assertEqual(rows["sip:127.0.0.11:5060"][1:3], ["active", "yes"])
        self.assertEqual(rows["sip:127.0.0.12:5060"][1:3], ["active", "no"])
        self.assertEqual(rows["sip:127.0.0.13:5060"][1], "disabled")
        self.assertRegex(rows["sip:127.0.0.12:5060"][5], r"^\d+ s ago$")
        self.assertIn({"class": "node", "data-status": "disabled"}, page.rowAttributes)

    def test_selfContained(self):
        """
        The page reloads itself and loads nothing else: no script, no
        external asset.
        """
        page = self.render()
        self.assertEqual(page.refresh, str(REFRESH))
        self.assertEqual(page.external, [])

    def test_peersAndRates(self):
        """
        The peer table counts requests received and sent per peer, and
        their rates per second since the first sample.
        """
        first = {row[0]: row for row in self.render().tables["peers"] if row}
        self.assertEqual(first["notification_peer"][3], "-")
        for i in range(10):
            self.nodes[1].bus.send("notification_peer", b"", self.nodes[1].nodeManager.find(sip.URI("127.0.0.11", 5060)))
        self.network.run(1)
        self.clock.advance(4)
        rows = {row[0]: row for row in self.render().tables["peers"] if row}
        received = int(rows["notification_peer"][2])
        self.assertGreaterEqual(received - int(first["notification_peer"][2]), 10)
        self.assertGreater(float(rows["notification_peer"][3]), 1.0)

    def test_escaped(self):
        """
        What a peer or the bus says is shown as text, never as markup.
        """
        self.nodes[0].addPeer(_HostilePeer())
        html = self.page.render_GET(getRequest())
        self.assertNotIn(b"<script>", html)
        self.assertIn(b"&lt;script&gt;alert(1)&lt;/script&gt; &amp; more", html)
        self.assertEqual(_Page(html.decode()).external, [])

    def test_summary(self):
        """
        The summary shows the queue depth.
        """
        html = self.page.render_GET(getRequest()).decode()
        self.assertIn('id="queue-depth">0<', html)
        self.assertIn('id="node-count">2<', html)
