# -*- test-case-name: dmq.test.test_control -*-
"""
The control endpoint: JSON-RPC 2.0 over HTTP at C{POST /RPC}, shaped like
Kamailio's C{jsonrpcs} module and answering Kamailio's DMQ RPC names
(C{dmq.list_nodes}, C{dmq.remove}, ...), and Prometheus metrics at
C{GET /metrics}.

Every node has an L{RPCMethods} table (L{dmq.tap.DMQNodeService.rpc}),
whether or not it serves it.  A peer adds its own methods there::

    node.rpc.addMethod("htable.sets", setString, "Set a string value: table key value")

A method takes its parameters by position or, under their Python names, by
name; returns a JSON value or a L{Deferred} of one; and refuses a call by
raising L{RPCError}, which is answered as Kamailio answers C{rpc->fault()}:
a JSON-RPC error with code C{500} (or the code given) and the message.
"""

from __future__ import annotations

import inspect
import ipaddress
import json
import math
from typing import Any, Callable, Dict, List, Optional, Tuple, Union

import attr
from twisted.application import service
from twisted.internet.address import IPv4Address, IPv6Address
from twisted.internet.defer import CancelledError, Deferred, DeferredList, fail, maybeDeferred, succeed
from twisted.internet.interfaces import IStreamServerEndpoint
from twisted.logger import Logger
from twisted.protocols.policies import WrappingFactory
from twisted.python.failure import Failure
from twisted.web import resource, server

from dmq import sip
from dmq.bus import checkPeerId
from dmq.interfaces import RPCError
from dmq.node import NodeError, NodeStatus, parseNodeAddress

__all__ = [
    "RPCError",
    "RPCMethods",
    "JSONRPC",
    "ControlResource",
    "ControlService",
    "addDMQMethods",
    "PARSE_ERROR",
    "INVALID_REQUEST",
    "METHOD_NOT_FOUND",
    "INVALID_PARAMS",
    "INTERNAL_ERROR",
    "APPLICATION_ERROR",
]

PARSE_ERROR = -32700
INVALID_REQUEST = -32600
METHOD_NOT_FOUND = -32601
INVALID_PARAMS = -32602
INTERNAL_ERROR = -32603
APPLICATION_ERROR = 500
"""
The code of a refused call: what Kamailio's modules pass to C{rpc->fault()}.
"""

MAX_REQUEST = 1024 * 1024
"""
The largest JSON-RPC request body read, in bytes.
"""


@attr.frozen
class RPCMethod:
    """
    One entry of an L{RPCMethods} table.
    """

    name: str
    function: Callable[..., Any]
    help: str
    signature: inspect.Signature

    def usage(self) -> str:
        """
        The method and its parameters, as C{dmq.send_message peer node body [content_type]}.
        """
        words = [self.name]
        for parameter in self.signature.parameters.values():
            if parameter.kind is parameter.VAR_POSITIONAL:
                words.append(f"[{parameter.name}...]")
            elif parameter.default is parameter.empty:
                words.append(parameter.name)
            else:
                words.append(f"[{parameter.name}]")
        return " ".join(words)


class RPCMethods:
    """
    The RPC methods of one node, by name.
    """

    def __init__(self) -> None:
        self._methods: Dict[str, RPCMethod] = {}

    def addMethod(self, name: str, function: Callable[..., Any], help: str = "") -> None:
        """
        Add a method.

        @param name: its RPC name, by Kamailio's custom C{module.action}
            (C{htable.sets}).
        @param function: called with the request's parameters, by position
            (a JSON array) or by name (a JSON object, keys matching its
            parameter names).  It returns a JSON-serialisable value or a
            L{Deferred} firing with one, and raises L{RPCError} (or fails
            with one) to refuse the call.  Any other exception is a bug: it is
            logged with its traceback and answered C{-32603}.
        @param help: one line for C{system.methodHelp}.
        @raise ValueError: if a method of that name exists.
        """
        if not name or name in self._methods:
            raise ValueError(f"an RPC method named {name!r} already exists" if name else "an RPC method needs a name")
        self._methods[name] = RPCMethod(name, function, help, inspect.signature(function))

    def removeMethod(self, name: str) -> None:
        """
        Remove the method C{name}.

        @raise KeyError: if there is none.
        """
        del self._methods[name]

    def names(self) -> List[str]:
        """
        The method names, sorted.
        """
        return sorted(self._methods)

    def get(self, name: str) -> Optional[RPCMethod]:
        return self._methods.get(name)

    def call(self, name: str, params: Union[None, List[Any], Dict[str, Any]]) -> Deferred:
        """
        Call method C{name} with C{params}.

        @return: a L{Deferred} firing with the result, or failing with an
            L{RPCError} (unknown method, parameters that do not fit, or the
            method's own refusal) or, for a bug, any other exception.
        """
        method = self._methods.get(name)
        if method is None:
            return fail(RPCError(METHOD_NOT_FOUND, f"Method not found: {name}"))
        try:
            if isinstance(params, dict):
                bound = method.signature.bind(**params)
            else:
                bound = method.signature.bind(*(params or ()))
        except TypeError as e:
            return fail(RPCError(INVALID_PARAMS, f"Invalid params: {e} (usage: {method.usage()})"))
        return maybeDeferred(method.function, *bound.args, **bound.kwargs)


class JSONRPC:
    """
    JSON-RPC 2.0 requests to an L{RPCMethods} table, transport aside: bytes
    in, bytes out.  Single calls and batches; a call without an C{id} is a
    notification and gets no answer.
    """

    _log = Logger()

    def __init__(self, methods: RPCMethods) -> None:
        self._methods = methods

    def handle(self, data: bytes) -> Deferred:
        """
        Answer one request body.

        @return: a L{Deferred} that fires with the answer's bytes, or with
            C{None} when there is nothing to answer (only notifications).  It
            never fails.
        """
        try:
            message = json.loads(data, parse_constant=_notJSON, parse_float=_finite)
        except (ValueError, RecursionError) as e:
            self._log.warn("Control: JSON-RPC request is not JSON: {error}", error=str(e))
            return succeed(_error(None, PARSE_ERROR, f"Parse error: {e}"))
        if not isinstance(message, list):
            return self._call(message)
        if not message:
            return succeed(_error(None, INVALID_REQUEST, "Invalid Request: empty batch"))
        d = DeferredList([self._call(one) for one in message])
        d.addCallback(_batch)
        return d

    def _call(self, message: object) -> Deferred:
        if not isinstance(message, dict):
            return self._invalid(None, "Invalid Request: a call is a JSON object")
        callId = message.get("id")
        if callId is not None and (
            isinstance(callId, bool) or not isinstance(callId, (str, int, float))
        ):
            return self._invalid(None, "Invalid Request: id must be a string, a number or null")
        if message.get("jsonrpc", "2.0") != "2.0":
            return self._invalid(callId, 'Invalid Request: jsonrpc must be "2.0"')
        method = message.get("method")
        if not isinstance(method, str):
            return self._invalid(callId, "Invalid Request: method must be a string")
        params = message.get("params")
        if params is not None and not isinstance(params, (list, dict)):
            d = fail(RPCError(INVALID_PARAMS, "Invalid params: params must be an array or an object"))
        else:
            d = self._methods.call(method, params)
        d.addCallbacks(
            lambda result: _encode({"jsonrpc": "2.0", "result": result, "id": callId}),
            self._failed,
            errbackArgs=(method, callId),
        )
        # A result that is not JSON is the method's bug too.
        d.addErrback(self._failed, method, callId)
        if "id" not in message:
            d.addCallback(lambda _: None)
        return d

    def _invalid(self, callId: object, message: str) -> Deferred:
        self._log.warn("Control: {message}", message=message)
        return succeed(_error(callId, INVALID_REQUEST, message))

    def _failed(self, failure: Failure, method: str, callId: object) -> bytes:
        if failure.check(RPCError):
            error = failure.value
            self._log.info(
                "Control: {method} refused: {message}", method=method, message=error.message
            )
            return _error(callId, error.code, error.message)
        self._log.failure("Control: {method} failed", failure, method=method)
        return _error(callId, INTERNAL_ERROR, f"Internal error: {failure.getErrorMessage()}")


def _notJSON(name: str) -> object:
    # Python reads NaN and Infinity, which JSON does not have; answering
    # them in an id would make the answer not JSON either.
    raise ValueError(f"{name} is not JSON")


def _finite(text: str) -> float:
    number = float(text)
    if not math.isfinite(number):
        raise ValueError(f"{text} is out of the range of a double")
    return number


def _batch(results: List[Tuple[bool, Optional[bytes]]]) -> Optional[bytes]:
    answers = [answer for _, answer in results if answer is not None]
    return b"[" + b",".join(answers) + b"]" if answers else None


def _encode(response: Dict[str, Any]) -> bytes:
    try:
        return json.dumps(
            response, separators=(",", ":"), ensure_ascii=False, allow_nan=False
        ).encode("utf-8")
    except (TypeError, ValueError) as e:
        raise TypeError(f"the result is not JSON: {e}") from None


def _error(callId: object, code: int, message: str) -> bytes:
    return _encode({"jsonrpc": "2.0", "error": {"code": code, "message": message}, "id": callId})


class _RPCResource(resource.Resource):
    """
    C{POST /RPC}: one JSON-RPC request (or batch) per HTTP request.
    """

    isLeaf = True

    def __init__(self, methods: RPCMethods) -> None:
        resource.Resource.__init__(self)
        self._jsonrpc = JSONRPC(methods)

    def render_POST(self, request: server.Request) -> object:
        data = request.content.read(MAX_REQUEST + 1)
        if len(data) > MAX_REQUEST:
            d = succeed(_error(None, INVALID_REQUEST, f"Invalid Request: larger than {MAX_REQUEST} bytes"))
        else:
            d = self._jsonrpc.handle(data)
        gone: List[Failure] = []
        request.notifyFinish().addErrback(gone.append)

        def answer(body: Optional[bytes]) -> None:
            if gone:
                return
            if body is None:
                request.setResponseCode(204)
            else:
                request.setHeader(b"content-type", b"application/json")
                request.write(body + b"\n")
            request.finish()

        d.addCallback(answer)
        return server.NOT_DONE_YET

    def render_GET(self, request: server.Request) -> bytes:
        request.setResponseCode(405)
        request.setHeader(b"allow", b"POST")
        request.setHeader(b"content-type", b"text/plain; charset=utf-8")
        return b"POST a JSON-RPC 2.0 request here.\n"


class _MetricsResource(resource.Resource):
    """
    C{GET /metrics}: the Prometheus text exposition of a registry.
    """

    isLeaf = True

    def __init__(self, registry) -> None:
        resource.Resource.__init__(self)
        self._registry = registry

    def render_GET(self, request: server.Request) -> bytes:
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        request.setHeader(b"content-type", CONTENT_TYPE_LATEST.encode("ascii"))
        return generate_latest(self._registry)


class ControlResource(resource.Resource):
    """
    The root of the control endpoint: C{/RPC} and C{/metrics}.
    """

    def __init__(self, methods: RPCMethods, registry) -> None:
        resource.Resource.__init__(self)
        self.putChild(b"RPC", _RPCResource(methods))
        self.putChild(b"metrics", _MetricsResource(registry))


class _Connections(WrappingFactory):
    """
    A factory that knows its open connections, to close them on stop.
    """

    def __init__(self, wrappedFactory) -> None:
        WrappingFactory.__init__(self, wrappedFactory)
        self._whenEmpty: List[Deferred] = []

    def unregisterProtocol(self, p) -> None:
        WrappingFactory.unregisterProtocol(self, p)
        if not self.protocols:
            waiting, self._whenEmpty = self._whenEmpty, []
            for d in waiting:
                d.callback(None)

    def closeAll(self) -> Deferred:
        """
        Close every connection.

        @return: a L{Deferred} that fires when none is left.
        """
        if not self.protocols:
            return succeed(None)
        d: Deferred = Deferred()
        self._whenEmpty.append(d)
        for protocol in list(self.protocols):
            protocol.transport.abortConnection()
        return d


class ControlService(service.Service):
    """
    Serve a L{ControlResource} on a stream server endpoint.

    A listening address that is not a loopback address is logged as a
    warning: the endpoint has no authentication, and whoever reaches it can
    change the node list and send on the bus.

    @ivar port: the listening port once listening, else C{None}.
    """

    _log = Logger()

    def __init__(self, endpoint: IStreamServerEndpoint, root: resource.Resource, description: str = "") -> None:
        self._endpoint = endpoint
        site = server.Site(root)
        site.noisy = False
        self._factory = _Connections(site)
        self._factory.noisy = False
        self._listening: Optional[Deferred] = None
        self.description = description
        self.port = None

    def startService(self) -> None:
        """
        Listen.  A failure to listen that is known at once (the port is
        taken) is raised, so that a node does not start without the control
        endpoint it was asked for.
        """
        service.Service.startService(self)
        synchronous = True
        failures: List[Failure] = []

        def failed(failure: Failure) -> None:
            self._listening = None
            if synchronous:
                failures.append(failure)
            else:
                self._cannotListen(failure)

        self._listening = self._endpoint.listen(self._factory)
        self._listening.addCallbacks(self._listen, failed)
        synchronous = False
        if failures:
            service.Service.stopService(self)
            failures[0].raiseException()

    def _listen(self, port) -> None:
        self._listening = None
        self.port = port
        address = port.getHost()
        host = getattr(address, "host", None)
        self._log.info(
            "Control endpoint {endpoint} listening on {address}: POST /RPC, GET /metrics",
            endpoint=self.description,
            address=_describe(address),
        )
        if host is not None and not _isLoopback(host):
            self._log.warn(
                "Control endpoint {endpoint} listens on {host}, not a loopback address: "
                "anyone who reaches it can change the node list and send on the bus",
                endpoint=self.description,
                host=host,
            )

    def _cannotListen(self, failure: Failure) -> None:
        if failure.check(CancelledError):
            # Stopped before listening.
            return
        self._log.error(
            "Control endpoint {endpoint} cannot listen: {error}",
            endpoint=self.description,
            error=failure.getErrorMessage(),
        )

    def stopService(self) -> Deferred:
        """
        Stop listening and close the open connections.

        @return: a L{Deferred} that fires when the port and the connections
            are gone.
        """
        service.Service.stopService(self)
        if self._listening is not None:
            self._listening.cancel()
        port, self.port = self.port, None
        stopped = maybeDeferred(port.stopListening) if port is not None else succeed(None)
        return DeferredList([stopped, self._factory.closeAll()], consumeErrors=True)


def _isLoopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        # "": every interface.
        return False


def _describe(address: object) -> str:
    if isinstance(address, IPv6Address):
        return f"[{address.host}]:{address.port}"
    if isinstance(address, IPv4Address):
        return f"{address.host}:{address.port}"
    return str(address)


# The DMQ methods: Kamailio's names, parameters and answers (its reference,
# section 6.3), and ours.


def addDMQMethods(methods: RPCMethods, node) -> None:
    """
    Add the C{dmq.*} and C{system.*} methods for C{node} to C{methods}.

    @param node: a L{dmq.tap.DMQNodeService}; its C{nodeManager} and C{bus}
        are used.
    """
    dmq = _DMQMethods(node.nodeManager, node.bus)
    table = [
        ("dmq.list_nodes", dmq.listNodes, "Print all nodes"),
        ("dmq.remove", dmq.remove, "Remove a DMQ node: uri"),
        ("dmq.add", dmq.add, "Add a DMQ node: uri (its ;status=, or active)"),
        ("dmq.change_status", dmq.changeStatus, "Set a node's status: uri active|not_active|disabled"),
        ("dmq.send_message", dmq.sendMessage, "Send a KDMQ request to one node and return its reply: peer node body [content_type]"),
        ("dmq.bcast_message", dmq.bcastMessage, "Send a KDMQ request to every active node and return their replies: peer body [content_type]"),
        ("dmq.list_peers", dmq.listPeers, "List the peers registered on this node"),
        ("system.listMethods", methods.names, "List the RPC methods"),
        ("system.methodHelp", lambda method: _methodHelp(methods, method), "Print the help of an RPC method: method"),
    ]
    for name, function, help in table:
        methods.addMethod(name, function, help)


def _methodHelp(methods: RPCMethods, name: str) -> str:
    method = methods.get(name) if isinstance(name, str) else None
    if method is None:
        raise RPCError(METHOD_NOT_FOUND, f"Method not found: {name}")
    return f"{method.usage()}: {method.help}" if method.help else method.usage()


def _text(name: str, value: object) -> str:
    if not isinstance(value, str):
        raise RPCError(INVALID_PARAMS, f"Invalid params: {name} must be a string")
    return value


def _peerId(value: object) -> str:
    try:
        return checkPeerId(_text("peer", value))
    except ValueError as e:
        raise RPCError(APPLICATION_ERROR, f"Invalid peer: {e}") from None


def _contentType(value: object) -> str:
    text = _text("content_type", value)
    if not sip.isHeaderValue(text):
        raise RPCError(INVALID_PARAMS, "Invalid params: content_type must be one non-empty line")
    return text


def _uri(value: object, name: str = "uri") -> sip.URI:
    text = _text(name, value)
    try:
        return sip.parseURI(text)
    except sip.SIPParseError as e:
        raise RPCError(APPLICATION_ERROR, f"{text!r} is not a SIP URI: {e.reason}") from None


def _reply(response: sip.Response) -> Dict[str, Any]:
    return {
        "code": response.code,
        "reason": response.reason,
        "body": response.body.decode("utf-8", "replace"),
        "content_type": response.header("Content-Type") or "",
    }


@attr.define
class _DMQMethods:
    _nodeManager: Any
    _bus: Any

    def listNodes(self) -> List[Dict[str, Any]]:
        """
        Kamailio's C{dmq.list_nodes}: newest first, ourselves last, with its
        field names and types (the port as text, C{local} as 0 or 1), then
        ours: C{uri}.
        """
        listed = []
        for node in reversed(self._nodeManager.nodes()):
            uri = node.uri
            listed.append(
                {
                    "host": uri.host,
                    "port": "" if uri.port is None else str(uri.port),
                    "proto": uri.transport or "*",
                    "resolved_ip": node.resolvedIP or "",
                    "status": node.status.value,
                    "last_notification": int(node.lastNotification or 0),
                    "local": int(node.local),
                    "fail_count": node.failCount,
                    "uri": uri.toString(),
                }
            )
        return listed

    def remove(self, uri: str) -> str:
        """
        Kamailio's C{dmq.remove}: the same answer whether or not a node
        matched.
        """
        try:
            self._nodeManager.remove(_uri(uri))
        except NodeError as e:
            raise RPCError(APPLICATION_ERROR, str(e)) from None
        return "Ok. DMQ node removed."

    def add(self, uri: str) -> str:
        """
        Kamailio's C{dmq.add}, for a node we can talk to (see
        L{parseNodeAddress}) other than ourselves.
        """
        try:
            address = parseNodeAddress(_text("uri", uri))
        except ValueError as e:
            raise RPCError(APPLICATION_ERROR, str(e)) from None
        found = self._nodeManager.find(address)
        if found is not None and found.local:
            raise RPCError(APPLICATION_ERROR, "Cannot add the local node")
        try:
            self._nodeManager.add(address)
        except (NodeError, ValueError) as e:
            raise RPCError(APPLICATION_ERROR, str(e)) from None
        return "Ok. DMQ node added."

    def changeStatus(self, uri: str, status: str) -> str:
        try:
            newStatus = NodeStatus.fromString(_text("status", status))
        except ValueError:
            raise RPCError(
                APPLICATION_ERROR,
                f"Invalid status {status!r}: expected active, not_active or disabled"
            ) from None
        try:
            self._nodeManager.changeStatus(_uri(uri), newStatus)
        except NodeError as e:
            raise RPCError(APPLICATION_ERROR, str(e)) from None
        return "Ok. DMQ node status changed."

    def sendMessage(self, peer: str, node: str, body: str, content_type: str = "text/plain") -> Deferred:
        """
        Send to one known node, as Kamailio's C{dmq_send_message()} script
        function, and answer its reply.
        """
        target = self._nodeManager.find(_uri(node, "node"))
        if target is None:
            raise RPCError(APPLICATION_ERROR, f"Node not found: {node}")
        if target.local:
            raise RPCError(APPLICATION_ERROR, "Cannot send to the local node")
        d = self._send(
            lambda: self._bus.send(
                _peerId(peer),
                _text("body", body).encode("utf-8"),
                target,
                contentType=_contentType(content_type),
            )
        )
        d.addCallback(_reply)
        return d

    def bcastMessage(self, peer: str, body: str, content_type: str = "text/plain") -> Deferred:
        """
        Send to every active node, as Kamailio's C{dmq_bcast_message()}
        script function, and answer each node's reply (or why none came).
        """
        d = self._send(
            lambda: self._bus.broadcast(
                _peerId(peer),
                _text("body", body).encode("utf-8"),
                contentType=_contentType(content_type),
            )
        )

        def replies(results) -> List[Dict[str, Any]]:
            listed = []
            for target, outcome in results.items():
                entry: Dict[str, Any] = {"node": target.uri.toString()}
                if isinstance(outcome, Failure):
                    entry.update(code=None, reason=None, body="", error=outcome.getErrorMessage())
                else:
                    entry.update(_reply(outcome))
                listed.append(entry)
            return listed

        d.addCallback(replies)
        return d

    def _send(self, send: Callable[[], Deferred]) -> Deferred:
        if not self._bus.running:
            raise RPCError(APPLICATION_ERROR, "The bus is not running")
        try:
            d = send()
        except ValueError as e:
            raise RPCError(APPLICATION_ERROR, str(e)) from None

        def notSent(failure: Failure) -> None:
            raise RPCError(APPLICATION_ERROR, f"Could not send: {failure.getErrorMessage()}")

        d.addErrback(notSent)
        return d

    def listPeers(self) -> List[Dict[str, str]]:
        return [
            {"peer_id": peer.peerId, "description": str(getattr(peer, "description", ""))}
            for peer in self._bus.peers
        ]
