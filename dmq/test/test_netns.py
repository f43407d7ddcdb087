# -*- test-case-name: dmq.test.test_netns -*-
"""
The failure detector (C{--probe}) on real network namespaces: real
C{twistd -n dmq} processes, each in a network namespace of its own, joined
by veth pairs to a bridge in a hub namespace, talking UDP over
C{10.231.0.0/24} (an address range only these namespaces have); their
control endpoints on UNIX sockets, so that the test reads them from the host
without a route.  Issue 15's targets, in real time: a killed node
C{disabled} on every other node within 5 s and removed within 10 s; at 20 %
loss on every link (C{tc netem}), no live node leaves C{active}.

The test needs root, C{ip} (iproute2) and network namespaces; the loss test
needs C{tc} and the C{netem} queueing discipline.  Without them it skips,
saying why.  It makes its namespaces (C{dmqt-PID-N}), links and processes
itself and removes them at its end, failed or not.  It binds nothing on the
host's loopback: no need for the shared lock, though a loaded machine may
delay the nodes' timers (the figures are in C{doc/reliability.md}).

Polls are of the control endpoint (C{dmq.list_nodes}), every 0.1 s, each loop
with a hard deadline.
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
from typing import Callable, Dict, List, Optional, Tuple, TypeVar

from twisted.trial.unittest import SkipTest, SynchronousTestCase

from dmq.ctlclient import ControlError, call, controlURL

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
Seconds for four nodes to start and agree that all four are active.
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


def _unavailable() -> Optional[str]:
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

    def statuses(self, n: int) -> Optional[Dict[str, str]]:
        """
        Node N's list: host to status (itself included); C{None} while its
        control endpoint does not answer.
        """
        try:
            listed = call(controlURL(f"unix:{self.control(n)}"), "dmq.list_nodes", [], timeout=2.0)
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


class DetectorTests(SynchronousTestCase):
    """
    Four C{twistd -n dmq --probe} nodes, the detector's default settings.
    """

    count = 4

    def setUp(self) -> None:
        reason = _unavailable()
        if reason is not None:
            raise SkipTest(reason)
        self.bus = NetnsBus(self, self.count, ["--probe"])
        self.bus.create()
        self.everyone = {self.bus.host(n) for n in range(1, self.count + 1)}

    def startAll(self) -> float:
        """
        Start every node; return once each lists all four as active.

        @return: the seconds that took.
        """
        started = time.monotonic()
        for n in range(1, self.count + 1):
            self.bus.start(n)
        self.allActive(self.everyone, START_TIMEOUT, "four nodes start and agree")
        took = time.monotonic() - started
        print(f"\nfour nodes started and agreed in {took:.2f} s")
        return took

    def allActive(self, hosts: set[str], timeout: float, what: str) -> None:
        def agreed() -> Optional[bool]:
            for n in range(1, self.count + 1):
                if self.bus.host(n) in hosts and self.bus.statuses(n) != {h: "active" for h in hosts}:
                    return None
            return True

        poll(agreed, timeout, what, self.bus)

    def test_killedNodeDisabledThenRemoved(self) -> None:
        """
        A bus of four converges; one node SIGKILLed is C{disabled} on each of
        the three others within 5 s and removed from each within 10 s; the
        three still list each other as active.  Restarted, it is active on
        every node within 2 s of its start.

        The kill comes as soon as every list has every node: each node
        asks a newly active node at once whether it runs the detector, so
        it is watched from its first second (before that change, a node
        killed then was left to the ping: doc/reliability.md).
        """
        self.startAll()
        victim = self.count
        gone = self.bus.host(victim)
        survivors = [n for n in range(1, self.count + 1) if n != victim]
        disabled: Dict[int, float] = {}
        removed: Dict[int, float] = {}
        # Any other status a survivor gave it on the way (none expected).
        other: Dict[int, Tuple[float, str]] = {}

        self.bus.kill(victim)
        killed = time.monotonic()

        def allRemoved() -> Optional[bool]:
            now = time.monotonic() - killed
            for n in survivors:
                if n in removed:
                    continue
                statuses = self.bus.statuses(n)
                if statuses is None:
                    continue
                status = statuses.get(gone)
                if status is None:
                    # Removed before a poll saw it disabled: it was disabled
                    # no later than now.
                    disabled.setdefault(n, now)
                    removed[n] = now
                elif status == "disabled":
                    disabled.setdefault(n, now)
                elif status != "active":
                    other.setdefault(n, (now, status))
            return True if len(removed) == len(survivors) else None

        poll(allRemoved, 15.0, f"{gone} removed from every list ({disabled}, {removed})", self.bus)
        print(f"\nkilled {gone}: disabled after {sorted(round(t, 2) for t in disabled.values())} s,"
              f" removed after {sorted(round(t, 2) for t in removed.values())} s; other statuses {other}")
        self.assertLessEqual(max(disabled.values()), 5.0, disabled)
        self.assertLessEqual(max(removed.values()), 10.0, removed)
        # No survivor was taken for dead on the way.
        self.allActive(self.everyone - {gone}, 2.0, "the three survivors list each other active")

        self.bus.start(victim)
        restarted = time.monotonic()
        poll(lambda: self.bus.statuses(victim), START_TIMEOUT, f"{gone} answers after its restart", self.bus)
        answering = time.monotonic()
        self.allActive(self.everyone, 5.0, f"{gone} active everywhere after its restart")
        rejoined = time.monotonic()
        print(f"restarted {gone}: control endpoint answering after {answering - restarted:.2f} s,"
              f" active everywhere {rejoined - answering:.2f} s later")
        self.assertLessEqual(rejoined - restarted, 2.0)

    def test_noFalseAlarmUnderLoss(self) -> None:
        """
        With 20 % of the datagrams each node sends dropped, no live node
        leaves C{active} on any node's list for 30 s.
        """
        self.startAll()
        how = self.bus.loss(20)
        began = time.monotonic()
        samples = 0
        while time.monotonic() - began < 30.0:
            for n in range(1, self.count + 1):
                statuses = self.bus.statuses(n)
                if statuses is None:
                    self.fail(f"node {n}'s control endpoint did not answer\n{self.bus.logs()}")
                self.assertEqual(
                    statuses, {h: "active" for h in self.everyone},
                    f"node {n}, {time.monotonic() - began:.1f} s into the loss\n{self.bus.logs()}",
                )
            samples += 1
            time.sleep(POLL)
        self.assertEqual(self.bus.running(), list(range(1, self.count + 1)))
        dropped = self.bus.dropped(how)
        print(f"\n20 % loss ({how}): {dropped} datagrams dropped; {samples} polls of 4 lists in 30 s, all active")
        # The loss was real: at 4 messages a node a second, about 100
        # datagrams are dropped in 30 s.
        self.assertGreater(dropped, 20)
