# -*- test-case-name: dmq.test.test_probe_interop -*-
"""
The failure detector (C{--probe}) and htable anti-entropy
(C{--htable-entropy}) on a bus with a real Kamailio 5.6.3 node, over
loopback UDP: Kamailio answers their channels C{404}, is left to the ping,
and sees nothing else change; our nodes watch each other and find a dead
one in seconds.

These start a Kamailio process and bind 127.0.0.157 to 127.0.0.159: run
them under the shared lock.
"""

from __future__ import annotations

from twisted.internet import defer, reactor

from dmq.node import NodeStatus
from dmq.peers.htable.entropy import ENTROPY_PEER_ID
from dmq.probe import PROBE_PEER_ID
from dmq.test.kamailio import waitFor
from dmq.test.test_interop import InteropTestCase, ourStatuses


class MixedBusTests(InteropTestCase):
    """
    One Kamailio node, two of ours with the detector and anti-entropy.
    """

    @defer.inlineCallbacks
    def test_kamailioLeftToThePing(self):
        """
        Kamailio answers C{dmq_probe} and C{htable_entropy} with C{404} and
        keeps listing our nodes active; our nodes watch each other, not it;
        when one of ours dies without a goodbye, the other disables it
        within 5 s, while Kamailio's view follows its own rules.
        """
        kamailio = yield self.kamailio("127.0.0.157")
        options = dict(probe=True, htableEntropy=True, htableEntropyInterval=1.0)
        a = self.ourNode("127.0.0.158", seeds=[kamailio.uri], **options)
        b = self.ourNode("127.0.0.159", seeds=[kamailio.uri], **options)
        everyone = {"127.0.0.157:5060", "127.0.0.158:5060", "127.0.0.159:5060"}

        @defer.inlineCallbacks
        def agreed():
            theirs = yield kamailio.peerStatuses()
            if theirs != {k: "active" for k in everyone - {kamailio.hostPort}}:
                return False
            for node in (a, b):
                me = f"{node.protocol.sentBy[0]}:5060"
                if ourStatuses(node) != {k: "active" for k in everyone - {me}}:
                    return False
            return True

        yield waitFor(agreed, timeout=12, interval=0.1, description="three nodes agree")

        def watching():
            found = a.nodeManager.find(b.nodeManager.localNode.uri)
            return found is not None and a.probe.covers(found) and a.entropy.statistics["notDmq"] >= 1

        yield waitFor(watching, timeout=8, interval=0.1, description="a watches b and not Kamailio")
        theirNode = [n for n in a.nodeManager.nodes() if f"{n.uri.host}:{n.uri.port}" == kamailio.hostPort][0]
        self.assertFalse(a.probe.covers(theirNode))
        self.assertGreaterEqual(a.bus.statistics.get(("out", PROBE_PEER_ID, 404), 0), 1)
        self.assertGreaterEqual(a.bus.statistics.get(("out", ENTROPY_PEER_ID, 404), 0), 1)

        # b dies: deaf and mute from now on, no goodbye.
        b.protocol.datagramReceived = lambda data, address: None
        b.protocol.transport.write = lambda data, address=None: None
        started = reactor.seconds()
        bNode = a.nodeManager.find(b.nodeManager.localNode.uri)
        yield waitFor(
            lambda: a.nodeManager.find(b.nodeManager.localNode.uri) is None
            or bNode.status is not NodeStatus.ACTIVE,
            timeout=5,
            interval=0.05,
            description="a disables b",
        )
        self.assertLess(reactor.seconds() - started, 5)
        yield b.stopService()
