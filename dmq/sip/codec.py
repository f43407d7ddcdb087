# -*- test-case-name: dmq.test.test_sip -*-
"""
The bytes codec: L{parse} reads one datagram as one L{Request} or L{Response}
(line endings, folding, compact names, comma-joined list headers,
Content-Length in octets) and L{serialise} writes one back, refusing anything
L{parse} would not read the same way; L{serialiseReply} writes a request's
response as L{serialise} would, without building it first.
"""

from __future__ import annotations

from typing import Callable, Iterable, List, Optional, Tuple

from dmq.sip.headers import (
    SIP_VERSION,
    SIPParseError,
    _KNOWN_NAMES,
    _LIST_HEADERS,
    _SPELLINGS,
    _SPELLINGS_LIMIT,
    _TOKEN,
    _headerName,
    _splitOutside,
    canonicalName,
)
from dmq.sip.message import REASONS, _COPIED, Message, Request, Response, _tagged
from dmq.sip.uri import _URIS

__all__ = ["parse", "serialise", "serialiseReply"]

# The headers L{parse} does more with than append them.
_SPECIAL_NAMES = _LIST_HEADERS | {"Content-Length"}

# Methods that need no token check.
_METHODS = frozenset(["KDMQ", "OPTIONS", "INVITE", "ACK", "BYE", "CANCEL"])


def parse(data: bytes) -> Message:
    """
    Parse one datagram as one SIP message.

    Lines end with CRLF, or all with a bare LF; a CR or LF anywhere else in
    the start line and headers is an error.  Octets past Content-Length are
    discarded; a body shorter than Content-Length is an error.  A message
    without Content-Length takes the rest of the datagram as its body.  The
    Request-URI is parsed and checked here (or found among those met
    before); the other structured headers are parsed when first used (see
    L{dmq.sip.message.checkRequest}).

    @raise SIPParseError: if C{data} is not a message we accept.  For a
        request, the exception carries the headers read so far.
    """
    if data[:1] in (b"\r", b"\n", b""):
        data = data.lstrip(b"\r\n")
        if not data:
            raise SIPParseError("Empty message")

    # The common case, a CRLF message with a blank line and clean headers,
    # costs one search; anything else is sorted out by _readHead.
    end = data.find(b"\r\n\r\n")
    lines = None
    if end >= 0:
        try:
            head = data[:end].decode("utf-8")
        except UnicodeDecodeError:
            pass
        else:
            lines = head.split("\r\n")
            breaks = len(lines) - 1
            if head.count("\n") != breaks or head.count("\r") != breaks:
                lines = None
            else:
                bodyStart = end + 4
    if lines is None:
        lines, bodyStart = _readHead(data)

    startLine = lines[0]
    if startLine.startswith("SIP/2.0 "):
        request = False
        codeText, _, reason = startLine[8:].partition(" ")
        if (
            len(codeText) != 3
            or not "1" <= codeText[0] <= "6"
            or not "0" <= codeText[1] <= "9"
            or not "0" <= codeText[2] <= "9"
            or "\x00" in reason
        ):
            raise SIPParseError("Bad status line")
    else:
        request = True
        parts = startLine.split(" ")
        if len(parts) != 3 or parts[2] != SIP_VERSION:
            raise SIPParseError("Bad request line")
        method, uriText, _ = parts
        if method not in _METHODS and _TOKEN.match(method) is None:
            raise SIPParseError("Bad method")

    spellings = _SPELLINGS
    special = _SPECIAL_NAMES
    unfolded = False
    while True:
        headers: list[Tuple[str, str]] = []
        append = headers.append
        contentLength = None
        try:
            for line in lines[1:]:
                name, colon, value = line.partition(":")
                try:
                    canonical = spellings[name]
                except KeyError:
                    found = _headerName(name)
                    if found is None:
                        if not colon:
                            raise _error(
                                "Header line without a colon", headers, request
                            )
                        raise _error("Bad header name", headers, request)
                    canonical = found
                if not colon:
                    raise _error("Header line without a colon", headers, request)
                value = value.strip(" \t")
                if canonical in special:
                    if canonical == "Content-Length":
                        # As _DIGITS: isdigit() alone takes other scripts.
                        if not (
                            value.isdigit() and value.isascii() and len(value) <= 10
                        ):
                            raise _error("Bad Content-Length", headers, request)
                        length = int(value)
                        if contentLength is not None and contentLength != length:
                            raise _error(
                                "Conflicting Content-Length headers", headers, request
                            )
                        contentLength = length
                    elif "," in value:
                        _appendList(append, canonical, value, headers, request)
                    else:
                        append((canonical, value))
                else:
                    append((canonical, value))
        except SIPParseError:
            # Folded lines are rare, so they are looked for only when the
            # lines as they are do not make sense: a continuation line reads
            # as a bad header name, or completes the line before it.
            if unfolded or not any(line[:1] in (" ", "\t") for line in lines):
                raise
        else:
            break
        lines = _unfold(lines, request)
        unfolded = True

    if contentLength is None:
        body = data[bodyStart:]
    else:
        bodyEnd = bodyStart + contentLength
        if bodyEnd > len(data):
            raise _error("Body shorter than Content-Length", headers, request)
        body = data[bodyStart:bodyEnd]
    if request:
        try:
            uri = _URIS[uriText]
        except SIPParseError as e:
            raise _error(f"Bad Request-URI: {e.reason}", headers, True) from None
        return Request(method, uri, tuple(headers), body)
    return Response(int(codeText), reason, tuple(headers), body)


def _readHead(data: bytes) -> Tuple[list[str], int]:
    """
    Find the end of the start line and headers of C{data}, whatever its line
    endings, and return its lines and where the body starts.

    @raise SIPParseError: if there is no end of the headers, if they are not
        UTF-8, or if their line endings are mixed.
    """
    crlf = data.find(b"\r\n\r\n")
    bare = data.find(b"\n\n", 0, crlf) if crlf >= 0 else data.find(b"\n\n")
    if bare >= 0:
        end = bare
        bodyStart = bare + 2
        newline = "\n"
    elif crlf >= 0:
        end = crlf
        bodyStart = crlf + 4
        newline = "\r\n"
    elif data.endswith(b"\r\n"):
        # A message with no body may end right after its last header line.
        end = len(data) - 2
        bodyStart = len(data)
        newline = "\r\n"
    else:
        raise SIPParseError("No end of headers")
    try:
        head = data[:end].decode("utf-8")
    except UnicodeDecodeError:
        raise SIPParseError("Headers are not UTF-8") from None
    lines = head.split(newline)
    breaks = len(lines) - 1
    if newline == "\n":
        if "\r" in head:
            raise SIPParseError("Mixed line endings")
    elif head.count("\n") != breaks or head.count("\r") != breaks:
        raise SIPParseError("Stray CR or LF in headers")
    return lines, bodyStart


def _appendList(
    append: Callable[[Tuple[str, str]], None],
    name: str,
    value: str,
    headers: List[Tuple[str, str]],
    request: bool,
) -> None:
    """
    Append each element of the comma-separated C{value} of the list header
    C{name} as one header.
    """
    try:
        values = _splitOutside(value, ",")
    except SIPParseError as e:
        raise _error(e.reason, headers, request) from None
    values = [part.strip(" \t") for part in values]
    if "" in values:
        raise _error(f"Empty value in {name} list", headers, request)
    for part in values:
        append((name, part))


def _unfold(lines: list[str], request: bool) -> list[str]:
    """
    Join each continuation line (one that starts with a blank) to the line
    before it with a single space.
    """
    result = [lines[0]]
    for i in range(1, len(lines)):
        line = lines[i]
        if line[:1] in (" ", "\t"):
            if len(result) == 1:
                raise _error("Continuation line before any header", [], request)
            result[-1] = result[-1].rstrip(" \t") + " " + line.strip(" \t")
        else:
            result.append(line)
    return result


def _error(reason: str, headers: List[Tuple[str, str]], request: bool) -> SIPParseError:
    return SIPParseError(reason, tuple(headers) if request else None)


def serialise(message: Message) -> bytes:
    """
    Serialise a message, writing Content-Length (the length of the body in
    octets) after its other headers.  A Content-Length among the message's
    headers is left out: the body decides.

    @raise ValueError: if the message cannot be written as one that
        L{parse} would read back: a method or header name that is not a
        token, a status code out of C{100}-C{699}, a NUL in the reason
        phrase, or a CR or LF in the start line or a header (which would let
        a value forge headers).
    """
    if isinstance(message, Request):
        method = message.method
        if method not in _METHODS and _TOKEN.match(method) is None:
            raise ValueError(f"Bad method {method!r}")
        startLine = f"{method} {message.uri.toString()} {SIP_VERSION}"
    else:
        code = message.code
        reason = message.reason
        if not 100 <= code <= 699 or "\x00" in reason:
            raise ValueError(f"Bad status line {code!r} {reason!r}")
        startLine = f"{SIP_VERSION} {code} {reason}"
    lines = [startLine]
    written = _WRITTEN_NAMES
    lines.extend(
        [
            f"{name}: {value}"
            for name, value in message.headers
            if name in written or _isWritten(name)
        ]
    )
    head = "\r\n".join(lines)
    breaks = len(lines) - 1
    if head.count("\n") != breaks or head.count("\r") != breaks:
        raise ValueError("CR or LF in the start line or a header of a SIP message")
    return (
        f"{head}\r\nContent-Length: {len(message.body)}\r\n\r\n".encode("utf-8")
        + message.body
    )


def serialiseReply(
    request: Request,
    code: int,
    reason: Optional[str] = None,
    headers: Iterable[Tuple[str, str]] = (),
    body: bytes = b"",
    toTag: Optional[str] = None,
) -> bytes:
    """
    The bytes of C{serialise(responseFor(request, code, reason, headers,
    body, toTag))}, written straight from the request's own header values
    with no L{Response} in between: how a server answers.  See
    L{dmq.sip.message.responseFor} for what is copied.

    @raise ValueError: when L{serialise} would.
    """
    if reason is None:
        reason = REASONS.get(code, "Unknown")
    if not 100 <= code <= 699 or "\x00" in reason:
        raise ValueError(f"Bad status line {code!r} {reason!r}")
    lines = [f"{SIP_VERSION} {code} {reason}"]
    append = lines.append
    tagged = toTag is not None and code != 100
    firstTo = True
    for name, value in request.headers:
        if name in _COPIED:
            append(f"{name}: {value}")
        elif name == "To":
            if tagged:
                value = _tagged(request, value, firstTo, toTag)  # type: ignore[arg-type]
            firstTo = False
            append(f"To: {value}")
    written = _WRITTEN_NAMES
    for name, value in headers:
        if name in written or _isWritten(name):
            append(f"{name}: {value}")
    head = "\r\n".join(lines)
    breaks = len(lines) - 1
    if head.count("\n") != breaks or head.count("\r") != breaks:
        raise ValueError("CR or LF in the start line or a header of a SIP message")
    return f"{head}\r\nContent-Length: {len(body)}\r\n\r\n".encode("utf-8") + body


# Header names that serialise writes (every name but Content-Length's), as
# met; bounded like _SPELLINGS.
_WRITTEN_NAMES = set(_KNOWN_NAMES) - {"Content-Length"}


def _isWritten(name: str) -> bool:
    """
    Whether L{serialise} writes a header called C{name}: unless it is
    Content-Length.

    @raise ValueError: if C{name} is not a token.
    """
    if not isinstance(name, str) or _TOKEN.match(name) is None:
        raise ValueError(f"Bad header name {name!r}")
    if canonicalName(name) == "Content-Length":
        return False
    if len(_WRITTEN_NAMES) < _SPELLINGS_LIMIT:
        _WRITTEN_NAMES.add(name)
    return True
