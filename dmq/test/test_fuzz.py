# -*- test-case-name: dmq.test.test_fuzz -*-
"""
Tests for L{dmq.test.hostile}, and the short fixed-seed fuzzing run of CI:
a few thousand hostile inputs to two real nodes, then checks that they
logged no traceback and still work.

C{bench/fuzz.py} is the long run of the same inputs (see
C{doc/reliability.md}).
"""

from __future__ import annotations

import gc
import json
import random
import socket
from typing import Any, Dict, Generator, List, Optional, Tuple

from twisted.internet import defer, reactor, tcp
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.internet.interfaces import IReactorThreads, IReactorUDP
from twisted.internet.protocol import DatagramProtocol, Protocol, connectionDone
from twisted.internet.task import deferLater
from twisted.logger import Logger, globalLogPublisher
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase, TestCase

from dmq import sip
from dmq.node import NodeStatus
from dmq.peers.htable import parseTableSpec
from dmq.tap import NodeConfig, makeNodeService
from dmq.test import hostile
from dmq.test.hostile import FailureRecorder, HostileInputs, Limits, Target, hostileReply, kdmqRequest
from dmq.test.test_control import controlPort
from dmq.test.test_sip import parseRequest

TARGETS = [Target("127.0.0.91", 5060), Target("127.0.0.92", 5060)]
SOURCE = ("127.0.0.93", 5060)


class HostileInputsTests(SynchronousTestCase):
    """
    Tests for L{HostileInputs}.
    """

    def test_sameSeedSameInput(self):
        """
        Input I{i} of a seed is made from the seed and I{i} alone: made
        again, or made by another generator of the same seed, it is the
        same.
        """
        one = HostileInputs(7, TARGETS, SOURCE)
        other = HostileInputs(7, TARGETS, SOURCE)
        first = [one.make(i) for i in range(200)]
        self.assertEqual([other.make(i) for i in reversed(range(200))], list(reversed(first)))
        self.assertNotEqual([HostileInputs(8, TARGETS, SOURCE).make(i).data for i in range(200)], [i.data for i in first])

    def test_mix(self):
        """
        Every kind of input is made, for every target, in about the shares
        of the mix.
        """
        inputs = list(HostileInputs(1, TARGETS, SOURCE).inputs(3000))
        kinds = {kind: sum(1 for i in inputs if i.kind == kind) for kind, _ in hostile.MIX}
        for kind, share in hostile.MIX:
            self.assertTrue(0.5 * share < kinds[kind] / 30 < 1.5 * share, (kind, kinds))
        self.assertEqual({i.target for i in inputs}, {0, 1})

    def test_datagramsFit(self):
        """
        No datagram is larger than a UDP datagram can be.
        """
        for one in HostileInputs(2, TARGETS, SOURCE).inputs(3000):
            if one.kind != "rpc":
                self.assertLessEqual(len(one.data), hostile.MAX_UDP)

    def test_repliesComeBack(self):
        """
        A node-list or htable request names us in its top Via, its
        Request-URI names its target, and it parses.
        """
        generator = HostileInputs(3, TARGETS, SOURCE, mix=[("nodelist", 1), ("htable", 1)])
        for one in generator.inputs(200):
            message = parseRequest(one.data)
            self.assertEqual((message.via[0].host, message.via[0].port), SOURCE)
            self.assertEqual((message.uri.host, message.uri.port), (TARGETS[one.target].host, TARGETS[one.target].port))

    def test_capturesMoved(self):
        """
        The captured datagrams name C{127.0.9.x}, never C{127.0.0.1}, where
        other tests run Kamailio.
        """
        generator = HostileInputs(4, TARGETS, SOURCE, mix=[("capture", 1)])
        replays = [one for one in generator.inputs(500) if one.label == "capture/replay"]
        self.assertTrue(replays)
        for one in replays:
            self.assertNotIn(b"127.0.0.1:", one.data)
            if not one.data.startswith(b"SIP/2.0"):
                self.assertIn(b"127.0.9.1:", one.data)

    def test_busSpared(self):
        """
        No node list names a target with a status other than active: the
        inputs attack the nodes, not the bus's legitimate membership rules.
        """
        generator = HostileInputs(5, TARGETS, SOURCE, mix=[("nodelist", 1)])
        for one in generator.inputs(1000):
            body = one.data.partition(b"\r\n\r\n")[2]
            for target in TARGETS:
                for line in body.split(b"\n"):
                    if target.hostport.encode() in line:
                        self.assertIn(b"status=active", line)

    def test_rpcIsHTTP(self):
        """
        An C{rpc} input is an HTTP request to its target's address.
        """
        generator = HostileInputs(6, TARGETS, SOURCE, mix=[("rpc", 1)])
        for one in generator.inputs(300):
            self.assertRegex(one.data.split(b"\r\n", 1)[0], rb"^\S+ \S+ HTTP/1\.1$")
            self.assertIn(b"\r\nHost: " + TARGETS[one.target].host.encode() + b"\r\n", one.data)

    def test_hostileReply(self):
        """
        L{hostileReply} answers a request with its Call-ID, or not at all.
        """
        request = kdmqRequest(TARGETS[0], SOURCE, "notification_peer", b"", "text/plain", tag="t1")
        replies = [hostileReply(request, random.Random(n)) for n in range(100)]
        self.assertIn(None, replies)
        for reply in replies:
            if reply is not None:
                self.assertTrue(reply.startswith(b"SIP/2.0 "))
                self.assertIn(b"Call-ID: t1@127.0.0.93", reply)


class FailureRecorderTests(SynchronousTestCase):
    """
    Tests for L{FailureRecorder}.
    """

    def test_groups(self):
        """
        Failures are grouped by exception and the innermost C{dmq} frame,
        with the message and the input being read; other events are only
        counted by level.
        """
        recorder = FailureRecorder()
        log = Logger(observer=recorder)
        recorder.current = "input 1"
        for _ in range(2):
            try:
                1 / 0
            except ZeroDivisionError:
                log.failure("it broke")
        log.warn("bad input")
        [group] = recorder.groups.values()
        self.assertEqual((group.exception, group.count, group.message, group.lastInput), ("ZeroDivisionError", 2, "it broke", "input 1"))
        self.assertIn("test_fuzz.py", group.site)
        self.assertEqual(recorder.failures, 2)
        self.assertEqual(recorder.levels, {"critical": 2, "warn": 1})
        self.assertEqual(json.loads(json.dumps(recorder.report()))["failures"], 2)

    def test_unhandledDeferred(self):
        """
        Twisted's two events for an unhandled error in a Deferred count as
        one failure.
        """
        recorder = FailureRecorder()
        log = Logger(namespace="twisted.internet.defer", observer=recorder)
        log.critical("Unhandled error in Deferred:", isError=True)
        log.failure("", Failure(ValueError("x")))
        [group] = recorder.groups.values()
        self.assertEqual(group.exception, "ValueError")
        self.assertIn("unhandled error in Deferred", group.site)


class SandboxTests(SynchronousTestCase):
    """
    Tests for L{hostile.sandboxNetwork}.
    """

    def setUp(self):
        self.recorder = FailureRecorder()
        hostile.sandboxNetwork(self.patch, self.recorder)

    def test_names(self):
        """
        A name is not looked up; a numeric address or C{localhost} is, and
        a label over 63 characters fails as it would.
        """
        self.assertRaises(socket.gaierror, socket.gethostbyname, "example.invalid")
        self.assertRaises(UnicodeError, socket.getaddrinfo, "a" * 64 + ".invalid", 5060)
        self.assertEqual(socket.gethostbyname("127.9.1"), "127.9.0.1")
        self.assertEqual(socket.gethostbyname("localhost"), "127.0.0.1")
        self.assertEqual(self.recorder.sandbox["name lookup refused"], 1)

    def test_sends(self):
        """
        A datagram to an address outside the allowed ones is counted, not
        sent; to a host name, Twisted still refuses it.
        """
        from twisted.internet import error, udp

        port = udp.Port(0, DatagramProtocol(), "127.0.0.93")
        port.addressFamily = socket.AF_INET
        port._connectedAddr = None
        # udp.Port.write returns sendto's count when it sends, though typed
        # as returning None: None here says the sandbox kept the datagram.
        write: Any = port.write
        self.assertIsNone(write(b"x", ("10.0.0.1", 5060)))
        self.assertIsNone(write(b"SIP/2.0 200 OK\r\n", ("10.0.0.1", 5060)))
        self.assertEqual(self.recorder.sandbox, {"request to 10.0.0.1": 1, "reply to 10.0.0.1": 1})
        self.assertRaises(error.InvalidAddressError, port.write, b"x", ("localhost", 5060))


# The CI run

CI_SEED = 14
CI_COUNT = 3000
CI_RATE = 600.0
# The sending stops after this long even if not all inputs went: the
# inputs share the reactor with the nodes, and a node that falls behind
# slows the sending down.
CI_SECONDS = 12.0
CI_LIMITS = Limits(hugeValue=60000, redosLength=16, maxLines=300, maxBatch=200, keys=200, bigKeys=20)
NODE_A = ("127.0.0.84", 25084)
NODE_B = ("127.0.0.85", 25085)
FUZZER = ("127.0.0.86", 25086)
RESPONDER = ("127.0.9.8", 5060)
TABLE = "kdmq=>size=8;autoexpire=0;dmqreplicate=1"


class _Replies(DatagramProtocol):
    def __init__(self) -> None:
        self.codes: Dict[str, int] = {}
        self.waiting: Dict[bytes, defer.Deferred] = {}

    def send(self, data: bytes, address: Tuple[str, int]) -> None:
        assert self.transport is not None, "not listening"
        self.transport.write(data, address)

    def datagramReceived(self, data: bytes, address: Tuple[str, int]) -> None:
        code = data[8:11].decode("ascii", "replace") if data.startswith(b"SIP/2.0 ") else "request"
        self.codes[code] = self.codes.get(code, 0) + 1
        for tag in list(self.waiting):
            if tag in data and code.isdigit() and int(code) >= 200:
                self.waiting.pop(tag).callback(int(code))


class _Responder(DatagramProtocol):
    def __init__(self) -> None:
        self.rng = random.Random(f"{CI_SEED}:responder")
        self.answered = 0

    def datagramReceived(self, data: bytes, address: Tuple[str, int]) -> None:
        reply = hostileReply(data, self.rng)
        if reply is not None:
            self.answered += 1
            assert self.transport is not None
            self.transport.write(reply[: hostile.MAX_UDP], address)


def tcpTransport(protocol: Protocol) -> tcp.Connection:
    """
    The transport of C{protocol}, connected over TCP.
    """
    assert isinstance(protocol.transport, tcp.Connection), protocol.transport
    return protocol.transport


class _OneRequest(Protocol):
    def __init__(self, data: bytes) -> None:
        self.data = data
        self.chunks: List[bytes] = []
        self.done: defer.Deferred = defer.Deferred()

    def connectionMade(self) -> None:
        transport = tcpTransport(self)
        transport.write(self.data)
        self.timeout = reactor.callLater(5, transport.abortConnection)

    def dataReceived(self, data: bytes) -> None:
        self.chunks.append(data)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        if self.timeout.active():
            self.timeout.cancel()
        self.done.callback(b"".join(self.chunks))


class FuzzIntegrationTests(TestCase):
    """
    Integration: the fixed-seed CI fuzzing run.  Two nodes on the real
    reactor over loopback (their control endpoints on TCP), the inputs sent
    from a UDP socket and over HTTP, the nodes in L{hostile.sandboxNetwork}.
    """

    timeout = 120

    def setUp(self):
        self.recorder = FailureRecorder()
        self.failedAlready = False
        # Registered first, so run last: after the nodes are gone.
        self.addCleanup(self.collectLeftovers)
        hostile.sandboxNetwork(self.patch, self.recorder, reactor)
        hostile.watchRPC(self.patch, self.recorder)
        globalLogPublisher.addObserver(self.recorder)
        self.addCleanup(globalLogPublisher.removeObserver, self.recorder)
        self.nodes = []
        for (host, port), other in [(NODE_A, NODE_B), (NODE_B, NODE_A)]:
            node = makeNodeService(
                reactor,
                NodeConfig(
                    serverAddress=sip.URI(host, port),
                    notificationAddresses=(sip.URI(*other),),
                    htables=(parseTableSpec(TABLE),),
                    control=f"tcp:0:interface={host}",
                    pingInterval=1,
                ),
            )
            hostile.watchInputs(node.protocol, self.recorder)
            node.startService()
            self.addCleanup(self.stop, node)
            self.nodes.append(node)
        self.replies = _Replies()
        udp = IReactorUDP(reactor)
        listening = udp.listenUDP(FUZZER[1], self.replies, interface=FUZZER[0], maxPacketSize=65535)
        self.addCleanup(listening.stopListening)
        self.responder = _Responder()
        listening = udp.listenUDP(RESPONDER[1], self.responder, interface=RESPONDER[0], maxPacketSize=65535)
        self.addCleanup(listening.stopListening)
        return self.waitFor(self.agree, 10, "the nodes did not list each other as active")

    def collectLeftovers(self) -> None:
        """
        Collect what the nodes left, so that the unhandled errors of their
        dropped Deferreds are logged now, as this test's.  When the test has
        failed already, they are more of the same bugs: flushed, so that the
        expected failure stays the one report.
        """
        self.nodes = []
        gc.collect()
        if self.failedAlready:
            self.flushLoggedErrors()

    @defer.inlineCallbacks
    def threadsDone(self):
        """
        Wait until the name lookups the nodes started in the reactor's
        threads have ended and their results arrived, so that what they log
        is this test's and not the next one's.
        """
        pool = IReactorThreads(reactor).getThreadPool()
        idle = 0
        for _ in range(200):
            statistics = pool._team.statistics()
            busy = statistics.busyWorkerCount or statistics.backloggedWorkCount
            idle = 0 if busy else idle + 1
            if idle >= 10:
                break
            yield deferLater(reactor, 0.05, lambda: None)
        for _ in range(3):
            yield deferLater(reactor, 0.05, lambda: None)
            gc.collect()

    @staticmethod
    def stop(node) -> defer.Deferred:
        return node.stopService() if node.running else defer.succeed(None)

    @defer.inlineCallbacks
    def waitFor(self, predicate, seconds: float, message: str):
        for _ in range(int(seconds / 0.1)):
            if predicate():
                return
            yield deferLater(reactor, 0.1, lambda: None)
        self.fail(message)

    def agree(self) -> bool:
        a, b = self.nodes
        return self.lists(a, b) == NodeStatus.ACTIVE and self.lists(b, a) == NodeStatus.ACTIVE

    @staticmethod
    def lists(node, other) -> Optional[NodeStatus]:
        found = node.nodeManager.find(other.nodeManager.localNode.uri)
        return None if found is None else found.status

    def controlPort(self, node) -> int:
        return controlPort(node)

    @defer.inlineCallbacks
    def http(self, node, data: bytes):
        host = node.bindAddress[0]
        protocol = _OneRequest(data)
        try:
            yield connectProtocol(TCP4ClientEndpoint(reactor, host, self.controlPort(node), timeout=5), protocol)
        except Exception as e:
            return f"connection error ({type(e).__name__})"
        answer = yield protocol.done
        status = answer.split(b" ", 2)[1].decode("ascii", "replace") if answer.startswith(b"HTTP/") else "none"
        return status

    def ask(self, node, peer: str, body: bytes, contentType: str, tag: str) -> defer.Deferred:
        """
        Send a request from the fuzzer's socket; fire with the final code,
        or C{None} after 3 s.
        """
        d: defer.Deferred[Optional[int]] = defer.Deferred()
        self.replies.waiting[tag.encode()] = d
        target = Target(*node.bindAddress)
        self.replies.send(kdmqRequest(target, FUZZER, peer, body, contentType, tag=tag), node.bindAddress)
        d.addTimeout(3, reactor, onTimeoutCancel=lambda *_: None)
        return d

    @defer.inlineCallbacks
    def send(self, count: int) -> Generator[defer.Deferred, Any, int]:
        """
        Send C{count} inputs at L{CI_RATE} per second; HTTP ones at most 8 at
        a time.
        """
        generator = HostileInputs(CI_SEED, [Target(*NODE_A), Target(*NODE_B)], FUZZER, CI_LIMITS, responder=RESPONDER)
        self.httpStatus: Dict[str, int] = {}
        inFlight: List[defer.Deferred] = []
        tick = 0.02
        perTick = max(1, int(CI_RATE * tick))
        started = reactor.seconds()
        inputs = generator.inputs(count)
        sent = 0
        for one in inputs:
            if reactor.seconds() - started > CI_SECONDS:
                break
            node = self.nodes[one.target]
            if one.kind == "rpc":
                while len(inFlight) >= 8:
                    yield defer.DeferredList(list(inFlight), fireOnOneCallback=True)
                d = self.http(node, one.data)
                inFlight.append(d)

                def done(status, d=d):
                    inFlight.remove(d)
                    self.httpStatus[status] = self.httpStatus.get(status, 0) + 1

                d.addCallback(done)
            else:
                self.replies.send(one.data, node.bindAddress)
            sent += 1
            if sent % perTick == 0:
                delay = started + sent / CI_RATE - reactor.seconds()
                yield deferLater(reactor, max(0.0, delay), lambda: None)
        yield defer.DeferredList(list(inFlight))
        return sent

    @defer.inlineCallbacks
    def test_hostileInputs(self):
        """
        After a few thousand hostile inputs, the nodes have logged no
        traceback, still answer a ping and an htable set, still replicate a
        change, still ping each other and list each other as active.
        """
        slow = []
        for node in self.nodes:
            protocol = Protocol()
            yield connectProtocol(TCP4ClientEndpoint(reactor, node.bindAddress[0], self.controlPort(node)), protocol)
            tcpTransport(protocol).write(b"POST /RPC HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n")
            slow.append(tcpTransport(protocol))
        self.addCleanup(lambda: [t.abortConnection() for t in slow if t.connected])
        sent = yield self.send(CI_COUNT)
        yield deferLater(reactor, 1, lambda: None)

        problems = []
        for name, node in zip("ab", self.nodes):
            code = yield self.ask(node, "notification_peer", b"", "text/plain", f"ci-ping-{name}")
            if code != 200:
                problems.append(f"node {name} answered a ping {code}")
            # Only members may write (issue 11): the fuzzer joins first, with
            # its own line, as any node does.
            join = f"sip:{FUZZER[0]}:{FUZZER[1]};status=active\r\n".encode()
            code = yield self.ask(node, "notification_peer", join, "text/plain", f"ci-join-{name}")
            if code != 200:
                problems.append(f"node {name} answered a join {code}")
            body = json.dumps({"action": 2, "htname": "kdmq", "cname": f"ci-{name}", "type": 2, "strval": "v", "mode": 1})
            code = yield self.ask(node, "htable", body.encode(), "application/json", f"ci-set-{name}")
            if code != 200:
                problems.append(f"node {name} answered an htable set {code}")
            status = yield self.http(node, _rpcRequest("htable.sets", ["kdmq", f"ci-rpc-{name}", "rpc"]))
            if status != "200":
                problems.append(f"node {name}'s control endpoint answered {status}")
        a, b = self.nodes
        assert a.htable is not None and b.htable is not None
        for _ in range(50):
            if b.htable.get("kdmq", "ci-rpc-a") == "rpc" and a.htable.get("kdmq", "ci-rpc-b") == "rpc":
                break
            yield deferLater(reactor, 0.1, lambda: None)
        else:
            problems.append("a change made through RPC was not replicated")
        pings = [node.bus.statistics.get(("in", "notification_peer", 200), 0) for node in self.nodes]
        for _ in range(60):
            if self.agree():
                break
            yield deferLater(reactor, 0.1, lambda: None)
        else:
            problems.append(f"membership: a lists b {self.lists(a, b)}, b lists a {self.lists(b, a)}")
        yield deferLater(reactor, 2.5, lambda: None)
        now = [node.bus.statistics.get(("in", "notification_peer", 200), 0) for node in self.nodes]
        for name, before, after in zip("ab", pings, now):
            if after <= before:
                problems.append(f"node {name} was not pinged with success in 2.5 s")
        # What stopping logs is the test's too; and so are the unhandled
        # errors of Deferreds the nodes dropped, logged when collected.
        for node in self.nodes:
            yield self.stop(node)
        yield self.threadsDone()
        gc.collect()
        self.flushLoggedErrors()
        report = self.recorder.report()
        for group in report["groups"]:
            problems.append(
                f"{group['count']} x {group['exception']} at {group['site']}: {group['message'][:150]!r};"
                f" last input: {group['lastInput'][:250]}"
            )
        summary = (
            f"{sent} inputs of {CI_COUNT} sent in {CI_SECONDS:g} s; SIP replies {self.replies.codes}; HTTP {self.httpStatus}; "
            f"responder answered {self.responder.answered}; sandbox {report['sandbox']}; levels {report['levels']}"
        )
        if problems:
            self.failedAlready = True
            del a, b
            self.fail("\n".join(["", *problems, summary]))


def _rpcRequest(method: str, params: List[Any]) -> bytes:
    body = json.dumps({"jsonrpc": "2.0", "method": method, "params": params, "id": 1}).encode()
    return (
        b"POST /RPC HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nConnection: close\r\n"
        b"Content-Length: %d\r\n\r\n" % len(body)
    ) + body
