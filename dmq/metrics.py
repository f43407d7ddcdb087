# -*- test-case-name: dmq.test.test_control -*-
"""
Prometheus metrics of one node.

L{NodeCollector} reads the counters the layers keep anyway (the bus's
requests by peer and code, the transaction layer's retransmissions and
timeouts, the transport's datagrams, the node list) when it is scraped, so
counting costs nothing between scrapes.  Each node has its own
C{CollectorRegistry} (L{nodeRegistry}), so that several nodes in one process
do not collide.

Metrics, all prefixed C{dmq_}:

  - C{requests_received_total{peer,code}}, C{requests_sent_total{peer,code}}:
    KDMQ requests answered by us and answered to us (C{408} for a timeout).
    Requests for peers not registered here count under C{peer="_unknown"}.
  - C{handler_latency_seconds{peer}}: from a request's arrival to its
    answer, queueing included (a histogram).
  - C{queue_depth}: accepted requests waiting for a worker.
  - C{transactions_started_total{kind}}, C{live_transactions{kind}}:
    client and server transactions.
  - C{retransmissions_sent_total}, C{retransmissions_received_total},
    C{responses_resent_total}, C{transaction_timeouts_total},
    C{transaction_events_total{event}} (everything else the transaction
    layer counts: C{cancelled}, C{abandoned}, C{send_errors}, ...).
  - C{datagrams_received_total}, C{datagrams_sent_total},
    C{malformed_datagrams_total}, C{datagram_events_total{event}} (the rest:
    C{bad_requests} answered 400, C{unanswerable}, C{unmatched_responses},
    ...).
  - C{nodes{status}}: the other nodes by status.
  - C{refused_total{cause}}: requests refused (C{not_allowed},
    C{not_member}, C{unsigned}, C{bad_signature}, C{stale}, C{replay},
    C{flooding}), node-list lines of non-members ignored
    (C{stranger_lines}) and unsigned replies to our signed requests
    (C{bad_reply}); every cause there from the start (L{dmq.trust}).
  - C{membership_events_total{event}}: node-list input refused or left out,
    by cause (L{dmq.node.NodeManager.statistics}).
  - C{htable_events_total{event}}: what the htable peer refused, skipped,
    queued, sent again and dumped (L{dmq.peers.htable.HTablePeer.statistics}),
    with C{htable_replication_pending} the changes waiting to be sent.
  - C{control_events_total{event}}: what the control endpoint refused or
    closed (C{dmq.control.ControlService.statistics}).
  - C{probe_events_total{event}} and C{probe_suspects}, with the failure
    detector (L{dmq.probe.ProbeDetector.statistics}): probes, suspicions,
    deaths, ..., and the nodes suspected now.
  - C{htable_entropy_events_total{event}}, with htable anti-entropy
    (L{dmq.peers.htable.entropy.AntiEntropy.statistics}): rounds, buckets
    found differing, cells taken from another node, ...
  - C{stream_events_total{transport,event}} and
    C{stream_connections{transport}}: what each of the TCP and TLS
    transports counted (L{dmq.stream.SIPStreamTransport.statistics}:
    messages, connections accepted, opened, failed, closed and why) and
    its connections open now, for each transport the node listens with or
    has used; with them, C{stream_transactions_started_total{transport,kind}},
    C{stream_live_transactions{transport,kind}},
    C{stream_transaction_timeouts_total{transport}} and
    C{stream_transaction_events_total{transport,event}}: each stream
    transport's own transaction layer, whose counters the unlabelled
    C{transaction*} families above (the UDP transport's) do not include.
  - C{info{version,node}}.

Every label value known in advance is there from the first scrape, at
zero: each event of L{KNOWN_EVENTS}, each node status, and for each peer
registered, its C{code="200"} requests.  The registry also holds
prometheus_client's process (C{process_*}, from Linux's C{/proc}), platform
(C{python_info}) and garbage collector (C{python_gc_*}, CPython only)
collectors.
"""

from __future__ import annotations

import bisect
import re
from typing import TYPE_CHECKING, Any, Dict, Iterator, List, Mapping, Tuple

if TYPE_CHECKING:
    from prometheus_client.core import CollectorRegistry, CounterMetricFamily
    from prometheus_client.metrics_core import Metric

from dmq import __version__
from dmq.bus import UNKNOWN_PEER, DMQBus
from dmq.node import NodeStatus
from dmq.stream import SIPStreamTransport
from dmq.transaction import TransactionLayer

__all__ = ["HandlerLatency", "NodeCollector", "nodeRegistry", "LATENCY_BUCKETS", "KNOWN_EVENTS"]

KNOWN_EVENTS: Dict[str, Tuple[str, ...]] = {
    "dmq_datagram_events": (
        "badRequests", "internalErrors", "unanswerable", "unmatchedResponses", "unsupportedTransport",
    ),
    "dmq_membership_events": (
        "bodyLinesOverBudget", "bodyLinesUnwritable", "nodeListLinesIgnored", "nodesRefusedFull",
        "nodesRefusedNotAllowed",
    ),
    "dmq_htable_events": (
        "badMessages", "droppedAtStop", "failedMessages", "patternsRefused", "replicationQueued",
        "replicationRefused", "sendFailures", "sendRetries", "skippedCells", "syncCoalesced", "syncDumps",
        "syncDumpsTruncated", "tableFull", "tooLarge",
    ),
    "dmq_control_events": (
        "badToken", "batchesTooLarge", "bodiesTooLarge", "connectionsRefused", "internalErrors",
        "invalidRequests", "noToken", "parseErrors", "slowRequests",
    ),
    "dmq_probe_events": (
        "badMessages", "deaths", "goneBack", "goneProbes", "indirectProbes", "probes", "refutations",
        "refuted", "removals", "suspicions",
    ),
    "dmq_htable_entropy_events": (
        "badMessages", "bucketsDiffering", "cellsApplied", "deletionsApplied", "notDmq", "rounds",
    ),
    # A stream transport counts its messages as the UDP one does (but for
    # unsupportedTransport, which only the UDP one, that routes, counts),
    # and its connections.
    "dmq_stream_events": (
        "badRequests", "connectFailures", "connectionsAccepted", "connectionsOpened", "connectionsRefused",
        "idleClosed", "internalErrors", "malformed", "oversize", "queueFull", "received", "sent",
        "slowReader", "slowSender", "unanswerable", "unframable", "unmatchedResponses",
    ),
}
"""
The events each C{*_events_total} family counts, by the names the layers
count them under (written in snake case as label values): each is reported
from the first scrape, at zero.  The transaction layer's are its own
(L{dmq.transaction.TransactionLayer.statistics} starts with every one).
"""

LATENCY_BUCKETS: Tuple[float, ...] = (
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
)
"""
Upper bounds of the handler latency buckets, in seconds; the bus's default
handler timeout is 10 s.
"""



class HandlerLatency:
    """
    How long requests took from arrival to answer, per peer: the counts of
    a histogram, kept between scrapes.
    """

    def __init__(self, buckets: Tuple[float, ...] = LATENCY_BUCKETS) -> None:
        self.buckets = tuple(sorted(buckets))
        self._peers: Dict[str, Tuple[List[int], List[float]]] = {}

    def observe(self, peerId: str, seconds: float) -> None:
        """
        Count one request to C{peerId} answered after C{seconds}: two
        additions to plain numbers, on the way of every request.
        """
        entry = self._peers.get(peerId)
        if entry is None:
            entry = self._peers[peerId] = ([0] * (len(self.buckets) + 1), [0.0])
        counts, total = entry
        counts[bisect.bisect_left(self.buckets, seconds)] += 1
        total[0] += seconds

    def histograms(self) -> Iterator[Tuple[str, List[Tuple[str, int]], float]]:
        """
        @return: for each peer, its id, its cumulative buckets as
            C{(upper bound, count)} ending with C{+Inf}, and the sum.
        """
        for peerId, (counts, total) in self._peers.items():
            cumulative = []
            running = 0
            for bound, count in zip([*map(str, self.buckets), "+Inf"], counts):
                running += count
                cumulative.append((bound, running))
            yield peerId, cumulative, total[0]


def _snake(name: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


class NodeCollector:
    """
    Reads a node's counters at scrape time: a Prometheus C{Collector}.
    C{prometheus_client} is imported on the first scrape, not with this
    module, so that a node nobody scrapes does not load it (see "Memory"
    in doc/performance.md).
    """

    # node: Any, because DMQNodeService lives in dmq.tap, a layer above
    # (the layout test counts imports under TYPE_CHECKING too).
    def __init__(self, node: Any) -> None:
        """
        @param node: a L{dmq.tap.DMQNodeService}: its C{bus}, C{protocol},
            C{nodeManager} and C{handlerLatency} are read.
        """
        self._node = node

    def collect(self) -> Iterator[Metric]:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, InfoMetricFamily

        node = self._node
        bus = node.bus
        yield InfoMetricFamily(
            "dmq", "This node.", value={"version": __version__, "node": str(node.nodeManager.localNode)}
        )
        yield from self._requests(bus)
        latency = HistogramMetricFamily(
            "dmq_handler_latency_seconds",
            "Seconds from a request's arrival to its answer, queueing included.",
            labels=["peer"],
        )
        for peerId, buckets, total in node.handlerLatency.histograms():
            latency.add_metric([peerId], buckets, total)
        yield latency
        yield GaugeMetricFamily(
            "dmq_queue_depth", "Accepted requests waiting for a worker.", value=bus.queueDepth
        )
        yield from self._transactions(node.protocol.transactions)
        yield from self._datagrams(node.protocol.statistics)
        nodes = GaugeMetricFamily("dmq_nodes", "The other nodes, by status.", labels=["status"])
        others = [n for n in node.nodeManager.nodes() if not n.local]
        for status in NodeStatus:
            nodes.add_metric([status.value], sum(1 for n in others if n.status is status))
        yield nodes
        yield _events(
            "dmq_membership_events", "Node-list input refused or left out, by cause.",
            node.nodeManager.statistics, KNOWN_EVENTS["dmq_membership_events"],
        )
        refused = CounterMetricFamily(
            "dmq_refused", "Requests and node-list lines refused, by cause (doc/security.md).",
            labels=["cause"],
        )
        for cause, count in sorted(bus.refusals.counts.items()):
            refused.add_metric([_snake(cause)], count)
        yield refused
        htable = getattr(node, "htable", None)
        if htable is not None:
            yield _events(
                "dmq_htable_events", "htable peer events, by name.", dict(htable.statistics),
                KNOWN_EVENTS["dmq_htable_events"],
            )
            yield GaugeMetricFamily(
                "dmq_htable_replication_pending", "htable changes waiting to be sent.",
                value=htable.replicationPending,
            )
        control = getattr(node, "control", None)
        if control is not None:
            yield _events(
                "dmq_control_events", "Control endpoint refusals, by name.", dict(control.statistics),
                KNOWN_EVENTS["dmq_control_events"],
            )
        probe = getattr(node, "probe", None)
        if probe is not None:
            yield _events(
                "dmq_probe_events", "Failure detector events, by name.", dict(probe.statistics),
                KNOWN_EVENTS["dmq_probe_events"],
            )
            yield GaugeMetricFamily(
                "dmq_probe_suspects", "Nodes the failure detector suspects now.", value=probe.suspects
            )
        entropy = getattr(node, "entropy", None)
        if entropy is not None:
            yield _events(
                "dmq_htable_entropy_events", "htable anti-entropy events, by name.", dict(entropy.statistics),
                KNOWN_EVENTS["dmq_htable_entropy_events"],
            )
        yield from self._streams(node)

    def _streams(self, node: Any) -> Iterator[Metric]:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        # Every node has a TCP transport (and a TLS one with a
        # certificate), to send to nodes that ask for it: one the node does
        # not listen with is reported once it has been used, so that a
        # node over UDP alone has no stream families.
        listening = getattr(node, "streams", {})
        streams = [
            (name, stream) for name, stream in sorted(node.protocol.streams.items())
            if isinstance(stream, SIPStreamTransport) and (name in listening or _used(stream))
        ]
        if not streams:
            return
        events = CounterMetricFamily(
            "dmq_stream_events", "TCP and TLS transport events, by transport and name.",
            labels=["transport", "event"],
        )
        connections = GaugeMetricFamily(
            "dmq_stream_connections", "TCP and TLS connections open, both ways, by transport.",
            labels=["transport"],
        )
        for name, stream in streams:
            _addEvents(events, [name], dict(stream.statistics), KNOWN_EVENTS["dmq_stream_events"])
            connections.add_metric([name], stream.openConnections)
        yield events
        yield connections
        yield from self._streamTransactions(streams)

    def _streamTransactions(self, streams: List[Tuple[str, SIPStreamTransport]]) -> Iterator[Metric]:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        # Families of their own rather than a transport label on the UDP
        # transport's dmq_transaction_* ones: a label added there would
        # change the identity of every series dashboards and alerts already
        # select (see doc/operating.md, "Metrics").
        started = CounterMetricFamily(
            "dmq_stream_transactions_started", "SIP transactions started over TCP and TLS, by transport.",
            labels=["transport", "kind"],
        )
        live = GaugeMetricFamily(
            "dmq_stream_live_transactions", "SIP transactions alive over TCP and TLS, by transport.",
            labels=["transport", "kind"],
        )
        timeouts = CounterMetricFamily(
            "dmq_stream_transaction_timeouts",
            "Requests of ours over TCP and TLS never answered (Timer F, 408), by transport.",
            labels=["transport"],
        )
        events = CounterMetricFamily(
            "dmq_stream_transaction_events",
            "Other SIP transaction events over TCP and TLS, by transport and name.",
            labels=["transport", "event"],
        )
        for name, stream in streams:
            layer = stream.transactions
            statistics = dict(layer.statistics)
            started.add_metric([name, "client"], statistics.pop("clientTransactions", 0))
            started.add_metric([name, "server"], statistics.pop("serverTransactions", 0))
            live.add_metric([name, "client"], layer.liveClientTransactions)
            live.add_metric([name, "server"], layer.liveServerTransactions)
            timeouts.add_metric([name], statistics.pop("timeouts", 0))
            # The layer's statistics start with every counter at zero.
            _addEvents(events, [name], statistics, ())
        yield started
        yield live
        yield timeouts
        yield events

    def _requests(self, bus: DMQBus) -> Iterator[Metric]:
        from prometheus_client.core import CounterMetricFamily

        registered = {peer.peerId for peer in bus.peers}
        families = {
            "in": CounterMetricFamily(
                "dmq_requests_received", "KDMQ requests answered, by peer and code.", labels=["peer", "code"]
            ),
            "out": CounterMetricFamily(
                "dmq_requests_sent",
                "KDMQ requests sent, by peer and final code (408: no answer).",
                labels=["peer", "code"],
            ),
        }
        # Each registered peer's usual answer is there from the start, so
        # that a rate over it exists before the first request.
        counts: Dict[Tuple[str, str, str], int] = {
            (direction, peerId, "200"): 0 for direction in ("in", "out") for peerId in registered
        }
        for (direction, peerId, code), count in list(bus.statistics.items()):
            if direction == "in" and peerId not in registered:
                # Anyone can name any peer: keep the label set bounded.
                peerId = UNKNOWN_PEER
            key = (direction, peerId, str(code))
            counts[key] = counts.get(key, 0) + count
        for (direction, peerId, label), count in sorted(counts.items()):
            families[direction].add_metric([peerId, label], count)
        yield from families.values()

    def _transactions(self, layer: TransactionLayer) -> Iterator[Metric]:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        statistics = dict(layer.statistics)
        started = CounterMetricFamily(
            "dmq_transactions_started", "SIP transactions started.", labels=["kind"]
        )
        started.add_metric(["client"], statistics.pop("clientTransactions", 0))
        started.add_metric(["server"], statistics.pop("serverTransactions", 0))
        yield started
        live = GaugeMetricFamily("dmq_live_transactions", "SIP transactions alive.", labels=["kind"])
        live.add_metric(["client"], layer.liveClientTransactions)
        live.add_metric(["server"], layer.liveServerTransactions)
        yield live
        for name, key, doc in [
            ("dmq_retransmissions_sent", "retransmissionsSent", "Requests of ours sent again (Timer E)."),
            (
                "dmq_retransmissions_received",
                "retransmissionsAbsorbed",
                "Duplicate requests and responses received and absorbed.",
            ),
            ("dmq_responses_resent", "responsesResent", "Stored responses sent again for a duplicate request."),
            ("dmq_transaction_timeouts", "timeouts", "Requests of ours never answered (Timer F, 408)."),
        ]:
            yield CounterMetricFamily(name, doc, value=statistics.pop(key, 0))
        yield _events(
            "dmq_transaction_events", "Other SIP transaction events, by name.", statistics
        )

    def _datagrams(self, statistics: Mapping[str, int]) -> Iterator[Metric]:
        from prometheus_client.core import CounterMetricFamily

        statistics = dict(statistics)
        for name, key, doc in [
            ("dmq_datagrams_received", "received", "UDP datagrams received."),
            ("dmq_datagrams_sent", "sent", "UDP datagrams sent."),
            ("dmq_malformed_datagrams", "malformed", "Datagrams that were not SIP we accept."),
        ]:
            yield CounterMetricFamily(name, doc, value=statistics.pop(key, 0))
        yield _events(
            "dmq_datagram_events", "Other datagram events, by name.", statistics, KNOWN_EVENTS["dmq_datagram_events"]
        )


def _used(stream: SIPStreamTransport) -> bool:
    """
    Whether C{stream} has been used: it has a connection, or counted
    something, itself or in its transaction layer (a send refused before
    any connection counts only there).
    """
    return bool(
        stream.openConnections
        or any(stream.statistics.values())
        or any(stream.transactions.statistics.values())
    )


def _events(name: str, doc: str, statistics: Dict[str, int], known: Tuple[str, ...] = ()) -> CounterMetricFamily:
    """
    A family of event counters, C{known} events at zero until counted.
    """
    from prometheus_client.core import CounterMetricFamily

    family = CounterMetricFamily(name, doc, labels=["event"])
    _addEvents(family, [], statistics, known)
    return family


def _addEvents(
    family: CounterMetricFamily, labels: List[str], statistics: Dict[str, int], known: Tuple[str, ...]
) -> None:
    """
    Add to C{family} a sample for each event, C{known} events at zero until
    counted, each labelled C{labels} and then the event.
    """
    counts = dict.fromkeys(known, 0)
    counts.update(statistics)
    for event, count in sorted(counts.items()):
        family.add_metric([*labels, _snake(event)], count)


def nodeRegistry(node: Any) -> CollectorRegistry:
    """
    A registry of its own for C{node}'s metrics, with the process's.
    """
    from prometheus_client import GCCollector, PlatformCollector, ProcessCollector
    from prometheus_client.core import CollectorRegistry

    registry = CollectorRegistry()
    registry.register(NodeCollector(node))
    ProcessCollector(registry=registry)
    PlatformCollector(registry=registry)
    GCCollector(registry=registry)
    return registry
