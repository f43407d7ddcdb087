# -*- test-case-name: dmq.test.test_metrics -*-
"""
The node's metrics registry: the process's own collectors beside the
node's, and every known label value reported from the first scrape.
"""

from __future__ import annotations

import os
import re
import types
from collections import Counter
from typing import Dict, Set

from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families
from twisted.internet.address import IPv4Address
from twisted.internet.protocol import connectionDone
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.trial.unittest import SynchronousTestCase

import dmq
from dmq import sip
from dmq.metrics import KNOWN_EVENTS, _snake
from dmq.settingvalues import ServerSocket
from dmq.tap import makeService
from dmq.transaction.base import _COUNTERS
from dmq.test.fakenet import FakeNetwork, HeapClock, crashNode, makeNode
from dmq.test.test_tap import FakeReactor, parse

DMQ = os.path.dirname(os.path.abspath(dmq.__file__))

# Where each family's events are counted.
_SOURCES = {
    "dmq_datagram_events": ["transport.py"],
    "dmq_membership_events": ["listmerge.py", "ownbody.py", "node.py"],
    "dmq_htable_events": [os.path.join("peers", "htable", name) for name in (
        "peer.py", "receive.py", "outbox.py", "sync.py", "store.py", "wire.py", "rpc.py")],
    "dmq_control_events": [os.path.join("control", name) for name in ("endpoint.py", "jsonrpc.py", "methods.py")],
    "dmq_probe_events": ["probe.py"],
    "dmq_htable_entropy_events": [os.path.join("peers", "htable", "entropy.py")],
    "dmq_stream_events": ["stream.py"],
}
# Counted by a family of their own, not as events.
_OWN_FAMILY = {"dmq_datagram_events": {"received", "sent", "malformed"}}
_COUNTED = [
    re.compile(r'statistics\[\s*"(\w+)"\s*\]'),
    re.compile(r'_refused\(\s*request,\s*node,\s*"(\w+)"'),
    # A stream connection closed for what it carried (dmq.stream).
    re.compile(r'_refuse\(\s*"(\w+)"'),
    re.compile(r'_dropped\(\s*"(\w+)"'),
]


def samples(registry) -> Dict[tuple, float]:
    """
    The samples of C{registry} as Prometheus scrapes them.
    """
    text = generate_latest(registry).decode("utf-8")
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


class RegistryTests(SynchronousTestCase):
    """
    L{dmq.metrics.nodeRegistry}.
    """

    def setUp(self) -> None:
        self.clock = Clock()
        self.network = FakeNetwork(self.clock)
        self.node = makeNode(
            self.clock, self.network, "127.0.0.11", htables=["kdmq=>size=8;dmqreplicate=1"]
        )
        self.addCleanup(self.node.stopService)

    def test_process(self) -> None:
        """
        The process's CPU time, memory and open files are there (from Linux's
        C{/proc}), and Python's version.
        """
        metrics = samples(self.node.metrics)
        if os.path.exists("/proc/self/stat"):
            for name in (
                "process_cpu_seconds_total", "process_resident_memory_bytes", "process_open_fds",
                "process_start_time_seconds",
            ):
                self.assertIn((name, ()), metrics)
            self.assertGreater(metrics[("process_resident_memory_bytes", ())], 0)
        self.assertTrue([key for key in metrics if key[0] == "python_info"])

    def test_ownRegistries(self) -> None:
        """
        Two nodes in one process each have their registry, both with the
        process's collectors, without a clash.
        """
        other = makeNode(self.clock, self.network, "127.0.0.12")
        self.addCleanup(other.stopService)
        self.assertIsNot(other.metrics, self.node.metrics)
        self.assertEqual(
            {key for key in samples(other.metrics) if key[0].startswith("python_info")},
            {key for key in samples(self.node.metrics) if key[0].startswith("python_info")},
        )

    def test_eventsAtZero(self) -> None:
        """
        Before anything happened, every known event of every family is
        reported, at zero.
        """
        metrics = self.everything()
        for family, events in KNOWN_EVENTS.items():
            labels = (("transport", "tcp"),) if family == "dmq_stream_events" else ()
            for event in events:
                key = (f"{family}_total", tuple(sorted((("event", _snake(event)), *labels))))
                self.assertEqual(metrics[key], 0, (family, event))

    def test_documented(self) -> None:
        """
        doc/operating.md's table names every C{dmq_} metric a node with
        every component exports.
        """
        metrics = self.everything()
        with open(os.path.join(os.path.dirname(DMQ), "doc", "operating.md"), encoding="utf-8") as f:
            documented = set(re.findall(r"`(dmq_\w+)`", f.read()))
        exported = {re.sub(r"_(bucket|sum|count)$", "", name) for name, _ in metrics if name.startswith("dmq_")}
        self.assertEqual(exported - documented, set())

    def everything(self) -> Dict[tuple, float]:
        """
        The samples of a node with every component that has metrics: the
        htable peer, the failure detector, anti-entropy, a TCP listener
        and a control endpoint (a stand-in, without a socket).
        """
        node = makeNode(
            self.clock, self.network, "127.0.0.12", htables=["kdmq=>size=8;dmqreplicate=1"], probe=True,
            htableEntropy=True, listen=(ServerSocket("tcp", "127.0.0.12", 5060),),
        )
        self.addCleanup(node.stopService)
        node.control = types.SimpleNamespace(statistics=Counter())
        try:
            return samples(node.metrics)
        finally:
            node.control = None

    def test_requestsAtZero(self) -> None:
        """
        Each registered peer's C{200} requests, both ways, are reported from
        the start; a peer never registered is not.
        """
        metrics = samples(self.node.metrics)
        for name in ("dmq_requests_received_total", "dmq_requests_sent_total"):
            for peer in ("notification_peer", "htable"):
                self.assertEqual(metrics[(name, (("code", "200"), ("peer", peer)))], 0)
            self.assertNotIn((name, (("code", "200"), ("peer", "usrloc"))), metrics)

    def test_countsKept(self) -> None:
        """
        A counted event is reported with its count, beside the others at zero.
        """
        self.node.protocol.statistics["unanswerable"] += 2
        metrics = samples(self.node.metrics)
        self.assertEqual(metrics[("dmq_datagram_events_total", (("event", "unanswerable"),))], 2)
        self.assertEqual(metrics[("dmq_datagram_events_total", (("event", "bad_requests"),))], 0)


def families(metrics: Dict[tuple, float], prefix: str) -> Set[str]:
    """
    The names of the samples of C{metrics} that start with C{prefix}.
    """
    return {name for name, _ in metrics if name.startswith(prefix)}


class ComponentTests(SynchronousTestCase):
    """
    The failure detector's, anti-entropy's and the stream transports'
    families: there, every event from zero, with the component; absent
    without it.
    """

    def setUp(self) -> None:
        self.clock = HeapClock()
        self.network = FakeNetwork(self.clock)

    def stop(self, node) -> None:
        if node.running:
            node.stopService()
        self.network.run(40)

    def makeNode(self, host: str, **options):
        node = makeNode(self.clock, self.network, host, **options)
        self.addCleanup(self.stop, node)
        return node

    def assertAtZero(self, metrics: Dict[tuple, float], family: str, labels=()) -> None:
        for event in KNOWN_EVENTS[family]:
            key = (f"{family}_total", tuple(sorted((("event", _snake(event)), *labels))))
            self.assertEqual(metrics[key], 0, event)

    def test_without(self) -> None:
        """
        A node without the detector, anti-entropy or a stream listener,
        that never used a stream transport, has none of their families.
        """
        node = self.makeNode("127.0.0.11", htables=["kdmq=>size=8;dmqreplicate=1"])
        self.assertIn("tcp", node.protocol.streams)
        metrics = samples(node.metrics)
        for prefix in ("dmq_probe_", "dmq_htable_entropy_", "dmq_stream_"):
            self.assertEqual(families(metrics, prefix), set(), prefix)

    def test_probe(self) -> None:
        """
        With C{probe}, every detector event is there from zero and the
        suspects at zero; probes and a suspicion are counted, and the
        suspect is one while it is suspected.
        """
        node = self.makeNode("127.0.0.11", probe=True)
        metrics = samples(node.metrics)
        self.assertAtZero(metrics, "dmq_probe_events")
        self.assertEqual(metrics[("dmq_probe_suspects", ())], 0)
        other = self.makeNode("127.0.0.12", seeds=["127.0.0.11"], probe=True)
        self.network.run(5)
        self.assertGreater(samples(node.metrics)[("dmq_probe_events_total", (("event", "probes"),))], 0)
        crashNode(self.network, other)
        for _ in range(200):
            if node.probe.suspects:
                break
            self.network.run(0.05)
        metrics = samples(node.metrics)
        self.assertEqual(metrics[("dmq_probe_suspects", ())], 1)
        self.assertEqual(metrics[("dmq_probe_events_total", (("event", "suspicions"),))], 1)
        self.assertEqual(metrics[("dmq_probe_events_total", (("event", "deaths"),))], 0)

    def test_entropy(self) -> None:
        """
        With C{htableEntropy}, every anti-entropy event is there from zero;
        a round is counted.
        """
        table = "kdmq=>size=8;autoexpire=0;dmqreplicate=1"
        node = self.makeNode("127.0.0.11", htables=[table], htableEntropy=True)
        self.assertAtZero(samples(node.metrics), "dmq_htable_entropy_events")
        self.makeNode("127.0.0.12", seeds=["127.0.0.11"], htables=[table], htableEntropy=True)
        self.network.run(3)
        self.assertIsNotNone(node.entropy.exchange())
        self.network.run(1)
        metrics = samples(node.metrics)
        self.assertEqual(metrics[("dmq_htable_entropy_events_total", (("event", "rounds"),))], 1)
        self.assertEqual(metrics[("dmq_htable_entropy_events_total", (("event", "bad_messages"),))], 0)

    def test_streamListener(self) -> None:
        """
        A node made with C{--listen tcp:...} reports its TCP transport's
        events from zero, and its connections; a connection accepted and
        closed for what it sent moves them.  The TLS transport, which it
        has not, is not there.
        """
        reactor = FakeReactor()
        node = makeService(
            parse("--server-address", "sip:127.0.0.11:5060", "--listen", "tcp:127.0.0.11:5060"), reactor
        )
        node.startService()
        self.addCleanup(node.stopService)
        self.assertEqual(reactor.tcpServers[0][0], 5060)
        metrics = samples(node.metrics)
        tcp = (("transport", "tcp"),)
        self.assertAtZero(metrics, "dmq_stream_events", tcp)
        self.assertEqual(metrics[("dmq_stream_connections", tcp)], 0)
        self.assertEqual({labels for name, labels in metrics if name == "dmq_stream_connections"}, {tcp})

        connection = reactor.tcpServers[0][1].buildProtocol(IPv4Address("TCP", "127.0.0.12", 40000))
        assert connection is not None
        transport = StringTransport(peerAddress=IPv4Address("TCP", "127.0.0.12", 40000))
        connection.makeConnection(transport)
        metrics = samples(node.metrics)
        self.assertEqual(metrics[("dmq_stream_events_total", (("event", "connections_accepted"), *tcp))], 1)
        self.assertEqual(metrics[("dmq_stream_connections", tcp)], 1)
        connection.dataReceived(b"KDMQ sip:x SIP/2.0\r\nContent-Length: many\r\n\r\n")
        connection.connectionLost(connectionDone)
        metrics = samples(node.metrics)
        self.assertEqual(metrics[("dmq_stream_events_total", (("event", "unframable"), *tcp))], 1)
        self.assertEqual(metrics[("dmq_stream_connections", tcp)], 0)

    def test_streamUsed(self) -> None:
        """
        A node over UDP alone reports its TCP transport once it has been
        used (to send to a node over TCP), every event from zero.
        """
        node = self.makeNode("127.0.0.11")
        node.protocol.sendRequest(
            sip.Request("OPTIONS", sip.parseURI("sip:127.0.0.12:5060;transport=tcp"), (
                ("From", "<sip:127.0.0.11>;tag=1"), ("To", "<sip:127.0.0.12>"), ("Call-ID", "metrics"),
                ("CSeq", "1 OPTIONS"), ("Max-Forwards", "70"), ("Content-Length", "0"),
            )),
            ("127.0.0.12", 5060),
        )
        metrics = samples(node.metrics)
        tcp = (("transport", "tcp"),)
        self.assertEqual(metrics[("dmq_stream_events_total", (("event", "connect_failures"), *tcp))], 1)
        self.assertEqual(metrics[("dmq_stream_events_total", (("event", "sent"), *tcp))], 0)


# The transaction layer's counters that dmq_stream_transaction_events_total
# reports (the others have a family of their own).
_TRANSACTION_EVENTS = sorted(
    set(_COUNTERS) - {"clientTransactions", "serverTransactions", "timeouts"}
)


def options(callID: str, destination: str) -> sip.Request:
    """
    An C{OPTIONS} request from 127.0.0.11 to C{destination}, a SIP URI.
    """
    return sip.Request("OPTIONS", sip.parseURI(destination), (
        ("From", "<sip:127.0.0.11>;tag=1"), ("To", "<sip:127.0.0.12>"), ("Call-ID", callID),
        ("CSeq", "1 OPTIONS"), ("Max-Forwards", "70"), ("Content-Length", "0"),
    ))


class StreamTransactionTests(SynchronousTestCase):
    """
    The stream transports' transaction counters: C{dmq_stream_transaction*}
    families labelled by C{transport}, under the rule of the other stream
    families, apart from the UDP transport's C{dmq_transaction*} ones.
    """

    def listeningNode(self):
        """
        A node on a fake reactor made with C{--listen tcp:127.0.0.11:5060},
        started; and the reactor.
        """
        reactor = FakeReactor()
        node = makeService(
            parse("--server-address", "sip:127.0.0.11:5060", "--listen", "tcp:127.0.0.11:5060"), reactor
        )
        node.startService()
        self.addCleanup(node.stopService)
        return node, reactor

    def assertTransactionsAt(
        self, metrics: Dict[tuple, float], transport: str, expected: Dict[tuple, float]
    ) -> None:
        """
        Each stream transaction sample of C{transport} is there, at zero but
        for those in C{expected}.
        """
        label = ("transport", transport)
        wanted: Dict[tuple, float] = {
            ("dmq_stream_transaction_timeouts_total", (label,)): 0,
            **{
                (name, (("kind", kind), label)): 0
                for name in ("dmq_stream_transactions_started_total", "dmq_stream_live_transactions")
                for kind in ("client", "server")
            },
            **{
                ("dmq_stream_transaction_events_total", (("event", _snake(event)), label)): 0
                for event in _TRANSACTION_EVENTS
            },
        }
        wanted.update(expected)
        self.assertEqual(
            {key: value for key, value in metrics.items()
             if key[0].startswith("dmq_stream_") and "transaction" in key[0] and label in key[1]},
            wanted,
        )

    def test_listeningAtZero(self) -> None:
        """
        A node listening on TCP reports its TCP transport's transaction
        counters, every one at zero, and none of TLS.
        """
        node, reactor = self.listeningNode()
        metrics = samples(node.metrics)
        self.assertTransactionsAt(metrics, "tcp", {})
        self.assertEqual(
            {labels for name, labels in metrics if name == "dmq_stream_transaction_timeouts_total"},
            {(("transport", "tcp"),)},
        )

    def test_timeoutOverTCP(self) -> None:
        """
        A request over TCP on a connection that never answers times out
        (Timer F): the TCP timeout counter moves, the UDP one does not.
        """
        node, reactor = self.listeningNode()
        node.protocol.sendRequest(
            options("tcp-timeout", "sip:127.0.0.12:5060;transport=tcp"), ("127.0.0.12", 5060)
        )
        host, port, factory = reactor.tcpClients[0][:3]
        self.assertEqual((host, port), ("127.0.0.12", 5060))
        connection = factory.buildProtocol(IPv4Address("TCP", host, port))
        transport = StringTransport(peerAddress=IPv4Address("TCP", host, port))
        connection.makeConnection(transport)
        self.assertIn(b"OPTIONS sip:127.0.0.12:5060;transport=tcp SIP/2.0", transport.value())
        metrics = samples(node.metrics)
        self.assertTransactionsAt(metrics, "tcp", {
            ("dmq_stream_transactions_started_total", (("kind", "client"), ("transport", "tcp"))): 1,
            ("dmq_stream_live_transactions", (("kind", "client"), ("transport", "tcp"))): 1,
        })

        reactor.advance(64 * 0.5 + 1)
        metrics = samples(node.metrics)
        self.assertTransactionsAt(metrics, "tcp", {
            ("dmq_stream_transactions_started_total", (("kind", "client"), ("transport", "tcp"))): 1,
            ("dmq_stream_transaction_timeouts_total", (("transport", "tcp"),)): 1,
        })
        self.assertEqual(metrics[("dmq_transaction_timeouts_total", ())], 0)
        self.assertEqual(metrics[("dmq_transactions_started_total", (("kind", "client"),))], 0)

    def test_timeoutOverUDP(self) -> None:
        """
        A node over UDP alone whose request times out counts it in
        C{dmq_transaction_timeouts_total}, and has no stream series.
        """
        clock = HeapClock()
        network = FakeNetwork(clock)
        node = makeNode(clock, network, "127.0.0.11")
        self.addCleanup(network.run, 40)
        self.addCleanup(node.stopService)
        node.protocol.sendRequest(options("udp-timeout", "sip:127.0.0.12:5060"), ("127.0.0.12", 5060))
        network.run(64 * 0.5 + 1)
        metrics = samples(node.metrics)
        self.assertGreaterEqual(metrics[("dmq_transaction_timeouts_total", ())], 1)
        self.assertEqual(families(metrics, "dmq_stream_"), set())

    def test_usedByTransactionsAlone(self) -> None:
        """
        A stream transport whose only count is in its transaction layer (a
        send refused before any connection) is reported as used.
        """
        clock = HeapClock()
        network = FakeNetwork(clock)
        node = makeNode(clock, network, "127.0.0.11")
        self.addCleanup(network.run, 40)
        self.addCleanup(node.stopService)
        node.protocol.streams["tcp"].transactions.statistics["refusedTooLarge"] += 1
        metrics = samples(node.metrics)
        self.assertTransactionsAt(metrics, "tcp", {
            ("dmq_stream_transaction_events_total", (("event", "refused_too_large"), ("transport", "tcp"))): 1,
        })
        self.assertEqual(metrics[("dmq_stream_connections", (("transport", "tcp"),))], 0)

    def test_parses(self) -> None:
        """
        The scrape of a node with a TCP listener parses with
        prometheus_client's parser, each stream transaction family with its
        type and its labels.
        """
        node, reactor = self.listeningNode()
        text = generate_latest(node.metrics).decode("utf-8")
        parsed = {family.name: family for family in text_string_to_metric_families(text)}
        for name, kind, labels in [
            ("dmq_stream_transactions_started", "counter", {"transport", "kind"}),
            ("dmq_stream_live_transactions", "gauge", {"transport", "kind"}),
            ("dmq_stream_transaction_timeouts", "counter", {"transport"}),
            ("dmq_stream_transaction_events", "counter", {"transport", "event"}),
        ]:
            self.assertEqual(parsed[name].type, kind, name)
            self.assertTrue(parsed[name].samples, name)
            for sample in parsed[name].samples:
                self.assertEqual(set(sample.labels), labels, name)
        # The UDP transport's families keep their label sets.
        self.assertEqual({s.labels["kind"] for s in parsed["dmq_transactions_started"].samples}, {"client", "server"})
        self.assertEqual([s.labels for s in parsed["dmq_transaction_timeouts"].samples], [{}])


class KnownEventsTests(SynchronousTestCase):
    """
    L{KNOWN_EVENTS} names every event the code counts.
    """

    def test_everyCountedEventKnown(self) -> None:
        """
        Each event name counted in the modules of a family is in its list.
        """
        missing: Dict[str, Set[str]] = {}
        for family, paths in _SOURCES.items():
            found: Set[str] = set()
            for path in paths:
                full = os.path.join(DMQ, path)
                if not os.path.exists(full):
                    continue
                with open(full, encoding="utf-8") as f:
                    text = f.read()
                for pattern in _COUNTED:
                    found.update(pattern.findall(text))
            unknown = found - set(KNOWN_EVENTS[family]) - _OWN_FAMILY.get(family, set())
            if unknown:
                missing[family] = unknown
        self.assertEqual(missing, {})
