"""
How many KDMQ htable sets per second one dmq node answers over UDP, TCP and
TLS, with K requests outstanding: the load of bench/bus.py's rows (1 s of warm-up,
then the replies of --seconds counted; node CPU per request from /proc), from a
plain-socket generator (stdlib C{ssl} for TLS, with a client certificate from
a test CA made now).  The node runs in a child process.

    python bench/tlsbus.py [--seconds 5] [--outstanding 64] [--transport tls]
"""

from __future__ import annotations

import argparse
import os
import re
import socket
import ssl
import subprocess
import sys
import tempfile
import time

HOST = "127.0.0.73"
CLIENT = "127.0.0.74"
PORTS = {"udp": 5060, "tcp": 5060, "tls": 5061}
TABLE = "kdmq=>size=8;autoexpire=0;dmqreplicate=1"
_LENGTH = re.compile(rb"\r\nContent-Length:[ \t]*([0-9]+)", re.IGNORECASE)


def request(transport: str, n: int) -> bytes:
    port = PORTS[transport]
    param = "" if transport == "udp" else f";transport={transport}"
    body = b'{"action":2,"htname":"kdmq","cname":"k%d","type":2,"strval":"v","mode":1}' % (n % 1000)
    head = (
        f"KDMQ sip:htable@{HOST}:{port}{param} SIP/2.0\r\n"
        f"Via: SIP/2.0/{transport.upper()} {CLIENT}:5060;rport;branch=z9hG4bKb.{n}\r\n"
        f"To: <sip:htable@{HOST}:{port}{param}>\r\n"
        f"From: <sip:htable@{CLIENT}:5060{param}>;tag=t{n}\r\n"
        f"CSeq: 10 KDMQ\r\nCall-ID: b-{n}@{CLIENT}\r\nMax-Forwards: 1\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    )
    return head.encode("ascii") + body


def node(transport: str, directory: str) -> None:
    from twisted.internet import reactor

    from dmq.config import NodeConfig, parseServerAddress
    from dmq.tap import makeNodeService

    param = "" if transport == "udp" else f";transport={transport}"
    extra = {}
    if transport == "tls":
        extra = dict(
            tlsCertificate=os.path.join(directory, f"{HOST}.crt"),
            tlsPrivateKey=os.path.join(directory, f"{HOST}.key"),
            tlsCA=os.path.join(directory, "ca.pem"),
        )
    config = NodeConfig(
        serverAddress=parseServerAddress(f"sip:{HOST}:{PORTS[transport]}{param}"),
        htables=[TABLE],
        **extra,
    )
    makeNodeService(reactor, config).startService()
    reactor.run()


def connect(transport: str, directory: str):
    if transport == "udp":
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.bind((CLIENT, 0))
        s.connect((HOST, PORTS[transport]))
        return s
    s = socket.create_connection((HOST, PORTS[transport]), source_address=(CLIENT, 0))
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    if transport == "tls":
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.load_verify_locations(os.path.join(directory, "ca.pem"))
        context.load_cert_chain(
            os.path.join(directory, f"{CLIENT}.crt"), os.path.join(directory, f"{CLIENT}.key")
        )
        s = context.wrap_socket(s, server_hostname=HOST)
    return s


def cpuSeconds(pid: int) -> float:
    """
    The user and system CPU seconds process C{pid} has used.
    """
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def measure(transport: str, directory: str, outstanding: int, seconds: float) -> float:
    s = connect(transport, directory)
    sent = 0
    for _ in range(outstanding):
        s.send(request(transport, sent))
        sent += 1
    answered = 0
    buffer = b""
    start = time.monotonic()
    deadline = start + seconds
    while time.monotonic() < deadline:
        data = s.recv(65536)
        if transport == "udp":
            responses = 1
        else:
            buffer += data
            responses = 0
            while True:
                end = buffer.find(b"\r\n\r\n")
                if end < 0:
                    break
                match = _LENGTH.search(buffer[:end])
                total = end + 4 + (int(match.group(1)) if match else 0)
                if len(buffer) < total:
                    break
                buffer = buffer[total:]
                responses += 1
        answered += responses
        for _ in range(responses):
            s.send(request(transport, sent))
            sent += 1
    elapsed = time.monotonic() - start
    s.close()
    return answered / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--outstanding", type=int, default=64)
    parser.add_argument("--transport", action="append", choices=sorted(PORTS))
    parser.add_argument("--role", default="main", help=argparse.SUPPRESS)
    parser.add_argument("--dir", help=argparse.SUPPRESS)
    options = parser.parse_args()
    if options.role != "main":
        node(options.role, options.dir)
        return
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    from dmq.test.tlsca import TestCA

    directory = tempfile.mkdtemp(prefix="dmq-tlsbench-")
    ca = TestCA(directory)
    ca.issue(HOST)
    ca.issue(CLIENT)
    for transport in options.transport or ["udp", "tcp", "tls"]:
        child = subprocess.Popen(
            [sys.executable, __file__, "--role", transport, "--dir", directory],
            env=dict(os.environ, PYTHONPATH=os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
        )
        try:
            time.sleep(2.0)
            measure(transport, directory, options.outstanding, 1.0)
            before = cpuSeconds(child.pid)
            rate = measure(transport, directory, options.outstanding, options.seconds)
            used = cpuSeconds(child.pid) - before
            perRequest = 1e6 * used / (rate * options.seconds)
            print(
                f"{transport:4} K={options.outstanding:<4} {rate:8.0f} requests/s"
                f" {perRequest:6.0f} node CPU µs/request",
                flush=True,
            )
        finally:
            child.terminate()
            child.wait()


if __name__ == "__main__":
    main()
