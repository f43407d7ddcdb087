# -*- test-case-name: dmq.test.test_bus -*-
"""
The two interfaces a Twisted program needs to use dmq: L{IDMQPeer}, which it
implements to receive the messages of one channel, and L{IDMQBus}, which it
calls to register peers and to send; and L{INodeObserver}, which the bus
implements to hear from the node manager of nodes coming and going.
"""

from __future__ import annotations

from typing import Any, Dict, List, Sequence, Tuple, Union

import attr
from twisted.internet.defer import Deferred
from twisted.python.failure import Failure
from zope.interface import Attribute, Interface

from dmq.sip import Request, Response, isHeaderValue

__all__ = ["IDMQPeer", "IDMQBus", "INodeObserver", "PeerResponse", "OK", "RPCError"]


@attr.frozen
class PeerResponse:
    """
    What a peer answers to one KDMQ request: the final SIP reply.

    @ivar code: the status code, 200 to 699.
    @ivar reason: the reason phrase; it must not be empty.
    @ivar body: the reply body, or C{b""}.
    @ivar contentType: the body's Content-Type; required when C{body} is
        not empty.
    """

    code: int
    reason: str
    body: bytes = b""
    contentType: str | None = None

    def __attrs_post_init__(self) -> None:
        if not isinstance(self.code, int) or isinstance(self.code, bool):
            raise TypeError(f"the code is an int, not {self.code!r}")
        if not isinstance(self.body, bytes):
            raise TypeError(f"the body is bytes, not {type(self.body).__name__}")
        if not isinstance(self.reason, str):
            raise TypeError(f"the reason is a str, not {type(self.reason).__name__}")
        if not 200 <= self.code <= 699:
            raise ValueError(f"a peer must answer with a final code, not {self.code}")
        if not self.reason or "\r" in self.reason or "\n" in self.reason:
            raise ValueError("a peer response needs a one-line reason phrase")
        if self.body and not self.contentType:
            raise ValueError("a peer response with a body needs a content type")
        if self.contentType is not None and not isHeaderValue(self.contentType):
            raise ValueError(f"not a one-line content type: {self.contentType!r}")


OK = PeerResponse(200, "OK")
"""
C{200 OK} without a body, the answer of a peer that took a request: one
shared instance, since a L{PeerResponse} cannot change (and need not be
checked again each time).
"""


#: A L{dmq.nodelist.Node}.  That module is in a layer above this one, and the
#: layout test counts imports under TYPE_CHECKING too, so the interfaces name
#: the type in their docstrings and leave it to the implementers here.
_Node = Any


class RPCError(Exception):
    """
    A control RPC method refused a call, as Kamailio's C{rpc->fault(ctx, code,
    message)} does; the control endpoint answers it as a JSON-RPC error with
    this code and message.  Peers that offer RPC methods raise it.

    @ivar code: the error code: 500 as Kamailio's modules mostly use, another
        HTTP-like code, or a JSON-RPC one.
    @ivar message: what is wrong, for the caller.
    """

    def __init__(self, code: int, message: str) -> None:
        Exception.__init__(self, code, message)
        self.code = code
        self.message = message


class IDMQPeer(Interface):
    """
    A named handler of KDMQ messages: one channel of the bus (C{htable},
    C{usrloc}, your own).  Register it with L{IDMQBus.registerPeer}.

    Only members reach a peer: a request whose source address is not an
    active node's or a seed's is answered C{403} by the bus, unless the peer
    has an attribute C{acceptsStrangers} that is true (optional, read once
    at registration; the notification peer has it, for the join).  Such a
    peer may also have a method C{messageReceivedFrom(request, node,
    source)}, which the bus then calls instead of L{messageReceived} with the
    C{(host, port)} the request came from (doc/security.md).
    """

    peerId = Attribute(
        "The channel name, a SIP user part such as C{'htable'}. Requests are "
        "dispatched on the Request-URI user, and every node of the bus must use "
        "the same name for the same channel."
    )

    description = Attribute("A short description, for listings.")

    def messageReceived(
        request: Request, node: _Node | None
    ) -> PeerResponse | Deferred[PeerResponse]:
        """
        A KDMQ request for this peer arrived.  It is handed over once, even
        when the sender retransmits it.

        @param request: the request.
        @type request: L{dmq.sip.Request}

        @param node: the sending node, found by the request's source address
            (an active node or a seed there: Kamailio's C{dmq_is_from_node}),
            never by its From URI; C{None} only for a peer that accepts
            strangers.
        @type node: L{dmq.nodelist.Node} or C{None}

        @return: a L{PeerResponse}, or a L{Deferred <twisted.internet.defer.Deferred>} that fires with one.  An
            exception or a failed Deferred is answered C{500}; so is a Deferred
            that has not fired within the bus's handler timeout.
        """

    def nodeAdded(node: _Node) -> object:
        """
        A node became active on the bus: the hook to bring it up to date (sync
        on join).  Called once each time a remote node becomes active, never
        for the local node.  The return value is ignored; exceptions are
        logged.

        @type node: L{dmq.nodelist.Node}
        """


class IDMQBus(Interface):
    """
    A DMQ bus as seen from one node: the peers registered here, the nodes
    known, and the ways to send.
    """

    localNode = Attribute("The L{dmq.nodelist.Node} of this process.")

    def nodes() -> List[_Node]:
        """
        @return: every node this node knows, the local one first.
        @rtype: C{list} of L{dmq.nodelist.Node}
        """

    def registerPeer(peer: IDMQPeer) -> None:
        """
        Register an L{IDMQPeer}.

        @raise ValueError: when a peer with the same C{peerId} is registered.
        """

    def unregisterPeer(peerId: str) -> None:
        """
        Unregister the peer named C{peerId}; requests for it then get C{404}.

        @raise KeyError: when no such peer is registered.
        """

    def send(
        peerId: str, body: bytes, node: _Node, contentType: str = "text/plain", maxForwards: int = 1
    ) -> Deferred[Response]:
        """
        Send one KDMQ request to one node.

        @param peerId: the channel; the remote node dispatches on it.
        @param body: the body, C{bytes}.
        @param node: the target L{dmq.nodelist.Node}.
        @param maxForwards: the Max-Forwards value, at least 1.

        @return: a L{Deferred <twisted.internet.defer.Deferred>} that fires with the final L{dmq.sip.Response}
            once the transaction has ended: the node's reply, or a locally made
            C{408} when it never answered (after Timer F, 32 s by default), or
            at once when it cannot be reached at all (C{408 Unreachable
            Address}: say, an IPv6 node from an IPv4 socket).  It fails only
            when the request could not be sent to any node (the bus is stopped
            or full, or the request does not fit in one datagram:
            L{dmq.transaction.MessageTooLarge}).

        @raise ValueError: for a C{maxForwards} below 1.
        """

    def broadcast(
        peerId: str,
        body: bytes,
        contentType: str = "text/plain",
        exclude: _Node | Sequence[_Node] | None = None,
        maxForwards: int = 1,
    ) -> Deferred[Dict[_Node, Union[Response, Failure]]]:
        """
        Send one KDMQ request to every active node but the local one and
        C{exclude}.

        @param exclude: a L{dmq.nodelist.Node} or a sequence of them to leave out.

        @return: a L{Deferred <twisted.internet.defer.Deferred>} that fires, once every transaction has ended,
            with a C{dict} mapping each target L{dmq.nodelist.Node} to its final
            L{dmq.sip.Response} (C{408} for those that never answered), or to
            the L{Failure <twisted.python.failure.Failure>} that kept the request from being sent.
        """

    def handleRequest(request: Request, source: Tuple[str, int]) -> Deferred[Response]:
        """
        Handle a KDMQ request that arrived some other way, as Kamailio's
        C{dmq_handle_message} does: for a host SIP application that owns the
        socket.

        @param request: a L{dmq.sip.Request} with method C{KDMQ}.
        @param source: the C{(host, port)} it came from.

        @return: a L{Deferred <twisted.internet.defer.Deferred>} that fires with the L{dmq.sip.Response} to send
            back.
        """


class INodeObserver(Interface):
    """
    Told when a remote node becomes active or stops being active.  Register
    with L{dmq.node.NodeManager.addObserver}.  Never told about the local
    node.
    """

    def nodeActivated(node: _Node) -> None:
        """
        C{node} became active: it was added as active, or moved to active
        from another status.  Called once per such transition.

        @type node: L{dmq.nodelist.Node}
        """

    def nodeDeactivated(node: _Node) -> None:
        """
        C{node} stopped being active: it became C{not_active} or
        C{disabled}, or an active node was removed.

        @type node: L{dmq.nodelist.Node}
        """
