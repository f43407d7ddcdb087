"""
Packaging for dmq, a distributed message queue for Twisted programs that is
wire-compatible with Kamailio's DMQ module.
"""

import ast
import os

from setuptools import find_packages, setup


def readVersion():
    """
    The version, from dmq/_version.py, read without importing dmq (its
    dependencies may not be installed yet).
    """
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "dmq", "_version.py")
    with open(path, encoding="utf-8") as f:
        for node in ast.parse(f.read()).body:
            if isinstance(node, ast.Assign) and [t.id for t in node.targets if isinstance(t, ast.Name)] == [
                "__version__"
            ]:
                return ast.literal_eval(node.value)
    raise RuntimeError(f"no __version__ in {path}")


setup(
    name="dmq",
    version=readVersion(),
    description="A Kamailio-compatible distributed message queue (KDMQ over SIP) for Twisted",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    license="MIT",
    # 3.9 for PyPy: Debian 12's pypy3 (PyPy 7.3.11) is Python 3.9.
    python_requires=">=3.9",
    classifiers=[
        "Framework :: Twisted",
        "Programming Language :: Python :: 3",
        "Programming Language :: Python :: Implementation :: CPython",
        "Programming Language :: Python :: Implementation :: PyPy",
    ],
    packages=find_packages(include=["dmq", "dmq.*"]) + ["twisted.plugins"],
    package_data={
        "dmq": ["py.typed"],
        "dmq.test": ["data/*", "data/*/*"],
        "twisted": ["plugins/dmq_plugin.py"],
    },
    install_requires=[
        "Twisted>=23.10",
        "attrs>=23.2",
        "zope.interface>=6.0",
        "prometheus_client>=0.17",
        'tomli>=1.1; python_version < "3.11"',
    ],
    extras_require={
        # KDMQ over TLS (dmq.stream): pyOpenSSL and service_identity.
        # PyPy 3.9 has no wheel of cryptography 44 or later: pinned there so
        # that pip does not try to build one (it needs Rust and the network).
        # pyOpenSSL 25.2 and later need a newer cryptography: pinned too.
        "tls": [
            "twisted[tls]",
            'cryptography<44; platform_python_implementation == "PyPy"',
            'pyOpenSSL<25.2; platform_python_implementation == "PyPy"',
        ],
        "test": [
            "hypothesis>=6.80",
            "twisted[tls]",
            # One requirement per interpreter: given both, an older pip
            # fetches the newest cryptography's metadata before it applies
            # the pin, and on PyPy that means building it from source.
            'cryptography; platform_python_implementation != "PyPy"',
            'cryptography<44; platform_python_implementation == "PyPy"',
            'pyOpenSSL<25.2; platform_python_implementation == "PyPy"',
        ],
        # The type check of .ci/run (mypy --strict, config in pyproject.toml),
        # under CPython: mypy 2.x needs Python 3.10, and mypy-zope follows
        # mypy's releases closely, hence the pins.
        "typecheck": [
            'mypy>=2.4,<2.5; python_version >= "3.10"',
            'mypy-zope>=1.0.17,<1.1; python_version >= "3.10"',
        ],
        # API documentation: pydoctor --config=pyproject.toml (see .ci/run).
        "doc": ["pydoctor>=23.9"],
    },
    entry_points={"console_scripts": ["dmqctl = dmq.ctl:main"]},
)
