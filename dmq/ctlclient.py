# -*- test-case-name: dmq.test.test_ctl -*-
"""
The client side of a node's control endpoint, for C{dmqctl} (L{dmq.ctl})
and scripts: L{controlURL}, what C{--control} may say (C{HOST:PORT}, a base
URL, the RPC URL, or C{unix:PATH}); L{call}, one JSON-RPC call, over HTTP or
the endpoint's UNIX socket, with the bearer token when there is one.

Blocking (C{urllib}): one call at a time is what a command line needs.
"""

from __future__ import annotations

import http.client
import json
import socket
import urllib.error
import urllib.parse
import urllib.request
from typing import Any, Callable, Optional, Sequence, cast

__all__ = [
    "ControlError", "controlURL", "call", "fetch", "metricsURL", "DEFAULT_URL", "DEFAULT_TIMEOUT",
    "TOKEN_FILE_VARIABLE", "UrlOpen", "urlopen",
]

TOKEN_FILE_VARIABLE = "DMQCTL_TOKEN_FILE"
"""
The environment variable naming the token file when C{--token-file} does not.
"""

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


def controlURL(text: str) -> str:
    """
    The JSON-RPC URL of C{--control}: C{HOST:PORT} (C{http://HOST:PORT/RPC}),
    a base URL (C{/RPC} added), the full RPC URL, or C{unix:PATH}, the
    endpoint's UNIX socket (C{unix://PATH/RPC}, C{PATH} quoted).

    @raise ValueError: if it is none of them.
    """
    if text.startswith("unix:") and not text.startswith("unix://"):
        path = text[len("unix:"):]
        if not path:
            raise ValueError(f"{text!r}: give the socket's path, unix:/run/dmq/control.sock")
        return f"unix://{urllib.parse.quote(path, safe='')}/RPC"
    if "://" not in text:
        text = "http://" + text
    parts = urllib.parse.urlsplit(text)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError(f"{text!r} is not HOST:PORT or an http:// URL")
    try:
        parts.port
    except ValueError as e:
        raise ValueError(f"{text!r}: {e}") from None
    if parts.path in ("", "/"):
        parts = parts._replace(path="/RPC")
    return urllib.parse.urlunsplit(parts)


UrlOpen = Callable[..., Any]


class _UnixConnection(http.client.HTTPConnection):
    """
    HTTP over a UNIX socket: the control endpoint's C{unix:} endpoint.
    """

    def __init__(self, path: str, timeout: Optional[float]) -> None:
        http.client.HTTPConnection.__init__(self, "localhost", timeout=timeout)
        self._path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.settimeout(self.timeout)
            sock.connect(self._path)
        except OSError:
            sock.close()
            raise
        self.sock = sock


class _UnixHandler(urllib.request.AbstractHTTPHandler):
    """
    Opens C{unix://PATH/...} URLs, C{PATH} quoted (as L{controlURL} writes
    them).
    """

    def unix_open(self, request: urllib.request.Request) -> Any:
        path = urllib.parse.unquote(request.host)
        return self.do_open(lambda host, timeout=None, **ignored: _UnixConnection(path, timeout), request)

    unix_request = urllib.request.AbstractHTTPHandler.do_request_


def urlopen(request: urllib.request.Request, timeout: float) -> Any:
    """
    C{urllib.request.urlopen}, and UNIX sockets.
    """
    if request.type == "unix":
        return urllib.request.build_opener(_UnixHandler()).open(request, timeout=timeout)
    return urllib.request.urlopen(request, timeout=timeout)


def fetch(request: urllib.request.Request, timeout: float, urlopen: UrlOpen, token: Optional[bytes]) -> bytes:
    url = request.full_url
    if token is not None:
        request.add_header("Authorization", "Bearer " + token.decode("ascii"))
    try:
        with urlopen(request, timeout=timeout) as response:
            return cast(bytes, response.read())
    except urllib.error.HTTPError as e:
        if e.code == 401:
            hint = "a wrong token" if token is not None else f"give its token (--token-file or ${TOKEN_FILE_VARIABLE})"
            raise ControlError(f"{url}: HTTP 401 Unauthorized: {hint}") from None
        raise ControlError(f"{url}: HTTP {e.code} {e.reason}") from None
    except urllib.error.URLError as e:
        raise ControlError(f"cannot reach the control endpoint at {url}: {e.reason}") from None
    except (OSError, http.client.HTTPException) as e:
        raise ControlError(f"cannot reach the control endpoint at {url}: {e}") from None


def call(
    url: str, method: str, params: Sequence[Any], timeout: float = DEFAULT_TIMEOUT,
    urlopen: UrlOpen = urlopen, token: Optional[bytes] = None,
) -> Any:
    """
    Make one JSON-RPC call.

    @param token: the endpoint's bearer token, or C{None}.
    @return: its result.
    @raise ControlError: if the endpoint cannot be reached, does not answer
        JSON-RPC, or answers an error.
    """
    body = json.dumps({"jsonrpc": "2.0", "method": method, "params": list(params), "id": 1})
    request = urllib.request.Request(
        url, data=body.encode("utf-8"), headers={"Content-Type": "application/json"}, method="POST"
    )
    data = fetch(request, timeout, urlopen, token)
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
