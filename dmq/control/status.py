# -*- test-case-name: dmq.test.test_control -*-
"""
The status page at C{GET /} of the control endpoint: the node, its peers
with their request rates, the node table with states and last-seen times,
the queue depth and the live transactions, as one HTML page that reloads
itself every L{REFRESH} seconds.

Rendered on the server with L{twisted.web.template}, which escapes every
value (node URIs come from the bus); no script and no external asset (the
CSS is inline, and the page's C{Content-Security-Policy} forbids anything
else).
"""

from __future__ import annotations

import time
from collections import deque
from typing import Any, Deque, Dict, List, Optional, Tuple

from twisted.internet.interfaces import IReactorTime
from twisted.web import resource, server
from twisted.web.template import Tag, flattenString, tags

from dmq import __version__
from dmq.bus import UNKNOWN_PEER

__all__ = ["StatusPage", "REFRESH", "statusPage"]

REFRESH = 5
"""
Seconds between the page's reloads.
"""

_SAMPLE_EVERY = 1.0
_SAMPLES = 61
"""
The rates are over the last minute at most: one sample of the counters per
render, at most one a second, sixty-one kept.
"""

_CSS = """
body { font: 14px/1.4 system-ui, sans-serif; margin: 1.5em; color: #222; background: #fafafa; }
h1 { font-size: 1.3em; margin: 0 0 .3em; } h2 { font-size: 1.1em; margin: 1.4em 0 .4em; }
code { font: 13px ui-monospace, monospace; }
table { border-collapse: collapse; background: #fff; }
th, td { border: 1px solid #ddd; padding: .3em .7em; text-align: left; }
th { background: #eee; } td.n { text-align: right; font-variant-numeric: tabular-nums; }
.summary span { margin-right: 1.5em; }
.status { font-weight: 600; } .active { color: #17692b; } .not_active { color: #9a6700; }
.disabled { color: #b42318; } tr.local { background: #f1f6ff; }
footer { margin-top: 1.5em; color: #777; font-size: .9em; }
"""

Totals = Dict[str, Tuple[int, int]]


class StatusPage(resource.Resource):
    """
    C{GET /}: the status page of one node.
    """

    isLeaf = True

    def __init__(self, node: Any, clock: IReactorTime) -> None:
        """
        @param node: a L{dmq.tap.DMQNodeService}: its C{nodeManager},
            C{bus} and C{protocol} are read.
        @param clock: the clock of the last-seen times and of the rates.
        """
        resource.Resource.__init__(self)
        self._node = node
        self._clock = clock
        self._samples: Deque[Tuple[float, Totals]] = deque(maxlen=_SAMPLES)

    def rates(self) -> Dict[str, Tuple[int, int, Optional[float], Optional[float]]]:
        """
        Sample the bus's counters and say, per peer, the requests received
        and sent, and their rates per second since the oldest sample kept
        (C{None} before there is one).
        """
        now = self._clock.seconds()
        totals = _totals(self._node.bus)
        if not self._samples or now - self._samples[-1][0] >= _SAMPLE_EVERY:
            self._samples.append((now, totals))
        then, old = self._samples[0]
        elapsed = now - then
        found: Dict[str, Tuple[int, int, Optional[float], Optional[float]]] = {}
        for peerId, (received, sent) in totals.items():
            if elapsed > 0:
                before = old.get(peerId, (0, 0))
                found[peerId] = (
                    received, sent, (received - before[0]) / elapsed, (sent - before[1]) / elapsed
                )
            else:
                found[peerId] = (received, sent, None, None)
        return found

    def render_GET(self, request: server.Request) -> bytes:
        request.setHeader(b"content-type", b"text/html; charset=utf-8")
        request.setHeader(b"cache-control", b"no-store")
        request.setHeader(b"content-security-policy", b"default-src 'none'; style-src 'unsafe-inline'")
        return render(statusPage(self._node, self._clock.seconds(), self.rates()))


def _totals(bus: Any) -> Totals:
    registered = [peer.peerId for peer in bus.peers]
    totals: Dict[str, List[int]] = {peerId: [0, 0] for peerId in registered}
    for (direction, peerId, _), count in list(bus.statistics.items()):
        if peerId not in totals:
            # Anyone can name any peer: one row for them all.
            peerId = UNKNOWN_PEER
            totals.setdefault(peerId, [0, 0])
        totals[peerId][0 if direction == "in" else 1] += count
    return {peerId: (pair[0], pair[1]) for peerId, pair in totals.items()}


def _ago(now: float, then: Optional[float]) -> Tag:
    if not then:
        return tags.td("never", class_="n")
    seconds = max(0, int(now - then))
    text = f"{seconds} s ago" if seconds < 120 else f"{seconds // 60} min ago"
    stamp = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(then))
    return tags.td(text, class_="n", title=stamp)


def _rate(value: Optional[float]) -> Tag:
    return tags.td("-" if value is None else f"{value:.2f}", class_="n")


def statusPage(node: Any, now: float, rates: Dict[str, Tuple[int, int, Optional[float], Optional[float]]]) -> Tag:
    """
    The page, as a tag tree.

    @param node: a L{dmq.tap.DMQNodeService}.
    @param now: the time of the last-seen column.
    @param rates: by peer id, what L{StatusPage.rates} says.
    """
    manager, bus = node.nodeManager, node.bus
    local = manager.localNode.uri.toString()
    transactions = node.protocol.transactions
    nodes = [
        tags.tr(
            tags.td(tags.code(n.uri.toString())),
            tags.td(n.status.value, class_="status " + n.status.value),
            tags.td("yes" if n.local else "no"),
            tags.td(n.resolvedIP or "-"),
            tags.td(str(n.failCount), class_="n"),
            _ago(now, n.lastNotification) if not n.local else tags.td("-", class_="n"),
            class_="node local" if n.local else "node",
            **{"data-status": n.status.value},
        )
        for n in manager.nodes()
    ]
    descriptions = {peer.peerId: str(getattr(peer, "description", "")) for peer in bus.peers}
    peers = [
        tags.tr(
            tags.td(tags.code(peerId)),
            tags.td(descriptions.get(peerId, "requests for peers not registered here")),
            tags.td(str(received), class_="n"),
            _rate(inRate),
            tags.td(str(sent), class_="n"),
            _rate(outRate),
            class_="peer",
        )
        for peerId, (received, sent, inRate, outRate) in rates.items()
    ]
    others = [n for n in manager.nodes() if not n.local]
    return tags.html(
        tags.head(
            tags.meta(charset="utf-8"),
            tags.meta(content=str(REFRESH), **{"http-equiv": "refresh"}),
            tags.title(f"dmq {local}"),
            tags.style(_CSS),
        ),
        tags.body(
            tags.h1("dmq node ", tags.code(local)),
            tags.p(
                tags.span("version ", tags.strong(__version__)),
                tags.span("other nodes ", tags.strong(str(len(others)), id="node-count")),
                tags.span(
                    "active ",
                    tags.strong(str(sum(1 for n in others if n.status.value == "active")), id="active-count"),
                ),
                tags.span("queue depth ", tags.strong(str(bus.queueDepth), id="queue-depth")),
                tags.span(
                    "live transactions ",
                    tags.strong(
                        f"{transactions.liveClientTransactions} out, {transactions.liveServerTransactions} in",
                        id="transactions",
                    ),
                ),
                class_="summary",
            ),
            tags.h2("Nodes"),
            tags.table(
                tags.thead(tags.tr(*[tags.th(h) for h in ("URI", "status", "local", "IP", "fail count", "last seen")])),
                tags.tbody(*nodes),
                id="nodes",
            ),
            tags.h2("Peers"),
            tags.table(
                tags.thead(
                    tags.tr(
                        *[
                            tags.th(h)
                            for h in ("peer", "description", "received", "received/s", "sent", "sent/s")
                        ]
                    )
                ),
                tags.tbody(*peers),
                id="peers",
            ),
            tags.footer(
                time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(now)),
                f"; reloads every {REFRESH} s; rates over the last minute at most. ",
                "JSON-RPC at POST /RPC, metrics at GET /metrics.",
            ),
        ),
        lang="en",
    )


def render(page: Tag) -> bytes:
    """
    Flatten C{page} to an HTML document.
    """
    done: List[bytes] = []
    failures: List[Any] = []
    # Nothing in the page waits: the flattening is done when this returns.
    flattenString(None, page).addCallbacks(done.append, failures.append)
    if failures:
        failures[0].raiseException()
    return b"<!DOCTYPE html>\n" + done[0]
