# -*- test-case-name: dmq.test.test_dialog -*-
"""
Tests for L{dmq.peers.dialog}: the peer on a fake bus, its RPC commands,
its wiring (C{--dialog}), and whole nodes on an in-memory network.  The
tests against real Kamailio nodes are in L{dmq.test.test_dialog_live}.
"""

from __future__ import annotations

import json
from typing import Any, List, Optional

import attr

from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.task import Clock
from twisted.internet.testing import EventLoggingObserver
from twisted.logger import globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import implementer
from zope.interface.verify import verifyObject

from dmq import sip
from dmq.config import NodeConfig
from dmq.interfaces import IDMQBus, IDMQPeer, RPCError
from dmq.node import Node, NodeStatus
from dmq.peers.dialog import DialogPeer, DialogRPC, DialogState
from dmq.tap import Options, makeNodeService
from dmq.test.fakenet import FakeNetwork, makeNode
from dmq.test.test_dialog_wire import CONFIRMED, INVITE_UPDATE

KAMAILIO = Node(sip.URI("127.0.0.12", 5060), NodeStatus.ACTIVE)
OTHER = Node(sip.URI("127.0.0.13", 5060), NodeStatus.ACTIVE)


def makeRequest(body: bytes, sender=("127.0.0.12", 5060)) -> sip.Request:
    """
    A KDMQ request to the dialog peer from C{sender}.
    """
    uri = sip.URI("127.0.0.11", 5060, user="dialog")
    return sip.Request(
        "KDMQ",
        uri,
        (
            ("To", f"<{uri.toString()}>"),
            ("From", f"<sip:dialog@{sender[0]}:{sender[1]}>;tag=1"),
            ("CSeq", "10 KDMQ"),
            ("Call-ID", "1@127.0.0.12"),
            ("Max-Forwards", "1"),
            ("Content-Type", "application/json"),
        ),
        body,
    )


@implementer(IDMQBus)
class FakeBus:
    """
    A bus that records what is sent; each send's Deferred is kept unfired
    in C{pending} when C{hold} is set.
    """

    def __init__(self, others=(KAMAILIO,)) -> None:
        self.localNode = Node(sip.URI("127.0.0.11", 5060), NodeStatus.ACTIVE, local=True)
        self.others = list(others)
        self.sent: List[tuple] = []
        self.hold = False
        self.pending: List[Deferred] = []

    def nodes(self):
        return [self.localNode, *self.others]

    def registerPeer(self, peer):
        pass

    def unregisterPeer(self, peerId):
        pass

    def _result(self, value: object) -> Deferred:
        if not self.hold:
            return succeed(value)
        d: Deferred = Deferred()
        self.pending.append(d)
        return d

    def send(self, peerId, body, node, contentType="text/plain", maxForwards=1):
        self.sent.append((peerId, body, node, contentType))
        return self._result(None)

    def broadcast(self, peerId, body, contentType="text/plain", exclude=None, maxForwards=1):
        self.sent.append((peerId, body, None, contentType))
        return self._result({})

    def handleRequest(self, request, source):
        raise NotImplementedError()


def makePeer(**options: Any):
    clock = Clock()
    clock.advance(1795996442)
    bus = FakeBus()
    return clock, bus, DialogPeer(clock, bus, **options)


def receive(peer: DialogPeer, body: bytes, node: Optional[Node] = KAMAILIO):
    return peer.messageReceived(makeRequest(body), node)


class ReceiveTests(SynchronousTestCase):
    """
    L{DialogPeer.messageReceived} applies what Kamailio sends, and answers
    as Kamailio would, bad input with a C{4xx}.
    """

    def setUp(self) -> None:
        self.clock, self.bus, self.peer = makePeer(maxDialogs=2)

    def test_interface(self) -> None:
        """
        L{DialogPeer} provides L{IDMQPeer}.
        """
        self.assertTrue(verifyObject(IDMQPeer, self.peer))

    def test_call(self) -> None:
        """
        The update of an INVITE and the change to confirmed are applied and
        answered C{200}; the dialog names the node it came from.
        """
        self.assertEqual(receive(self.peer, INVITE_UPDATE).code, 200)
        self.assertEqual(receive(self.peer, CONFIRMED).code, 200)
        [dialog] = self.peer.dialogs()
        self.assertEqual((dialog.state, dialog.callee.tag), (DialogState.CONFIRMED, "b1"))
        self.assertEqual(dialog.node, "sip:127.0.0.12:5060")
        self.assertEqual(self.peer.get(3816, 8497), dialog)
        self.assertEqual(self.peer.find("call1@127.0.4.3"), [dialog])
        self.assertEqual(self.peer.find("call1@127.0.4.3", "a1"), [dialog])
        self.assertEqual(self.peer.find("call1@127.0.4.3", "zz"), [])
        self.assertEqual(self.peer.statistics["applied"], 2)
        self.assertEqual(self.bus.sent, [])

    def test_bad(self) -> None:
        """
        A body the wire refuses is answered C{400} with its reason, and
        logged once however often it comes.
        """
        events = EventLoggingObserver()
        globalLogPublisher.addObserver(events)
        self.addCleanup(globalLogPublisher.removeObserver, events)
        for _ in range(3):
            response = receive(self.peer, b'{"action":2,"h_entry":1,"h_id":2}')
            self.assertEqual((response.code, response.reason), (400, "Bad Request (action 2 without a state)"))
        response = receive(self.peer, b"{", node=None)
        self.assertEqual((response.code, response.reason), (400, "Bad Request"))
        warnings = [e for e in events if e.get("log_namespace", "").endswith("DialogPeer")
                    and "Bad dialog message" in e.get("log_format", "")]
        self.assertEqual(len(warnings), 1)
        self.assertNotIn("log_failure", warnings[0])
        self.assertEqual(self.peer.statistics["badRequests"], 4)

    def test_unknownDialog(self) -> None:
        """
        A state change or removal of a dialog we do not hold is answered
        C{500}, as by Kamailio.
        """
        self.assertEqual(receive(self.peer, CONFIRMED).code, 500)
        self.assertEqual(receive(self.peer, b'{"action":3,"h_entry":1,"h_id":2}').code, 500)
        self.assertEqual(self.peer.statistics["unknownDialogs"], 2)

    def test_full(self) -> None:
        """
        A new dialog past C{maxDialogs} is answered C{503}.
        """
        for hId in range(3):
            body = json.dumps({"action": 1, "h_entry": 1, "h_id": hId, "callid": f"c{hId}"})
            response = receive(self.peer, body.encode())
        self.assertEqual((response.code, response.reason), (503, "Service Unavailable (too many dialogs)"))
        self.assertEqual(len(self.peer), 2)
        self.assertEqual(self.peer.statistics["full"], 1)


def update(hId: int, state: int = 4) -> bytes:
    return json.dumps(
        {"action": 1, "h_entry": 7, "h_id": hId, "callid": f"c{hId}", "state": state,
         "start_ts": 10, "lifetime": 60, "tag1": "a", "tag2": "b"}
    ).encode()


class SyncTests(SynchronousTestCase):
    """
    Sync requests: we answer with our dialogs, a window at a time, and ask
    one node for its dialogs when we join.
    """

    def setUp(self) -> None:
        self.clock, self.bus, self.peer = makePeer(syncWindow=2)

    def test_answer(self) -> None:
        """
        A sync request is answered C{200}, and our dialogs but the deleted
        ones follow as updates to the node that asked, at most
        C{syncWindow} in flight.
        """
        for hId in range(4):
            receive(self.peer, update(hId))
        receive(self.peer, b'{"action":2,"h_entry":7,"h_id":3,"state":5}')
        self.bus.hold = True
        self.assertEqual(receive(self.peer, b'{"action":4}').code, 200)
        self.assertEqual(receive(self.peer, b'{"action":4}').code, 200, "one dump at a time")
        self.assertEqual([node for _, _, node, _ in self.bus.sent], [KAMAILIO, KAMAILIO])
        self.bus.pending.pop(0).callback(None)
        self.bus.pending.pop(0).callback(None)
        self.assertEqual(len(self.bus.sent), 3)
        self.bus.pending.pop(0).callback(None)
        sent = [json.loads(body) for _, body, _, _ in self.bus.sent]
        self.assertEqual([(m["action"], m["h_id"], m["state"]) for m in sent], [(1, 0, 4), (1, 1, 4), (1, 2, 4)])
        self.assertEqual({contentType for _, _, _, contentType in self.bus.sent}, {"application/json"})
        self.assertEqual(self.peer.statistics["syncRequests"], 2)
        # Done: the next request starts a new dump.
        self.bus.hold = False
        receive(self.peer, b'{"action":4}')
        self.assertEqual(len(self.bus.sent), 6)

    def test_fromUnknownSender(self) -> None:
        """
        A sync request from a sender that is not a node we know is answered
        to every active node, as Kamailio answers all of them.
        """
        receive(self.peer, update(1))
        receive(self.peer, b'{"action":4}', node=None)
        self.assertEqual([node for _, _, node, _ in self.bus.sent], [None])

    def test_stopStopsDump(self) -> None:
        """
        Stopping the peer sends no more of a dump.
        """
        self.peer.startService()
        for hId in range(4):
            receive(self.peer, update(hId))
        self.bus.hold = True
        receive(self.peer, b'{"action":4}')
        self.peer.stopService()
        for d in list(self.bus.pending):
            d.callback(None)
        self.assertEqual(len(self.bus.sent), 2)

    def test_unsendable(self) -> None:
        """
        A dump the bus cannot send at all (it fails at once) ends, with one
        warning however many dialogs there are.
        """
        for hId in range(4):
            receive(self.peer, update(hId))
        def cannotSend(*arguments: object, **keywords: object) -> Deferred:
            self.bus.sent.append(arguments)
            return fail(RuntimeError("full"))

        self.bus.send = cannotSend
        events = EventLoggingObserver()
        globalLogPublisher.addObserver(events)
        self.addCleanup(globalLogPublisher.removeObserver, events)
        receive(self.peer, b'{"action":4}')
        self.assertEqual(len([e for e in events if "could not be sent" in e.get("log_format", "")]), 1)
        self.assertEqual(len(self.bus.sent), 4)
        receive(self.peer, b'{"action":4}')
        self.assertEqual(len(self.bus.sent), 8, "the first dump ended")

    def test_initSync(self) -> None:
        """
        On joining, we ask the first node reported active for its dialogs;
        not again while it stays active; again after losing every node.
        """
        self.peer.nodeAdded(KAMAILIO)
        self.assertEqual(self.bus.sent, [("dialog", b'{"action":4}', KAMAILIO, "application/json")])
        self.bus.others.append(OTHER)
        self.peer.nodeAdded(OTHER)
        self.assertEqual(len(self.bus.sent), 1)
        self.bus.others = []
        self.peer.nodeAdded(OTHER)
        self.assertEqual(len(self.bus.sent), 2)

    def test_noInitSync(self) -> None:
        """
        Without C{initSync}, joining asks nothing.
        """
        clock, bus, peer = makePeer(initSync=False)
        peer.nodeAdded(KAMAILIO)
        self.assertEqual(bus.sent, [])

    def test_requestSync(self) -> None:
        """
        L{DialogPeer.requestSync} asks one node, or every active node.
        """
        self.peer.requestSync()
        self.peer.requestSync(KAMAILIO)
        self.assertEqual([node for _, _, node, _ in self.bus.sent], [None, KAMAILIO])

    def test_purge(self) -> None:
        """
        While running, the peer drops expired dialogs every
        C{purgeInterval} seconds.
        """
        self.peer.startService()
        receive(self.peer, update(1))
        self.clock.advance(59)
        self.assertEqual(len(self.peer), 1)
        self.clock.advance(10)
        self.assertEqual(len(self.peer), 0)
        self.assertIsNone(self.peer.expiresAt(7, 1))
        self.peer.stopService()
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_badArguments(self) -> None:
        """
        Nonsense intervals and windows are refused.
        """
        self.assertRaises(ValueError, DialogPeer, Clock(), FakeBus(), purgeInterval=0)
        self.assertRaises(ValueError, DialogPeer, Clock(), FakeBus(), syncWindow=0)


class RPCTests(SynchronousTestCase):
    """
    L{DialogRPC}: Kamailio's C{dlg.*} commands that read, in its shapes.
    """

    def setUp(self) -> None:
        self.clock, self.bus, self.peer = makePeer()
        self.rpc = DialogRPC(self.peer, self.clock)
        receive(self.peer, INVITE_UPDATE)
        self.clock.advance(1)
        receive(self.peer, CONFIRMED)
        self.clock.advance(2)

    def test_list(self) -> None:
        """
        C{dlg.list} prints each dialog as Kamailio 5.6.3 prints a replica.
        """
        self.assertEqual(
            self.rpc.list(),
            [
                {
                    "h_entry": 3816,
                    "h_id": 8497,
                    "ref": 1,
                    "call-id": "call1@127.0.4.3",
                    "from_uri": "sip:alice@127.0.4.3",
                    "to_uri": "sip:bob@127.0.4.3",
                    "state": 4,
                    "start_ts": 1795996443,
                    "init_ts": 1795996442,
                    "end_ts": 0,
                    "duration": 2,
                    "timeout": 1795996443 + 43200,
                    "lifetime": 43200,
                    "dflags": 0,
                    "sflags": 0,
                    "iflags": 64,
                    "caller": {"tag": "a1", "contact": "sip:alice@127.0.4.3:5070", "cseq": "1",
                               "route_set": "", "socket": None},
                    "callee": {"tag": "b1", "contact": "sip:bob@127.0.4.3:5080", "cseq": "0",
                               "route_set": "", "socket": None},
                    "profiles": [{"caller": "alice"}, "calls"],
                    "variables": [{"origin": "127.0.4.3"}],
                }
            ],
        )

    def test_unconfirmedAndDeleted(self) -> None:
        """
        An unconfirmed dialog has no callee (nulls, as in Kamailio) and no
        timeout; a deleted one its end and a duration that stops there.
        """
        receive(self.peer, b'{"action":1,"h_entry":1,"h_id":2,"callid":"x"}')
        [entry] = [e for e in self.rpc.list() if e["h_id"] == 2]
        self.assertEqual(entry["callee"], dict.fromkeys(("tag", "contact", "cseq", "route_set", "socket")))
        self.assertEqual((entry["timeout"], entry["duration"], entry["state"]), (0, 0, 1))
        receive(self.peer, b'{"action":2,"h_entry":3816,"h_id":8497,"state":5}')
        self.clock.advance(100)
        [entry] = [e for e in self.rpc.list() if e["h_id"] == 8497]
        self.assertEqual((entry["end_ts"], entry["duration"], entry["profiles"]), (1795996445, 2, []))

    def test_dlgList(self) -> None:
        """
        C{dlg.dlg_list callid [from_tag]}: the dialog, a list of several, or
        C{{}} for none.
        """
        [entry] = self.rpc.list()
        self.assertEqual(self.rpc.dlgList("call1@127.0.4.3", "a1"), entry)
        self.assertEqual(self.rpc.dlgList("call1@127.0.4.3"), entry)
        self.assertEqual(self.rpc.dlgList("call1@127.0.4.3", "b1"), {})
        receive(self.peer, b'{"action":1,"h_entry":1,"h_id":2,"callid":"call1@127.0.4.3"}')
        both = self.rpc.dlgList("call1@127.0.4.3")
        assert isinstance(both, list)
        self.assertEqual(len(both), 2)

    def test_badParameters(self) -> None:
        """
        Missing or mistyped parameters are refused with C{400}.
        """
        for method, params in [
            (self.rpc.dlgList, ()),
            (self.rpc.dlgList, (1,)),
            (self.rpc.dlgList, ("a", "b", "c")),
            (self.rpc.profileGetSize, ()),
            (self.rpc.profileList, (None,)),
        ]:
            error = self.assertRaises(RPCError, method, *params)
            self.assertEqual(error.code, 400)

    def test_statsActive(self) -> None:
        """
        C{dlg.stats_active} counts the dialogs in each state but deleted.
        """
        receive(self.peer, b'{"action":1,"h_entry":1,"h_id":2,"callid":"x"}')
        receive(self.peer, b'{"action":1,"h_entry":1,"h_id":3,"callid":"y","state":5}')
        self.assertEqual(
            self.rpc.statsActive(),
            {"starting": 1, "connecting": 0, "answering": 0, "ongoing": 1, "all": 2},
        )

    def test_profiles(self) -> None:
        """
        C{dlg.profile_get_size} and C{dlg.profile_list}, with and without a
        value; a profile no dialog is in counts 0.
        """
        self.assertEqual(self.rpc.profileGetSize("calls"), 1)
        self.assertEqual(self.rpc.profileGetSize("caller", "alice"), 1)
        self.assertEqual(self.rpc.profileGetSize("caller", "bob"), 0)
        self.assertEqual(self.rpc.profileGetSize("nope"), 0)
        self.assertEqual(self.rpc.profileList("caller", "alice"), self.rpc.list())
        self.assertEqual(self.rpc.profileList("caller", "bob"), [])

    def test_methods(self) -> None:
        """
        The RPC names are Kamailio's.
        """
        self.assertEqual(
            sorted(self.rpc.methods()),
            ["dlg.dlg_list", "dlg.dlg_list_ctx", "dlg.list", "dlg.list_ctx", "dlg.profile_get_size",
             "dlg.profile_list", "dlg.stats_active"],
        )


class WiringTests(SynchronousTestCase):
    """
    C{--dialog} makes a node with a dialog peer and its RPC commands.
    """

    def test_option(self) -> None:
        """
        C{--dialog} is a flag, off by default; C{dialog = 1} in a config
        file too.
        """
        options = Options()
        options.parseOptions(["--server-address", "sip:127.0.0.11:5060"])
        self.assertIs(options.nodeConfig.dialog, False)
        options = Options()
        options.parseOptions(["--server-address", "sip:127.0.0.11:5060", "--dialog"])
        self.assertIs(options.nodeConfig.dialog, True)
        path = self.mktemp()
        with open(path, "w") as f:
            f.write('server_address = "sip:127.0.0.11:5060"\ndialog = 1\n')
        options = Options()
        options.parseOptions(["--config", path])
        self.assertIs(options.nodeConfig.dialog, True)

    def test_node(self) -> None:
        """
        With C{dialog}, the node has a dialog peer on its bus, under the node,
        and the C{dlg.*} commands; without, neither.
        """
        clock = Clock()
        node = makeNodeService(clock, NodeConfig(serverAddress=sip.URI("127.0.0.11", 5060), dialog=True),
                               listen=False)
        self.assertIn(node.dialog, node.bus.peers)
        self.assertIn(node.dialog, list(node))
        self.assertTrue({"dlg.list", "dlg.dlg_list", "dlg.stats_active"} <= set(node.rpc.names()))
        plain = makeNodeService(clock, NodeConfig(serverAddress=sip.URI("127.0.0.11", 5060)), listen=False)
        self.assertIsNone(plain.dialog)
        self.assertNotIn("dlg.list", plain.rpc.names())


class ClusterTests(SynchronousTestCase):
    """
    Whole nodes on an in-memory network: a standby node gets the dialogs of
    the node it joins.
    """

    def test_standbyJoins(self) -> None:
        """
        A node that joins asks the node it joins through for its dialogs,
        and holds them.
        """
        clock = Clock()
        network = FakeNetwork(clock)
        first = makeNode(clock, network, "127.0.0.11", dialog=True)
        self.addCleanup(network.run, 70)
        self.addCleanup(first.stopService)
        receive(first.dialog, INVITE_UPDATE)
        receive(first.dialog, CONFIRMED)
        second = makeNode(clock, network, "127.0.0.12", seeds=["127.0.0.11"], dialog=True)
        self.addCleanup(second.stopService)
        network.run(3)
        self.assertEqual(
            second.dialog.dialogs(),
            [attr.evolve(dialog, node="sip:127.0.0.11:5060") for dialog in first.dialog.dialogs()],
        )
        self.assertEqual(second.dialog.statistics["applied"], 1)
