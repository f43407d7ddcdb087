# -*- test-case-name: dmq.test.test_transport -*-
"""
Measure one node's request path in process: no sockets, no second process.

Run it from the root of the repository::

    python bench/inprocess.py [--requests 20000] [--rounds 7] [--calls] [--top 40]

It builds a node as C{bench/bus.py} runs it (L{makeNodeService} with the
htable peer and the table C{kdmq=>size=8;autoexpire=0;dmqreplicate=1},
listening, in name, on C{sip:127.0.0.71:5060}), connects its
L{SIPDatagramProtocol} to a transport that only counts what is written, and
feeds it the datagrams C{bench/bus.py}'s load generator sends: htable set
requests from C{127.0.0.72}, each with its own Via branch and Call-ID.  Time
is the real reactor's, which is never run: the node's timers are scheduled
as they would be, and the ones due never fire, as in a node that answers
faster than its timers run out.

It prints the microseconds per request of the best round and of the median
round (the garbage collector on, as in a real node), in real time and in
the process's CPU time, which moves less when other jobs share the cores.  C{--bare} has the
htable peer answer C{200} without reading the body, so that the figure is
dmq's own path, without the peer's work.  With C{--calls},
the Python function calls per request (counted with L{sys.setprofile}, so
builtins and C methods aside) and the functions that make them, most first:
the budget of the request path.  C{--profile FILE} writes a cProfile of one
round instead.
"""

from __future__ import annotations

import argparse
import collections
import gc
import os
import platform
import sys
import time
from typing import Any, Callable, Dict, List, Sequence, Tuple

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

NODE = ("127.0.0.71", 5060)
SOURCE = ("127.0.0.72", 40000)
TABLE = "kdmq=>size=8;autoexpire=0;dmqreplicate=1"


class CountingTransport:
    """
    A datagram transport that counts what is written and keeps the last
    datagram, for a check that the node answered C{200}.
    """

    def __init__(self) -> None:
        self.written = 0
        self.last = b""

    def write(self, data: bytes, addr: Tuple[str, int]) -> None:
        self.written += 1
        self.last = data

    def getHost(self) -> Any:
        from twisted.internet.address import IPv4Address

        return IPv4Address("UDP", *NODE)

    def stopListening(self) -> None:
        pass


def requests(count: int, first: int, keys: int = 1000) -> List[bytes]:
    """
    The datagrams of C{bench/bus.py}'s generator, numbered from C{first}.
    """
    me = f"{SOURCE[0]}:{SOURCE[1]}"
    host, port = NODE
    head = (
        f"KDMQ sip:htable@{host}:{port} SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP {me};branch=z9hG4bKinproc.%d\r\n"
        f"To: <sip:htable@{host}:{port}>\r\n"
        f"From: <sip:htable@{me}>;tag=inproc-%d\r\n"
        "CSeq: 10 KDMQ\r\n"
        f"Call-ID: inproc-%d@{SOURCE[0]}\r\n"
        "Content-Length: %d\r\n"
        "User-Agent: dmq-bench\r\n"
        "Max-Forwards: 1\r\n"
        "Content-Type: application/json\r\n"
        "\r\n"
    ).encode("ascii")
    body = b'{"action":2,"htname":"kdmq","cname":"k%d","type":2,"strval":"v","mode":1}'
    result = []
    for n in range(first, first + count):
        content = body % (n % keys)
        result.append(head % (n, n, n, len(content)) + content)
    return result


def makeNode(bare: bool = False) -> Tuple[Any, CountingTransport]:
    """
    A started node with the htable peer, its protocol on a L{CountingTransport}.

    @param bare: have the htable peer answer C{200} at once, without
        reading the body.
    """
    from twisted.internet import reactor

    from dmq.tap import NodeConfig, makeNodeService, parseServerAddress

    node = makeNodeService(
        reactor,
        NodeConfig(
            serverAddress=parseServerAddress(f"sip:{NODE[0]}:{NODE[1]}"),
            htables=[TABLE],
        ),
        listen=False,
    )
    transport = CountingTransport()
    node.protocol.makeConnection(transport)
    node.startService()
    # The sender is a member (only members may write: doc/security.md).
    node.nodeManager.add(parseServerAddress(f"sip:{SOURCE[0]}:{SOURCE[1]}"))
    if bare:
        from dmq.interfaces import PeerResponse

        ok = PeerResponse(200, "OK")
        node.htable.messageReceived = lambda request, sender: ok
    return node, transport


def run(protocol: Any, datagrams: Sequence[bytes]) -> None:
    receive = protocol.datagramReceived
    for data in datagrams:
        receive(data, SOURCE)


def countCalls(work: Callable[[], None]) -> Tuple[int, collections.Counter]:
    """
    Run C{work} and count the Python function calls it makes, by function.
    """
    counts: collections.Counter = collections.Counter()

    def profile(frame: Any, event: str, arg: Any) -> None:
        if event == "call":
            code = frame.f_code
            counts[(os.path.basename(code.co_filename), code.co_firstlineno, code.co_name)] += 1

    sys.setprofile(profile)
    try:
        work()
    finally:
        sys.setprofile(None)
    return sum(counts.values()), counts


def main(argv: Sequence[str]) -> None:
    parser = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    parser.add_argument("--requests", type=int, default=20000, help="requests per round")
    parser.add_argument("--rounds", type=int, default=7, help="rounds; the best is reported")
    parser.add_argument("--calls", action="store_true", help="count Python calls per request")
    parser.add_argument("--top", type=int, default=40, help="functions listed with --calls")
    parser.add_argument("--profile", metavar="FILE", help="write a cProfile of one round")
    parser.add_argument(
        "--bare", action="store_true", help="the htable peer answers 200 without reading"
    )
    options = parser.parse_args(argv)

    node, transport = makeNode(options.bare)
    protocol = node.protocol
    first = 0
    # Warm up: the caches, the table's cells, the allocator.
    run(protocol, requests(2000, first))
    first += 2000
    perRequest: List[float] = []
    cpuPerRequest: List[float] = []
    for _ in range(options.rounds):
        batch = requests(options.requests, first)
        first += options.requests
        start, cpuStart = time.perf_counter(), time.process_time()
        run(protocol, batch)
        perRequest.append((time.perf_counter() - start) / options.requests * 1e6)
        cpuPerRequest.append((time.process_time() - cpuStart) / options.requests * 1e6)
    perRequest.sort()
    cpuPerRequest.sort()
    if not transport.last.startswith(b"SIP/2.0 200 "):
        raise SystemExit(f"the node did not answer 200: {transport.last[:80]!r}")
    print(
        f"{platform.python_implementation()} {platform.python_version()}:"
        f" {perRequest[0]:.1f} µs/request best of {options.rounds},"
        f" median {perRequest[len(perRequest) // 2]:.1f};"
        f" CPU {cpuPerRequest[0]:.1f} best, {cpuPerRequest[len(cpuPerRequest) // 2]:.1f} median"
        f" (gc {'on' if gc.isenabled() else 'off'}; {options.requests} requests a round"
        f"{'; the peer answers without reading' if options.bare else ''})"
    )
    if options.profile:
        import cProfile

        batch = requests(options.requests, first)
        first += options.requests
        profiler = cProfile.Profile()
        profiler.runcall(run, protocol, batch)
        profiler.dump_stats(options.profile)
        print(f"cProfile of {options.requests} requests written to {options.profile}")
    if options.calls:
        count = 1000
        batch = requests(count, first)
        first += count
        total, counts = countCalls(lambda: run(protocol, batch))
        print(f"{total / count:.1f} Python calls per request; by file:")
        byFile: collections.Counter = collections.Counter()
        for (f, line, name), n in counts.items():
            byFile[f] += n
        for f, n in byFile.most_common():
            print(f"  {n / count:6.2f}  {f}")
        print("by function:")
        width = max(len(f"{f}:{line} {name}") for (f, line, name) in counts)
        for (f, line, name), n in counts.most_common(options.top):
            print(f"  {n / count:6.2f}  {f}:{line} {name}".ljust(width))


if __name__ == "__main__":
    main(sys.argv[1:])
