# -*- test-case-name: dmq.test.test_fuzz -*-
"""
Fuzz a bus of two dmq nodes with hostile input, and say whether they took it.

Run it from the root of the repository::

    python bench/fuzz.py [--count 100000] [--seed 1] [--rate 1000] [--max-seconds 300]

It starts two nodes of this tree, each in a process of its own (this
script as C{--role=node}; the processes are handled by L{bus.Node} of
C{bench/bus.py}): C{sip:127.0.0.91:5060} and C{sip:127.0.0.92:5060}, each
the other's notification address, with the htable peer and the replicated
table C{kdmq=>size=8;autoexpire=0;dmqreplicate=1}, a ping every 5 s, and
the control endpoint on C{tcp:5080} of its own address.

Then it sends C{--count} inputs of L{dmq.test.hostile.HostileInputs} for
C{--seed}, split between the nodes, at C{--rate} inputs per second, for at
most C{--max-seconds}: datagrams from C{127.0.0.93:5060} (mutated captures,
hostile node lists, hostile htable requests) and HTTP requests to the
control endpoints (JSON-RPC abuse).  Meanwhile, it answers the nodes'
requests to the fake node C{127.0.9.7:5060} with hostile replies
(L{dmq.test.hostile.hostileReply}), holds C{--slow} slow HTTP connections
open (a byte every 5 s) for up to C{--slow-seconds}, and pings each node
every second to time how long it stalls.

The nodes run in a sandbox (L{dmq.test.hostile.sandboxNetwork}): nothing
they send leaves the loopback addresses of the fuzzer, and no host name is
looked up in DNS; what the sandbox refused is reported (a reply refused is a
reply sent somewhere else than where its request came from).  Each node may
use C{--memory-limit} MB of address space (4096 by default), so that one
that grows without bound fails instead of taking the machine.

An HTTP input goes to a queue of 64 for 8 HTTP workers; when the control
endpoints are so far behind that the queue is full, it is left out and
counted (it still takes its time slot, and a jammed control endpoint does
not hold the datagrams back), and further inputs are made until C{--count}
were sent, unless C{--max-seconds} ends the run first.

After C{--settle} idle seconds it reports:

  - tracebacks: the events with a traceback or at critical level each node
    logged (L{dmq.test.hostile.FailureRecorder}), grouped by exception and
    site, with the input the node was reading; and the lines with
    C{Traceback} and C{Unhandled} in each node's log (all must be 0);
  - the replies the fuzzer got, by code (SIP) and by HTTP status and
    JSON-RPC error code; and each node's counters from C{/metrics} that
    changed (requests answered by peer and code, drops by cause);
  - each node's RSS (VmRSS) before, just after, and after settling; its
    log's size and events by level;
  - the longest stall (ping round trip) of each node;
  - whether both nodes are still alive, still answer a ping (a
    C{notification_peer} request with an empty body) and an htable set
    (over SIP and over JSON-RPC, replicated to the other node), and still
    list each other as active (waiting up to C{--membership-wait}).

The exit code is 0 when all is well; otherwise the sum of 1 (tracebacks), 2
(a node died or stopped answering), 4 (the nodes do not list each other as
active), 8 (fewer than C{--count} inputs sent within C{--max-seconds}).

C{--show N} prints input C{N} of the seed and exits: any input of a run can
be made again alone.  A datagram's branch and Call-ID carry its seed and
number in hex, C{fz<seed>x<N>}: C{--show 0x<N>} makes it again.  C{--json FILE} writes the whole report as JSON.  The
node logs stay in C{--workdir} (a new temporary folder by default; its name
is printed).
"""

from __future__ import annotations

import argparse
import json
import os
import queue
import select
import shutil
import socket
import sys
import tempfile
import threading
import time
from collections import Counter
from typing import Any, Dict, List, Optional, Sequence, Tuple

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import bus  # noqa: E402  (bench/bus.py: the node process handling)

from dmq.test import hostile  # noqa: E402

NODES = (("a", "127.0.0.91"), ("b", "127.0.0.92"))
SIP_PORT = 5060
CONTROL_PORT = 5080
FUZZER = ("127.0.0.93", 5060)
RESPONDER = ("127.0.9.7", 5060)
TABLE = bus.TABLE
PING_INTERVAL = 5.0


# The node process


def serveNode(options: argparse.Namespace) -> None:
    """
    Run one node on the real reactor until SIGTERM, in the sandbox, its
    failures recorded and written to C{options.failures} every second.
    """
    recorder = hostile.FailureRecorder()
    hostile.sandboxNetwork(setattr, recorder)
    if options.memory_limit:
        # A node that grows without bound gets MemoryError, not the machine.
        import resource

        limit = options.memory_limit * 1024 * 1024
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    from twisted.internet import reactor as _reactor
    from twisted.internet.task import LoopingCall
    from twisted.logger import globalLogBeginner, textFileLogObserver

    from dmq.tap import NodeConfig, makeNodeService, parseNodeAddress, parseServerAddress

    reactor: Any = _reactor
    hostile.sandboxNetwork(setattr, recorder, reactor)
    logFile = open(options.log, "a", encoding="utf-8")
    globalLogBeginner.beginLoggingTo(
        [textFileLogObserver(logFile), recorder],  # type: ignore[list-item]
        redirectStandardIO=False,
    )
    node = makeNodeService(
        reactor,
        NodeConfig(
            serverAddress=parseServerAddress(f"sip:{options.host}:{options.port}"),
            notificationAddresses=[parseNodeAddress(f"sip:{other}") for other in options.other],
            htables=[options.table],
            control=f"tcp:{options.control_port}:interface={options.host}",
            pingInterval=options.ping_interval,
        ),
    )
    hostile.watchInputs(node.protocol, recorder)
    hostile.watchRPC(setattr, recorder)

    def dump() -> None:
        if not reactor.running:
            # The errors of the Deferreds dropped unhandled are logged when
            # they are collected: now, while the recorder still listens.
            import gc

            gc.collect()
        partial = options.failures + ".part"
        with open(partial, "w", encoding="utf-8") as f:
            json.dump(recorder.report(), f)
        os.replace(partial, options.failures)

    dumper = LoopingCall(dump)
    dumper.start(1.0)
    node.startService()
    reactor.addSystemEventTrigger("before", "shutdown", node.stopService)
    reactor.addSystemEventTrigger("after", "shutdown", dump)
    reactor.run()


class NodeProcess:
    """
    A node process this script started, and how to reach it.
    """

    def __init__(self, name: str, host: str, workdir: str, others: Sequence[str], options: argparse.Namespace) -> None:
        self.name = name
        self.host = host
        self.port = SIP_PORT
        self.controlPort = CONTROL_PORT
        self.log = os.path.join(workdir, f"node-{name}.log")
        self.failures = os.path.join(workdir, f"node-{name}-failures.json")
        argv = [
            sys.executable,
            os.path.abspath(__file__),
            "--role=node",
            f"--host={host}",
            f"--port={self.port}",
            f"--control-port={self.controlPort}",
            f"--log={self.log}",
            f"--failures={self.failures}",
            f"--ping-interval={options.ping_interval}",
            f"--table={TABLE}",
            f"--memory-limit={getattr(options, 'memory_limit', 4096)}",
        ] + [f"--other={other}" for other in others]
        self.process = _busNode(f"node {name}", argv, self.log)

    @property
    def target(self) -> hostile.Target:
        return hostile.Target(self.host, self.port)

    @property
    def uri(self) -> str:
        return f"sip:{self.host}:{self.port}"

    @property
    def alive(self) -> bool:
        return self.process.process.poll() is None

    def rss(self) -> Optional[int]:
        """
        Its resident set size in kB (VmRSS), or C{None} once it is gone.
        """
        return rss(self.process.pid)

    def rpc(self, method: str, *params: Any, timeout: float = 5.0) -> Any:
        return rpc(self.host, self.controlPort, method, list(params), timeout)

    def metrics(self) -> Dict[Tuple[str, Tuple[Tuple[str, str], ...]], float]:
        return metrics(self.host, self.controlPort)

    def failureReport(self) -> Dict[str, Any]:
        try:
            with open(self.failures, encoding="utf-8") as f:
                return json.load(f)
        except (OSError, ValueError):
            return {"failures": 0, "groups": [], "levels": {}, "sandbox": {}, "missing": True}

    def logCounts(self) -> Dict[str, int]:
        """
        The size of its log, and its lines with C{Traceback} and
        C{Unhandled}.
        """
        counts = {"bytes": 0, "Traceback": 0, "Unhandled": 0}
        try:
            with open(self.log, "rb") as f:
                for line in f:
                    counts["bytes"] += len(line)
                    if b"Traceback" in line:
                        counts["Traceback"] += 1
                    if b"Unhandled" in line:
                        counts["Unhandled"] += 1
        except OSError:
            pass
        return counts


def _busNode(label: str, argv: Sequence[str], log: str) -> Any:
    """
    Start C{argv} as a L{bus.Node}, whose signature is C{(name, argv, log,
    cwd)} or, in later versions of C{bench/bus.py}, C{(label, interpreter,
    argv, log, cwd)}.
    """
    import inspect

    if "interpreter" in inspect.signature(bus.Node).parameters:
        return bus.Node(label=label, interpreter="-", argv=argv, log=log, cwd=ROOT)
    return bus.Node(label, argv=argv, log=log, cwd=ROOT)


def rss(pid: int) -> Optional[int]:
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def startNodes(workdir: str, options: argparse.Namespace, nodes: Sequence[Tuple[str, str]] = NODES) -> List[NodeProcess]:
    """
    Start the nodes, each the others' notification address, and wait until
    each answers a ping and its control endpoint, and they list each other
    as active.

    @raise RuntimeError: if one exits or does not get there in time.
    """
    from dmq.test.kamailio import udpAddressInUse

    for _, host in nodes:
        for address in [(host, SIP_PORT)]:
            if udpAddressInUse(*address):
                raise RuntimeError(f"UDP {address[0]}:{address[1]} is in use: is a node left running?")
        if tcpInUse(host, CONTROL_PORT):
            raise RuntimeError(f"TCP {host}:{CONTROL_PORT} is in use: is a node left running?")
    started = []
    try:
        for name, host in nodes:
            others = [f"{h}:{SIP_PORT}" for _, h in nodes if h != host]
            started.append(NodeProcess(name, host, workdir, others, options))
        deadline = time.monotonic() + 30
        for node in started:
            while True:
                if not node.alive:
                    raise RuntimeError(f"{node.name} exited while starting; {node.log} ends with:\n{node.process.logTail()}")
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{node.name} did not start in 30 s; {node.log} ends with:\n{node.process.logTail()}")
                try:
                    if udpPing(node.target, timeout=0.5) == 200 and node.rpc("dmq.list_nodes", timeout=1) is not None:
                        break
                except (OSError, ValueError, RPCFailed):
                    pass
                time.sleep(0.2)
        if not waitForMembership(started, 30):
            raise RuntimeError(f"the nodes did not list each other as active in 30 s: {membership(started)}")
    except BaseException:
        for node in started:
            node.process.stop()
        raise
    return started


def tcpInUse(host: str, port: int) -> bool:
    probe = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    # As Twisted listens: connections in TIME_WAIT do not count.
    probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        probe.bind((host, port))
        probe.listen(1)
        return False
    except OSError:
        return True
    finally:
        probe.close()


# Talking to a node


class RPCFailed(Exception):
    """
    A JSON-RPC call got an error, or no answer.
    """


def http(host: str, port: int, request: bytes, timeout: float) -> Tuple[Optional[int], bytes]:
    """
    Send a raw HTTP request (with C{Connection: close}) and read the answer.

    @return: the status code (C{None} when there was no status line) and
        the body.
    @raise OSError: when the connection fails or times out.
    """
    deadline = time.monotonic() + timeout
    with socket.create_connection((host, port), timeout=timeout) as sock:
        sock.sendall(request)
        chunks = []
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise socket.timeout("no complete answer in time")
            sock.settimeout(remaining)
            chunk = sock.recv(65536)
            if not chunk:
                break
            chunks.append(chunk)
    data = b"".join(chunks)
    head, _, body = data.partition(b"\r\n\r\n")
    status = None
    parts = head.split(b" ", 2)
    if len(parts) >= 2 and parts[0].startswith(b"HTTP/") and parts[1].isdigit():
        status = int(parts[1])
    if b"transfer-encoding: chunked" in head.lower():
        body = _unchunk(body)
    return status, body


def _unchunk(body: bytes) -> bytes:
    out = []
    while body:
        size, _, rest = body.partition(b"\r\n")
        try:
            n = int(size.split(b";")[0], 16)
        except ValueError:
            break
        if n == 0:
            break
        out.append(rest[:n])
        body = rest[n + 2 :]
    return b"".join(out)


def rpc(host: str, port: int, method: str, params: List[Any], timeout: float = 5.0) -> Any:
    """
    Call a JSON-RPC method.

    @return: its result.
    @raise RPCFailed: for an error, or an answer that is not one.
    """
    body = json.dumps({"jsonrpc": "2.0", "method": method, "params": params, "id": 1}).encode("utf-8")
    request = (
        b"POST /RPC HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nConnection: close\r\n"
        b"Content-Length: %d\r\n\r\n" % len(body)
    ) + body
    try:
        status, answer = http(host, port, request, timeout)
        reply = json.loads(answer)
    except (OSError, ValueError) as e:
        raise RPCFailed(f"{method}: {e}") from None
    if not isinstance(reply, dict) or "result" not in reply:
        raise RPCFailed(f"{method}: {reply!r}"[:300])
    return reply["result"]


def metrics(host: str, port: int) -> Dict[Tuple[str, Tuple[Tuple[str, str], ...]], float]:
    """
    The samples of a node's C{/metrics}, by name and labels.
    """
    from prometheus_client.parser import text_string_to_metric_families

    status, body = http(host, port, b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", 10)
    samples = {}
    for family in text_string_to_metric_families(body.decode("utf-8")):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def udpPing(target: hostile.Target, timeout: float = 2.0, bind: str = FUZZER[0]) -> Optional[int]:
    """
    Send a C{notification_peer} request with an empty node list (it adds
    nothing) and return the code of the answer, or C{None}.
    """
    return udpRequest(target, "notification_peer", b"", "text/plain", timeout, bind)


def udpRequest(
    target: hostile.Target, peer: str, body: bytes, contentType: str, timeout: float = 2.0, bind: str = FUZZER[0]
) -> Optional[int]:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind((bind, 0))
        tag = f"probe{os.getpid():x}x{time.monotonic_ns():x}"
        sock.sendto(hostile.kdmqRequest(target, sock.getsockname(), peer, body, contentType, tag=tag), (target.host, target.port))
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return None
            sock.settimeout(remaining)
            try:
                reply = sock.recv(65535)
            except socket.timeout:
                return None
            if tag.encode("ascii") in reply and reply.startswith(b"SIP/2.0 ") and reply[8:11].isdigit():
                code = int(reply[8:11])
                if code >= 200:
                    return code


def membership(nodes: Sequence[NodeProcess]) -> Dict[str, Any]:
    """
    What each node lists: C{{name: {uri: status}}}, or the error.
    """
    seen: Dict[str, Any] = {}
    for node in nodes:
        try:
            seen[node.name] = {entry["uri"]: entry["status"] for entry in node.rpc("dmq.list_nodes")}
        except (RPCFailed, KeyError, TypeError) as e:
            seen[node.name] = f"error: {e}"
    return seen


def agree(nodes: Sequence[NodeProcess]) -> bool:
    """
    Whether every node lists every other as active.
    """
    seen = membership(nodes)
    for node in nodes:
        listed = seen[node.name]
        if not isinstance(listed, dict):
            return False
        for other in nodes:
            if other is not node and listed.get(other.uri) != "active":
                return False
    return True


def waitForMembership(nodes: Sequence[NodeProcess], seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while True:
        if agree(nodes):
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(0.5)


# The fuzzing


class Tally:
    """
    What the fuzzer saw, shared by its threads.
    """

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.sent: Counter[str] = Counter()
        self.sipReplies: Counter[str] = Counter()
        self.httpStatus: Counter[str] = Counter()
        self.rpcAnswers: Counter[str] = Counter()
        self.responder: Counter[str] = Counter()
        self.errors: Counter[str] = Counter()

    def add(self, counter: str, key: str, n: int = 1) -> None:
        with self.lock:
            getattr(self, counter)[key] += n


def _classifyRPC(status: Optional[int], body: bytes) -> List[str]:
    try:
        answer = json.loads(body)
    except ValueError:
        return ["not JSON" if body.strip() else "empty"]
    answers = answer if isinstance(answer, list) else [answer]
    out = []
    for one in answers[:100000]:
        if isinstance(one, dict) and "error" in one and isinstance(one["error"], dict):
            out.append(f"error {one['error'].get('code')}")
        elif isinstance(one, dict) and "result" in one:
            out.append("result")
        else:
            out.append("other")
    return out


def httpWorker(work: "queue.Queue[Optional[Tuple[hostile.Input, NodeProcess]]]", tally: Tally, timeout: float) -> None:
    while True:
        item = work.get()
        if item is None:
            return
        one, node = item
        try:
            status, body = http(node.host, node.controlPort, one.data, timeout)
        except socket.timeout:
            tally.add("httpStatus", "timeout")
            continue
        except OSError as e:
            tally.add("httpStatus", f"connection error ({type(e).__name__})")
            continue
        finally:
            work.task_done()
        tally.add("httpStatus", str(status))
        if status == 200:
            for kind in _classifyRPC(status, body):
                tally.add("rpcAnswers", kind)


def responder(stop: threading.Event, tally: Tally, seed: int) -> None:
    """
    Answer what the nodes send the fake node C{127.0.9.7:5060} with hostile
    replies.
    """
    import random

    rng = random.Random(f"{seed}:responder")
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        sock.bind(RESPONDER)
    except OSError as e:
        tally.add("errors", f"responder cannot bind {RESPONDER}: {e}")
        return
    sock.settimeout(0.2)
    with sock:
        while not stop.is_set():
            try:
                request, source = sock.recvfrom(65535)
            except socket.timeout:
                continue
            except OSError:
                continue
            tally.add("responder", "requests received")
            reply = hostile.hostileReply(request, rng)
            if reply is None:
                continue
            try:
                sock.sendto(reply[: hostile.MAX_UDP], source)
                tally.add("responder", "replies sent")
            except OSError:
                tally.add("responder", "send errors")


def slowConnections(nodes: Sequence[NodeProcess], count: int, seconds: float, stop: threading.Event, result: Dict[str, Any]) -> None:
    """
    Open C{count} connections to the control endpoints and send a request
    a byte every 5 s, for C{seconds} at most; record when the server closed
    each.
    """
    started = time.monotonic()
    socks = []
    for n in range(count):
        node = nodes[n % len(nodes)]
        try:
            sock = socket.create_connection((node.host, node.controlPort), timeout=2)
            sock.sendall(b"POST /RPC HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n")
            sock.setblocking(False)
            socks.append(sock)
        except OSError:
            result["refused"] = result.get("refused", 0) + 1
    closedAfter: List[float] = []
    nextByte = started + 5
    while socks and not stop.is_set() and time.monotonic() - started < seconds:
        readable, _, _ = select.select(socks, [], [], 0.5)
        for sock in readable:
            try:
                data = sock.recv(65536)
            except OSError:
                data = b""
            if not data:
                closedAfter.append(time.monotonic() - started)
                socks.remove(sock)
                sock.close()
        if time.monotonic() >= nextByte:
            nextByte += 5
            for sock in list(socks):
                try:
                    sock.send(b" ")
                except OSError:
                    closedAfter.append(time.monotonic() - started)
                    socks.remove(sock)
                    sock.close()
    result.update(
        opened=count - result.get("refused", 0),
        closedByServer=len(closedAfter),
        stillOpen=len(socks),
        heldSeconds=round(time.monotonic() - started, 1),
        closedAfterSeconds=sorted(round(t, 1) for t in closedAfter)[:10],
    )
    for sock in socks:
        sock.close()


def fuzz(nodes: Sequence[NodeProcess], options: argparse.Namespace) -> Dict[str, Any]:
    """
    Send the inputs, paced, and return what was seen.
    """
    tally = Tally()
    generator = hostile.HostileInputs(
        options.seed, [n.target for n in nodes], FUZZER, _limits(options), _mix(options), responder=RESPONDER
    )
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 22)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 1 << 22)
    sock.bind(FUZZER)
    sock.setblocking(False)
    probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    probe.bind((FUZZER[0], 0))
    probe.setblocking(False)
    stop = threading.Event()
    work: "queue.Queue[Optional[Tuple[hostile.Input, NodeProcess]]]" = queue.Queue(maxsize=64)
    workers = [threading.Thread(target=httpWorker, args=(work, tally, options.http_timeout), daemon=True) for _ in range(8)]
    slow: Dict[str, Any] = {}
    helpers = [
        threading.Thread(target=responder, args=(stop, tally, options.seed), daemon=True),
        threading.Thread(target=slowConnections, args=(nodes, options.slow, options.slow_seconds, stop, slow), daemon=True),
    ]
    for thread in workers + helpers:
        thread.start()

    stalls = {node.name: {"longest": 0.0, "unanswered": 0, "probes": 0} for node in nodes}
    pending: Dict[bytes, Tuple[str, float]] = {}
    nextProbe = 0.0
    probeNumber = 0

    def drain() -> None:
        while True:
            try:
                reply = sock.recv(65535)
            except (BlockingIOError, InterruptedError):
                break
            except OSError:
                tally.add("errors", "receive error")
                break
            if reply.startswith(b"SIP/2.0 "):
                tally.add("sipReplies", reply[8:11].decode("ascii", "replace"))
            else:
                tally.add("sipReplies", "request")
        while True:
            try:
                reply = probe.recv(65535)
            except (BlockingIOError, InterruptedError, OSError):
                break
            for tag in list(pending):
                if tag in reply:
                    name, sentAt = pending.pop(tag)
                    stalls[name]["longest"] = max(stalls[name]["longest"], time.monotonic() - sentAt)

    def probeNodes() -> None:
        nonlocal nextProbe, probeNumber
        now = time.monotonic()
        if now < nextProbe:
            return
        nextProbe = now + 1.0
        for tag, (name, sentAt) in list(pending.items()):
            if now - sentAt > options.stall_limit:
                del pending[tag]
                stalls[name]["unanswered"] += 1
                stalls[name]["longest"] = max(stalls[name]["longest"], now - sentAt)
        for node in nodes:
            probeNumber += 1
            tag = f"stall{os.getpid():x}x{probeNumber:x}"
            try:
                probe.sendto(hostile.kdmqRequest(node.target, probe.getsockname(), "notification_peer", b"", "text/plain", tag=tag), (node.host, node.port))
            except OSError:
                continue
            pending[tag.encode("ascii")] = (node.name, now)
            stalls[node.name]["probes"] += 1

    started = time.monotonic()
    sentCount = 0
    lastReport = started
    index = skipped = 0
    while sentCount < options.count:
        one = generator.make(index)
        index += 1
        now = time.monotonic()
        if now - started > options.max_seconds:
            break
        # Pace: input n goes at started + n / rate.
        due = started + (sentCount + skipped) / options.rate
        while now < due:
            drain()
            probeNodes()
            time.sleep(min(0.002, due - now))
            now = time.monotonic()
        node = nodes[one.target]
        if one.kind == "rpc":
            try:
                work.put_nowait((one, node))
            except queue.Full:
                # The control endpoints answer slower than the rate: this
                # input is left out (and counted) but takes its time slot,
                # and the datagrams go on.
                tally.add("errors", "rpc input skipped: control endpoint backlog")
                skipped += 1
                continue
        else:
            try:
                sock.sendto(one.data, (node.host, node.port))
            except BlockingIOError:
                select.select([], [sock], [], 0.05)
                try:
                    sock.sendto(one.data, (node.host, node.port))
                except OSError as e:
                    tally.add("errors", f"send: {e.strerror}")
            except OSError as e:
                tally.add("errors", f"send: {e.strerror}")
        tally.add("sent", one.kind)
        sentCount += 1
        if sentCount % 256 == 0:
            drain()
            probeNodes()
        if now - lastReport >= 10:
            lastReport = now
            print(f"  {sentCount:,} inputs sent in {now - started:.0f} s; replies: {sum(tally.sipReplies.values()):,} SIP,"
                  f" {sum(tally.httpStatus.values()):,} HTTP", flush=True)
    sendingSeconds = time.monotonic() - started
    # The HTTP requests still queued, then the last answers.
    for _ in workers:
        work.put(None)
    drainUntil = time.monotonic() + options.http_timeout + 30
    while any(w.is_alive() for w in workers) and time.monotonic() < drainUntil:
        drain()
        probeNodes()
        time.sleep(0.01)
    settleUntil = time.monotonic() + options.settle
    while time.monotonic() < settleUntil:
        drain()
        probeNodes()
        time.sleep(0.01)
    stop.set()
    for thread in helpers:
        thread.join(10)
    sock.close()
    probe.close()
    return {
        "sent": sentCount,
        "made": index,
        "sentByKind": dict(tally.sent),
        "sendingSeconds": round(sendingSeconds, 1),
        "sipReplies": dict(tally.sipReplies),
        "httpStatus": dict(tally.httpStatus),
        "rpcAnswers": dict(tally.rpcAnswers),
        "responder": dict(tally.responder),
        "fuzzerErrors": dict(tally.errors),
        "stalls": {name: {k: round(v, 3) if isinstance(v, float) else v for k, v in s.items()} for name, s in stalls.items()},
        "slowConnections": slow,
    }


def _limits(options: argparse.Namespace) -> hostile.Limits:
    return hostile.Limits(
        hugeValue=options.huge_value, redosLength=options.redos_length, maxLines=options.max_lines, maxBatch=options.max_batch
    )


def _mix(options: argparse.Namespace) -> Sequence[Tuple[str, int]]:
    if not options.mix:
        return hostile.MIX
    mix = []
    for part in options.mix.split(","):
        kind, _, weight = part.partition("=")
        mix.append((kind.strip(), int(weight)))
    return mix


# The checks at the end


def endChecks(nodes: Sequence[NodeProcess], options: argparse.Namespace) -> Dict[str, Any]:
    """
    Whether each node is alive and answers, whether a change made on one
    reaches the other, and whether they list each other as active.
    """
    checks: Dict[str, Any] = {}
    for node in nodes:
        result: Dict[str, Any] = {"alive": node.alive}
        if node.alive:
            result["ping"] = _retry(lambda: udpPing(node.target), lambda code: code == 200)
            key = f"fuzz-end-{options.seed}-{node.name}"
            body = json.dumps({"action": 2, "htname": "kdmq", "cname": key, "type": 2, "strval": "sip", "mode": 1}).encode()
            result["htableSet"] = _retry(lambda: udpRequest(node.target, "htable", body, "application/json"), lambda code: code == 200)
            try:
                result["rpcSet"] = node.rpc("htable.sets", "kdmq", key + "-rpc", "rpc")
            except RPCFailed as e:
                result["rpcSet"] = f"failed: {e}"
        checks[node.name] = result
    # Replication: what was set by RPC on each node is read on the others.
    for node in nodes:
        for other in nodes:
            if other is node or not other.alive:
                continue
            key = f"fuzz-end-{options.seed}-{node.name}-rpc"

            def read(other: NodeProcess = other, key: str = key) -> Any:
                try:
                    return other.rpc("htable.get", "kdmq", key)["item"]["value"]
                except (RPCFailed, KeyError, TypeError):
                    return None

            checks[node.name][f"replicatedTo{other.name.upper()}"] = _retry(read, lambda value: value == "rpc", seconds=10)
    agreed = waitForMembership(nodes, options.membership_wait)
    checks["membership"] = {"agree": agreed, "lists": _summariseLists(membership(nodes))}
    return checks


def _summariseLists(seen: Dict[str, Any]) -> Dict[str, Any]:
    out = {}
    for name, listed in seen.items():
        if isinstance(listed, dict):
            statuses = Counter(listed.values())
            out[name] = {"nodes": len(listed), "byStatus": dict(statuses),
                         "bus": {uri: status for uri, status in listed.items() if any(uri == f"sip:{h}:{SIP_PORT}" for _, h in NODES)}}
        else:
            out[name] = listed
    return out


def _retry(attempt, good, seconds: float = 10.0) -> Dict[str, Any]:
    deadline = time.monotonic() + seconds
    tries = 0
    while True:
        tries += 1
        try:
            value = attempt()
        except (OSError, RPCFailed) as e:
            value = f"error: {e}"
        if good(value):
            return {"ok": True, "value": value, "tries": tries}
        if time.monotonic() > deadline:
            return {"ok": False, "value": value, "tries": tries}
        time.sleep(0.5)


def counterChanges(before: Dict, after: Dict) -> Dict[str, Dict[str, float]]:
    """
    The counters that changed, by family (the sample name without
    C{_total}), each sample written as its labels.
    """
    out: Dict[str, Dict[str, float]] = {}
    for (name, labels), value in sorted(after.items()):
        if not name.endswith("_total"):
            continue
        change = value - before.get((name, labels), 0.0)
        if change:
            out.setdefault(name[: -len("_total")], {})[",".join(f"{k}={v}" for k, v in labels) or "-"] = change
    return out


def gauges(after: Dict) -> Dict[str, float]:
    wanted = ("dmq_live_transactions", "dmq_queue_depth", "dmq_nodes")
    return {
        name + ("{" + ",".join(f"{k}={v}" for k, v in labels) + "}" if labels else ""): value
        for (name, labels), value in sorted(after.items())
        if name in wanted
    }


# Running it all


def run(options: argparse.Namespace) -> int:
    workdir = options.workdir or tempfile.mkdtemp(prefix="dmq-fuzz-")
    os.makedirs(workdir, exist_ok=True)
    print(f"dmq fuzz: seed {options.seed}, {options.count:,} inputs at {options.rate:g}/s (at most {options.max_seconds:g} s);"
          f" logs in {workdir}", flush=True)
    nodes = startNodes(workdir, options)
    report: Dict[str, Any] = {"seed": options.seed, "count": options.count, "rate": options.rate, "workdir": workdir}
    try:
        report["rssBefore"] = {n.name: n.rss() for n in nodes}
        before = {n.name: n.metrics() for n in nodes}
        report["fuzz"] = fuzz(nodes, options)
        report["rssAfter"] = {n.name: n.rss() for n in nodes}
        report["checks"] = endChecks(nodes, options)
        report["rssSettled"] = {n.name: n.rss() for n in nodes}
        after = {}
        for n in nodes:
            try:
                after[n.name] = n.metrics()
            except (OSError, ValueError) as e:
                after[n.name] = {}
                report.setdefault("metricsErrors", {})[n.name] = str(e)
        report["counters"] = {n.name: counterChanges(before[n.name], after[n.name]) for n in nodes}
        report["gauges"] = {n.name: gauges(after[n.name]) for n in nodes}
    finally:
        report["stop"] = {}
        for n in nodes:
            stopping = time.monotonic()
            try:
                n.process.stop(options.stop_timeout)
            except RuntimeError as e:
                print(f"{n.name}: {e}", file=sys.stderr)
            report["stop"][n.name] = {
                "seconds": round(time.monotonic() - stopping, 1),
                "exit": n.process.process.returncode,
            }
    report["failures"] = {n.name: n.failureReport() for n in nodes}
    report["logs"] = {n.name: n.logCounts() for n in nodes}
    status = verdict(report, options)
    report["exit"] = status
    printReport(report)
    if options.json:
        with open(options.json, "w", encoding="utf-8") as f:
            json.dump(report, f, indent=1, default=str)
    if options.clean:
        shutil.rmtree(workdir, ignore_errors=True)
    return status


def verdict(report: Dict[str, Any], options: argparse.Namespace) -> int:
    status = 0
    failures = sum(f.get("failures", 0) for f in report["failures"].values())
    logged = sum(c["Traceback"] + c["Unhandled"] for c in report["logs"].values())
    if failures or logged:
        status |= 1
    checks = report.get("checks", {})
    for name, result in checks.items():
        if name == "membership":
            continue
        if not result.get("alive") or not all(
            v.get("ok", False) for k, v in result.items() if isinstance(v, dict)
        ) or not str(result.get("rpcSet", "")).startswith("Ok"):
            status |= 2
    if not checks.get("membership", {}).get("agree", False):
        status |= 4
    if report.get("fuzz", {}).get("sent", 0) < options.count:
        status |= 8
    return status


def _kb(value: Optional[int]) -> str:
    return "gone" if value is None else f"{value / 1024:.1f} MB"


def printReport(report: Dict[str, Any]) -> None:
    fuzzed = report.get("fuzz", {})
    print()
    print(f"## dmq fuzz, seed {report['seed']}: {fuzzed.get('sent', 0):,} inputs in {fuzzed.get('sendingSeconds', 0)} s"
          f" (inputs 0 to {fuzzed.get('made', 0) - 1} made)")
    print(f"inputs by kind: {fuzzed.get('sentByKind')}")
    print()
    print("### Tracebacks (must be 0)")
    for name, failures in report["failures"].items():
        logs = report["logs"][name]
        print(f"- node {name}: {failures.get('failures', 0)} failure events; log: {logs['Traceback']} 'Traceback' lines,"
              f" {logs['Unhandled']} 'Unhandled' lines, {logs['bytes'] / 1e6:.1f} MB; events by level {failures.get('levels')}")
        for group in failures.get("groups", []):
            print(f"  - {group['count']} x {group['exception']} at {group['site']}: {group['message'][:200]!r}")
            print(f"    last input: {group['lastInput'][:300]}")
        if failures.get("sandbox"):
            print(f"  - sandbox refused: {failures['sandbox']}")
    print()
    print("### Replies the fuzzer got")
    print(f"- SIP, by code: {dict(sorted(fuzzed.get('sipReplies', {}).items()))}")
    print(f"- HTTP, by status: {fuzzed.get('httpStatus')}; JSON-RPC answers: {fuzzed.get('rpcAnswers')}")
    print(f"- hostile responder: {fuzzed.get('responder')}; fuzzer errors: {fuzzed.get('fuzzerErrors')}")
    print(f"- slow connections: {fuzzed.get('slowConnections')}")
    print()
    print("### Node counters that changed (from /metrics)")
    for name, families in report.get("counters", {}).items():
        print(f"- node {name}:")
        for family, samples in families.items():
            print(f"  - {family}: {samples}")
        print(f"  - gauges after: {report.get('gauges', {}).get(name)}")
    print()
    print("### Memory and stalls")
    for name in report.get("rssBefore", {}):
        print(f"- node {name}: RSS {_kb(report['rssBefore'][name])} before, {_kb(report['rssAfter'].get(name))} just after,"
              f" {_kb(report['rssSettled'].get(name))} settled; stalls {fuzzed.get('stalls', {}).get(name)}")
    for name, stop in report.get("stop", {}).items():
        print(f"- node {name}: stopped {stop['seconds']} s after SIGTERM, exit {stop['exit']}"
              + (" (killed: it did not stop in time)" if stop["exit"] == -9 else ""))
    print()
    print("### End checks")
    for name, result in report.get("checks", {}).items():
        print(f"- {name}: {json.dumps(result, default=str)[:1500]}")
    print()
    status = report["exit"]
    meaning = [text for bit, text in ((1, "tracebacks"), (2, "a node dead or not answering"), (4, "membership disagrees"),
                                      (8, "fewer inputs than asked")) if status & bit]
    print(f"exit {status}: {', '.join(meaning) or 'all well'}")


def main(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    parser.add_argument("--count", type=int, default=100000, help="inputs to send")
    parser.add_argument("--seed", type=int, default=1, help="the seed of the inputs")
    parser.add_argument("--rate", type=float, default=1000.0, help="inputs per second")
    parser.add_argument("--max-seconds", type=float, default=300.0, help="stop sending after this long")
    parser.add_argument("--settle", type=float, default=10.0, help="idle seconds before the end checks")
    parser.add_argument("--membership-wait", type=float, default=40.0, help="how long the nodes have to list each other again")
    parser.add_argument("--ping-interval", type=float, default=PING_INTERVAL, help="the nodes' ping_interval")
    parser.add_argument("--slow", type=int, default=50, help="slow HTTP connections to hold")
    parser.add_argument("--slow-seconds", type=float, default=60.0, help="how long to hold them at most")
    parser.add_argument("--http-timeout", type=float, default=10.0, help="seconds an HTTP answer may take")
    parser.add_argument(
        "--memory-limit", type=int, default=4096, metavar="MB",
        help="the address space each node may use (RLIMIT_AS), so that a runaway node cannot take the machine; 0: none",
    )
    parser.add_argument("--stop-timeout", type=float, default=30.0, help="seconds a node has to stop on SIGTERM before SIGKILL")
    parser.add_argument("--stall-limit", type=float, default=5.0, help="seconds after which a probe counts as unanswered")
    parser.add_argument("--huge-value", type=int, default=hostile.Limits().hugeValue, help="largest htable value, octets")
    parser.add_argument("--redos-length", type=int, default=hostile.Limits().redosLength, help="longest key a catastrophic regex meets")
    parser.add_argument("--max-lines", type=int, default=hostile.Limits().maxLines, help="most lines of a node list")
    parser.add_argument("--max-batch", type=int, default=hostile.Limits().maxBatch, help="most calls of a JSON-RPC batch")
    parser.add_argument("--mix", help="shares of the kinds, e.g. capture=40,nodelist=20,htable=30,rpc=10")
    parser.add_argument("--workdir", help="where the node logs go (default: a new temporary folder)")
    parser.add_argument("--clean", action="store_true", help="delete the workdir at the end")
    parser.add_argument("--json", help="write the report as JSON to this file")
    parser.add_argument(
        "--show", type=lambda text: int(text, 0), metavar="N",
        help="print input N of the seed and exit (0x12341 for the input whose Call-ID is fz<seed>x12341)",
    )
    # How this script runs itself as a node.
    parser.add_argument("--role", choices=["main", "node"], default="main", help=argparse.SUPPRESS)
    parser.add_argument("--host", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--control-port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--other", action="append", default=[], help=argparse.SUPPRESS)
    parser.add_argument("--log", help=argparse.SUPPRESS)
    parser.add_argument("--failures", help=argparse.SUPPRESS)
    parser.add_argument("--table", default=TABLE, help=argparse.SUPPRESS)
    options = parser.parse_args(argv)
    if options.role == "node":
        serveNode(options)
        return 0
    if options.show is not None:
        generator = hostile.HostileInputs(
            options.seed, [hostile.Target(h, SIP_PORT) for _, h in NODES], FUZZER, _limits(options), _mix(options)
        )
        one = generator.make(options.show)
        print(f"input {one.index} of seed {options.seed}: {one.label}, to node {NODES[one.target][0]}, {len(one.data)} octets")
        print(repr(one.data))
        return 0
    if not 0 < options.rate <= 100000 or options.count < 1 or not 0 < options.max_seconds <= 7200:
        parser.error("--rate must be 0 to 100000, --count at least 1, --max-seconds 0 to 7200")
    return run(options)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
