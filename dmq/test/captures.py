# -*- test-case-name: dmq.test.test_sip -*-
"""
Read the datagrams of the Kamailio captures kept in C{dmq/test/data/}.

The files are verbatim copies of real KDMQ traffic between Kamailio 5.6.3
nodes on loopback, and of hand-crafted probes sent to such nodes.  Tests use
them as wire vectors::

    from dmq.test.captures import datagrams

    for capture in datagrams("01-bus-formation.txt"):
        message = sip.parse(capture.data)

Two formats are understood:

  - the bus captures (C{01-*.txt} to C{08-*.txt}): each datagram is a line
    C{##### #n t=... epoch=... SRC -> DST len=N} followed by exactly C{N}
    octets of datagram (CRLF kept), then a newline, and a second one when
    the datagram does not end with a newline of its own;

  - the probe transcripts (C{probe-*.txt}): each datagram is a line
    C{>>>>> SENT N bytes to DST (+t s)} (sent by the prober) or
    C{<<<<< RECV N bytes from SRC (+t s)} (received by it), followed by
    exactly C{N} octets and the newlines as above.  Other lines are
    comments.  The transcripts do not record the prober's own address; it is
    read from the sent-by of the top Via of the first request the prober
    sent (it is C{127.0.0.1:5099} or C{127.0.0.1:5098}).

Every datagram is a SIP message L{dmq.sip.parse} accepts, except two
probes, on purpose: C{probe-01-errors.txt} datagram 5 (Content-Length 200,
body of 12 octets; Kamailio answered 500) and datagram 7 (C{this is not a
SIP message}; no answer).
"""

from __future__ import annotations

import os
import re
from typing import List, Tuple

import attr

__all__ = ["Capture", "datagrams", "DATA"]

# The folder of the capture files.
DATA = os.path.join(os.path.dirname(__file__), "data")

_CAPTURE = re.compile(
    rb"##### #\d+ t=\S+ epoch=\S+ (?P<source>\S+) -> (?P<destination>\S+)"
    rb" len=(?P<length>\d+)\n"
)
_PROBE = re.compile(
    rb"(?:>>>>> SENT (?P<sent>\d+) bytes to (?P<destination>\S+)"
    rb"|<<<<< RECV (?P<received>\d+) bytes from (?P<source>\S+))"
    rb" \(\+[0-9.]+ s\)\n"
)
_PROBER_VIA = re.compile(rb"\r\nVia: SIP/2\.0/UDP ([^;\s]+)")


@attr.frozen
class Capture:
    """
    One captured datagram.

    @ivar source: the sender, C{"ip:port"}.
    @ivar destination: the receiver, C{"ip:port"}.
    @ivar data: the datagram, octet for octet.
    """

    source: str
    destination: str
    data: bytes


def datagrams(name: str) -> List[Capture]:
    """
    Return the datagrams of the capture file C{name}, in the order of the file.

    @param name: a file name in C{dmq/test/data/}, such as
        C{"02-pings.txt"} or C{"probe-01-errors.txt"}.

    @raise ValueError: if the file is not in one of the two formats.
    """
    with open(os.path.join(DATA, name), "rb") as f:
        text = f.read()
    if text.startswith(b"#####"):
        return _readCapture(text, name)
    return _readProbe(text, name)


def _take(text: bytes, start: int, length: int, name: str) -> Tuple[bytes, int]:
    """
    Return the C{length} octets at C{start}, and where the next record
    starts, checking the newlines after them.
    """
    end = start + length
    data = text[start:end]
    trailer = b"\n" if data.endswith(b"\n") else b"\n\n"
    if text[end : end + len(trailer)] != trailer:
        raise ValueError(f"{name}: datagram at offset {start} is not {length} octets")
    return data, end + len(trailer)


def _readCapture(text: bytes, name: str) -> List[Capture]:
    result = []
    position = 0
    while position < len(text):
        match = _CAPTURE.match(text, position)
        if match is None:
            raise ValueError(f"{name}: no datagram header at offset {position}")
        length = int(match.group("length"))
        data, position = _take(text, match.end(), length, name)
        result.append(
            Capture(
                match.group("source").decode("ascii"),
                match.group("destination").decode("ascii"),
                data,
            )
        )
    return result


def _readProbe(text: bytes, name: str) -> List[Capture]:
    found = []
    position = 0
    while position < len(text):
        match = _PROBE.match(text, position)
        if match is None:
            # A comment line.
            newline = text.find(b"\n", position)
            position = len(text) if newline < 0 else newline + 1
            continue
        sent = match.group("sent") is not None
        length = int(match.group("sent" if sent else "received"))
        peer = match.group("destination" if sent else "source").decode("ascii")
        data, position = _take(text, match.end(), length, name)
        found.append((sent, peer, data))

    prober = None
    for sent, peer, data in found:
        if sent and not data.startswith(b"SIP/2.0 "):
            via = _PROBER_VIA.search(data)
            if via is not None:
                prober = via.group(1).decode("ascii")
                break
    if prober is None:
        raise ValueError(f"{name}: no request from the prober gives its address")
    return [
        Capture(prober, peer, data) if sent else Capture(peer, prober, data)
        for sent, peer, data in found
    ]
