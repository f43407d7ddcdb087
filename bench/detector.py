# -*- test-case-name: dmq.test.test_probe -*-
"""
Measure the failure detector (C{--probe}) on simulated buses: the time from
killing a node until every other node has it C{disabled}, then removed,
over many seeded kills; and, with C{--minutes}, false alarms and datagrams
per node per second under loss.  No sockets: the nodes run on one
L{HeapClock} and a L{FakeNetwork}, as in C{dmq.test.test_probe}.

Run it from the root of the repository::

    python bench/detector.py --nodes 10 --loss 0.2 --kills 30
    python bench/detector.py --nodes 10 --loss 0.2 --kills 0 --minutes 10 --seed 1
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
import unittest
from collections import Counter

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from dmq.node import NodeStatus  # noqa: E402
from dmq.test.test_probe import Bus  # noqa: E402


class _Host(unittest.TestCase):
    # Bus wants a test case for its cleanups.
    def runTest(self) -> None:
        pass


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--nodes", type=int, default=10)
    parser.add_argument("--loss", type=float, default=0.0)
    parser.add_argument("--kills", type=int, default=30)
    parser.add_argument("--minutes", type=float, default=0.0)
    parser.add_argument("--seed", type=int, default=100)
    args = parser.parse_args()
    disabled, removed = [], []
    for k in range(args.kills):
        bus = Bus(_Host(), args.nodes, seed=args.seed + k, net="127.0.9")
        bus.runUntil(bus.converged, 10, step=0.1)
        bus.lose(args.loss)
        bus.network.run(10 + k % 7 * 0.13)
        victim = 1 + k % (args.nodes - 1)
        bus.kill(victim)
        d = bus.runUntil(
            lambda: all(bus.status(n, victim) is not NodeStatus.ACTIVE for _, n in bus.live()), 30, step=0.01
        )
        r = bus.runUntil(lambda: all(bus.status(n, victim) is None for _, n in bus.live()), 30, step=0.05)
        disabled.append(d)
        removed.append(d + r)
        bus.stop()
    if disabled:
        print(
            f"{args.nodes} nodes, loss {args.loss:g}, {args.kills} kills: disabled everywhere after "
            f"median {statistics.median(disabled):.2f} s, max {max(disabled):.2f} s "
            f"({sum(d > 5 for d in disabled)} over 5 s); removed everywhere after max "
            f"{max(removed):.2f} s ({sum(r > 10 for r in removed)} over 10 s)"
        )
    if args.minutes:
        bus = Bus(_Host(), args.nodes, seed=args.seed, net="127.0.9")
        bus.runUntil(bus.converged, 10, step=0.1)
        del bus.events[:]
        bus.lose(args.loss)
        sent, cpu = len(bus.network.sent), time.process_time()
        bus.network.run(args.minutes * 60)
        downs = [event for event in bus.events if event[2] == "down"]
        total = sum((node.probe.statistics for _, node in bus.live()), Counter())
        print(
            f"{args.nodes} nodes, loss {args.loss:g}, {args.minutes:g} min: false alarms {len(downs)}; "
            f"suspicions raised {total['refutations']} (refuted by the suspect), deaths {total['deaths']}; "
            f"{(len(bus.network.sent) - sent) / args.nodes / (args.minutes * 60):.1f} datagrams per node "
            f"per second; {time.process_time() - cpu:.1f} s of CPU"
        )
        bus.stop()


if __name__ == "__main__":
    main()
