# -*- test-case-name: dmq.test.test_netns,dmq.test.test_netns_entropy -*-
"""
Real C{twistd -n dmq} nodes on real network namespaces, for the integration
tests that need a real network between real processes
(L{dmq.test.test_netns}, the failure detector; L{dmq.test.test_netns_entropy},
htable anti-entropy): L{NetnsBus} makes a namespace per node, joined by veth
pairs to a bridge in a hub namespace, the nodes talking UDP over
C{10.231.0.0/24} (an address range only these namespaces have) and serving
their control endpoints on UNIX sockets, so that a test reads them from the
host without a route.  It drops datagrams at random (L{NetnsBus.loss}) or
all of a node's (L{NetnsBus.partition}), and removes its processes (by pid),
namespaces and links at the test's end, failed or not.

L{unavailable} says why a host cannot run them (no root, no C{ip}); a test
skips with that.  L{poll} is the tests' only wait: a check every L{POLL}
seconds, with a hard deadline.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from typing import Any, Callable, Dict, List, Optional, Sequence, TypeVar

from twisted.trial.unittest import SkipTest, SynchronousTestCase

from dmq.ctlclient import ControlError, call, controlURL, fetch, metricsURL, urlopen

__all__ = ["NetnsBus", "POLL", "START_TIMEOUT", "poll", "unavailable"]

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

SUBNET = "10.231.0"
"""
The nodes' network: C{SUBNET.N/24} is node N (1 to 4).
"""

PORT = 5060

POLL = 0.1
"""
Seconds between two reads of the nodes' lists.
"""

START_TIMEOUT = 20.0
"""
Seconds for the nodes of a bus to start and agree that all are active.
"""

COMMAND_TIMEOUT = 10.0

# The checkout first on sys.path, so that this checkout's dmq (and its
# twistd plugin) runs, whatever is installed.
_BOOT = (
    "import sys; sys.path.insert(0, sys.argv.pop(1)); import dmq;"
    " assert dmq.__file__.startswith(sys.path[0]), dmq.__file__;"
    " from twisted.scripts.twistd import run; sys.argv[0] = 'twistd'; run()"
)

T = TypeVar("T")


def _ip(*args: str) -> subprocess.CompletedProcess[str]:
    """
    Run C{ip ARGS}, or C{ip -n NS ...} through C{args}; raise if it fails.
    """
    return _run(["ip", *args])


def _run(argv: List[str]) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        timeout=COMMAND_TIMEOUT,
    )
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)!r} exited {done.returncode}: {done.stdout.strip()}")
    return done


def unavailable() -> Optional[str]:
    """
    Why this host cannot run these tests, or C{None}.
    """
    if not sys.platform.startswith("linux"):
        return "network namespaces are Linux's"
    if os.geteuid() != 0:
        return "making network namespaces needs root"
    if shutil.which("ip") is None:
        return "no ip (iproute2) on PATH"
    return None


class NetnsBus:
    """
    A bus of dmq nodes, each in a network namespace of its own: namespace
    C{dmqt-PID-0} holds a bridge, namespace C{dmqt-PID-N} node N, its
    C{eth0} (C{SUBNET.N/24}) the end of a veth pair whose other end, C{nN},
    is on the bridge.

    @ivar processes: node number to its C{twistd} process (running or not).
    """

    def __init__(self, case: SynchronousTestCase, count: int, options: List[str]) -> None:
        self._case = case
        self.count = count
        self._options = options
        self._prefix = f"dmqt-{os.getpid()}"
        self._namespaces: List[str] = []
        self.processes: Dict[int, subprocess.Popen[bytes]] = {}
        self._starts: Dict[int, int] = {}
        self._cut: Dict[int, str] = {}
        self.directory = tempfile.mkdtemp(prefix="dmqt-")
        case.addCleanup(shutil.rmtree, self.directory, True)
        # Cleanups run last first: the processes end before their
        # namespaces go (a namespace whose process lives stays, and so do
        # its links).
        case.addCleanup(self._removeNamespaces)
        case.addCleanup(self._killAll)

    def namespace(self, n: int) -> str:
        return f"{self._prefix}-{n}"

    def host(self, n: int) -> str:
        return f"{SUBNET}.{n}"

    def uri(self, n: int) -> str:
        return f"sip:{self.host(n)}:{PORT}"

    def control(self, n: int) -> str:
        return os.path.join(self.directory, f"control-{n}.sock")

    def log(self, n: int) -> str:
        return os.path.join(self.directory, f"node-{n}.log")

    def create(self) -> None:
        """
        Make the namespaces, the bridge and the links; skip the test if the
        first namespace cannot be made.
        """
        hub = self.namespace(0)
        try:
            _ip("netns", "add", hub)
        except (RuntimeError, OSError, subprocess.TimeoutExpired) as e:
            raise SkipTest(f"cannot make a network namespace: {e}")
        self._namespaces.append(hub)
        _ip("-n", hub, "link", "add", "br0", "type", "bridge")
        _ip("-n", hub, "link", "set", "br0", "up")
        for n in range(1, self.count + 1):
            ns = self.namespace(n)
            _ip("netns", "add", ns)
            self._namespaces.append(ns)
            _ip("link", "add", f"n{n}", "netns", hub, "type", "veth", "peer", "name", "eth0", "netns", ns)
            _ip("-n", hub, "link", "set", f"n{n}", "master", "br0", "up")
            _ip("-n", ns, "link", "set", "lo", "up")
            _ip("-n", ns, "addr", "add", f"{self.host(n)}/24", "dev", "eth0")
            _ip("-n", ns, "link", "set", "eth0", "up")

    def loss(self, percent: int) -> str:
        """
        Drop C{percent} % of the datagrams each node sends on its C{eth0},
        at random: each datagram crosses one such link, so every path loses
        C{percent} %, as the fake network's loss does.  With C{tc netem}
        where the kernel has it, else with an nftables rule (C{numgen
        random}); skip the test if neither is there.

        @return: which one: C{"netem"} or C{"nftables"}.
        """
        how = None
        if shutil.which("tc") is not None:
            try:
                self._inEach(lambda n: ["tc", "qdisc", "add", "dev", "eth0", "root", "netem", "loss", f"{percent}%"])
                how = "netem"
            except RuntimeError as e:
                netem = str(e)
        else:
            netem = "no tc on PATH"
        if how is None and shutil.which("nft") is not None:
            self._inEach(lambda n: ["nft", "add", "table", "ip", "dmqt"])
            self._inEach(lambda n: [
                "nft", "add", "chain", "ip", "dmqt", "out",
                "{ type filter hook output priority 0 ; policy accept ; }",
            ])
            self._inEach(lambda n: [
                "nft", "add", "rule", "ip", "dmqt", "out",
                "oifname", "eth0", "numgen", "random", "mod", "100", "<", str(percent), "counter", "drop",
            ])
            how = "nftables"
        if how is None:
            raise SkipTest(f"no way to drop datagrams: netem ({netem}), and no nft on PATH")
        return how

    def partition(self, n: int) -> str:
        """
        Cut node N off from every other node: drop every datagram its
        C{eth0} sends or receives, with an nftables rule in its namespace,
        or, without C{nft}, by setting its link's bridge end down (the
        node's own C{eth0} stays up, its address and routes too: what it
        sends is lost, as in a partition, not refused).  L{heal} undoes it.

        @return: how: C{"nftables"} or C{"link"}.
        """
        ns = self.namespace(n)
        if shutil.which("nft") is not None:
            _run(["ip", "netns", "exec", ns, "nft", "add", "table", "ip", "dmqtcut"])
            for chain, hook, match in (("in", "input", "iifname"), ("out", "output", "oifname")):
                _run([
                    "ip", "netns", "exec", ns, "nft", "add", "chain", "ip", "dmqtcut", chain,
                    f"{{ type filter hook {hook} priority 0 ; policy accept ; }}",
                ])
                _run(["ip", "netns", "exec", ns, "nft", "add", "rule", "ip", "dmqtcut", chain,
                      match, "eth0", "counter", "drop"])
            self._cut[n] = "nftables"
        else:
            _ip("-n", self.namespace(0), "link", "set", f"n{n}", "down")
            self._cut[n] = "link"
        return self._cut[n]

    def heal(self, n: int) -> None:
        """
        Undo L{partition} of node N.
        """
        how = self._cut.pop(n)
        if how == "nftables":
            _run(["ip", "netns", "exec", self.namespace(n), "nft", "delete", "table", "ip", "dmqtcut"])
        else:
            _ip("-n", self.namespace(0), "link", "set", f"n{n}", "up")

    def dropped(self, how: str) -> int:
        """
        How many datagrams the loss of L{loss} dropped, all nodes together.
        """
        total = 0
        for n in range(1, self.count + 1):
            if how == "netem":
                argv = ["tc", "-s", "qdisc", "show", "dev", "eth0"]
                pattern = r"dropped (\d+)"
            else:
                argv = ["nft", "list", "chain", "ip", "dmqt", "out"]
                pattern = r"packets (\d+)"
            shown = _run(["ip", "netns", "exec", self.namespace(n), *argv]).stdout
            total += sum(int(found) for found in re.findall(pattern, shown))
        return total

    def _inEach(self, command: Callable[[int], List[str]]) -> None:
        """
        Run C{command(N)} in each node's namespace.
        """
        for n in range(1, self.count + 1):
            _run(["ip", "netns", "exec", self.namespace(n), *command(n)])

    def start(self, n: int) -> None:
        """
        Start node N (C{twistd -n dmq}) in its namespace, joining through
        node 1.  C{ip netns exec} execs the command: the process's pid is
        the node's.
        """
        argv = [
            "ip", "netns", "exec", self.namespace(n),
            sys.executable, "-c", _BOOT, ROOT, "-n", "--pidfile=", f"--logfile={self.log(n)}",
            "dmq", f"--server-address={self.uri(n)}", f"--notification-address={self.uri(1)}",
            f"--control=unix:{self.control(n)}", *self._options,
        ]
        if os.path.exists(self.control(n)):
            os.remove(self.control(n))
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        env.pop("PYTHONPATH", None)
        with open(self.log(n) + ".out", "ab") as out:
            self.processes[n] = subprocess.Popen(
                argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, env=env,
                start_new_session=True,
            )

    def kill(self, n: int) -> None:
        """
        SIGKILL node N, by the pid we started, and reap it.
        """
        process = self.processes[n]
        if process.poll() is None:
            os.kill(process.pid, signal.SIGKILL)
        process.wait(COMMAND_TIMEOUT)

    def call(self, n: int, method: str, params: Sequence[Any], timeout: float = 2.0) -> Any:
        """
        Call C{method} on node N's control endpoint.

        @return: its result.
        @raise ControlError: if the endpoint does not answer, or answers an
            error.
        """
        return call(controlURL(f"unix:{self.control(n)}"), method, params, timeout=timeout)

    def metrics(self, n: int) -> str:
        """
        Node N's C{GET /metrics}, the Prometheus text.

        @raise ControlError: if the endpoint does not answer.
        """
        url = metricsURL(controlURL(f"unix:{self.control(n)}"))
        return fetch(urllib.request.Request(url), 2.0, urlopen, None).decode("utf-8")

    def statuses(self, n: int) -> Optional[Dict[str, str]]:
        """
        Node N's list: host to status (itself included); C{None} while its
        control endpoint does not answer.
        """
        try:
            listed = self.call(n, "dmq.list_nodes", [])
        except ControlError:
            return None
        return {entry["host"]: entry["status"] for entry in listed}

    def running(self) -> List[int]:
        return [n for n, p in sorted(self.processes.items()) if p.poll() is None]

    def logs(self) -> str:
        """
        The tail of every node's log, for a failure's message.
        """
        parts = []
        for n in sorted(self.processes):
            for path in (self.log(n), self.log(n) + ".out"):
                try:
                    with open(path, encoding="utf-8", errors="replace") as f:
                        # Not the control endpoint's access log: our polls.
                        tail = [line for line in f if '"POST /RPC' not in line][-20:]
                except OSError:
                    continue
                parts.append(f"--- {os.path.basename(path)}\n{''.join(tail)}")
        return "\n".join(parts)

    def _killAll(self) -> None:
        for n in sorted(self.processes):
            process = self.processes[n]
            if process.poll() is None:
                os.kill(process.pid, signal.SIGKILL)
            try:
                process.wait(COMMAND_TIMEOUT)
            except subprocess.TimeoutExpired:
                pass

    def _removeNamespaces(self) -> None:
        problems = []
        for ns in reversed(self._namespaces):
            try:
                _ip("netns", "del", ns)
            except (RuntimeError, OSError, subprocess.TimeoutExpired) as e:
                problems.append(str(e))
        self._namespaces.clear()
        if problems:
            raise RuntimeError("; ".join(problems))


def poll(check: Callable[[], Optional[T]], timeout: float, what: str, bus: NetnsBus) -> T:
    """
    Call C{check} every L{POLL} seconds until it returns something other than
    C{None}, for at most C{timeout} seconds.

    @raise AssertionError: at the deadline, naming C{what}, with the logs.
    """
    deadline = time.monotonic() + timeout
    while True:
        found = check()
        if found is not None:
            return found
        if time.monotonic() >= deadline:
            raise AssertionError(f"{what}: not within {timeout:g} s\n{bus.logs()}")
        time.sleep(POLL)
