# -*- test-case-name: dmq.test.test_trust -*-
"""
Who may talk to this node: the networks admitted (C{--allow-from}), the
keyring requests are signed with (C{--secret-file}, L{dmq.signing}), and the
refusals, counted by cause and logged at most once a minute each.

L{Trust} decides on each new request, before the bus hands it to a peer;
L{SigningTransport} stands between the sender and the SIP transport, signing
our requests and checking the replies.  The sender and the transaction layer
know nothing of either: the bus builds both, so that a node without
C{--allow-from} and without a keyring pays nothing on the way of a request
(doc/security.md).
"""

from __future__ import annotations

import ipaddress
from collections import Counter
from typing import Callable, Dict, Iterable, Optional, Protocol, Sequence, Tuple, Union

import attr
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from dmq import sip
from dmq.ratelimit import RateLimitedWarnings
from dmq.signing import (
    SIGNATURE_HEADER,
    STALE,
    UNSIGNED,
    Keyring,
    ReplayGuard,
    signRefusal,
    signReply,
    signRequest,
    verifyReply,
    verifyRequest,
)

__all__ = [
    "REFUSAL_CAUSES",
    "Refusals",
    "Trust",
    "SigningTransport",
    "parseNetwork",
    "Network",
]

Network = Union[ipaddress.IPv4Network, ipaddress.IPv6Network]
Address = Tuple[str, int]

REFUSAL_CAUSES: Dict[str, str] = {
    "notAllowed": "Not Allowed",
    "notMember": "Not A Member",
    UNSIGNED: "Signature Required",
    "badSignature": "Bad Signature",
    "stale": "Stale Signature",
    "replay": "Replayed Request",
    "flooding": "Too Many Requests From You",
    "strangerLines": "",
    "badReply": "",
}
"""
Every cause of refusal, with the reason phrase of its C{403} (or C{503})
where it answers one: C{strangerLines} counts the lines of a non-member's
node list that were ignored, C{badReply} the replies to our signed requests
that were unsigned or badly signed (each a failed send).
"""


def parseNetwork(text: str) -> Network:
    """
    Parse an C{--allow-from} value: an IP network in CIDR notation, or one
    address.

    @raise ValueError: saying what is wrong.
    """
    try:
        return ipaddress.ip_network(text.strip(), strict=False)
    except ValueError:
        raise ValueError(f"{text!r} is not an IP network such as 10.0.0.0/24") from None


class Refusals:
    """
    The refusals of one node, by cause (every cause of L{REFUSAL_CAUSES}
    there from the start, at zero), each logged with its source at most once
    a minute.

    @ivar counts: the refusals by cause.
    """

    _log = Logger()

    def __init__(self, clock: IReactorTime) -> None:
        self.counts: Counter[str] = Counter({cause: 0 for cause in REFUSAL_CAUSES})
        self._warnings = RateLimitedWarnings(clock, self._log)

    def refuse(self, cause: str, source: object, what: str = "request", count: int = 1) -> None:
        """
        Count C{count} refusals of C{cause}, and log one.
        """
        self.counts[cause] += count
        self._warnings.warn(
            "refused." + cause,
            "Refused a {what} from {source}: {cause}",
            what=what,
            source=source,
            refusal=cause,
        )


def _networks(networks: Iterable[Network]) -> Tuple[Network, ...]:
    # Trust's converter: a bare tuple would leave mypy's attrs plugin to
    # type the argument as Iterable[_T_co], which no list of networks is.
    return tuple(networks)


@attr.define
class Trust:
    """
    The admission and authentication rules of a node.

    Without networks and without a keyring, everyone is admitted (as in
    Kamailio) and L{active} is false.  With networks only, a request is
    admitted from them or from a seed.  With a keyring, a request is
    admitted when it is signed by one of its keys, within the window and not
    a replay; an unsigned or badly signed one only from the networks.

    @ivar allowFrom: the networks admitted without a signature.
    @ivar keyring: the keyring, or C{None}.
    @ivar refusals: where refusals are counted.
    """

    _clock: IReactorTime
    allowFrom: Tuple[Network, ...] = attr.ib(default=(), converter=_networks)
    keyring: Optional[Keyring] = None
    refusals: Refusals = attr.ib(
        default=attr.Factory(lambda self: Refusals(self._clock), takes_self=True)
    )
    _isSeed: Callable[[object], bool] = lambda node: False
    _replays: ReplayGuard = attr.Factory(ReplayGuard)
    # Addresses already looked up in allowFrom, bounded.
    _allowed: Dict[str, bool] = attr.Factory(dict)

    def now(self) -> float:
        """
        The time on this node's clock.
        """
        return self._clock.seconds()

    @property
    def active(self) -> bool:
        """
        Whether any rule applies: admission is open when not.
        """
        return bool(self.allowFrom) or self.keyring is not None

    def allowed(self, host: str) -> bool:
        """
        Whether C{host}, an IP address, is in one of L{allowFrom}.
        """
        known = self._allowed.get(host)
        if known is not None:
            return known
        try:
            address = ipaddress.ip_address(host.partition("%")[0])
        except ValueError:
            allowed = False
        else:
            allowed = any(address in network for network in self.allowFrom)
        if len(self._allowed) >= 4096:
            self._allowed.clear()
        self._allowed[host] = allowed
        return allowed

    def admitsNode(self, uri: sip.URI) -> bool:
        """
        Whether a node named by C{uri} may be added from a received node
        list: with C{--allow-from} and no keyring, only when its host is an
        address inside the networks (a host name cannot be told, and is
        let in: it can send nothing unsigned from outside).  A seed is
        never asked.
        """
        if self.keyring is not None or not self.allowFrom:
            return True
        host = uri.host
        if host.startswith("["):
            host = host[1:-1]
        try:
            ipaddress.ip_address(host.partition("%")[0])
        except ValueError:
            return True
        return self.allowed(host)

    def check(self, request: sip.Request, source: Address, member: object) -> Optional[str]:
        """
        Whether C{request}, a new transaction from C{source}, is admitted.

        @param member: the member at C{source}, or C{None}.
        @return: C{None} when admitted, else the cause of refusal (a key of
            L{REFUSAL_CAUSES}).
        """
        keyring = self.keyring
        if keyring is not None:
            now = self._clock.seconds()
            why = verifyRequest(keyring, request, now)
            if why is None:
                return "replay" if self._replays.seen(request, now) else None
            if why == STALE and self._replays.knows(request, now):
                # Well signed, too old, and taken before: say so, since our
                # refusal is signed, and "stale" would read as "not taken".
                return "replay"
            if why == UNSIGNED and self.allowFrom and self.allowed(source[0]):
                # Kamailio's, which cannot sign.  A request that carries a
                # signature is judged by it wherever it comes from: taken
                # as unsigned, a tampered copy of a signed node's request
                # would get a reply bound to that node's signature.
                return None
            return why
        if self.allowed(source[0]) or (member is not None and self._isSeed(member)):
            return None
        return "notAllowed"

    def signedReply(
        self, request: sip.Request, code: int, headers: Sequence[Tuple[str, str]], body: bytes
    ) -> Sequence[Tuple[str, str]]:
        """
        C{headers} and the signature of our C{code} reply to C{request}.
        """
        assert self.keyring is not None
        value = signReply(self.keyring, code, request, body, self._clock.seconds())
        return (*headers, (SIGNATURE_HEADER, value))

    def layerRefusal(self, request: sip.Request, code: int, reason: str) -> Sequence[Tuple[str, str]]:
        """
        The headers of a response with no body that the transaction layer
        makes by itself (C{503} over its cap, C{500} when the bus raised):
        L{signedRefusal}'s, for a L{TransactionLayer.refusalHeaders
        <dmq.transaction.TransactionLayer.refusalHeaders>}.
        """
        return self.signedRefusal(request, code, reason, (), b"")

    def signedRefusal(
        self,
        request: sip.Request,
        code: int,
        reason: str,
        headers: Sequence[Tuple[str, str]],
        body: bytes,
    ) -> Sequence[Tuple[str, str]]:
        """
        C{headers}, and the signature of our C{code} refusal of C{request}
        when the request is signed (L{dmq.signing.signRefusal}): a refusal
        made before, or instead of, admitting the request, so bound to the
        whole request and its transaction, not to its signature.  An
        unsigned request (a Kamailio node's) gets C{headers} alone, as
        before.
        """
        keyring = self.keyring
        if keyring is None or request.header(SIGNATURE_HEADER) is None:
            return headers
        retryAfter = ""
        for name, value in headers:
            if name == "Retry-After":
                retryAfter = value
        try:
            value = signRefusal(
                keyring, code, reason, request, body, self._clock.seconds(), retryAfter
            )
        except sip.SIPParseError:
            # No Via to bind to (a request handed to handleRequest by hand):
            # no transaction either, so nothing for a signature to prove.
            return headers
        return (*headers, (SIGNATURE_HEADER, value))


class _RequestSender(Protocol):
    """
    What L{SigningTransport} sends through: the C{sendRequest} of
    L{dmq.transport.SIPDatagramProtocol}, or a test's fake.
    """

    def sendRequest(
        self, request: sip.Request, destination: Address
    ) -> Deferred[sip.Response]: ...


class SigningTransport:
    """
    The SIP transport as the sender sees it when the node has a keyring:
    each request leaves signed, and a reply that is not signed by the
    keyring (from a node outside C{--allow-from}) is a failed send: a local
    C{408 Reply Not Signed}, counted as C{badReply}.
    """

    def __init__(self, protocol: _RequestSender, trust: Trust) -> None:
        """
        @param protocol: the transport, with the C{sendRequest} of
            L{dmq.transport.SIPDatagramProtocol}.
        """
        if trust.keyring is None:
            raise ValueError("signing needs a keyring")
        self._protocol = protocol
        self._trust = trust
        self._keyring = trust.keyring

    def sendRequest(self, request: sip.Request, destination: Address) -> Deferred[sip.Response]:
        trust = self._trust
        value = signRequest(self._keyring, request, trust.now())
        signed = sip.Request(
            request.method, request.uri, (*request.headers, (SIGNATURE_HEADER, value)), request.body
        )
        d = self._protocol.sendRequest(signed, destination)
        d.addCallback(self._replied, signed, destination)
        return d

    def _replied(
        self, response: sip.Response, request: sip.Request, destination: Address
    ) -> sip.Response:
        if response.code == 408 and response.header(SIGNATURE_HEADER) is None:
            # Made here, for a request never answered: nothing to check.
            return response
        trust = self._trust
        why = verifyReply(self._keyring, request, response, trust.now())
        if why is None or (trust.allowFrom and trust.allowed(destination[0])):
            return response
        trust.refusals.refuse("badReply", destination, f"reply ({why})")
        return sip.responseFor(request, 408, "Reply Not Signed")
