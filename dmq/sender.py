# -*- test-case-name: dmq.test.test_bus -*-
"""
The bus's way out: KDMQ requests built as Kamailio builds them
(C{send_message}, C{bcast_message}), sent to one node (its host name
resolved first, if it has one) or to every active node, and each send's
outcome reported to the outcome observers.  L{dmq.bus.DMQBus} offers it as
L{dmq.interfaces.IDMQBus.send} and L{dmq.interfaces.IDMQBus.broadcast}.
"""

from __future__ import annotations

import itertools
import random
from typing import Callable, Dict, Iterable, Optional, Protocol, Set, Tuple, Union, cast

import attr
from twisted.internet.defer import Deferred, DeferredList, maybeDeferred, succeed
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure

from dmq import __version__, sip
from dmq.node import NodeManager
from dmq.nodelist import Node, NodeStatus, ipLiteral
from dmq.observers import Observers
from dmq.ratelimit import RateLimitedWarnings
from dmq.transport import KDMQ

__all__ = ["KDMQSender", "SendOutcome", "checkPeerId", "RESOLVE_TIMEOUT"]

RESOLVE_TIMEOUT = 32.0
"""
Seconds a host name has to resolve before the send ends as if the node had
not answered: Timer F's default, so that a node whose name never resolves
times out at most as late as one that never answers.
"""


def checkPeerId(peerId: object) -> str:
    """
    Check that C{peerId} can name a peer: a non-empty SIP user part without
    C{;}, since it travels as the Request-URI user.

    @return: C{peerId}.
    @raise ValueError: saying what is wrong.
    """
    if not isinstance(peerId, str) or not peerId:
        raise ValueError("a peer id is a non-empty string")
    try:
        uri = sip.parseURI(f"sip:{peerId}@127.0.0.1")
    except sip.SIPParseError:
        uri = None
    if uri is None or uri.user != peerId or ";" in peerId:
        raise ValueError(f"{peerId!r} is not a valid SIP user part")
    return peerId


@attr.frozen
class SendOutcome:
    """
    How one of our sends ended.

    @ivar peerId: the channel it was sent on.
    @ivar node: the node it was sent to.
    @ivar statusAtSend: the node's status when it was sent.
    @ivar response: the final response: the node's, or a local C{408} when
        it never answered (or its name did not resolve).
    """

    peerId: str
    node: Node
    statusAtSend: NodeStatus
    response: sip.Response


class _RequestSender(Protocol):
    """
    What L{KDMQSender} sends through: the C{sendRequest} of
    L{dmq.transport.SIPDatagramProtocol}, or a test's fake.
    """

    def sendRequest(
        self, request: sip.Request, destination: Tuple[str, int]
    ) -> Deferred[sip.Response]: ...


class KDMQSender:
    """
    Sends KDMQ requests to the nodes a L{NodeManager} holds.
    """

    _log = Logger()

    def __init__(
        self,
        clock: IReactorTime,
        protocol: _RequestSender,
        nodeManager: NodeManager,
        resolve: Optional[Callable[[str], Deferred[str]]] = None,
    ) -> None:
        """
        @param protocol: the SIP transport: anything with the C{sendRequest}
            of L{dmq.transport.SIPDatagramProtocol}.
        @param resolve: turns a host name into an address, for nodes named by
            a host name; C{None} when only IP addresses are expected.
        """
        self._clock = clock
        self._warnings = RateLimitedWarnings(clock, self._log)
        self._protocol = protocol
        self._nodeManager = nodeManager
        self._resolve = resolve
        self._callIDs = itertools.count(random.getrandbits(32))
        self._outcomeObservers: Observers[Callable[[SendOutcome], None]] = Observers(
            "send outcome"
        )

    def addOutcomeObserver(self, observer: Callable[[SendOutcome], None]) -> None:
        """
        Call C{observer} with a L{SendOutcome} each time a send ends with a
        response (the node's, or a local C{408}), before the sender's
        Deferred fires with it.  One that raises is logged.
        """
        self._outcomeObservers.add(observer)

    def removeOutcomeObserver(self, observer: Callable[[SendOutcome], None]) -> None:
        """
        Stop calling C{observer}.
        """
        self._outcomeObservers.remove(observer)

    def buildRequest(
        self,
        peerId: str,
        body: bytes,
        node: Node,
        contentType: str = "text/plain",
        maxForwards: int = 1,
    ) -> sip.Request:
        """
        Build a KDMQ request as Kamailio does (its reference, §2.1): Request-URI
        and To C{sip:<peer>@<node host:port>[;transport=t]}, From the same for
        our server address with a tag, then CSeq, Call-ID, User-Agent,
        Max-Forwards and Content-Type.  The transaction layer adds the Via.
        """
        _checkMaxForwards(maxForwards)
        if not sip.isHeaderValue(contentType):
            raise ValueError(f"not a one-line content type: {contentType!r}")
        checkPeerId(peerId)
        target = _peerURI(peerId, node.uri)
        local = self._nodeManager.localNode.uri
        fromURI = _peerURI(peerId, local)
        return sip.Request(
            KDMQ,
            target,
            (
                ("To", f"<{target.toString()}>"),
                ("From", f"<{fromURI.toString()}>;tag={sip.newTag()}"),
                ("CSeq", "10 KDMQ"),
                ("Call-ID", f"{next(self._callIDs) & 0xFFFFFFFFFFFF:x}-{random.getrandbits(32):08x}@{local.host}"),
                ("User-Agent", f"dmq/{__version__}"),
                ("Max-Forwards", str(maxForwards)),
                ("Content-Type", contentType),
            ),
            body,
        )

    def send(
        self,
        peerId: str,
        body: bytes,
        node: Node,
        contentType: str = "text/plain",
        maxForwards: int = 1,
        timeout: Optional[float] = None,
    ) -> Deferred[sip.Response]:
        """
        Send to one node; see L{dmq.interfaces.IDMQBus.send}.

        @param timeout: seconds after which to give up and fire with a local
            C{408}, when that is sooner than the transaction's own Timer F.
        """
        request = self.buildRequest(peerId, body, node, contentType, maxForwards)
        statusAtSend = node.status
        # The chain's result changes type as it goes: each step is named.
        address = self._address(node, request)
        d: Deferred[sip.Response] = address.addCallback(
            lambda address: address
            if isinstance(address, sip.Response)
            else self._protocol.sendRequest(request, address)
        )
        if timeout is not None:
            d.addTimeout(
                timeout,
                self._clock,
                onTimeoutCancel=lambda result, timeout: sip.responseFor(
                    request, 408, "Request Timeout"
                ),
            )
        return d.addCallback(self._sent, node, peerId, statusAtSend)

    def broadcast(
        self,
        peerId: str,
        body: bytes,
        contentType: str = "text/plain",
        exclude: Optional[object] = None,
        maxForwards: int = 1,
        includeInactive: bool = False,
    ) -> Deferred[Dict[Node, Union[sip.Response, Failure]]]:
        """
        Send to every active node but ourselves and C{exclude}; see
        L{dmq.interfaces.IDMQBus.broadcast}.

        @param includeInactive: also send to nodes that are not active, as
            Kamailio's ping and join do.
        """
        _checkMaxForwards(maxForwards)
        excluded = _asSet(exclude)
        manager = self._nodeManager
        nodes = manager.pingTargets() if includeInactive else manager.activeNodes()
        targets = [node for node in nodes if node not in excluded and not node.local]
        deferreds = [
            self.send(peerId, body, node, contentType, maxForwards) for node in targets
        ]
        d = DeferredList(deferreds, consumeErrors=True)
        return d.addCallback(
            lambda results: {
                node: value for node, (ok, value) in zip(targets, results)
            }
        )

    def _address(
        self, node: Node, request: sip.Request
    ) -> Deferred[Union[Tuple[str, int], sip.Response]]:
        """
        Where to send C{request} for C{node}: its address, once its host name
        (if it has one) is resolved.  The first address found is kept, as
        Kamailio keeps it.

        @return: a L{Deferred} firing with C{(ip, port)}, or with a local
            C{408} response when the name does not resolve (whatever the
            resolver raised, or if it has not answered in
            L{RESOLVE_TIMEOUT} seconds) or names a node known otherwise
            (ourselves, say): the node is then demoted and removed like one
            that does not answer.
        """
        host, port = node.address
        if ipLiteral(host) is not None or self._resolve is None:
            return succeed((host, port))
        d = maybeDeferred(self._resolve, host)
        d.addTimeout(RESOLVE_TIMEOUT, self._clock)

        def resolved(ip: str) -> Union[Tuple[str, int], sip.Response]:
            survivor = self._nodeManager.setResolvedIP(node, ipLiteral(ip) or ip)
            if survivor is not node:
                self._log.info(
                    "{node} is {other}: not sending to it",
                    node=node.uri.toString(),
                    other="ourselves" if survivor.local else survivor.uri.toString(),
                )
                return sip.responseFor(request, 408, "Same As Another Node")
            return survivor.address

        def failed(failure: Failure) -> sip.Response:
            self._warnings.warn(
                "unresolved",
                "Cannot resolve {host} for node {node}: {error}",
                host=host,
                node=node.uri.toString(),
                # A Failure made from an exception always has its type.
                error=f"{failure.type.__name__}: {failure.getErrorMessage()}",  # type: ignore[union-attr]
            )
            return sip.responseFor(request, 408, "Host Not Resolved")

        # Whatever goes wrong, the resolver or what we do with its answer,
        # is the send's outcome: a node that cannot be reached times out.
        resolving: Deferred[Union[Tuple[str, int], sip.Response]] = d.addCallback(resolved)
        return resolving.addErrback(failed)

    def _sent(
        self, response: sip.Response, node: Node, peerId: str, statusAtSend: NodeStatus
    ) -> sip.Response:
        if self._outcomeObservers:
            outcome = SendOutcome(peerId, node, statusAtSend, response)
            self._outcomeObservers.tell(lambda observer: observer(outcome), outcome)
        return response


def _checkMaxForwards(maxForwards: int) -> None:
    if maxForwards < 1:
        raise ValueError("maxForwards must be at least 1: Kamailio refuses Max-Forwards: 0")


def _asSet(exclude: object) -> Set[Node]:
    if exclude is None:
        return set()
    if isinstance(exclude, Node):
        return {exclude}
    # Anything else is a sequence of nodes, as IDMQBus.broadcast says.
    return set(cast(Iterable[Node], exclude))


def _peerURI(peerId: str, node: sip.URI) -> sip.URI:
    transport = node.transport
    parameters: sip.Parameters = ()
    if transport is not None and transport != "udp":
        parameters = (("transport", transport),)
    return sip.URI(host=node.host, port=node.port, user=peerId, parameters=parameters)
