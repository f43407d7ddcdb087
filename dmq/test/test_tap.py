# -*- test-case-name: dmq.test.test_tap -*-
"""
Tests for L{dmq.tap}: the options, the config file, and what L{makeService}
builds and leaves behind when it stops.
"""

from __future__ import annotations

import inspect
import sys
import types

from twisted.internet.address import IPv4Address
from twisted.internet.interfaces import IReactorUDP
from twisted.internet.testing import MemoryReactorClock
from twisted.logger import capturedLogs
from twisted.python import usage
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import implementer

from dmq import sip
from dmq.bus import DMQBus
from dmq.control.listener import LazyControlService
from dmq.interfaces import IDMQPeer, PeerResponse
from dmq.node import NodeManager
from dmq.notification import NotificationPeer
from dmq.ping import PingService
from dmq.service import SIPServer
from dmq.tap import (
    DMQNodeService,
    NodeConfig,
    Options,
    ServerSocket,
    makeNodeService,
    makeService,
    parseServerSocket,
)

LOCAL = ["--server-address", "sip:127.0.0.11:5060"]


@implementer(IDMQPeer)
class Greeter:
    """
    A peer for C{--peer}: made with the node, or used as it is.
    """

    description = "says hello"

    def __init__(self, node=None, peerId="greeter"):
        self.node = node
        self.peerId = peerId

    def messageReceived(self, request, node):
        return PeerResponse(200, "OK")

    def nodeAdded(self, node):
        pass


def _peerModule(testCase):
    """
    Install a module C{dmq_test_peers} with peers and not-peers to name with
    C{--peer}.
    """
    module = types.ModuleType("dmq_test_peers")

    def broken(node):
        raise RuntimeError("no tables configured")

    # A module built at run time has no attributes its type knows of.
    vars(module).update(
        Greeter=Greeter,
        greeter=Greeter(peerId="greeter"),
        other=Greeter(peerId="other"),
        notification=Greeter(peerId="notification_peer"),
        HTableLike=Greeter(peerId="htable"),
        notAPeer=42,
        makesNothing=lambda node: object(),
        broken=broken,
    )
    sys.modules[module.__name__] = module
    testCase.addCleanup(sys.modules.pop, module.__name__)


def parse(*arguments):
    options = Options()
    options.parseOptions(list(arguments))
    return options


class OptionsTests(SynchronousTestCase):
    """
    L{Options}: Kamailio's parameter names, their defaults, and a
    L{usage.UsageError} naming the option for every bad value.
    """

    def assertUsageError(self, arguments, *fragments):
        error = self.assertRaises(usage.UsageError, parse, *arguments)
        for fragment in fragments:
            self.assertIn(fragment, str(error))
        return error

    def test_defaults(self):
        """
        Without options, a node on C{sip:127.0.0.1:5060} with Kamailio's
        defaults.
        """
        options = parse()
        self.assertEqual(options["server-address"], sip.URI("127.0.0.1", 5060))
        self.assertEqual(options["bind-address"], ("127.0.0.1", 5060))
        self.assertIsNone(options["server-socket"])
        self.assertEqual(options["notification-address"], [])
        self.assertEqual(options["notification-channel"], "notification_peer")
        self.assertEqual(options["num-workers"], 2)
        self.assertEqual(options["ping-interval"], 60)
        self.assertIs(options["remove-inactive"], True)
        self.assertIs(options["multi-notify"], False)
        self.assertIs(options["fail-count-enabled"], False)
        self.assertEqual(options["fail-count-threshold-not-active"], 0)
        self.assertEqual(options["fail-count-threshold-disabled"], 1)
        self.assertIsNone(options["control"])
        self.assertEqual(options["peer"], [])

    def test_allOptions(self):
        """
        Every option is read and converted.
        """
        options = parse(
            *LOCAL,
            "--server-socket", "udp:127.0.0.11:5060",
            "--notification-address", "sip:127.0.0.12:5060",
            "--notification-address", "sip:127.0.0.13:5060",
            "--notification-channel", "members",
            "--multi-notify",
            "--num-workers", "4",
            "--ping-interval", "5",
            "--ping-timeout", "2.5",
            "--no-remove-inactive",
            "--fail-count-enabled",
            "--fail-count-threshold-not-active", "2",
            "--fail-count-threshold-disabled", "3",
            "--t1", "0.25",
            "--t2", "2",
            "--t4", "3",
            "--max-transactions", "50",
            "--max-queue", "10",
            "--handler-timeout", "5",
            "--control", "tcp:5080:interface=127.0.0.11",
        )
        self.assertEqual(
            options["notification-address"],
            [sip.URI("127.0.0.12", 5060), sip.URI("127.0.0.13", 5060)],
        )
        self.assertEqual(options["server-socket"], ServerSocket("udp", "127.0.0.11", 5060))
        self.assertEqual(options["notification-channel"], "members")
        self.assertIs(options["multi-notify"], True)
        self.assertEqual(options["num-workers"], 4)
        self.assertEqual(options["ping-interval"], 5.0)
        self.assertEqual(options["ping-timeout"], 2.5)
        self.assertIs(options["remove-inactive"], False)
        self.assertIs(options["fail-count-enabled"], True)
        self.assertEqual(options["fail-count-threshold-not-active"], 2)
        self.assertEqual(options["fail-count-threshold-disabled"], 3)
        self.assertEqual((options["t1"], options["t2"], options["t4"]), (0.25, 2.0, 3.0))
        self.assertEqual(options["max-transactions"], 50)
        self.assertEqual(options["max-queue"], 10)
        self.assertEqual(options["handler-timeout"], 5.0)
        self.assertEqual(options["control"], "tcp:5080:interface=127.0.0.11")

    def test_badServerAddress(self):
        """
        A server address that is not a SIP URI, names a host, has no port, a
        port out of range, or another transport is refused.
        """
        for bad, fragment in [
            ("127.0.0.11:5060", "not a SIP URI"),
            ("sip:localhost:5060", "not a name"),
            ("sip:127.0.0.11", "give the port"),
            ("sip:127.0.0.11:0", "give the port"),
            ("sip:127.0.0.11:70000", "Bad port"),
            ("sip:127.0.0.11:5060;transport=sctp", "udp, tcp or tls"),
            ("sip:peer@127.0.0.11:5060", "no user part"),
        ]:
            self.assertUsageError(["--server-address", bad], "--server-address", fragment)

    def test_serverAddressNotLocal(self):
        """
        A server address this host cannot bind is refused at once, not when
        twistd starts the node.
        """
        self.assertUsageError(
            ["--server-address", "sip:192.0.2.1:5060"],
            "--server-address",
            "192.0.2.1 is not an address of this host",
        )

    def test_serverSocket(self):
        """
        C{--server-socket} is what we bind: C{server_address} stays what we
        advertise.
        """
        options = parse("--server-address", "sip:192.0.2.1:5060", "--server-socket", "udp:127.0.0.11:5070")
        self.assertEqual(options["server-address"], sip.URI("192.0.2.1", 5060))
        self.assertEqual(options["bind-address"], ("127.0.0.11", 5070))

    def test_badServerSocket(self):
        """
        A server socket must be C{udp:IP:PORT} on an address of this host.
        """
        for bad, fragment in [
            ("127.0.0.11:5060", "not proto:host:port"),
            ("sctp:127.0.0.11:5060", "udp, tcp or tls"),
            ("udp:localhost:5060", "must be an IP address"),
            ("udp:127.0.0.11:0", "1 to 65535"),
            ("udp:127.0.0.11:65536", "1 to 65535"),
            ("udp:192.0.2.1:5060", "not an address of this host"),
        ]:
            self.assertUsageError(LOCAL + ["--server-socket", bad], "--server-socket", fragment)

    def test_ipv6ServerSocket(self):
        """
        An IPv6 server socket is written in brackets.
        """
        self.assertEqual(parseServerSocket("udp:[::1]:5060"), ServerSocket("udp", "::1", 5060))
        self.assertEqual(str(ServerSocket("udp", "::1", 5060)), "udp:[::1]:5060")

    def test_badNotificationAddress(self):
        """
        A notification address must be a SIP URI over UDP with a port.
        """
        for bad, fragment in [
            ("127.0.0.12", "not a SIP URI"),
            ("sip:127.0.0.12:0", "port 0"),
            ("sip:127.0.0.12:5060;transport=sctp", "udp, tcp or tls"),
        ]:
            self.assertUsageError(LOCAL + ["--notification-address", bad], "--notification-address", fragment)

    def test_badNumbers(self):
        """
        Numbers out of range, or not numbers, are refused with the option's
        name.
        """
        for option, value, fragment in [
            ("--ping-interval", "0", "must be at least 1"),
            ("--ping-interval", "0.5", "must be at least 1"),
            ("--ping-interval", "often", "not a number"),
            ("--ping-interval", "nan", "not a number"),
            ("--ping-timeout", "0", "must be positive"),
            ("--num-workers", "0", "must be at least 1"),
            ("--num-workers", "1.5", "not a whole number"),
            ("--fail-count-threshold-disabled", "-1", "must be at least 0"),
            ("--max-queue", "0", "must be at least 1"),
            ("--t1", "-1", "must be positive"),
        ]:
            self.assertUsageError(LOCAL + [option, value], option, fragment)

    def test_timers(self):
        """
        T2 must not be under T1, and the handler timeout must be under Timer
        F.
        """
        self.assertUsageError(LOCAL + ["--t1", "2", "--t2", "1"], "--t2", "smaller than t1")
        self.assertUsageError(LOCAL + ["--handler-timeout", "32"], "--handler-timeout", "Timer F")

    def test_badChannel(self):
        """
        The notification channel must be a SIP user part.
        """
        self.assertUsageError(LOCAL + ["--notification-channel", "a b"], "--notification-channel")

    def test_badControl(self):
        """
        The control endpoint must be a server endpoint Twisted can parse.
        """
        self.assertUsageError(LOCAL + ["--control", "nonsense:1"], "--control", "not a Twisted server endpoint")
        self.assertUsageError(LOCAL + ["--control", "tcp:port"], "--control")
        self.assertUsageError(LOCAL + ["--control", "tcp:70000"], "--control", "out of range")

    def test_peers(self):
        """
        C{--peer} loads providers and factories by dotted name.
        """
        _peerModule(self)
        options = parse(*LOCAL, "--peer", "dmq_test_peers.greeter", "--peer", "dmq_test_peers.Greeter")
        self.assertEqual(
            options["peer"],
            [
                ("dmq_test_peers.greeter", sys.modules["dmq_test_peers"].greeter),
                ("dmq_test_peers.Greeter", Greeter),
            ],
        )

    def test_badPeers(self):
        """
        An unknown module or name, an object that is neither a peer nor
        callable, and a duplicate peer id are refused.
        """
        _peerModule(self)
        for names, fragment in [
            (["no_such_module_here.peer"], "cannot import"),
            (["dmq_test_peers.nothing"], "cannot import"),
            (["dmq_test_peers.notAPeer"], "neither an IDMQPeer provider"),
            (["dmq_test_peers.greeter", "dmq_test_peers.greeter"], "duplicate peer id 'greeter'"),
            (["dmq_test_peers.notification"], "the notification channel"),
        ]:
            arguments = list(LOCAL)
            for name in names:
                arguments += ["--peer", name]
            self.assertUsageError(arguments, "--peer", fragment)


class BooleanFlagTests(SynchronousTestCase):
    """
    Booleans are flags on the command line, C{--name} and C{--no-name}, and
    0/1 or false/true in a config file, under Kamailio's names.
    """

    def test_flagsBothWays(self):
        """
        Every boolean has a flag that turns it on and one that turns it off.
        """
        for option, field in [
            ("remove-inactive", "removeInactive"),
            ("fail-count-enabled", "failCountEnabled"),
            ("multi-notify", "multiNotify"),
            ("usrloc-sync", "usrlocSync"),
            ("dialog", "dialog"),
        ]:
            self.assertIs(getattr(parse(*LOCAL, f"--{option}").nodeConfig, field), True)
            self.assertIs(getattr(parse(*LOCAL, f"--no-{option}").nodeConfig, field), False)
        options = parse(*LOCAL, "--htable", "kdmq=>size=8;dmqreplicate=1", "--no-htable-init-sync")
        self.assertIs(options.nodeConfig.htableInitSync, False)

    def test_bothRefused(self):
        """
        C{--name} with C{--no-name} is a usage error naming both.
        """
        error = self.assertRaises(usage.UsageError, parse, *LOCAL, "--fail-count-enabled", "--no-fail-count-enabled")
        self.assertIn("--fail-count-enabled and --no-fail-count-enabled", str(error))

    def test_valueRefused(self):
        """
        The old spellings, a flag with a value (C{--remove-inactive=0},
        C{--remove-inactive 0}), are refused with the flags to use instead.
        """
        for arguments in (
            ["--remove-inactive=0"], ["--remove-inactive", "0"], ["--fail-count-enabled=1"],
            ["--multi-notify", "true"], ["--no-usrloc-sync=1"],
        ):
            error = self.assertRaises(usage.UsageError, parse, *LOCAL, *arguments)
            self.assertIn("booleans are flags without a value", str(error))
        error = self.assertRaises(usage.UsageError, parse, *LOCAL, "--remove-inactive=0")
        self.assertIn("--remove-inactive=0: ", str(error))
        self.assertIn("--no-remove-inactive", str(error))
        self.assertIn("remove_inactive = 0 or 1 in a --config file", str(error))

    def test_afterDoubleDash(self):
        """
        Nothing after C{--} is taken for a flag's value.
        """
        options = Options()
        self.assertRaises(usage.UsageError, options.parseOptions, [*LOCAL, "--", "--remove-inactive=0"])

    def test_configFile(self):
        """
        In a config file, a boolean is 0 or 1, or false or true; the command
        line's flag overrides it.
        """
        for text, expected in [("0", False), ("1", True), ("false", False), ("true", True)]:
            path = self.mktemp()
            with open(path, "w") as f:
                f.write(f"remove_inactive = {text}\nfail_count_enabled = {text}\n")
            config = parse(*LOCAL, "--config", path).nodeConfig
            self.assertEqual((config.removeInactive, config.failCountEnabled), (expected, expected))
            config = parse(*LOCAL, "--config", path, "--no-remove-inactive", "--fail-count-enabled").nodeConfig
            self.assertEqual((config.removeInactive, config.failCountEnabled), (False, True))
        path = self.mktemp()
        with open(path, "w") as f:
            f.write('remove_inactive = "maybe"\n')
        error = self.assertRaises(usage.UsageError, parse, *LOCAL, "--config", path)
        self.assertIn("remove_inactive: expected 0 or 1 (or true or false)", str(error))

    def test_noShortN(self):
        """
        C{-n} is twistd's own (C{--nodaemon}): it names no option of
        C{twistd dmq}.
        """
        self.assertRaises(usage.UsageError, parse, *LOCAL, "-n", "sip:127.0.0.12:5060")


class HelpTests(SynchronousTestCase):
    """
    C{twistd dmq --help} and C{--version}.
    """

    def test_examplesWhole(self):
        """
        The help's examples and option names are never broken by the
        wrapping, at the usual widths (a terminal of 80 columns and more).
        """
        for width in (80, 100, 120):
            text = Options().getUsage(width)
            words = text.split()
            for whole in (
                "'kdmq=>size=8;dmqreplicate=1'", "'kdmq=>size=8;autoexpire=0;dmqreplicate=1'",
                "--no-remove-inactive", "--server-address", "tcp:5080,", "--control-token-file",
            ):
                self.assertTrue(any(whole in word for word in words), f"{whole} broken at width {width}")
            for line in text.splitlines():
                self.assertFalse(line.rstrip().endswith("-") and not line.rstrip().endswith(" -"), line)

    def test_flagsListed(self):
        """
        Each boolean shows its flag with its default and its negation.
        """
        text = Options().getUsage(200)
        self.assertIn("--remove-inactive", text)
        self.assertIn("[default: on]", text)
        self.assertIn("--no-remove-inactive", text)
        self.assertIn("--no-multi-notify", text)
        self.assertNotIn("-n, --notification-address", text)

    def test_version(self):
        """
        C{--version} prints dmq's version, not Twisted's.
        """
        from dmq import __version__

        output: list[str] = []
        self.patch(sys, "stdout", types.SimpleNamespace(write=output.append, flush=lambda: None))
        error = self.assertRaises(SystemExit, parse, "--version")
        self.assertEqual(error.code, 0)
        self.assertEqual("".join(output), f"dmq {__version__}\n")


class ConfigFileTests(SynchronousTestCase):
    """
    C{--config FILE}: Kamailio's parameter names as TOML keys, overridden by
    the command line.
    """

    def config(self, text):
        path = self.mktemp()
        with open(path, "w", encoding="utf-8") as f:
            f.write(text)
        return path

    def test_read(self):
        """
        Every kind of value is read: strings, numbers, booleans, lists.
        """
        _peerModule(self)
        path = self.config(
            'server_address = "sip:127.0.0.11:5060"\n'
            'server_socket = "udp:127.0.0.11:5060"\n'
            'notification_address = ["sip:127.0.0.12:5060", "sip:127.0.0.13:5060"]\n'
            'notification_channel = "members"\n'
            "multi_notify = 1\n"
            "num_workers = 3\n"
            "ping_interval = 10\n"
            "ping_timeout = 1.5\n"
            "remove_inactive = false\n"
            "fail_count_enabled = true\n"
            "t1 = 0.25\n"
            'control = "tcp:5080:interface=127.0.0.11"\n'
            'peer = ["dmq_test_peers.greeter"]\n'
        )
        options = parse("--config", path)
        self.assertEqual(options["server-address"], sip.URI("127.0.0.11", 5060))
        self.assertEqual(
            options["notification-address"],
            [sip.URI("127.0.0.12", 5060), sip.URI("127.0.0.13", 5060)],
        )
        self.assertEqual(options["notification-channel"], "members")
        self.assertIs(options["multi-notify"], True)
        self.assertEqual(options["num-workers"], 3)
        self.assertEqual(options["ping-interval"], 10.0)
        self.assertEqual(options["ping-timeout"], 1.5)
        self.assertIs(options["remove-inactive"], False)
        self.assertIs(options["fail-count-enabled"], True)
        self.assertEqual(options["t1"], 0.25)
        self.assertEqual(options["control"], "tcp:5080:interface=127.0.0.11")
        self.assertEqual([name for name, _ in options["peer"]], ["dmq_test_peers.greeter"])

    def test_singleAddress(self):
        """
        A repeatable parameter may be given as one string.
        """
        path = self.config('server_address = "sip:127.0.0.11:5060"\nnotification_address = "sip:127.0.0.12:5060"\n')
        self.assertEqual(parse("--config", path)["notification-address"], [sip.URI("127.0.0.12", 5060)])

    def test_commandLineOverrides(self):
        """
        The command line wins over the file, even when it gives the default
        value; a repeatable option replaces the file's list.
        """
        path = self.config(
            'server_address = "sip:127.0.0.11:5060"\n'
            "ping_interval = 10\n"
            "num_workers = 5\n"
            'notification_address = ["sip:127.0.0.12:5060"]\n'
        )
        options = parse("--config", path, "--ping-interval", "60", "--notification-address", "sip:127.0.0.13:5060")
        self.assertEqual(options["ping-interval"], 60.0)
        self.assertEqual(options["num-workers"], 5)
        self.assertEqual(options["notification-address"], [sip.URI("127.0.0.13", 5060)])

    def test_unknownKey(self):
        """
        A key that is no parameter is refused by name, with a suggestion
        when one is close.
        """
        path = self.config('server_address = "sip:127.0.0.11:5060"\nping_intervall = 10\n')
        error = self.assertRaises(usage.UsageError, parse, "--config", path)
        self.assertIn("ping_intervall: unknown parameter (did you mean ping_interval?)", str(error))
        path = self.config("colour = 1\n")
        error = self.assertRaises(usage.UsageError, parse, "--config", path)
        self.assertIn("colour: unknown parameter", str(error))

    def test_kamailioOnlyKey(self):
        """
        A Kamailio parameter that means nothing here is refused as such.
        """
        path = self.config("worker_usleep = 100\n")
        error = self.assertRaises(usage.UsageError, parse, "--config", path)
        self.assertIn("worker_usleep: a Kamailio parameter that dmq does not support", str(error))

    def test_badValue(self):
        """
        A bad value names the file and the key.
        """
        path = self.config('server_address = "sip:127.0.0.11:5060"\nping_interval = 0\n')
        error = self.assertRaises(usage.UsageError, parse, "--config", path)
        self.assertEqual(str(error), f"--config {path}: ping_interval: must be at least 1, not 0")
        path = self.config('server_address = "sip:127.0.0.11:5060"\nnum_workers = [1, 2]\n')
        error = self.assertRaises(usage.UsageError, parse, "--config", path)
        self.assertIn("num_workers: expected a string or a number, not an array", str(error))

    def test_unreadable(self):
        """
        A missing file, or one that is not TOML, is a usage error.
        """
        error = self.assertRaises(usage.UsageError, parse, "--config", self.mktemp())
        self.assertIn("--config: cannot read", str(error))
        path = self.config("server_address = \n")
        error = self.assertRaises(usage.UsageError, parse, "--config", path)
        self.assertIn("is not valid TOML", str(error))


class _FakePort:
    """
    A listening port of L{FakeReactor}: records writes and whether it
    stopped.
    """

    def __init__(self, kind, host, port, protocol=None):
        self._address = IPv4Address(kind, host, port)
        self.protocol = protocol
        self.listening = True
        self.written = []

    def getHost(self):
        return self._address

    def write(self, data, address):
        self.written.append((data, address))

    def stopListening(self):
        self.listening = False
        if self.protocol is not None:
            self.protocol.doStop()


@implementer(IReactorUDP)
class FakeReactor(MemoryReactorClock):
    """
    A L{MemoryReactorClock} that also listens on UDP, and whose ports say
    whether they were stopped.
    """

    def __init__(self):
        MemoryReactorClock.__init__(self)
        self.ports = []

    def listenUDP(self, port, protocol, interface="", maxPacketSize=8192):
        listening = _FakePort("UDP", interface, port, protocol)
        self.ports.append(listening)
        protocol.makeConnection(listening)
        return listening

    def listenTCP(self, port, factory, backlog=50, interface=""):
        MemoryReactorClock.listenTCP(self, port, factory, backlog, interface)
        listening = _FakePort("TCP", interface, port)
        self.ports.append(listening)
        return listening


class MakeServiceTests(SynchronousTestCase):
    """
    L{makeService}: one L{DMQNodeService} with every part under it, that
    stops leaving nothing behind.
    """

    def build(self, *arguments):
        self.reactor = FakeReactor()
        return makeService(parse(*LOCAL, *arguments), self.reactor)

    def test_services(self):
        """
        The node holds the UDP server, the node manager, the bus, the
        membership peer, the ping and, when asked for, the control endpoint,
        in the order they start.
        """
        node = self.build("--control", "tcp:5080:interface=127.0.0.11")
        self.assertIsInstance(node, DMQNodeService)
        self.assertEqual(
            [type(child) for child in node],
            [SIPServer, NodeManager, DMQBus, NotificationPeer, PingService, LazyControlService],
        )
        self.assertIs(node.control, list(node)[-1])

    def test_noControl(self):
        """
        Without C{--control}, no control endpoint, but the RPC methods and
        the metrics exist for a program to serve.
        """
        node = self.build()
        self.assertIsNone(node.control)
        self.assertNotIn(LazyControlService, [type(child) for child in node])
        self.assertIn("dmq.list_nodes", node.rpc.names())
        self.assertIsNotNone(node.metrics)

    def test_options(self):
        """
        The options reach the parts.
        """
        node = self.build("--ping-interval", "7", "--notification-channel", "members", "--notification-address", "sip:127.0.0.12:5060")
        self.assertEqual(node.ping.pingInterval, 7)
        self.assertEqual(node.notification.peerId, "members")
        self.assertEqual(node.bus.notificationChannel, "members")
        self.assertEqual(node.seeds, [sip.URI("127.0.0.12", 5060)])

    def test_serverSocket(self):
        """
        With C{--server-socket}, the UDP server binds it, and the node still
        calls itself by C{--server-address}.
        """
        self.reactor = FakeReactor()
        node = makeService(
            parse("--server-address", "sip:192.0.2.1:5060", "--server-socket", "udp:127.0.0.11:5070"),
            self.reactor,
        )
        node.startService()
        self.addCleanup(node.stopService)
        self.assertEqual(self.reactor.ports[0].getHost(), IPv4Address("UDP", "127.0.0.11", 5070))
        self.assertEqual(node.nodeManager.localNode.uri, sip.URI("192.0.2.1", 5060))
        self.assertEqual(node.protocol.sentBy, ("192.0.2.1", 5060))

    def test_stopLeavesNothing(self):
        """
        Stopping the node, with a join in flight, stops every port and
        leaves no delayed call and no transaction.
        """
        node = self.build("--notification-address", "sip:127.0.0.12:5060", "--control", "tcp:5080:interface=127.0.0.11")
        node.startService()
        udp, tcp = self.reactor.ports
        self.assertEqual(udp.getHost(), IPv4Address("UDP", "127.0.0.11", 5060))
        self.assertEqual(self.reactor.tcpServers[0][0], 5080)
        self.assertEqual(self.reactor.tcpServers[0][3], "127.0.0.11")
        # The join went out and waits for an answer.
        self.assertEqual(len(udp.written), 1)
        self.assertTrue(self.reactor.getDelayedCalls())
        self.assertEqual(node.protocol.transactions.liveClientTransactions, 1)

        stopped: list[object] = []
        node.stopService().addBoth(stopped.append)
        self.assertEqual(stopped, [None])
        self.assertFalse(udp.listening)
        self.assertFalse(tcp.listening)
        self.assertEqual(self.reactor.getDelayedCalls(), [])
        self.assertEqual(node.protocol.transactions.liveClientTransactions, 0)
        self.assertEqual(node.protocol.transactions.liveServerTransactions, 0)

    def test_startLine(self):
        """
        Starting logs one line with the address, the seeds, the peers and
        the control endpoint.
        """
        node = self.build("--notification-address", "sip:127.0.0.12:5060", "--control", "tcp:5080:interface=127.0.0.11")
        with capturedLogs() as events:
            node.startService()
        self.addCleanup(node.stopService)
        [start] = [e for e in events if "seeds" in e]
        self.assertEqual(start["node"], "sip:127.0.0.11:5060")
        self.assertEqual(start["address"], "127.0.0.11:5060")
        self.assertEqual(start["seeds"], "sip:127.0.0.12:5060")
        self.assertEqual(start["peers"], "notification_peer")
        self.assertEqual(start["control"], "tcp:5080:interface=127.0.0.11")

    def test_peerFactory(self):
        """
        A C{--peer} factory is called with the node service, and its peer is
        registered on the bus.
        """
        _peerModule(self)
        node = self.build("--peer", "dmq_test_peers.Greeter", "--peer", "dmq_test_peers.other")
        greeter, other = node.bus.peers[1:]
        self.assertIsInstance(greeter, Greeter)
        self.assertIs(greeter.node, node)
        self.assertIs(other, sys.modules["dmq_test_peers"].other)

    def test_peerService(self):
        """
        A peer that is a service without a parent starts and stops with the
        node.
        """
        from twisted.application import service

        @implementer(IDMQPeer)
        class ServicePeer(Greeter, service.Service):
            pass

        module = types.ModuleType("dmq_test_service_peer")
        vars(module)["peer"] = ServicePeer(peerId="svc")
        sys.modules[module.__name__] = module
        self.addCleanup(sys.modules.pop, module.__name__)
        node = self.build("--peer", "dmq_test_service_peer.peer")
        self.assertIs(module.peer.parent, node)

    def test_badPeerFactory(self):
        """
        A factory that fails, that makes no peer, or whose peer's id is
        taken is a usage error from L{makeService}.
        """
        _peerModule(self)
        for names, fragment in [
            (["dmq_test_peers.broken"], "no tables configured"),
            (["dmq_test_peers.makesNothing"], "does not provide IDMQPeer"),
            (["dmq_test_peers.Greeter", "dmq_test_peers.Greeter"], "already registered"),
        ]:
            arguments = []
            for name in names:
                arguments += ["--peer", name]
            error = self.assertRaises(usage.UsageError, self.build, *arguments)
            self.assertIn("--peer", str(error))
            self.assertIn(fragment, str(error))


class MakeNodeServiceTests(SynchronousTestCase):
    """
    L{makeNodeService}: a node of a L{NodeConfig}, as a program that embeds
    one builds it.
    """

    def test_config(self):
        """
        The settings reach the parts; the peers of C{peers} are added, and
        the control endpoint comes last.
        """
        _peerModule(self)
        config = NodeConfig(
            serverAddress=sip.URI("127.0.0.11", 5060),
            pingInterval=7,
            peers=(("dmq_test_peers.Greeter", Greeter),),
            control="tcp:5080:interface=127.0.0.11",
        )
        node = makeNodeService(FakeReactor(), config)
        self.assertEqual(node.ping.pingInterval, 7)
        self.assertEqual(node.bindAddress, ("127.0.0.11", 5060))
        self.assertEqual([peer.peerId for peer in node.bus.peers], ["notification_peer", "greeter"])
        greeter = node.bus.peers[1]
        assert isinstance(greeter, Greeter)
        self.assertIs(greeter.node, node)
        self.assertIs(node.control, list(node)[-1])

    def test_badPeer(self):
        """
        A peer factory that fails is a C{ValueError} naming the peer.
        """
        _peerModule(self)
        broken = sys.modules["dmq_test_peers"].broken
        config = NodeConfig(serverAddress=sip.URI("127.0.0.11", 5060), peers=(("broken", broken),))
        error = self.assertRaises(ValueError, makeNodeService, FakeReactor(), config)
        self.assertIn("broken: calling it with the node failed", str(error))

    def test_multiNotifyResolver(self):
        """
        With C{multiNotify}, a notification address named by a host name and
        no resolver given, the node makes one with Twisted's
        C{createResolver}, called as it can be called (mypy found it given
        a C{reactor} argument it does not take).
        """
        from twisted.names import client
        from twisted.names.common import ResolverBase

        real = client.createResolver
        made = []

        def createResolver(*args, **kwargs):
            inspect.signature(real).bind(*args, **kwargs)
            made.append(ResolverBase())
            return made[-1]

        self.patch(client, "createResolver", createResolver)
        config = NodeConfig(
            serverAddress=sip.URI("127.0.0.11", 5060),
            notificationAddresses=(sip.URI("dmq.example", 5060),),
            multiNotify=True,
        )
        makeNodeService(FakeReactor(), config)
        self.assertEqual(len(made), 1)


class HTableOptionsTests(SynchronousTestCase):
    """
    C{--htable} and C{--htable-init-sync}: Kamailio's table syntax, and the
    htable peer they make.
    """

    def test_tables(self):
        """
        Each C{--htable} is a table spec in Kamailio's syntax.
        """
        options = parse(
            *LOCAL,
            "--htable", "kdmq=>size=8;autoexpire=0;dmqreplicate=1",
            "--htable", "local=>size=4",
            "--htable-init-sync",
        )
        self.assertEqual([spec.name for spec in options["htable"]], ["kdmq", "local"])
        self.assertEqual([spec.dmqreplicate for spec in options["htable"]], [True, False])
        self.assertTrue(options["htable-init-sync"])

    def test_badTable(self):
        """
        A bad table spec, a table declared twice, or an init sync without a
        table, is a usage error naming the option.
        """
        for arguments, fragment in [
            (["--htable", "kdmq=>size=eight"], "--htable"),
            (["--htable", "=>size=8"], "--htable"),
            (["--htable", "t=>size=8", "--htable", "t=>size=4"], "declared twice"),
            (["--htable-init-sync"], "--htable-init-sync"),
        ]:
            error = self.assertRaises(usage.UsageError, parse, *LOCAL, *arguments)
            self.assertIn(fragment, str(error))

    def test_htablePeer(self):
        """
        With tables, the node has an htable peer, registered on the bus, under
        the node so it starts and stops with it, and its C{htable.*} control
        methods.
        """
        node = makeService(
            parse(*LOCAL, "--htable", "kdmq=>size=8;dmqreplicate=1", "--htable-init-sync"),
            FakeReactor(),
        )
        self.assertIn(node.htable, node.bus.peers)
        self.assertIn(node.htable, list(node))
        assert node.htable is not None
        self.assertEqual(node.htable.tables(), ["kdmq"])
        self.assertTrue(
            {"htable.get", "htable.sets", "htable.seti", "htable.delete", "htable.dump", "htable.listTables"}
            <= set(node.rpc.names())
        )

    def test_htablePeerIdTaken(self):
        """
        A C{--peer} named C{htable} clashes with the htable peer.
        """
        _peerModule(self)
        error = self.assertRaises(
            usage.UsageError,
            parse,
            *LOCAL,
            "--htable", "kdmq=>size=8",
            "--peer", "dmq_test_peers.HTableLike",
        )
        self.assertIn("duplicate peer id 'htable'", str(error))
