# -*- test-case-name: dmq.test.test_control -*-
"""
The control endpoint: JSON-RPC 2.0 over HTTP at C{POST /RPC}, shaped like
Kamailio's C{jsonrpcs} module and answering Kamailio's DMQ RPC names
(C{dmq.list_nodes}, C{dmq.remove}, ...), Prometheus metrics at
C{GET /metrics}, and a status page at C{GET /}.  It listens on loopback
unless told otherwise, and anywhere else only behind a bearer token
(L{dmq.control.guard}, L{dmq.bearer}).

Every node has an L{RPCMethods} table (L{dmq.tap.DMQNodeService.rpc}),
whether or not it serves it.  A peer adds its own methods there::

    node.rpc.addMethod("htable.sets", setString, "Set a string value: table key value")

A method takes its parameters by position or, under their Python names, by
name; returns a JSON value or a L{Deferred <twisted.internet.defer.Deferred>} of one; and refuses a call by
raising L{RPCError}, which is answered as Kamailio answers C{rpc->fault()}:
a JSON-RPC error with code C{500} (or the code given) and the message.

The parts: L{dmq.control.jsonrpc}, the method table and JSON-RPC itself;
L{dmq.control.listener}, the service that listens (and builds its HTTP server
on the first connection); L{dmq.control.endpoint}, the HTTP resources and
the service serving them, with the token and the bounds; L{dmq.control.guard}, where it may listen
without a token; L{dmq.control.status}, the status page;
L{dmq.control.methods}, the C{dmq.*} methods.
"""

from typing import Any

from dmq.control.jsonrpc import (
    APPLICATION_ERROR,
    INTERNAL_ERROR,
    INVALID_PARAMS,
    INVALID_REQUEST,
    JSONRPC,
    MAX_BATCH,
    METHOD_NOT_FOUND,
    PARSE_ERROR,
    RPCMethod,
    RPCMethods,
)
from dmq.control.methods import addDMQMethods
from dmq.interfaces import RPCError

# The HTTP side (dmq.control.endpoint, and with it twisted.web) is imported
# when one of its names is first asked for, so that a node that serves no
# control endpoint, yet has a method table, does not load an HTTP server.
_ENDPOINT_NAMES = frozenset(
    ["MAX_REQUEST", "MAX_CONNECTIONS", "IDLE_TIMEOUT", "REQUEST_TIMEOUT", "ControlResource", "ControlService"]
)


def __getattr__(name: str) -> Any:
    if name in _ENDPOINT_NAMES:
        from dmq.control import endpoint

        return getattr(endpoint, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "RPCError",
    "RPCMethod",
    "RPCMethods",
    "JSONRPC",
    "ControlResource",
    "ControlService",
    "addDMQMethods",
    "MAX_REQUEST",
    "MAX_BATCH",
    "MAX_CONNECTIONS",
    "IDLE_TIMEOUT",
    "REQUEST_TIMEOUT",
    "PARSE_ERROR",
    "INVALID_REQUEST",
    "METHOD_NOT_FOUND",
    "INVALID_PARAMS",
    "INTERNAL_ERROR",
    "APPLICATION_ERROR",
]
