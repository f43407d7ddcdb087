# -*- test-case-name: dmq.test.test_discovery -*-
"""
Discovery that follows DNS: the notification addresses named by a host name
(C{multi_notify}), resolved to one address each of the nodes behind the
name, now and again every refresh interval, so that a bus behind a name
whose records change (a Kubernetes headless service) keeps finding its new
members after the first join.

L{resolveName} does one resolution, as Kamailio's C{get_dmq_host_list()}
does: SRV records (C{_sip._udp.NAME}) and their targets' addresses, then the
name's own A and AAAA records.  L{Discovery} keeps doing it and tells its
owner (the notification peer) which addresses appeared and which are gone.
It knows nothing of nodes.
"""

from __future__ import annotations

import socket
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import attr
from twisted.internet.defer import Deferred, DeferredList, succeed
from twisted.internet.interfaces import IReactorTime, IResolver
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.names import dns
from twisted.names.error import DNSNameError
from twisted.python.failure import Failure

from dmq.sip import URI
from dmq.ratelimit import RateLimitedWarnings

__all__ = ["MAX_HOSTS", "Resolution", "srvName", "resolveName", "Discovery"]

# Kamailio expands a multi_notify address to at most 30 hosts.
MAX_HOSTS = 30

#: What an IResolver lookup fires with: answers, authority, additional.
_Records = Tuple[List[dns.RRHeader], List[dns.RRHeader], List[dns.RRHeader]]


@attr.frozen
class Resolution:
    """
    What one resolution of a name found.

    @ivar uris: the node URIs, in order, without repeats, at most
        L{MAX_HOSTS}: the SRV targets' addresses with the SRV ports first,
        then the name's own addresses with the name's port.
    @ivar complete: whether every lookup was answered (a name that does not
        exist is an answer: it has no records); when not, addresses
        missing from C{uris} may only have been missed.
    @ivar errors: what failed, for the log.
    """

    uris: Tuple[URI, ...]
    complete: bool = True
    errors: Tuple[str, ...] = ()


def srvName(host: str) -> str:
    """
    The name whose SRV records list the nodes behind C{host}:
    C{_sip._udp.HOST} (RFC 3263; what a Kubernetes headless service publishes
    for a UDP port named C{sip}), or C{host} itself when it is an SRV owner
    name already (it starts with C{_}), as Kamailio, which looks SRV records
    up on the name as written, takes it.
    """
    return host if host.startswith("_") else f"_sip._udp.{host}"


def _ipv4(record: object) -> Optional[str]:
    return record.dottedQuad() if isinstance(record, dns.Record_A) else None


def _ipv6(record: object) -> Optional[str]:
    if isinstance(record, dns.Record_AAAA):
        return socket.inet_ntop(socket.AF_INET6, record.address)
    return None


@attr.define
class _Lookups:
    """
    The lookups of one resolution: their answers, and whether all came.
    """

    _resolver: IResolver
    complete: bool = True
    errors: List[str] = attr.Factory(list)

    def lookup(self, method: str, name: str) -> Deferred[List[object]]:
        """
        Look C{name} up with the resolver's C{method}.

        @return: a L{Deferred} firing with the answer records' payloads; with
            none when the name does not exist or the lookup failed (which
            makes the resolution incomplete).
        """
        d: Deferred[_Records]
        try:
            d = getattr(self._resolver, method)(name)
        except Exception as e:
            d = Deferred()
            d.errback(e)

        def answered(result: _Records) -> List[object]:
            return [answer.payload for answer in result[0]]

        def failed(failure: Failure) -> List[object]:
            if not failure.check(DNSNameError):
                self.complete = False
                # A Failure made from an exception always has its type.
                self.errors.append(f"{method} {name}: {failure.getErrorMessage() or failure.type.__name__}")  # type: ignore[union-attr]
            return []

        return d.addCallbacks(answered, failed)

    def addresses(self, name: str) -> Deferred[List[str]]:
        """
        @return: a L{Deferred} firing with the IPv4 then the IPv6 addresses
            of C{name}, in order, CNAMEs and other records skipped.
        """
        v4 = self.lookup("lookupAddress", name)
        v6 = self.lookup("lookupIPV6Address", name)

        def collect(results: List[Tuple[bool, List[object]]]) -> List[str]:
            found: List[str] = []
            for (_, payloads), extract in zip(results, (_ipv4, _ipv6)):
                for payload in payloads:
                    address = extract(payload)
                    if address is not None:
                        found.append(address)
            return found

        return DeferredList([v4, v6]).addCallback(collect)


def resolveName(resolver: IResolver, uri: URI, maxHosts: int = MAX_HOSTS) -> Deferred[Resolution]:
    """
    Resolve the host name of C{uri} to the node URIs behind it, as Kamailio's
    C{get_dmq_host_list()} does with C{multi_notify}: the SRV records of
    L{srvName} (only those of C{uri}'s port when it has one), ordered by
    priority, each target's A then AAAA addresses with the record's port;
    then the name's own A then AAAA addresses with C{uri}'s port.  The rest
    of C{uri} (user, parameters) is kept.

    @return: a L{Deferred} firing with a L{Resolution}; it never fails.
    """
    lookups = _Lookups(resolver)
    own = lookups.addresses(uri.host)

    def targets(payloads: List[object]) -> Deferred[List[Tuple[bool, List[Tuple[str, int]]]]]:
        records = [p for p in payloads if isinstance(p, dns.Record_SRV)]
        records = [r for r in records if uri.port is None or r.port == uri.port]
        records.sort(key=lambda r: (r.priority, -r.weight))
        found: List[Deferred[List[Tuple[str, int]]]] = []
        for record in records:
            target = record.target.name.decode("ascii", "replace").rstrip(".")
            if target:
                # "." is "no service here" (RFC 2782).
                found.append(
                    # The lambda's default argument (this record's port) is
                    # more than addCallback's ParamSpec overloads can match.
                    lookups.addresses(target).addCallback(  # type: ignore[call-overload]
                        lambda addresses, port=record.port: [(a, port) for a in addresses]
                    )
                )
        return DeferredList(found)

    srv = lookups.lookup("lookupService", srvName(uri.host)).addCallback(targets)

    # Any: the SRV targets' pairs, then the name's own addresses.
    def assemble(results: List[Tuple[bool, Any]]) -> Resolution:
        (_, perTarget), (_, addresses) = results
        hosts: List[Tuple[str, Optional[int]]] = [
            pair for _, pairs in perTarget for pair in pairs
        ]
        hosts += [(address, uri.port) for address in addresses]
        uris: List[URI] = []
        for host, port in hosts:
            found = uri.replace(host=host, port=port)
            if found not in uris:
                uris.append(found)
        return Resolution(tuple(uris[:maxHosts]), lookups.complete, tuple(lookups.errors))

    both: List[Deferred[Any]] = [srv, own]
    return DeferredList(both).addCallback(assemble)


class Discovery:
    """
    The notification names, resolved on demand (L{refresh}) and, between
    L{start} and L{stop}, every C{interval} seconds.

    Each address a name gives is told to C{found} once, when it first
    appears.  One that a complete resolution of its name no longer gives,
    or the oldest beyond L{MAX_HOSTS} of a name, is told to C{lost}: an
    address left behind by a name is no longer a seed, so that a bus whose
    members come and go does not keep pinging every address it ever had.
    """

    _log = Logger()

    def __init__(
        self,
        clock: IReactorTime,
        resolver: IResolver,
        names: Sequence[URI],
        found: Callable[[URI, URI], object],
        lost: Callable[[URI, URI], object],
        interval: Optional[float] = None,
        maxHosts: int = MAX_HOSTS,
    ) -> None:
        """
        @param names: the notification addresses to resolve.
        @param found: called with C{(name, uri)} for each new address.
        @param lost: called with C{(name, uri)} for each address gone.
        @param interval: seconds between refreshes, or C{None} for none.
        """
        if interval is not None and interval <= 0:
            raise ValueError("the refresh interval must be positive")
        self._clock = clock
        self._resolver = resolver
        self.names = list(names)
        self._found = found
        self._lost = lost
        self.interval = interval
        self._maxHosts = maxHosts
        # By name, the addresses it gave, oldest first.
        self._known: Dict[URI, Dict[URI, None]] = {name: {} for name in self.names}
        self._loop: Optional[LoopingCall] = None
        self._running = False
        self._waiters: List[Deferred[List[URI]]] = []
        self._warnings = RateLimitedWarnings(clock, self._log)

    def known(self, name: URI) -> List[URI]:
        """
        @return: the addresses C{name} gave and that are not gone, oldest
            first.
        """
        return list(self._known.get(name, ()))

    def refresh(self) -> Deferred[List[URI]]:
        """
        Resolve every name now (or wait for the resolution under way), and
        tell C{found} and C{lost} what changed.

        @return: a L{Deferred} firing with the new addresses, once every name
            has been resolved; it never fails.
        """
        if self._running:
            waiter: Deferred[List[URI]] = Deferred()
            self._waiters.append(waiter)
            return waiter
        if not self.names:
            return succeed([])
        self._running = True
        resolutions = [resolveName(self._resolver, name, self._maxHosts) for name in self.names]
        d = DeferredList(resolutions).addCallback(self._apply)

        def done(result: object) -> object:
            self._running = False
            waiters, self._waiters = self._waiters, []
            for waiter in waiters:
                waiter.callback([])
            return result

        return d.addBoth(done)

    def _apply(self, results: List[Tuple[bool, Resolution]]) -> List[URI]:
        new: List[URI] = []
        for name, (_, resolution) in zip(self.names, results):
            new += self._update(name, resolution)
        return new

    def _update(self, name: URI, resolution: Resolution) -> List[URI]:
        if resolution.errors:
            self._warnings.warn(
                f"resolve {name.toString()}",
                "Could not resolve notification address {name} fully: {errors}",
                name=name.toString(),
                errors="; ".join(resolution.errors),
            )
        known = self._known[name]
        gone = [uri for uri in known if uri not in resolution.uris] if resolution.complete else []
        new = [uri for uri in resolution.uris if uri not in known]
        for uri in gone:
            del known[uri]
        for uri in new:
            known[uri] = None
        while len(known) > self._maxHosts:
            oldest = next(uri for uri in known if uri not in resolution.uris)
            del known[oldest]
            gone.append(oldest)
        for uri in gone:
            self._log.info(
                "Notification address {name} no longer gives {uri}", name=name.toString(), uri=uri.toString()
            )
            self._call(self._lost, name, uri)
        for uri in new:
            self._call(self._found, name, uri)
        return new

    def _call(self, callback: Callable[[URI, URI], object], name: URI, uri: URI) -> None:
        try:
            callback(name, uri)
        except Exception:
            self._log.failure("discovery callback {callback!r} failed on {uri}", callback=callback, uri=uri)

    def start(self) -> None:
        """
        Refresh every C{interval} seconds from now on (the first after one
        interval), if there is an interval and a name.
        """
        if self.interval is None or not self.names or self._loop is not None:
            return
        self._loop = LoopingCall(self.refresh)
        self._loop.clock = self._clock
        self._loop.start(self.interval, now=False)

    def stop(self) -> None:
        """
        Refresh no more.  A resolution under way still ends, and tells what
        it found.
        """
        if self._loop is not None:
            if self._loop.running:
                self._loop.stop()
            self._loop = None
