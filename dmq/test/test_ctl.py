# -*- test-case-name: dmq.test.test_ctl -*-
"""
Tests for L{dmq.ctl}, C{dmqctl}: run in-process, against a fake opener and,
in clearly named integration tests, against real nodes over loopback.
"""

from __future__ import annotations

import io
import json
import socket
import urllib.error

from twisted.internet import defer, reactor, threads
from twisted.trial.unittest import SynchronousTestCase, TestCase
from zope.interface import implementer

from dmq import sip
from dmq.ctl import main, metricsURL, table
from dmq.interfaces import IDMQPeer, PeerResponse
from dmq.config import NodeConfig
from dmq.tap import makeNodeService

NODES = [
    {
        "host": "127.0.0.12",
        "port": "5060",
        "proto": "*",
        "resolved_ip": "127.0.0.12",
        "status": "disabled",
        "last_notification": 0,
        "local": 0,
        "fail_count": 1,
        "uri": "sip:127.0.0.12:5060",
    },
    {
        "host": "127.0.0.11",
        "port": "5060",
        "proto": "*",
        "resolved_ip": "127.0.0.11",
        "status": "active",
        "last_notification": 0,
        "local": 1,
        "fail_count": 0,
        "uri": "sip:127.0.0.11:5060",
    },
]


class FakeOpener:
    """
    Stands for C{urllib.request.urlopen}: records the requests and answers
    as told.
    """

    def __init__(self, answer=None, error=None):
        self.answer = answer
        self.error = error
        self.requests = []

    def __call__(self, request, timeout):
        self.requests.append((request, timeout))
        if self.error is not None:
            raise self.error
        data = self.answer if isinstance(self.answer, bytes) else json.dumps(self.answer).encode()
        return io.BytesIO(data)

    def call(self):
        """
        The JSON-RPC call of the only request.
        """
        [(request, _)] = self.requests
        return json.loads(request.data)


def result(value):
    return {"jsonrpc": "2.0", "result": value, "id": 1}


def run(arguments, opener):
    out, err = io.StringIO(), io.StringIO()
    code = main(arguments, stdout=out, stderr=err, urlopen=opener)
    return code, out.getvalue(), err.getvalue()


class TableTests(SynchronousTestCase):
    """
    L{table}: aligned columns.
    """

    def test_aligned(self):
        """
        Each column is as wide as its widest cell, two spaces apart, with no
        trailing space.
        """
        self.assertEqual(
            table(["A", "LONGER"], [["wide cell", 1], ["x", ""]]),
            "A          LONGER\nwide cell  1\nx\n",
        )


class CommandTests(SynchronousTestCase):
    """
    Each command makes its RPC call and prints the result.
    """

    def test_nodes(self):
        """
        C{nodes} calls C{dmq.list_nodes} on the default URL and prints a
        table.
        """
        opener = FakeOpener(result(NODES))
        code, out, err = run(["nodes"], opener)
        self.assertEqual((code, err), (0, ""))
        [(request, timeout)] = opener.requests
        self.assertEqual(request.full_url, "http://127.0.0.1:5080/RPC")
        self.assertEqual(request.get_method(), "POST")
        self.assertEqual(request.get_header("Content-type"), "application/json")
        self.assertEqual(timeout, 40.0)
        self.assertEqual(
            opener.call(), {"jsonrpc": "2.0", "method": "dmq.list_nodes", "params": [], "id": 1}
        )
        self.assertEqual(
            out,
            "HOST        PORT  PROTO  RESOLVED_IP  STATUS    LOCAL  FAIL_COUNT  LAST_NOTIFICATION\n"
            "127.0.0.12  5060  *      127.0.0.12   disabled  no     1           -\n"
            "127.0.0.11  5060  *      127.0.0.11   active    yes    0           -\n",
        )

    def test_json(self):
        """
        C{--json}, before or after the command, prints the result as JSON.
        """
        for arguments in (["--json", "nodes"], ["nodes", "--json"]):
            code, out, _ = run(arguments, FakeOpener(result(NODES)))
            self.assertEqual(code, 0)
            self.assertEqual(json.loads(out), NODES)

    def test_controlURL(self):
        """
        C{--control} names the endpoint.
        """
        opener = FakeOpener(result([]))
        run(["--control", "http://127.0.0.11:5081/RPC", "--timeout", "3", "peers"], opener)
        [(request, timeout)] = opener.requests
        self.assertEqual((request.full_url, timeout), ("http://127.0.0.11:5081/RPC", 3.0))

    def test_peers(self):
        """
        C{peers} prints the peers.
        """
        code, out, _ = run(
            ["peers"], FakeOpener(result([{"peer_id": "notification_peer", "description": "DMQ membership"}]))
        )
        self.assertEqual(out, "PEER               DESCRIPTION\nnotification_peer  DMQ membership\n")

    def test_administration(self):
        """
        C{add}, C{remove} and C{status} make their calls and print the
        answer.
        """
        for arguments, method, params in [
            (["add", "sip:127.0.0.13:5060"], "dmq.add", ["sip:127.0.0.13:5060"]),
            (["remove", "sip:127.0.0.13:5060"], "dmq.remove", ["sip:127.0.0.13:5060"]),
            (
                ["status", "sip:127.0.0.13:5060", "disabled"],
                "dmq.change_status",
                ["sip:127.0.0.13:5060", "disabled"],
            ),
        ]:
            opener = FakeOpener(result("Ok. DMQ node removed."))
            code, out, _ = run(arguments, opener)
            self.assertEqual((code, out), (0, "Ok. DMQ node removed.\n"))
            call = opener.call()
            self.assertEqual((call["method"], call["params"]), (method, params))

    def test_send(self):
        """
        C{send} prints the reply's status line and body, and exits 1 when
        the reply is not 2xx.
        """
        opener = FakeOpener(result({"code": 200, "reason": "OK", "body": "hi", "content_type": "text/plain"}))
        code, out, _ = run(["send", "echo", "sip:127.0.0.12:5060", "hi", "--content-type", "application/json"], opener)
        self.assertEqual((code, out), (0, "200 OK\nhi\n"))
        self.assertEqual(opener.call()["params"], ["echo", "sip:127.0.0.12:5060", "hi", "application/json"])
        opener = FakeOpener(result({"code": 408, "reason": "Request Timeout", "body": "", "content_type": ""}))
        code, out, _ = run(["send", "echo", "sip:127.0.0.12:5060", "hi"], opener)
        self.assertEqual((code, out), (1, "408 Request Timeout\n"))
        self.assertEqual(opener.call()["params"][3], "text/plain")

    def test_dashBody(self):
        """
        After C{--}, a body may start with C{-}.
        """
        opener = FakeOpener(result({"code": 200, "reason": "OK", "body": "", "content_type": ""}))
        code, _, _ = run(["send", "-t", "application/json", "echo", "sip:127.0.0.12:5060", "--", "-1"], opener)
        self.assertEqual(code, 0)
        self.assertEqual(opener.call()["params"], ["echo", "sip:127.0.0.12:5060", "-1", "application/json"])

    def test_bcast(self):
        """
        C{bcast} prints one row per node, and exits 1 unless all answered
        2xx.
        """
        replies = [
            {"node": "sip:127.0.0.12:5060", "code": 200, "reason": "OK", "body": "a\nb", "content_type": "text/plain"},
            {"node": "sip:127.0.0.13:5060", "code": None, "reason": None, "body": "", "error": "bus full"},
        ]
        code, out, _ = run(["bcast", "echo", "hi"], FakeOpener(result(replies)))
        self.assertEqual(
            out,
            "NODE                 CODE  REASON    BODY\n"
            "sip:127.0.0.12:5060  200   OK        a\\nb\n"
            "sip:127.0.0.13:5060  -     bus full\n",
        )
        self.assertEqual(code, 1)
        code, out, _ = run(["bcast", "echo", "hi"], FakeOpener(result([])))
        self.assertEqual((code, out), (0, "no active node\n"))

    def test_metrics(self):
        """
        C{metrics} fetches C{/metrics} beside the RPC URL; with C{--json},
        as samples.
        """
        text = b'# HELP dmq_nodes The other nodes.\n# TYPE dmq_nodes gauge\ndmq_nodes{status="active"} 2.0\n'
        opener = FakeOpener(text)
        code, out, _ = run(["--control", "http://127.0.0.11:5080/RPC", "metrics"], opener)
        self.assertEqual((code, out), (0, text.decode()))
        [(request, _)] = opener.requests
        self.assertEqual((request.full_url, request.get_method()), ("http://127.0.0.11:5080/metrics", "GET"))
        code, out, _ = run(["metrics", "--json"], FakeOpener(text))
        self.assertEqual(json.loads(out), [{"name": "dmq_nodes", "labels": {"status": "active"}, "value": 2.0}])

    def test_metricsURL(self):
        """
        The metrics URL replaces the RPC URL's path.
        """
        self.assertEqual(metricsURL("http://[::1]:5080/RPC?x=1"), "http://[::1]:5080/metrics")


class FailureTests(SynchronousTestCase):
    """
    Failures are one line on stderr and an exit code, never a traceback.
    """

    def assertOneLine(self, opener, arguments, fragment, code=1):
        exit, out, err = run(arguments, opener)
        self.assertEqual(exit, code)
        self.assertEqual(out, "")
        self.assertTrue(err.startswith("dmqctl: "), err)
        self.assertIn(fragment, err)
        self.assertNotIn("Traceback", err)
        return err

    def test_refused(self):
        """
        A refused connection is one line and exit 1.
        """
        opener = FakeOpener(error=urllib.error.URLError(ConnectionRefusedError(111, "Connection refused")))
        err = self.assertOneLine(opener, ["nodes"], "cannot reach the control endpoint at http://127.0.0.1:5080/RPC")
        self.assertEqual(err.count("\n"), 1)

    def test_downEndpoint(self):
        """
        Integration: a real port nobody listens on is one line and exit 1.
        """
        probe = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        probe.bind(("127.0.0.11", 0))
        port = probe.getsockname()[1]
        probe.close()
        out, err = io.StringIO(), io.StringIO()
        code = main(["--control", f"http://127.0.0.11:{port}/RPC", "nodes"], stdout=out, stderr=err)
        self.assertEqual(code, 1)
        self.assertEqual(err.getvalue().count("\n"), 1)
        self.assertIn("Connection refused", err.getvalue())

    def test_timeout(self):
        """
        No answer in time is one line and exit 1.
        """
        self.assertOneLine(FakeOpener(error=TimeoutError("timed out")), ["nodes"], "timed out")

    def test_httpError(self):
        """
        An HTTP error (a wrong path, say) is one line and exit 1.
        """
        error = urllib.error.HTTPError("http://127.0.0.1:5080/x", 404, "Not Found", {}, io.BytesIO())
        self.assertOneLine(FakeOpener(error=error), ["nodes"], "HTTP 404 Not Found")

    def test_rpcError(self):
        """
        A JSON-RPC error is one line and exit 1.
        """
        answer = {"jsonrpc": "2.0", "error": {"code": 500, "message": "Node is already added"}, "id": 1}
        self.assertOneLine(
            FakeOpener(answer), ["add", "sip:127.0.0.12:5060"], "dmq.add: error 500: Node is already added"
        )

    def test_notJSONRPC(self):
        """
        An answer that is not JSON-RPC is one line and exit 1.
        """
        self.assertOneLine(FakeOpener(b"<html>"), ["nodes"], "did not answer JSON")
        self.assertOneLine(FakeOpener({"x": 1}), ["nodes"], "did not answer JSON-RPC")

    def test_usage(self):
        """
        Usage errors exit 2.
        """
        for arguments in ([], ["frobnicate"], ["add"], ["send", "echo"], ["--control", "ftp://x/RPC", "nodes"]):
            self.assertOneLine(FakeOpener(result([])), arguments, "", code=2)


@implementer(IDMQPeer)
class EchoPeer:
    peerId = "echo"
    description = "echoes"

    def messageReceived(self, request, node):
        return PeerResponse(200, "OK", request.body, "text/plain")

    def nodeAdded(self, node):
        pass


class DMQCtlIntegrationTests(TestCase):
    """
    Integration: C{dmqctl} against two real nodes on loopback (UDP between
    them, HTTP to the first's control endpoint), run in a thread so the
    reactor serves it.
    """

    @defer.inlineCallbacks
    def setUp(self):
        self.a = makeNodeService(
            reactor,
            NodeConfig(
                serverAddress=sip.URI("127.0.0.11", 25080),
                pingInterval=60,
                control="tcp:0:interface=127.0.0.11",
            ),
        )
        activated = defer.Deferred()

        class Observer:
            def nodeActivated(self, node):
                if not activated.called:
                    activated.callback(node)

            def nodeDeactivated(self, node):
                pass

        self.a.nodeManager.addObserver(Observer())
        self.a.startService()
        self.addCleanup(self.a.stopService)
        self.b = makeNodeService(
            reactor,
            NodeConfig(
                serverAddress=sip.URI("127.0.0.12", 25080),
                notificationAddresses=[sip.URI("127.0.0.11", 25080)],
            ),
        )
        self.b.bus.registerPeer(EchoPeer())
        self.b.startService()
        self.addCleanup(self.b.stopService)
        yield activated.addTimeout(5, reactor)
        self.url = f"http://127.0.0.11:{self.a.control.port.getHost().port}/RPC"

    @defer.inlineCallbacks
    def dmqctl(self, *arguments):
        out, err = io.StringIO(), io.StringIO()
        code = yield threads.deferToThread(main, ["--control", self.url, *arguments], out, err)
        return code, out.getvalue(), err.getvalue()

    @defer.inlineCallbacks
    def test_nodes(self):
        """
        C{dmqctl nodes} lists both nodes.
        """
        code, out, err = yield self.dmqctl("nodes")
        self.assertEqual((code, err), (0, ""))
        lines = out.splitlines()
        self.assertEqual(lines[0].split(), ["HOST", "PORT", "PROTO", "RESOLVED_IP", "STATUS", "LOCAL", "FAIL_COUNT", "LAST_NOTIFICATION"])
        self.assertEqual(lines[1].split()[:6], ["127.0.0.12", "25080", "*", "127.0.0.12", "active", "no"])
        self.assertEqual(lines[2].split()[:6], ["127.0.0.11", "25080", "*", "127.0.0.11", "active", "yes"])

    @defer.inlineCallbacks
    def test_send(self):
        """
        C{dmqctl send} goes over the bus and prints the other node's reply.
        """
        code, out, err = yield self.dmqctl("send", "echo", "sip:127.0.0.12:25080", "hello")
        self.assertEqual((code, out, err), (0, "200 OK\nhello\n", ""))
