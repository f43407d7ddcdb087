# -*- test-case-name: dmq.test.test_control -*-
"""
The C{dmq.*} and C{system.*} RPC methods of a node: Kamailio's names,
parameters and answers (its reference, section 6.3), and ours, with the
checks of their arguments.  L{addDMQMethods} adds them to a node's
L{RPCMethods} table.
"""

from __future__ import annotations

from typing import Any, Callable, Dict, List, NoReturn, Tuple, TypeVar, Union

import attr
from twisted.internet.defer import Deferred
from twisted.python.failure import Failure

from dmq import sip
from dmq.bus import checkPeerId
from dmq.control.jsonrpc import APPLICATION_ERROR, INVALID_PARAMS, METHOD_NOT_FOUND, RPCMethods
from dmq.interfaces import RPCError
from dmq.node import Node, NodeError, NodeStatus, parseNodeAddress

__all__ = ["addDMQMethods"]

_T = TypeVar("_T")


def addDMQMethods(methods: RPCMethods, node: Any) -> None:
    """
    Add the C{dmq.*} and C{system.*} methods for C{node} to C{methods}.

    @param node: a L{dmq.tap.DMQNodeService}; its C{nodeManager} and C{bus}
        are used.
    """
    # node: Any, because DMQNodeService lives in dmq.tap, a layer above.
    dmq = _DMQMethods(node.nodeManager, node.bus)
    table: List[Tuple[str, Callable[..., Any], str]] = [
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

    def sendMessage(self, peer: str, node: str, body: str, content_type: str = "text/plain") -> Deferred[Dict[str, Any]]:
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
        return d.addCallback(_reply)

    def bcastMessage(self, peer: str, body: str, content_type: str = "text/plain") -> Deferred[List[Dict[str, Any]]]:
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

        def replies(results: Dict[Node, Union[sip.Response, Failure]]) -> List[Dict[str, Any]]:
            listed = []
            for target, outcome in results.items():
                entry: Dict[str, Any] = {"node": target.uri.toString()}
                if isinstance(outcome, Failure):
                    entry.update(code=None, reason=None, body="", error=outcome.getErrorMessage())
                else:
                    entry.update(_reply(outcome))
                listed.append(entry)
            return listed

        return d.addCallback(replies)

    def _send(self, send: Callable[[], Deferred[_T]]) -> Deferred[_T]:
        if not self._bus.running:
            raise RPCError(APPLICATION_ERROR, "The bus is not running")
        try:
            d = send()
        except ValueError as e:
            raise RPCError(APPLICATION_ERROR, str(e)) from None

        def notSent(failure: Failure) -> NoReturn:
            raise RPCError(APPLICATION_ERROR, f"Could not send: {failure.getErrorMessage()}")

        d.addErrback(notSent)
        return d

    def listPeers(self) -> List[Dict[str, str]]:
        return [
            {"peer_id": peer.peerId, "description": str(getattr(peer, "description", ""))}
            for peer in self._bus.peers
        ]
