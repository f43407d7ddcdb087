# -*- test-case-name: dmq.test.test_packaging -*-
"""
Packaging: one version, a build system, type information.
"""

from __future__ import annotations

import os
import subprocess
import sys

from twisted.trial.unittest import SkipTest, SynchronousTestCase

import dmq
from dmq import _version

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(dmq.__file__)))


def _checkout() -> str:
    if not os.path.exists(os.path.join(ROOT, "setup.py")):
        raise SkipTest("not run from a checkout: no setup.py beside dmq/")
    return ROOT


class VersionTests(SynchronousTestCase):
    """
    The version is written once, in C{dmq/_version.py}.
    """

    def test_package(self) -> None:
        """
        C{dmq.__version__} is C{dmq._version.__version__}.
        """
        self.assertIs(dmq.__version__, _version.__version__)

    def test_setup(self) -> None:
        """
        C{setup.py} reads the same version, without importing C{dmq}.
        """
        root = _checkout()
        done = subprocess.run(
            [sys.executable, "-c",
             "import sys, runpy, setuptools; sys.argv = ['setup.py', '--version']; "
             "runpy.run_path('setup.py', run_name='__main__'); "
             "assert 'dmq' not in sys.modules, 'setup.py imported dmq'"],
            cwd=root, capture_output=True, text=True, timeout=60,
        )
        self.assertEqual(done.returncode, 0, done.stderr)
        self.assertEqual(done.stdout.strip().splitlines()[-1], dmq.__version__)


class MetadataTests(SynchronousTestCase):
    """
    C{pyproject.toml} and C{py.typed}.
    """

    def test_buildSystem(self) -> None:
        """
        C{pyproject.toml} names setuptools as the build backend.
        """
        try:
            import tomllib
        except ModuleNotFoundError:  # Python 3.9 and 3.10
            import tomli as tomllib  # type: ignore[no-redef]
        with open(os.path.join(_checkout(), "pyproject.toml"), "rb") as f:
            project = tomllib.load(f)
        self.assertEqual(project["build-system"]["build-backend"], "setuptools.build_meta")
        self.assertIn("setuptools>=61", project["build-system"]["requires"])

    def test_typed(self) -> None:
        """
        C{dmq} is marked as typed (PEP 561), and C{setup.py} ships the marker.
        """
        self.assertTrue(os.path.exists(os.path.join(os.path.dirname(dmq.__file__), "py.typed")))
        with open(os.path.join(_checkout(), "setup.py"), encoding="utf-8") as f:
            self.assertIn('"dmq": ["py.typed"]', f.read())
