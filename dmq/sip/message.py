# -*- test-case-name: dmq.test.test_sip -*-
"""
SIP messages: L{Request} and L{Response}, with parsed views of the headers
every transaction needs, and what is built or checked from a request:
L{checkRequest}, L{responseFor}, L{newTag}, L{fromURI}.
"""

from __future__ import annotations

import random
from typing import Any, Callable, Dict, Generic, Iterable, Optional, Tuple, TypeVar, Union, overload

import attr

from dmq.sip.address import (
    _CSEQS,
    CSeq,
    NameAddress,
    Via,
    parseNameAddress,
    parseVia,
)
from dmq.sip.headers import (
    Headers,
    SIPParseError,
    _DIGITS,
    _KNOWN_NAMES,
    canonicalName,
)
from dmq.sip.memo import Memo
from dmq.sip.uri import URI

__all__ = [
    "REASONS",
    "Request",
    "Response",
    "Message",
    "checkRequest",
    "responseFor",
    "newTag",
    "fromURI",
]

REASONS = {
    100: "Trying",
    200: "OK",
    202: "Accepted",
    400: "Bad Request",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    408: "Request Timeout",
    413: "Request Entity Too Large",
    415: "Unsupported Media Type",
    481: "Call/Transaction Does Not Exist",
    482: "Loop Detected",
    483: "Too Many Hops",
    500: "Server Internal Error",
    501: "Not Implemented",
    503: "Service Unavailable",
    504: "Server Time-out",
}


_T = TypeVar("_T")


class _cachedProperty(Generic[_T]):
    """
    Like C{functools.cached_property}: compute an attribute on first use and
    keep it in the instance's C{__dict__}, even on a frozen attrs class.
    Unlike it on Python 3.11, without taking a lock on every first use, which
    cost as much as the parsing it guards.
    """

    def __init__(self, function: Callable[[Any], _T]) -> None:
        self.function = function
        self.name = function.__name__
        self.__doc__ = function.__doc__

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    @overload
    def __get__(self, instance: None, owner: Optional[type] = None) -> _cachedProperty[_T]:
        ...

    @overload
    def __get__(self, instance: object, owner: Optional[type] = None) -> _T:
        ...

    def __get__(self, instance: Any, owner: Optional[type] = None) -> Any:
        if instance is None:
            return self
        value = self.function(instance)
        instance.__dict__[self.name] = value
        return value


class _FirstValues(Dict[str, str]):
    """
    The first value of each header of a message, by name: looking up a
    header that is not there raises L{SIPParseError} naming it.
    """

    def __missing__(self, name: str) -> str:
        raise SIPParseError(f"Missing {name} header")


class _Message:
    """
    What requests and responses share: headers, a body, and parsed views of
    the headers every transaction needs.

    A view is parsed on first use and kept; a malformed header raises
    L{SIPParseError} when its view is read, and only then.  The values the
    views parse from repeat across the messages of a bus, and the parsers
    keep what they made of them (L{dmq.sip.memo}), so a view of a value met
    before costs a dictionary lookup.
    """

    headers: Headers
    body: bytes

    def header(self, name: str) -> Optional[str]:
        """
        Return the first value of the header C{name} (any spelling), or C{None}.
        """
        name = canonicalName(name)
        if name in _KNOWN_NAMES:
            return self._firstValues.get(name)
        # Unknown names keep the spelling they came with.
        lowered = name.lower()
        for key, value in self.headers:
            if key.lower() == lowered:
                return value
        return None

    def headerValues(self, name: str) -> list[str]:
        """
        Return every value of the header C{name} (any spelling), in order.
        """
        name = canonicalName(name)
        if name in _KNOWN_NAMES:
            return [value for key, value in self.headers if key == name]
        lowered = name.lower()
        return [value for key, value in self.headers if key.lower() == lowered]

    @_cachedProperty
    def _firstValues(self) -> _FirstValues:
        """
        The first value of each header, by its name as stored: the head is
        read once, and each view below finds its value with one lookup.
        """
        return _FirstValues(reversed(self.headers))

    @_cachedProperty
    def via(self) -> Tuple[Via, ...]:
        """
        Every Via, top first.

        @raise SIPParseError: when there is none or one is malformed.
        """
        values = self._firstValues
        top = parseVia(values["Via"])
        # The first value stands for every one when no name is repeated.
        if len(values) == len(self.headers):
            return (top,)
        rest = [value for key, value in self.headers if key == "Via"][1:]
        return (top,) + tuple([parseVia(value) for value in rest])

    @_cachedProperty
    def fromAddress(self) -> NameAddress:
        return parseNameAddress(self._firstValues["From"])

    @_cachedProperty
    def to(self) -> NameAddress:
        return parseNameAddress(self._firstValues["To"])

    @_cachedProperty
    def callID(self) -> str:
        value = self._firstValues["Call-ID"]
        if not value or " " in value:
            raise SIPParseError("Bad Call-ID header")
        return value

    @_cachedProperty
    def cseq(self) -> CSeq:
        return _CSEQS[self._firstValues["CSeq"]]

    @_cachedProperty
    def maxForwards(self) -> Optional[int]:
        value = self._firstValues.get("Max-Forwards")
        if value is None:
            return None
        return _MAX_FORWARDS[value]

    @property
    def contentType(self) -> Optional[str]:
        return self.header("Content-Type")


def _parseMaxForwards(value: str) -> int:
    if not _DIGITS.match(value) or int(value) > 255:
        raise SIPParseError("Bad Max-Forwards header")
    return int(value)


_MAX_FORWARDS: Memo[int] = Memo(_parseMaxForwards)


@attr.frozen(slots=False)
class Request(_Message):
    """
    A SIP request.  Content-Length is not a header here: it is always the
    length of C{body} and L{dmq.sip.codec.serialise} writes it.
    """

    method: str
    uri: URI
    headers: Headers = ()
    body: bytes = b""


@attr.frozen(slots=False)
class Response(_Message):
    """
    A SIP response.  As for L{Request}, Content-Length is derived from C{body}.
    """

    code: int
    reason: str
    headers: Headers = ()
    body: bytes = b""


Message = Union[Request, Response]


def checkRequest(request: Request) -> None:
    """
    Check that C{request} has well-formed mandatory headers: Via (with a
    branch or not), From, To, Call-ID, a CSeq naming the request's method,
    and a valid Max-Forwards when present.  Their views (L{Request.via} and
    the others) are parsed here, once, and kept.

    @raise SIPParseError: naming the first problem found.
    """
    fields = request.__dict__
    for view in _CHECKED:
        # What reading each view would do, without the descriptor's call.
        if view.name not in fields:
            fields[view.name] = view.function(request)
    if fields["cseq"].method != request.method:
        raise SIPParseError("CSeq method does not match the request")


# The views checkRequest parses, in the order it checks them.
_CHECKED = [
    _Message.__dict__[name]
    for name in ["_firstValues", "via", "fromAddress", "to", "callID", "cseq", "maxForwards"]
]


def responseFor(
    request: Request,
    code: int,
    reason: Optional[str] = None,
    headers: Iterable[Tuple[str, str]] = (),
    body: bytes = b"",
    toTag: Optional[str] = None,
) -> Response:
    """
    Build a response to C{request} as RFC 3261 §8.2.6 says: the Vias, From,
    Call-ID and CSeq copied, the To copied with C{toTag} added when it has no
    tag yet (and the code is not 100).

    Only the headers present in C{request} are copied, so this also answers a
    request that failed L{checkRequest}.
    """
    copied: list[Tuple[str, str]] = []
    tagged = toTag is not None and code != 100
    firstTo = True
    for name, value in request.headers:
        if name in _COPIED:
            copied.append((name, value))
        elif name == "To":
            if tagged:
                value = _tagged(request, value, firstTo, toTag)  # type: ignore[arg-type]
            firstTo = False
            copied.append((name, value))
    copied.extend(headers)
    return Response(
        code,
        reason if reason is not None else REASONS.get(code, "Unknown"),
        tuple(copied),
        body,
    )


# The headers a response copies from its request as they are (RFC 3261
# §8.2.6.2); To is copied too, with a tag added.
_COPIED = frozenset(["Via", "From", "Call-ID", "CSeq"])


def _tagged(request: Request, value: str, first: bool, toTag: str) -> str:
    """
    The To value C{value} of C{request} with C{;tag=toTag} added, unless it
    has a tag already or does not parse (a request that failed
    L{checkRequest} is answered with its To as it is).

    @param first: whether C{value} is the first To, which L{Request.to}
        has parsed already when the request was checked.
    """
    try:
        to = request.to if first else parseNameAddress(value)
    except SIPParseError:
        return value
    if to.parameters and to.tag is not None:
        return value
    return value + ";tag=" + toTag


def newTag() -> str:
    """
    A fresh From or To tag: 64 random bits in hex.  Tags must be unique,
    not secret.
    """
    return random.getrandbits(64).to_bytes(8, "big").hex()


def fromURI(request: Request) -> Optional[URI]:
    """
    The URI of C{request}'s From header (who sent it, for KDMQ), or C{None}
    when it has no From or a malformed one.
    """
    try:
        return request.fromAddress.uri
    except SIPParseError:
        return None
