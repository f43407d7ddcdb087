# -*- test-case-name: dmq.test.test_packaging -*-
"""
dmq's version, written once: C{dmq/__init__.py} imports it, and C{setup.py}
reads this file without importing C{dmq} (whose dependencies a fresh
machine does not have yet).
"""

__version__ = "0.1.0"
