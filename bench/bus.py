# -*- test-case-name: dmq.test.test_bus -*-
"""
Measure the KDMQ requests a dmq node answers per second, next to its anchors.

The anchors give the figure its meaning: Kamailio, and a bare Twisted
responder (the floor), measured in the same run with the same load generator.

Run it from the root of the repository::

    python bench/bus.py [--kamailio] [--also PYTHON ...] [--seconds 5]
                        [--outstanding K ...] [--no-floor]

Targets, measured one after the other on the same address
(C{sip:127.0.0.71:5060}), each with every K:

  - C{dmq}: a node of this checkout run by C{twistd} under the interpreter
    running this script, as an operator runs one::

        twistd -n dmq --server-address sip:127.0.0.71:5060 \\
            --htable 'kdmq=>size=8;autoexpire=0;dmqreplicate=1' \\
            --control tcp:5080:interface=127.0.0.71

    The node's code comes from this checkout, first on C{sys.path}, whatever
    the interpreter has installed; its bytecode is compiled first
    (C{compileall}), as an installed package's is.
  - C{floor}: C{bench/floor.py} under the same interpreter, a Twisted
    C{DatagramProtocol} that copies Via, From, To, Call-ID and CSeq into a
    canned C{200 OK} and does nothing else: what Twisted itself manages.
  - the same two under each C{--also PYTHON} (a path, or a name on C{PATH}):
    another interpreter, say PyPy, with dmq's dependencies installed::

        pypy3 -m venv /tmp/pypyenv && /tmp/pypyenv/bin/pip install '.[test]'
        python bench/bus.py --also /tmp/pypyenv/bin/python

  - C{kamailio} with C{--kamailio}: Kamailio 5.6.3 with the configuration
    of L{dmq.test.kamailio} (4 UDP receivers, 2 DMQ workers).

For each target and each number K of outstanding requests (1, 64 and 256 by
default), a load generator runs in a process of its own (under this
interpreter, or C{--generator PYTHON}): a plain Python UDP client on
C{127.0.0.72} with a non-blocking socket that keeps K htable set requests in
flight::

    {"action":2,"htname":"kdmq","cname":"k<N>","type":2,"strval":"v","mode":1}

each with its own Via branch and Call-ID (N cycles through C{--keys} names,
1000 by default, so that the table stops growing), matches the replies by
Call-ID and records the latency of each.  After a warm-up it counts the
replies of C{--seconds} seconds, then waits for the stragglers; a request
unanswered after C{--timeout} seconds is a timeout (the generator does not
retransmit).

It prints, for each target and K: requests answered per second, the ratios
of a dmq rate to Kamailio's at the same K and to the floor's on the same
interpreter at the same K, the median and 99th percentile latency, timeouts
and errors (replies other than C{200}, replies matching no request), the CPU
the target (all its processes) and the generator used, as a share of one
core, the target's CPU time per request answered (the figure that moves
least when the machine is shared), and its memory before and after the load
of that K: C{VmRSS} of its process, or for Kamailio the sum of the C{Pss}
of its processes (each shared page counted once), in MB of 1000 of the kB
that C{/proc} counts.  The first row of a target is taken with it at rest,
having answered only the start-up probe.

Everything binds loopback addresses only, every phase is bounded in time,
and the processes started are stopped by their pid (they also die with this
script).

C{--profile FILE} runs the dmq node under cProfile (C{twistd --profile}) and
writes its statistics to C{FILE} (read them with C{python -m pstats FILE});
the profiler slows the node down, so the figures of such a run are not the
ones to compare.
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
CONTROL_PORT = 5080
GENERATOR_HOST = "127.0.0.72"
TABLE = "kdmq=>size=8;autoexpire=0;dmqreplicate=1"
OUTSTANDING = (1, 64, 256)

# As Kamailio is run on a small machine: one receiver per core and more,
# and the DMQ module's default of two workers.
KAMAILIO_CHILDREN = 4
KAMAILIO_WORKERS = 2

# Seconds for a start, a probe, a stop: every phase has a bound.
START_TIMEOUT = 30.0
PROBE_TIMEOUT = 30.0

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


# Running the targets


def _dieWithParent() -> None:
    """
    In a child before C{exec}: get SIGTERM when this script dies, so that
    nothing outlives the benchmark even when it is killed.
    """
    ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, int(signal.SIGTERM), 0, 0, 0)


def _childEnvironment() -> Dict[str, str]:
    """
    The environment of the processes measured: this one's, but with
    bytecode caching on, so that a node loads its modules as an installed
    one does instead of compiling them in the process measured.
    """
    env = dict(os.environ)
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    return env


def describeInterpreter(python: str) -> str:
    """
    Return C{python}'s implementation and version, say C{"PyPy 3.9.16"}.

    @raise RuntimeError: if it cannot be run.
    """
    try:
        done = subprocess.run(
            [python, "-c", "import platform; print(platform.python_implementation(), platform.python_version())"],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            timeout=PROBE_TIMEOUT,
            check=True,
        )
    except (OSError, subprocess.SubprocessError) as e:
        raise RuntimeError(f"cannot run {python}: {e}") from None
    return done.stdout.decode("utf-8", "replace").strip()


def checkInterpreter(python: str, modules: Sequence[str]) -> None:
    """
    Check that C{python} can import C{modules}, and compile this checkout's
    bytecode for it.

    @raise RuntimeError: if it cannot.
    """
    imports = "; ".join(f"import {name}" for name in modules)
    probe = subprocess.run(
        [python, "-c", imports],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        timeout=PROBE_TIMEOUT,
    )
    if probe.returncode != 0:
        raise RuntimeError(
            f"{python} cannot import {', '.join(modules)}; make it a venv with dmq's"
            f" dependencies, say: pypy3 -m venv /tmp/pypyenv &&"
            f" /tmp/pypyenv/bin/pip install '.[test]'\n"
            + probe.stdout.decode("utf-8", "replace")[-2000:]
        )
    subprocess.run(
        [python, "-m", "compileall", "-q", os.path.join(ROOT, "dmq"), os.path.join(ROOT, "bench")],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        timeout=120,
        check=True,
        env=_childEnvironment(),
    )


def _status(pid: int, field: str) -> Optional[int]:
    """
    The kB figure C{field} of C{/proc/<pid>/status}, or C{None}.
    """
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return None


def _pss(pid: int) -> int:
    """
    The proportional set size of process C{pid} in kB (0 when it is gone).
    """
    try:
        with open(f"/proc/{pid}/smaps_rollup", encoding="ascii") as f:
            for line in f:
                if line.startswith("Pss:"):
                    return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return 0


class Node:
    """
    A target process this script started: dmq, the floor or Kamailio.

    @ivar label: what the reports call it: C{dmq}, C{floor} or C{kamailio}.
    @ivar interpreter: the interpreter it runs on, say C{"CPython 3.11.7"},
        or C{"-"} for Kamailio.
    @ivar processes: C{"one"} for a single process, C{"group"} for a process
        group (Kamailio), whose memory is the sum of its members' PSS.
    """

    def __init__(
        self,
        label: str,
        interpreter: str,
        argv: Sequence[str],
        log: str,
        cwd: str,
        processes: str = "one",
    ) -> None:
        self.label = label
        self.interpreter = interpreter
        self.log = log
        self.processes = processes
        with open(log, "ab") as out:
            self.process = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=out,
                cwd=cwd,
                env=_childEnvironment(),
                preexec_fn=_dieWithParent,
                start_new_session=True,
            )

    @property
    def name(self) -> str:
        return self.label if self.interpreter == "-" else f"{self.label} on {self.interpreter}"

    @property
    def pid(self) -> int:
        return self.process.pid

    def memory(self) -> Optional[int]:
        """
        The memory the target holds now, in kB: C{VmRSS} of its process, or
        the sum of the PSS of its group's processes.
        """
        if self.processes == "one":
            return _status(self.pid, "VmRSS")
        from dmq.test.kamailio import liveGroupMembers

        return sum(_pss(pid) for pid in liveGroupMembers(self.pid)) or None

    def logTail(self, lines: int = 20) -> str:
        try:
            with open(self.log, encoding="utf-8", errors="replace") as f:
                return "".join(f.readlines()[-lines:])
        except OSError:
            return "(no log)"

    def waitUntilServing(self, timeout: float = START_TIMEOUT) -> None:
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
        from dmq.test.kamailio import liveGroupMembers

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


def _tcpAddressInUse(host: str, port: int) -> bool:
    """
    Whether TCP C{host:port} cannot be bound (the node's control endpoint).
    """
    probe = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        probe.bind((host, port))
    except OSError:
        return True
    finally:
        probe.close()
    return False


def startDMQ(workdir: str, python: str, interpreter: str, profile: Optional[str]) -> Node:
    """
    Start a dmq node of this checkout under C{python}, with C{twistd}, as an
    operator would: the htable peer and a control endpoint.
    """
    if _tcpAddressInUse(NODE_HOST, CONTROL_PORT):
        raise RuntimeError(f"TCP {NODE_HOST}:{CONTROL_PORT} is in use: is a node left running?")
    log = os.path.join(workdir, f"dmq-{len(os.listdir(workdir))}.log")
    # The checkout goes first on sys.path, before anything installed, and
    # the node checks that it runs this checkout's code.
    boot = (
        "import sys; sys.path.insert(0, sys.argv.pop(1)); import dmq;"
        " assert dmq.__file__.startswith(sys.path[0]), dmq.__file__;"
        " from twisted.scripts.twistd import run; sys.argv[0] = 'twistd'; run()"
    )
    argv = [
        python, "-c", boot, ROOT,
        "-n", "--pidfile=", f"--logfile={log}",
    ]
    if profile:
        argv += [f"--profile={os.path.abspath(profile)}", "--profiler=cprofile", "--savestats"]
    argv += [
        "dmq",
        f"--server-address=sip:{NODE_HOST}:{NODE_PORT}",
        f"--htable={TABLE}",
        f"--control=tcp:{CONTROL_PORT}:interface={NODE_HOST}",
        # Only members may write (doc/security.md), as the Kamailio nodes
        # that send htable changes on a real bus are: the generator's host,
        # a seed without a port, is a member from any port of its IP.  The
        # node's join to it goes unanswered: a few datagrams a second.
        f"--notification-address=sip:{GENERATOR_HOST}",
    ]
    return Node("dmq", interpreter, argv, log, workdir)


def startFloor(workdir: str, python: str, interpreter: str) -> Node:
    """
    Start C{bench/floor.py} under C{python} on the node's address.
    """
    log = os.path.join(workdir, f"floor-{len(os.listdir(workdir))}.log")
    argv = [
        python,
        os.path.join(ROOT, "bench", "floor.py"),
        f"--host={NODE_HOST}",
        f"--port={NODE_PORT}",
    ]
    return Node("floor", interpreter, argv, log, workdir)


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
    return Node("kamailio", "-", config.commandLine(), config.logPath.path, runDir, processes="group")


def kamailioVersion() -> str:
    """
    Kamailio's version, say C{"5.6.3"}, or C{"?"}.
    """
    from dmq.test.kamailio import findKamailio

    binary = findKamailio()
    try:
        out = subprocess.run(
            [binary or "kamailio", "-v"], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT, timeout=PROBE_TIMEOUT,
        ).stdout.decode("utf-8", "replace")
    except (OSError, subprocess.SubprocessError):
        return "?"
    found = re.search(r"kamailio (\S+)", out)
    return found.group(1) if found else "?"


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
        options.generator,
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


# The report


def _ms(value: Optional[float]) -> str:
    return "-" if value is None else f"{value:.3f}"


def _mb(kB: Optional[int]) -> str:
    # Thousands of /proc's kB, as "42 MB" for VmRSS 42,352 kB is meant.
    return "-" if kB is None else f"{kB / 1000:.1f}"


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


def _ratio(rate: float, other: Optional[Dict[str, Any]]) -> str:
    if other is None or not other["rate"]:
        return "-"
    return f"{rate / other['rate']:.2f}"


def ratios(rows: List[Dict[str, Any]], row: Dict[str, Any]) -> Tuple[str, str]:
    """
    The rate of C{row}, a dmq row, over Kamailio's at the same K and over
    the floor's on the same interpreter at the same K (C{"-"} where there is
    none; both C{""} for other targets).
    """
    if row["label"] != "dmq":
        return "", ""
    k = row["result"]["outstanding"]

    def find(label: str, interpreter: Optional[str]) -> Optional[Dict[str, Any]]:
        for other in rows:
            if (
                other["label"] == label
                and other["result"]["outstanding"] == k
                and (interpreter is None or other["interpreter"] == interpreter)
            ):
                return other["result"]
        return None

    rate = row["result"]["rate"]
    return _ratio(rate, find("kamailio", None)), _ratio(rate, find("floor", row["interpreter"]))


def report(rows: List[Dict[str, Any]], date: str) -> None:
    """
    Print the figures as a Markdown table, ready for C{doc/performance.md}.
    """
    print()
    print(
        "| date | interpreter | target | K | requests/s | × Kamailio | × floor | p50 ms | p99 ms"
        " | timeouts | errors | CPU µs/request | CPU | generator CPU | RSS MB before → after |"
    )
    print("|---|---|---|--:|--:|--:|--:|--:|--:|--:|---|--:|--:|--:|---|")
    for row in rows:
        r = row["result"]
        toKamailio, toFloor = ratios(rows, row)
        nodeCPU = "-" if r["nodeCPU"] is None else f"{r['nodeCPU']:.0%}"
        print(
            f"| {date} | {row['interpreter']} | {row['label']} | {r['outstanding']} | {r['rate']:,.0f}"
            f" | {toKamailio} | {toFloor} | {_ms(r['p50'])} | {_ms(r['p99'])} | {r['timeouts']}"
            f" | {_errors(r)} | {_perRequest(r)} | {nodeCPU} | {r['generatorCPU']:.0%}"
            f" | {_mb(row['memoryBefore'])} → {_mb(row['memoryAfter'])} |"
        )
    if any(row["result"]["generatorCPU"] >= 0.9 for row in rows):
        print()
        print(
            "Where the generator used 90% of a core or more, it limited the rate as much as"
            " the target did: read that rate as a lower bound."
        )


def main(argv: Sequence[str]) -> None:
    parser = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5.0, help="measured seconds per K")
    parser.add_argument(
        "--outstanding",
        type=int,
        action="append",
        metavar="K",
        help="requests kept in flight (repeatable; default: 1, 64 and 256)",
    )
    parser.add_argument(
        "--kamailio", action="store_true", help="also measure a Kamailio node, last"
    )
    parser.add_argument(
        "--also",
        action="append",
        default=[],
        metavar="PYTHON",
        help="also measure dmq and the floor under this interpreter (repeatable), say"
        " /tmp/pypyenv/bin/python: a venv with dmq's dependencies",
    )
    parser.add_argument("--no-floor", action="store_true", help="leave the floor out")
    parser.add_argument(
        "--generator",
        default=sys.executable,
        metavar="PYTHON",
        help="the interpreter that runs the load generator (default: this one)",
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
    # How this script runs itself as the generator.
    parser.add_argument("--role", choices=["main", "generate"], default="main", help=argparse.SUPPRESS)
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

    if options.role == "generate":
        options.outstanding = options.outstanding[0]
        print(json.dumps(generate(options)))
        return

    ks = options.outstanding or list(OUTSTANDING)
    if any(not 1 <= k <= 4096 for k in ks):
        parser.error("--outstanding must be 1 to 4096")
    pythons = [sys.executable]
    for name in options.also:
        found = shutil.which(name) if os.sep not in name else name
        if found is None or not os.access(found, os.X_OK):
            parser.error(f"--also {name}: no such interpreter")
        pythons.append(found)
    generator = shutil.which(options.generator) if os.sep not in options.generator else options.generator
    if generator is None:
        parser.error(f"--generator {options.generator}: no such interpreter")
    options.generator = generator

    # What to run, in order: each interpreter's floor and dmq node, then
    # Kamailio.
    starters: List[Callable[[str], Node]] = []
    described = []
    for python in pythons:
        interpreter = describeInterpreter(python)
        described.append(f"{interpreter} ({python})")
        checkInterpreter(python, ["twisted", "attr", "zope.interface", "prometheus_client"])
        if not options.no_floor:
            starters.append(lambda workdir, p=python, i=interpreter: startFloor(workdir, p, i))
        profile = options.profile if python == sys.executable else None
        starters.append(lambda workdir, p=python, i=interpreter, f=profile: startDMQ(workdir, p, i, f))
    if options.kamailio:
        starters.append(startKamailio)
        described.append(f"Kamailio {kamailioVersion()}")
    date = time.strftime("%Y-%m-%d")
    print(
        f"{date}: {platform.machine()}, {os.cpu_count()} cores (the generator shares them),"
        f" load average {os.getloadavg()[0]:.2f}; {'; '.join(described)};"
        f" generator on {describeInterpreter(options.generator)};"
        f" {options.warmup:g} s warm-up + {options.seconds:g} s per K",
        flush=True,
    )

    workdir = tempfile.mkdtemp(prefix="dmq-bench-")
    rows: List[Dict[str, Any]] = []
    first = 0
    try:
        for start in starters:
            from dmq.test.kamailio import udpAddressInUse

            if udpAddressInUse(NODE_HOST, NODE_PORT):
                raise RuntimeError(f"UDP {NODE_HOST}:{NODE_PORT} is in use: is a node left running?")
            node = start(workdir)
            try:
                node.waitUntilServing()
                for k in ks:
                    before = node.memory()
                    result = runGenerator(options, k, first, node.pid)
                    after = node.memory()
                    first = result["next"]
                    rows.append(
                        {
                            "label": node.label,
                            "interpreter": node.interpreter,
                            "result": result,
                            "memoryBefore": before,
                            "memoryAfter": after,
                        }
                    )
                    print(
                        f"{node.name} K={k}: {result['rate']:,.0f} requests/s,"
                        f" p50 {_ms(result['p50'])} ms, p99 {_ms(result['p99'])} ms,"
                        f" {result['timeouts']} timeouts, errors: {_errors(result)},"
                        f" CPU {_perRequest(result)} µs/request,"
                        f" RSS {_mb(before)} → {_mb(after)} MB",
                        flush=True,
                    )
            finally:
                node.stop()
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    report(rows, date)


if __name__ == "__main__":
    main(sys.argv[1:])
