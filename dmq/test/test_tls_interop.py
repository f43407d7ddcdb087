# -*- test-case-name: dmq.test.test_tls_interop -*-
"""
Interoperability over TLS with a real Kamailio 5.6.3 and its C{tls} module:
one Kamailio node and two of ours on loopback (127.0.0.161 to 127.0.0.164),
mutual TLS with certificates from a test CA made at test time.  Run under
the shared test lock; skipped without Kamailio unless
C{DMQ_REQUIRE_KAMAILIO=1}.
"""

from __future__ import annotations

import os

from twisted.internet import defer
from twisted.trial.unittest import TestCase

from dmq.test.kamailio import SKIP_REASON, KamailioNode, waitFor
from dmq.test import test_tls_live
from dmq.test.test_tls_live import statuses, tlsURI
from dmq.test.tlsca import TestCA

NOTIFICATION = "notification_peer"
_TLS_MODULE = "/usr/lib/x86_64-linux-gnu/kamailio/modules/tls.so"


def _skip():
    if SKIP_REASON:
        return SKIP_REASON
    if not os.path.exists(_TLS_MODULE) and not os.environ.get("DMQ_REQUIRE_KAMAILIO"):
        return "Kamailio's tls module (kamailio-tls-modules) is not installed"
    return None


class KamailioTLSTests(TestCase):
    """
    A mixed bus over TLS.
    """

    skip = _skip()
    timeout = 60

    setUp = test_tls_live.TLSBusTests.setUp
    # Set by the setUp borrowed above.
    ca: TestCA

    def tlsNode(self, ip, seeds=(), ca=None, **options):
        """
        Start one of our nodes over TLS, as L{test_tls_live.TLSBusTests} does.
        """
        return test_tls_live.startTLSNode(self, ca or self.ca, ip, seeds, **options)

    @defer.inlineCallbacks
    def kamailio(self, ip, seeds=()):
        certificate, key = self.ca.issue(ip)
        node = KamailioNode.forTest(
            self, ip, notificationAddress=list(seeds), tls=(certificate, key, self.ca.caPath)
        )
        yield node.start()
        return node

    @defer.inlineCallbacks
    def test_mixedBus(self):
        """
        Kamailio joins one of our nodes, our other node joins Kamailio; all
        three list each other active over TLS, pings flow both ways, and an
        htable cell set and deleted on either side reaches the others; a
        node of ours that joins later is synced from the bus; one that
        stops says goodbye over TLS.
        """
        first = self.tlsNode("127.0.0.163", pingInterval=5)
        kamailio = yield self.kamailio("127.0.0.161", seeds=[tlsURI("127.0.0.163")])
        second = self.tlsNode("127.0.0.162", seeds=[kamailio.uri], pingInterval=5)
        ours = [first, second]

        @defer.inlineCallbacks
        def allActive():
            theirs = yield kamailio.listNodes()
            seen = {
                (n["host"], n["port"], n["proto"]): n["status"] for n in theirs if not n.get("local")
            }
            want = {("127.0.0.162", "5061", "tls"): "active", ("127.0.0.163", "5061", "tls"): "active"}
            if seen != want:
                return False
            for node, ip, other in ((first, "163", "162"), (second, "162", "163")):
                if statuses(node) != {
                    kamailio.uri: "active",
                    tlsURI(f"127.0.0.{other}"): "active",
                }:
                    return False
            return True

        yield waitFor(allActive, timeout=10, interval=0.1, description="three TLS nodes active")
        stats = second.bus.statistics
        before = (stats.get(("in", NOTIFICATION, 200), 0), stats.get(("out", NOTIFICATION, 200), 0))
        yield waitFor(
            lambda: stats.get(("in", NOTIFICATION, 200), 0) >= before[0] + 2
            and stats.get(("out", NOTIFICATION, 200), 0) >= before[1] + 2,
            timeout=15,
            interval=0.1,
            description="two pings each way",
        )

        yield kamailio.htableSets("kdmq", "from-kamailio", "one")
        yield first.htable.set("kdmq", "from-ours", "two")

        @defer.inlineCallbacks
        def same(expected):
            items = yield kamailio.htableItems("kdmq")
            return items == expected and all(
                dict(node.htable.items("kdmq")) == expected for node in ours
            )

        expected = {"from-kamailio": "one", "from-ours": "two"}
        yield waitFor(lambda: same(expected), timeout=5, interval=0.1, description="set both ways")
        yield kamailio.htableDelete("kdmq", "from-ours")
        yield second.htable.delete("kdmq", "from-kamailio")
        yield kamailio.htableSets("kdmq", "kept", "three")
        expected = {"kept": "three"}
        yield waitFor(lambda: same(expected), timeout=5, interval=0.1, description="deleted both ways")

        late = self.tlsNode("127.0.0.164", seeds=[kamailio.uri], htableInitSync=True)
        yield waitFor(
            lambda: dict(late.htable.items("kdmq")) == expected,
            timeout=10,
            interval=0.1,
            description="a late node synced over TLS",
        )
        for node in ours + [late]:
            self.assertEqual(node.protocol.transactions.statistics["clientTransactions"], 0)
        # Our goodbye goes over TLS before the connections close.
        yield second.stopService()
        theirs = yield kamailio.peerStatuses()
        self.assertEqual(theirs.get("127.0.0.162:5061"), "disabled")
