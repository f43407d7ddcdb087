# -*- test-case-name: dmq.test.test_kamailio_harness -*-
"""
Tests for L{dmq.test.kamailio}, the harness that runs real Kamailio nodes.

L{KamailioHarnessIntegrationTests} starts real Kamailio processes on loopback
addresses and talks to them over JSON-RPC; it is skipped when Kamailio is not
installed, unless C{DMQ_REQUIRE_KAMAILIO=1}.  The other classes need no
Kamailio.
"""

from __future__ import annotations

import os
from typing import Any, Generator, List

from twisted.internet.defer import Deferred, inlineCallbacks, succeed
from twisted.internet.task import Clock
from twisted.trial.unittest import SkipTest, TestCase

from dmq.test import kamailio
from dmq.test.kamailio import (
    SKIP_REASON,
    KamailioNode,
    KamailioNotFound,
    KamailioRPCError,
    KamailioStartError,
    WaitTimeout,
    liveGroupMembers,
    waitFor,
)

SEED_IP = "127.0.0.21"
JOINER_IP = "127.0.0.22"
SOLO_IP = "127.0.0.23"


class KamailioHarnessIntegrationTests(TestCase):
    """
    Real Kamailio 5.6 nodes started, queried and stopped by L{KamailioNode}.
    """

    skip = SKIP_REASON
    timeout = 20

    def assertProcessesGone(self, pid: int) -> None:
        """
        Assert that the node whose main process was C{pid} left nothing alive.
        """
        with self.assertRaises(ProcessLookupError):
            os.kill(pid, 0)
        self.assertEqual(liveGroupMembers(pid), [])

    def assertAllGone(self, pids: List[int]) -> None:
        """
        Assert that none of the nodes whose main processes were C{pids} left
        anything alive.
        """
        for pid in pids:
            self.assertProcessesGone(pid)

    def bothActive(self, a: KamailioNode, b: KamailioNode) -> Deferred[bool]:
        """
        Whether C{a} lists C{b} as active and C{b} lists C{a} as active.
        """

        @inlineCallbacks
        def check() -> Generator[Deferred[Any], Any, bool]:
            aPeers = yield a.peerStatuses()
            bPeers = yield b.peerStatuses()
            return bool(
                aPeers.get(b.hostPort) == "active"
                and bPeers.get(a.hostPort) == "active"
            )

        return check()

    def hasValue(
        self, node: KamailioNode, table: str, key: str, value: object
    ) -> Deferred[bool]:
        """
        Whether C{node}'s C{table} holds C{value} under C{key}.
        """
        return node.htableGet(table, key).addCallback(lambda found: found == value)

    @inlineCallbacks
    def test_busFormsReplicatesAndStops(self) -> Generator[Deferred[Any], Any, None]:
        """
        Two nodes form a bus, replicate htable cells both ways (but not the
        local table), and a SIGTERM stop leaves no process behind.
        """
        pids: List[int] = []
        # Registered first, so it runs after the nodes' own cleanups.
        self.addCleanup(self.assertAllGone, pids)
        seed = KamailioNode.forTest(self, SEED_IP, port=5060)
        joiner = KamailioNode.forTest(
            self, JOINER_IP, port=5060, notificationAddress=[seed.uri]
        )
        yield seed.start()
        yield joiner.start()
        pids.extend(node.pid for node in (seed, joiner) if node.pid is not None)
        self.assertEqual(seed.pingInterval, 5)

        yield waitFor(
            lambda: self.bothActive(seed, joiner),
            timeout=2,
            description="both nodes to list each other active",
        )
        nodes = yield seed.listNodes()
        self.assertEqual(
            sorted((n["host"], n["port"], n["status"], n["local"]) for n in nodes),
            [(SEED_IP, "5060", "active", 1), (JOINER_IP, "5060", "active", 0)],
        )

        yield seed.htableSets("local", "here", "only")
        yield seed.htableSets("kdmq", "greeting", "hello world")
        yield waitFor(
            lambda: self.hasValue(joiner, "kdmq", "greeting", "hello world"),
            timeout=2,
            description="the string cell to reach the joiner",
        )
        yield joiner.htableSeti("kdmq", "counter", 42)
        yield waitFor(
            lambda: self.hasValue(seed, "kdmq", "counter", 42),
            timeout=2,
            description="the integer cell to reach the seed",
        )
        local = yield joiner.htableGet("local", "here")
        self.assertIsNone(local)
        items = yield joiner.htableItems("kdmq")
        self.assertEqual(items, {"greeting": "hello world", "counter": 42})

        pid = joiner.pid
        assert pid is not None
        yield joiner.stop()
        self.assertFalse(joiner.running)
        self.assertIsNone(joiner.pid)
        self.assertProcessesGone(pid)
        self.assertFalse(os.path.exists(joiner.pidPath.path))

    @inlineCallbacks
    def test_killAndRestart(self) -> Generator[Deferred[Any], Any, None]:
        """
        L{KamailioNode.kill} SIGKILLs the whole process tree, and
        L{KamailioNode.start} brings the node back on the same address.
        """
        node = KamailioNode.forTest(self, SOLO_IP, port=5070)
        yield node.start()
        pid = node.pid
        assert pid is not None
        yield node.kill()
        self.assertProcessesGone(pid)

        yield node.start()
        self.assertNotEqual(node.pid, pid)
        nodes = yield node.listNodes()
        self.assertEqual(
            [(n["host"], n["port"], n["local"]) for n in nodes], [(SOLO_IP, "5070", 1)]
        )

    @inlineCallbacks
    def test_rpcErrors(self) -> Generator[Deferred[Any], Any, None]:
        """
        An RPC error reply fails with L{KamailioRPCError}; a missing htable
        key reads as C{None}.
        """
        node = KamailioNode.forTest(self, SOLO_IP, port=5071)
        yield node.start()
        error = yield self.assertFailure(node.rpc("no.such.method"), KamailioRPCError)
        self.assertEqual((error.code, error.message), (500, "Method Not Found"))
        missing = yield node.htableGet("kdmq", "absent")
        self.assertIsNone(missing)
        error = yield self.assertFailure(
            node.htableGet("nosuchtable", "k"), KamailioRPCError
        )
        self.assertEqual(error.message, "No such htable")
        error = yield self.assertFailure(
            node.htableDelete("kdmq", "absent"), KamailioRPCError
        )
        self.assertEqual(error.code, 404)

    @inlineCallbacks
    def test_startFailureShowsLog(self) -> Generator[Deferred[Any], Any, None]:
        """
        A node whose Kamailio exits while starting fails C{start} with
        L{KamailioStartError} and the end of its log, and leaves no process.
        """
        node = _BrokenConfigNode(self.mktemp(), SOLO_IP, port=5072)
        self.addCleanup(node.stop)
        error = yield self.assertFailure(node.start(), KamailioStartError)
        self.assertIn("exited while starting", str(error))
        self.assertIn("bad config file", str(error))
        self.assertFalse(node.running)

    @inlineCallbacks
    def test_addressInUse(self) -> Generator[Deferred[Any], Any, None]:
        """
        C{start} refuses an address that is already taken, even by another
        Kamailio (which binds with C{SO_REUSEADDR}, so a second Kamailio
        would share the address instead of failing).
        """
        first = KamailioNode.forTest(self, SOLO_IP, port=5073)
        yield first.start()
        second = KamailioNode.forTest(self, SOLO_IP, port=5073, name="second")
        error = yield self.assertFailure(second.start(), KamailioStartError)
        self.assertIn("127.0.0.23:5073 is already in use", str(error))
        self.assertFalse(second.running)


class _BrokenConfigNode(KamailioNode):
    """
    A node whose configuration Kamailio refuses.
    """

    def renderConfig(self, socketDir: str) -> str:
        config = super().renderConfig(socketDir)
        return config + "\nthis_is_not_a_kamailio_directive = 1\n"


class SkipAndRequireTests(TestCase):
    """
    L{kamailio.skipUnlessKamailio} skips, or fails when Kamailio is required.
    """

    def test_found(self) -> None:
        """
        With a binary, it returns its path.
        """
        self.patch(kamailio, "findKamailio", lambda: "/opt/kamailio")
        self.assertEqual(kamailio.skipUnlessKamailio(), "/opt/kamailio")

    def test_missingSkips(self) -> None:
        """
        Without a binary and without C{DMQ_REQUIRE_KAMAILIO=1}, the test skips.
        """
        self.patch(kamailio, "findKamailio", lambda: None)
        environ = dict(os.environ)
        environ.pop(kamailio.REQUIRE_ENV, None)
        self.patch(os, "environ", environ)
        with self.assertRaises(SkipTest) as raised:
            kamailio.skipUnlessKamailio()
        self.assertIn("Kamailio is not installed", str(raised.exception))
        self.assertIsNotNone(kamailio._skipReason())

    def test_missingRequiredFails(self) -> None:
        """
        Without a binary and with C{DMQ_REQUIRE_KAMAILIO=1}, it is a failure,
        and the integration tests are not skipped.
        """
        self.patch(kamailio, "findKamailio", lambda: None)
        self.patch(os, "environ", dict(os.environ, **{kamailio.REQUIRE_ENV: "1"}))
        self.assertRaises(KamailioNotFound, kamailio.skipUnlessKamailio)
        self.assertTrue(issubclass(KamailioNotFound, self.failureException))
        self.assertIsNone(kamailio._skipReason())

    def test_startWithoutBinary(self) -> None:
        """
        L{KamailioNode.start} without a binary fails with L{KamailioNotFound}.
        """
        node = KamailioNode(self.mktemp(), SOLO_IP, binary=None)
        self.failureResultOf(node.start(), KamailioNotFound)

    def test_loopbackOnly(self) -> None:
        """
        A node address outside 127.0.0.0/8, or a ping interval under 5, is
        refused.
        """
        self.assertRaises(ValueError, KamailioNode, "run", "10.0.0.1")
        self.assertRaises(ValueError, KamailioNode, "run", SEED_IP, pingInterval=4)


class RenderTests(TestCase):
    """
    L{KamailioNode} renders the configuration template and the command line.
    """

    def test_config(self) -> None:
        """
        Every placeholder is filled; one notification_address line per seed.
        """
        node = KamailioNode(
            self.mktemp(),
            JOINER_IP,
            port=5062,
            notificationAddress=["sip:127.0.0.21:5060", "sip:127.0.0.23:5060"],
            binary="/usr/sbin/kamailio",
        )
        text = node.renderConfig("/tmp/kdmq-x")
        self.assertNotIn("@@NOTIFICATION", text)
        self.assertIn("listen=udp:127.0.0.22:5062\n", text)
        self.assertIn('modparam("dmq", "server_address", "sip:127.0.0.22:5062")', text)
        self.assertIn('modparam("dmq", "ping_interval", 5)', text)
        self.assertIn(
            'modparam("jsonrpcs", "dgram_socket", "/tmp/kdmq-x/kamailio_rpc.sock")',
            text,
        )
        self.assertEqual(
            [
                line
                for line in text.splitlines()
                if line.startswith('modparam("dmq", "notification_address"')
            ],
            [
                'modparam("dmq", "notification_address", "sip:127.0.0.21:5060")',
                'modparam("dmq", "notification_address", "sip:127.0.0.23:5060")',
            ],
        )

    def test_commandLine(self) -> None:
        """
        Optional features are C{-A} defines of the template.
        """
        node = KamailioNode(
            "run", SEED_IP, frTimer=2000, initSync=True, binary="/usr/sbin/kamailio"
        )
        argv = node.commandLine()
        self.assertEqual(argv[0], "/usr/sbin/kamailio")
        self.assertIn("-DD", argv)
        self.assertIn("-E", argv)
        defines = [argv[i + 1] for i, arg in enumerate(argv) if arg == "-A"]
        self.assertEqual(defines, ["WITH_FR_TIMER", "FR_TIMER=2000", "WITH_INIT_SYNC"])


class WaitForTests(TestCase):
    """
    L{waitFor} polls on the reactor it is given.
    """

    def test_eventuallyTrue(self) -> None:
        """
        It fires once the predicate (plain or L{Deferred}) is true.
        """
        clock = Clock()
        answers = iter([False, succeed(False), True])
        d = waitFor(lambda: next(answers), timeout=1, interval=0.1, reactor=clock)
        self.assertNoResult(d)
        clock.advance(0.1)
        self.assertNoResult(d)
        clock.advance(0.1)
        self.assertIsNone(self.successResultOf(d))

    def test_timeout(self) -> None:
        """
        It fails with L{WaitTimeout}, naming what it waited for.
        """
        clock = Clock()
        d = waitFor(
            lambda: False, timeout=1, interval=0.3, description="godot", reactor=clock
        )
        clock.pump([0.3] * 4)
        failure = self.failureResultOf(d, WaitTimeout)
        self.assertIn("godot", str(failure.value))
        self.assertIn("5 attempts", str(failure.value))

    def test_predicateError(self) -> None:
        """
        An exception from the predicate fails the wait at once.
        """
        d = waitFor(lambda: 1 / 0, reactor=Clock())
        self.failureResultOf(d, ZeroDivisionError)
