# -*- test-case-name: dmq.test.test_control -*-
"""
Tests for L{dmq.control} and L{dmq.metrics}: the JSON-RPC layer, the DMQ
methods on a bus of nodes on an in-memory network, the metrics, and, in
clearly named integration tests, the endpoint over real loopback HTTP.
"""

from __future__ import annotations

import json
import random

import attr

from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families
from twisted.internet import defer, reactor
from twisted.internet.address import IPv4Address
from twisted.internet.error import CannotListenError, ConnectionDone
from twisted.internet.interfaces import IListeningPort, IStreamServerEndpoint
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.logger import LogLevel, capturedLogs
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase, TestCase
from twisted.web.client import Agent, HTTPConnectionPool, readBody
from twisted.web.http_headers import Headers
from zope.interface import implementer

from dmq import sip
from dmq.control import (
    APPLICATION_ERROR,
    INTERNAL_ERROR,
    INVALID_PARAMS,
    INVALID_REQUEST,
    JSONRPC,
    MAX_BATCH,
    MAX_CONNECTIONS,
    METHOD_NOT_FOUND,
    PARSE_ERROR,
    ControlResource,
    ControlService,
    RPCError,
    RPCMethods,
)
from dmq.control.endpoint import EVENTS
from dmq.control.listener import LazyControlService
from dmq.interfaces import IDMQPeer, PeerResponse
from dmq.metrics import HandlerLatency
from dmq.service import DMQNodeService
from dmq.config import NodeConfig
from dmq.tap import makeNodeService
from dmq.test.fakenet import FakeNetwork, crashNode, makeNode

# Kamailio 5.6.3's answer to dmq.list_nodes over jsonrpcs (rpc-outputs.txt):
# our entries must have these fields, with these types.
KAMAILIO_NODE = {
    "host": "127.0.0.1",
    "port": "5063",
    "proto": "*",
    "resolved_ip": "127.0.0.1",
    "status": "active",
    "last_notification": 0,
    "local": 0,
}


@implementer(IDMQPeer)
class EchoPeer:
    """
    Answers every request with its body.
    """

    description = "echoes"

    def __init__(self, peerId="echo"):
        self.peerId = peerId
        self.received = []

    def messageReceived(self, request, node):
        self.received.append(request)
        return PeerResponse(200, "OK", request.body, "text/plain")

    def nodeAdded(self, node):
        pass


def handle(rpc, message):
    """
    Give C{message} (JSON-able, or bytes as they are) to C{rpc}; the
    L{Deferred <twisted.internet.defer.Deferred>} of the decoded answer, or of C{None}.
    """
    data = message if isinstance(message, bytes) else json.dumps(message).encode("utf-8")
    d = rpc.handle(data)
    d.addCallback(lambda answer: None if answer is None else json.loads(answer))
    return d


def controlPort(node: DMQNodeService) -> int:
    """
    The port C{node}'s control endpoint listens on, which the test knows it does.
    """
    control = node.control
    assert control is not None and control.port is not None
    address = control.port.getHost()
    assert isinstance(address, IPv4Address)
    return address.port


def strictJSON(data):
    """
    Decode C{data} as JSON, refusing C{NaN} and the infinities as JSON
    does.
    """

    def refuse(name):
        raise ValueError(f"{name} is not JSON")

    return json.loads(data, parse_constant=refuse)


def request(method, *params, id=1, **named):
    message = {"jsonrpc": "2.0", "method": method, "id": id}
    if params or not named:
        message["params"] = list(params)
    if named:
        message["params"] = named
    return message


class RPCMethodsTests(SynchronousTestCase):
    """
    L{RPCMethods}: the table a peer adds its methods to.
    """

    def setUp(self):
        self.methods = RPCMethods()
        self.methods.addMethod("test.join", lambda a, b="-": f"{a}{b}", "Join two strings: a [b]")

    def test_call(self):
        """
        Parameters are given by position or by name.
        """
        self.assertEqual(self.successResultOf(self.methods.call("test.join", ["x", "y"])), "xy")
        self.assertEqual(self.successResultOf(self.methods.call("test.join", {"b": "y", "a": "x"})), "xy")
        self.assertEqual(self.successResultOf(self.methods.call("test.join", ["x"])), "x-")

    def test_badParams(self):
        """
        Parameters that do not fit the method are C{INVALID_PARAMS}, with
        its usage.
        """
        cases: list[list[object] | dict[str, object]] = [[], ["x", "y", "z"], {"c": 1}]
        for params in cases:
            error = self.failureResultOf(self.methods.call("test.join", params), RPCError).value
            self.assertEqual(error.code, INVALID_PARAMS)
            self.assertIn("usage: test.join a [b]", error.message)

    def test_unknown(self):
        """
        An unknown method is C{METHOD_NOT_FOUND}.
        """
        error = self.failureResultOf(self.methods.call("test.nothing", []), RPCError).value
        self.assertEqual(error.code, METHOD_NOT_FOUND)

    def test_duplicate(self):
        """
        A name is added once.
        """
        self.assertRaises(ValueError, self.methods.addMethod, "test.join", lambda: None)
        self.methods.removeMethod("test.join")
        self.methods.addMethod("test.join", lambda: None)
        self.assertEqual(self.methods.names(), ["test.join"])


class JSONRPCTests(SynchronousTestCase):
    """
    L{JSONRPC}: JSON-RPC 2.0 requests, answers and errors, transport aside.
    """

    def setUp(self):
        methods = RPCMethods()
        methods.addMethod("test.echo", lambda value: value)
        methods.addMethod("test.later", lambda: defer.succeed("later"))
        methods.addMethod("test.refuse", self.refuse)
        methods.addMethod("test.bug", lambda: 1 / 0)
        methods.addMethod("test.bytes", lambda: b"not JSON")
        methods.addMethod("test.float", lambda name: [float(name)])
        self.rpc = JSONRPC(methods, Clock())

    def refuse(self):
        raise RPCError(404, "No such htable")

    def answer(self, message):
        return self.successResultOf(handle(self.rpc, message))

    def assertError(self, message, code, id=None, fragment=""):
        answer = self.answer(message)
        self.assertEqual(answer["jsonrpc"], "2.0")
        self.assertEqual(answer["id"], id)
        self.assertEqual(answer["error"]["code"], code)
        self.assertIn(fragment, answer["error"]["message"])
        self.assertNotIn("result", answer)

    def test_result(self):
        """
        A call is answered with its result and its id.
        """
        self.assertEqual(
            self.answer(request("test.echo", {"a": [1, "é"]}, id="x")),
            {"jsonrpc": "2.0", "result": {"a": [1, "é"]}, "id": "x"},
        )
        self.assertEqual(self.answer(request("test.later"))["result"], "later")

    def test_byName(self):
        """
        Parameters may be given by name.
        """
        self.assertEqual(self.answer(request("test.echo", value=3))["result"], 3)

    def test_parseError(self):
        """
        A body that is not JSON, or not UTF-8, is a parse error, logged as a
        warning without a traceback.
        """
        with capturedLogs() as events:
            self.assertError(b"{", PARSE_ERROR, fragment="Parse error")
            self.assertError(b'{"method": "\xff"}', PARSE_ERROR)
        self.assertTrue(events)
        for event in events:
            self.assertEqual(event["log_level"], LogLevel.warn)
            self.assertNotIn("log_failure", event)

    def test_invalidRequest(self):
        """
        Requests of the wrong shape are invalid requests, with the id when
        it could be read.
        """
        self.assertError([], INVALID_REQUEST, fragment="empty batch")
        self.assertError(5, INVALID_REQUEST)
        self.assertError({"method": 5, "id": 7}, INVALID_REQUEST, id=7, fragment="method")
        self.assertError({"jsonrpc": "1.0", "method": "test.echo", "id": 7}, INVALID_REQUEST, id=7)
        self.assertError({"method": "test.echo", "id": [1]}, INVALID_REQUEST, fragment="id")

    def test_invalidParams(self):
        """
        Params that are neither an array nor an object, or do not fit the
        method, are invalid params.
        """
        self.assertError({"method": "test.echo", "params": "x", "id": 1}, INVALID_PARAMS, id=1)
        self.assertError(request("test.echo"), INVALID_PARAMS, id=1, fragment="usage: test.echo value")

    def test_methodNotFound(self):
        """
        An unknown method is method not found.
        """
        self.assertError(request("dmq.nothing"), METHOD_NOT_FOUND, id=1, fragment="dmq.nothing")

    def test_refused(self):
        """
        An L{RPCError} is answered with its code and message, as Kamailio's
        C{rpc->fault()}.
        """
        self.assertError(request("test.refuse"), 404, id=1, fragment="No such htable")

    def test_bug(self):
        """
        Any other exception is an internal error, logged with its traceback.
        """
        self.assertError(request("test.bug"), INTERNAL_ERROR, id=1)
        self.assertEqual(len(self.flushLoggedErrors(ZeroDivisionError)), 1)

    def test_notJSONResult(self):
        """
        A result that cannot be written as JSON is an internal error.
        """
        self.assertError(request("test.bytes"), INTERNAL_ERROR, id=1)
        self.assertEqual(len(self.flushLoggedErrors(TypeError)), 1)

    def test_nonFiniteNumbers(self):
        """
        C{NaN}, C{Infinity} and numbers beyond a double, which Python reads
        but JSON does not have, are parse errors: an id is never echoed as
        one, and every answer is strict JSON.
        """
        for body in [
            b'{"jsonrpc":"2.0","method":"test.echo","params":[1],"id":NaN}',
            b'{"jsonrpc":"2.0","method":"test.echo","params":[1],"id":Infinity}',
            b'{"jsonrpc":"2.0","method":"test.echo","params":[1],"id":-Infinity}',
            b'{"jsonrpc":"2.0","method":"test.echo","params":[1],"id":1e999}',
            b'{"jsonrpc":"2.0","method":"test.echo","params":[-1e999],"id":1}',
            b'[{"jsonrpc":"2.0","method":"test.echo","params":[1],"id":NaN}]',
        ]:
            answer = strictJSON(self.successResultOf(self.rpc.handle(body)))
            self.assertEqual(answer["error"]["code"], PARSE_ERROR, body)
            self.assertIsNone(answer["id"])
        self.assertEqual(self.answer(request("test.echo", 1e308, id=1.5))["id"], 1.5)

    def test_nonFiniteResult(self):
        """
        A result holding C{NaN} or an infinity is not JSON: an internal
        error, answered in strict JSON; its traceback is logged once a
        minute per method, and each is counted.
        """
        for name in ["nan", "inf", "-inf"]:
            body = json.dumps(request("test.float", name)).encode()
            answer = strictJSON(self.successResultOf(self.rpc.handle(body)))
            self.assertEqual(answer["error"]["code"], INTERNAL_ERROR)
        self.assertEqual(len(self.flushLoggedErrors(TypeError)), 1)
        self.assertEqual(self.rpc.statistics["internalErrors"], 3)

    def test_notification(self):
        """
        A call without an id gets no answer, even when it fails.
        """
        self.assertIsNone(self.answer({"jsonrpc": "2.0", "method": "test.echo", "params": [1]}))
        self.assertIsNone(self.answer({"jsonrpc": "2.0", "method": "test.refuse"}))

    def test_batch(self):
        """
        A batch is answered with one answer per call that has an id, in
        order; a batch of notifications gets no answer.
        """
        answers = self.answer(
            [
                request("test.echo", 1, id=1),
                {"jsonrpc": "2.0", "method": "test.echo", "params": [2]},
                request("test.refuse", id=3),
                7,
            ]
        )
        self.assertEqual(
            answers,
            [
                {"jsonrpc": "2.0", "result": 1, "id": 1},
                {"jsonrpc": "2.0", "error": {"code": 404, "message": "No such htable"}, "id": 3},
                {
                    "jsonrpc": "2.0",
                    "error": {"code": INVALID_REQUEST, "message": "Invalid Request: a call is a JSON object"},
                    "id": None,
                },
            ],
        )
        self.assertIsNone(self.answer([{"jsonrpc": "2.0", "method": "test.echo", "params": [2]}]))


class HostileInputTests(SynchronousTestCase):
    """
    Bad JSON-RPC input is an answer, never a traceback (issue 14).
    """

    def setUp(self):
        methods = RPCMethods()
        methods.addMethod("test.echo", lambda value: value)
        self.rpc = JSONRPC(methods, Clock())

    def answer(self, body):
        return strictJSON(self.successResultOf(self.rpc.handle(body)))

    def test_loneSurrogate(self):
        """
        A lone surrogate in params is invalid params; in the method, the id
        or a params key, an invalid request or invalid params; logged once,
        as a warning at most, without a traceback.
        """
        with capturedLogs() as events:
            for body, code, callId in [
                (b'{"jsonrpc":"2.0","method":"test.echo","params":["\\ud800"],"id":1}', INVALID_PARAMS, 1),
                (b'{"jsonrpc":"2.0","method":"test.echo","params":{"value":["\\udfff x"]},"id":2}',
                 INVALID_PARAMS, 2),
                (b'{"jsonrpc":"2.0","method":"test.echo","params":{"\\ud800":1},"id":3}', INVALID_PARAMS, 3),
                (b'{"jsonrpc":"2.0","method":"test.\\ud800","params":[1],"id":4}', INVALID_REQUEST, 4),
                (b'{"jsonrpc":"2.0","method":"test.echo","params":[1],"id":"\\ud800"}', INVALID_REQUEST, None),
                (b'[{"jsonrpc":"2.0","method":"test.echo","params":["\\ud800"],"id":5}]', INVALID_PARAMS, 5),
            ]:
                answer = self.answer(body)
                if isinstance(answer, list):
                    [answer] = answer
                self.assertEqual((answer["error"]["code"], answer["id"]), (code, callId), body)
        for event in events:
            self.assertNotIn("log_failure", event)
        self.assertEqual(self.flushLoggedErrors(), [])
        # A valid surrogate pair is text like any other.
        answer = self.answer(b'{"jsonrpc":"2.0","method":"test.echo","params":["\\ud83d\\ude00"],"id":1}')
        self.assertEqual(answer["result"], "\U0001f600")

    def test_batchBound(self):
        """
        A batch of more than L{MAX_BATCH} calls is an invalid request, and
        counted; one of L{MAX_BATCH} is answered.
        """
        self.assertEqual(MAX_BATCH, 100)
        call = {"jsonrpc": "2.0", "method": "test.echo", "params": [1], "id": 1}
        answer = self.answer(json.dumps([call] * 101).encode())
        self.assertEqual(answer["error"]["code"], INVALID_REQUEST)
        self.assertIn("at most 100 calls", answer["error"]["message"])
        self.assertEqual(self.rpc.statistics["batchesTooLarge"], 1)
        self.assertEqual(len(self.answer(json.dumps([call] * 100).encode())), 100)

    def test_warningsRateLimited(self):
        """
        A thousand bad requests log one warning per cause.
        """
        with capturedLogs() as events:
            for i in range(1000):
                self.rpc.handle(b"{")
                self.rpc.handle(b"5")
        self.assertEqual(len(events), 2)
        self.assertEqual(self.rpc.statistics["parseErrors"], 1000)


def randomJSON(rng, depth=0):
    """
    A random JSON value, strings drawn to hurt: lone surrogates, NUL,
    control characters, long text, and the names of a node's methods.
    """
    kind = rng.randrange(9) if depth < 4 else rng.choice((0, 1, 2, 3, 4, 4, 4, 4, 4, 4))
    if kind == 0:
        return None
    if kind == 1:
        return rng.choice([True, False])
    if kind == 2:
        return rng.choice([0, -1, 2**31, 2**63, -(2**70), 10**30, 7])
    if kind == 3:
        return rng.choice([0.5, -1e308, 1e-300, 3.0])
    if kind == 4:
        return rng.choice([
            "", "kdmq", "local", "sip:127.0.0.12:5060", "sip:[::1]:5060", "\ud800", "a\x00b", "\r\n",
            "é" * 100, "x" * 70000, "^(a+)+$", "a{99999999999}", "(" * 300, "active", "disabled", "htable",
            "sip:127.0.0.1e9:5060;transport=é", "application/json", "[[:digit:]]+",
        ])
    if kind in (5, 6):
        return [randomJSON(rng, depth + 1) for i in range(rng.randrange(5))]
    return {rng.choice(["uri", "peer", "body", "value", "x", "\ud800"]): randomJSON(rng, depth + 1)
            for i in range(rng.randrange(4))}


class FuzzTests(SynchronousTestCase):
    """
    Random requests to every method of a node with an htable never get a
    traceback, and every answer is strict JSON.
    """

    def test_fuzz(self):
        """
        Two thousand seeded random calls, and random bodies.
        """
        clock = Clock()
        network = FakeNetwork(clock)
        node = makeNode(clock, network, "127.0.0.11", htables=["kdmq=>size=8;dmqreplicate=1", "local=>size=4"])

        def stop():
            node.stopService()
            network.run(70)

        self.addCleanup(stop)
        rpc = JSONRPC(node.rpc, clock)
        names = node.rpc.names() + ["nosuch", ""]
        rng = random.Random(14)
        with capturedLogs() as events:
            for i in range(2000):
                if rng.randrange(10) == 0:
                    body = json.dumps(randomJSON(rng)).encode()
                else:
                    message = {"jsonrpc": "2.0", "method": rng.choice(names), "id": i}
                    if rng.randrange(4):
                        message["params"] = randomJSON(rng)
                        if rng.randrange(3):
                            # Mostly text, as the methods take.
                            message["params"] = [
                                randomJSON(rng, 4) if rng.randrange(4) else randomJSON(rng)
                                for j in range(rng.randrange(5))
                            ]
                    body = json.dumps(message).encode()
                if rng.randrange(20) == 0:
                    body = bytes(rng.randrange(256) for j in range(rng.randrange(50)))
                d = rpc.handle(body)
                network.run(0.1)
                answer = self.successResultOf(d)
                if answer is not None:
                    strictJSON(answer)
            network.run(40)
        self.assertEqual([e for e in events if "log_failure" in e], [])
        self.assertEqual(self.flushLoggedErrors(), [])


class ConnectionBoundsTests(SynchronousTestCase):
    """
    The control endpoint's connections on a L{Clock}: idle ones closed,
    slow requests closed, too many refused.
    """

    def setUp(self):
        self.clock = Clock()
        methods = RPCMethods()
        methods.addMethod("test.echo", lambda value: value)
        self.endpoint = _FakeEndpoint()
        self.control = ControlService(
            self.endpoint, ControlResource(methods, None, self.clock), "test", clock=self.clock
        )
        self.control.startService()
        self.addCleanup(self.control.stopService)

    def connect(self):
        protocol = self.endpoint.factory.buildProtocol(IPv4Address("TCP", "127.0.0.1", 40000))
        if protocol is None:
            return None, None
        transport = StringTransport(peerAddress=IPv4Address("TCP", "127.0.0.1", 40000))
        # Not self.patch: its restore would run before the cleanup that stops
        # the service, which aborts this connection through it.
        transport.abortConnection = lambda: protocol.connectionLost(  # type: ignore[method-assign]
            Failure(ConnectionDone())
        )
        protocol.makeConnection(transport)
        return protocol, transport

    def test_idle(self):
        """
        A connection that sends nothing is closed after 30 s.
        """
        protocol, transport = self.connect()
        self.clock.advance(29)
        self.assertFalse(transport.disconnecting)
        self.clock.advance(2)
        self.assertTrue(transport.disconnecting or not self.endpoint.factory.protocols)

    def test_slowRequest(self):
        """
        A request trickled a byte every 10 s is closed 30 s after its first
        byte, and counted.
        """
        protocol, transport = self.connect()
        for byte in b"POST /RPC HTTP/1.1\r\n":
            protocol.dataReceived(bytes([byte]))
            self.clock.advance(10)
            if not self.endpoint.factory.protocols:
                break
        self.assertEqual(self.endpoint.factory.protocols, {})
        self.assertEqual(self.control.statistics["slowRequests"], 1)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_request(self):
        """
        A whole request is answered, and the connection kept open.
        """
        protocol, transport = self.connect()
        body = json.dumps({"jsonrpc": "2.0", "method": "test.echo", "params": [1], "id": 1}).encode()
        protocol.dataReceived(
            b"POST /RPC HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)
        )
        self.assertIn(b'"result":1', transport.value())
        self.clock.advance(29)
        self.assertEqual(len(self.endpoint.factory.protocols), 1)
        self.assertEqual(self.control.statistics["slowRequests"], 0)

    def test_tooMany(self):
        """
        Past 64 open connections, a new one is closed at once, and counted.
        """
        self.assertEqual(MAX_CONNECTIONS, 64)
        opened = [self.connect() for i in range(64)]
        self.assertTrue(all(p is not None for p, t in opened))
        with capturedLogs() as events:
            for i in range(10):
                self.assertEqual(self.connect(), (None, None))
        self.assertEqual(len(events), 1)
        self.assertEqual(self.control.statistics["connectionsRefused"], 10)
        opened[0][0].connectionLost(Failure(ConnectionDone()))
        self.assertIsNotNone(self.connect()[0])


class Cluster:
    """
    Three nodes on one in-memory network, formed, with the RPC of the first.
    """

    def __init__(self, testCase, count=3):
        self.clock = Clock()
        self.network = FakeNetwork(self.clock)
        self.hosts = [f"127.0.0.{11 + i}" for i in range(count)]
        self.nodes = [
            makeNode(self.clock, self.network, host, seeds=[self.hosts[0]] if i else [])
            for i, host in enumerate(self.hosts)
        ]
        testCase.addCleanup(self.stop)
        self.network.run(3)
        self.rpc = JSONRPC(self.nodes[0].rpc)
        self.testCase = testCase

    def stop(self):
        for node in self.nodes:
            if node.running:
                node.stopService()
        self.network.run(70)

    def call(self, method, *params, run=1, **named):
        """
        Call C{method} on the first node; the answer's C{result}, or its
        C{error}.
        """
        d = handle(self.rpc, request(method, *params, **named))
        self.network.run(run)
        answer = self.testCase.successResultOf(d)
        return answer.get("result", answer.get("error"))


class DMQMethodsTests(SynchronousTestCase):
    """
    The C{dmq.*} methods: Kamailio's names and answers, and ours.
    """

    def setUp(self):
        self.cluster = Cluster(self)
        self.call = self.cluster.call
        self.a, self.b, self.c = self.cluster.nodes

    def uris(self):
        return [(n["uri"], n["status"]) for n in self.call("dmq.list_nodes")]

    def test_listNodes(self):
        """
        C{dmq.list_nodes} lists the nodes as Kamailio does, newest first and
        the local node last, with its fields and their types, and ours.
        """
        # Past the first ping, so that the others have been heard from.
        self.cluster.network.run(61)
        nodes = self.call("dmq.list_nodes")
        self.assertEqual([n["host"] for n in nodes], ["127.0.0.13", "127.0.0.12", "127.0.0.11"])
        for node in nodes:
            for field, value in KAMAILIO_NODE.items():
                self.assertIsInstance(node[field], type(value), field)
        local = nodes[-1]
        self.assertEqual(
            local,
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
        )
        self.assertEqual([n["local"] for n in nodes], [0, 0, 1])
        self.assertEqual({n["status"] for n in nodes}, {"active"})
        # When we last heard from the others, in the clock's seconds.
        self.assertEqual([n["last_notification"] for n in nodes[:2]], [60, 60])

    def test_remove(self):
        """
        C{dmq.remove} removes a node, and answers as Kamailio does whether
        or not one matched; the local node and a bad URI are refused.
        """
        self.assertEqual(self.call("dmq.remove", "sip:127.0.0.13:5060"), "Ok. DMQ node removed.")
        self.assertNotIn(("sip:127.0.0.13:5060", "active"), self.uris())
        self.assertEqual(self.call("dmq.remove", "sip:127.0.0.99:5060"), "Ok. DMQ node removed.")
        error = self.call("dmq.remove", "sip:127.0.0.11:5060")
        self.assertEqual(error, {"code": APPLICATION_ERROR, "message": "Cannot remove the local node"})
        error = self.call("dmq.remove", "not a uri")
        self.assertEqual(error["code"], APPLICATION_ERROR)
        self.assertIn("is not a SIP URI", error["message"])
        self.assertEqual(self.call("dmq.remove")["code"], INVALID_PARAMS)
        self.assertEqual(self.call("dmq.remove", 5)["code"], INVALID_PARAMS)

    def test_add(self):
        """
        C{dmq.add} adds a node, active or with the URI's status; Kamailio's
        fault when it is there already.
        """
        self.assertEqual(self.call("dmq.add", "sip:127.0.0.14:5060"), "Ok. DMQ node added.")
        self.assertEqual(self.call("dmq.add", uri="sip:127.0.0.15:5060;status=disabled"), "Ok. DMQ node added.")
        self.assertEqual(self.uris()[:2], [("sip:127.0.0.15:5060", "disabled"), ("sip:127.0.0.14:5060", "active")])
        self.assertEqual(
            self.call("dmq.add", "sip:127.0.0.12:5060"),
            {"code": APPLICATION_ERROR, "message": "Node is already added"},
        )
        error = self.call("dmq.add", "sip:127.0.0.16:5060;status=sleepy")
        self.assertEqual(error["code"], APPLICATION_ERROR)
        self.assertIn("sleepy", error["message"])

    def test_addOnlyNodesWeCanTalkTo(self):
        """
        C{dmq.add} refuses a URI that names no node we can talk to (not
        C{sip:}, not UDP, TCP or TLS, port 0) with L{parseNodeAddress}'s reason, and
        one that names ourselves, however spelled; the node list is left
        alone.
        """
        before = self.uris()
        for uri, message in [
            ("sips:127.0.0.14", "only sip: URIs are supported so far, not sips:"),
            ("sip:127.0.0.14:5060;transport=sctp", "the transport is udp, tcp or tls, not sctp"),
            ("sip:127.0.0.14:0", "port 0 names no node"),
            ("not a uri", "is not a SIP URI"),
            ("sip:127.0.0.11:5060", "Cannot add the local node"),
            ("sip:127.0.0.11", "Cannot add the local node"),
            ("sip:127.0.0.11:5060;status=disabled", "Cannot add the local node"),
        ]:
            error = self.call("dmq.add", uri)
            self.assertEqual(error["code"], APPLICATION_ERROR, uri)
            self.assertIn(message, error["message"])
        self.assertEqual(self.call("dmq.add", 5)["code"], INVALID_PARAMS)
        self.assertEqual(self.uris(), before)

    def test_changeStatus(self):
        """
        C{dmq.change_status} sets a known remote node's status.
        """
        self.assertEqual(
            self.call("dmq.change_status", "sip:127.0.0.12:5060", "disabled"),
            "Ok. DMQ node status changed.",
        )
        self.assertIn(("sip:127.0.0.12:5060", "disabled"), self.uris())
        for params, message in [
            (["sip:127.0.0.99:5060", "active"], "Node not found"),
            (["sip:127.0.0.11:5060", "disabled"], "Cannot change the status of the local node"),
            (["sip:127.0.0.12:5060", "sleepy"], "Invalid status 'sleepy'"),
        ]:
            error = self.call("dmq.change_status", *params)
            self.assertEqual(error["code"], APPLICATION_ERROR)
            self.assertIn(message, error["message"])

    def test_sendMessage(self):
        """
        C{dmq.send_message} sends to one node and answers its reply.
        """
        echo = EchoPeer()
        self.b.bus.registerPeer(echo)
        reply = self.call("dmq.send_message", "echo", "sip:127.0.0.12:5060", "héllo", "text/plain")
        self.assertEqual(reply, {"code": 200, "reason": "OK", "body": "héllo", "content_type": "text/plain"})
        [received] = echo.received
        self.assertEqual(received.body, "héllo".encode("utf-8"))
        self.assertEqual(received.header("Content-Type"), "text/plain")

    def test_sendMessageByName(self):
        """
        The content type may be left out, and the parameters named.
        """
        self.b.bus.registerPeer(EchoPeer())
        reply = self.call("dmq.send_message", peer="echo", node="sip:127.0.0.12:5060", body="x")
        self.assertEqual(reply["code"], 200)

    def test_sendMessageNoPeer(self):
        """
        A peer the node does not have answers 404, which is a reply like
        any other.
        """
        reply = self.call("dmq.send_message", "nosuch", "sip:127.0.0.12:5060", "x", "text/plain")
        self.assertEqual(reply["code"], 404)

    def test_sendMessageRefused(self):
        """
        An unknown node, the local node, a bad peer id or content type are
        refused before anything is sent.
        """
        sent = len(self.cluster.network.sent)
        for params, fragment in [
            (["echo", "sip:127.0.0.99:5060", "x"], "Node not found"),
            (["echo", "sip:127.0.0.11:5060", "x"], "Cannot send to the local node"),
            (["a b", "sip:127.0.0.12:5060", "x"], "Invalid peer"),
            (["echo", "sip:127.0.0.12:5060", "x", "text/plain\r\nX: y"], "content_type"),
        ]:
            error = self.call("dmq.send_message", *params)
            self.assertIn(fragment, error["message"])
        self.assertEqual(len(self.cluster.network.sent), sent)

    def test_sendMessageTimeout(self):
        """
        A node that never answers gives its 408, after Timer F.
        """
        crashNode(self.cluster.network, self.c)
        reply = self.call("dmq.send_message", "echo", "sip:127.0.0.13:5060", "x", run=40)
        self.assertEqual(reply["code"], 408)

    def test_bcastMessage(self):
        """
        C{dmq.bcast_message} sends to every active node and answers their
        replies.
        """
        for node in (self.b, self.c):
            node.bus.registerPeer(EchoPeer())
        replies = self.call("dmq.bcast_message", "echo", "all", "text/plain")
        self.assertEqual(
            sorted(replies, key=lambda r: r["node"]),
            [
                {"node": f"sip:{host}:5060", "code": 200, "reason": "OK", "body": "all", "content_type": "text/plain"}
                for host in ("127.0.0.12", "127.0.0.13")
            ],
        )

    def test_bcastMessageStopped(self):
        """
        Sending on a stopped bus is refused, not crashed on.
        """
        self.a.bus.stopService()
        error = self.call("dmq.bcast_message", "echo", "all")
        self.assertEqual(error, {"code": APPLICATION_ERROR, "message": "The bus is not running"})

    def test_listPeers(self):
        """
        C{dmq.list_peers} lists the registered peers.
        """
        self.a.bus.registerPeer(EchoPeer())
        self.assertEqual(
            self.call("dmq.list_peers"),
            [
                {"peer_id": "notification_peer", "description": "DMQ membership: node lists"},
                {"peer_id": "echo", "description": "echoes"},
            ],
        )

    def test_system(self):
        """
        C{system.listMethods} and C{system.methodHelp}.
        """
        methods = self.call("system.listMethods")
        for name in [
            "dmq.list_nodes",
            "dmq.remove",
            "dmq.add",
            "dmq.change_status",
            "dmq.send_message",
            "dmq.bcast_message",
            "dmq.list_peers",
            "system.listMethods",
            "system.methodHelp",
        ]:
            self.assertIn(name, methods)
        self.assertEqual(
            self.call("system.methodHelp", "dmq.remove"), "dmq.remove uri: Remove a DMQ node: uri"
        )
        self.assertEqual(self.call("system.methodHelp", "x.y")["code"], METHOD_NOT_FOUND)

    def test_peerMethods(self):
        """
        A peer adds its own methods to the node's table, as the htable peer
        adds C{htable.*}.
        """
        table = {}

        def sets(table_, key, value):
            table[(table_, key)] = value
            return "Ok. Key set to new value."

        self.a.rpc.addMethod("htable.sets", sets, "Set a string value: table key value")
        self.assertEqual(self.call("htable.sets", "kdmq", "k1", "hello"), "Ok. Key set to new value.")
        self.assertEqual(table, {("kdmq", "k1"): "hello"})
        self.assertIn("htable.sets", self.call("system.listMethods"))


def samples(registry):
    """
    The samples of C{registry}, as Prometheus would scrape them:
    C{{(name, ((label, value), ...)): value}}.
    """
    text = generate_latest(registry).decode("utf-8")
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


class HostileInputMetricsTests(SynchronousTestCase):
    """
    What the htable peer and the control endpoint refuse is counted in the
    node's metrics.
    """

    def test_counted(self):
        """
        A refused regular expression, a full table and a connection past
        the cap show in C{dmq_htable_events_total} and
        C{dmq_control_events_total}.
        """
        clock = Clock()
        network = FakeNetwork(clock)
        node = makeNode(clock, network, "127.0.0.11", htables=["kdmq=>dmqreplicate=1"], htableMaxCells=1)
        self.addCleanup(node.stopService)
        node.htable.set("kdmq", "a", 1)
        request = sip.Request(
            "KDMQ", sip.URI("127.0.0.11", 5060, user="htable"),
            (("From", "<sip:htable@127.0.0.12:5060>;tag=1"), ("Call-ID", "1"), ("CSeq", "1 KDMQ")),
            b'{"action":5,"htname":"kdmq","type":2,"strval":"(a+)+$","mode":0}',
        )
        self.assertEqual(node.htable.messageReceived(request, None).code, 500)
        request = attr.evolve(request, body=b'{"action":2,"htname":"kdmq","cname":"b","type":0,"intval":1}')
        self.assertEqual(node.htable.messageReceived(request, None).code, 503)
        endpoint = _FakeEndpoint()
        node.control = ControlService(
            endpoint, ControlResource(node.rpc, node.metrics, clock), "test", clock=clock, maxConnections=0
        )
        node.control.startService()
        self.assertIsNone(endpoint.factory.buildProtocol(IPv4Address("TCP", "127.0.0.1", 1)))
        metrics = samples(node.metrics)
        self.assertEqual(metrics[("dmq_htable_events_total", (("event", "patterns_refused"),))], 1)
        self.assertEqual(metrics[("dmq_htable_events_total", (("event", "table_full"),))], 1)
        self.assertEqual(metrics[("dmq_htable_replication_pending", ())], 0)
        self.assertEqual(metrics[("dmq_control_events_total", (("event", "connections_refused"),))], 1)
        node.control.stopService()


class MetricsTests(SynchronousTestCase):
    """
    The metrics of a node, read from its counters when scraped.
    """

    def setUp(self):
        self.cluster = Cluster(self)
        self.a, self.b, self.c = self.cluster.nodes

    def test_formedBus(self):
        """
        After the bus formed: membership requests both ways, no timeouts,
        two active nodes, nothing queued or live but what is still absorbing
        duplicates.
        """
        metrics = samples(self.a.metrics)
        self.assertGreater(
            metrics[("dmq_requests_received_total", (("code", "200"), ("peer", "notification_peer")))], 0
        )
        self.assertGreater(
            metrics[("dmq_requests_sent_total", (("code", "200"), ("peer", "notification_peer")))], 0
        )
        self.assertEqual(metrics[("dmq_nodes", (("status", "active"),))], 2)
        self.assertEqual(metrics[("dmq_nodes", (("status", "disabled"),))], 0)
        self.assertEqual(metrics[("dmq_queue_depth", ())], 0)
        self.assertEqual(metrics[("dmq_transaction_timeouts_total", ())], 0)
        self.assertEqual(metrics[("dmq_malformed_datagrams_total", ())], 0)
        self.assertGreater(metrics[("dmq_datagrams_received_total", ())], 0)
        self.assertGreater(metrics[("dmq_transactions_started_total", (("kind", "server"),))], 0)
        self.assertIn(("dmq_live_transactions", (("kind", "client"),)), metrics)
        self.assertIn(("dmq_retransmissions_sent_total", ()), metrics)
        self.assertIn(("dmq_transaction_events_total", (("event", "send_errors"),)), metrics)
        self.assertEqual(
            metrics[("dmq_info", (("node", "sip:127.0.0.11:5060"), ("version", "0.1.0")))], 1
        )

    def test_latency(self):
        """
        Requests handled are timed by peer, queueing included.
        """
        metrics = samples(self.a.metrics)
        count = metrics[("dmq_handler_latency_seconds_count", (("peer", "notification_peer"),))]
        self.assertGreater(count, 0)
        self.assertEqual(
            metrics[("dmq_handler_latency_seconds_bucket", (("le", "+Inf"), ("peer", "notification_peer")))],
            count,
        )

    def test_histogram(self):
        """
        L{HandlerLatency} counts each observation in its bucket, cumulated.
        """
        latency = HandlerLatency((0.1, 1.0))
        for seconds in (0.05, 0.1, 0.5, 3.0):
            latency.observe("p", seconds)
        [(peer, buckets, total)] = latency.histograms()
        self.assertEqual((peer, buckets, total), ("p", [("0.1", 2), ("1.0", 3), ("+Inf", 4)], 3.65))

    def test_timeoutsAndStatus(self):
        """
        A dead node shows as a timeout and, after the ping, not active.
        """
        crashNode(self.cluster.network, self.c)
        self.cluster.network.run(100)
        metrics = samples(self.a.metrics)
        self.assertGreater(metrics[("dmq_transaction_timeouts_total", ())], 0)
        self.assertGreater(
            metrics[("dmq_requests_sent_total", (("code", "408"), ("peer", "notification_peer")))], 0
        )
        self.assertEqual(metrics[("dmq_nodes", (("status", "active"),))], 1)
        self.assertGreater(metrics[("dmq_retransmissions_sent_total", ())], 0)

    def test_malformed(self):
        """
        Malformed datagrams are counted.
        """
        self.a.protocol.datagramReceived(b"garbage\r\n\r\n", ("127.0.0.99", 5060))
        self.assertEqual(samples(self.a.metrics)[("dmq_malformed_datagrams_total", ())], 1)

    def test_unknownPeers(self):
        """
        Requests for peers not registered here count under one label, so
        that senders cannot grow the label set; requests we send count under
        the peer we named.
        """
        node = self.b.nodeManager.find(sip.URI("127.0.0.11", 5060))
        for peerId in ("nosuch1", "nosuch2"):
            self.b.bus.send(peerId, b"x", node)
        self.cluster.network.run(1)
        received = samples(self.a.metrics)
        self.assertEqual(
            received[("dmq_requests_received_total", (("code", "404"), ("peer", "_unknown")))], 2
        )
        self.assertEqual([key for key in received if ("peer", "nosuch1") in key[1]], [])
        sent = samples(self.b.metrics)
        self.assertEqual(sent[("dmq_requests_sent_total", (("code", "404"), ("peer", "nosuch1")))], 1)

    def test_registryPerNode(self):
        """
        Each node has its own registry: several in one process do not
        collide.
        """
        self.assertIsNot(self.a.metrics, self.b.metrics)
        self.assertIn(
            ("dmq_info", (("node", "sip:127.0.0.12:5060"), ("version", "0.1.0"))),
            samples(self.b.metrics),
        )


@implementer(IStreamServerEndpoint)
class _FakeEndpoint:
    """
    A server endpoint that listens at once on a fake port, or fails.
    """

    def __init__(self, host="127.0.0.11", error=None):
        self.host = host
        self.error = error
        self.stopped = False

    def listen(self, factory):
        self.factory = factory
        if self.error is not None:
            return defer.fail(self.error)
        return defer.succeed(self)

    def getHost(self):
        return IPv4Address("TCP", self.host, 5080)

    def stopListening(self):
        self.stopped = True


class _LaterEndpoint:
    """
    A server endpoint whose C{listen} answers later, when the test says.
    """

    def __init__(self):
        self.listening: defer.Deferred[IListeningPort] = defer.Deferred()

    def listen(self, factory):
        return self.listening


class ControlServiceTests(SynchronousTestCase):
    """
    L{ControlService}: listening, warning, failing, stopping.
    """

    def service(self, endpoint):
        return ControlService(endpoint, ControlResource(RPCMethods(), None), "test")

    def test_loopback(self):
        """
        Listening on a loopback address logs no warning.
        """
        endpoint = _FakeEndpoint("127.0.0.11")
        control = self.service(endpoint)
        with capturedLogs() as events:
            control.startService()
        self.assertIs(control.port, endpoint)
        self.assertEqual([e for e in events if e["log_level"] == LogLevel.warn], [])
        self.successResultOf(control.stopService())
        self.assertTrue(endpoint.stopped)
        self.assertIsNone(control.port)

    def test_notLoopback(self):
        """
        Listening elsewhere than loopback logs a warning.
        """
        for host in ("0.0.0.0", "192.0.2.1", ""):
            control = self.service(_FakeEndpoint(host))
            with capturedLogs() as events:
                control.startService()
            [warning] = [e for e in events if e["log_level"] == LogLevel.warn]
            self.assertIn("not a loopback address", warning["log_format"])
            control.stopService()

    def test_cannotListen(self):
        """
        A port that cannot be listened on is raised from C{startService}, so
        that a node does not start without it.
        """
        control = self.service(_FakeEndpoint(error=CannotListenError("127.0.0.11", 5080, OSError("in use"))))
        self.assertRaises(CannotListenError, control.startService)
        self.assertFalse(control.running)

    def test_cannotListenLater(self):
        """
        A failure to listen known only later is logged as an error, without
        a traceback.
        """
        endpoint = _LaterEndpoint()
        control = self.service(endpoint)
        control.startService()
        with capturedLogs() as events:
            endpoint.listening.errback(CannotListenError("127.0.0.11", 5080, OSError("in use")))
        [error] = events
        self.assertEqual(error["log_level"], LogLevel.error)
        self.assertIn("cannot listen", error["log_format"])
        self.assertNotIn("log_failure", error)
        self.successResultOf(control.stopService())

    def test_stopBeforeListening(self):
        """
        Stopping before the port is listening gives up on it quietly.
        """
        control = self.service(_LaterEndpoint())
        control.startService()
        with capturedLogs() as events:
            self.successResultOf(control.stopService())
        self.assertEqual(events, [])


class LazyControlServiceTests(SynchronousTestCase):
    """
    L{LazyControlService}: it listens at start, and builds its HTTP server
    on its first connection.
    """

    def setUp(self):
        self.roots = []
        self.endpoint = _FakeEndpoint("127.0.0.11")
        self.control = LazyControlService(self.endpoint, self.makeRoot, "test", Clock(), hasToken=False)

    def makeRoot(self, statistics):
        root = ControlResource(RPCMethods(), None, Clock(), statistics=statistics)
        self.roots.append(root)
        return root

    def test_builtOnFirstConnection(self):
        """
        The root is made on the first connection, once, counting in the
        service's statistics, which count every cause from zero before.
        """
        with capturedLogs() as events:
            self.control.startService()
        self.assertIs(self.control.port, self.endpoint)
        self.assertEqual(["Control endpoint {endpoint} listening on {address}: POST /RPC, GET /metrics, GET /{token}"],
                         [e["log_format"] for e in events])
        self.assertEqual(self.roots, [])
        self.assertEqual(dict(self.control.statistics), dict.fromkeys(EVENTS, 0))
        factory = self.endpoint.factory
        # As the port starts its factory.
        factory.doStart()
        address = IPv4Address("TCP", "127.0.0.1", 40000)
        first = factory.buildProtocol(address)
        second = factory.buildProtocol(address)
        self.assertEqual(len(self.roots), 1)
        self.assertIs(self.roots[0].statistics, self.control.statistics)
        self.assertIsNot(first, second)
        self.assertIs(first.factory, second.factory)
        transport = StringTransport()
        first.makeConnection(transport)
        first.dataReceived(b"GET /RPC HTTP/1.1\r\nhost: x\r\n\r\n")
        self.assertTrue(transport.value().startswith(b"HTTP/1.1 405 "))
        first.connectionLost(Failure(ConnectionDone()))
        self.successResultOf(self.control.stopService())
        factory.doStop()
        self.assertTrue(self.endpoint.stopped)

    def test_stopUnconnected(self):
        """
        A service nobody connected to stops without making its root.
        """
        self.control.startService()
        self.successResultOf(self.control.stopService())
        self.assertTrue(self.endpoint.stopped)
        self.assertEqual(self.roots, [])


class ControlEndpointIntegrationTests(TestCase):
    """
    Integration: the control endpoint over real loopback HTTP, on the real
    reactor.
    """

    def setUp(self):
        self.node = makeNodeService(
            reactor,
            NodeConfig(serverAddress=sip.URI("127.0.0.11", 5060), control="tcp:0:interface=127.0.0.11"),
            listen=False,
        )
        self.node.startService()
        self.addCleanup(self.node.stopService)
        self.base = f"http://127.0.0.11:{controlPort(self.node)}".encode("ascii")
        pool = HTTPConnectionPool(reactor, persistent=False)
        self.agent = Agent(reactor, pool=pool)
        self.addCleanup(pool.closeCachedConnections)

    @defer.inlineCallbacks
    def fetch(self, method, path, body=None):
        from twisted.web.client import FileBodyProducer
        from io import BytesIO

        producer = FileBodyProducer(BytesIO(body)) if body is not None else None
        headers = Headers({b"content-type": [b"application/json"]}) if body is not None else None
        response = yield self.agent.request(method, self.base + path, headers, producer)
        data = yield readBody(response)
        return response, data

    @defer.inlineCallbacks
    def test_listNodes(self):
        """
        C{POST /RPC} answers JSON-RPC as Kamailio's jsonrpcs does.
        """
        response, data = yield self.fetch(b"POST", b"/RPC", json.dumps(request("dmq.list_nodes")).encode())
        self.assertEqual(response.code, 200)
        self.assertEqual(response.headers.getRawHeaders(b"content-type"), [b"application/json"])
        answer = json.loads(data)
        self.assertEqual(answer["id"], 1)
        self.assertEqual([n["uri"] for n in answer["result"]], ["sip:127.0.0.11:5060"])

    @defer.inlineCallbacks
    def test_badRequestsThenGood(self):
        """
        Garbage is answered with JSON-RPC errors, and the node keeps
        serving.
        """
        for body, code in [(b"\x00nonsense", PARSE_ERROR), (b"[]", INVALID_REQUEST), (b'{"id": 1}', INVALID_REQUEST)]:
            response, data = yield self.fetch(b"POST", b"/RPC", body)
            self.assertEqual(response.code, 200)
            self.assertEqual(json.loads(data)["error"]["code"], code)
        response, data = yield self.fetch(b"POST", b"/RPC", json.dumps(request("dmq.add", "sip:127.0.0.12:5060;status=disabled")).encode())
        self.assertEqual(json.loads(data)["result"], "Ok. DMQ node added.")

    @defer.inlineCallbacks
    def test_notification(self):
        """
        A notification is answered with no content.
        """
        body = json.dumps({"jsonrpc": "2.0", "method": "dmq.list_nodes"}).encode()
        response, data = yield self.fetch(b"POST", b"/RPC", body)
        self.assertEqual((response.code, data), (204, b""))

    @defer.inlineCallbacks
    def test_getRPC(self):
        """
        C{GET /RPC} is not allowed; an unknown path is not found.
        """
        response, _ = yield self.fetch(b"GET", b"/RPC")
        self.assertEqual(response.code, 405)
        self.assertEqual(response.headers.getRawHeaders(b"allow"), [b"POST"])
        response, _ = yield self.fetch(b"GET", b"/nothing")
        self.assertEqual(response.code, 404)

    @defer.inlineCallbacks
    def test_metrics(self):
        """
        C{GET /metrics} is the Prometheus text exposition of the node.
        """
        response, data = yield self.fetch(b"GET", b"/metrics")
        self.assertEqual(response.code, 200)
        [contentType] = response.headers.getRawHeaders(b"content-type")
        self.assertTrue(contentType.startswith(b"text/plain; version="))
        families = {f.name for f in text_string_to_metric_families(data.decode("utf-8"))}
        for name in [
            "dmq_requests_received",
            "dmq_requests_sent",
            "dmq_handler_latency_seconds",
            "dmq_queue_depth",
            "dmq_live_transactions",
            "dmq_retransmissions_sent",
            "dmq_transaction_timeouts",
            "dmq_nodes",
            "dmq_malformed_datagrams",
        ]:
            self.assertIn(name, families)

    @defer.inlineCallbacks
    def test_stopClosesEverything(self):
        """
        Stopping the node stops the port; a new connection is refused.
        """
        yield self.node.stopService()
        from twisted.internet.error import ConnectionRefusedError

        yield self.assertFailure(self.fetch(b"GET", b"/metrics"), ConnectionRefusedError)

    @defer.inlineCallbacks
    def test_statusPage(self):
        """
        C{GET /} is the status page, listing the node.
        """
        response, data = yield self.fetch(b"GET", b"/")
        self.assertEqual(response.code, 200)
        self.assertEqual(response.headers.getRawHeaders(b"content-type"), [b"text/html; charset=utf-8"])
        self.assertIn(b"<code>sip:127.0.0.11:5060</code>", data)


class GuardedEndpointIntegrationTests(TestCase):
    """
    Integration: a node whose control endpoint asks for a token, over real
    loopback HTTP.
    """

    def setUp(self):
        import os

        self.token = b"integration-token-0123456789"
        path = self.mktemp()
        with open(path, "wb") as f:
            f.write(self.token)
        os.chmod(path, 0o600)
        self.node = makeNodeService(
            reactor,
            NodeConfig(
                serverAddress=sip.URI("127.0.0.11", 5060), control="tcp:0:interface=127.0.0.11",
                controlTokenFile=path, controlOpenMetrics=True,
            ),
            listen=False,
        )
        self.node.startService()
        self.addCleanup(self.node.stopService)
        self.base = f"http://127.0.0.11:{controlPort(self.node)}".encode("ascii")
        pool = HTTPConnectionPool(reactor, persistent=False)
        self.agent = Agent(reactor, pool=pool)
        self.addCleanup(pool.closeCachedConnections)

    @defer.inlineCallbacks
    def fetch(self, path, token=None, body=None):
        from io import BytesIO

        from twisted.web.client import FileBodyProducer

        headers = Headers({b"authorization": [b"Bearer " + token]} if token else {})
        producer = FileBodyProducer(BytesIO(body)) if body is not None else None
        response = yield self.agent.request(b"POST" if body else b"GET", self.base + path, headers, producer)
        data = yield readBody(response)
        return response.code, data

    @defer.inlineCallbacks
    def test_token(self):
        """
        Without the token, C{/RPC} and C{/} are refused, C{/metrics} (open
        by option) served; with it, all are served.
        """
        call = json.dumps(request("dmq.list_nodes")).encode()
        self.assertEqual((yield self.fetch(b"/RPC", body=call))[0], 401)
        self.assertEqual((yield self.fetch(b"/RPC", b"wrong-token-0123456789", body=call))[0], 401)
        self.assertEqual((yield self.fetch(b"/"))[0], 401)
        self.assertEqual((yield self.fetch(b"/metrics"))[0], 200)
        code, data = yield self.fetch(b"/RPC", self.token, body=call)
        self.assertEqual(code, 200)
        self.assertEqual(json.loads(data)["result"][0]["uri"], "sip:127.0.0.11:5060")
        code, data = yield self.fetch(b"/", self.token)
        self.assertEqual(code, 200)
        self.assertIn(b"<!DOCTYPE html>", data)
        assert self.node.control is not None
        self.assertEqual(self.node.control.statistics["noToken"], 2)
        self.assertEqual(self.node.control.statistics["badToken"], 1)
        code, data = yield self.fetch(b"/metrics")
        self.assertIn(b'dmq_control_events_total{event="no_token"} 2.0', data)
