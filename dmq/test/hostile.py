# -*- test-case-name: dmq.test.test_fuzz -*-
"""
Hostile inputs for a dmq node, and the instruments to watch one under them.

This is the one copy of the fuzzer's input generators: C{bench/fuzz.py}
sends a hundred thousand of them to a bus of two node processes, and
L{dmq.test.test_fuzz} a few thousand to two nodes in the test's reactor.

L{HostileInputs} makes input number I{i} of a seed from that seed and I{i}
alone (C{random.Random(f"{seed}:{i}")}), so that any input of a run can be
made again without the ones before it.  The kinds, in the default mix:

  - C{capture}: a datagram of the Kamailio captures (L{dmq.test.captures}),
    its addresses moved from C{127.0.0.1} to C{127.0.9.1} (where no node
    listens), given a fresh branch and Call-ID and our address in its top
    Via so that the answer comes back, then mutated: bytes flipped,
    inserted, cut or repeated; headers dropped, repeated, folded or given
    hostile values; Content-Length wrong; hostile Via hosts, C{received}
    and C{rport}; the body swapped for another kind's.
  - C{nodelist}: a C{notification_peer} request whose node list has
    hostile lines: non-ASCII and non-UTF-8 parameters, labels of 64 to
    4,700 characters, names over 253, numeric shorthand hosts (C{127.9.1},
    C{12}, C{0x7f090001}), IPv6 literals, odd ports, transports and
    statuses, and lists of hundreds of nodes.
  - C{htable}: an C{htable} request with every action, fields of the wrong
    type, values up to L{Limits.hugeValue} octets, integers past 32 bits,
    bad JSON, hostile regular expressions (nested quantifiers over keys of
    up to L{Limits.redosLength} characters, huge repeats, deep nesting),
    sync requests and sync dumps.
  - C{rpc}: a raw HTTP request to the control endpoint: JSON-RPC calls of
    every method with wrong, huge and non-text parameters (lone
    surrogates), bad JSON, batches of up to L{Limits.maxBatch} calls, odd
    HTTP (methods, paths, lengths, chunks).

Every address an input names for a node other than the ones attacked is
in C{127.0.3.0/24}, C{127.0.9.0/24} or C{127.9.0.0/16}: no node listens
there.  A node may still be told to send elsewhere (that is what some inputs
test); L{sandboxNetwork} keeps it on the loopback addresses the fuzzer owns
and counts what it refused, and keeps host names away from DNS.

L{FailureRecorder} is a log observer that counts the events a node should
never log under hostile input (a traceback, a critical event), grouped by
exception and the innermost frame of C{dmq} it came from, each with the
input the node was reading last (L{watchInputs}).
"""

from __future__ import annotations

import ipaddress
import json
import os
import random
import re
import socket
import traceback
from collections import Counter
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import attr
from twisted.logger import ILogObserver, LogLevel, formatEvent
from zope.interface import implementer

from dmq.test.captures import DATA, datagrams

__all__ = [
    "Target",
    "Limits",
    "Input",
    "HostileInputs",
    "MIX",
    "MAX_UDP",
    "FailureRecorder",
    "sandboxNetwork",
    "watchInputs",
    "kdmqRequest",
    "hostileReply",
    "ALLOWED_NETWORKS",
]

MAX_UDP = 65507
"""
The largest UDP payload over IPv4.
"""

MIX: Tuple[Tuple[str, int], ...] = (("capture", 40), ("nodelist", 20), ("htable", 30), ("rpc", 10))
"""
The default share of each kind of input, in percent.
"""

ALLOWED_NETWORKS = tuple(
    ipaddress.ip_network(n)
    for n in ("127.0.0.80/28", "127.0.3.0/24", "127.0.9.0/24", "127.9.0.0/16", "0.0.0.0/8")
)
"""
Where L{sandboxNetwork} lets a node send: the addresses of the fuzzers'
nodes and sockets (C{127.0.0.80} to C{127.0.0.95}), the fake nodes' ranges,
and C{0.0.0.0/8}, which the kernel refuses to send to.
"""

_TABLE = "kdmq"


@attr.frozen
class Target:
    """
    A node under attack.

    @ivar host: its IP address.
    @ivar port: its SIP port.
    """

    host: str
    port: int

    @property
    def hostport(self) -> str:
        return f"{self.host}:{self.port}"


@attr.frozen
class Limits:
    """
    How far the inputs go.

    @ivar hugeValue: the largest htable value or key, in octets.
    @ivar redosLength: the longest key a catastrophic regular expression is
        matched against (each character doubles the time).
    @ivar maxLines: the most lines of a node list.
    @ivar maxBatch: the most calls of a JSON-RPC batch.
    @ivar keys: the ordinary htable keys, C{k0} to C{k<keys-1>}.
    @ivar bigKeys: the keys that take huge values, C{big0} to
        C{big<bigKeys-1>}: what a table can grow to is about
        C{bigKeys * hugeValue} octets.
    """

    hugeValue: int = 60000
    redosLength: int = 20
    maxLines: int = 1000
    maxBatch: int = 10000
    keys: int = 1000
    bigKeys: int = 200


@attr.frozen
class Input:
    """
    One hostile input.

    @ivar index: its number in the run.
    @ivar kind: C{"capture"}, C{"nodelist"}, C{"htable"} or C{"rpc"}.
    @ivar label: what it tries, as C{kind/variant}, for the report.
    @ivar target: the index of the node it goes to.
    @ivar data: a datagram; for C{rpc}, a raw HTTP request.
    """

    index: int
    kind: str
    label: str
    target: int
    data: bytes


# Building blocks

_NON_ASCII = ["é", "ü", "中", "\u2028", "\u0301", "\U0001f4a9", "ß", "\u202e", "Ω"]
_BAD_UTF8 = [b"\xc3", b"\xff", b"\xfe\xff", b"\xed\xa0\x80", b"\xc0\xaf", b"\x80"]
_VALUES = [
    b"", b" ", b"0", b"-1", b"4294967296", b"99999999999999999999", b"1e9", b"0x10",
    b"\x00", b"\xff\xfe", "é".encode(), b"\xc3", b";;;", b"<>", b"<sip:>", b'"', b"\\",
    b"%00", b"%", b"sip:", b"KDMQ", b"SIP/2.0/UDP", b"\t", b",", b",,,", b"=", b"a=b=c",
    b"\r", b"\n", b"\r\n ", b"<sip:a@b>;tag=", b"1 KDMQ", b"2147483648 KDMQ", b"-5 KDMQ",
]
_TOKENS = [
    b"\r\n", b"\r\n\r\n", b"\n", b"\r", b"\x00", b";", b":", b"@", b"<", b">", b"[", b"]",
    b";received=", b";rport", b";rport=", b";branch=", b";status=", b";transport=", b",",
    b" ", b"\t", b"\xff", "é".encode(), b"%", b"sip:", b"SIP/2.0", b"Content-Length: 0\r\n",
]
_VIA_HOSTS = [
    "127.0.0.1e9", "localhost", "[::1]", "::1", "127.0.9.300", "127.9.1", "0", "0.0.0.0",
    "10.1.2.3", "[fe80::1]", "a" * 64, "example.invalid", "127.0.9.1.", "[::ffff:127.0.9.1]",
    "1.2.3.4.5", "-", "é.invalid", "255.255.255.255", "[127.0.9.1]",
]
_RPORTS = ["", "0", "65536", "-1", "99999999999999999999", "abc", "5060", " 5060", "0x50"]
_SHORTHANDS = ["127.9.1", "12", "2131296257", "0x7f090001", "0177.9.0.1", "127.589825", "0", "0x0", "127.9.0x1"]
_STATUSES = ["active", "not_active", "disabled", "timeout", "pending", "bogus", "", "ACTIVE", "active ", "activé"]
_TRANSPORTS = ["udp", "tcp", "tls", "sctp", "ws", "wss", "", "UDP", "é", "x" * 300]
_PORTS = ["5060", "5061", "0", "65535", "65536", "99999999", "-1", "5060x", "", "00005060", "٥٠٦٠"]

_REDOS = ["^(a+)+$", "(a|aa)+$", "^(a|a?)+$", "(.*a){12}$", "^(\\w+\\s?)*$", "(a*)*b"]
_BAD_PATTERNS = [
    "a{99999999999}", "a{4294967296}", "(" * 1000 + ")" * 1000, "((((((((((a))))))))))" * 50,
    "[", "(", "\\", "(?P<x>", "(?<=a+)b", "a(?i)b", "\\N{BOGUS}", "*", "a**", "(?P=y)",
    "\\p{L}", "[z-a]", "(?#" + "x" * 5000, "\x00", "\ud800", "[\\d-z]", "a{2,1}",
]
_PATTERNS = ["k1", "k", "^k1$", ".", ".*", "big", "a", "", "é", "^$", "(?i)K", "k[0-9]{2}", "v"]


def kdmqRequest(
    target: Target,
    source: Tuple[str, int],
    peer: str,
    body: bytes,
    contentType: str,
    *,
    tag: str,
    maxForwards: int = 1,
    extraHeaders: Sequence[bytes] = (),
) -> bytes:
    """
    A KDMQ request to C{peer} on C{target}, laid out as Kamailio's, from
    C{source} (its Via and From), with branch and Call-ID made of C{tag}.
    """
    me = f"{source[0]}:{source[1]}"
    head = (
        f"KDMQ sip:{peer}@{target.hostport} SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP {me};branch=z9hG4bK{tag}\r\n"
        f"To: <sip:{peer}@{target.hostport}>\r\n"
        f"From: <sip:{peer}@{me}>;tag={tag}\r\n"
        "CSeq: 10 KDMQ\r\n"
        f"Call-ID: {tag}@{source[0]}\r\n"
        f"Max-Forwards: {maxForwards}\r\n"
        f"Content-Type: {contentType}\r\n"
    ).encode("ascii")
    for header in extraHeaders:
        head += header + b"\r\n"
    return head + b"Content-Length: %d\r\n\r\n" % len(body) + body


def _split(data: bytes) -> Tuple[List[bytes], bytes, bytes]:
    head, sep, body = data.partition(b"\r\n\r\n")
    if not sep:
        head, sep, body = data.partition(b"\n\n")
    return head.split(b"\r\n"), sep, body


def _join(lines: List[bytes], sep: bytes, body: bytes) -> bytes:
    return b"\r\n".join(lines) + sep + body


def _setContentLength(lines: List[bytes], length: int) -> List[bytes]:
    out = []
    for line in lines:
        name = line.split(b":", 1)[0].strip().lower()
        if name in (b"content-length", b"l"):
            line = b"Content-Length: %d" % length
        out.append(line)
    return out


_IP127 = re.compile(rb"127\.0\.0\.(\d{1,3})")
_CAPTURES: List[bytes] = []


def _captures() -> List[bytes]:
    """
    Every datagram of the captures, its C{127.0.0.x} addresses moved to
    C{127.0.9.x} (the same length: Content-Length stays right).
    """
    if not _CAPTURES:
        for name in sorted(os.listdir(DATA)):
            if not name.endswith(".txt"):
                continue
            for capture in datagrams(name):
                _CAPTURES.append(_IP127.sub(rb"127.0.9.\1", capture.data))
    return _CAPTURES


def _refresh(data: bytes, target: Target, source: Tuple[str, int], tag: str, keepVia: bool) -> bytes:
    """
    Make a captured request a new one for C{target}: a fresh branch and
    Call-ID, the Request-URI's host ours, and (unless C{keepVia}) our
    address as the top Via's sent-by so that the answer comes back.
    """
    lines, sep, body = _split(data)
    if not lines or lines[0].startswith(b"SIP/2.0"):
        return data
    lines[0] = re.sub(
        rb"(sips?:(?:[^@\s]*@)?)[^\s;>]+",
        lambda m: m.group(1) + target.hostport.encode("ascii"),
        lines[0],
        count=1,
    )
    me = f"{source[0]}:{source[1]}".encode("ascii")
    seenVia = False
    for n, line in enumerate(lines[1:], 1):
        name, colon, value = line.partition(b":")
        lowered = name.strip().lower()
        if lowered in (b"via", b"v") and not seenVia:
            seenVia = True
            value = re.sub(rb"branch=[^;,\s]*", b"branch=z9hG4bK" + tag.encode("ascii"), value)
            if not keepVia:
                value = re.sub(rb"(SIP/2\.0/\w+\s+)[^;,\s]+", rb"\g<1>" + me, value, count=1)
            lines[n] = name + colon + value
        elif lowered in (b"call-id", b"i"):
            lines[n] = name + b": " + tag.encode("ascii") + b"@" + source[0].encode("ascii")
    return _join(lines, sep, body)


# The generators


class HostileInputs:
    """
    The hostile inputs of one seed, each made from the seed and its number.

    @ivar targets: the nodes under attack.
    @ivar source: the C{(host, port)} the datagrams are sent from: their
        Via and From, where the answers go.
    """

    def __init__(
        self,
        seed: int,
        targets: Sequence[Target],
        source: Tuple[str, int],
        limits: Limits = Limits(),
        mix: Sequence[Tuple[str, int]] = MIX,
        table: str = _TABLE,
        responder: Tuple[str, int] = ("127.0.9.7", 5060),
    ) -> None:
        """
        @param responder: the address of a fake node some node lists name,
            for a fuzzer to answer the nodes' requests there with
            L{hostileReply}.
        """
        if not targets:
            raise ValueError("at least one target")
        self.seed = seed
        self.targets = list(targets)
        self.source = source
        self.limits = limits
        self.table = table
        self.responder = responder
        self._kinds = [kind for kind, _ in mix]
        self._weights = [weight for _, weight in mix]
        self._makers: Dict[str, Callable[[random.Random, Target, str], Tuple[str, bytes]]] = {
            "capture": self._capture,
            "nodelist": self._nodelist,
            "htable": self._htable,
            "rpc": self._rpc,
        }
        unknown = set(self._kinds) - set(self._makers)
        if unknown:
            raise ValueError(f"unknown kinds of input: {sorted(unknown)}")

    def make(self, index: int) -> Input:
        """
        Make input number C{index}.
        """
        rng = random.Random(f"{self.seed}:{index}")
        kind = rng.choices(self._kinds, self._weights)[0]
        target = rng.randrange(len(self.targets))
        tag = f"fz{self.seed:x}x{index:x}"
        label, data = self._makers[kind](rng, self.targets[target], tag)
        if kind != "rpc" and len(data) > MAX_UDP:
            data = data[:MAX_UDP]
        return Input(index, kind, f"{kind}/{label}", target, data)

    def inputs(self, count: int, first: int = 0):
        """
        Inputs C{first} to C{first + count - 1}, in order.
        """
        for index in range(first, first + count):
            yield self.make(index)

    # Mutations of the captures

    def _capture(self, rng: random.Random, target: Target, tag: str) -> Tuple[str, bytes]:
        data = rng.choice(_captures())
        data = _refresh(data, target, self.source, tag, keepVia=rng.random() < 0.1)
        if rng.random() < 0.1:
            return "replay", data
        names = []
        for _ in range(rng.choice((1, 1, 1, 2, 2, 3))):
            name, mutate = rng.choice(self._mutations)
            data = mutate(self, rng, data)
            names.append(name)
        return "+".join(names), data

    def _flip(self, rng: random.Random, data: bytes) -> bytes:
        if not data:
            return data
        out = bytearray(data)
        for _ in range(rng.randint(1, 8)):
            i = rng.randrange(len(out))
            out[i] ^= 1 << rng.randrange(8)
        return bytes(out)

    def _insert(self, rng: random.Random, data: bytes) -> bytes:
        i = rng.randint(0, len(data))
        return data[:i] + rng.choice(_TOKENS + _VALUES) * rng.choice((1, 1, 2, 50)) + data[i:]

    def _delete(self, rng: random.Random, data: bytes) -> bytes:
        if not data:
            return data
        i = rng.randrange(len(data))
        return data[:i] + data[i + rng.randint(1, 64) :]

    def _repeat(self, rng: random.Random, data: bytes) -> bytes:
        if not data:
            return data
        i = rng.randrange(len(data))
        j = min(len(data), i + rng.randint(1, 200))
        return data[:j] + data[i:j] * rng.choice((1, 2, 10, 300)) + data[j:]

    def _truncate(self, rng: random.Random, data: bytes) -> bytes:
        return data[: rng.randint(0, len(data))]

    def _splice(self, rng: random.Random, data: bytes) -> bytes:
        other = rng.choice(_captures())
        return data[: rng.randint(0, len(data))] + other[rng.randint(0, len(other)) :]

    def _header(self, rng: random.Random, data: bytes) -> bytes:
        lines, sep, body = _split(data)
        if len(lines) < 2:
            return data
        n = rng.randrange(1, len(lines))
        line = lines[n]
        name, _, value = line.partition(b":")
        operation = rng.randrange(8)
        if operation == 0:
            del lines[n]
        elif operation == 1:
            lines.insert(n, line)
        elif operation == 2:
            m = rng.randrange(1, len(lines))
            lines[n], lines[m] = lines[m], lines[n]
        elif operation == 3:
            lines[n] = name + b": " + rng.choice(_VALUES)
        elif operation == 4:
            # Folded onto a continuation line.
            lines[n] = name + b":" + value[: len(value) // 2] + b"\r\n " + value[len(value) // 2 :]
        elif operation == 5:
            lines[n] = name + b": " + value.strip() * rng.choice((2, 100, 2000))
        elif operation == 6:
            lines[n] = name.swapcase() + b" :" + value
        else:
            lines.insert(n, b"X-Fuzz-%d: %s" % (rng.randrange(1000), b"x" * rng.choice((1, 1000, 8000))))
        return _join(lines, sep, body)

    def _contentLength(self, rng: random.Random, data: bytes) -> bytes:
        lines, sep, body = _split(data)
        length = rng.choice((0, 1, len(body) - 1, len(body) + 1, 2**31, 2**64, -1, 65536))
        lines = _setContentLength(lines, length) if length >= 0 else [
            b"Content-Length: -1" if l.lower().startswith(b"content-length") else l for l in lines
        ]
        return _join(lines, sep, body)

    def _via(self, rng: random.Random, data: bytes) -> bytes:
        lines, sep, body = _split(data)
        for n, line in enumerate(lines[1:], 1):
            name, colon, value = line.partition(b":")
            if name.strip().lower() not in (b"via", b"v"):
                continue
            kind = rng.randrange(5)
            me = f"{self.source[0]}:{self.source[1]}"
            if kind == 0:
                host = rng.choice(_VIA_HOSTS).encode("utf-8")
                value = re.sub(rb"(SIP/2\.0/\w+\s+)[^;,\s]+", lambda m: m.group(1) + host, value, count=1)
            elif kind == 1:
                # Sent by us, and asking for the answer elsewhere: a
                # reflection, unless received= is ignored.
                value = f" SIP/2.0/UDP {me};received={rng.choice(_VIA_HOSTS)};branch=z9hG4bKr{rng.randrange(10**9)}".encode("utf-8")
            elif kind == 2:
                value = value.rstrip() + b";rport=" + rng.choice(_RPORTS).encode("ascii")
            elif kind == 3:
                value = value.rstrip() + b";maddr=" + rng.choice(_VIA_HOSTS).encode("utf-8")
            else:
                value = value + b"," + value * rng.choice((1, 5, 100))
            lines[n] = name + colon + value
            break
        return _join(lines, sep, body)

    def _body(self, rng: random.Random, data: bytes) -> bytes:
        lines, sep, _ = _split(data)
        if rng.random() < 0.5:
            body = self._nodeListBody(rng)[1]
        else:
            body = self._htableBody(rng)[1]
        return _join(_setContentLength(lines, len(body)), sep or b"\r\n\r\n", body)

    _mutations = [
        ("flip", _flip),
        ("insert", _insert),
        ("delete", _delete),
        ("repeat", _repeat),
        ("truncate", _truncate),
        ("splice", _splice),
        ("header", _header),
        ("header", _header),
        ("content-length", _contentLength),
        ("via", _via),
        ("via", _via),
        ("body", _body),
    ]

    # Node lists

    def _fakeHost(self, rng: random.Random) -> str:
        return f"127.0.{rng.choice((3, 9))}.{rng.randint(1, 254)}"

    def _nodeLine(self, rng: random.Random) -> Tuple[str, bytes]:
        kind = rng.randrange(13)
        host, port, params = self._fakeHost(rng), str(rng.randint(5060, 5070)), ""
        status = "active"
        if kind == 0:
            status = rng.choice(_STATUSES)
        elif kind == 1:
            params = f";{rng.choice(['transport', 'x', 'é', 'status'])}={''.join(rng.choices(_NON_ASCII, k=rng.randint(1, 4)))}"
        elif kind == 2:
            raw = f"sip:{host}:{port};transport=".encode("ascii") + rng.choice(_BAD_UTF8) + b";status=active"
            return "bad-utf8", raw
        elif kind == 3:
            length = rng.choice((64, 65, 100, 255, 1000, 4700))
            host = "a" * length + rng.choice((".invalid", "", ".b"))
        elif kind == 4:
            host = ".".join("b" * 63 for _ in range(rng.choice((4, 5, 20)))) + ".invalid"
        elif kind == 5:
            host = rng.choice(_SHORTHANDS)
        elif kind == 6:
            host = rng.choice(["[::1]", "[::ffff:127.0.9.1]", "[0:0:0:0:0:0:0:1]", "::1", "[::1%lo]", "[fe80::1]", "[::1", "[]", "[x]"])
        elif kind == 7:
            host = rng.choice(["localhost", "LOCALHOST", "localhost.", "127.0.9.1.", "a..b", "-a-.invalid", "_x.invalid"])
        elif kind == 8:
            port = rng.choice(_PORTS)
        elif kind == 9:
            params = f";transport={rng.choice(_TRANSPORTS)}" * rng.choice((1, 2))
        elif kind == 10:
            params = ";status=active;status=disabled" if rng.random() < 0.5 else ";lr;maddr=10.0.0.1;ttl=1"
        elif kind == 11:
            line = rng.choice([
                "tel:+123", f"sips:{host}:{port};status=active", "http://x/", "sip:", "sip:@", f"<sip:{host}>",
                f"sip:user@{host}:{port};status=active", f"sip:{host}:{port}?a=b;status=active", f"sip:{host}:{port};",
                f"SIP:{host}:{port};status=active", f"sip:{host}:{port};status=active" + " " * 100,
            ])
            return "odd-uri", line.encode("utf-8")
        else:
            return "garbage", bytes(rng.randrange(256) for _ in range(rng.randint(0, 80)))
        line = f"sip:{host}:{port}{params};status={status}"
        return ["status", "non-ascii", "", "long-label", "long-name", "shorthand", "ipv6", "name", "port", "transport", "params"][kind], line.encode("utf-8")

    def _nodeListBody(self, rng: random.Random) -> Tuple[str, bytes]:
        shape = rng.random()
        ending = rng.choice((b"\r\n", b"\r\n", b"\n", b"\r", b"\r\n\r\n", b"\x00\r\n"))
        if shape < 0.03:
            # Filling the node cap: many distinct, well-formed nodes.
            count = rng.randint(100, self.limits.maxLines)
            lines = [f"sip:127.0.{rng.choice((3, 9))}.{n % 250 + 1}:{5060 + n // 250};status=active".encode("ascii") for n in range(count)]
            return "huge-list", b"\r\n".join(lines) + b"\r\n"
        if shape < 0.05:
            # Long labels, as many as fit.
            length = rng.choice((64, 90, 4700))
            count = max(1, min(self.limits.maxLines, 60000 // (length + 40)))
            lines = [f"sip:{'c' * (length - 3)}{n:03d}.invalid:5060;status=active".encode("ascii") for n in range(count)]
            return "long-labels", b"\r\n".join(lines) + b"\r\n"
        if shape < 0.07:
            # A fake node that a responder may answer as (see hostileReply).
            return "responder", f"sip:{self.responder[0]}:{self.responder[1]};status=active\r\n".encode("ascii")
        names = []
        lines = []
        for _ in range(rng.choice((1, 1, 1, 2, 3, 5, 20))):
            name, line = self._nodeLine(rng)
            names.append(name)
            lines.append(line)
        return "+".join(sorted(set(names))), ending.join(lines) + (ending if rng.random() < 0.8 else b"")

    def _nodelist(self, rng: random.Random, target: Target, tag: str) -> Tuple[str, bytes]:
        label, body = self._nodeListBody(rng)
        return label, kdmqRequest(
            target, self.source, "notification_peer", body, "text/plain", tag=tag,
            maxForwards=rng.choice((0, 1, 1, 2, 2, 70)),
        )

    # htable

    def _key(self, rng: random.Random) -> Any:
        kind = rng.randrange(12)
        if kind < 6:
            return f"k{rng.randrange(self.limits.keys)}"
        if kind == 6:
            return "a" * rng.randint(max(1, self.limits.redosLength - 3), self.limits.redosLength) + "!"
        if kind == 7:
            return "".join(rng.choices(_NON_ASCII, k=rng.randint(1, 20)))
        if kind == 8:
            return rng.choice(["", "\x00", "k\x00", "\ud800", "\udfff", " ", "\r\n"])
        if kind == 9:
            return "k" * rng.choice((1000, self.limits.hugeValue // 2))
        if kind == 10:
            return rng.choice([None, 0, 1, True, [], {}, 1.5, ["k1"], {"k": 1}])
        return f"big{rng.randrange(self.limits.bigKeys)}"

    def _value(self, rng: random.Random, key: Any) -> Dict[str, Any]:
        if isinstance(key, str) and key.startswith("big"):
            size = rng.choice((1000, 10000, self.limits.hugeValue // 2, self.limits.hugeValue))
            return {"type": 2, "strval": "v" * size}
        kind = rng.randrange(10)
        if kind < 4:
            return {"type": 2, "strval": f"v{rng.randrange(1000)}"}
        if kind < 6:
            return {"type": 0, "intval": rng.choice((0, 1, -1, 2**31 - 1, -(2**31)))}
        if kind == 6:
            return {"type": 0, "intval": rng.choice((2**31, -(2**31) - 1, 2**63, 10**30, 1.5, 1e308, "1", None, True))}
        if kind == 7:
            return {"type": rng.choice((1, 3, -1, 2**31, 2**40, "2", None, 2.0)), "strval": "v", "intval": 1}
        if kind == 8:
            return {"type": 2, "strval": rng.choice(["\ud800", "\x00", "é" * 1000, 5, None, ["v"], {"v": 1}])}
        return {"type": 2}

    def _htableBody(self, rng: random.Random) -> Tuple[str, bytes]:
        shape = rng.random()
        table: Any = self.table if rng.random() < 0.85 else rng.choice(["nosuch", "", 5, None, "é", "kdmq\x00", "x" * 5000])
        if shape < 0.40:
            key = self._key(rng)
            message = {"action": 2, "htname": table, "cname": key, **self._value(rng, key), "mode": rng.choice((0, 1, 1, 1, 2, "1"))}
            label = "set"
        elif shape < 0.48:
            message = {"action": 3, "htname": table, "cname": self._key(rng), "type": 0,
                       "intval": rng.choice((0, 1, 60, -1, 2**31 - 1, 2**31, -(2**31))), "mode": 0}
            label = "set-expire"
        elif shape < 0.58:
            message = {"action": 4, "htname": table, "cname": self._key(rng), "mode": 0}
            label = "delete"
        elif shape < 0.70:
            # Removals by a plain pattern; the regex ones are below.
            action = rng.choice((6, 7, 8, 5))
            message = {"action": action, "htname": table, "type": 2, "strval": rng.choice(_PATTERNS), "mode": rng.choice((0, 1))}
            label = f"remove-{action}"
        elif shape < 0.7025:
            # Rare: each one may hold the reactor for a second.
            pattern = rng.choice(_REDOS)
            message = {"action": 5, "htname": table, "type": 2, "strval": pattern, "mode": 0}
            label = "regex-nested-quantifier"
        elif shape < 0.74:
            message = {"action": 5, "htname": table, "type": 2, "strval": rng.choice(_BAD_PATTERNS), "mode": rng.choice((0, 1))}
            label = "regex-bad"
        elif shape < 0.742:
            # Rare: each one makes the node send its whole table.
            message = {"action": 1} if rng.random() < 0.5 else {"action": 1, "htname": rng.choice([self.table, "nosuch", 5, ""])}
            label = "sync-request"
        elif shape < 0.78:
            cells = [
                {"htname": rng.choice([self.table, self.table, "nosuch", 5]), "cname": self._key(rng),
                 **self._value(rng, None), "expire": rng.choice((0, 1, 2**31 - 1, 2**31, -1, "0"))}
                for _ in range(rng.choice((0, 1, 5, 200)))
            ]
            message = {"cells": cells if rng.random() < 0.9 else rng.choice([None, {}, "x", 5])}
            label = "sync-dump"
        elif shape < 0.83:
            message = {"action": rng.choice((0, -1, 9, 2**31, 2**63, "2", 2.0, True, None, [2])), "htname": table, "cname": "k1"}
            label = "bad-action"
        elif shape < 0.89:
            label = "bad-json"
            return label, rng.choice([
                b"", b"{", b"}", b"[]", b"{}", b"null", b"2", b'"x"', b"{\"action\":2,}", b"{'action':2}",
                b"\xef\xbb\xbf{\"action\":1}", '{"action":1}'.encode("utf-16"), b"\xff\xfe\x00",
                b'{"action":2,"htname":"kdmq","cname":"k1","type":0,"intval":NaN}',
                b'{"action":2,"htname":"kdmq","cname":"k1","type":0,"intval":1e400}',
                b'{"action":2,"htname":"kdmq","cname":"k1","type":0,"intval":' + b"9" * 5000 + b"}",
                b"[" * 100000 + b"]" * 100000, b'{"a":' * 20000 + b"1" + b"}" * 20000,
                b'{"action":2,"action":4,"htname":"kdmq","cname":"k1"}', b'{"action":1}' * 100,
                b'{"action":2,"htname":"kdmq","cname":"\\ud800","type":2,"strval":"v"}',
                b'{"action":2,"htname":"kdmq","cname":"k1","type":2,"strval":"\xed\xa0\x80"}',
            ])
        else:
            message = {k: v for k, v in {"action": 2, "htname": table, "cname": self._key(rng), **self._value(rng, None)}.items()
                       if rng.random() < 0.6}
            label = "missing-fields"
        return label, json.dumps(message, ensure_ascii=rng.random() < 0.5, separators=(",", ":")).encode("utf-8", "surrogatepass")

    def _htable(self, rng: random.Random, target: Target, tag: str) -> Tuple[str, bytes]:
        label, body = self._htableBody(rng)
        return label, kdmqRequest(
            target, self.source, "htable", body, rng.choice(("application/json", "application/json", "text/plain", "")),
            tag=tag,
        )

    # JSON-RPC over HTTP

    def _fakeURI(self, rng: random.Random) -> Any:
        name, line = self._nodeLine(rng)
        if rng.random() < 0.1:
            return rng.choice([None, 5, [], "", "sip:10.0.0.1:5060", "sip:[::1]:5060"])
        return line.decode("utf-8", "replace")

    def _rpcParams(self, rng: random.Random, method: str) -> Any:
        other = rng.choice(self.targets)
        junk = rng.choice([None, 1, -1, 2**64, 1.5, True, "", "\ud800", "\x00", "é", "x" * 70000, [], {}, [1, [2]], {"a": "b"}])
        key = self._key(rng)
        if method in ("htable.sets", "htable.seti"):
            value: Any = rng.choice(["v", "1", 1, 2**31, "2147483648", "x" * rng.choice((100, 60000, 65400, 70000, 100000)), "\ud800", "é", junk])
            params: List[Any] = [self.table if rng.random() < 0.9 else junk, key, value]
        elif method in ("htable.get", "htable.delete"):
            params = [self.table if rng.random() < 0.9 else junk, key]
        elif method == "htable.dump":
            params = [self.table if rng.random() < 0.9 else junk]
        elif method in ("dmq.add", "dmq.remove"):
            params = [self._fakeURI(rng)]
        elif method == "dmq.change_status":
            params = [self._fakeURI(rng), rng.choice(_STATUSES + ["active"])]
        elif method == "dmq.send_message":
            body = rng.choice([self._htableBody(rng)[1], self._nodeListBody(rng)[1], b"x" * 70000]).decode("utf-8", "replace")
            params = [rng.choice(["htable", "htable", "notification_peer", "nosuch", "", "a b", "é", junk]),
                      rng.choice([f"sip:{other.hostport}", f"sip:{other.hostport}", self._fakeURI(rng)]), body,
                      rng.choice(["application/json", "text/plain", "text/plain\r\nX: y", "", "é"])]
        elif method == "dmq.bcast_message":
            params = [rng.choice(["htable", "nosuch", "", junk]), self._htableBody(rng)[1].decode("utf-8", "replace"),
                      rng.choice(["application/json", "text/plain\r\nX: y", ""])]
        elif method == "system.methodHelp":
            params = [rng.choice(["htable.sets", "nosuch", junk])]
        else:
            params = []
        shape = rng.random()
        if shape < 0.15:
            params = params + [junk] * rng.choice((1, 2, 100))
        elif shape < 0.25:
            params = params[: rng.randrange(len(params) + 1)]
        elif shape < 0.3:
            return rng.choice([junk, {"uri": "x"}, {"nosuch": 1}, "params"])
        elif shape < 0.4 and params:
            params[rng.randrange(len(params))] = junk
        return params

    _METHODS = [
        "htable.sets", "htable.sets", "htable.sets", "htable.seti", "htable.get", "htable.delete", "htable.dump",
        "htable.listTables", "dmq.list_nodes", "dmq.add", "dmq.remove", "dmq.change_status", "dmq.send_message",
        "dmq.bcast_message", "dmq.list_peers", "system.listMethods", "system.methodHelp", "nosuch", "", "dmq.",
    ]

    def _call(self, rng: random.Random, n: int) -> Dict[str, Any]:
        method = rng.choice(self._METHODS)
        call: Dict[str, Any] = {"jsonrpc": "2.0", "method": method, "params": self._rpcParams(rng, method), "id": n}
        shape = rng.random()
        if shape < 0.05:
            del call["id"]
        elif shape < 0.1:
            call["id"] = rng.choice([None, True, [], {}, "\ud800", 1.5, 2**70, "x" * 1000])
        elif shape < 0.13:
            call["jsonrpc"] = rng.choice(["1.0", 2, None, "2.0 "])
        elif shape < 0.16:
            call["method"] = rng.choice([None, 5, [], "\ud800"])
        return call

    def _rpcBody(self, rng: random.Random) -> Tuple[str, bytes]:
        shape = rng.random()
        if shape < 0.75:
            call = self._call(rng, rng.randrange(1000))
            label = f"call/{call['method']}" if isinstance(call["method"], str) else "call/bad-method"
            return label, json.dumps(call, ensure_ascii=rng.random() < 0.7).encode("utf-8", "surrogatepass")
        if shape < 0.80:
            size = rng.choice((2, 10, 100, 1000, self.limits.maxBatch))
            calls = [self._call(rng, n) for n in range(min(size, 50))]
            if size > 50:
                # Many sets of distinct keys, small enough to fit the 1 MB cap.
                calls += [{"jsonrpc": "2.0", "method": "htable.sets", "params": [self.table, f"b{n}", "v"], "id": n}
                          for n in range(50, size)]
            return f"batch/{size}", json.dumps(calls).encode("utf-8", "surrogatepass")
        return "bad-json", rng.choice([
            b"", b"{", b"[", b"[]", b"[1]", b"null", b"\x00nonsense", b"{\"jsonrpc\":\"2.0\"}",
            b'{"jsonrpc":"2.0","method":"dmq.list_nodes","params":[NaN],"id":1}',
            b'{"jsonrpc":"2.0","method":"dmq.list_nodes","id":1e999}',
            b'{"jsonrpc":"2.0","method":"dmq.list_nodes","id":' + b"9" * 5000 + b"}",
            b'{"jsonrpc":"2.0","method":"htable.sets","params":["kdmq","k1","\\ud800"],"id":1}',
            b'{"jsonrpc":"2.0","method":"htable.sets","params":["kdmq","\\udfff","v"],"id":1}',
            b'{"jsonrpc":"2.0","method":"htable.sets","params":["kdmq","k1","\xed\xa0\x80"],"id":1}',
            b"[" * 100000, b'{"a":' * 100000, '{"jsonrpc":"2.0","method":"dmq.list_nodes","id":1}'.encode("utf-16"),
            b"\xef\xbb\xbf{\"jsonrpc\":\"2.0\",\"method\":\"dmq.list_nodes\",\"id\":1}",
        ])

    def _rpc(self, rng: random.Random, target: Target, tag: str) -> Tuple[str, bytes]:
        label, body = self._rpcBody(rng)
        method, path, lengthHeader = b"POST", b"/RPC", b"Content-Length: %d\r\n" % len(body)
        shape = rng.random()
        extra = b""
        if shape < 0.03:
            method = rng.choice([b"GET", b"PUT", b"DELETE", b"OPTIONS", b"HEAD", b"BREW", b"P\xc3\xa9ST"])
            label = "http/method"
        elif shape < 0.06:
            method, path, body, lengthHeader = b"GET", rng.choice([b"/metrics", b"/metrics?x=1", b"/"]), b"", b""
            label = "http/get"
        elif shape < 0.08:
            path = rng.choice([b"/RPC/", b"/rpc", b"/RPC/../metrics", b"//RPC", b"/RPC?" + b"a" * 20000, b"/%00", b"*", b"/\xff"])
            label = "http/path"
        elif shape < 0.09:
            lengthHeader = rng.choice([b"", b"Content-Length: -1\r\n", b"Content-Length: x\r\n", b"Content-Length: 1\r\n",
                                       b"Content-Length: 99999999999999999999\r\n", lengthHeader * 2])
            label = "http/length"
        elif shape < 0.10:
            lengthHeader = b"Transfer-Encoding: chunked\r\n"
            body = b"%x\r\n%s\r\n0\r\n\r\n" % (len(body), body) if rng.random() < 0.7 else b"zz\r\n" + body
            label = "http/chunked"
        elif shape < 0.11:
            extra = b"".join(b"X-H%d: %s\r\n" % (n, b"v" * rng.choice((1, 100))) for n in range(rng.choice((100, 1000))))
            label = "http/headers"
        request = (
            method + b" " + path + b" HTTP/1.1\r\nHost: " + target.host.encode("ascii")
            + b"\r\nContent-Type: application/json\r\nConnection: close\r\n" + lengthHeader + extra + b"\r\n" + body
        )
        return label, request


def hostileReply(request: bytes, rng: random.Random) -> Optional[bytes]:
    """
    A hostile answer to a request a node sent to a fake node: any code,
    the node list a hostile one, the headers sometimes mutated.

    @return: the datagram, or C{None} not to answer.
    """
    lines, _, _ = _split(request)
    if not lines or lines[0].startswith(b"SIP/2.0") or rng.random() < 0.1:
        return None
    keep = [l for l in lines[1:] if l.split(b":", 1)[0].strip().lower() in (b"via", b"v", b"from", b"f", b"to", b"t", b"call-id", b"i", b"cseq")]
    code = rng.choice((200, 200, 200, 200, 100, 180, 302, 404, 408, 500, 503, 603, 999, 0))
    generator = HostileInputs(rng.randrange(2**32), [Target("127.0.9.7", 5060)], ("127.0.9.7", 5060))
    body = generator._nodeListBody(rng)[1] if rng.random() < 0.8 else generator._htableBody(rng)[1]
    head = [b"SIP/2.0 %d %s" % (code, rng.choice((b"OK", b"", "é".encode(), b"x" * 1000)))] + keep
    if rng.random() < 0.2 and len(head) > 1:
        head[rng.randrange(1, len(head))] += rng.choice(_TOKENS)
    head += [b"Content-Type: text/plain", b"Content-Length: %d" % len(body)]
    return b"\r\n".join(head) + b"\r\n\r\n" + body


# Watching a node


@attr.define
class FailureGroup:
    """
    The failures of one exception at one place.

    @ivar count: how many were logged.
    @ivar message: the first one's log message.
    @ivar traceback: the first one's traceback (its end).
    @ivar lastInput: what the node was reading when the first was logged.
    """

    exception: str
    site: str
    count: int = 0
    message: str = ""
    traceback: str = ""
    lastInput: str = ""

    def asDict(self) -> Dict[str, Any]:
        return attr.asdict(self)


# Frames that say nothing of where a failure came from.
_PLUMBING = ("/defer.py", "/failure.py", "/threadpool.py", "/context.py", "/_threads.py", "/threads.py", "/dmq/test/hostile.py")


def _site(failure: Any) -> str:
    """
    Where a failure came from: the innermost frame of its traceback in
    C{dmq} (not its tests), else the innermost one that is not Twisted's
    plumbing (Deferreds, threads) nor this module's sandbox; as
    C{dmq/nodelist.py:160 _formatLine}.
    """
    frames = list(getattr(failure, "frames", None) or [])
    chosen = None
    for name, filename, line, *_ in frames:
        path = filename.replace(os.sep, "/")
        if "/dmq/" in path and "/dmq/test/" not in path:
            chosen = (name, path[path.rindex("/dmq/") + 1 :], line)
    if chosen is None:
        for name, filename, line, *_ in reversed(frames):
            path = filename.replace(os.sep, "/")
            if not path.endswith(_PLUMBING):
                chosen = (name, "/".join(path.rsplit("/", 2)[-2:]), line)
                break
    if chosen is None:
        return "(no traceback)"
    return f"{chosen[1]}:{chosen[2]} {chosen[0]}"


@implementer(ILogObserver)
class FailureRecorder:
    """
    A log observer that counts what a node must never log under hostile
    input: events with a failure (a traceback) and critical events, grouped
    by exception and site; and every event by level, to see floods.

    @ivar groups: the L{FailureGroup}s by C{(exception, site)}.
    @ivar levels: the events logged, by level name.
    @ivar current: what the node is reading now, set by L{watchInputs}.
    @ivar sandbox: what L{sandboxNetwork} refused, by cause.
    """

    def __init__(self) -> None:
        self.groups: Dict[Tuple[str, str], FailureGroup] = {}
        self.levels: Counter[str] = Counter()
        self.current = ""
        self.sandbox: Counter[str] = Counter()
        self._unhandled = False

    def __call__(self, event: Dict[str, Any]) -> None:
        level = event.get("log_level")
        self.levels[getattr(level, "name", str(level))] += 1
        failure = event.get("log_failure")
        if failure is None and level is not LogLevel.critical:
            return
        if failure is None and event.get("log_format") == _UNHANDLED:
            # Twisted logs the failure itself next, as its own event.
            self._unhandled = True
            return
        if failure is not None:
            exception = getattr(failure.type, "__name__", str(failure.type))
            site = _site(failure)
            if self._unhandled and event.get("log_namespace") == "twisted.internet.defer":
                site += " (unhandled error in Deferred)"
        else:
            exception, site = "(critical, no failure)", str(event.get("log_namespace"))
        self._unhandled = False
        key = (exception, site)
        group = self.groups.get(key)
        if group is None:
            group = self.groups[key] = FailureGroup(exception, site)
            try:
                group.message = (formatEvent(event) or "")[:500]
            except Exception:
                group.message = str(event.get("log_format"))[:500]
            if failure is not None:
                try:
                    group.traceback = failure.getTraceback()[-3000:]
                except Exception:
                    group.traceback = repr(failure)
            group.lastInput = self.current
        group.count += 1

    @property
    def failures(self) -> int:
        """
        How many events with a traceback or at critical level were logged.
        """
        return sum(group.count for group in self.groups.values())

    def report(self) -> Dict[str, Any]:
        """
        Everything recorded, JSON-able.
        """
        return {
            "failures": self.failures,
            "groups": [g.asDict() for g in sorted(self.groups.values(), key=lambda g: -g.count)],
            "levels": dict(self.levels),
            "sandbox": dict(self.sandbox),
        }


_UNHANDLED = "Unhandled error in Deferred:"


def _describeInput(kind: str, data: bytes) -> str:
    return f"{kind} {len(data)} octets: {data[:600]!r}"


def watchInputs(protocol: Any, recorder: FailureRecorder) -> None:
    """
    Make C{recorder} know the datagram C{protocol} (a node's
    L{SIPDatagramProtocol}) is reading, by wrapping its
    C{datagramReceived} on the instance.
    """
    original = protocol.datagramReceived

    def datagramReceived(data: bytes, address: Tuple[str, int]) -> None:
        recorder.current = _describeInput(f"datagram from {address[0]}:{address[1]},", data)
        original(data, address)

    protocol.datagramReceived = datagramReceived


def watchRPC(patch: Callable[[Any, str, Any], None], recorder: FailureRecorder) -> None:
    """
    Make C{recorder} know the JSON-RPC request a node is answering, by
    wrapping L{dmq.control.jsonrpc.JSONRPC.handle} with C{patch(obj, name,
    value)} (C{setattr}, or a test's C{patch}).
    """
    from dmq.control.jsonrpc import JSONRPC

    original = JSONRPC.handle

    def handle(self: Any, data: bytes) -> Any:
        recorder.current = _describeInput("JSON-RPC request,", data)
        return original(self, data)

    patch(JSONRPC, "handle", handle)


def _allowed(host: str) -> bool:
    try:
        address = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return True
    mapped = getattr(address, "ipv4_mapped", None)
    if mapped is not None:
        address = mapped
    return any(address in network for network in ALLOWED_NETWORKS if network.version == address.version)


def _isNumericHost(host: str) -> bool:
    try:
        socket.inet_aton(host)
        return True
    except (OSError, ValueError):
        pass
    try:
        socket.inet_pton(socket.AF_INET6, host.split("%", 1)[0])
        return True
    except (OSError, ValueError):
        return False


def sandboxNetwork(patch: Callable[[Any, str, Any], None], recorder: FailureRecorder, reactor: Any = None) -> None:
    """
    Keep the nodes of this process off the network while they are fed
    hostile input, without changing what they see for the inputs that stay
    on loopback:

      - a UDP datagram to an IP address outside L{ALLOWED_NETWORKS} is not
        sent (the write returns as if it were) and is counted in
        C{recorder.sandbox} as C{"reply to <address>"} or C{"request to
        <address>"}; a write that Twisted refuses (a host name, an address
        of the other family) still raises as it would;
      - a name lookup of anything but a numeric address or C{localhost}
        fails as an unknown name does (C{gaierror}), after the same
        IDNA encoding the real lookup does first (so a label over 63
        characters still raises C{UnicodeError}); no DNS query is sent.

    @param patch: C{patch(obj, name, value)}: C{setattr} in a process of its
        own, a test's C{patch} in a test (undone after it).
    @param reactor: the reactor whose C{nameResolver} to guard too (its
        C{GAIResolver} holds its own reference to C{getaddrinfo}).
    """
    from twisted.internet import udp

    realWrite = udp.Port.write

    def write(self: Any, datagram: bytes, addr: Optional[Tuple[str, int]] = None) -> Any:
        if addr is not None and isinstance(addr[0], str) and _isIPOfFamily(addr[0], self.addressFamily) and not _allowed(addr[0]):
            what = "reply" if datagram.startswith(b"SIP/2.0 ") else "request"
            recorder.sandbox[f"{what} to {addr[0]}"] += 1
            return None
        return realWrite(self, datagram, addr)

    patch(udp.Port, "write", write)

    def guard(real: Callable[..., Any]) -> Callable[..., Any]:
        def lookup(host: Any, *args: Any, **kwargs: Any) -> Any:
            if isinstance(host, bytes):
                host = host.decode("ascii", "replace")
            if host is None or not isinstance(host, str) or _isNumericHost(host) or host.lower().rstrip(".") == "localhost":
                return real(host, *args, **kwargs)
            # What the real lookup does before it asks anyone.
            host.encode("idna")
            recorder.sandbox["name lookup refused"] += 1
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known (sandboxed)")

        return lookup

    for name in ("getaddrinfo", "gethostbyname", "gethostbyname_ex"):
        patch(socket, name, guard(getattr(socket, name)))
    resolver = getattr(reactor, "nameResolver", None)
    if resolver is not None and hasattr(resolver, "_getaddrinfo"):
        patch(resolver, "_getaddrinfo", guard(resolver._getaddrinfo))


def _isIPOfFamily(host: str, family: int) -> bool:
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    return (address.version == 4) == (family == socket.AF_INET)
