# -*- test-case-name: dmq.test.test_ctl -*-
"""
Tests for L{dmq.ctl}, C{dmqctl}: run in-process, against a fake opener and,
in clearly named integration tests, against real nodes over loopback.
"""

from __future__ import annotations

import io
import json
import os
import socket
import urllib.error
from email.message import Message

from twisted.internet import defer, reactor, threads
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase, TestCase
from zope.interface import implementer

from dmq import sip
from dmq import __version__
from dmq.ctl import TOKEN_FILE_VARIABLE, Watcher, controlURL, main, metricsURL, table
from dmq.interfaces import IDMQPeer, INodeObserver, PeerResponse
from dmq.config import NodeConfig
from dmq.tap import makeNodeService
from dmq.test.test_control import controlPort

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


def run(arguments, opener, environ=None, clock=None):
    out, err = io.StringIO(), io.StringIO()
    code = main(arguments, stdout=out, stderr=err, urlopen=opener, environ=environ or {}, clock=clock)
    return code, out.getvalue(), err.getvalue()


class CommandLineTests(SynchronousTestCase):
    """
    The command line itself: where C{--control} points, options anywhere,
    the usage and version texts.
    """

    def test_controlForms(self):
        """
        C{--control} takes C{HOST:PORT}, the endpoint's base URL, or its
        full RPC URL.
        """
        for given, url in [
            ("127.0.0.11:5181", "http://127.0.0.11:5181/RPC"),
            ("[::1]:5181", "http://[::1]:5181/RPC"),
            ("http://127.0.0.11:5181", "http://127.0.0.11:5181/RPC"),
            ("http://127.0.0.11:5181/", "http://127.0.0.11:5181/RPC"),
            ("http://127.0.0.11:5181/RPC", "http://127.0.0.11:5181/RPC"),
            ("https://node.example:443/api/RPC", "https://node.example:443/api/RPC"),
        ]:
            self.assertEqual(controlURL(given), url)
            opener = FakeOpener(result([]))
            self.assertEqual(run(["--control", given, "peers"], opener)[0], 0)
            self.assertEqual(opener.requests[0][0].full_url, url)
        for bad in ("ftp://x/RPC", "http://", "host:port"):
            self.assertRaises(ValueError, controlURL, bad)

    def test_optionsAnywhere(self):
        """
        The options of dmqctl may come after the command and its
        arguments; after C{--}, they are arguments.
        """
        opener = FakeOpener(result({"code": 200, "reason": "OK", "body": "", "content_type": ""}))
        code, _, err = run(
            ["send", "echo", "sip:127.0.0.12:5060", "hi", "--control", "127.0.0.11:5181", "--timeout=3", "-t", "a/b"],
            opener,
        )
        self.assertEqual((code, err), (0, ""))
        [(request, timeout)] = opener.requests
        self.assertEqual((request.full_url, timeout), ("http://127.0.0.11:5181/RPC", 3.0))
        self.assertEqual(opener.call()["params"], ["echo", "sip:127.0.0.12:5060", "hi", "a/b"])
        opener = FakeOpener(result({"code": 200, "reason": "OK", "body": "", "content_type": ""}))
        run(["send", "echo", "sip:127.0.0.12:5060", "--", "--control"], opener)
        self.assertEqual(opener.call()["params"][2], "--control")
        self.assertEqual(opener.requests[0][0].full_url, "http://127.0.0.1:5080/RPC")

    def test_version(self):
        """
        C{--version}, anywhere, prints dmq's version, not Twisted's.
        """
        for arguments in (["--version"], ["nodes", "--version"]):
            code, out, _ = run(arguments, FakeOpener())
            self.assertEqual((code, out), (0, f"dmqctl (dmq) {__version__}\n"))

    def test_usage(self):
        """
        C{--help} starts with a C{Usage: dmqctl} line naming C{--timeout}
        among the options; a command's help has its own usage line and its
        own text, not the module's.
        """
        code, out, _ = run(["--help"], FakeOpener())
        self.assertEqual(code, 0)
        self.assertEqual(out.splitlines()[0], "Usage: dmqctl [options] COMMAND [ARGS] [command options]")
        self.assertIn("--timeout=", out)
        self.assertIn("--token-file=", out)
        self.assertIn("watch", out)
        for command, line in [
            ("nodes", "Usage: dmqctl [options] nodes"),
            ("send", "Usage: dmqctl [options] send PEER NODE BODY [--content-type T]"),
            ("watch", "Usage: dmqctl [options] watch [--interval S] [--count N]"),
        ]:
            code, out, _ = run([command, "--help"], FakeOpener())
            self.assertEqual(out.splitlines()[0], line)
            self.assertNotIn("C{", out)
            self.assertNotIn("COMMAND", out)

    def test_synopsisDocumented(self):
        """
        The synopsis of doc/operating.md names every option of dmqctl.
        """
        root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        with open(os.path.join(root, "doc", "operating.md"), encoding="utf-8") as f:
            synopsis = [line for line in f if line.strip().startswith("dmqctl [--control")][0]
        for option in ("--control", "--json", "--timeout", "--token-file"):
            self.assertIn(option, synopsis)


TOKEN = b"ctl-token-0123456789abcdef"


class TokenTests(SynchronousTestCase):
    """
    The token: from C{--token-file} or C{$DMQCTL_TOKEN_FILE}, sent as a
    bearer token.
    """

    def tokenFile(self, token=TOKEN, mode=0o600):
        path = self.mktemp()
        with open(path, "wb") as f:
            f.write(token + b"\n")
        os.chmod(path, mode)
        return path

    def authorization(self, opener):
        [(request, _)] = opener.requests
        return request.get_header("Authorization")

    def test_tokenFile(self):
        """
        C{--token-file}, before or after the command, sends the token.
        """
        for arguments in (["--token-file", self.tokenFile(), "nodes"], ["nodes", "--token-file", self.tokenFile()]):
            opener = FakeOpener(result([]))
            self.assertEqual(run(arguments, opener)[0], 0)
            self.assertEqual(self.authorization(opener), "Bearer " + TOKEN.decode())

    def test_environment(self):
        """
        Without C{--token-file}, C{$DMQCTL_TOKEN_FILE} names the file;
        C{--token-file} wins over it.
        """
        opener = FakeOpener(result([]))
        run(["metrics"], opener, environ={TOKEN_FILE_VARIABLE: self.tokenFile()})
        self.assertEqual(self.authorization(opener), "Bearer " + TOKEN.decode())
        other = b"other-token-0123456789abc"
        opener = FakeOpener(result([]))
        run(["--token-file", self.tokenFile(other), "nodes"], opener, environ={TOKEN_FILE_VARIABLE: self.tokenFile()})
        self.assertEqual(self.authorization(opener), "Bearer " + other.decode())
        opener = FakeOpener(result([]))
        run(["nodes"], opener)
        self.assertIsNone(self.authorization(opener))

    def test_badTokenFile(self):
        """
        A token file open to others, or missing, is a usage error: nothing
        is sent.
        """
        opener = FakeOpener(result([]))
        code, _, err = run(["nodes", "--token-file", self.tokenFile(mode=0o644)], opener)
        self.assertEqual(code, 2)
        self.assertIn("chmod 600", err)
        code, _, err = run(["nodes"], opener, environ={TOKEN_FILE_VARIABLE: self.mktemp()})
        self.assertEqual(code, 2)
        self.assertIn(TOKEN_FILE_VARIABLE, err)
        self.assertEqual(opener.requests, [])

    def test_unauthorized(self):
        """
        A 401 says how to give the token, or that it is wrong.
        """
        refusal = urllib.error.HTTPError("http://127.0.0.1:5080/RPC", 401, "Unauthorized", Message(), None)
        code, _, err = run(["nodes"], FakeOpener(error=refusal))
        self.assertEqual(code, 1)
        self.assertIn("--token-file or $DMQCTL_TOKEN_FILE", err)
        code, _, err = run(["nodes", "--token-file", self.tokenFile()], FakeOpener(error=refusal))
        self.assertIn("a wrong token", err)


class WatchTests(SynchronousTestCase):
    """
    C{dmqctl watch}: the node table every second, on a L{Clock}.
    """

    def test_redraws(self):
        """
        A frame at once, then one a second, each with the whole table.
        """
        clock = Clock()
        opener = FakeOpener(result(NODES))
        out = io.StringIO()
        code = main(["watch", "--control", "127.0.0.11:5181"], out, io.StringIO(), opener, {}, clock)
        self.assertEqual(code, 0)
        self.assertEqual(len(opener.requests), 1)
        for second in range(5):
            clock.advance(1)
        self.assertEqual(len(opener.requests), 6)
        self.assertEqual(out.getvalue().count("dmqctl watch http://127.0.0.11:5181/RPC  every 1 s"), 6)
        self.assertEqual(out.getvalue().count("127.0.0.12  5060"), 6)
        self.assertEqual(len(clock.getDelayedCalls()), 1)

    def test_count(self):
        """
        C{--count N} stops after N frames, leaving no timer.
        """
        clock = Clock()
        opener = FakeOpener(result(NODES))
        main(["watch", "--count", "3", "--interval", "2"], io.StringIO(), io.StringIO(), opener, {}, clock)
        clock.pump([2] * 5)
        self.assertEqual(len(opener.requests), 3)
        self.assertEqual(clock.getDelayedCalls(), [])

    def test_unreachable(self):
        """
        A frame that cannot be fetched says why, and the next tries again.
        """
        clock = Clock()
        out = io.StringIO()
        fetched = []

        def fetch():
            fetched.append(1)
            if len(fetched) == 1:
                from dmq.ctl import ControlError

                raise ControlError("cannot reach the control endpoint")
            return NODES

        watcher = Watcher(fetch, out, clock, 1.0, title="t")
        done = watcher.start()
        clock.advance(1)
        watcher.stop()
        self.successResultOf(done)
        self.assertIn("dmqctl: cannot reach the control endpoint", out.getvalue())
        self.assertIn("127.0.0.12", out.getvalue())
        self.assertEqual(watcher.frames, 2)

    def test_terminal(self):
        """
        On a terminal, each frame clears the screen first.
        """

        class Terminal(io.StringIO):
            def isatty(self):
                return True

        clock = Clock()
        out = Terminal()
        Watcher(lambda: NODES, out, clock, 1.0, count=2).start()
        clock.advance(1)
        self.assertEqual(out.getvalue().count("\x1b[H\x1b[2J"), 2)

    def test_badOptions(self):
        """
        An interval out of range, or a negative count, is a usage error.
        """
        for arguments in (["watch", "--interval", "0"], ["watch", "--count", "-1"], ["watch", "--interval", "x"]):
            self.assertEqual(run(arguments, FakeOpener(), clock=Clock())[0], 2)


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
        error = urllib.error.HTTPError("http://127.0.0.1:5080/x", 404, "Not Found", Message(), io.BytesIO())
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

    # trial waits on the Deferred setUp returns; unittest's stub says None.
    @defer.inlineCallbacks
    def setUp(self):  # type: ignore[override]
        self.a = makeNodeService(
            reactor,
            NodeConfig(
                serverAddress=sip.URI("127.0.0.11", 25080),
                pingInterval=60,
                control="tcp:0:interface=127.0.0.11",
            ),
        )
        activated: defer.Deferred[object] = defer.Deferred()

        @implementer(INodeObserver)
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
                notificationAddresses=(sip.URI("127.0.0.11", 25080),),
            ),
        )
        self.b.bus.registerPeer(EchoPeer())
        self.b.startService()
        self.addCleanup(self.b.stopService)
        yield activated.addTimeout(5, reactor)
        self.url = f"http://127.0.0.11:{controlPort(self.a)}/RPC"

    @defer.inlineCallbacks
    def dmqctl(self, *arguments):
        out, err = io.StringIO(), io.StringIO()
        code = yield threads.deferToThread(main, ["--control", self.url, *arguments], out, err)
        return code, out.getvalue(), err.getvalue()

    @defer.inlineCallbacks
    def test_baseURL(self):
        """
        C{dmqctl --control HOST:PORT nodes} and the base URL, options after
        the command, reach the endpoint's RPC URL.
        """
        address = self.url[len("http://"):-len("/RPC")]
        for control in (address, "http://" + address):
            out, err = io.StringIO(), io.StringIO()
            code = yield threads.deferToThread(main, ["nodes", "--control", control], out, err)
            self.assertEqual((code, err.getvalue()), (0, ""))
            self.assertIn("127.0.0.12", out.getvalue())

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


class UnixSocketIntegrationTests(TestCase):
    """
    Integration: C{dmqctl --control unix:PATH} against a node whose control
    endpoint is a UNIX socket, created mode 600 by default.
    """

    def setUp(self):
        import tempfile

        # Short: a UNIX socket's path has a limit of about 100 bytes.
        directory = tempfile.mkdtemp(prefix="dmqctl")
        self.addCleanup(os.rmdir, directory)
        self.path = os.path.join(directory, "c.sock")
        self.node = makeNodeService(
            reactor, NodeConfig(serverAddress=sip.URI("127.0.0.11", 5060), control="unix:" + self.path), listen=False
        )
        self.node.startService()
        self.addCleanup(self.node.stopService)

    @defer.inlineCallbacks
    def test_unix(self):
        """
        The socket is its owner's only, and C{dmqctl} reaches it: a call,
        and the metrics beside it.
        """
        self.assertEqual(os.stat(self.path).st_mode & 0o777, 0o600)
        for command in (["nodes"], ["metrics"]):
            out, err = io.StringIO(), io.StringIO()
            code = yield threads.deferToThread(main, ["--control", "unix:" + self.path, *command], out, err)
            self.assertEqual((code, err.getvalue()), (0, ""))
        self.assertIn("dmq_queue_depth", out.getvalue())
        out, err = io.StringIO(), io.StringIO()
        code = yield threads.deferToThread(main, ["--control", "unix:" + self.path + ".none", "nodes"], out, err)
        self.assertEqual(code, 1)
        self.assertIn("cannot reach the control endpoint", err.getvalue())
