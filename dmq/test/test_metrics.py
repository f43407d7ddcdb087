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
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

import dmq
from dmq.metrics import KNOWN_EVENTS, _snake
from dmq.test.fakenet import FakeNetwork, makeNode

DMQ = os.path.dirname(os.path.abspath(dmq.__file__))

# Where each family's events are counted.
_SOURCES = {
    "dmq_datagram_events": ["transport.py"],
    "dmq_membership_events": ["listmerge.py", "ownbody.py", "node.py"],
    "dmq_htable_events": [os.path.join("peers", "htable", name) for name in (
        "peer.py", "receive.py", "outbox.py", "sync.py", "store.py", "wire.py", "rpc.py")],
    "dmq_control_events": [os.path.join("control", name) for name in ("endpoint.py", "jsonrpc.py", "methods.py")],
}
# Counted by a family of their own, not as events.
_OWN_FAMILY = {"dmq_datagram_events": {"received", "sent", "malformed"}}
_COUNTED = [
    re.compile(r'statistics\[\s*"(\w+)"\s*\]'),
    re.compile(r'_refused\(\s*request,\s*node,\s*"(\w+)"'),
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
        self.node.control = types.SimpleNamespace(statistics=Counter())
        try:
            metrics = samples(self.node.metrics)
        finally:
            self.node.control = None
        for family, events in KNOWN_EVENTS.items():
            for event in events:
                self.assertEqual(metrics[(f"{family}_total", (("event", _snake(event)),))], 0, (family, event))

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
