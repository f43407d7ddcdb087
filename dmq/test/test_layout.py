# -*- test-case-name: dmq.test.test_layout -*-
"""
The layout of doc/design.md, checked: imports run one way, and every module
has its place.
"""

from __future__ import annotations

import ast
import os
from typing import Dict, Iterator, Optional, Set, Tuple

from twisted.trial.unittest import SynchronousTestCase

import dmq

#: The layers of doc/design.md, bottom first.  A module (or every module of
#: a package) may import from lower layers only, and, inside a package, from
#: its siblings.  Keep this and the table in doc/design.md the same.
LAYERS: Tuple[Tuple[str, ...], ...] = (
    ("dmq", "dmq.sip", "dmq.jobqueue", "dmq.observers", "dmq.ratelimit", "dmq.jsonlog", "dmq.bearer", "dmq.ctlclient", "dmq.tls"),
    ("dmq.interfaces", "dmq.transaction", "dmq.nodeaddress", "dmq.ctl", "dmq.signing"),
    ("dmq.transport", "dmq.nodelistbody", "dmq.trust", "dmq.probewire"),
    ("dmq.nodelist", "dmq.ownbody", "dmq.stream"),
    ("dmq.forgotten", "dmq.liveness", "dmq.seeds", "dmq.discovery"),
    ("dmq.listmerge",),
    ("dmq.node",),
    ("dmq.sender", "dmq.probestate"),
    ("dmq.bus", "dmq.threaded"),
    ("dmq.notification", "dmq.metrics", "dmq.peers", "dmq.probe"),
    ("dmq.ping", "dmq.control"),
    ("dmq.settingvalues",),
    ("dmq.config",),
    ("dmq.service",),
    ("dmq.tap",),
)

_RANK: Dict[str, int] = {name: rank for rank, names in enumerate(LAYERS) for name in names}

#: The limits on a module's size that issue 9 set: none over 800 lines, at
#: most two over 600.
MAX_LINES = 800
LONG_LINES = 600
MAX_LONG = 2


def _modules() -> Iterator[Tuple[str, str]]:
    """
    Yield C{(dotted name, path)} for every module of C{dmq} but the tests.
    """
    root = os.path.dirname(os.path.abspath(dmq.__file__))
    top = os.path.dirname(root)
    for directory, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if d not in ("test", "__pycache__"))
        for filename in sorted(filenames):
            if not filename.endswith(".py"):
                continue
            path = os.path.join(directory, filename)
            dotted = os.path.relpath(path, top)[: -len(".py")].replace(os.sep, ".")
            if dotted.endswith(".__init__"):
                dotted = dotted[: -len(".__init__")]
            yield dotted, path


def _unit(module: str) -> Optional[str]:
    """
    The row of L{LAYERS} that C{module} belongs to: itself, or the closest
    package that has a row.
    """
    if module in ("dmq", "dmq._version"):
        # The package's own __init__, and the file of its version that
        # setup.py reads without importing dmq: one unit.
        return "dmq"
    parts = module.split(".")
    # The row "dmq" is the package's own __init__ only.
    for end in range(len(parts), 1, -1):
        candidate = ".".join(parts[:end])
        if candidate in _RANK:
            return candidate
    return None


def _imports(module: str, path: str) -> Set[str]:
    """
    The C{dmq} modules that C{module} imports, made absolute.
    """
    with open(path, encoding="utf-8") as f:
        tree = ast.parse(f.read(), path)
    package = module if path.endswith("__init__.py") else module.rpartition(".")[0]
    found: Set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                name = ".".join(base + ([node.module] if node.module else []))
            else:
                name = node.module or ""
            if name == "dmq":
                # "from dmq import sip" imports dmq.sip; "from dmq import
                # __version__" imports dmq itself.
                for alias in node.names:
                    full = "dmq." + alias.name
                    found.add(full if _unit(full) not in (None, "dmq") else "dmq")
            else:
                found.add(name)
    return {name for name in found if name == "dmq" or name.startswith("dmq.")}


class LayoutTests(SynchronousTestCase):
    """
    The code follows the layout that doc/design.md describes.
    """

    def test_everyModuleHasALayer(self) -> None:
        """
        Every module of C{dmq} belongs to a row of the table.
        """
        missing = [name for name, _ in _modules() if _unit(name) is None]
        self.assertEqual(missing, [], "add these to LAYERS and to doc/design.md")

    def test_importsRunOneWay(self) -> None:
        """
        No module imports from its own layer or above, except its siblings
        inside one package.
        """
        wrong = []
        for name, path in _modules():
            unit = _unit(name)
            if unit is None:
                continue
            for imported in _imports(name, path):
                target = _unit(imported)
                if target is None or target == unit:
                    continue
                if _RANK[target] >= _RANK[unit]:
                    wrong.append(f"{name} imports {imported}")
        self.assertEqual(wrong, [])

    def test_moduleSizes(self) -> None:
        """
        No module is over L{MAX_LINES} lines, and at most L{MAX_LONG} are
        over L{LONG_LINES}.
        """
        sizes = {}
        for name, path in _modules():
            with open(path, encoding="utf-8") as f:
                sizes[name] = sum(1 for _ in f)
        self.assertEqual({n: s for n, s in sizes.items() if s > MAX_LINES}, {})
        long = {n: s for n, s in sizes.items() if s > LONG_LINES}
        self.assertLessEqual(len(long), MAX_LONG, long)

    def test_upwardImportFound(self) -> None:
        """
        The check sees an upward import, relative or absolute.
        """
        self.assertEqual(_unit("dmq.sip.codec"), "dmq.sip")
        self.assertEqual(_unit("dmq.peers.htable.peer"), "dmq.peers")
        self.assertIsNone(_unit("dmq.nowhere"))
        path = os.path.join(self.mktemp() + ".py")
        with open(path, "w", encoding="utf-8") as f:
            f.write("from ..bus import DMQBus\nfrom dmq import tap\n")
        self.assertEqual(_imports("dmq.sip.codec", path), {"dmq.bus", "dmq.tap"})
