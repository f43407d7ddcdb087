# -*- test-case-name: dmq.test.test_bus -*-
"""
The floor of C{bench/bus.py}: the least a Twisted program can do to answer a
KDMQ request, so that a node's rate can be read against what Twisted itself
manages on the same interpreter.

Run it from the root of the repository (C{bench/bus.py} does)::

    python bench/floor.py [--host 127.0.0.71] [--port 5060]

It listens on one UDP socket with L{DatagramProtocol} on the default reactor
and answers every request with a canned C{200 OK}: it splits the head at the
blank line and into lines, copies the Via, From, To, Call-ID and CSeq lines
as they are (a tag appended to a To without one) and sends them back.  It
checks nothing, keeps no state, calls no peer and parses no value: a dmq node
does all of that, so the floor is a bound it cannot reach, not a target.
It runs until SIGTERM or SIGINT.
"""

from __future__ import annotations

import argparse
import socket
import sys
from typing import Sequence, Tuple

from twisted.internet.protocol import DatagramProtocol

# Long and compact forms, as they come before the colon, lower-cased.
_COPIED = frozenset(
    [b"via", b"v", b"from", b"f", b"to", b"t", b"call-id", b"i", b"cseq"]
)
_TO = frozenset([b"to", b"t"])
_STATUS = b"SIP/2.0 200 OK"
_END = b"Content-Length: 0\r\n\r\n"
# What the node's socket gets too (dmq.transport): Kamailio's buffer size.
RECEIVE_BUFFER = 256 * 1024


class FloorResponder(DatagramProtocol):
    """
    Answer every datagram that looks like a SIP request with a canned
    C{200 OK} carrying its Via, From, To, Call-ID and CSeq.
    """

    def startProtocol(self) -> None:
        sock = self.transport.getHandle()  # type: ignore[union-attr]
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RECEIVE_BUFFER)

    def datagramReceived(self, datagram: bytes, address: Tuple[str, int]) -> None:
        end = datagram.find(b"\r\n\r\n")
        if end < 0 or datagram.startswith(b"SIP/2.0"):
            return
        reply = [_STATUS]
        for line in datagram[:end].split(b"\r\n")[1:]:
            name = line[: line.find(b":")].strip().lower()
            if name in _COPIED:
                if name in _TO and b";tag=" not in line:
                    line += b";tag=floor"
                reply.append(line)
        reply.append(_END)
        self.transport.write(b"\r\n".join(reply), address)  # type: ignore[union-attr]


def main(argv: Sequence[str]) -> None:
    parser = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    parser.add_argument("--host", default="127.0.0.71", help="a loopback address to bind")
    parser.add_argument("--port", type=int, default=5060)
    options = parser.parse_args(argv)
    if not options.host.startswith("127."):
        parser.error("--host must be a loopback address (127.0.0.0/8)")
    from twisted.internet import reactor

    reactor.listenUDP(  # type: ignore[attr-defined]
        options.port, FloorResponder(), interface=options.host, maxPacketSize=65536
    )
    reactor.run()  # type: ignore[attr-defined]


if __name__ == "__main__":
    main(sys.argv[1:])
