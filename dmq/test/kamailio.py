# -*- test-case-name: dmq.test.test_kamailio_harness -*-
"""
A harness that runs real Kamailio DMQ nodes for trial integration tests.

Each L{KamailioNode} is one Kamailio process tree (the main process and the
children it forks) listening on its own loopback address, configured from
C{dmq/test/data/kamailio-node.cfg}: the DMQ module, htable with a replicated
table C{kdmq} and a local table C{local}, and JSON-RPC on a unix datagram
socket.  Everything is asynchronous and runs on the real reactor; nothing here
sleeps.

Typical use in a trial test::

    from dmq.test.kamailio import KamailioNode, SKIP_REASON, waitFor

    class BusIntegrationTests(TestCase):
        skip = SKIP_REASON

        @inlineCallbacks
        def test_join(self):
            seed = KamailioNode.forTest(self, "127.0.0.21")
            yield seed.start()
            ...

How the process is run, and why:

  - C{kamailio -f <cfg> -P <pidfile> -Y <socket dir> -w <run dir> -DD -E}.
    C{-DD} keeps the main process in the foreground (it still forks its
    children) so the pid that C{spawnProcess} hands back is Kamailio's main
    process; C{-E} sends the log to stderr, which is the node's log file.  As
    root no C{-u}/C{-g} is needed, and C{-Y} keeps Kamailio away from
    C{/run/kamailio}.
  - It is started through a tiny Python wrapper that calls C{setsid()} and
    then C{exec}s Kamailio, so the pid stays the same and Kamailio leads a
    process group (and session) of its own: L{kill} can SIGKILL the whole
    tree at once with one C{killpg} on a group that holds only processes we
    started, and a Ctrl-C meant for trial does not reach Kamailio behind the
    harness's back.  The wrapper also sets C{PR_SET_PDEATHSIG} to SIGTERM
    (kept across C{exec}), so the node shuts down when the test process dies
    without running its cleanups (killed, or interrupted).
  - RPC is JSON-RPC over the C{jsonrpcs} unix datagram socket.  It needs no
    TCP listener (the node keeps C{disable_tcp=yes}, like the captured bus),
    no subprocess per call and no text parsing: one datagram out, one JSON
    datagram back.  The client side binds an abstract-namespace address, so
    nothing is left on disk.  A reply is one datagram of at most 64 KiB
    (Kamailio does not split it), enough for test-sized htable dumps.
"""

from __future__ import annotations

import errno
import itertools
import json
import os
import re
import shutil
import signal
import socket
import sys
import tempfile
from typing import Any, Callable, Dict, Iterable, Iterator, List, Optional, Sequence, Tuple, Union

import attrs
from twisted.internet.defer import (
    Deferred,
    fail,
    inlineCallbacks,
    maybeDeferred,
)
from twisted.internet.interfaces import IReactorTime
from twisted.internet.protocol import DatagramProtocol, ProcessProtocol
from twisted.internet.task import deferLater
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.python.filepath import FilePath
from twisted.trial.unittest import FailTest, SkipTest

__all__ = [
    "KamailioError",
    "KamailioNotFound",
    "KamailioStartError",
    "KamailioRPCError",
    "KamailioRPCTimeout",
    "WaitTimeout",
    "KamailioNode",
    "findKamailio",
    "skipUnlessKamailio",
    "SKIP_REASON",
    "REQUIRE_ENV",
    "waitFor",
    "liveGroupMembers",
]

#: When this environment variable is C{1}, a missing Kamailio fails the
#: interop tests instead of skipping them (CI sets it).
REQUIRE_ENV = "DMQ_REQUIRE_KAMAILIO"

#: Where Debian puts the binary; C{/usr/sbin} is often not on a user's PATH.
_WELL_KNOWN_PATHS = ("/usr/sbin/kamailio", "/usr/local/sbin/kamailio")

_TEMPLATE = FilePath(__file__).sibling("data").child("kamailio-node.cfg")

# Runs in the child between fork and Kamailio, then becomes Kamailio (same
# pid): SIGTERM when the test process dies (1 is PR_SET_PDEATHSIG; checking
# the parent afterwards closes the race with a parent that died already), and
# a new session so that Kamailio leads a process group of its own.
_SPAWN_WRAPPER = """\
import ctypes, os, signal, sys
ctypes.CDLL(None, use_errno=True).prctl(1, int(signal.SIGTERM), 0, 0, 0)
if os.getppid() != int(sys.argv[1]):
    sys.exit("dmq.test.kamailio: the test process is gone")
os.setsid()
os.execv(sys.argv[2], sys.argv[2:])
"""

_LOOPBACK = re.compile(r"^127\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})$")
_PLACEHOLDER = re.compile(r"@@[A-Z_]+@@")

# Linux's sun_path is 108 bytes with the terminating NUL; Kamailio also
# refuses a path of exactly 107.
_MAX_SOCKET_PATH = 106

# Kamailio's jsonrpcs datagram buffer (JSONRPC_DGRAM_BUF_SIZE is 65456).
_MAX_REPLY = 65536


class KamailioError(Exception):
    """
    Something went wrong running or talking to a Kamailio node.
    """


class KamailioNotFound(KamailioError, FailTest):
    """
    There is no Kamailio binary, and the environment requires one.

    A L{FailTest}, so trial reports a test FAILURE rather than an error.
    """


class KamailioStartError(KamailioError):
    """
    Kamailio exited, or did not answer RPC in time, while starting.
    """


@attrs.define(eq=False)
class KamailioRPCError(KamailioError):
    """
    Kamailio answered a JSON-RPC call with an error object.

    @ivar method: the RPC method called.
    @ivar params: its parameters.
    @ivar code: the error code Kamailio returned (often 500, 404 for a missing
        htable key on delete).
    @ivar message: the error message Kamailio returned.
    """

    method: str
    params: Sequence[Any]
    code: Optional[int]
    message: str

    def __str__(self) -> str:
        return (
            f"Kamailio RPC {self.method}{tuple(self.params)!r} failed: "
            f"{self.code} {self.message}"
        )


class KamailioRPCTimeout(KamailioError):
    """
    Kamailio did not answer a JSON-RPC call in time.
    """


class WaitTimeout(FailTest):
    """
    L{waitFor} gave up: the condition did not become true in time.

    A L{FailTest}, so trial reports the test as failed, not as an error.
    """


def findKamailio() -> Optional[str]:
    """
    Find the Kamailio binary.

    @return: the path of C{kamailio} on C{PATH}, else of a well-known install
        location (C{/usr/sbin/kamailio}), else C{None}.
    """
    found = shutil.which("kamailio")
    if found is not None:
        return found
    for candidate in _WELL_KNOWN_PATHS:
        if os.access(candidate, os.X_OK):
            return candidate
    return None


def _kamailioRequired() -> bool:
    return os.environ.get(REQUIRE_ENV, "") == "1"


def _skipReason() -> Optional[str]:
    if findKamailio() is not None or _kamailioRequired():
        return None
    return (
        "Kamailio is not installed (no kamailio on PATH or in /usr/sbin); "
        "install it (apt-get install kamailio) to run the interop tests, "
        f"or set {REQUIRE_ENV}=1 to make its absence a failure"
    )


#: The reason to skip Kamailio integration tests, or C{None} when they should
#: run.  It is C{None} when C{DMQ_REQUIRE_KAMAILIO=1}: a test then runs and
#: fails with L{KamailioNotFound} if the binary is missing.  Use it as a
#: C{TestCase.skip} class attribute.
SKIP_REASON: Optional[str] = _skipReason()


def skipUnlessKamailio() -> str:
    """
    Make sure a Kamailio binary is available, for a C{setUp} or a test.

    @return: the binary's path.
    @raise SkipTest: when there is no binary and C{DMQ_REQUIRE_KAMAILIO} is
        not C{1}.
    @raise KamailioNotFound: when there is no binary and
        C{DMQ_REQUIRE_KAMAILIO=1} (a test failure).
    """
    binary = findKamailio()
    if binary is not None:
        return binary
    if _kamailioRequired():
        raise KamailioNotFound(
            f"{REQUIRE_ENV}=1 but Kamailio is not installed "
            "(no kamailio on PATH or in /usr/sbin)"
        )
    raise SkipTest(_skipReason() or "Kamailio is not installed")


def udpAddressInUse(ip: str, port: int) -> bool:
    """
    Whether something already has UDP C{ip:port}.

    Kamailio binds with C{SO_REUSEADDR}, and Linux lets two sockets that both
    set it share a UDP address: a second Kamailio on a taken address starts
    without complaint and shares the address with the stray one (which of
    them gets a datagram is up to the kernel).  This probe binds without
    C{SO_REUSEADDR}, so it fails whenever anyone holds the address.
    """
    probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        probe.bind((ip, port))
    except OSError as e:
        if e.errno == errno.EADDRINUSE:
            return True
        raise
    finally:
        probe.close()
    return False


def _toFilePath(path: Union[str, "os.PathLike[str]", FilePath[str]]) -> FilePath[str]:
    if isinstance(path, FilePath):
        return path
    return FilePath(os.fspath(path))


def _toTuple(uris: Iterable[str]) -> Tuple[str, ...]:
    return tuple(uris)


def _globalReactor() -> Any:
    from twisted.internet import reactor

    return reactor


def _loopbackAddress(instance: Any, attribute: Any, value: str) -> None:
    match = _LOOPBACK.match(value)
    if match is None or not all(0 <= int(part) <= 255 for part in match.groups()):
        raise ValueError(f"{attribute.name} must be a 127.x.y.z address, not {value!r}")


def _atLeastFive(instance: Any, attribute: Any, value: int) -> None:
    # Kamailio 5.6 silently raises anything lower to 5 (MIN_PING_INTERVAL);
    # refusing it keeps a test from believing it runs at another interval.
    if value < 5:
        raise ValueError(f"{attribute.name} must be at least 5 (Kamailio's minimum)")


def waitFor(
    predicate: Callable[[], object],
    timeout: float = 5.0,
    interval: float = 0.1,
    description: Optional[str] = None,
    reactor: Optional[IReactorTime] = None,
) -> Deferred[None]:
    """
    Poll C{predicate} until it is true, on the reactor, within a time bound.

    The predicate is called at once and then every C{interval} seconds (an
    attempt that is still running delays the next one).  An exception from it
    fails the wait at once.

    @param predicate: returns a boolean (any truth value) or a L{Deferred}
        that fires with one.
    @param timeout: seconds until the wait fails.
    @param interval: seconds between attempts.
    @param description: what is awaited, for the failure message; defaults to
        the predicate's name.
    @param reactor: an L{IReactorTime}; the global reactor by default.

    @return: a L{Deferred} that fires with C{None} once the predicate was
        true, or fails with L{WaitTimeout} after C{timeout} seconds.
    """
    clock: IReactorTime = reactor if reactor is not None else _globalReactor()
    what = description or getattr(predicate, "__qualname__", repr(predicate))
    deadline = clock.seconds() + timeout

    @inlineCallbacks
    def poll() -> Any:
        attempts = 0
        while True:
            attempts += 1
            result = yield maybeDeferred(predicate)
            if result:
                return None
            remaining = deadline - clock.seconds()
            if remaining <= 0:
                raise WaitTimeout(
                    f"timed out after {timeout:g} s ({attempts} attempts) "
                    f"waiting for {what}; last result {result!r}"
                )
            yield deferLater(clock, min(interval, remaining), lambda: None)

    return poll()


class _JSONRPCClient(DatagramProtocol):
    """
    One JSON-RPC call over a unix datagram socket: send, await the reply.
    """

    def __init__(self, requestID: int, method: str, params: Sequence[Any]) -> None:
        self._requestID = requestID
        self._method = method
        self._params = params
        self.result: Deferred[Any] = Deferred()

    def datagramReceived(self, datagram: bytes, addr: Any) -> None:
        if self.result.called:
            return
        try:
            reply = json.loads(datagram.decode("utf-8", "replace"), strict=False)
        except ValueError as e:
            self.result.errback(
                KamailioError(
                    f"Kamailio RPC {self._method}: reply is not JSON ({e}): "
                    f"{datagram[:200]!r}"
                )
            )
            return
        if not isinstance(reply, dict) or reply.get("id") != self._requestID:
            # Not ours (a late answer to an earlier call cannot reach this
            # socket, but be strict anyway).
            return
        error = reply.get("error")
        if error is not None:
            if not isinstance(error, dict):
                error = {"message": str(error)}
            self.result.errback(
                KamailioRPCError(
                    self._method,
                    tuple(self._params),
                    error.get("code"),
                    str(error.get("message", "")),
                )
            )
        else:
            self.result.callback(reply.get("result"))


_clientCounter = itertools.count(1)


def _callJSONRPC(
    reactor: Any,
    socketPath: str,
    method: str,
    params: Sequence[Any],
    timeout: float,
) -> Deferred[Any]:
    requestID = next(_clientCounter)
    client = _JSONRPCClient(requestID, method, params)
    # Abstract namespace (leading NUL): no file to clean up, no path limit.
    address = f"\0dmq-test-kamailio-rpc-{os.getpid()}-{requestID}"
    port = reactor.listenUNIXDatagram(address, client, maxPacketSize=_MAX_REPLY)
    request = {"jsonrpc": "2.0", "method": method, "id": requestID}
    if params:
        request["params"] = list(params)
    try:
        port.write(json.dumps(request).encode("utf-8"), socketPath)
    except OSError as e:
        port.stopListening()
        return fail(e)

    def timedOut(result: Any, seconds: float) -> Failure:
        return Failure(
            KamailioRPCTimeout(
                f"Kamailio RPC {method}{tuple(params)!r} on {socketPath}: "
                f"no answer within {seconds:g} s"
            )
        )

    def close(result: Any) -> Any:
        port.stopListening()
        return result

    return client.result.addTimeout(timeout, reactor, timedOut).addBoth(close)


class _KamailioProcess(ProcessProtocol):
    """
    Tells a L{KamailioNode} when its main process has been reaped.
    """

    def __init__(self, ended: Callable[[Failure], None]) -> None:
        self._ended = ended

    def processEnded(self, reason: Failure) -> None:
        self._ended(reason)


def groupProcessStats(pgid: int) -> Iterator[Tuple[int, List[bytes]]]:
    """
    The processes of process group C{pgid}, zombies included, each as its
    pid and the fields of C{/proc/<pid>/stat} after the command name: field
    0 is the state, 2 the process group, 11 and 12 the user and system clock
    ticks (Linux).
    """
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as f:
                stat = f.read()
        except OSError:
            continue
        # The command name is in parentheses and may contain spaces.
        fields = stat[stat.rfind(b")") + 2 :].split()
        if len(fields) > 12 and int(fields[2]) == pgid:
            yield int(entry), fields


def liveGroupMembers(pgid: int) -> List[int]:
    """
    The pids of the live (not zombie) processes in process group C{pgid}.

    A node's main process leads its own group, so C{liveGroupMembers(pid)}
    with the pid a node had lists what is left of that node (Linux, C{/proc}).
    """
    return [pid for pid, fields in groupProcessStats(pgid) if fields[0] != b"Z"]


@attrs.define(eq=False)
class KamailioNode:
    """
    One real Kamailio DMQ node, run as a child process of this test.

    Addresses are loopback only, one per node (C{127.0.0.21}, C{127.0.0.22},
    ...): Linux answers on the whole of C{127.0.0.0/8} without any setup.

    @ivar runDir: the node's directory (config, log, pid file); created if
        missing.  Give it C{TestCase.mktemp()}.
    @ivar ip: the node's loopback address.
    @ivar port: its UDP port.
    @ivar notificationAddress: seed node URIs (C{notification_address}, one
        modparam each); empty for the node that starts a bus.
    @ivar pingInterval: DMQ C{ping_interval} in seconds (at least 5).
    @ivar numWorkers: DMQ C{num_workers}.
    @ivar children: UDP receiver processes (Kamailio C{children}).
    @ivar initSync: htable C{dmq_init_sync=1}.
    @ivar frTimer: tm C{fr_timer} in milliseconds, or C{None} for Kamailio's
        default (30 s): how long a KDMQ request to a dead node waits for the
        408 that moves the node's status.
    @ivar dmqProcess: handle KDMQ with C{dmq_process_message()} in the UDP
        receivers instead of C{dmq_handle_message()} (DMQ workers).
    @ivar kdmqLog: log one line per received KDMQ request.
    @ivar defines: more C{-A} defines for the config template (C{"WITH_X"}
        or C{"NAME=VALUE"}), e.g. C{("WITH_DIALOG",)}.
    @ivar tls: C{(certificate, private key, CA)} PEM paths to run DMQ over
        mutual TLS on C{tlsPort}: the node's URI is then
        C{sip:IP:TLSPORT;transport=tls} (UDP is still listened on).
    @ivar tlsPort: the TLS port.
    @ivar debug: Kamailio's C{debug} level (2 is INFO, 3 is DEBUG).
    @ivar name: the node's log prefix; the address by default.
    @ivar startTimeout: seconds L{start} waits for RPC to answer.
    @ivar stopTimeout: seconds L{stop} waits after SIGTERM before SIGKILL.
    @ivar binary: the Kamailio binary; found with L{findKamailio} by default.
    @ivar startupSeconds: how long the last L{start} took, for reports.
    """

    runDir: FilePath[str] = attrs.field(converter=_toFilePath)
    ip: str = attrs.field(validator=_loopbackAddress)
    port: int = 5060
    notificationAddress: Tuple[str, ...] = attrs.field(default=(), converter=_toTuple)
    pingInterval: int = attrs.field(default=5, validator=_atLeastFive)
    numWorkers: int = 2
    children: int = 2
    initSync: bool = False
    frTimer: Optional[int] = None
    dmqProcess: bool = False
    kdmqLog: bool = False
    defines: Tuple[str, ...] = attrs.field(default=(), converter=_toTuple)
    tls: Optional[Tuple[str, str, str]] = None
    tlsPort: int = 5061
    debug: int = 2
    name: str = attrs.field(
        default=attrs.Factory(lambda self: self.ip, takes_self=True)
    )
    startTimeout: float = 10.0
    stopTimeout: float = 5.0
    binary: Optional[str] = attrs.field(default=attrs.Factory(findKamailio))
    _reactor: Any = attrs.field(factory=_globalReactor, repr=False)
    startupSeconds: Optional[float] = attrs.field(default=None, init=False)
    _process: Any = attrs.field(default=None, init=False, repr=False)
    _pgid: Optional[int] = attrs.field(default=None, init=False, repr=False)
    _socketDir: Optional[str] = attrs.field(default=None, init=False, repr=False)
    _exitReason: Optional[Failure] = attrs.field(default=None, init=False, repr=False)
    _endWaiters: List[Deferred[None]] = attrs.field(
        factory=list, init=False, repr=False
    )

    _log = Logger()

    @classmethod
    def forTest(cls, testCase: Any, ip: str, **kwargs: Any) -> "KamailioNode":
        """
        Make a node whose run dir is C{testCase.mktemp()} and which is stopped
        by the test's cleanups (SIGTERM, then SIGKILL if it lingers).

        @param testCase: a trial C{TestCase}.
        @param ip: the node's loopback address.
        @param kwargs: any other L{KamailioNode} attribute.
        @return: the node, not started yet.
        """
        node = cls(testCase.mktemp(), ip, **kwargs)
        testCase.addCleanup(node.stop)
        return node

    @property
    def uri(self) -> str:
        """
        The node's DMQ URI (its C{server_address}), e.g. C{sip:127.0.0.21:5060}.
        """
        if self.tls is not None:
            return f"sip:{self.ip}:{self.tlsPort};transport=tls"
        return f"sip:{self.ip}:{self.port}"

    @property
    def hostPort(self) -> str:
        """
        C{ip:port}, the key L{peerStatuses} uses for this node.
        """
        return f"{self.ip}:{self.tlsPort if self.tls is not None else self.port}"

    @property
    def configPath(self) -> FilePath[str]:
        """
        The rendered configuration.
        """
        return self.runDir.child("kamailio.cfg")

    @property
    def logPath(self) -> FilePath[str]:
        """
        Kamailio's stdout and stderr, appended to across restarts.
        """
        return self.runDir.child("kamailio.log")

    @property
    def pidPath(self) -> FilePath[str]:
        """
        The pid file Kamailio writes (C{-P}).
        """
        return self.runDir.child("kamailio.pid")

    @property
    def rpcSocketPath(self) -> Optional[str]:
        """
        The JSON-RPC datagram socket while running, else C{None}.
        """
        if self._socketDir is None:
            return None
        return os.path.join(self._socketDir, "kamailio_rpc.sock")

    @property
    def ctlSocketPath(self) -> Optional[str]:
        """
        The binrpc socket while running (for C{kamcmd -s unixs:PATH}).
        """
        if self._socketDir is None:
            return None
        return os.path.join(self._socketDir, "kamailio_ctl")

    @property
    def pid(self) -> Optional[int]:
        """
        The pid of Kamailio's main process, until it has exited and been
        reaped.
        """
        if self._process is None:
            return None
        pid: Optional[int] = self._process.pid
        return pid

    @property
    def running(self) -> bool:
        """
        Whether our Kamailio main process exists (started, not yet reaped).
        """
        return self._process is not None

    def renderConfig(self, socketDir: str) -> str:
        """
        The node's configuration text, from the template in C{dmq/test/data}.

        @param socketDir: where Kamailio puts its RPC sockets (L{start} makes
            a fresh short directory each time).
        """
        notify = "\n".join(
            f'modparam("dmq", "notification_address", "{uri}")'
            for uri in self.notificationAddress
        )
        values = {
            "DEBUG": str(self.debug),
            "NAME": self.name,
            "CHILDREN": str(self.children),
            "IP": self.ip,
            "PORT": str(self.port),
            "SOCKDIR": socketDir,
            "WORKERS": str(self.numWorkers),
            "PING": str(self.pingInterval),
            "NOTIFICATION_ADDRESSES": notify,
            "SERVER_ADDRESS": self.uri,
            "DISABLE_TCP": "yes" if self.tls is None else "no",
            "TLS": self._tlsLines(),
        }
        text = _TEMPLATE.getContent().decode("utf-8")
        text = _PLACEHOLDER.sub(
            lambda m: values.get(m.group(0)[2:-2], m.group(0)), text
        )
        left = _PLACEHOLDER.findall(text)
        if left:
            raise KamailioError(f"unfilled placeholders in {_TEMPLATE.path}: {left}")
        return text

    def _tlsLines(self) -> str:
        """
        The TLS part of the configuration, writing its C{tls.cfg} (mutual
        TLS, 1.2 at least, peers verified against the CA) in the run dir.
        """
        if self.tls is None:
            return ""
        certificate, key, ca = self.tls
        section = (
            "method = TLSv1.2+\nverify_certificate = yes\nrequire_certificate = yes\n"
            f"private_key = {key}\ncertificate = {certificate}\nca_list = {ca}\n"
        )
        self.runDir.makedirs(ignoreExistingDirectory=True)
        tlsConfig = self.runDir.child("tls.cfg")
        tlsConfig.setContent(
            f"[server:default]\n{section}\n[client:default]\n{section}".encode("utf-8")
        )
        return "\n".join(
            [
                # Kamailio 5.6.3 with Debian 12's OpenSSL 3 may crash when
                # several processes do TLS (kamailio/kamailio#3791, mended
                # by tls_threads_mode from 5.7.5): one TCP reader.
                "tcp_children=1",
                "enable_tls=yes",
                f"listen=tls:{self.ip}:{self.tlsPort}",
                'loadmodule "tls.so"',
                f'modparam("tls", "config", "{tlsConfig.path}")',
            ]
        )

    def commandLine(self) -> List[str]:
        """
        The Kamailio command line (without the wrapper that starts it).
        """
        if self.binary is None:
            raise KamailioNotFound("Kamailio is not installed")
        argv = [
            self.binary,
            "-f", self.configPath.path,
            "-P", self.pidPath.path,
            "-Y", self._socketDir or self.runDir.path,
            "-w", self.runDir.path,
            "-DD",
            "-E",
        ]
        defines = []
        if self.frTimer is not None:
            defines += ["WITH_FR_TIMER", f"FR_TIMER={int(self.frTimer)}"]
        if self.initSync:
            defines.append("WITH_INIT_SYNC")
        if self.dmqProcess:
            defines.append("WITH_DMQ_PROCESS")
        if self.kdmqLog:
            defines.append("WITH_KDMQ_LOG")
        defines += self.defines
        for define in defines:
            argv += ["-A", define]
        return argv

    def logTail(self, lines: int = 40) -> str:
        """
        The last lines of the node's log, for failure messages.
        """
        try:
            content = self.logPath.getContent()
        except OSError:
            return "(no log)"
        return "\n".join(content.decode("utf-8", "replace").splitlines()[-lines:])

    def start(self) -> Deferred["KamailioNode"]:
        """
        Start Kamailio (again, after L{stop} or L{kill}: same config, same
        address).

        @return: a L{Deferred} that fires with this node once Kamailio answers
            RPC, or fails with L{KamailioStartError} (log tail included) if it
            exits first or does not answer within C{startTimeout} seconds; the
            process is killed in that case.  L{KamailioNotFound} when there is
            no binary.
        """
        if self.running:
            return fail(KamailioError(f"{self.name}: already running, pid {self.pid}"))
        if self.binary is None:
            required = ""
            if _kamailioRequired():
                required = f" and {REQUIRE_ENV}=1 requires it"
            return fail(
                KamailioNotFound(
                    "Kamailio is not installed (no kamailio on PATH or in "
                    f"/usr/sbin){required}"
                )
            )
        if udpAddressInUse(self.ip, self.port):
            return fail(
                KamailioStartError(
                    f"{self.name}: UDP {self.hostPort} is already in use "
                    "(a stray Kamailio? see pgrep -a kamailio)"
                )
            )
        self.runDir.makedirs(ignoreExistingDirectory=True)
        self._socketDir = tempfile.mkdtemp(prefix="kdmq-")
        if len(os.path.join(self._socketDir, "kamailio_rpc.sock")) > _MAX_SOCKET_PATH:
            self._removeSocketDir()
            return fail(
                KamailioStartError(
                    "the temporary directory path is too long for a unix "
                    "socket; set TMPDIR to a shorter one"
                )
            )
        self.configPath.setContent(self.renderConfig(self._socketDir).encode("utf-8"))
        if self.pidPath.exists():
            self.pidPath.remove()
        argv = self.commandLine()
        self._exitReason = None

        logFD = os.open(
            self.logPath.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644
        )
        nullFD = os.open(os.devnull, os.O_RDONLY)
        try:
            os.write(logFD, f"===== harness: starting {' '.join(argv)}\n".encode())
            process = self._reactor.spawnProcess(
                _KamailioProcess(self._processEnded),
                sys.executable,
                [sys.executable, "-c", _SPAWN_WRAPPER, str(os.getpid())] + argv,
                env=dict(os.environ),
                path=self.runDir.path,
                childFDs={0: nullFD, 1: logFD, 2: logFD},
            )
        except BaseException:
            self._removeSocketDir()
            raise
        finally:
            os.close(logFD)
            os.close(nullFD)
        if process.pid is not None:  # else it is already reaped: see below
            self._process = process
            self._pgid = process.pid
        return self._waitUntilServing(self._reactor.seconds())

    @inlineCallbacks
    def _waitUntilServing(self, startedAt: float) -> Any:
        deadline = startedAt + self.startTimeout
        lastProblem: object = None
        while True:
            if not self.running:
                raise KamailioStartError(
                    f"{self.name}: kamailio exited while starting "
                    f"({self._exitReason.value if self._exitReason else '?'}); "
                    f"log {self.logPath.path} ends with:\n{self.logTail()}"
                )
            remaining = deadline - self._reactor.seconds()
            if remaining <= 0:
                yield self.kill()
                raise KamailioStartError(
                    f"{self.name}: kamailio did not answer RPC within "
                    f"{self.startTimeout:g} s (last problem: {lastProblem}); "
                    f"log {self.logPath.path} ends with:\n{self.logTail()}"
                )
            try:
                yield self.rpc("core.version", timeout=min(1.0, remaining))
            except (OSError, KamailioRPCTimeout) as e:
                # The socket does not exist yet (ENOENT) or nobody reads it
                # yet (ECONNREFUSED): Kamailio is still starting.
                lastProblem = e
            else:
                self.startupSeconds = self._reactor.seconds() - startedAt
                self._log.info(
                    "kamailio {name} (pid {pid}) answers RPC after {seconds:.3f} s",
                    name=self.name,
                    pid=self.pid,
                    seconds=self.startupSeconds,
                )
                return self
            yield deferLater(self._reactor, 0.02, lambda: None)

    def _processEnded(self, reason: Failure) -> None:
        self._log.info(
            "kamailio {name} (pid {pid}) ended: {reason}",
            name=self.name,
            pid=self._pgid,
            reason=reason.value,
        )
        self._exitReason = reason
        self._process = None
        pgid, self._pgid = self._pgid, None
        # Normally Kamailio's main process reaps all its children before it
        # exits; if it died abruptly some may linger, and they are ours.  The
        # group id cannot be reused while any member is alive.
        if pgid is not None:
            for pid in liveGroupMembers(pgid):
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        self._removeSocketDir()
        waiters, self._endWaiters = self._endWaiters, []
        for waiter in waiters:
            if not waiter.called:
                waiter.callback(None)

    def _removeSocketDir(self) -> None:
        if self._socketDir is not None:
            shutil.rmtree(self._socketDir, ignore_errors=True)
            self._socketDir = None

    def _whenEnded(self, timeout: float) -> Deferred[None]:
        d: Deferred[None] = Deferred()
        if not self.running:
            d.callback(None)
            return d
        self._endWaiters.append(d)
        return d.addTimeout(timeout, self._reactor)

    def _signalGroup(self, signum: int) -> None:
        # Only while our main process is unreaped (alive or a zombie) is the
        # group id certainly ours.
        if self._pgid is not None and self._process is not None:
            try:
                os.killpg(self._pgid, signum)
            except ProcessLookupError:
                pass

    @inlineCallbacks
    def stop(self) -> Any:
        """
        Stop the node with SIGTERM to its main process, the normal shutdown
        (Kamailio passes it on to its children and waits for them).  If it
        is still there after C{stopTimeout} seconds, SIGKILL the whole tree.
        Does nothing if the node is not running; safe as a cleanup.

        @return: a L{Deferred} that fires when all of the node's processes
            are gone.
        """
        if not self.running:
            return None
        pgid = self._pgid
        ended = self._whenEnded(self.stopTimeout)
        try:
            os.kill(self._process.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        try:
            yield ended
        except Exception:
            self._log.warn(
                "kamailio {name} still running {timeout} s after SIGTERM; killing it",
                name=self.name,
                timeout=self.stopTimeout,
            )
            yield self.kill()
        else:
            yield self._groupGone(pgid)
        return None

    @inlineCallbacks
    def kill(self) -> Any:
        """
        Kill the node with SIGKILL to its whole process group, a crash: no
        shutdown code runs and nothing is sent.

        The killed children are reparented to init, which reaps them; until
        it does they show as C{<defunct>} in C{ps}.

        @return: a L{Deferred} that fires when the main process has been
            reaped and no live process of the group remains, or fails with
            L{KamailioError} after 5 s.
        """
        if not self.running:
            return None
        pgid = self._pgid
        ended = self._whenEnded(5.0)
        self._signalGroup(signal.SIGKILL)
        try:
            yield ended
        except Exception:
            raise KamailioError(f"{self.name}: pid {self.pid} survived SIGKILL for 5 s")
        yield self._groupGone(pgid)
        return None

    @inlineCallbacks
    def _groupGone(self, pgid: Optional[int], timeout: float = 5.0) -> Any:
        # SIGKILL is delivered asynchronously: a child can still be exiting
        # when the main process has already been reaped.
        if pgid is None:
            return None
        deadline = self._reactor.seconds() + timeout
        while True:
            left = liveGroupMembers(pgid)
            if not left:
                return None
            if self._reactor.seconds() >= deadline:
                raise KamailioError(
                    f"{self.name}: processes {left} of group {pgid} outlived "
                    f"their main process by {timeout:g} s"
                )
            for pid in left:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            yield deferLater(self._reactor, 0.01, lambda: None)

    def rpc(self, method: str, *params: Any, timeout: float = 5.0) -> Deferred[Any]:
        """
        Call one of Kamailio's RPC methods over JSON-RPC.

        @param method: e.g. C{"dmq.list_nodes"}.
        @param params: its parameters, as JSON values (an C{int} is sent as a
            JSON number, which C{htable.seti} needs).
        @param timeout: seconds to wait for the answer.

        @return: a L{Deferred} that fires with the C{result} member of the
            reply as Python objects, or fails with L{KamailioRPCError} (an
            error reply), L{KamailioRPCTimeout}, or C{OSError} when the socket
            is not there (the node is not running).
        """
        socketPath = self.rpcSocketPath
        if socketPath is None:
            return fail(KamailioError(f"{self.name}: not running"))
        return _callJSONRPC(self._reactor, socketPath, method, params, timeout)

    def listNodes(self) -> Deferred[List[Dict[str, Any]]]:
        """
        C{dmq.list_nodes}.

        @return: a L{Deferred} firing with a list of dicts with the keys
            C{host}, C{port} (a string), C{proto} (C{"*"}), C{resolved_ip},
            C{status} (C{"active"}, C{"not_active"}, C{"disabled"}, ...),
            C{last_notification} (always 0) and C{local} (1 for the node
            itself), newest first.
        """
        return self.rpc("dmq.list_nodes")

    def peerStatuses(self) -> Deferred[Dict[str, str]]:
        """
        The other nodes this node knows and their DMQ status.

        @return: a L{Deferred} firing with a dict from C{"ip:port"} to the
            status string, without the node's own (local) entry.
        """

        def summarise(nodes: List[Dict[str, Any]]) -> Dict[str, str]:
            return {
                f"{n['host']}:{n['port']}": n["status"]
                for n in nodes
                if not n.get("local")
            }

        return self.listNodes().addCallback(summarise)

    def htableGet(self, table: str, key: str) -> Deferred[Union[str, int, None]]:
        """
        C{htable.get}: one cell's value.

        @return: a L{Deferred} firing with the value (C{str} or C{int}), or
            C{None} when the key is not in the table.  (The raw reply is
            C{{"item": {"name", "value", "flags", "expire"}}}; a missing key
            is error 500 C{Key name doesn't exist in htable.}, an unknown
            table is error 500 C{No such htable}, which fails.)
        """

        def missing(failure: Failure) -> None:
            error = failure.value
            if isinstance(error, KamailioRPCError) and "doesn't exist" in error.message:
                return None
            failure.raiseException()

        return (
            self.rpc("htable.get", table, key)
            .addCallback(lambda result: result["item"]["value"])
            .addErrback(missing)
        )

    def htableSets(self, table: str, key: str, value: str) -> Deferred[str]:
        """
        C{htable.sets}: set a string cell (replicated if the table is).

        @return: a L{Deferred} firing with Kamailio's C{"Ok. Key set to new
            value."}.
        """
        return self.rpc("htable.sets", table, key, value)

    def htableSeti(self, table: str, key: str, value: int) -> Deferred[str]:
        """
        C{htable.seti}: set an integer cell (replicated if the table is).

        @return: a L{Deferred} firing with Kamailio's C{"Ok. Key set to new
            value."}.
        """
        return self.rpc("htable.seti", table, key, int(value))

    def htableDelete(self, table: str, key: str) -> Deferred[str]:
        """
        C{htable.delete}: delete a cell (replicated if the table is).

        @return: a L{Deferred} firing with C{"Ok. Key deleted."}, or failing
            with L{KamailioRPCError} code 404 when the key is not there.
        """
        return self.rpc("htable.delete", table, key)

    def htableDump(self, table: str) -> Deferred[List[Dict[str, Any]]]:
        """
        C{htable.dump}, raw.

        @return: a L{Deferred} firing with a list of non-empty slots, each
            C{{"entry": slot index, "size": cells, "slot": [{"name", "value",
            "type": "str" or "int"}]}}; C{[]} for an empty table.
        """
        return self.rpc("htable.dump", table)

    def htableItems(self, table: str) -> Deferred[Dict[str, Union[str, int]]]:
        """
        C{htable.dump} flattened.

        @return: a L{Deferred} firing with a dict from key to value.
        """

        def flatten(slots: List[Dict[str, Any]]) -> Dict[str, Union[str, int]]:
            return {
                cell["name"]: cell["value"]
                for slot in slots or []
                for cell in slot.get("slot", [])
            }

        return self.htableDump(table).addCallback(flatten)
