# -*- test-case-name: dmq.test.test_usrloc_peer -*-
"""
L{UsrlocPeer}: the registrations of a Kamailio cluster, and the bus peer
that replicates them as Kamailio's C{dmq_usrloc} does.  It applies the
messages L{decode} reads to its L{UsrlocStore}, and holds the replication
and sync policy: local changes are broadcast, changes from the bus are
applied and never sent again, a sync request is answered with a paced
dump, and with C{sync} one node is asked on joining.

See C{doc/peers.md} (usrloc) for the whole design.
"""

from __future__ import annotations

from collections import Counter
from typing import Callable, Iterator, List, Optional, Tuple

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
from dmq.peers.usrloc.apply import BusChanges
from dmq.peers.usrloc.contact import Contact
from dmq.peers.usrloc.store import Change, UsrlocStore
from dmq.peers.joins import Joins
from dmq.peers.sending import sendOrBroadcast
from dmq.peers.usrloc.sync import Dumps
from dmq.peers.usrloc.wire import (
    CONTENT_TYPE,
    MAX_BATCH_CONTACTS,
    MAX_BATCH_SIZE,
    MAX_CONTACT_BODY,
    Action,
    BadMessage,
    SocketInfo,
    SyncRequest,
    decode,
    encodeBatches,
    encodeContact,
    encodeSyncRequest,
)
from dmq.ratelimit import RateLimitedWarnings

__all__ = ["PEER_ID", "NoSuchContact", "UsrlocPeer"]

PEER_ID = "usrloc"


class NoSuchContact(LookupError):
    """
    No contact of that AoR and record id is held.
    """


@implementer(IDMQPeer)
class UsrlocPeer(service.Service):
    """
    The registrations of a cluster, and the bus peer that replicates them.

    Register it on the bus and start it (it is a Service: its timer purges
    expired contacts, and L{stopService} stops it and any dump)::

        peer = UsrlocPeer(reactor, node.bus, batchMsgContacts=50)
        node.addPeer(peer)
        peer.subscribe(print)
        peer.save(Contact("alice", "sip:alice@192.0.2.10:5060",
                          expires=int(time.time()) + 3600))

    Reading never touches the network.  L{save} and L{delete} change the
    store at once and return a L{Deferred} that fires, when the change was
    broadcast, with the L{IDMQBus.broadcast} result (each target node's
    final response).  It never fails: sending is best effort, as in
    Kamailio.

    @ivar peerId: the channel name, C{"usrloc"} by default.
    @ivar sync: whether to ask for the contacts when joining the bus.
    @ivar statistics: a C{Counter} of what happened to requests:
        C{received}, C{badMessages} (answered 400), C{badEntries} (entries
        of a batch skipped), C{dropped} (contacts refused for a bound),
        C{syncRequests}, C{syncsRefused} (answered 503), C{dumpBodies}.
    """

    _log = Logger()

    description = "usrloc: replicated registrations (Kamailio's dmq_usrloc)"

    def __init__(
        self,
        clock: IReactorTime,
        bus: IDMQBus,
        peerId: str = PEER_ID,
        sync: bool = True,
        batchMsgContacts: int = 1,
        batchMsgSize: int = MAX_BATCH_SIZE,
        socketInfo: int = SocketInfo.NONE,
        purgeInterval: float = 1.0,
        maxAoRs: int = 100000,
        maxContacts: int = 200000,
        maxContactsPerAoR: int = 100,
        dumpWindow: int = 32,
        maxDumps: int = 4,
    ) -> None:
        """
        @param clock: the source of time; contact expiry is in its seconds,
            taken as Unix time on the wire.
        @param bus: the bus to send on.
        @param peerId: the channel name (Kamailio master's C{dmq_peer_id}).
        @param sync: ask for the contacts on joining (Kamailio's C{sync}).
        @param batchMsgContacts: contacts per sync dump body, 1 to 150
            (Kamailio's C{batch_msg_contacts}); over 1, C{multi} bodies.
        @param batchMsgSize: the most octets of a C{multi} body, up to
            60000 (Kamailio's C{batch_msg_size}).
        @param socketInfo: a L{SocketInfo} (Kamailio's
            C{replicate_socket_info}, 0 to 2).
        @param purgeInterval: seconds between purges of expired contacts
            (usrloc's C{timer_interval}).
        @param maxAoRs: the most addresses of record held.
        @param maxContacts: the most contacts held in all.
        @param maxContactsPerAoR: the most contacts of one address of record.
        @param dumpWindow: the most requests of one dump awaiting replies.
        @param maxDumps: the most dumps sent at once; a sync request past
            that is answered C{503}.

        @raise ValueError: for a value out of those ranges.
        """
        if not 1 <= batchMsgContacts <= MAX_BATCH_CONTACTS:
            raise ValueError(f"batchMsgContacts must be 1 to {MAX_BATCH_CONTACTS}")
        if not 1 <= batchMsgSize <= MAX_BATCH_SIZE:
            raise ValueError(f"batchMsgSize must be 1 to {MAX_BATCH_SIZE}")
        if socketInfo not in tuple(SocketInfo):
            raise ValueError("socketInfo must be 0, 1 or 2")
        if purgeInterval <= 0:
            raise ValueError("purgeInterval must be positive")
        self._clock = clock
        self._bus = bus
        self.peerId = peerId
        self.sync = sync
        self.batchMsgContacts = batchMsgContacts
        self.batchMsgSize = batchMsgSize
        self.socketInfo = SocketInfo(socketInfo)
        self._purgeInterval = purgeInterval
        self._store = UsrlocStore(clock, maxAoRs, maxContacts, maxContactsPerAoR)
        self._purger: Optional[LoopingCall] = None
        self._joins = Joins()
        self._dumps = Dumps(self._dumpBody, dumpWindow, maxDumps)
        self._warnings = RateLimitedWarnings(clock, self._log)
        self.statistics: Counter[str] = Counter()
        self._changes = BusChanges(self._store, self.statistics, self._warnings)

    # Service

    def startService(self) -> None:
        service.Service.startService(self)
        self._purger = LoopingCall(self.purgeExpired)
        self._purger.clock = self._clock
        self._purger.start(self._purgeInterval, now=False).addErrback(
            lambda f: self._log.failure("usrloc purge failed", f)
        )

    def stopService(self) -> Deferred[object]:
        """
        Stop the purge timer and any dump in progress.

        @return: a L{Deferred} that has fired: nothing else is left running.
        """
        service.Service.stopService(self)
        self._joins = Joins()
        self._dumps.cancel()
        if self._purger is not None:
            if self._purger.running:
                self._purger.stop()
            self._purger = None
        return succeed(None)

    # Reading, as the store reads

    def lookup(self, aor: str) -> List[Contact]:
        """
        @return: the live contacts of C{aor}, highest q first; C{[]} when
            there are none.
        """
        return self._store.lookup(aor)

    def contacts(self) -> List[Contact]:
        """
        @return: every live contact, AoR by AoR in usrloc's order.
        """
        return self._store.contacts()

    def aors(self) -> List[str]:
        """
        @return: the addresses of record held, in usrloc's order.
        """
        return self._store.aors()

    def hasAoR(self, aor: str) -> bool:
        """
        @return: whether C{aor} has contacts, live or expired not yet purged.
        """
        return aor in self._store

    def records(self) -> List[Tuple[str, int, List[Contact]]]:
        """
        @return: what L{UsrlocStore.records} returns: C{(aor, hash,
            contacts)} per AoR, expired contacts not yet purged included.
        """
        return self._store.records()

    def subscribe(self, callback: Callable[[Change], object]) -> Callable[[], None]:
        """
        Call C{callback} with a L{Change} after each insert, update, delete
        or expiry of a contact, whatever its origin.  Exceptions it raises
        are logged and ignored.

        @return: a function that cancels the subscription.
        """
        return self._store.subscribe(callback)

    # Changing, then replicating

    def save(self, contact: Contact) -> Deferred[object]:
        """
        Add C{contact}, or update the one of its AoR with its record id (or
        else its URI, whose record id is kept), stamped with the time now as
        its C{lastModified}, and replicate it (action 1).

        @raise StoreFull: when it would take the store past a bound.
        @raise ValueError: when its body would be over
            C{MAX_CONTACT_BODY} octets.
        """
        contact = attr.evolve(contact, lastModified=int(self._clock.seconds()))
        body = encodeContact(Action.UPDATE, contact, self.socketInfo)
        if len(body) > MAX_CONTACT_BODY:
            raise ValueError(f"the contact takes {len(body)} octets, over {MAX_CONTACT_BODY}")
        change = self._store.save(contact, "local")
        if change is None:
            return succeed({})
        # The contact of the same URI it updated keeps its ruid.
        return self._send(encodeContact(Action.UPDATE, change.contact, self.socketInfo), None, "replication")

    def delete(self, aor: str, ruid: str) -> Deferred[object]:
        """
        Remove the contact C{ruid} of C{aor}, and replicate that (action 2,
        with the whole contact, as Kamailio sends it).

        @raise NoSuchContact: when there is none.
        """
        removed = self._store.remove(aor, ruid, "local")
        if removed is None:
            raise NoSuchContact(f"no contact {ruid!r} of {aor!r}")
        return self._send(encodeContact(Action.REMOVE, removed, self.socketInfo), None, "replication")

    def purgeExpired(self) -> None:
        """
        Drop every expired contact now (the purge timer calls this).  As
        in Kamailio 5.6, nothing is sent: every node expires a contact at
        the same absolute time.
        """
        self._store.purgeExpired()

    # Sync

    def requestSync(self, node: Optional[Node] = None) -> Deferred[object]:
        """
        Ask C{node}, or every active node, for its contacts (C{{"action":3}}).
        They arrive as their own requests, applied as they come.

        @return: a L{Deferred} that fires with the final response of
            C{node} (C{None} if it could not be sent), or with the broadcast
            result.
        """
        return self._send(encodeSyncRequest(), node, "sync request")

    def syncBodies(self) -> Iterator[bytes]:
        """
        The bodies a sync dump sends now, made as they are iterated: every
        live contact as it is then, AoR by AoR in usrloc's order, cut as
        C{batchMsgContacts} and C{batchMsgSize} say (L{encodeBatches}).
        """
        keys = [(contact.aor, contact.ruid) for contact in self._store.contacts()]

        def current() -> Iterator[Contact]:
            # A contact changed since is sent as it is now; one gone, not.
            for aor, ruid in keys:
                contact = self._store.find(aor, ruid)
                if contact is not None and not contact.expired(self._clock.seconds()):
                    yield contact

        return encodeBatches(current(), self.batchMsgContacts, self.batchMsgSize, self.socketInfo)

    def _dumpBody(self, body: bytes, node: Optional[Node]) -> Deferred[object]:
        self.statistics["dumpBodies"] += 1
        return self._send(body, node, "sync dump")

    # IDMQPeer

    def nodeAdded(self, node: Node) -> None:
        """
        With C{sync}, ask C{node} for the contacts when no other node we
        were told of is still active: we just joined, or rejoined after
        losing every node.
        """
        if not self.sync:
            return
        if self._joins.joined(node, self._bus.nodes()):
            self._log.info("Asking {node} for the usrloc contacts", node=node)
            self.requestSync(node)

    def messageReceived(self, request: sip.Request, node: Optional[Node]) -> PeerResponse:
        """
        Apply a change or a batch, or answer a sync request with a dump:
        C{200}; a body L{decode} refuses, or a batch with a bad entry (the
        others are applied), is answered C{400} with its reason; a sync
        request while C{maxDumps} dumps are on their way, C{503}.
        """
        self.statistics["received"] += 1
        sender = node if node is not None else sip.fromURI(request)
        try:
            message = decode(request.body, self.socketInfo)
        except BadMessage as e:
            self.statistics["badMessages"] += 1
            self._warnings.warn(
                "usrloc bad message",
                "Bad usrloc message from {sender}: {detail}; answered 400",
                sender=sender,
                detail=e.detail or "not a JSON object",
            )
            return PeerResponse(400, e.reason)
        if isinstance(message, SyncRequest):
            self.statistics["syncRequests"] += 1
            if not self._dumps.start(node, self.syncBodies):
                self.statistics["syncsRefused"] += 1
                self._warnings.warn(
                    "usrloc sync refused",
                    "usrloc sync request from {sender} refused: {count} dumps on their way",
                    sender=sender,
                    count=len(self._dumps),
                )
                return PeerResponse(503, "Service Unavailable")
            return PeerResponse(200, "OK")
        return self._changes.apply(message, sender)

    # Sending

    def _send(self, body: bytes, node: Optional[Node], what: str) -> Deferred[object]:
        """
        Send C{body} to C{node}, or to every active node; C{what} names it
        in the warning logged when it cannot be sent.
        """
        return sendOrBroadcast(
            self._bus, self.peerId, body, node, CONTENT_TYPE, self._warnings, "usrloc send failed", f"usrloc {what}"
        )
