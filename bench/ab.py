# -*- test-case-name: dmq.test.test_transport -*-
"""
Compare the in-process cost of a request (C{bench/inprocess.py}) between
two versions of the code, in one run: A and B take turns, so that whatever
else the machine does weighs on both alike.

Run it from the root of the repository::

    python bench/ab.py HEAD~1                 # HEAD~1 against the working tree
    python bench/ab.py main HEAD --turns 6    # two revisions
    python bench/ab.py /tmp/old-tree .        # two directories
    python bench/ab.py HEAD~1 -- --bare       # after --, inprocess.py's options

A revision is exported with C{git archive} into a temporary directory; a
directory is used as it is (C{.} is the working tree, uncommitted changes
included).  Each turn runs C{inprocess.py} of A, then of B (B first on odd
turns), each in a process of its own.  It prints every figure, then for
each side the best and the median over the turns of the best round's CPU
time per request, and B's best over A's.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
from typing import Dict, List, Sequence

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

_CPU = re.compile(r"CPU ([0-9.]+) best")


def checkout(what: str, scratch: str) -> str:
    """
    The directory of C{what}: itself when it is one, else the revision
    C{what} exported under C{scratch}.
    """
    if os.path.isdir(what):
        return os.path.abspath(what)
    target = os.path.join(scratch, re.sub(r"[^A-Za-z0-9]", "_", what))
    os.makedirs(target)
    archive = subprocess.run(
        ["git", "-C", ROOT, "archive", what], stdout=subprocess.PIPE, check=True
    ).stdout
    subprocess.run(["tar", "-x", "-C", target], input=archive, check=True)
    return target


def main(argv: Sequence[str]) -> None:
    parser = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    parser.add_argument("a", help="a revision or a directory: the baseline")
    parser.add_argument("b", nargs="?", default=".", help="the same, compared [the working tree]")
    parser.add_argument("--turns", type=int, default=4, help="runs of each side")
    parser.add_argument("--rounds", type=int, default=5, help="rounds of each run")
    parser.add_argument("--python", default=sys.executable, help="the interpreter")
    argv = list(argv)
    rest = argv[argv.index("--") + 1 :] if "--" in argv else []
    options = parser.parse_args(argv[: len(argv) - len(rest) - (1 if rest or "--" in argv else 0)])

    with tempfile.TemporaryDirectory(prefix="dmq-ab-") as scratch:
        trees = {"A": checkout(options.a, scratch), "B": checkout(options.b, scratch)}
        cpu: Dict[str, List[float]] = {"A": [], "B": []}
        for turn in range(options.turns):
            for side in ("A", "B") if turn % 2 == 0 else ("B", "A"):
                done = subprocess.run(
                    [options.python, os.path.join(trees[side], "bench", "inprocess.py"),
                     "--rounds", str(options.rounds), *rest],
                    cwd=trees[side],
                    stdout=subprocess.PIPE,
                    stderr=subprocess.STDOUT,
                    check=False,
                )
                out = done.stdout.decode("utf-8", "replace").strip()
                print(f"{side} {out}")
                found = _CPU.search(out)
                if done.returncode != 0 or found is None:
                    raise SystemExit(f"{side} failed")
                cpu[side].append(float(found.group(1)))
    for side in ("A", "B"):
        figures = sorted(cpu[side])
        print(
            f"{side} ({options.a if side == 'A' else options.b}): CPU µs/request best"
            f" {figures[0]:.1f}, median {figures[len(figures) // 2]:.1f} over {len(figures)} runs"
        )
    print(f"B/A (best): {min(cpu['B']) / min(cpu['A']):.3f}")


if __name__ == "__main__":
    main(sys.argv[1:])
