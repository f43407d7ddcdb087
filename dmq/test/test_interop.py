# -*- test-case-name: dmq.test.test_interop -*-
"""
Interoperability with real Kamailio 5.6.3 nodes: our nodes and Kamailio's on
one bus, over loopback UDP, each checked from both sides (our node list, and
Kamailio's C{dmq.list_nodes} over its JSON-RPC).

These start Kamailio processes (see L{dmq.test.kamailio}); without the
C{kamailio} binary they are skipped, unless C{DMQ_REQUIRE_KAMAILIO=1}.
"""

from __future__ import annotations

from twisted.internet import defer, reactor
from twisted.trial.unittest import TestCase

from dmq import sip
from dmq.config import NodeConfig
from dmq.tap import makeNodeService
from dmq.test.kamailio import SKIP_REASON, KamailioNode, waitFor

NOTIFICATION = "notification_peer"

# The replicated table of the Kamailio nodes (dmq/test/data/kamailio-node.cfg).
KDMQ_TABLE = "kdmq=>size=8;autoexpire=0;dmqreplicate=1"


def ourStatuses(node):
    """
    Our node's view of the others: C{{"ip:port": status}}.
    """
    return {
        f"{n.uri.host}:{n.uri.port}": n.status.value
        for n in node.nodeManager.nodes()
        if not n.local
    }


class InteropTestCase(TestCase):
    skip = SKIP_REASON
    timeout = 60

    def ourNode(self, ip, seeds=(), **options):
        """
        Start one of our nodes on C{ip}:5060 over a real socket, stopped in
        cleanup.
        """
        options.setdefault("pingInterval", 5)
        options.setdefault("htables", [KDMQ_TABLE])
        node = makeNodeService(
            reactor,
            NodeConfig(
                serverAddress=sip.URI(ip, 5060), notificationAddresses=tuple(sip.parseURI(s) for s in seeds), **options
            ),
        )
        node.startService()
        self.addCleanup(lambda: node.stopService() if node.running else None)
        return node

    @defer.inlineCallbacks
    def kamailio(self, ip, seeds=(), **options):
        node = KamailioNode.forTest(self, ip, notificationAddress=list(seeds), **options)
        yield node.start()
        return node

    def bothActive(self, ours, kamailio, timeout=2.0):
        """
        Wait until our node and the Kamailio node list each other active.
        """
        ourKey = f"{ours.protocol.sentBy[0]}:{ours.protocol.sentBy[1]}"

        @defer.inlineCallbacks
        def check():
            theirs = yield kamailio.peerStatuses()
            return (
                theirs.get(ourKey) == "active"
                and ourStatuses(ours).get(kamailio.hostPort) == "active"
            )

        return waitFor(check, timeout=timeout, interval=0.05, description=f"{ourKey} and {kamailio.hostPort} active for each other")


class MembershipInteropTests(InteropTestCase):
    """
    Our nodes and Kamailio nodes join, ping, leave and come back.
    """

    @defer.inlineCallbacks
    def test_weJoinKamailio(self):
        """
        Our node joins a Kamailio bus through its notification address: both
        list each other active within 2 s, and pings flow both ways over two
        ping intervals.
        """
        kamailio = yield self.kamailio("127.0.0.31")
        ours = self.ourNode("127.0.0.32", seeds=[kamailio.uri])
        yield self.bothActive(ours, kamailio)
        stats = ours.bus.statistics
        before = (stats.get(("in", NOTIFICATION, 200), 0), stats.get(("out", NOTIFICATION, 200), 0))
        yield waitFor(
            lambda: stats.get(("in", NOTIFICATION, 200), 0) >= before[0] + 2
            and stats.get(("out", NOTIFICATION, 200), 0) >= before[1] + 2,
            timeout=12,
            interval=0.1,
            description="two pings each way",
        )
        theirs = yield kamailio.peerStatuses()
        self.assertEqual(theirs, {"127.0.0.32:5060": "active"})
        self.assertEqual(ourStatuses(ours), {kamailio.hostPort: "active"})

    @defer.inlineCallbacks
    def test_kamailioJoinsUs(self):
        """
        A Kamailio node joins through our node: both list each other active
        within 2 s.
        """
        ours = self.ourNode("127.0.0.33")
        kamailio = yield self.kamailio("127.0.0.34", seeds=["sip:127.0.0.33:5060"])
        yield self.bothActive(ours, kamailio)

    @defer.inlineCallbacks
    def test_mixedBusOfFour(self):
        """
        Two Kamailio nodes and two of ours, joined through different seeds,
        agree on who is on the bus, and on the data each of them wrote to a
        replicated table.
        """
        k1 = yield self.kamailio("127.0.0.35")
        ours1 = self.ourNode("127.0.0.36", seeds=[k1.uri])
        k2 = yield self.kamailio("127.0.0.37", seeds=["sip:127.0.0.36:5060"])
        ours2 = self.ourNode("127.0.0.38", seeds=[k2.uri])
        everyone = {"127.0.0.35:5060", "127.0.0.36:5060", "127.0.0.37:5060", "127.0.0.38:5060"}

        @defer.inlineCallbacks
        def agreed():
            for node in (k1, k2):
                statuses = yield node.peerStatuses()
                if statuses != {k: "active" for k in everyone - {node.hostPort}}:
                    return False
            for node in (ours1, ours2):
                me = f"{node.protocol.sentBy[0]}:5060"
                if ourStatuses(node) != {k: "active" for k in everyone - {me}}:
                    return False
            return True

        yield waitFor(agreed, timeout=12, interval=0.1, description="four nodes agree")

        yield k1.htableSets("kdmq", "from-k1", "one")
        yield k2.htableSeti("kdmq", "from-k2", 2)
        yield ours1.htable.set("kdmq", "from-ours1", "three")
        yield ours2.htable.set("kdmq", "from-ours2", 4)
        expected = {"from-k1": "one", "from-k2": 2, "from-ours1": "three", "from-ours2": 4}

        @defer.inlineCallbacks
        def sameData():
            for node in (k1, k2):
                items = yield node.htableItems("kdmq")
                if items != expected:
                    return False
            return all(dict(node.htable.items("kdmq")) == expected for node in (ours1, ours2))

        yield waitFor(sameData, timeout=5, interval=0.1, description="four nodes hold the same table")

    @defer.inlineCallbacks
    def test_ourNodeStopsAndRestarts(self):
        """
        When our node stops, Kamailio marks it disabled at once (our goodbye)
        and removes it after its next ping times out; when it starts again it
        is active again.
        """
        kamailio = yield self.kamailio("127.0.0.39", frTimer=2000)
        ours = self.ourNode("127.0.0.40", seeds=[kamailio.uri])
        yield self.bothActive(ours, kamailio)
        yield ours.stopService()

        @defer.inlineCallbacks
        def status():
            statuses = yield kamailio.peerStatuses()
            return statuses.get("127.0.0.40:5060")

        self.assertEqual((yield status()), "disabled")
        yield waitFor(
            lambda: status().addCallback(lambda s: s is None),
            timeout=5 + 2 + 5 + 2 + 2,
            interval=0.2,
            description="Kamailio removes our stopped node",
        )
        again = self.ourNode("127.0.0.40", seeds=[kamailio.uri])
        yield self.bothActive(again, kamailio)

    @defer.inlineCallbacks
    def test_kamailioStopsAndRestarts(self):
        """
        When a Kamailio node that joined through us stops (it sends no
        goodbye), our node disables and then removes it from its pings'
        timeouts; when it starts again it is active again.
        """
        ours = self.ourNode("127.0.0.41", pingInterval=1, pingTimeout=1)
        kamailio = yield self.kamailio("127.0.0.42", seeds=["sip:127.0.0.41:5060"])
        yield self.bothActive(ours, kamailio)
        yield kamailio.stop()
        yield waitFor(
            lambda: ourStatuses(ours).get(kamailio.hostPort) == "disabled",
            timeout=3,
            interval=0.05,
            description="our node disables the stopped Kamailio",
        )
        yield waitFor(
            lambda: kamailio.hostPort not in ourStatuses(ours),
            timeout=3,
            interval=0.05,
            description="our node removes the stopped Kamailio",
        )
        yield kamailio.start()
        yield self.bothActive(ours, kamailio)
