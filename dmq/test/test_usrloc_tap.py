# -*- test-case-name: dmq.test.test_usrloc_tap -*-
"""
Tests for the usrloc settings of L{dmq.config} and the usrloc peer that
L{dmq.tap.makeNodeService} builds from them.
"""

from __future__ import annotations

from twisted.internet.testing import MemoryReactorClock
from twisted.python import usage
from twisted.trial.unittest import SynchronousTestCase

from dmq.config import NodeConfig, readConfigFile
from dmq.peers.usrloc import SocketInfo, UsrlocPeer
from dmq.tap import Options, makeNodeService, makeService
from dmq.test.test_tap import LOCAL, Greeter, _peerModule, parse


class UsrlocOptionsTests(SynchronousTestCase):
    """
    C{--usrloc} and dmq_usrloc's parameters.
    """

    def test_defaults(self):
        """
        The usrloc peer is off; its parameters have Kamailio's defaults.
        """
        config = NodeConfig()
        self.assertEqual(
            (config.usrloc, config.usrlocSync, config.usrlocBatchMsgContacts, config.usrlocBatchMsgSize,
             config.usrlocReplicateSocketInfo),
            (False, True, 1, 60000, 0),
        )
        self.assertIsNone(makeNodeService(MemoryReactorClock(), config, listen=False).usrloc)

    def test_options(self):
        """
        Each parameter is an option named as Kamailio's, prefixed C{usrloc}.
        """
        options = parse(
            *LOCAL, "--usrloc", "--no-usrloc-sync", "--usrloc-batch-msg-contacts", "150",
            "--usrloc-batch-msg-size", "1000", "--usrloc-replicate-socket-info", "2",
        )
        config = options.nodeConfig
        self.assertEqual(
            (config.usrloc, config.usrlocSync, config.usrlocBatchMsgContacts, config.usrlocBatchMsgSize,
             config.usrlocReplicateSocketInfo),
            (True, False, 150, 1000, 2),
        )

    def test_configFile(self):
        """
        They are keys of the config file too.
        """
        path = self.mktemp()
        with open(path, "w") as f:
            f.write("usrloc = 1\nusrloc_sync = 0\nusrloc_batch_msg_contacts = 10\n")
        self.assertEqual(sorted(readConfigFile(path)), ["usrloc", "usrloc_batch_msg_contacts", "usrloc_sync"])
        config = parse(*LOCAL, "--config", path).nodeConfig
        self.assertEqual((config.usrloc, config.usrlocSync, config.usrlocBatchMsgContacts), (True, False, 10))

    def test_bounds(self):
        """
        Values past Kamailio's bounds (it would lower them with a warning)
        are usage errors naming the option.
        """
        for arguments in (
            ["--usrloc-batch-msg-contacts", "151"],
            ["--usrloc-batch-msg-contacts", "0"],
            ["--usrloc-batch-msg-size", "60001"],
            ["--usrloc-replicate-socket-info", "3"],
        ):
            error = self.assertRaises(usage.UsageError, parse, *LOCAL, "--usrloc", *arguments)
            self.assertIn(arguments[0], str(error))

    def test_peer(self):
        """
        With C{--usrloc}, the node has a usrloc peer made as the options
        say, registered on the bus, under the node so it starts and stops
        with it, and the C{ul.dump} and C{ul.lookup} control methods.
        """
        node = makeService(
            parse(*LOCAL, "--usrloc", "--usrloc-batch-msg-contacts", "20", "--usrloc-replicate-socket-info", "1"),
            MemoryReactorClock(),
        )
        usrloc = node.usrloc
        assert isinstance(usrloc, UsrlocPeer)
        self.assertIn(usrloc, node.bus.peers)
        self.assertIn(usrloc, list(node))
        self.assertEqual((usrloc.batchMsgContacts, usrloc.socketInfo), (20, SocketInfo.SOCKET))
        self.assertTrue(usrloc.sync)
        self.assertTrue({"ul.dump", "ul.lookup"} <= set(node.rpc.names()))

    def test_peerIdTaken(self):
        """
        A C{--peer} named C{usrloc} clashes with the usrloc peer.
        """
        _peerModule(self)
        import sys

        vars(sys.modules["dmq_test_peers"])["UsrlocLike"] = Greeter(peerId="usrloc")
        error = self.assertRaises(usage.UsageError, parse, *LOCAL, "--usrloc", "--peer", "dmq_test_peers.UsrlocLike")
        self.assertIn("duplicate peer id 'usrloc', already the usrloc peer (--usrloc)", str(error))
        self.assertIsInstance(parse(*LOCAL, "--peer", "dmq_test_peers.UsrlocLike"), Options)
