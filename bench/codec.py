# -*- test-case-name: dmq.test.test_sip -*-
"""
Measure the speed of the SIP codec, L{dmq.sip}, on captured KDMQ traffic.

Run it from the root of the repository::

    python bench/codec.py [--seconds 3] [--file 02-pings.txt]

It loads every datagram of the Kamailio bus captures in C{dmq/test/data/}
(KDMQ requests and their C{200} replies, as they come on the wire), then, in
one thread (so on one core), repeatedly parses them, serialises the parsed
messages, does both in turn, and parses and checks (L{dmq.sip.checkRequest})
the requests, as a node does with each one it receives, for a few seconds
each, and prints the messages per second of the best round and of the median
round.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from typing import Callable, List, Sequence

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from dmq import sip  # noqa: E402
from dmq.test.captures import DATA, datagrams  # noqa: E402


def loadCorpus(names: Sequence[str]) -> List[bytes]:
    """
    Return the datagrams of the capture files C{names}.
    """
    corpus: List[bytes] = []
    for name in names:
        corpus.extend(capture.data for capture in datagrams(name))
    return corpus


def measure(
    seconds: float, rounds: int, work: Callable[[], None], count: int
) -> List[float]:
    """
    Call C{work} (which handles C{count} messages) again and again for
    C{rounds} rounds of about C{seconds / rounds} seconds each, and return the
    messages handled per second in each round, fastest first.

    The best round is the figure to compare: on a shared machine, the slower
    ones measure the neighbours too.
    """
    # Warm up caches and the allocator before the clock starts.
    work()
    rates = []
    for _ in range(rounds):
        done = 0
        start = time.perf_counter()
        deadline = start + seconds / rounds
        now = start
        while now < deadline:
            work()
            done += count
            now = time.perf_counter()
        rates.append(done / (now - start))
    return sorted(rates, reverse=True)


def main(argv: Sequence[str]) -> None:
    parser = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    parser.add_argument(
        "--seconds", type=float, default=3.0, help="time per measurement"
    )
    parser.add_argument("--rounds", type=int, default=6, help="rounds per measurement")
    parser.add_argument(
        "--file",
        action="append",
        help="a capture file in dmq/test/data (default: the bus captures 0*.txt)",
    )
    options = parser.parse_args(argv)
    names = options.file or sorted(
        name for name in os.listdir(DATA) if name[:1] == "0" and name.endswith(".txt")
    )

    corpus = loadCorpus(names)
    messages = [sip.parse(data) for data in corpus]
    parse = sip.parse
    serialise = sip.serialise

    def parseAll() -> None:
        for data in corpus:
            parse(data)

    def serialiseAll() -> None:
        for message in messages:
            serialise(message)

    def roundTripAll() -> None:
        for data in corpus:
            serialise(parse(data))

    requestData = [data for data in corpus if isinstance(parse(data), sip.Request)]
    checkRequest = sip.checkRequest

    def parseAndCheckAll() -> None:
        for data in requestData:
            checkRequest(parse(data))  # type: ignore[arg-type]

    requests = sum(isinstance(m, sip.Request) for m in messages)
    print(
        f"Python {platform.python_version()} on {platform.machine()},"
        f" {os.cpu_count()} cores; {len(corpus)} datagrams"
        f" ({requests} requests, {len(corpus) - requests} responses,"
        f" {sum(map(len, corpus)) // len(corpus)} octets on average)"
        f" from {len(names)} files"
    )
    for label, work, count in [
        ("parse", parseAll, len(corpus)),
        ("serialise", serialiseAll, len(corpus)),
        ("parse+serialise", roundTripAll, len(corpus)),
        ("parse+checkRequest", parseAndCheckAll, len(requestData)),
    ]:
        rates = measure(options.seconds, options.rounds, work, count)
        print(
            f"{label:>18}: {rates[0]:>10,.0f} messages/s"
            f" (median of {len(rates)} rounds: {rates[len(rates) // 2]:,.0f})"
        )


if __name__ == "__main__":
    main(sys.argv[1:])
