# -*- test-case-name: dmq.test.test_bus -*-
"""
Measure the KDMQ requests per second one dmq node answers over loopback UDP.

The same load can then go to a Kamailio node, for comparison.

Run it from the root of the repository::

    python bench/bus.py [--seconds 5] [--outstanding K ...] [--kamailio]

It starts a node of this tree in a process of its own (L{makeNodeService}
with the real reactor, the htable peer with the table
C{kdmq=>size=8;autoexpire=0;dmqreplicate=1}, listening on
C{sip:127.0.0.71:5060}), then, for each number K of outstanding requests (1,
16, 64 and 256 by default), a load generator in another process: a plain
Python UDP client on C{127.0.0.72} with a non-blocking socket that keeps K
htable set requests in flight::

    {"action":2,"htname":"kdmq","cname":"k<N>","type":2,"strval":"v","mode":1}

each with its own Via branch and Call-ID (N cycles through C{--keys} names,
1000 by default, so that the table stops growing), matches the replies by
Call-ID and records the latency of each.  After a warm-up it counts the
replies of C{--seconds} seconds, then waits for the stragglers; a request
unanswered after C{--timeout} seconds is a timeout (the generator does not
retransmit).
With C{--kamailio} the same load then goes to a Kamailio node started with
the configuration of L{dmq.test.kamailio} (4 UDP receivers, 2 DMQ workers),
so that both figures come from the same machine in the same run.

It prints, for each node and K: requests answered per second, the median and
99th percentile latency, timeouts and errors (replies other than C{200},
replies matching no request), the CPU the node (all its processes) and the
generator used, as a share of one core, and the node's CPU time per request
answered, the figure that moves least when the machine is shared.  Everything
binds loopback addresses only, every phase is bounded in time, and the
processes started are stopped by their pid (the node and Kamailio also die
with this script).

C{--profile FILE} runs the dmq node under cProfile and writes its statistics
to C{FILE} (read them with C{python -m pstats FILE}); the profiler slows the
node down, so the figures of such a run are not the ones to compare.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import platform
import re
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

NODE_HOST = "127.0.0.71"
NODE_PORT = 5060
GENERATOR_HOST = "127.0.0.72"
TABLE = "kdmq=>size=8;autoexpire=0;dmqreplicate=1"
OUTSTANDING = (1, 16, 64, 256)

# Kamailio's figure in shared/captures/README.md was taken with 4 UDP
# receivers and 2 DMQ workers.
KAMAILIO_CHILDREN = 4
KAMAILIO_WORKERS = 2

_PR_SET_PDEATHSIG = 1
_CALL_ID = re.compile(rb"\r\n(?:Call-ID|i)[ \t]*:[ \t]*([^\r\n]*)", re.IGNORECASE)


# The load generator


def _requestMaker(
    target: Tuple[str, int], local: Tuple[str, int], runTag: str, keys: int
) -> Callable[[int], Tuple[bytes, bytes]]:
    """
    Return a function that makes the C{n}th request: its Call-ID and its
    datagram, laid out as Kamailio sends an htable change.
    """
    host, port = target
    me = f"{local[0]}:{local[1]}"
    head = (
        f"KDMQ sip:htable@{host}:{port} SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP {me};branch=z9hG4bK{runTag}.%d\r\n"
        f"To: <sip:htable@{host}:{port}>\r\n"
        f"From: <sip:htable@{me}>;tag={runTag}-%d\r\n"
        "CSeq: 10 KDMQ\r\n"
        f"Call-ID: {runTag}-%d@{local[0]}\r\n"
        "Content-Length: %d\r\n"
        "User-Agent: dmq-bench\r\n"
        "Max-Forwards: 1\r\n"
        "Content-Type: application/json\r\n"
        "\r\n"
    ).encode("ascii")
    callID = f"{runTag}-%d@{local[0]}".encode("ascii")
    body = b'{"action":2,"htname":"kdmq","cname":"k%d","type":2,"strval":"v","mode":1}'

    def make(n: int) -> Tuple[bytes, bytes]:
        content = body % (n % keys)
        return callID % n, head % (n, n, n, len(content)) + content

    return make


def _cpuTicks(pgid: Optional[int]) -> int:
    """
    The user and system clock ticks used so far by the live processes of
    process group C{pgid} (0 when there is none to watch).
    """
    if pgid is None:
        return 0
    from dmq.test.kamailio import groupProcessStats

    return sum(int(fields[11]) + int(fields[12]) for pid, fields in groupProcessStats(pgid))


def generate(options: argparse.Namespace) -> Dict[str, Any]:
    """
    Keep C{options.outstanding} requests in flight to the node for a warm-up
    and then C{options.seconds} seconds, and return what was measured.
    """
    target = (options.target_host, options.target_port)
    outstanding = options.outstanding
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 21)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 1 << 21)
    sock.bind((options.bind_host, 0))
    sock.setblocking(False)
    local = sock.getsockname()
    make = _requestMaker(target, local, options.run_tag, options.keys)
    poller = select.poll()
    poller.register(sock, select.POLLIN)
    sendto = sock.sendto
    recv = sock.recv
    now = time.perf_counter_ns
    findCallID = _CALL_ID.search

    timeout = int(options.timeout * 1e9)
    start = now()
    windowStart = start + int(options.warmup * 1e9)
    windowEnd = windowStart + int(options.seconds * 1e9)
    # Call-ID -> the send time, in send order: the first is the oldest.
    pending: Dict[bytes, int] = {}
    latencies: List[int] = []
    answered = timeouts = unmatched = socketErrors = sent = 0
    codes: Dict[str, int] = {}
    n = options.first
    cpuAtStart = None
    ownCPUAtStart = 0.0
    wantWrite = False

    while True:
        t = now()
        if cpuAtStart is None and t >= windowStart:
            cpuAtStart = _cpuTicks(options.watch_pgid)
            ownCPUAtStart = time.process_time()
        if t < windowEnd:
            while len(pending) < outstanding:
                callID, datagram = make(n)
                try:
                    sendto(datagram, target)
                except BlockingIOError:
                    wantWrite = True
                    break
                except OSError:
                    socketErrors += 1
                    n += 1
                    continue
                pending[callID] = now()
                n += 1
                sent += 1
        elif not pending or t >= windowEnd + timeout:
            break
        # Forget the requests nobody answered in time; in the window, they
        # are timeouts.
        while pending:
            oldest = next(iter(pending))
            oldestAt = pending[oldest]
            if t - oldestAt < timeout:
                break
            del pending[oldest]
            if windowStart <= oldestAt < windowEnd:
                timeouts += 1
        poller.modify(sock, select.POLLIN | (select.POLLOUT if wantWrite else 0))
        wantWrite = False
        if not poller.poll(10):
            continue
        while True:
            try:
                reply = recv(65535)
            except BlockingIOError:
                break
            except OSError:
                socketErrors += 1
                break
            received = now()
            match = findCallID(reply)
            sentAt: Optional[int] = pending.pop(match.group(1), None) if match else None
            if sentAt is None:
                unmatched += 1
                continue
            code = reply[8:11].decode("ascii", "replace")
            if code != "200":
                codes[code] = codes.get(code, 0) + 1
            if windowStart <= received < windowEnd:
                answered += 1
                latencies.append(received - sentAt)
    cpuAtEnd = _cpuTicks(options.watch_pgid)
    ownCPU = time.process_time() - ownCPUAtStart
    sock.close()

    latencies.sort()

    def percentile(p: float) -> Optional[float]:
        if not latencies:
            return None
        return latencies[min(len(latencies) - 1, int(p * len(latencies)))] / 1e6

    seconds = (windowEnd - windowStart) / 1e9
    ticks = os.sysconf("SC_CLK_TCK")
    return {
        "outstanding": outstanding,
        "seconds": seconds,
        "answered": answered,
        "rate": answered / seconds,
        "p50": percentile(0.50),
        "p99": percentile(0.99),
        "timeouts": timeouts,
        "unmatched": unmatched,
        "codes": codes,
        "socketErrors": socketErrors,
        "sent": sent,
        "next": n,
        "nodeCPU": (cpuAtEnd - (cpuAtStart or 0)) / ticks / seconds
        if options.watch_pgid is not None
        else None,
        "generatorCPU": ownCPU / seconds,
    }


# The dmq node


def serveNode(options: argparse.Namespace) -> None:
    """
    Run a dmq node with the htable peer on the real reactor until SIGTERM.
    """
    from twisted.internet import reactor as _reactor
    from twisted.logger import globalLogBeginner, textFileLogObserver

    from dmq.tap import NodeConfig, makeNodeService, parseServerAddress

    # The global reactor provides more interfaces than its declared type.
    reactor: Any = _reactor
    logFile = open(options.log, "a", encoding="utf-8")
    globalLogBeginner.beginLoggingTo(
        [textFileLogObserver(logFile)],  # type: ignore[list-item]
        redirectStandardIO=False,
    )
    node = makeNodeService(
        reactor,
        NodeConfig(
            serverAddress=parseServerAddress(f"sip:{options.target_host}:{options.target_port}"),
            htables=[TABLE],
        ),
    )
    node.startService()
    reactor.addSystemEventTrigger("before", "shutdown", node.stopService)
    if options.profile:
        import cProfile

        profiler = cProfile.Profile()
        profiler.runcall(reactor.run)
        profiler.dump_stats(options.profile)
    else:
        reactor.run()


# Running it all


def _dieWithParent() -> None:
    """
    In a child before C{exec}: get SIGTERM when this script dies, so that
    nothing outlives the benchmark even when it is killed.
    """
    ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, int(signal.SIGTERM), 0, 0, 0)


class Node:
    """
    A node process this script started: dmq or Kamailio.
    """

    def __init__(self, name: str, argv: Sequence[str], log: str, cwd: str) -> None:
        self.name = name
        self.log = log
        with open(log, "ab") as out:
            self.process = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=out,
                cwd=cwd,
                preexec_fn=_dieWithParent,
                start_new_session=True,
            )

    @property
    def pid(self) -> int:
        return self.process.pid

    def logTail(self, lines: int = 20) -> str:
        try:
            with open(self.log, encoding="utf-8", errors="replace") as f:
                return "".join(f.readlines()[-lines:])
        except OSError:
            return "(no log)"

    def waitUntilServing(self, timeout: float = 15.0) -> None:
        """
        Send a request until it is answered C{200}.

        @raise RuntimeError: if the node exits or does not answer in time.
        """
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            sock.bind((GENERATOR_HOST, 0))
            sock.settimeout(0.2)
            make = _requestMaker((NODE_HOST, NODE_PORT), sock.getsockname(), "probe", 1)
            deadline = time.monotonic() + timeout
            n = 0
            while time.monotonic() < deadline:
                if self.process.poll() is not None:
                    raise RuntimeError(
                        f"{self.name} exited with {self.process.returncode} while starting;"
                        f" {self.log} ends with:\n{self.logTail()}"
                    )
                _, datagram = make(n)
                n += 1
                sock.sendto(datagram, (NODE_HOST, NODE_PORT))
                try:
                    reply = sock.recv(65535)
                except socket.timeout:
                    continue
                if reply.startswith(b"SIP/2.0 200 "):
                    return
            raise RuntimeError(
                f"{self.name} did not answer within {timeout:g} s;"
                f" {self.log} ends with:\n{self.logTail()}"
            )
        finally:
            sock.close()

    def stop(self, timeout: float = 10.0) -> None:
        """
        SIGTERM the process we started, wait for it, and SIGKILL what is left
        of its process group (ours: it was made for it) after C{timeout}.
        """
        pgid = self.process.pid
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                print(f"{self.name} ignored SIGTERM for {timeout:g} s; killing it", file=sys.stderr)
                os.killpg(pgid, signal.SIGKILL)
                self.process.wait(5)
        deadline = time.monotonic() + 5
        while True:
            from dmq.test.kamailio import liveGroupMembers

            left = liveGroupMembers(pgid)
            if not left:
                return
            if time.monotonic() > deadline:
                raise RuntimeError(f"{self.name}: processes {left} outlived their parent")
            for pid in left:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            time.sleep(0.05)


def startDMQ(workdir: str, profile: Optional[str]) -> Node:
    """
    Start a dmq node of this tree: this script, run as C{--role=node}.
    """
    log = os.path.join(workdir, "dmq.log")
    argv = [
        sys.executable,
        os.path.abspath(__file__),
        "--role=node",
        f"--log={log}",
    ]
    if profile:
        argv.append(f"--profile={os.path.abspath(profile)}")
    return Node("dmq", argv, log, workdir)


def startKamailio(workdir: str) -> Node:
    """
    Start Kamailio with the test harness's configuration, on the address
    our node had.
    """
    from dmq.test.kamailio import KamailioNode, findKamailio

    if findKamailio() is None:
        raise RuntimeError("--kamailio: Kamailio is not installed (no kamailio on PATH or in /usr/sbin)")
    runDir = os.path.join(workdir, "kamailio")
    os.makedirs(runDir)
    config = KamailioNode(
        runDir,
        NODE_HOST,
        port=NODE_PORT,
        children=KAMAILIO_CHILDREN,
        numWorkers=KAMAILIO_WORKERS,
        pingInterval=60,
    )
    with open(config.configPath.path, "w", encoding="utf-8") as f:
        # The RPC sockets go to the run dir: nothing here talks to them.
        f.write(config.renderConfig(runDir))
    return Node("kamailio", config.commandLine(), config.logPath.path, runDir)


def runGenerator(
    options: argparse.Namespace, outstanding: int, first: int, pgid: int
) -> Dict[str, Any]:
    """
    Run the load generator in a process of its own (this script, as
    C{--role=generate}) and return what it measured.

    @param first: the number of its first request, so that Call-IDs and
        branches are never reused across runs.
    @param pgid: the node's process group, whose CPU time it measures.
    """
    argv = [
        sys.executable,
        os.path.abspath(__file__),
        "--role=generate",
        f"--outstanding={outstanding}",
        f"--seconds={options.seconds}",
        f"--warmup={options.warmup}",
        f"--timeout={options.timeout}",
        f"--keys={options.keys}",
        f"--first={first}",
        f"--run-tag=b{os.getpid():x}x{first:x}",
        f"--watch-pgid={pgid}",
    ]
    bound = options.warmup + options.seconds + options.timeout + 30
    done = subprocess.run(
        argv,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        timeout=bound,
        check=True,
        preexec_fn=_dieWithParent,
    )
    return json.loads(done.stdout)


def _ms(value: Optional[float]) -> str:
    return "-" if value is None else f"{value:.2f}"


def _errors(result: Dict[str, Any]) -> str:
    parts = [f"{count} x {code}" for code, count in sorted(result["codes"].items())]
    if result["unmatched"]:
        parts.append(f"{result['unmatched']} unmatched")
    if result["socketErrors"]:
        parts.append(f"{result['socketErrors']} socket errors")
    return ", ".join(parts) or "0"


def _perRequest(result: Dict[str, Any]) -> str:
    if result["nodeCPU"] is None or not result["answered"]:
        return "-"
    return f"{result['nodeCPU'] * result['seconds'] / result['answered'] * 1e6:.0f}"


def report(results: List[Tuple[str, Dict[str, Any]]]) -> None:
    """
    Print the figures as a Markdown table.
    """
    print()
    print(
        "| node     |   K | requests/s | p50 ms | p99 ms | timeouts | errors"
        " | node CPU | node CPU µs/request | generator CPU |"
    )
    print(
        "|----------|----:|-----------:|-------:|-------:|---------:|--------"
        "|---------:|--------------------:|--------------:|"
    )
    for name, r in results:
        nodeCPU = "-" if r["nodeCPU"] is None else f"{r['nodeCPU']:.0%}"
        print(
            f"| {name:<8} | {r['outstanding']:>3} | {r['rate']:>10,.0f} | {_ms(r['p50']):>6} |"
            f" {_ms(r['p99']):>6} | {r['timeouts']:>8} | {_errors(r)} | {nodeCPU:>8} |"
            f" {_perRequest(r):>19} | {r['generatorCPU']:>13.0%} |"
        )


def main(argv: Sequence[str]) -> None:
    parser = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5.0, help="measured seconds per K")
    parser.add_argument(
        "--outstanding",
        type=int,
        action="append",
        metavar="K",
        help="requests kept in flight (repeatable; default: 1, 16, 64 and 256)",
    )
    parser.add_argument(
        "--kamailio", action="store_true", help="also measure a Kamailio node, after ours"
    )
    parser.add_argument("--warmup", type=float, default=1.0, help="seconds before measuring")
    parser.add_argument(
        "--timeout", type=float, default=2.0, help="seconds after which a request is a timeout"
    )
    parser.add_argument(
        "--keys", type=int, default=1000, help="distinct cell names k0..k<keys-1> set in turn"
    )
    parser.add_argument(
        "--profile", metavar="FILE", help="run the dmq node under cProfile, stats to FILE"
    )
    # How this script runs itself as the node and as the generator.
    parser.add_argument("--role", choices=["main", "node", "generate"], default="main", help=argparse.SUPPRESS)
    parser.add_argument("--log", help=argparse.SUPPRESS)
    parser.add_argument("--first", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--run-tag", default="r", help=argparse.SUPPRESS)
    parser.add_argument("--watch-pgid", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--target-host", default=NODE_HOST, help=argparse.SUPPRESS)
    parser.add_argument("--target-port", type=int, default=NODE_PORT, help=argparse.SUPPRESS)
    parser.add_argument("--bind-host", default=GENERATOR_HOST, help=argparse.SUPPRESS)
    options = parser.parse_args(argv)
    if options.seconds <= 0 or options.seconds > 600:
        parser.error("--seconds must be more than 0 and at most 600")
    if options.keys < 1:
        parser.error("--keys must be at least 1")
    if not 0 <= options.warmup <= 60 or not 0 < options.timeout <= 60:
        parser.error("--warmup must be 0 to 60 s, and --timeout more than 0 and at most 60 s")

    if options.role == "node":
        serveNode(options)
        return
    if options.role == "generate":
        options.outstanding = options.outstanding[0]
        print(json.dumps(generate(options)))
        return

    ks = options.outstanding or list(OUTSTANDING)
    if any(not 1 <= k <= 4096 for k in ks):
        parser.error("--outstanding must be 1 to 4096")
    print(
        f"Python {platform.python_version()} on {platform.machine()}, {os.cpu_count()} cores"
        f" (the generator shares them); load average {os.getloadavg()[0]:.2f};"
        f" {options.warmup:g} s warm-up + {options.seconds:g} s per K"
    )
    starters: List[Tuple[str, Callable[[str], Node]]] = [
        ("dmq", lambda workdir: startDMQ(workdir, options.profile))
    ]
    if options.kamailio:
        starters.append(("kamailio", startKamailio))
    workdir = tempfile.mkdtemp(prefix="dmq-bench-")
    results: List[Tuple[str, Dict[str, Any]]] = []
    first = 0
    try:
        for name, start in starters:
            from dmq.test.kamailio import udpAddressInUse

            if udpAddressInUse(NODE_HOST, NODE_PORT):
                raise RuntimeError(f"UDP {NODE_HOST}:{NODE_PORT} is in use: is a node left running?")
            node = start(workdir)
            try:
                node.waitUntilServing()
                for k in ks:
                    result = runGenerator(options, k, first, node.pid)
                    first = result["next"]
                    results.append((name, result))
                    print(
                        f"{name} K={k}: {result['rate']:,.0f} requests/s,"
                        f" p50 {_ms(result['p50'])} ms, p99 {_ms(result['p99'])} ms,"
                        f" {result['timeouts']} timeouts, errors: {_errors(result)},"
                        f" node CPU {_perRequest(result)} µs/request",
                        flush=True,
                    )
            finally:
                node.stop()
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    report(results)


if __name__ == "__main__":
    main(sys.argv[1:])
