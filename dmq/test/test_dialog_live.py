# -*- test-case-name: dmq.test.test_dialog_live -*-
"""
The dialog peer and real Kamailio 5.6.3 nodes (the C{dialog} module with
C{enable_dmq=1}) on one bus over loopback UDP, with a small SIP user agent
that places calls through Kamailio.  Skipped without the C{kamailio}
binary unless C{DMQ_REQUIRE_KAMAILIO=1}; see L{dmq.test.kamailio}.
"""

from __future__ import annotations

from typing import Any, Callable, List, Optional, Sequence, Tuple

from twisted.internet import defer, reactor
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorUDP
from twisted.internet.protocol import DatagramProtocol
from twisted.trial.unittest import TestCase

from dmq import sip
from dmq.config import NodeConfig
from dmq.peers.dialog import DialogRPC, DialogState
from dmq.tap import makeNodeService
from dmq.test.kamailio import SKIP_REASON, KamailioNode, waitFor

# Addresses of these tests alone: Kamailio, our node, the user agent.
KAMAILIO_IP = "127.0.4.1"
OUR_IP = "127.0.4.2"
UA_IP = "127.0.4.3"
CALLER_PORT = 5070
CALLEE_PORT = 5080

Address = Tuple[str, int]


class _Leg(DatagramProtocol):
    """
    One side of the user agent: a UDP socket that keeps what it receives
    and hands it to whoever waits for it.
    """

    def __init__(self) -> None:
        self.received: List[Tuple[Any, Address]] = []
        self._waiting: List[Tuple[Callable[[Any], bool], Deferred]] = []

    def datagramReceived(self, data: bytes, addr: Address) -> None:
        try:
            message = sip.parse(data)
        except sip.SIPParseError:
            return
        for waiter in list(self._waiting):
            predicate, d = waiter
            if predicate(message):
                self._waiting.remove(waiter)
                d.callback((message, addr))
                return
        self.received.append((message, addr))

    def expect(self, predicate: Callable[[Any], bool], timeout: float = 5.0) -> Deferred:
        """
        @return: a L{Deferred} firing with the first C{(message, source)}
            that C{predicate} accepts, received already or to come.
        """
        for item in self.received:
            if predicate(item[0]):
                self.received.remove(item)
                return defer.succeed(item)
        d: Deferred = Deferred()
        self._waiting.append((predicate, d))
        return d.addTimeout(timeout, reactor)

    def send(self, startLine: str, headers: Sequence[Tuple[str, str]], addr: Address) -> None:
        lines = [startLine] + [f"{name}: {value}" for name, value in headers]
        lines += ["Content-Length: 0", "", ""]
        assert self.transport is not None
        self.transport.write("\r\n".join(lines).encode("utf-8"), addr)


def _tag(side: str, callID: str) -> str:
    return f"{side}-{callID.partition('@')[0]}"


def _request(method: str) -> Callable[[Any], bool]:
    return lambda m: isinstance(m, sip.Request) and m.method == method


def _response(code: int, method: str) -> Callable[[Any], bool]:
    return lambda m: isinstance(m, sip.Response) and m.code == code and m.cseq.method == method


class SmallUA:
    """
    A caller and a callee on two sockets of one loopback address, placing
    one call at a time through a proxy: INVITE, 180, 200, ACK, later BYE and
    its 200.  Just enough SIP for Kamailio's dialog module to track the call.
    """

    def __init__(self, testCase: TestCase, proxy: Address, ip: str = UA_IP) -> None:
        self.proxy = proxy
        self.ip = ip
        self.caller, self.callee = _Leg(), _Leg()
        for leg, port in ((self.caller, CALLER_PORT), (self.callee, CALLEE_PORT)):
            listening = IReactorUDP(reactor).listenUDP(port, leg, interface=ip, maxPacketSize=8192)
            testCase.addCleanup(listening.stopListening)
        self._routes: List[Tuple[str, str]] = []
        self._branch = 0

    def _via(self) -> Tuple[str, str]:
        self._branch += 1
        return ("Via", f"SIP/2.0/UDP {self.ip}:{CALLER_PORT};branch=z9hG4bK-ua{self._branch};rport")

    def _dialogHeaders(self, callID: str, cseq: str, toTag: Optional[str]) -> List[Tuple[str, str]]:
        to = f"<sip:bob@{self.ip}>" + (f";tag={toTag}" if toTag else "")
        return [
            ("Max-Forwards", "70"),
            ("From", f"<sip:alice@{self.ip}>;tag={_tag('a', callID)}"),
            ("To", to),
            ("Call-ID", callID),
            ("CSeq", cseq),
        ]

    def _answer(self, request: Any, source: Address, code: int, reason: str, toTag: str,
                extra: Sequence[Tuple[str, str]] = ()) -> None:
        headers = [("Via", via) for via in request.headerValues("Via")]
        headers += [("Record-Route", rr) for rr in request.headerValues("Record-Route")]
        headers += [
            ("From", request.header("From")),
            ("To", f"{request.header('To')};tag={toTag}"),
            ("Call-ID", request.callID),
            ("CSeq", request.header("CSeq")),
        ]
        self.callee.send(f"SIP/2.0 {code} {reason}", [*headers, *extra], source)

    @defer.inlineCallbacks
    def call(self, callID: str) -> Any:
        """
        Place a call and answer it: INVITE, 180 Ringing, 200 OK, ACK.
        """
        target = f"sip:bob@{self.ip}:{CALLEE_PORT}"
        self.caller.send(
            f"INVITE {target} SIP/2.0",
            [self._via(), *self._dialogHeaders(callID, "1 INVITE", None),
             ("Contact", f"<sip:alice@{self.ip}:{CALLER_PORT}>")],
            self.proxy,
        )
        invite, source = yield self.callee.expect(_request("INVITE"))
        tag = _tag("b", callID)
        self._answer(invite, source, 180, "Ringing", tag)
        yield self.caller.expect(_response(180, "INVITE"))
        self._answer(invite, source, 200, "OK", tag,
                     [("Contact", f"<sip:bob@{self.ip}:{CALLEE_PORT}>")])
        ok, _ = yield self.caller.expect(_response(200, "INVITE"))
        # A single proxy: the route set is its Record-Route, as it is.
        self._routes = [("Route", rr) for rr in ok.headerValues("Record-Route")]
        self.caller.send(
            f"ACK {target} SIP/2.0",
            [self._via(), *self._routes, *self._dialogHeaders(callID, "1 ACK", tag)],
            self.proxy,
        )
        yield self.callee.expect(_request("ACK"))

    @defer.inlineCallbacks
    def hangUp(self, callID: str) -> Any:
        """
        End the call from the caller's side: BYE and its 200.
        """
        tag = _tag("b", callID)
        self.caller.send(
            f"BYE sip:bob@{self.ip}:{CALLEE_PORT} SIP/2.0",
            [self._via(), *self._routes, *self._dialogHeaders(callID, "2 BYE", tag)],
            self.proxy,
        )
        bye, source = yield self.callee.expect(_request("BYE"))
        self._answer(bye, source, 200, "OK", tag)
        yield self.caller.expect(_response(200, "BYE"))


# The dlg.list fields both sides know alike; the others (ref, flags,
# sockets, timeout, duration) are the owner's own.
_SHARED = ("h_entry", "h_id", "call-id", "from_uri", "to_uri", "state", "start_ts", "init_ts", "lifetime")


def shared(entry: dict) -> dict:
    """
    What of a C{dlg.list} entry a replica holds as its owner does: the
    shared fields, the legs without their sockets, the variables, and the
    profiles as a set (Kamailio lists a replica's in reverse order).
    """
    result = {key: entry[key] for key in _SHARED}
    for leg in ("caller", "callee"):
        result[leg] = {k: v for k, v in entry[leg].items() if k != "socket"}
    result["variables"] = entry["variables"]
    result["profiles"] = sorted(map(repr, entry["profiles"]))
    return result


class DialogInteropTests(TestCase):
    """
    Calls through a real Kamailio reach our dialog peer, state by state, and
    go back to a Kamailio node that restarts.
    """

    skip = SKIP_REASON
    timeout = 90

    def kamailio(self, **options: Any) -> KamailioNode:
        return KamailioNode.forTest(self, KAMAILIO_IP, defines=("WITH_DIALOG",), **options)

    def ourNode(self, seeds: Sequence[str] = ()) -> Any:
        node = makeNodeService(
            reactor,
            NodeConfig(
                serverAddress=sip.URI(OUR_IP, 5060),
                notificationAddresses=tuple(sip.parseURI(s) for s in seeds),
                pingInterval=5,
                dialog=True,
            ),
        )
        node.startService()
        self.addCleanup(lambda: node.stopService() if node.running else None)
        return node

    def activeAt(self, kamailio: KamailioNode) -> Deferred:
        return waitFor(
            lambda: kamailio.peerStatuses().addCallback(
                lambda s: s.get(f"{OUR_IP}:5060") == "active"
            ),
            timeout=15,
            interval=0.1,
            description="Kamailio lists our node active",
        )

    @defer.inlineCallbacks
    def test_callStatesInOrder(self) -> Any:
        """
        A call through Kamailio (INVITE, 180, 200, ACK, BYE) shows in our
        store as a new dialog, then early, confirmed and deleted, then
        removed; while it lasts, our C{dlg.list} says what Kamailio's does.
        """
        kamailio = self.kamailio()
        yield kamailio.start()
        node = self.ourNode([kamailio.uri])
        yield self.activeAt(kamailio)
        changes: List[Tuple[str, DialogState]] = []
        node.dialog.subscribe(lambda change: changes.append((change.kind, change.dialog.state)))
        ua = SmallUA(self, (KAMAILIO_IP, kamailio.port))

        yield ua.call("call-1@test")
        yield waitFor(lambda: ("state", DialogState.CONFIRMED) in changes, timeout=5, interval=0.05,
                      description="the call confirmed in our store")
        [dialog] = node.dialog.dialogs()
        self.assertEqual(dialog.callID, "call-1@test")
        self.assertEqual((dialog.caller.tag, dialog.callee.tag), ("a-call-1", "b-call-1"))
        self.assertEqual(dialog.variables, (("origin", UA_IP),))
        self.assertEqual({(p.name, p.value) for p in dialog.profiles}, {("calls", None), ("caller", "alice")})
        theirs = yield kamailio.rpc("dlg.list")
        ours = DialogRPC(node.dialog, reactor).list()
        self.assertEqual([sorted(entry) for entry in ours], [sorted(entry) for entry in theirs])
        self.assertEqual([shared(entry) for entry in ours], [shared(entry) for entry in theirs])
        self.assertEqual(
            DialogRPC(node.dialog, reactor).statsActive(), (yield kamailio.rpc("dlg.stats_active"))
        )
        theirs = yield kamailio.rpc("dlg.dlg_list", "call-1@test", "a-call-1")
        found = DialogRPC(node.dialog, reactor).dlgList("call-1@test", "a-call-1")
        assert isinstance(found, dict)
        self.assertEqual(shared(found), shared(theirs))

        yield ua.hangUp("call-1@test")
        yield waitFor(lambda: changes and changes[-1][0] == "removed", timeout=30, interval=0.1,
                      description="Kamailio removed the dialog")
        self.assertEqual(
            changes,
            [
                ("new", DialogState.UNCONFIRMED),
                ("state", DialogState.EARLY),
                ("state", DialogState.CONFIRMED),
                ("state", DialogState.DELETED),
                ("removed", DialogState.DELETED),
            ],
        )
        self.assertEqual(node.dialog.dialogs(), [])
        self.assertEqual(node.dialog.statistics["badRequests"], 0)

    @defer.inlineCallbacks
    def test_syncBothWays(self) -> Any:
        """
        Joining a Kamailio node that has a call in progress, we ask it for
        its dialogs and get the call; a Kamailio node that restarts asks us,
        and gets the call back.
        """
        kamailio = self.kamailio(notificationAddress=[f"sip:{OUR_IP}:5060"])
        yield kamailio.start()
        ua = SmallUA(self, (KAMAILIO_IP, kamailio.port))
        yield ua.call("call-2@test")
        before = yield kamailio.rpc("dlg.list")
        self.assertEqual([entry["state"] for entry in before], [DialogState.CONFIRMED])

        node = self.ourNode([kamailio.uri])
        yield waitFor(lambda: len(node.dialog) == 1, timeout=15, interval=0.1,
                      description="the call synced to our node")
        [dialog] = node.dialog.dialogs()
        self.assertEqual((dialog.callID, dialog.state), ("call-2@test", DialogState.CONFIRMED))
        self.assertEqual(dialog.callee.contact, f"sip:bob@{UA_IP}:{CALLEE_PORT}")

        yield kamailio.stop()
        yield kamailio.start()
        yield waitFor(lambda: kamailio.rpc("dlg.list").addCallback(bool), timeout=15, interval=0.1,
                      description="the restarted Kamailio has the call again")
        after = yield kamailio.rpc("dlg.list")
        self.assertEqual([shared(entry) for entry in after], [shared(entry) for entry in before])
