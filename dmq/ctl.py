# -*- test-case-name: dmq.test.test_ctl -*-
"""
C{dmqctl}: the command line client of a node's control endpoint
(L{dmq.control}), Kamailio's C{kamcmd dmq.*} for a dmq node::

    dmqctl [--control URL] [--json] [--timeout S] [--token-file FILE] COMMAND
        nodes | peers | add URI | remove URI | status URI STATUS
        | send PEER NODE BODY [--content-type T] | bcast PEER BODY [--content-type T]
        | metrics | watch [--interval S] [--count N]

C{--control} is C{HOST:PORT}, the endpoint's base URL, its full RPC URL or
C{unix:PATH};
options may come before or after the command.  The token comes from
C{--token-file} or the file named by C{DMQCTL_TOKEN_FILE}.  It prints
aligned tables, or the JSON-RPC result with C{--json}.  It exits 0 on
success; 1 when the endpoint cannot be reached, the call is refused, or a
message sent is not answered 2xx; 2 for a usage error.

A blocking client (C{urllib}) is enough here: one call per run, or one a
second for C{watch}.
"""

from __future__ import annotations

import getopt
import json
import os
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, TextIO, Tuple, Type, cast

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import LoopingCall
from twisted.python import usage

from dmq import __version__
from dmq.bearer import readTokenFile
from dmq.ctlclient import DEFAULT_TIMEOUT, DEFAULT_URL, TOKEN_FILE_VARIABLE, ControlError, UrlOpen, call
from dmq.ctlclient import controlURL, fetch, metricsURL
from dmq.ctlclient import urlopen as defaultOpen

__all__ = [
    "main", "Options", "Watcher", "nodesTable", "table",
    # From dmq.ctlclient.
    "DEFAULT_URL", "ControlError", "controlURL", "call", "metricsURL", "TOKEN_FILE_VARIABLE",
]

def table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """
    Format C{rows} under C{headers} in aligned columns.
    """
    cells = [[str(cell) for cell in row] for row in [headers, *rows]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    return "".join(
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip() + "\n"
        for row in cells
    )


def _oneLine(text: str) -> str:
    return text.replace("\r", "\\r").replace("\n", "\\n")


class _Exit(Exception):
    """
    Stop parsing: C{--help} or C{--version} has its text to print.
    """

    def __init__(self, text: str) -> None:
        Exception.__init__(self, text)
        self.text = text


class _Printing(usage.Options):
    """
    Options whose C{--help} and C{--version} print where L{main} says, not
    straight to C{sys.stdout}.
    """

    def opt_help(self) -> None:
        """
        Display this help and exit.
        """
        raise _Exit(str(self))

    def opt_version(self) -> None:
        """
        Display dmq's version and exit.
        """
        raise _Exit(f"dmqctl (dmq) {__version__}\n")


class _Command(_Printing):
    """
    One subcommand: the RPC it makes and how it prints the result.
    """

    optFlags = [["json", "j", "Print the result as JSON."]]
    method = ""
    synopsis = ""
    description: str
    """
    One line for the commands' list and the command's help; each command
    sets its own.
    """

    def __init__(self) -> None:
        # usage.Options is unannotated, and pyproject.toml's exclusion of it
        # does not reach what our subclass inherits.
        _Printing.__init__(self)  # type: ignore[no-untyped-call]
        # Not the module's docstring, which usage.Options shows by default.
        self.longdesc = (
            f"{self.description} The options of dmqctl (--control, --timeout, --token-file, --json) "
            "may come here too."
        )

    def getSynopsis(self) -> str:
        name = self.parent.subCommand if self.parent is not None else "COMMAND"
        return f"Usage: dmqctl [options] {name} {self.synopsis}".rstrip() + (
            " [--content-type T]" if "content-type" in self.longOpt or "content-type=" in self.longOpt else ""
        )

    def parseOptions(self, options: Optional[Sequence[str]] = None) -> None:
        # Options may follow the arguments ("send PEER NODE BODY
        # --content-type T"), which plain getopt does not allow.
        try:
            found, arguments = getopt.gnu_getopt(list(options or ()), self.shortOpt, self.longOpt)
        except getopt.error as e:
            raise usage.UsageError(str(e)) from None
        flat: List[str] = []
        for option, value in found:
            if option.startswith("--"):
                takesValue = option[2:] + "=" in self.longOpt
            else:
                takesValue = option[1] + ":" in self.shortOpt
            flat += [option, value] if takesValue else [option]
        usage.Options.parseOptions(self, flat + ["--"] + arguments)

    def params(self) -> List[Any]:
        return []

    def show(self, result: Any, out: TextIO) -> None:
        """
        Print C{result}.
        """
        out.write(f"{result}\n")

    def exitCode(self, result: Any) -> int:
        """
        The exit code for C{result}.
        """
        return 0


class NodesOptions(_Command):
    synopsis = ""
    description = "List the nodes (dmq.list_nodes)."
    method = "dmq.list_nodes"

    def show(self, result: Any, out: TextIO) -> None:
        out.write(nodesTable(result))


def nodesTable(result: Any) -> str:
    """
    The table of C{dmq.list_nodes}'s C{result}.
    """
    return table(
        ["HOST", "PORT", "PROTO", "RESOLVED_IP", "STATUS", "LOCAL", "FAIL_COUNT", "LAST_NOTIFICATION"],
        [
            [
                node["host"],
                node["port"] or "-",
                node["proto"],
                node["resolved_ip"] or "-",
                node["status"],
                "yes" if node["local"] else "no",
                node.get("fail_count", "-"),
                time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(node["last_notification"]))
                if node["last_notification"]
                else "-",
            ]
            for node in result
        ],
    )


class PeersOptions(_Command):
    synopsis = ""
    description = "List the peers registered on the node (dmq.list_peers)."
    method = "dmq.list_peers"

    def show(self, result: Any, out: TextIO) -> None:
        out.write(table(["PEER", "DESCRIPTION"], [[p["peer_id"], p["description"]] for p in result]))


class _OneURI(_Command):
    synopsis = "URI"

    # Options calls parseArgs with the command's arguments; its own takes none.
    def parseArgs(self, uri: str) -> None:  # type: ignore[override]
        self["uri"] = uri

    def params(self) -> List[Any]:
        return [self["uri"]]


class AddOptions(_OneURI):
    description = "Add a node (dmq.add), active unless the URI says ;status=."
    method = "dmq.add"


class RemoveOptions(_OneURI):
    description = "Remove a node (dmq.remove)."
    method = "dmq.remove"


class StatusOptions(_Command):
    synopsis = "URI active|not_active|disabled"
    description = "Set a node's status (dmq.change_status)."
    method = "dmq.change_status"

    # Options calls parseArgs with the command's arguments; its own takes none.
    def parseArgs(self, uri: str, status: str) -> None:  # type: ignore[override]
        self["uri"] = uri
        self["status"] = status

    def params(self) -> List[Any]:
        return [self["uri"], self["status"]]


def _isSuccess(code: object) -> bool:
    return isinstance(code, int) and 200 <= code < 300


class SendOptions(_Command):
    synopsis = "PEER NODE BODY"
    description = "Send a message to one node (dmq.send_message) and print its reply."
    method = "dmq.send_message"
    optParameters = [["content-type", "t", "text/plain", "The body's Content-Type."]]

    # Options calls parseArgs with the command's arguments; its own takes none.
    def parseArgs(self, peer: str, node: str, body: str) -> None:  # type: ignore[override]
        self["peer"], self["node"], self["body"] = peer, node, body

    def params(self) -> List[Any]:
        return [self["peer"], self["node"], self["body"], self["content-type"]]

    def show(self, result: Any, out: TextIO) -> None:
        out.write(f"{result['code']} {result['reason']}\n")
        if result.get("body"):
            out.write(result["body"] if result["body"].endswith("\n") else result["body"] + "\n")

    def exitCode(self, result: Any) -> int:
        return 0 if _isSuccess(result["code"]) else 1


class BcastOptions(_Command):
    synopsis = "PEER BODY"
    description = "Send a message to every active node (dmq.bcast_message) and print their replies."
    method = "dmq.bcast_message"
    optParameters = [["content-type", "t", "text/plain", "The body's Content-Type."]]

    # Options calls parseArgs with the command's arguments; its own takes none.
    def parseArgs(self, peer: str, body: str) -> None:  # type: ignore[override]
        self["peer"], self["body"] = peer, body

    def params(self) -> List[Any]:
        return [self["peer"], self["body"], self["content-type"]]

    def show(self, result: Any, out: TextIO) -> None:
        if not result:
            out.write("no active node\n")
            return
        rows = []
        for reply in result:
            if reply["code"] is None:
                rows.append([reply["node"], "-", reply.get("error", ""), ""])
            else:
                rows.append([reply["node"], reply["code"], reply["reason"], _oneLine(reply["body"])])
        out.write(table(["NODE", "CODE", "REASON", "BODY"], rows))

    def exitCode(self, result: Any) -> int:
        return 0 if all(_isSuccess(reply["code"]) for reply in result) else 1


class MetricsOptions(_Command):
    synopsis = ""
    description = "Print the node's Prometheus metrics (GET /metrics beside the RPC URL)."


WATCH_FRAMES = 0
"""
C{watch}'s default C{--count}: redraw until interrupted.
"""


class WatchOptions(_Command):
    synopsis = "[--interval S] [--count N]"
    description = "Redraw the node table every second (dmq.list_nodes) until interrupted."
    method = "dmq.list_nodes"
    optParameters = [
        ["interval", "i", 1.0, "Seconds between redraws (0.2 to 3600).", float],
        ["count", "n", WATCH_FRAMES, "Stop after this many redraws; 0: until interrupted.", int],
    ]

    def postOptions(self) -> None:
        if not 0.2 <= self["interval"] <= 3600:
            raise usage.UsageError("--interval must be 0.2 to 3600 seconds")
        if self["count"] < 0:
            raise usage.UsageError("--count must not be negative")


# The global options, which may come after the command: their names as
# given, and whether each takes a value.
_GLOBAL = {"--control": True, "-c": True, "--timeout": True, "--token-file": True, "--version": False}


def _hoist(arguments: Sequence[str]) -> List[str]:
    """
    Move the global options out of C{arguments}, wherever they are (up to
    a C{--}), to the front, so that C{dmqctl nodes --control URL} is read
    as C{dmqctl --control URL nodes}.
    """
    front: List[str] = []
    rest: List[str] = []
    index = 0
    while index < len(arguments):
        argument = arguments[index]
        if argument == "--":
            rest += arguments[index:]
            break
        name = argument.split("=", 1)[0] if argument.startswith("--") else argument
        if name in _GLOBAL:
            if _GLOBAL[name] and "=" not in argument and index + 1 < len(arguments):
                front += arguments[index:index + 2]
                index += 2
                continue
            front.append(argument)
        else:
            rest.append(argument)
        index += 1
    return front + rest


class Options(_Printing):
    longdesc = (
        "Talk to a dmq node's control endpoint (JSON-RPC, Kamailio's dmq RPC names). "
        "Options may come before or after the command. "
        "'dmqctl COMMAND --help' for a command's own options."
    )
    optParameters = [
        [
            "control", "c", DEFAULT_URL,
            "The node's control endpoint: HOST:PORT, its URL, its RPC URL, or unix:PATH for its UNIX socket.",
        ],
        ["timeout", None, DEFAULT_TIMEOUT, "Seconds to wait for an answer.", float],
        [
            "token-file", None, None,
            f"A file (mode 600) holding the endpoint's token [default: ${TOKEN_FILE_VARIABLE}, if set].",
        ],
    ]
    optFlags = [["json", "j", "Print the result as JSON."]]

    def getSynopsis(self) -> str:
        return "Usage: dmqctl [options] COMMAND [ARGS] [command options]"

    def parseOptions(self, options: Optional[Sequence[str]] = None) -> None:
        usage.Options.parseOptions(self, _hoist(list(options or ())))

    # Twisted's documented form: (name, shortcut, parser class, description).
    subCommands: List[Tuple[str, Optional[str], Type[_Command], str]] = [
        ("nodes", None, NodesOptions, NodesOptions.description),
        ("peers", None, PeersOptions, PeersOptions.description),
        ("add", None, AddOptions, AddOptions.description),
        ("remove", None, RemoveOptions, RemoveOptions.description),
        ("status", None, StatusOptions, StatusOptions.description),
        ("send", None, SendOptions, SendOptions.description),
        ("bcast", None, BcastOptions, BcastOptions.description),
        ("metrics", None, MetricsOptions, MetricsOptions.description),
        ("watch", None, WatchOptions, WatchOptions.description),
    ]

    def postOptions(self) -> None:
        if self.subCommand is None:
            raise usage.UsageError("give a command: " + ", ".join(c[0] for c in self.subCommands))
        if self["timeout"] <= 0:
            raise usage.UsageError("--timeout must be positive")
        try:
            self["control"] = controlURL(self["control"])
        except ValueError as e:
            raise usage.UsageError(f"--control: {e}") from None


def _metrics(url: str, timeout: float, urlopen: UrlOpen, token: Optional[bytes], asJSON: bool, out: TextIO) -> int:
    text = fetch(urllib.request.Request(metricsURL(url)), timeout, urlopen, token).decode("utf-8")
    if not asJSON:
        out.write(text)
        return 0
    from prometheus_client.parser import text_string_to_metric_families

    samples: List[Dict[str, Any]] = [
        {"name": sample.name, "labels": sample.labels, "value": sample.value}
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    ]
    out.write(json.dumps(samples, indent=2) + "\n")
    return 0


_CLEAR = "\x1b[H\x1b[2J"
"""
Cursor home, erase the screen: each frame of C{watch} replaces the last.
"""


class Watcher:
    """
    C{dmqctl watch}: the node table, fetched and redrawn every C{interval}
    seconds on C{clock}, until stopped or C{count} frames are drawn.

    One fetch at a time, each bounded by its timeout; a frame that cannot
    be fetched says why, and the next one tries again.

    @ivar frames: how many frames were drawn.
    """

    def __init__(
        self, fetch: Callable[[], Any], out: TextIO, clock: IReactorTime, interval: float = 1.0,
        count: int = 0, title: str = "",
    ) -> None:
        """
        @param fetch: makes the C{dmq.list_nodes} call; returns its result
            or raises L{ControlError}.
        @param count: the frames to draw, 0 for no end.
        """
        self._fetch = fetch
        self._out = out
        self._clock = clock
        self._interval = interval
        self._count = count
        self._title = title
        self._loop = LoopingCall(self._frame)
        self._loop.clock = clock
        self.frames = 0

    def start(self) -> Deferred[LoopingCall]:
        """
        Draw now and every interval.

        @return: a L{Deferred} that fires when C{count} frames are drawn,
            or when L{stop} is called.
        """
        return self._loop.start(self._interval, now=True)

    def stop(self) -> None:
        """
        Draw no more.
        """
        if self._loop.running:
            self._loop.stop()

    def _frame(self) -> None:
        try:
            body = nodesTable(self._fetch())
        except ControlError as e:
            body = f"dmqctl: {e}\n"
        stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(self._clock.seconds()))
        clear = _CLEAR if getattr(self._out, "isatty", lambda: False)() else ("\n" if self.frames else "")
        self._out.write(f"{clear}{self._title}  every {self._interval:g} s  {stamp}\n\n{body}")
        self._out.flush()
        self.frames += 1
        if self._count and self.frames >= self._count:
            self.stop()


def _token(config: Options, environ: Mapping[str, str]) -> Optional[bytes]:
    path = config["token-file"]
    where = "--token-file"
    if path is None:
        path = environ.get(TOKEN_FILE_VARIABLE) or None
        where = f"${TOKEN_FILE_VARIABLE}"
    if path is None:
        return None
    try:
        return readTokenFile(path)
    except ValueError as e:
        raise usage.UsageError(f"{where}: {e}") from None


def main(
    argv: Optional[Sequence[str]] = None,
    stdout: Optional[TextIO] = None,
    stderr: Optional[TextIO] = None,
    urlopen: UrlOpen = defaultOpen,
    environ: Optional[Mapping[str, str]] = None,
    clock: Optional[IReactorTime] = None,
) -> int:
    """
    Run C{dmqctl}.

    @param argv: the arguments, without the program name; by default
        C{sys.argv[1:]}.
    @param urlopen: what opens URLs (tests pass their own).
    @param environ: the environment; by default C{os.environ}.
    @param clock: for C{watch}: the clock to redraw on, which the caller
        then runs (tests pass a L{twisted.internet.task.Clock}); by default
        the reactor, run until interrupted.
    @return: the exit code.
    """
    out = stdout if stdout is not None else sys.stdout
    err = stderr if stderr is not None else sys.stderr
    # usage.Options is unannotated, and pyproject.toml's exclusion of it
    # does not reach what our subclass inherits.
    config = Options()  # type: ignore[no-untyped-call]
    try:
        config.parseOptions(list(sys.argv[1:] if argv is None else argv))
        token = _token(config, os.environ if environ is None else environ)
    except usage.UsageError as e:
        err.write(f"dmqctl: {e}\n(dmqctl --help for the commands)\n")
        return 2
    except _Exit as e:
        out.write(e.text if e.text.endswith("\n") else e.text + "\n")
        return 0
    command: _Command = config.subOptions
    asJSON = bool(config["json"] or command["json"])
    url, timeout = config["control"], config["timeout"]
    if isinstance(command, WatchOptions):
        return _watch(command, lambda: call(url, command.method, [], timeout, urlopen, token), url, out, clock)
    try:
        if isinstance(command, MetricsOptions):
            return _metrics(url, timeout, urlopen, token, asJSON, out)
        result = call(url, command.method, command.params(), timeout, urlopen, token)
    except ControlError as e:
        err.write(f"dmqctl: {e}\n")
        return 1
    if asJSON:
        out.write(json.dumps(result, indent=2, ensure_ascii=False) + "\n")
    else:
        command.show(result, out)
    return command.exitCode(result)


def _watch(
    command: WatchOptions, fetch: Callable[[], Any], url: str, out: TextIO, clock: Optional[IReactorTime]
) -> int:
    watcher = Watcher(fetch, out, clock or _reactor(), command["interval"], command["count"], f"dmqctl watch {url}")
    done = watcher.start()
    if clock is not None:
        return 0
    from twisted.internet import reactor

    # Interrupted, the reactor stops by itself (SIGINT).
    done.addBoth(lambda _: reactor.callLater(0, reactor.stop))
    reactor.run()
    return 0


def _reactor() -> IReactorTime:
    from twisted.internet import reactor

    return reactor


if __name__ == "__main__":
    sys.exit(main())
