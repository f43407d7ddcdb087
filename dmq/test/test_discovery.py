# -*- test-case-name: dmq.test.test_discovery -*-
"""
Tests for L{dmq.discovery}: notification addresses resolved through SRV,
A and AAAA records, and again on the clock, with a fake resolver.
"""

from __future__ import annotations

from typing import Any, Dict, List, Sequence, Tuple, Union

from twisted.internet import defer
from twisted.internet.defer import Deferred
from twisted.internet.error import DNSLookupError
from twisted.internet.task import Clock
from twisted.internet.testing import EventLoggingObserver
from twisted.logger import globalLogPublisher
from twisted.names import dns
from twisted.names.common import ResolverBase
from twisted.names.error import DNSNameError, DNSServerError
from twisted.trial.unittest import SynchronousTestCase

from dmq import sip
from dmq.discovery import MAX_HOSTS, Discovery, Resolution, resolveName, srvName
from dmq.tap import Options
from dmq.test.fakenet import FakeNetwork, makeNode

NAME = sip.parseURI("sip:dmq.example:5060")


class FakeResolver(ResolverBase):
    """
    A resolver of a table: C{records[(kind, name)]} is a list of record
    payloads, or an exception to fail with; other names do not exist.  The
    lookups it does not answer are L{ResolverBase}'s, which fail.
    With C{hold}, answers wait in C{pending} until the test fires them.
    """

    def __init__(self) -> None:
        super().__init__()
        self.records: Dict[Tuple[str, str], Union[Sequence[dns.IEncodableRecord], Exception]] = {}
        self.queries: List[Tuple[str, str]] = []
        self.hold = False
        self.pending: List[Tuple[Deferred, object]] = []

    def a(self, name: str, *addresses: str) -> None:
        self.records[("A", name)] = [dns.Record_A(a) for a in addresses]

    def aaaa(self, name: str, *addresses: str) -> None:
        self.records[("AAAA", name)] = [dns.Record_AAAA(a) for a in addresses]

    def srv(self, name: str, *targets: Tuple[int, int, int, str]) -> None:
        self.records[("SRV", name)] = [dns.Record_SRV(p, w, port, t) for p, w, port, t in targets]

    def _answer(self, kind: str, name: str) -> Deferred:
        self.queries.append((kind, name))
        found = self.records.get((kind, name))
        if found is None:
            result: object = DNSNameError(name)
        elif isinstance(found, Exception):
            result = found
        else:
            result = ([dns.RRHeader(name, type=p.TYPE, payload=p) for p in found], [], [])
        d: Deferred = Deferred()
        if self.hold:
            self.pending.append((d, result))
        else:
            self._fire(d, result)
        return d

    def _fire(self, d: Deferred, result: object) -> None:
        if isinstance(result, Exception):
            d.errback(result)
        else:
            d.callback(result)

    def release(self) -> None:
        pending, self.pending = self.pending, []
        for d, result in pending:
            self._fire(d, result)

    def lookupAddress(self, name: str, timeout=None) -> Deferred:
        return self._answer("A", name)

    def lookupIPV6Address(self, name: str, timeout=None) -> Deferred:
        return self._answer("AAAA", name)

    def lookupService(self, name: str, timeout=None) -> Deferred:
        return self._answer("SRV", name)


def resolved(resolver: FakeResolver, uri: sip.URI = NAME, **options: Any) -> Resolution:
    results: List[Resolution] = []
    resolveName(resolver, uri, **options).addCallback(results.append)
    [result] = results
    return result


def uris(*texts: str) -> Tuple[sip.URI, ...]:
    return tuple(sip.parseURI(text) for text in texts)


class ResolveNameTests(SynchronousTestCase):
    """
    L{resolveName}: one resolution of a name, as Kamailio's
    C{get_dmq_host_list()}.
    """

    def test_srvName(self) -> None:
        """
        SRV records are looked up at C{_sip._udp.NAME}, or at the name as
        written when it is an SRV owner name already.
        """
        self.assertEqual(srvName("dmq.example"), "_sip._udp.dmq.example")
        self.assertEqual(srvName("_dmq._udp.example"), "_dmq._udp.example")

    def test_srvThenAddresses(self) -> None:
        """
        The SRV targets' addresses come first, by priority, each with its
        record's port (only the URI's port is kept when it has one), then
        the name's own A and AAAA addresses with the URI's port; repeats
        are dropped, a target of C{.} (the root) is skipped.
        """
        resolver = FakeResolver()
        resolver.srv(
            "_sip._udp.dmq.example",
            (20, 0, 5060, "b.example"),
            (10, 0, 5060, "a.example"),
            (10, 0, 5070, "c.example"),
            (30, 0, 5060, ""),
        )
        resolver.a("a.example", "10.0.0.1")
        resolver.aaaa("a.example", "fd00::1")
        resolver.a("b.example", "10.0.0.2", "10.0.0.1")
        resolver.a("c.example", "10.0.0.3")
        resolver.a("dmq.example", "10.0.0.2", "10.0.0.4")
        result = resolved(resolver)
        self.assertEqual(
            result.uris,
            uris("sip:10.0.0.1:5060", "sip:[fd00::1]:5060", "sip:10.0.0.2:5060", "sip:10.0.0.4:5060"),
        )
        self.assertTrue(result.complete)
        self.assertNotIn(("A", "c.example"), resolver.queries)

    def test_anyPort(self) -> None:
        """
        A name without a port keeps every SRV record, with its port; its own
        addresses have no port.
        """
        resolver = FakeResolver()
        resolver.srv("_sip._udp.dmq.example", (10, 0, 5070, "c.example"))
        resolver.a("c.example", "10.0.0.3")
        resolver.a("dmq.example", "10.0.0.4")
        result = resolved(resolver, sip.parseURI("sip:dmq.example;transport=udp"))
        self.assertEqual(result.uris, uris("sip:10.0.0.3:5070;transport=udp", "sip:10.0.0.4;transport=udp"))

    def test_onlyAddresses(self) -> None:
        """
        A name with no SRV records (it does not exist as an SRV owner) gives
        its addresses, and the resolution is complete.
        """
        resolver = FakeResolver()
        resolver.a("dmq.example", "10.0.0.4")
        self.assertEqual(resolved(resolver), Resolution(uris("sip:10.0.0.4:5060")))

    def test_failures(self) -> None:
        """
        A lookup that fails otherwise than with a name that does not exist
        makes the resolution incomplete and says why; the others still
        count.  A resolver that raises at once fails that lookup alone.
        """
        resolver = FakeResolver()
        resolver.records[("SRV", "_sip._udp.dmq.example")] = DNSServerError("SERVFAIL")
        resolver.records[("AAAA", "dmq.example")] = DNSLookupError("timeout")
        resolver.a("dmq.example", "10.0.0.4")
        result = resolved(resolver)
        self.assertEqual(result.uris, uris("sip:10.0.0.4:5060"))
        self.assertFalse(result.complete)
        self.assertEqual(
            sorted(error.split(":")[0] for error in result.errors),
            ["lookupIPV6Address dmq.example", "lookupService _sip._udp.dmq.example"],
        )

        class Raising(FakeResolver):
            def lookupService(self, name, timeout=None):
                raise RuntimeError("broken")

        raising = Raising()
        raising.a("dmq.example", "10.0.0.4")
        result = resolved(raising)
        self.assertEqual((result.uris, result.complete), (uris("sip:10.0.0.4:5060"), False))

    def test_atMost(self) -> None:
        """
        At most C{maxHosts} addresses, L{MAX_HOSTS} by default, as Kamailio.
        """
        resolver = FakeResolver()
        resolver.a("dmq.example", *[f"10.0.1.{i}" for i in range(40)])
        self.assertEqual(len(resolved(resolver).uris), MAX_HOSTS)
        self.assertEqual(len(resolved(resolver, maxHosts=3).uris), 3)


class DiscoveryTests(SynchronousTestCase):
    """
    L{Discovery}: the names resolved again on the clock, what appeared and
    what is gone told to its owner.
    """

    def setUp(self) -> None:
        self.clock = Clock()
        self.resolver = FakeResolver()
        self.found: List[str] = []
        self.lost: List[str] = []
        self.discovery = Discovery(
            self.clock,
            self.resolver,
            [NAME],
            lambda name, uri: self.found.append(uri.host),
            lambda name, uri: self.lost.append(uri.host),
            interval=30,
            maxHosts=3,
        )

    def test_changingRecords(self) -> None:
        """
        A name whose A records change between refreshes: new addresses are
        found, addresses gone are lost, each once.
        """
        self.resolver.a("dmq.example", "10.0.0.1", "10.0.0.2")
        self.discovery.refresh()
        self.assertEqual(self.found, ["10.0.0.1", "10.0.0.2"])
        self.discovery.start()
        self.resolver.a("dmq.example", "10.0.0.2", "10.0.0.3")
        self.clock.advance(29)
        self.assertEqual(self.found, ["10.0.0.1", "10.0.0.2"])
        self.clock.advance(1)
        self.assertEqual(self.found, ["10.0.0.1", "10.0.0.2", "10.0.0.3"])
        self.assertEqual(self.lost, ["10.0.0.1"])
        self.clock.advance(30)
        self.assertEqual(len(self.found), 3)
        self.assertEqual(self.discovery.known(NAME), list(uris("sip:10.0.0.2:5060", "sip:10.0.0.3:5060")))

    def test_srvTargetsChange(self) -> None:
        """
        New SRV targets (with their ports) are found on a refresh.
        """
        self.resolver.srv("_sip._udp.dmq.example", (10, 0, 5060, "a.example"))
        self.resolver.a("a.example", "10.0.0.1")
        self.discovery.refresh()
        self.resolver.srv("_sip._udp.dmq.example", (10, 0, 5060, "a.example"), (10, 0, 5060, "b.example"))
        self.resolver.a("b.example", "10.0.0.2")
        self.discovery.refresh()
        self.assertEqual(self.found, ["10.0.0.1", "10.0.0.2"])

    def test_failureLosesNothing(self) -> None:
        """
        A refresh with a failed lookup finds what it can and loses nothing;
        the failure is logged.
        """
        self.resolver.a("dmq.example", "10.0.0.1", "10.0.0.2")
        self.discovery.refresh()
        self.resolver.a("dmq.example", "10.0.0.3")
        self.resolver.records[("AAAA", "dmq.example")] = DNSLookupError("timeout")
        events = EventLoggingObserver()
        globalLogPublisher.addObserver(events)
        self.addCleanup(globalLogPublisher.removeObserver, events)
        self.discovery.refresh()
        self.assertEqual(self.found, ["10.0.0.1", "10.0.0.2", "10.0.0.3"])
        self.assertEqual(self.lost, [])
        self.assertEqual(len([e for e in events if "Could not resolve" in e.get("log_format", "")]), 1)

    def test_nameGone(self) -> None:
        """
        A name that no longer exists loses every address it gave.
        """
        self.resolver.a("dmq.example", "10.0.0.1")
        self.discovery.refresh()
        del self.resolver.records[("A", "dmq.example")]
        self.discovery.refresh()
        self.assertEqual(self.lost, ["10.0.0.1"])

    def test_atMostPerName(self) -> None:
        """
        Past C{maxHosts} addresses of a name (incomplete resolutions lose
        nothing else), the oldest not given now is lost.
        """
        self.resolver.records[("AAAA", "dmq.example")] = DNSLookupError("timeout")
        for addresses in (("10.0.0.1", "10.0.0.2"), ("10.0.0.3",), ("10.0.0.4", "10.0.0.5")):
            self.resolver.a("dmq.example", *addresses)
            self.discovery.refresh()
        self.assertEqual(self.lost, ["10.0.0.1", "10.0.0.2"])
        self.assertEqual(len(self.discovery.known(NAME)), 3)

    def test_oneRefreshAtATime(self) -> None:
        """
        A refresh asked for while one is under way waits for it rather than
        resolving again.
        """
        self.resolver.a("dmq.example", "10.0.0.1")
        self.resolver.hold = True
        first: List[List[sip.URI]] = []
        second: List[List[sip.URI]] = []
        self.discovery.refresh().addCallback(first.append)
        queries = len(self.resolver.queries)
        self.discovery.refresh().addCallback(second.append)
        self.assertEqual(len(self.resolver.queries), queries)
        self.resolver.release()
        self.resolver.release()
        self.assertEqual(first, [list(uris("sip:10.0.0.1:5060"))])
        self.assertEqual(second, [[]])

    def test_stop(self) -> None:
        """
        After L{Discovery.stop}, no refresh is scheduled; without an
        interval, L{Discovery.start} schedules none.
        """
        self.discovery.start()
        self.discovery.start()
        self.discovery.stop()
        self.discovery.stop()
        self.assertEqual(self.clock.getDelayedCalls(), [])
        quiet = Discovery(self.clock, self.resolver, [NAME], print, print)
        quiet.start()
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.assertRaises(ValueError, Discovery, self.clock, self.resolver, [NAME], print, print, interval=0)

    def test_callbackFails(self) -> None:
        """
        A callback that raises is logged; the other addresses are still
        told.
        """

        def broken(name: sip.URI, uri: sip.URI) -> None:
            raise RuntimeError(uri.host)

        discovery = Discovery(self.clock, self.resolver, [NAME], broken, broken)
        self.resolver.a("dmq.example", "10.0.0.1", "10.0.0.2")
        discovery.refresh()
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 2)


def _stopIfRunning(service):
    """
    Stop C{service} if it runs: a cleanup for a node a test may have stopped.
    """
    return service.stopService() if service.running else None


def statuses(node) -> Dict[str, str]:
    return {
        n.uri.host: n.status.value for n in node.nodeManager.nodes() if not n.local
    }


class FollowingDNSTests(SynchronousTestCase):
    """
    A node whose notification address is a name keeps finding the members
    behind it after its first join.
    """

    def test_newMemberFound(self) -> None:
        """
        The name first gives one node, the join goes there; once the name
        also gives a second node, whose bus is another, the next refresh
        adds and joins it, and it learns of us.  A node the name no longer
        gives is no longer a seed.
        """
        clock = Clock()
        network = FakeNetwork(clock)
        resolver = FakeResolver()
        resolver.a("dmq.example", "127.0.0.11")
        first = makeNode(clock, network, "127.0.0.11", pingInterval=30)
        second = makeNode(clock, network, "127.0.0.12", pingInterval=30)
        node = makeNode(
            clock, network, "127.0.0.14", seeds=["dmq.example"], multiNotify=True, resolver=resolver,
            pingInterval=30, notifyRefresh=10,
        )
        nodes = [first, second, node]
        self.addCleanup(network.run, 70)
        for each in nodes:
            self.addCleanup(_stopIfRunning, each)
        network.run(2)
        self.assertEqual(statuses(node), {"127.0.0.11": "active"})
        self.assertNotIn("127.0.0.14", statuses(second))

        resolver.a("dmq.example", "127.0.0.12")
        network.run(10)
        self.assertEqual(statuses(node), {"127.0.0.11": "active", "127.0.0.12": "active"})
        self.assertEqual(statuses(second).get("127.0.0.14"), "active")
        eleven = node.nodeManager.find(sip.URI("127.0.0.11", 5060))
        twelve = node.nodeManager.find(sip.URI("127.0.0.12", 5060))
        self.assertFalse(node.nodeManager.isSeed(eleven))
        self.assertTrue(node.nodeManager.isSeed(twelve))
        self.assertIn(("SRV", "_sip._udp.dmq.example"), resolver.queries)

    def test_refreshDefault(self) -> None:
        """
        C{--notify-refresh} defaults to the ping interval.
        """
        options = Options()
        options.parseOptions(
            ["--server-address", "sip:127.0.0.11:5060", "--ping-interval", "15", "--notify-refresh", "5"]
        )
        self.assertEqual(options.nodeConfig.notifyRefresh, 5.0)
        clock = Clock()
        network = FakeNetwork(clock)
        node = makeNode(clock, network, "127.0.0.14", seeds=["dmq.example"], multiNotify=True,
                        resolver=FakeResolver(), pingInterval=15)
        self.assertEqual(node.notification._discovery.interval, 15)
        node.stopService()
        network.run(70)
        self.assertEqual(clock.getDelayedCalls(), [])


class DropSeedTests(SynchronousTestCase):
    """
    L{NodeManager.dropSeed}: an address a name no longer gives is a seed no
    more, and times out as any node.
    """

    def test_dropSeed(self) -> None:
        """
        A dropped seed is not a seed, is not put back by
        L{NodeManager.restoreSeeds}, and a timeout while disabled removes
        it; the other seeds are kept.
        """
        from dmq.node import NodeManager, NodeStatus

        manager = NodeManager(Clock(), sip.URI("127.0.0.14", 5060))
        dropped = manager.addSeed(sip.URI("127.0.0.11", 5060))
        kept = manager.addSeed(sip.URI("127.0.0.12", 5060))
        assert dropped is not None and kept is not None
        self.assertTrue(manager.dropSeed(sip.URI("127.0.0.11", 5060)))
        self.assertFalse(manager.dropSeed(sip.URI("127.0.0.11", 5060)))
        self.assertFalse(manager.isSeed(dropped))
        self.assertTrue(manager.isSeed(kept))
        for node in (dropped, kept):
            manager.changeStatus(node.uri, NodeStatus.DISABLED)
            manager.notificationTimedOut(node, NodeStatus.DISABLED)
        self.assertEqual([n.uri.host for n in manager.pingTargets()], ["127.0.0.12"])
        manager.remove(sip.URI("127.0.0.12", 5060))
        self.assertEqual([n.uri.host for n in manager.restoreSeeds()], ["127.0.0.12"])
