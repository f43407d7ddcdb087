# -*- test-case-name: dmq.test.test_imports -*-
"""
What a node loads: the modules a node does not use are not imported, so
that they cost it no memory (see doc/performance.md, "Memory").

Each test runs a fresh interpreter, since this one has imported everything.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import List

from twisted.trial.unittest import SynchronousTestCase

import dmq

#: Loaded only by the nodes that use them: the control endpoint's HTTP
#: server, multi_notify's DNS client, --config's TOML parser, the endpoint
#: parsers of --control, the spelling hints of a bad config key, the
#: dialog and usrloc peers, and the metrics' Prometheus client.
OPTIONAL = [
    "dmq.peers.dialog",
    "dmq.peers.usrloc",
    "prometheus_client",
    "twisted.web.server",
    "twisted.names.dns",
    "tomllib",
    "tomli",
    "twisted.internet.endpoints",
    "difflib",
]

_BUILD = """
import json, sys
from dmq.tap import Options, makeService
options = Options()
options.parseOptions(json.loads(sys.argv[1]))
# The global reactor, as twistd's: the node is built, not started, so
# nothing listens.
makeService(options)
print(json.dumps(sorted(name for name in json.loads(sys.argv[2]) if name in sys.modules)))
"""


def _loaded(arguments: List[str]) -> List[str]:
    """
    Build a node from twistd's C{arguments} in a fresh interpreter and
    return which of L{OPTIONAL} it imported.
    """
    root = os.path.dirname(os.path.dirname(os.path.abspath(dmq.__file__)))
    done = subprocess.run(
        [sys.executable, "-c", _BUILD, json.dumps(arguments), json.dumps(OPTIONAL)],
        cwd=root,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        timeout=120,
    )
    if done.returncode != 0:
        raise AssertionError(done.stderr.decode("utf-8", "replace"))
    loaded: List[str] = json.loads(done.stdout)
    return loaded


class ImportTests(SynchronousTestCase):
    """
    A node imports the optional parts it is configured to use, and no others.
    """

    def test_plainNode(self) -> None:
        """
        A node with the htable peer and no control endpoint, config file or
        multi_notify loads none of them.
        """
        self.assertEqual(
            _loaded(
                [
                    "--server-address=sip:127.0.0.11:5060",
                    "--htable=kdmq=>size=8;autoexpire=0;dmqreplicate=1",
                ]
            ),
            [],
        )

    def test_controlEndpoint(self) -> None:
        """
        A node with the htable peer and a control endpoint (the node of
        C{bench/bus.py} and C{bench/rest.py}) loads the endpoint parsers,
        and nothing else: not the HTTP server before the first connection,
        nor the other peers, nor the Prometheus client before the first
        scrape.
        """
        self.assertEqual(
            _loaded(
                [
                    "--server-address=sip:127.0.0.11:5060",
                    "--htable=kdmq=>size=8;autoexpire=0;dmqreplicate=1",
                    "--control=tcp:5080:interface=127.0.0.11",
                ]
            ),
            ["twisted.internet.endpoints"],
        )

    def test_peers(self) -> None:
        """
        A node with the dialog and usrloc peers loads them, and without a
        control endpoint nothing else.
        """
        self.assertEqual(
            _loaded(["--server-address=sip:127.0.0.11:5060", "--dialog", "--usrloc"]),
            ["dmq.peers.dialog", "dmq.peers.usrloc"],
        )

    def test_usrlocLimits(self) -> None:
        """
        L{dmq.config}'s copies of the usrloc peer's id and limits, which
        spare a node without that peer its import, are the peer's own.
        """
        from dmq import config
        from dmq.peers import usrloc

        self.assertEqual(
            (config.USRLOC_PEER_ID, config.MAX_BATCH_CONTACTS, config.MAX_BATCH_SIZE),
            (usrloc.PEER_ID, usrloc.MAX_BATCH_CONTACTS, usrloc.MAX_BATCH_SIZE),
        )
