# -*- test-case-name: dmq.test.test_probe -*-
"""
A SWIM-like failure detector between dmq nodes, on the dmq-only channel
C{dmq_probe} (L{dmq.probewire}): L{ProbeDetector}.

Every C{interval} seconds it starts a round on one node (round robin over a
shuffled list): a direct ping; when no answer came within C{timeout}, pings
through C{indirect} other dmq nodes (C{ping-req}); when none answered within
C{roundTimeout}, the node is I{suspected}.  Rounds overlap (a node has
one at a time).  A suspicion goes at once to every dmq
node (the suspect included, which refutes it by raising its incarnation),
and each of them checks the suspect with a round of its own.  A node whose
own check failed too declares the suspect dead C{suspicion} seconds after the
suspicion began; one whose check succeeded waits C{suspicionMax} seconds for
the refutation.  Dead is C{disabled} in the node list; C{removeAfter}
seconds later the node is removed (and tombstoned).  A node declared dead,
disabled or removed, is pinged now and then for a while: its answer brings
it back (a partition healed).

Membership news (alive, suspect, dead, with incarnations) rides on every
probe and its answer, each item a bounded number of times.  A node that
answers the channel C{404} (a Kamailio node, or a dmq node without the
detector) is left to the ping, under Kamailio's rules, as is any node that
never answered a probe.  See doc/reliability.md ("Failure detection").
"""

from __future__ import annotations

import math
import random as _random
from collections import Counter
from typing import Callable, Dict, List, Optional

import attr
from twisted.application import service
from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger
from zope.interface import implementer

from dmq import sip
from dmq.bus import DMQBus
from dmq.interfaces import IDMQPeer, INodeObserver, PeerResponse
from dmq.node import Node, NodeError, NodeManager, NodeStatus
from dmq.nodelist import NodeLine, nodeKey
from dmq.probestate import DeadNodes, Member, Round
from dmq.probewire import CONTENT_TYPE, BadProbe, News, NewsQueue, ProbeMessage, decodeProbe, encodeProbe
from dmq.ratelimit import RateLimitedWarnings

__all__ = ["ProbeDetector", "PROBE_PEER_ID"]

PROBE_PEER_ID = "dmq_probe"

#: Every how many ticks a node we declared dead (disabled, then removed) is
#: pinged (L{DeadNodes}).
GONE_EVERY = 4


@implementer(IDMQPeer, INodeObserver)
class ProbeDetector(service.Service):
    """
    The failure detector, as the peer of its channel and as the Service that
    probes.

    @ivar incarnation: our own incarnation: the start time in milliseconds,
        raised by one for each suspicion we refute.
    @ivar statistics: counters: C{probes}, C{indirectProbes}, C{suspicions},
        C{refuted} (suspicions of others cleared), C{refutations} (of
        suspicions of us), C{deaths}, C{removals}, C{goneProbes} (pings of
        nodes declared dead, disabled or removed since), C{goneBack} (those
        that answered),
        C{badMessages}; the metric C{dmq_probe_events_total}.
    """

    _log = Logger()

    description = "DMQ failure detector (SWIM-like, dmq nodes only)"
    # Open to non-members, as the join is: a node we removed must hear it is
    # dead to us to join again, and a stranger's news is never taken.
    acceptsStrangers = True

    def __init__(
        self,
        clock: IReactorTime,
        bus: DMQBus,
        nodeManager: NodeManager,
        *,
        peerId: str = PROBE_PEER_ID,
        interval: float = 0.5,
        timeout: float = 0.25,
        roundTimeout: float = 1.0,
        indirect: int = 3,
        suspicion: float = 1.5,
        suspicionMax: float = 6.0,
        removeAfter: float = 4.0,
        random: Optional[_random.Random] = None,
    ) -> None:
        if not 0 < timeout < roundTimeout:
            raise ValueError("the probe timeout must be positive and shorter than the round's")
        if not 0 < suspicion <= suspicionMax:
            raise ValueError("suspicion must be positive and at most suspicionMax")
        self._clock = clock
        self._bus = bus
        self._nodeManager = nodeManager
        self.peerId = peerId
        self.interval = interval
        self.timeout = timeout
        self.roundTimeout = roundTimeout
        self.indirect = indirect
        self.suspicion = suspicion
        self.suspicionMax = suspicionMax
        self.removeAfter = removeAfter
        self._random = random if random is not None else _random.Random()
        self._warnings = RateLimitedWarnings(clock, self._log)
        self.incarnation = int(clock.seconds() * 1000)
        self.statistics: Counter[str] = Counter()
        self._members: Dict[object, Member] = {}
        self._order: List[object] = []
        self._news = NewsQueue()
        self._rounds: List[Round] = []
        self._loop: Optional[IDelayedCall] = None
        #: Called when we learn that a node declared us dead: announce our
        #: node list again (L{dmq.tap} sets it).
        self.rejoin: Optional[Callable[[], object]] = None
        self._rejoinedAt = -math.inf
        self._gone = DeadNodes(clock)
        self._ticks = 0
        nodeManager.addObserver(self)

    # Who is covered

    def covers(self, node: Node) -> bool:
        """
        Whether the detector watches C{node} (it answered a probe): its
        pings' timeouts are then not counted by Kamailio's rules.
        """
        member = self._members.get(node.key)
        return member is not None and member.capable is True

    @property
    def suspects(self) -> int:
        """
        How many nodes are suspected now (neither refuted nor dead yet).
        """
        return sum(1 for member in self._members.values() if member.state == "suspect")

    # Service

    def startService(self) -> None:
        service.Service.startService(self)
        self.incarnation = max(self.incarnation, int(self._clock.seconds() * 1000))
        self._loop = self._clock.callLater(self.interval, self._tick)

    def stopService(self) -> Deferred[None]:
        service.Service.stopService(self)
        if self._loop is not None and self._loop.active():
            self._loop.cancel()
        self._loop = None
        for round in self._rounds:
            for call in round.calls:
                if call.active():
                    call.cancel()
        self._rounds = []
        for member in self._members.values():
            member.cancel()
            member.probing = False
        self._news.clear()
        return succeed(None)

    # INodeObserver

    def nodeActivated(self, node: Node) -> None:
        member = self._member(node)
        if member.state != "alive":
            member.cancel()
            member.state = "alive"
        if member.capable is None and self.running:
            # Ask at once whether it runs the detector: until we know, a
            # node killed right after its join is left to the ping.
            self._send(node, self._message("ping"), self.suspicionMax).addCallback(self._told, member)

    def nodeDeactivated(self, node: Node) -> None:
        member = self._members.get(node.key)
        if member is None:
            return
        if self._nodeManager.find(node.uri) is None:
            member.cancel()
            del self._members[node.key]
        elif member.state != "dead":
            member.cancel()
            member.state = "dead"

    # The rounds

    def _tick(self) -> None:
        self._loop = self._clock.callLater(self.interval, self._tick)
        self._ticks += 1
        try:
            member = self._nextTarget()
            if member is not None:
                self._probe(member, check=False)
            if self._gone and self._ticks % GONE_EVERY == 0:
                self._probeGone()
        except Exception:
            self._warnings.failure("probeTick", "A probe tick failed; the next one runs as usual")

    def _nextTarget(self) -> Optional[Member]:
        for _ in range(2):
            while self._order:
                key = self._order.pop()
                member = self._members.get(key)
                if member is not None and self._up(member, False):
                    return member
            for key, member in list(self._members.items()):
                if self._nodeManager.find(member.node.uri) is None:
                    member.cancel()
                    del self._members[key]
            for node in self._nodeManager.activeNodes():
                self._member(node)
            self._order = [
                key for key, member in self._members.items() if member.capable is not False
            ]
            self._random.shuffle(self._order)
        return None

    @staticmethod
    def _up(member: Member, known: bool) -> bool:
        # Alive and active; a dmq node with the detector (known), or not
        # known not to be one.
        capable = member.capable is True if known else member.capable is not False
        return capable and member.state == "alive" and member.node.status is NodeStatus.ACTIVE

    def _probe(self, member: Member, check: bool) -> None:
        if member.probing or not self.running:
            # The round out now is as good as a check.
            return
        member.probing = True
        round = Round(member, check)
        self._rounds.append(round)
        self.statistics["probes"] += 1
        self._send(member.node, self._message("ping"), self.roundTimeout).addCallback(self._directAnswered, round)
        round.calls.append(self._clock.callLater(self.timeout, self._indirect, round))
        round.calls.append(self._clock.callLater(self.roundTimeout, self._roundEnded, round))

    def _directAnswered(self, response: Optional[sip.Response], round: Round) -> None:
        if response is None or round.acked:
            return
        member = round.member
        if response.code == 404:
            # Not a dmq node with the detector: the ping watches it.
            member.capable = False
        elif response.code == 200:
            member.capable = True
            self._received(response.body, member.node)
        round.acked = True

    def _indirect(self, round: Round) -> None:
        member = round.member
        if round.acked or member.capable is not True:
            return
        helpers = [
            other for other in self._members.values() if other is not member and self._up(other, True)
        ]
        chosen = self._random.sample(helpers, min(self.indirect, len(helpers)))
        body = self._message("ping-req", member.node.uri)
        for helper in chosen:
            self.statistics["indirectProbes"] += 1
            d = self._send(helper.node, body, self.roundTimeout - self.timeout)
            d.addCallback(self._indirectAnswered, round, helper)

    def _indirectAnswered(self, response: Optional[sip.Response], round: Round, helper: Member) -> None:
        # The helper's 200 says it took the request; the target's answer
        # comes as an "ack" request (messageReceived).
        if response is not None and response.code == 200:
            self._received(response.body, helper.node)

    def _roundEnded(self, round: Round) -> None:
        if round in self._rounds:
            self._rounds.remove(round)
        member = round.member
        member.probing = False
        if round.acked or member.capable is not True or not self.running:
            return
        if self._members.get(member.node.key) is not member:
            return
        if member.state == "suspect":
            # Any round of ours that failed since the suspicion began (a
            # check, or a round already out) confirms it.
            if not member.confirmed:
                member.confirmed = True
                self._reschedule(member)
        elif member.state == "alive" and not round.check:
            self._suspect(member, member.incarnation, originator=True)

    # Suspicion and death

    def _suspect(self, member: Member, incarnation: int, originator: bool) -> None:
        self.statistics["suspicions"] += 1
        member.incarnation = max(member.incarnation, incarnation)
        member.state = "suspect"
        member.suspectedAt = self._clock.seconds()
        member.confirmed = False
        self._reschedule(member)
        news = News("suspect", member.node.uri, member.incarnation)
        self._spread(news)
        self._log.info(
            "node {node} is suspected (incarnation {incarnation})",
            node=member.node, incarnation=member.incarnation,
        )
        if originator:
            # The suspect must hear it to refute it, and the others to check
            # it, sooner than news spreads.
            self._tellAll(news)
        self._probe(member, check=True)

    def _reschedule(self, member: Member) -> None:
        if member.deadline is not None and member.deadline.active():
            member.deadline.cancel()
        wait = self.suspicion if member.confirmed else self.suspicionMax
        delay = max(0.0, member.suspectedAt + wait - self._clock.seconds())
        member.deadline = self._clock.callLater(delay, self._declareDead, member)

    def _clearSuspicion(self, member: Member) -> None:
        member.cancel()
        member.state = "alive"
        self.statistics["refuted"] += 1

    def _declareDead(self, member: Member) -> None:
        member.deadline = None
        if member.state != "suspect" or not self.running:
            return
        member.state = "dead"
        self.statistics["deaths"] += 1
        self._spread(News("dead", member.node.uri, member.incarnation))
        self._log.info("node {node} is dead: its suspicion was not refuted", node=member.node)
        try:
            self._nodeManager.changeStatus(member.node.uri, NodeStatus.DISABLED)
        except NodeError:
            return
        member.state = "dead"
        member.removal = self._clock.callLater(self.removeAfter, self._remove, member)
        # Probed now and then from now on, not only once removed: nothing
        # else brings back a node that we and it declared dead while apart
        # (neither probes the other, and another node's line does not
        # change a disabled node), and the partition may heal before the
        # removal.
        self._forget(member)

    def _remove(self, member: Member) -> None:
        member.removal = None
        if member.state == "dead" and self._members.get(member.node.key) is member:
            self.statistics["removals"] += 1
            self._nodeManager.remove(member.node.uri)
            self._forget(member)

    def _forget(self, member: Member) -> None:
        """
        Count C{member} among the nodes we declared dead, pinged in turn by
        L{_probeGone}.
        """
        self._gone.add(member.node.key, member.node.uri)

    def _probeGone(self) -> None:
        """
        Ping the node we declared dead longest ago, disabled or removed
        since (and then the next, in turn): when it answers, its own word
        brings it back, and its answer tells it that we had lost it, so
        that it announces itself to us.
        """
        found = self._gone.next(self._back)
        if found is None:
            return
        key, uri = found
        self.statistics["goneProbes"] += 1
        d = self._send(Node(uri, NodeStatus.DISABLED), self._message("ping"), self.roundTimeout)
        d.addCallback(self._goneAnswered, key, uri)

    def _back(self, uri: sip.URI) -> bool:
        # In our list again, and not disabled: no longer one to look for.
        node = self._nodeManager.find(uri)
        return node is not None and node.status is not NodeStatus.DISABLED

    def _goneAnswered(self, response: Optional[sip.Response], key: object, uri: sip.URI) -> None:
        if response is None or response.code != 200 or not self.running:
            return
        self._gone.discard(key)
        if not self._back(uri):
            self.statistics["goneBack"] += 1
            self._log.info("node {node}, declared dead, answers: it is back", node=uri.toString())
            # Its own word, as the node list takes it (past the disabled
            # status, or the tombstone).
            self._nodeManager.merge([NodeLine(uri, NodeStatus.ACTIVE)], sender=uri)
        node = self._nodeManager.find(uri)
        if node is not None:
            self._received(response.body, node)

    # News

    def _spread(self, news: News) -> None:
        self._news.spread(nodeKey(news.uri), news)

    def _message(
        self, kind: str, target: Optional[sip.URI] = None, first: Optional[News] = None
    ) -> bytes:
        return encodeProbe(ProbeMessage(kind, self.incarnation, target, tuple(self._news.take(len(self._members), first))))

    def _tellAll(self, news: News) -> None:
        # Every active node but those known not to be dmq nodes with the
        # detector: one not probed yet answers 404 if it is not one.
        for node in self._nodeManager.activeNodes():
            member = self._member(node)
            if member.capable is not False:
                d = self._send(node, self._message("ping", first=news), self.suspicionMax)
                d.addCallback(self._told, member)

    def _told(self, response: Optional[sip.Response], member: Member) -> None:
        if response is None:
            return
        if response.code == 404:
            member.capable = False
        elif response.code == 200:
            member.capable = True
            self._received(response.body, member.node)

    def _refute(self, incarnation: int) -> None:
        self.incarnation = max(self.incarnation, incarnation) + 1
        self.statistics["refutations"] += 1
        self._log.info("refuting a suspicion of us: incarnation {incarnation}", incarnation=self.incarnation)
        self._tellAll(News("alive", self._nodeManager.localNode.uri, self.incarnation))

    def _member(self, node: Node) -> Member:
        member = self._members.get(node.key)
        if member is None:
            member = self._members[node.key] = Member(node)
        else:
            member.node = node
        return member

    def _received(self, body: bytes, sender: Node) -> None:
        try:
            message = decodeProbe(body)
        except BadProbe as e:
            self._bad(str(sender), str(e))
            return
        self._learn(message, sender.uri)

    def _learn(self, message: ProbeMessage, senderURI: sip.URI) -> None:
        """
        Apply the sender's own word (its incarnation), then its news.
        """
        self._ownWord(senderURI, message.incarnation)
        for news in message.news:
            self._apply(news, senderURI)

    def _ownWord(self, uri: sip.URI, incarnation: int) -> None:
        node = self._nodeManager.find(uri)
        if node is None or node.local:
            return
        member = self._member(node)
        member.capable = True
        if node.status is not NodeStatus.ACTIVE:
            if member.state == "dead" and incarnation <= member.incarnation:
                # A message from before its death, or it has not heard yet:
                # it will, from our answer.
                return
            # It speaks, with news of itself newer than its death: its own
            # line, as the node list takes it.
            self._nodeManager.merge([NodeLine(uri, NodeStatus.ACTIVE)], sender=uri)
        if incarnation > member.incarnation:
            member.incarnation = incarnation
            if member.state == "suspect":
                self._clearSuspicion(member)
                self._spread(News("alive", uri, incarnation))

    def _apply(self, news: News, senderURI: sip.URI) -> None:
        node = self._nodeManager.find(news.uri)
        if node is not None and node.local:
            if news.state != "alive" and news.incarnation >= self.incarnation:
                self._refute(news.incarnation)
                now = self._clock.seconds()
                if news.state == "dead" and self.rejoin is not None and now >= self._rejoinedAt + 5 * self.interval:
                    self._rejoinedAt = now
                    # Declared dead, we may have been removed: only our own
                    # node list brings us back there.
                    self.rejoin()
            return
        if node is None:
            if news.state == "alive":
                # A member we did not know: the node list's rules decide.
                if self._nodeManager.merge([NodeLine(news.uri, NodeStatus.ACTIVE)], sender=senderURI):
                    found = self._nodeManager.find(news.uri)
                    if found is not None:
                        self._member(found).incarnation = news.incarnation
            return
        member = self._member(node)
        if news.state == "alive":
            if news.incarnation > member.incarnation:
                member.incarnation = news.incarnation
                if member.state == "suspect":
                    self._clearSuspicion(member)
                    self._spread(news)
        elif news.incarnation >= member.incarnation and member.state == "alive":
            if member.capable is not False and node.status is NodeStatus.ACTIVE:
                # Only detectors suspect, and only nodes that answered them.
                member.capable = True
                # "dead" from another node is a suspicion here: our own check
                # decides how long it takes.
                self._suspect(member, news.incarnation, originator=False)

    # IDMQPeer

    def messageReceived(self, request: sip.Request, node: Optional[Node]) -> PeerResponse:
        """
        Answer every message with an ack; for a C{ping-req} from a node we
        know, probe the target and, when it answers, tell the asker with an
        C{ack} request.
        """
        sender = sip.fromURI(request)
        try:
            message = decodeProbe(request.body)
            if message.kind == "ack" and message.target is None:
                raise BadProbe("an ack without a node is an answer, not a request")
        except BadProbe as e:
            self._bad(_shown(sender), str(e))
            return PeerResponse(400, "Bad Request")
        if sender is None:
            return PeerResponse(400, "Bad Request")
        if not self.running:
            return PeerResponse(503, "Shutting Down")
        extra: Optional[News] = None
        if node is None or node.local:
            # Not (or no longer) in our list: tell it, so that it announces
            # itself again.  Strangers' news is not taken.
            extra = News("dead", attr.evolve(sender, user=None, password=None, headers=None), message.incarnation)
        else:
            self._learn(message, sender)
            member = self._members.get(node.key)
            if member is not None and member.state == "dead":
                extra = News("dead", node.uri, member.incarnation)
        answer = PeerResponse(200, "OK", self._message("ack", first=extra), CONTENT_TYPE)
        if message.kind == "ping" or node is None:
            return answer
        assert message.target is not None
        if message.kind == "ack":
            # A helper's word that the node we asked about answered it.
            target = self._nodeManager.find(message.target)
            for round in self._rounds:
                if target is not None and round.member.node is target:
                    round.acked = True
            return answer
        # ping-req: only from a node that is a member, about a member, so
        # that no stranger makes us send anywhere.  Answered at once: the
        # peer's workers are not held while the target is probed; its
        # answer is passed on as a request of its own.
        target = self._nodeManager.find(message.target)
        if target is None or target.local:
            return PeerResponse(404, "Not Found")
        d = self._send(target, self._message("ping"), self.roundTimeout - self.timeout)
        d.addCallback(self._relayed, target, node)
        return answer

    def _relayed(self, response: Optional[sip.Response], target: Node, asker: Node) -> None:
        if response is None or response.code != 200 or not self.running:
            return
        self._received(response.body, target)
        self._send(asker, self._message("ack", target.uri), self.roundTimeout - self.timeout)

    def nodeAdded(self, node: Node) -> None:
        pass

    # Sending

    def _send(self, node: Node, body: bytes, timeout: float) -> Deferred[Optional[sip.Response]]:
        """
        Send C{body}; fire with the response, or C{None} when there was none
        (a timeout, or the send failed).
        """
        d = self._bus.send(self.peerId, body, node, CONTENT_TYPE, 1, timeout=timeout)
        return d.addCallbacks(lambda response: None if response.code == 408 else response, lambda _: None)

    def _bad(self, sender: str, error: str) -> None:
        self.statistics["badMessages"] += 1
        self._warnings.warn(
            "badProbe", "Bad probe message from {sender}: {error}", sender=sender, error=error
        )


def _shown(uri: Optional[sip.URI]) -> str:
    return "(no From)" if uri is None else uri.toString()[:80]
