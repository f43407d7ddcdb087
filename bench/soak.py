# -*- test-case-name: dmq.test.test_fuzz -*-
"""
Hold a dmq node at full rate for a long time, and watch its memory and its
live transactions.

Run it from the root of the repository::

    python bench/soak.py [--seconds 600] [--outstanding 256] [--interval 10]

It starts a bus of two nodes of this tree, each in a process of its own, as
C{bench/fuzz.py} starts them (L{fuzz.startNodes}, on C{127.0.0.81} and
C{127.0.0.82}, port 5060, the control endpoint on port 5080 of each, the
replicated htable C{kdmq}), and runs C{bench/bus.py}'s load generator
(C{--role=generate}, from C{127.0.0.83}) against the first: C{--outstanding}
htable set requests kept in flight, over C{--keys} cell names so that the
table stops growing.  A node does not pass on what it hears on the bus, so
those sets stay on the first node (server transactions); to keep client
transactions busy too, C{--rpc-rate} sets per second go to the first node's
control endpoint (C{htable.sets}, in batches every 0.1 s), and those it
replicates to the second.

Every C{--interval} seconds it samples each node's RSS (VmRSS) and, from its
C{/metrics}, its live client and server transactions and the requests it
answered, and prints them.  After C{--seconds} it stops the load, waits
C{--idle} seconds and samples once more.

It prints the samples, and for each node the growth after the first minute
(C{--baseline} seconds): RSS from the first sample at or after it to the
last loaded sample, and live transactions, first third against last third
of the samples after it.  The targets are an RSS growth under 10 % and
flat transactions (a growth under 10 %, or under 200 transactions, the
wobble of the Timer J sweeps and of the rate); the exit code is
0 when both are met on both nodes and both are still alive, 1 otherwise.
C{--json FILE} writes everything as JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from typing import Any, Dict, List, Sequence

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import bus  # noqa: E402  (bench/bus.py: the load generator)
import fuzz  # noqa: E402  (bench/fuzz.py: the node processes)

NODES = (("a", "127.0.0.81"), ("b", "127.0.0.82"))
GENERATOR_HOST = "127.0.0.83"
# bench/bus.py refuses longer runs; longer soaks chain several.
GENERATOR_MAX_SECONDS = 600.0


def sample(nodes: Sequence[fuzz.NodeProcess], started: float, phase: str) -> Dict[str, Any]:
    """
    One sample of every node: RSS in kB, live transactions, requests
    answered so far.
    """
    row: Dict[str, Any] = {"t": round(time.monotonic() - started, 1), "phase": phase}
    for node in nodes:
        entry: Dict[str, Any] = {"alive": node.alive, "rss": node.rss()}
        try:
            samples = node.metrics()
        except (OSError, ValueError) as e:
            entry["error"] = str(e)
        else:
            entry["client"] = samples.get(("dmq_live_transactions", (("kind", "client"),)))
            entry["server"] = samples.get(("dmq_live_transactions", (("kind", "server"),)))
            entry["answered"] = sum(
                value for (name, labels), value in samples.items() if name == "dmq_requests_received_total"
            )
            entry["queue"] = samples.get(("dmq_queue_depth", ()))
            entry["clientStarted"] = samples.get(("dmq_transactions_started_total", (("kind", "client"),)))
        row[node.name] = entry
    return row


def printRow(row: Dict[str, Any], names: Sequence[str]) -> None:
    parts = [f"{row['t']:>7.1f} s {row['phase']:<6}"]
    for name in names:
        entry = row[name]
        rss = entry.get("rss")
        parts.append(
            f"{name}: RSS {'-' if rss is None else f'{rss / 1024:6.1f} MB'},"
            f" transactions {entry.get('client', '-')!s:>6} client {entry.get('server', '-')!s:>6} server,"
            f" {entry.get('answered', 0):>9,.0f} answered"
        )
    print(" | ".join(parts), flush=True)


def rpcLoad(node: fuzz.NodeProcess, rate: float, keys: int, stop: threading.Event, tally: Counter) -> None:
    """
    Set C{rate} cells per second on C{node} over JSON-RPC, in a batch every
    0.1 s, until C{stop}: each is replicated to the other nodes.
    """
    perBatch = max(1, round(rate / 10))
    n = 0
    due = time.monotonic()
    while not stop.is_set():
        calls = [
            {"jsonrpc": "2.0", "method": "htable.sets", "params": ["kdmq", f"r{(n + i) % keys}", "v"], "id": i}
            for i in range(perBatch)
        ]
        n += perBatch
        body = json.dumps(calls).encode("utf-8")
        request = (
            b"POST /RPC HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nConnection: close\r\n"
            b"Content-Length: %d\r\n\r\n" % len(body)
        ) + body
        try:
            _, answer = fuzz.http(node.host, node.controlPort, request, 10)
            for one in json.loads(answer):
                tally["ok" if "result" in one else f"error {one.get('error', {}).get('code')}"] += 1
        except (OSError, ValueError, TypeError, AttributeError) as e:
            tally[f"failed: {type(e).__name__}"] += 1
        due += 0.1
        stop.wait(max(0.0, due - time.monotonic()))


def startGenerator(options: argparse.Namespace, seconds: float, first: int, pgid: int) -> subprocess.Popen:
    """
    Start C{bench/bus.py}'s load generator against the first node.
    """
    argv = [
        sys.executable,
        os.path.join(ROOT, "bench", "bus.py"),
        "--role=generate",
        f"--target-host={NODES[0][1]}",
        f"--target-port={fuzz.SIP_PORT}",
        f"--bind-host={GENERATOR_HOST}",
        f"--outstanding={options.outstanding}",
        f"--seconds={seconds}",
        "--warmup=0",
        f"--timeout={options.timeout}",
        f"--keys={options.keys}",
        f"--first={first}",
        f"--run-tag=soak{os.getpid():x}x{first:x}",
        f"--watch-pgid={pgid}",
    ]
    return subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, preexec_fn=bus._dieWithParent)


def growth(rows: List[Dict[str, Any]], name: str, baseline: float) -> Dict[str, Any]:
    """
    RSS and live transactions of node C{name} after C{baseline} seconds of
    load.
    """
    loaded = [r for r in rows if r["phase"] == "load" and r["t"] >= baseline and r[name].get("rss")]
    if len(loaded) < 2:
        return {"samples": len(loaded)}
    first, last = loaded[0][name]["rss"], loaded[-1][name]["rss"]
    third = max(1, len(loaded) // 3)

    def mean(entries: List[Dict[str, Any]]) -> float:
        values = [(e[name].get("client") or 0) + (e[name].get("server") or 0) for e in entries]
        return sum(values) / len(values)

    early, late = mean(loaded[:third]), mean(loaded[-third:])
    transactions = [(e[name].get("client") or 0) + (e[name].get("server") or 0) for e in loaded]
    return {
        "samples": len(loaded),
        "rssFirst": first,
        "rssLast": last,
        "rssGrowth": (last - first) / first,
        "transactionsEarly": round(early, 1),
        "transactionsLate": round(late, 1),
        "transactionsMin": min(transactions),
        "transactionsMax": max(transactions),
        # The sampling catches the live count between Timer J sweeps and as
        # the rate wobbles: a leak grows past both margins, noise does not.
        "transactionsFlat": late - early <= max(0.10 * early, 200),
    }


def run(options: argparse.Namespace) -> int:
    workdir = options.workdir or tempfile.mkdtemp(prefix="dmq-soak-")
    os.makedirs(workdir, exist_ok=True)
    print(
        f"dmq soak: {options.seconds:g} s at {options.outstanding} in flight, a sample every {options.interval:g} s;"
        f" logs in {workdir}",
        flush=True,
    )
    nodeOptions = argparse.Namespace(ping_interval=options.ping_interval)
    nodes = fuzz.startNodes(workdir, nodeOptions, NODES)
    names = [n.name for n in nodes]
    rows: List[Dict[str, Any]] = []
    results: List[Dict[str, Any]] = []
    status = 0
    try:
        started = time.monotonic()
        before = {n.name: n.metrics() for n in nodes}
        rows.append(sample(nodes, started, "start"))
        printRow(rows[-1], names)
        end = started + options.seconds
        first = 0
        stopRPC = threading.Event()
        rpcTally: Counter = Counter()
        rpcThread = threading.Thread(
            target=rpcLoad, args=(nodes[0], options.rpc_rate, options.keys, stopRPC, rpcTally), daemon=True
        )
        if options.rpc_rate > 0:
            rpcThread.start()
        nextSample = started + options.interval
        while time.monotonic() < end:
            seconds = min(GENERATOR_MAX_SECONDS, end - time.monotonic())
            if seconds < 1:
                break
            generator = startGenerator(options, round(seconds, 1), first, nodes[0].process.pid)
            while generator.poll() is None:
                now = time.monotonic()
                if now >= nextSample:
                    nextSample += options.interval
                    rows.append(sample(nodes, started, "load"))
                    printRow(rows[-1], names)
                time.sleep(min(0.5, max(0.0, nextSample - time.monotonic())))
                if now > end + options.timeout + 60:
                    generator.kill()
            out, _ = generator.communicate()
            try:
                result = json.loads(out)
            except ValueError:
                result = {"error": f"the generator exited with {generator.returncode}"}
                status = 1
            results.append(result)
            first = result.get("next", first + 1)
        stopRPC.set()
        if rpcThread.is_alive():
            rpcThread.join(15)
        loadEnd = time.monotonic()
        idleUntil = loadEnd + options.idle
        while time.monotonic() < idleUntil:
            time.sleep(min(options.interval, max(0.0, idleUntil - time.monotonic())))
            rows.append(sample(nodes, started, "idle"))
            printRow(rows[-1], names)
        counters = {}
        for node in nodes:
            try:
                counters[node.name] = fuzz.counterChanges(before[node.name], node.metrics())
            except (OSError, ValueError) as e:
                counters[node.name] = {"error": str(e)}
    finally:
        for node in nodes:
            try:
                node.process.stop()
            except RuntimeError as e:
                print(f"{node.name}: {e}", file=sys.stderr)
    summary = {name: growth(rows, name, options.baseline) for name in names}
    failures = {n.name: n.failureReport().get("failures", 0) for n in nodes}
    report = {
        "options": vars(options), "rows": rows, "generator": results, "rpc": dict(rpcTally), "growth": summary,
        "failures": failures, "counters": counters,
    }
    print()
    for name, families in counters.items():
        print(f"node {name}, counters that changed:")
        for family, samples in families.items():
            print(f"  - {family}: {samples}")
    if options.rpc_rate > 0:
        print(f"htable.sets over JSON-RPC: {dict(rpcTally)}")
    for result in results:
        if "rate" in result:
            print(
                f"load: {result['answered']:,} answered in {result['seconds']:g} s ({result['rate']:,.0f}/s),"
                f" p50 {bus._ms(result['p50'])} ms, p99 {bus._ms(result['p99'])} ms, {result['timeouts']} timeouts,"
                f" errors: {bus._errors(result)}"
            )
        else:
            print(f"load: {result}")
    for name, g in summary.items():
        if "rssGrowth" not in g:
            print(f"node {name}: not enough samples after {options.baseline:g} s")
            status = 1
            continue
        rssOK = g["rssGrowth"] < 0.10
        print(
            f"node {name}: RSS {g['rssFirst'] / 1024:.1f} MB at {options.baseline:g} s -> {g['rssLast'] / 1024:.1f} MB"
            f" at the end of the load ({g['rssGrowth']:+.1%}: {'ok' if rssOK else 'OVER the 10 % target'});"
            f" live transactions {g['transactionsEarly']} -> {g['transactionsLate']} (min {g['transactionsMin']},"
            f" max {g['transactionsMax']}: {'flat' if g['transactionsFlat'] else 'GROWING'});"
            f" {failures[name]} tracebacks"
        )
        if not rssOK or not g["transactionsFlat"] or failures[name]:
            status = 1
    if not all(row[name].get("alive") for row in rows[-1:] for name in names):
        status = 1
    if options.json:
        with open(options.json, "w", encoding="utf-8") as f:
            json.dump(report, f, indent=1, default=str)
    if options.clean:
        shutil.rmtree(workdir, ignore_errors=True)
    print(f"exit {status}")
    return status


def main(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    parser.add_argument("--seconds", type=float, default=600.0, help="seconds of load")
    parser.add_argument("--outstanding", type=int, default=256, help="requests kept in flight")
    parser.add_argument("--interval", type=float, default=10.0, help="seconds between samples")
    parser.add_argument("--baseline", type=float, default=60.0, help="growth is measured from this many seconds on")
    parser.add_argument("--idle", type=float, default=20.0, help="seconds of sampling after the load")
    parser.add_argument("--keys", type=int, default=1000, help="distinct cell names set in turn")
    parser.add_argument("--rpc-rate", type=float, default=100.0, help="htable.sets per second over JSON-RPC (replicated)")
    parser.add_argument("--timeout", type=float, default=2.0, help="seconds after which a request is a timeout")
    parser.add_argument("--ping-interval", type=float, default=10.0, help="the nodes' ping_interval")
    parser.add_argument("--workdir", help="where the node logs go (default: a new temporary folder)")
    parser.add_argument("--clean", action="store_true", help="delete the workdir at the end")
    parser.add_argument("--json", help="write the samples and the summary as JSON to this file")
    options = parser.parse_args(argv)
    if not 10 <= options.seconds <= 86400 or not 1 <= options.outstanding <= 4096 or options.interval <= 0:
        parser.error("--seconds must be 10 to 86400, --outstanding 1 to 4096, --interval positive")
    if options.baseline >= options.seconds:
        parser.error("--baseline must be shorter than --seconds")
    return run(options)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
