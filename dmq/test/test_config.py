# -*- test-case-name: dmq.test.test_config -*-
"""
Tests for L{dmq.config}: L{NodeConfig}'s defaults, the table it is declared
with, and the L{NodeConfig} that command lines and config files make.
"""

from __future__ import annotations

import sys
import types

import attr
from twisted.python import usage
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import implementer

from dmq import sip
from dmq.config import (
    PARAMETERS,
    NodeConfig,
    ServerSocket,
    parseServerAddress,
    parseSettings,
    readConfigFile,
)
from dmq.interfaces import IDMQPeer, PeerResponse
from dmq.node import DEFAULT_MAX_NODES
from dmq.peers.htable import parseTableSpec
from dmq.tap import Options
from dmq.transaction import T1, T2, T4


@implementer(IDMQPeer)
class _Greeter:
    peerId = "greeter"
    description = "says hello"

    def messageReceived(self, request, node):
        return PeerResponse(200, "OK")

    def nodeAdded(self, node):
        pass


def parse(*arguments: str) -> NodeConfig:
    options = Options()
    options.parseOptions(list(arguments))
    return options.nodeConfig


class NodeConfigTests(SynchronousTestCase):
    """
    L{NodeConfig}: a frozen value, Kamailio's defaults, one field per row of
    the table.
    """

    def test_defaults(self):
        """
        Every field has Kamailio's default, or ours where Kamailio has none.
        """
        config = NodeConfig()
        self.assertEqual(config.serverAddress, sip.URI("127.0.0.1", 5060))
        self.assertIsNone(config.serverSocket)
        self.assertEqual(config.notificationAddresses, ())
        self.assertEqual(config.notificationChannel, "notification_peer")
        self.assertIs(config.multiNotify, False)
        self.assertEqual(config.numWorkers, 2)
        self.assertEqual(config.pingInterval, 60.0)
        self.assertIsNone(config.pingTimeout)
        self.assertIs(config.removeInactive, True)
        self.assertIs(config.failCountEnabled, False)
        self.assertEqual(config.failCountThresholdNotActive, 0)
        self.assertEqual(config.failCountThresholdDisabled, 1)
        self.assertEqual((config.T1, config.T2, config.T4), (T1, T2, T4))
        self.assertEqual(config.maxTransactions, 10000)
        self.assertEqual(config.maxNodes, DEFAULT_MAX_NODES)
        self.assertEqual(config.maxQueue, 1024)
        self.assertEqual(config.handlerTimeout, 10.0)
        self.assertIsNone(config.control)
        self.assertEqual(config.htables, ())
        self.assertIs(config.htableInitSync, False)
        self.assertEqual((config.htableMaxCells, config.htableMaxBytes), (100000, 64 * 1024 * 1024))
        self.assertEqual(config.peers, ())
        self.assertEqual(config.bindAddress, ("127.0.0.1", 5060))

    def test_embedded(self):
        """
        A program names the settings it cares about; the rest default.
        """
        config = NodeConfig(
            serverAddress=parseServerAddress("sip:127.0.0.11:5060"),
            notificationAddresses=(sip.URI("127.0.0.12", 5060),),
        )
        self.assertEqual(config.serverAddress, sip.URI("127.0.0.11", 5060))
        self.assertEqual(config.notificationAddresses, (sip.URI("127.0.0.12", 5060),))
        self.assertEqual(config.pingInterval, NodeConfig().pingInterval)

    def test_frozen(self):
        """
        A L{NodeConfig} cannot change, and its lists are tuples, so it can be
        hashed and compared.
        """
        config = NodeConfig(notificationAddresses=[sip.URI("127.0.0.12", 5060)])  # type: ignore[arg-type]  # a list on purpose
        self.assertRaises(attr.exceptions.FrozenInstanceError, setattr, config, "numWorkers", 3)
        self.assertIsInstance(config.notificationAddresses, tuple)
        self.assertEqual(hash(config), hash(NodeConfig(notificationAddresses=(sip.URI("127.0.0.12", 5060),))))

    def test_htablesAsText(self):
        """
        Tables may be given in Kamailio's syntax; they are held parsed.
        """
        spec = "kdmq=>size=8;autoexpire=0;dmqreplicate=1"
        config = NodeConfig(htables=[spec])  # type: ignore[arg-type]  # text on purpose
        self.assertEqual(config.htables, (parseTableSpec(spec),))
        self.assertEqual(config, NodeConfig(htables=(parseTableSpec(spec),)))

    def test_bindAddress(self):
        """
        The socket bound is C{serverSocket}'s when there is one, else
        C{serverAddress}'s.
        """
        address = sip.URI("192.0.2.1", 5060)
        self.assertEqual(NodeConfig(serverAddress=address).bindAddress, ("192.0.2.1", 5060))
        config = NodeConfig(serverAddress=address, serverSocket=ServerSocket("udp", "127.0.0.11", 5070))
        self.assertEqual(config.bindAddress, ("127.0.0.11", 5070))

    def test_table(self):
        """
        Each field is filled by one setting of the table, in field order,
        and each setting's Kamailio name is its own.
        """
        self.assertEqual([p.field for p in PARAMETERS], [f.name for f in attr.fields(NodeConfig)])
        names = [p.name for p in PARAMETERS]
        self.assertEqual(len(names), len(set(names)))
        self.assertEqual(PARAMETERS[0].name, "server_address")
        self.assertEqual(PARAMETERS[0].option, "server-address")


class OptionsConfigTests(SynchronousTestCase):
    """
    L{Options} makes one L{NodeConfig} of the command line and the config
    file, and its option values are the same.
    """

    def config(self, text):
        path = self.mktemp()
        with open(path, "w", encoding="utf-8") as f:
            f.write(text)
        return path

    def test_noOptions(self):
        """
        Without options, the L{NodeConfig} is the default one.
        """
        self.assertEqual(parse(), NodeConfig())

    def test_commandLines(self):
        """
        Each command line makes the L{NodeConfig} it says.
        """
        local = sip.URI("127.0.0.11", 5060)
        for arguments, expected in [
            (["-s", "sip:127.0.0.11:5060"], NodeConfig(serverAddress=local)),
            (
                ["-s", "sip:127.0.0.11:5060", "--notification-address", "sip:127.0.0.12:5060", "--notification-address", "sip:127.0.0.13:5060"],
                NodeConfig(
                    serverAddress=local,
                    notificationAddresses=(sip.URI("127.0.0.12", 5060), sip.URI("127.0.0.13", 5060)),
                ),
            ),
            (
                [
                    "--server-address", "sip:192.0.2.1:5060", "--server-socket", "udp:127.0.0.11:5070",
                    "--ping-interval", "5", "--ping-timeout", "2.5", "--no-remove-inactive",
                    "--multi-notify", "--num-workers", "4", "--t1", "0.25", "--t2", "2",
                    "--handler-timeout", "5", "--control", "tcp:5080:interface=127.0.0.11",
                ],
                NodeConfig(
                    serverAddress=sip.URI("192.0.2.1", 5060),
                    serverSocket=ServerSocket("udp", "127.0.0.11", 5070),
                    pingInterval=5.0,
                    pingTimeout=2.5,
                    removeInactive=False,
                    multiNotify=True,
                    numWorkers=4,
                    T1=0.25,
                    T2=2.0,
                    handlerTimeout=5.0,
                    control="tcp:5080:interface=127.0.0.11",
                ),
            ),
            (
                ["-s", "sip:127.0.0.11:5060", "--htable", "kdmq=>size=8;dmqreplicate=1", "--htable-init-sync"],
                NodeConfig(serverAddress=local, htables=(parseTableSpec("kdmq=>size=8;dmqreplicate=1"),), htableInitSync=True),
            ),
            (
                ["-s", "sip:127.0.0.11:5060", "--htable-max-cells", "500", "--htable-max-bytes", "1048576"],
                NodeConfig(serverAddress=local, htableMaxCells=500, htableMaxBytes=1048576),
            ),
        ]:
            self.assertEqual(parse(*arguments), expected, arguments)

    def test_peers(self):
        """
        C{--peer} fills C{peers} with each name and what it names.
        """
        module = types.ModuleType("dmq_test_config_peers")
        vars(module)["greeter"] = _Greeter()
        sys.modules[module.__name__] = module
        self.addCleanup(sys.modules.pop, module.__name__)
        config = parse("-s", "sip:127.0.0.11:5060", "--peer", "dmq_test_config_peers.greeter")
        self.assertEqual(config.peers, (("dmq_test_config_peers.greeter", module.greeter),))

    def test_configFile(self):
        """
        A TOML file makes the same L{NodeConfig} as the command line that
        says the same, and the command line overrides it.
        """
        path = self.config(
            'server_address = "sip:127.0.0.11:5060"\n'
            'notification_address = ["sip:127.0.0.12:5060"]\n'
            'notification_channel = "members"\n'
            "num_workers = 3\n"
            "remove_inactive = false\n"
            "fail_count_enabled = true\n"
            "fail_count_threshold_disabled = 2\n"
            "max_nodes = 50\n"
            'htable = "kdmq=>size=8;dmqreplicate=1"\n'
        )
        expected = NodeConfig(
            serverAddress=sip.URI("127.0.0.11", 5060),
            notificationAddresses=(sip.URI("127.0.0.12", 5060),),
            notificationChannel="members",
            numWorkers=3,
            removeInactive=False,
            failCountEnabled=True,
            failCountThresholdDisabled=2,
            maxNodes=50,
            htables=(parseTableSpec("kdmq=>size=8;dmqreplicate=1"),),
        )
        self.assertEqual(parse("--config", path), expected)
        self.assertEqual(
            parse(
                "-s", "sip:127.0.0.11:5060", "--notification-address", "sip:127.0.0.12:5060", "--notification-channel", "members",
                "--num-workers", "3", "--no-remove-inactive", "--fail-count-enabled",
                "--fail-count-threshold-disabled", "2", "--max-nodes", "50",
                "--htable", "kdmq=>size=8;dmqreplicate=1",
            ),
            expected,
        )
        self.assertEqual(
            parse("--config", path, "--num-workers", "2", "--notification-address", "sip:127.0.0.13:5060"),
            attr.evolve(expected, numWorkers=2, notificationAddresses=(sip.URI("127.0.0.13", 5060),)),
        )

    def test_optionValues(self):
        """
        Each option holds its field's value, a list for a repeatable one,
        and C{bind-address} the socket to bind.
        """
        options = Options()
        options.parseOptions(["-s", "sip:127.0.0.11:5060", "--notification-address", "sip:127.0.0.12:5060", "--max-queue", "7"])
        for parameter in PARAMETERS:
            value = getattr(options.nodeConfig, parameter.field)
            self.assertEqual(options[parameter.option], list(value) if parameter.repeatable else value)
        self.assertEqual(options["notification-address"], [sip.URI("127.0.0.12", 5060)])
        self.assertEqual(options["max-queue"], 7)
        self.assertEqual(options["bind-address"], ("127.0.0.11", 5060))


class ParseSettingsTests(SynchronousTestCase):
    """
    L{parseSettings} and L{readConfigFile}: settings as text, by Kamailio
    name, where each came from, into a checked L{NodeConfig}.
    """

    def test_nothingGiven(self):
        """
        No settings: the default L{NodeConfig}.
        """
        self.assertEqual(parseSettings({}), NodeConfig())

    def test_given(self):
        """
        Given settings are parsed; a bad one is refused naming its origin.
        """
        config = parseSettings(
            {"ping_interval": ("here", "7"), "notification_address": ("there", ["sip:127.0.0.12:5060"])}
        )
        self.assertEqual(
            config, NodeConfig(pingInterval=7.0, notificationAddresses=(sip.URI("127.0.0.12", 5060),))
        )
        error = self.assertRaises(usage.UsageError, parseSettings, {"num_workers": ("line 3", "none")})
        self.assertEqual(str(error), "line 3: 'none' is not a whole number")
        error = self.assertRaises(usage.UsageError, parseSettings, {"htable_max_cells": ("line 4", "0")})
        self.assertEqual(str(error), "line 4: must be at least 1, not 0")

    def test_together(self):
        """
        Settings are checked against each other, naming the origin.
        """
        error = self.assertRaises(
            usage.UsageError, parseSettings, {"t1": ("a", "2"), "t2": ("b", "1")}
        )
        self.assertIn("b: must not be smaller than t1", str(error))

    def test_readConfigFile(self):
        """
        A config file gives each key's text, with the file and key as its
        origin.
        """
        path = self.mktemp()
        with open(path, "w", encoding="utf-8") as f:
            f.write('num_workers = 3\nmulti_notify = true\nnotification_address = "sip:127.0.0.12:5060"\n')
        self.assertEqual(
            readConfigFile(path),
            {
                "num_workers": (f"--config {path}: num_workers", "3"),
                "multi_notify": (f"--config {path}: multi_notify", "1"),
                "notification_address": (f"--config {path}: notification_address", ["sip:127.0.0.12:5060"]),
            },
        )
