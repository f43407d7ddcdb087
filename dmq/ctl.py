# -*- test-case-name: dmq.test.test_ctl -*-
"""
C{dmqctl}: the command line client of a node's control endpoint
(L{dmq.control}), Kamailio's C{kamcmd dmq.*} for a dmq node::

    dmqctl [--control URL] [--json] nodes | peers | add URI | remove URI
           | status URI STATUS | send PEER NODE BODY [--content-type T]
           | bcast PEER BODY [--content-type T] | metrics

It prints aligned tables, or the JSON-RPC result with C{--json}.  It exits
0 on success; 1 when the endpoint cannot be reached, the call is refused,
or a message sent is not answered 2xx; 2 for a usage error.

A blocking client (C{urllib}) is enough here: one call per run.
"""

from __future__ import annotations

import getopt
import http.client
import json
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from typing import Any, Callable, Dict, List, Optional, Sequence, TextIO, cast

from twisted.python import usage

__all__ = ["main", "Options", "DEFAULT_URL", "ControlError"]

DEFAULT_URL = "http://127.0.0.1:5080/RPC"

DEFAULT_TIMEOUT = 40.0
"""
Seconds to wait for an answer: longer than SIP's Timer F (32 s), so that a
message to a dead node comes back as its 408 rather than as our timeout.
"""


class ControlError(Exception):
    """
    The control endpoint could not be reached, or refused the call.
    """


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


class _Command(usage.Options):
    """
    One subcommand: the RPC it makes and how it prints the result.
    """

    optFlags = [["json", "j", "Print the result as JSON."]]
    method = ""

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
        out.write(
            table(
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
    synopsis = "PEER NODE BODY [--content-type T]"
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
    synopsis = "PEER BODY [--content-type T]"
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


class Options(usage.Options):
    synopsis = "[--control URL] [--json] COMMAND [ARGS]"
    longdesc = "Talk to a dmq node's control endpoint (JSON-RPC, Kamailio's dmq RPC names)."
    optParameters = [
        ["control", "c", DEFAULT_URL, "The node's JSON-RPC URL."],
        ["timeout", None, DEFAULT_TIMEOUT, "Seconds to wait for an answer.", float],
    ]
    optFlags = [["json", "j", "Print the result as JSON."]]
    subCommands: List[List[Any]] = [
        ["nodes", None, NodesOptions, NodesOptions.description],
        ["peers", None, PeersOptions, PeersOptions.description],
        ["add", None, AddOptions, AddOptions.description],
        ["remove", None, RemoveOptions, RemoveOptions.description],
        ["status", None, StatusOptions, StatusOptions.description],
        ["send", None, SendOptions, SendOptions.description],
        ["bcast", None, BcastOptions, BcastOptions.description],
        ["metrics", None, MetricsOptions, MetricsOptions.description],
    ]

    def postOptions(self) -> None:
        if self.subCommand is None:
            raise usage.UsageError("give a command: " + ", ".join(c[0] for c in self.subCommands))
        if self["timeout"] <= 0:
            raise usage.UsageError("--timeout must be positive")
        scheme = urllib.parse.urlsplit(self["control"]).scheme
        if scheme not in ("http", "https"):
            raise usage.UsageError(f"--control: {self['control']!r} is not an http:// URL")


UrlOpen = Callable[..., Any]


def _fetch(request: urllib.request.Request, timeout: float, urlopen: UrlOpen) -> bytes:
    url = request.full_url
    try:
        with urlopen(request, timeout=timeout) as response:
            return cast(bytes, response.read())
    except urllib.error.HTTPError as e:
        raise ControlError(f"{url}: HTTP {e.code} {e.reason}") from None
    except urllib.error.URLError as e:
        raise ControlError(f"cannot reach the control endpoint at {url}: {e.reason}") from None
    except (OSError, http.client.HTTPException) as e:
        raise ControlError(f"cannot reach the control endpoint at {url}: {e}") from None


def call(url: str, method: str, params: Sequence[Any], timeout: float = DEFAULT_TIMEOUT, urlopen: UrlOpen = urllib.request.urlopen) -> Any:
    """
    Make one JSON-RPC call.

    @return: its result.
    @raise ControlError: if the endpoint cannot be reached, does not answer
        JSON-RPC, or answers an error.
    """
    body = json.dumps({"jsonrpc": "2.0", "method": method, "params": list(params), "id": 1})
    request = urllib.request.Request(
        url, data=body.encode("utf-8"), headers={"Content-Type": "application/json"}, method="POST"
    )
    data = _fetch(request, timeout, urlopen)
    try:
        answer = json.loads(data)
    except ValueError:
        raise ControlError(f"{url} did not answer JSON") from None
    if not isinstance(answer, dict) or ("result" not in answer and "error" not in answer):
        raise ControlError(f"{url} did not answer JSON-RPC")
    if "error" in answer:
        error = answer["error"] if isinstance(answer["error"], dict) else {}
        raise ControlError(f"{method}: error {error.get('code')}: {error.get('message')}")
    return answer["result"]


def metricsURL(url: str) -> str:
    """
    The metrics URL beside the RPC URL C{url}.
    """
    return urllib.parse.urlunsplit(urllib.parse.urlsplit(url)._replace(path="/metrics", query=""))


def _metrics(url: str, timeout: float, urlopen: UrlOpen, asJSON: bool, out: TextIO) -> int:
    text = _fetch(urllib.request.Request(metricsURL(url)), timeout, urlopen).decode("utf-8")
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


def main(
    argv: Optional[Sequence[str]] = None,
    stdout: Optional[TextIO] = None,
    stderr: Optional[TextIO] = None,
    urlopen: UrlOpen = urllib.request.urlopen,
) -> int:
    """
    Run C{dmqctl}.

    @param argv: the arguments, without the program name; by default
        C{sys.argv[1:]}.
    @param urlopen: what opens URLs (tests pass their own).
    @return: the exit code.
    """
    out = stdout if stdout is not None else sys.stdout
    err = stderr if stderr is not None else sys.stderr
    # usage.Options is unannotated, and pyproject.toml's exclusion of it
    # does not reach what our subclass inherits.
    config = Options()  # type: ignore[no-untyped-call]
    try:
        config.parseOptions(list(sys.argv[1:] if argv is None else argv))  # type: ignore[no-untyped-call]
    except usage.UsageError as e:
        err.write(f"dmqctl: {e}\n(dmqctl --help for the commands)\n")
        return 2
    except SystemExit as e:
        # --help, which has printed.
        return e.code if isinstance(e.code, int) else 0
    command: _Command = config.subOptions
    asJSON = bool(config["json"] or command["json"])
    try:
        if isinstance(command, MetricsOptions):
            return _metrics(config["control"], config["timeout"], urlopen, asJSON, out)
        result = call(config["control"], command.method, command.params(), config["timeout"], urlopen)
    except ControlError as e:
        err.write(f"dmqctl: {e}\n")
        return 1
    if asJSON:
        out.write(json.dumps(result, indent=2, ensure_ascii=False) + "\n")
    else:
        command.show(result, out)
    return command.exitCode(result)


if __name__ == "__main__":
    sys.exit(main())
