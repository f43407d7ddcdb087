# -*- test-case-name: dmq.test.test_dialog -*-
"""
L{DialogPeer}: the calls of a Kamailio cluster, as its dialog module
replicates them (C{modparam("dialog", "enable_dmq", 1)}), and the bus peer
that receives them.  It applies the messages L{decode} reads to its
L{DialogStore}, answers sync requests with the dialogs it holds (so a
Kamailio node that restarts gets them back), and asks one node for them
when it joins.  It never makes dialogs of its own.

See C{doc/peers.md} (dialog) for the whole design.
"""

from __future__ import annotations

from collections import deque
from typing import Callable, Deque, Dict, List, Optional

import attr
from twisted.application import service
from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from zope.interface import implementer

from dmq import sip
from dmq.interfaces import IDMQBus, IDMQPeer, PeerResponse
from dmq.node import Node
from dmq.peers.dialog.store import Dialog, DialogChange, DialogStore, StoreFull, UnknownDialog
from dmq.peers.dialog.wire import (
    CONTENT_TYPE,
    BadMessage,
    DialogId,
    DialogState,
    SyncRequest,
    decode,
    encode,
)
from dmq.ratelimit import RateLimitedWarnings
from dmq.peers.joins import Joins
from dmq.peers.sending import sendOrBroadcast

__all__ = ["PEER_ID", "DialogPeer"]

PEER_ID = "dialog"


@attr.define
class _Dump:
    """
    The dialogs being sent to one node for its sync request: at most
    C{window} requests in flight at once, so that a large store neither
    floods the node nor fills our transaction table.  Each dialog is
    encoded when its turn comes: a dump holds references, not bodies.
    """

    node: Optional[Node]
    dialogs: Deque[Dialog]
    window: int
    inFlight: int = 0
    pumping: bool = False


@implementer(IDMQPeer)
class DialogPeer(service.Service):
    """
    The dialogs of the bus, read-only, and the bus peer that keeps them.

    Register it on the bus and start it (its timer drops expired dialogs;
    L{stopService} stops it and any sync dump being sent)::

        peer = DialogPeer(reactor, node.bus)
        node.bus.registerPeer(peer)
        peer.setServiceParent(node)
        peer.subscribe(lambda change: print(change.kind, change.dialog.state))

    @ivar peerId: the channel name, C{"dialog"} by default.
    @ivar initSync: whether to ask for the dialogs when joining the bus
        (Kamailio's dialog module always does).
    @ivar statistics: counts of what happened to received requests, by
        outcome: C{applied}, C{syncRequests}, C{badRequests},
        C{unknownDialogs}, C{full}.
    """

    _log = Logger()

    description = "dialog: the calls of Kamailio's dialog module (enable_dmq)"

    def __init__(
        self,
        clock: IReactorTime,
        bus: IDMQBus,
        peerId: str = PEER_ID,
        initSync: bool = True,
        maxDialogs: int = 100000,
        deletedKeep: float = 120.0,
        purgeInterval: float = 10.0,
        syncWindow: int = 32,
    ) -> None:
        """
        @param clock: the source of time.
        @param bus: the bus to send on.
        @param peerId: the channel name (Kamailio's C{dlg_dmq_peer_id}, 6.0
            and later; always C{dialog} before).
        @param initSync: ask one node for its dialogs on joining.
        @param maxDialogs: the most dialogs held; a new one past it is
            answered C{503}.
        @param deletedKeep: seconds a deleted dialog is kept for its owner's
            removal, which normally follows within seconds.
        @param purgeInterval: seconds between drops of expired dialogs.
        @param syncWindow: the most requests of a sync dump in flight at once.
        """
        if purgeInterval <= 0:
            raise ValueError("purgeInterval must be positive")
        if syncWindow < 1:
            raise ValueError("syncWindow must be at least 1")
        self._clock = clock
        self._bus = bus
        self.peerId = peerId
        self.initSync = initSync
        self._purgeInterval = purgeInterval
        self._syncWindow = syncWindow
        self._store = DialogStore(clock, maxDialogs, deletedKeep)
        self._purger: Optional[LoopingCall] = None
        self._joins = Joins()
        self._dumps: Dict[Optional[Node], _Dump] = {}
        self._warnings = RateLimitedWarnings(clock, self._log)
        self.statistics: Dict[str, int] = dict.fromkeys(
            ("applied", "syncRequests", "badRequests", "unknownDialogs", "full"), 0
        )

    # Service

    def startService(self) -> None:
        service.Service.startService(self)
        self._purger = LoopingCall(self._store.purgeExpired)
        self._purger.clock = self._clock
        self._purger.start(self._purgeInterval, now=False).addErrback(
            lambda f: self._log.failure("dialog purge failed", f)
        )

    def stopService(self) -> Deferred[object]:
        """
        Stop the purge timer and the sync dumps being sent.

        @return: a L{Deferred} that has fired: nothing else is left running.
        """
        service.Service.stopService(self)
        self._joins = Joins()
        self._dumps.clear()
        if self._purger is not None:
            if self._purger.running:
                self._purger.stop()
            self._purger = None
        return succeed(None)

    # Reading

    def __len__(self) -> int:
        return len(self._store)

    def dialogs(self) -> List[Dialog]:
        """
        @return: every dialog held, deleted ones included, in Kamailio's
            order (by C{h_entry}, then as they arrived).
        """
        return self._store.dialogs()

    def get(self, hEntry: int, hId: int) -> Optional[Dialog]:
        """
        @return: the dialog C{hEntry:hId}, or C{None}.
        """
        return self._store.get(DialogId(hEntry, hId))

    def find(self, callID: str, fromTag: Optional[str] = None) -> List[Dialog]:
        """
        @return: the dialogs of Call-ID C{callID} (and, if given, whose
            caller's tag is C{fromTag}), in Kamailio's order.
        """
        return [
            dialog
            for dialog in self._store.dialogs()
            if dialog.callID == callID and (fromTag is None or dialog.caller.tag == fromTag)
        ]

    def expiresAt(self, hEntry: int, hId: int) -> Optional[float]:
        """
        @return: when dialog C{hEntry:hId} will be dropped unless its owner
            tells us more, in clock time, or C{None}.
        """
        return self._store.expiresAt(DialogId(hEntry, hId))

    def subscribe(self, callback: Callable[[DialogChange], object]) -> Callable[[], None]:
        """
        Call C{callback} with a L{DialogChange} after each change to any
        dialog.  Exceptions it raises are logged and ignored.

        @return: a function that cancels the subscription.
        """
        return self._store.subscribe(callback)

    def purgeExpired(self) -> int:
        """
        Drop every expired dialog now (the purge timer calls this).

        @return: how many were dropped.
        """
        return self._store.purgeExpired()

    # Sync

    def requestSync(self, node: Optional[Node] = None) -> Deferred[object]:
        """
        Ask C{node}, or every active node, for its dialogs: they arrive as
        updates, applied as they come.

        @return: a L{Deferred} that fires with the final response of
            C{node} (C{None} if it could not be sent), or with the broadcast
            result.
        """
        return self._send(encode(SyncRequest()), node, "sync request")

    def syncBodies(self) -> List[bytes]:
        """
        The bodies of the updates a sync dump sends now: one per dialog
        held, deleted ones left out, in Kamailio's order.
        """
        return [encode(dialog.toUpdate()) for dialog in self._dumped()]

    def _dumped(self) -> List[Dialog]:
        return [d for d in self._store.dialogs() if d.state is not DialogState.DELETED]

    def _startDump(self, node: Optional[Node]) -> None:
        if node in self._dumps:
            self._log.info("A dialog sync dump to {node} is under way already", node=node)
            return
        dialogs = self._dumped()
        self._log.info(
            "Sending {count} dialogs to {node}",
            count=len(dialogs),
            node=node if node is not None else "every active node",
        )
        dump = _Dump(node, deque(dialogs), self._syncWindow)
        self._dumps[node] = dump
        self._pump(dump)

    def _pump(self, dump: _Dump) -> None:
        if self._dumps.get(dump.node) is not dump or dump.pumping:
            # Stopped, or the loop below will see the free place.
            return
        dump.pumping = True
        while dump.dialogs and dump.inFlight < dump.window:
            dump.inFlight += 1
            body = encode(dump.dialogs.popleft().toUpdate())
            d = self._send(body, dump.node, "sync dump")
            d.addBoth(self._sent, dump)
        dump.pumping = False
        if not dump.dialogs and not dump.inFlight:
            del self._dumps[dump.node]

    def _sent(self, result: object, dump: _Dump) -> None:
        dump.inFlight -= 1
        self._pump(dump)

    # IDMQPeer

    def nodeAdded(self, node: Node) -> None:
        """
        With C{initSync}, ask C{node} for its dialogs when no other node we
        were told of is still active: we just joined, or rejoined after
        losing every node.
        """
        if not self.initSync:
            return
        if self._joins.joined(node, self._bus.nodes()):
            self._log.info("Asking {node} for its dialogs", node=node)
            self.requestSync(node)

    def messageReceived(self, request: sip.Request, node: Optional[Node]) -> PeerResponse:
        """
        Apply an update, a state change or a removal, or answer a sync
        request with our dialogs: C{200}.  A body L{decode} refuses is
        answered C{400} with its reason; a state change or removal of a
        dialog we do not hold C{500}, as by Kamailio; a new dialog when we
        hold our most C{503}.
        """
        sender = node.uri.toString() if node is not None else None
        try:
            message = decode(request.body)
        except BadMessage as e:
            self.statistics["badRequests"] += 1
            self._warnings.warn(
                "dialog-bad-request",
                "Bad dialog message from {sender}: {detail}; answered 400",
                sender=sender or sip.fromURI(request),
                detail=e.detail or "not a JSON object",
            )
            return PeerResponse(400, e.reason)
        if isinstance(message, SyncRequest):
            self.statistics["syncRequests"] += 1
            self._startDump(node)
            return PeerResponse(200, "OK")
        try:
            self._store.apply(message, sender)
        except UnknownDialog as e:
            self.statistics["unknownDialogs"] += 1
            self._log.info(
                "dialog {id} is not known here; answered 500", id=str(e.args[0])
            )
            return PeerResponse(500, "Server Internal Error")
        except StoreFull:
            self.statistics["full"] += 1
            self._warnings.warn(
                "dialog-store-full",
                "Refused a new dialog from {sender}: {count} dialogs held already; answered 503",
                sender=sender,
                count=len(self._store),
            )
            return PeerResponse(503, "Service Unavailable (too many dialogs)")
        self.statistics["applied"] += 1
        return PeerResponse(200, "OK")

    # Sending

    def _send(self, body: bytes, node: Optional[Node], what: str) -> Deferred[object]:
        """
        Send C{body} to C{node}, or to every active node; C{what} names it
        in the warning logged when it cannot be sent.
        """
        return sendOrBroadcast(
            self._bus, self.peerId, body, node, CONTENT_TYPE, self._warnings, "dialog-not-sent", f"dialog {what}"
        )
