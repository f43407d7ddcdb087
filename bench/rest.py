# -*- test-case-name: dmq.test.test_imports -*-
"""
Measure a node's memory at rest: C{VmRSS} of a C{twistd -n dmq} of this
checkout a few seconds after it started, and which modules it loaded.

Run it from the root of the repository::

    python bench/rest.py [--rounds 3] [--wait 2] [--modules]
    python bench/rest.py --plain          # also without the control endpoint

The node is the one of C{bench/bus.py} (the htable peer, the table
C{kdmq=>size=8;autoexpire=0;dmqreplicate=1}, a control endpoint), on
C{127.0.0.181}, so that it does not meet the bench's or the tests' nodes.  The
bytecode is compiled first, as an installed package's is (this machine sets
C{PYTHONDONTWRITEBYTECODE}; without the cache a node holds about 2 MB more).
Each figure is the median of C{--rounds} starts, in MB of 1000 of the kB that
C{/proc} counts.  C{--modules} prints the modules the node loaded, biggest
packages first by module count, from the node's own C{sys.modules}.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from typing import List, Optional, Sequence, Tuple

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HOST = "127.0.0.181"
TABLE = "kdmq=>size=8;autoexpire=0;dmqreplicate=1"

# Run twistd with this checkout first on sys.path; with --modules, write the
# loaded modules' names to a file when the reactor has run for a while.
_BOOT = """
import sys
sys.path.insert(0, sys.argv.pop(1))
modules = sys.argv.pop(1)
import dmq
assert dmq.__file__.startswith(sys.path[0]), dmq.__file__
if modules:
    from twisted.internet import reactor
    def dump():
        with open(modules, "w") as f:
            f.write("\\n".join(sorted(sys.modules)))
    reactor.callLater(0.5, dump)
from twisted.scripts.twistd import run
sys.argv[0] = "twistd"
run()
"""


def status(pid: int, field: str) -> Optional[int]:
    """
    A field of C{/proc/PID/status} in kB, or C{None} when it is not there.
    """
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def measure(
    python: str, control: bool, wait: float, modulesFile: str = ""
) -> Tuple[int, List[str]]:
    """
    Start a node, wait, and return its C{VmRSS} in kB and, when
    C{modulesFile} is given, the names of the modules it loaded.
    """
    argv = [python, "-c", _BOOT, ROOT, modulesFile, "-n", "--pidfile=", "--logfile=-", "dmq"]
    argv += [f"--server-address=sip:{HOST}:5060", f"--htable={TABLE}"]
    if control:
        argv += [f"--control=tcp:5080:interface={HOST}"]
    process = subprocess.Popen(
        argv, cwd=ROOT, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    try:
        time.sleep(wait)
        if process.poll() is not None:
            out = process.stdout.read().decode("utf-8", "replace") if process.stdout else ""
            raise SystemExit(f"the node exited ({process.returncode}):\n{out[-3000:]}")
        rss = status(process.pid, "VmRSS")
        if rss is None:
            raise SystemExit("no VmRSS for the node")
    finally:
        process.terminate()
        process.wait(10)
    names: List[str] = []
    if modulesFile:
        with open(modulesFile) as f:
            names = f.read().split()
    return rss, names


def main(argv: Sequence[str]) -> None:
    parser = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    parser.add_argument("--python", default=sys.executable, help="the node's interpreter")
    parser.add_argument("--rounds", type=int, default=3, help="starts per figure; the median")
    parser.add_argument("--wait", type=float, default=2.0, help="seconds from start to reading")
    parser.add_argument("--plain", action="store_true", help="also a node without control")
    parser.add_argument("--modules", action="store_true", help="list the modules loaded")
    options = parser.parse_args(argv)

    subprocess.run(
        [options.python, "-m", "compileall", "-q", os.path.join(ROOT, "dmq")],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        check=True,
        env={k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"},
    )
    configurations = [("htable and control endpoint", True)]
    if options.plain:
        configurations.append(("htable, no control endpoint", False))
    for label, control in configurations:
        figures = sorted(measure(options.python, control, options.wait)[0] for _ in range(options.rounds))
        median = figures[len(figures) // 2]
        print(
            f"{label}: {median / 1000:.1f} MB at rest (median of {options.rounds};"
            f" {', '.join(f'{f / 1000:.1f}' for f in figures)})"
        )
        if options.modules:
            with tempfile.TemporaryDirectory() as tmp:
                names = measure(options.python, control, options.wait, os.path.join(tmp, "m"))[1]
            packages: dict = {}
            for name in names:
                top = ".".join(name.split(".")[:2])
                packages[top] = packages.get(top, 0) + 1
            print(f"  {len(names)} modules:")
            for top, n in sorted(packages.items(), key=lambda item: -item[1]):
                print(f"    {n:4d}  {top}")


if __name__ == "__main__":
    main(sys.argv[1:])
