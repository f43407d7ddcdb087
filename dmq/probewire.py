# -*- test-case-name: dmq.test.test_probe -*-
"""
The body of the failure detector's channel, C{dmq_probe}: a dmq-only
channel (a Kamailio node answers it C{404}, having no such peer), so its
format is ours.  A body is ASCII text, one item a line::

    ping 1700000000123
    alive sip:127.0.0.11:5060 42
    suspect sip:127.0.0.12:5060 7

The first line says what the message is and gives the sender's own
incarnation: C{ping INC} (a direct probe), C{ping-req INC URI} (probe
C{URI} for me), C{ack INC} (the body of a C{200}), C{ack INC URI} (a
request: C{URI} answered the probe you asked me for).  The lines after it
are the membership news the message carries (SWIM's piggybacking):
C{alive}, C{suspect} or C{dead}, a node URI and its incarnation.
"""

from __future__ import annotations

import math
from typing import Any, Dict, Hashable, List, Optional, Sequence, Tuple

import attr

from dmq import sip
from dmq.nodeaddress import checkNodeURI

__all__ = [
    "CONTENT_TYPE", "KINDS", "STATES", "MAX_BODY", "MAX_NEWS", "BadProbe", "News", "ProbeMessage",
    "encodeProbe", "decodeProbe", "NewsQueue",
]

CONTENT_TYPE = "text/x-dmq-probe"

#: What a message may be.
KINDS = ("ping", "ping-req", "ack")

#: What a line of news may say of a node.
STATES = ("alive", "suspect", "dead")

#: The most octets of a body we read: 40 lines of the longest URIs fit.
MAX_BODY = 16384

#: The most lines of news one message carries, and the most read.
MAX_NEWS = 8

#: Incarnations are counters we write; anything longer is not ours.
_MAX_DIGITS = 20


class BadProbe(ValueError):
    """
    A body that is not a probe message as we write them.
    """


@attr.frozen
class News:
    """
    One line of membership news: C{state} of the node at C{uri}, as of its
    incarnation C{incarnation}.
    """

    state: str
    uri: sip.URI
    incarnation: int


@attr.frozen
class ProbeMessage:
    """
    One message of the detector's channel.

    @ivar kind: one of L{KINDS}.
    @ivar incarnation: the sender's own incarnation.
    @ivar target: for a C{ping-req}, the node to probe; for an C{ack} sent
        as a request, the node that answered; else C{None}.
    @ivar news: the membership news it carries.
    """

    kind: str
    incarnation: int
    target: Optional[sip.URI] = None
    news: Tuple[News, ...] = ()


def _incarnation(text: str) -> int:
    if not text.isdigit() or len(text) > _MAX_DIGITS:
        raise BadProbe(f"bad incarnation {text[:30]!r}")
    return int(text)


def _uri(text: str) -> sip.URI:
    try:
        uri = sip.parseURI(text)
        checkNodeURI(uri)
    except (sip.SIPParseError, ValueError):
        raise BadProbe(f"bad node URI {text[:80]!r}") from None
    return uri


def encodeProbe(message: ProbeMessage) -> bytes:
    """
    Write C{message} as a body; the news past L{MAX_NEWS} is left out.
    """
    first = [message.kind, str(message.incarnation)]
    if message.target is not None:
        first.append(message.target.toString())
    lines = [" ".join(first)]
    for news in message.news[:MAX_NEWS]:
        lines.append(f"{news.state} {news.uri.toString()} {news.incarnation}")
    return ("\r\n".join(lines) + "\r\n").encode("ascii")


def decodeProbe(body: bytes) -> ProbeMessage:
    """
    Read a body written by L{encodeProbe}.

    @raise BadProbe: for anything else.
    """
    if len(body) > MAX_BODY:
        raise BadProbe("body too long")
    try:
        text = body.decode("ascii")
    except UnicodeDecodeError:
        raise BadProbe("not ASCII") from None
    lines: Sequence[str] = [line for line in text.split("\r\n") if line]
    if not lines:
        raise BadProbe("empty")
    first = lines[0].split(" ")
    kind = first[0]
    if kind not in KINDS:
        raise BadProbe(f"unknown kind {kind[:20]!r}")
    wanted = {"ping": (2,), "ping-req": (3,), "ack": (2, 3)}[kind]
    if len(first) not in wanted:
        raise BadProbe(f"a {kind} line has {' or '.join(map(str, wanted))} fields")
    incarnation = _incarnation(first[1])
    target = _uri(first[2]) if len(first) == 3 else None
    if len(lines) - 1 > MAX_NEWS:
        raise BadProbe("too much news")
    news: List[News] = []
    for line in lines[1:]:
        fields = line.split(" ")
        if len(fields) != 3 or fields[0] not in STATES:
            raise BadProbe(f"bad news line {line[:80]!r}")
        news.append(News(fields[0], _uri(fields[1]), _incarnation(fields[2])))
    return ProbeMessage(kind, incarnation, target, tuple(news))


#: How many times each item of news is passed on: this times
#: log10(n + 1), rounded up, as memberlist does.
RETRANSMIT_MULT = 4


class NewsQueue:
    """
    The news a node passes on, each item a bounded number of times (SWIM's
    dissemination), the least passed on first; newer news of a node
    replaces the older.
    """

    def __init__(self) -> None:
        # Each entry [news, times passed on]: a list, so that take counts
        # in place; its two types in one list leave it a list of Any.
        self._items: Dict[Hashable, List[Any]] = {}

    def __len__(self) -> int:
        return len(self._items)

    def spread(self, key: Hashable, news: News) -> None:
        """
        Pass on C{news} about the node C{key} names, from now on.
        """
        self._items[key] = [news, 0]

    def take(self, members: int, first: Optional[News] = None) -> List[News]:
        """
        The news for one message: C{first}, then up to L{MAX_NEWS} in all,
        each counted as passed on once more, and dropped once passed on
        often enough for a bus of C{members} nodes.
        """
        limit = RETRANSMIT_MULT * max(1, math.ceil(math.log10(members + 2)))
        taken = [] if first is None else [first]
        for key, entry in sorted(self._items.items(), key=lambda item: item[1][1]):
            if len(taken) >= MAX_NEWS:
                break
            if entry[0] is first:
                continue
            taken.append(entry[0])
            entry[1] += 1
            if entry[1] >= limit:
                del self._items[key]
        return taken

    def clear(self) -> None:
        self._items.clear()
