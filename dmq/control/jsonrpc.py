# -*- test-case-name: dmq.test.test_control -*-
"""
JSON-RPC 2.0, transport aside: L{RPCMethods}, a node's table of methods by
name, and L{JSONRPC}, which answers a request body (a call or a batch) from
such a table as Kamailio's C{jsonrpcs} module answers, with the error codes
of the specification and Kamailio's C{500} for a refused call.

Bad input is an answer, never a traceback: text with a lone surrogate
(C{"\\ud800"}, which JSON can spell but UTF-8 cannot) is an invalid request or
invalid params, a batch holds at most L{MAX_BATCH} calls, and warnings
are logged at most once a minute per cause.
"""

from __future__ import annotations

import inspect
import json
import math
from collections import Counter
from typing import Any, Callable, Dict, List, Optional, Tuple, Union, cast

import attr
from twisted.internet.defer import Deferred, DeferredList, fail, maybeDeferred, succeed
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure

from dmq.interfaces import RPCError
from dmq.ratelimit import RateLimitedWarnings, loggable

__all__ = [
    "RPCMethod",
    "RPCMethods",
    "JSONRPC",
    "encodeError",
    "PARSE_ERROR",
    "INVALID_REQUEST",
    "METHOD_NOT_FOUND",
    "INVALID_PARAMS",
    "INTERNAL_ERROR",
    "APPLICATION_ERROR",
    "MAX_BATCH",
]

PARSE_ERROR = -32700
INVALID_REQUEST = -32600
METHOD_NOT_FOUND = -32601
INVALID_PARAMS = -32602
INTERNAL_ERROR = -32603
APPLICATION_ERROR = 500
"""
The code of a refused call: what Kamailio's modules pass to C{rpc->fault()}.
"""

MAX_BATCH = 100
"""
The most calls one batch may hold.
"""

@attr.frozen
class RPCMethod:
    """
    One entry of an L{RPCMethods} table.
    """

    name: str
    function: Callable[..., Any]
    help: str
    signature: inspect.Signature

    def usage(self) -> str:
        """
        The method and its parameters, as C{dmq.send_message peer node body [content_type]}.
        """
        words = [self.name]
        for parameter in self.signature.parameters.values():
            if parameter.kind is parameter.VAR_POSITIONAL:
                words.append(f"[{parameter.name}...]")
            elif parameter.default is parameter.empty:
                words.append(parameter.name)
            else:
                words.append(f"[{parameter.name}]")
        return " ".join(words)


class RPCMethods:
    """
    The RPC methods of one node, by name.
    """

    def __init__(self) -> None:
        self._methods: Dict[str, RPCMethod] = {}

    def addMethod(self, name: str, function: Callable[..., Any], help: str = "") -> None:
        """
        Add a method.

        @param name: its RPC name, by Kamailio's custom C{module.action}
            (C{htable.sets}).
        @param function: called with the request's parameters, by position
            (a JSON array) or by name (a JSON object, keys matching its
            parameter names).  It returns a JSON-serialisable value or a
            L{Deferred} firing with one, and raises L{RPCError} (or fails
            with one) to refuse the call.  Any other exception is a bug: it is
            logged with its traceback and answered C{-32603}.
        @param help: one line for C{system.methodHelp}.
        @raise ValueError: if a method of that name exists.
        """
        if not name or name in self._methods:
            raise ValueError(f"an RPC method named {name!r} already exists" if name else "an RPC method needs a name")
        self._methods[name] = RPCMethod(name, function, help, inspect.signature(function))

    def removeMethod(self, name: str) -> None:
        """
        Remove the method C{name}.

        @raise KeyError: if there is none.
        """
        del self._methods[name]

    def names(self) -> List[str]:
        """
        The method names, sorted.
        """
        return sorted(self._methods)

    def get(self, name: str) -> Optional[RPCMethod]:
        return self._methods.get(name)

    def call(self, name: str, params: Union[None, List[Any], Dict[str, Any]]) -> Deferred[Any]:
        """
        Call method C{name} with C{params}.

        @return: a L{Deferred} firing with the result, or failing with an
            L{RPCError} (unknown method, parameters that do not fit, or the
            method's own refusal) or, for a bug, any other exception.
        """
        method = self._methods.get(name)
        if method is None:
            return fail(RPCError(METHOD_NOT_FOUND, f"Method not found: {name}"))
        try:
            if isinstance(params, dict):
                bound = method.signature.bind(**params)
            else:
                bound = method.signature.bind(*(params or ()))
        except TypeError as e:
            return fail(RPCError(INVALID_PARAMS, f"Invalid params: {e} (usage: {method.usage()})"))
        return maybeDeferred(method.function, *bound.args, **bound.kwargs)


class JSONRPC:
    """
    JSON-RPC 2.0 requests to an L{RPCMethods} table, transport aside: bytes
    in, bytes out.  Single calls and batches; a call without an C{id} is a
    notification and gets no answer.

    @ivar statistics: counters of what was refused: C{parseErrors},
        C{invalidRequests}, C{batchesTooLarge}, C{internalErrors}.
    """

    _log = Logger()

    def __init__(
        self, methods: RPCMethods, clock: Optional[IReactorTime] = None, statistics: Optional[Counter[str]] = None
    ) -> None:
        """
        @param clock: the clock of the rate limit on warnings; the global
            reactor by default.
        @param statistics: the counter to count in.
        """
        if clock is None:
            from twisted.internet import reactor

            clock = reactor
        self._methods = methods
        self.statistics: Counter[str] = statistics if statistics is not None else Counter()
        self._clock = clock
        self._warnings = RateLimitedWarnings(clock, self._log)
        self._lastFailure: Dict[str, float] = {}

    def handle(self, data: bytes) -> Deferred[Optional[bytes]]:
        """
        Answer one request body.

        @return: a L{Deferred} that fires with the answer's bytes, or with
            C{None} when there is nothing to answer (only notifications).  It
            never fails.
        """
        try:
            message = json.loads(data, parse_constant=_notJSON, parse_float=_finite)
        except (ValueError, RecursionError) as e:
            self.statistics["parseErrors"] += 1
            self._warnings.warn("parseError", "Control: JSON-RPC request is not JSON: {error}", error=str(e))
            return succeed(encodeError(None, PARSE_ERROR, f"Parse error: {e}"))
        if not isinstance(message, list):
            return self._call(message)
        if not message:
            return self._invalid(None, "Invalid Request: empty batch")
        if len(message) > MAX_BATCH:
            self.statistics["batchesTooLarge"] += 1
            return self._invalid(
                None, f"Invalid Request: a batch holds at most {MAX_BATCH} calls, not {len(message)}"
            )
        d = DeferredList([self._call(one) for one in message])
        return d.addCallback(_batch)

    def _call(self, message: object) -> Deferred[Optional[bytes]]:
        if not isinstance(message, dict):
            return self._invalid(None, "Invalid Request: a call is a JSON object")
        callId = message.get("id")
        if callId is not None and (
            isinstance(callId, bool) or not isinstance(callId, (str, int, float))
        ):
            return self._invalid(None, "Invalid Request: id must be a string, a number or null")
        if not _validText(callId):
            return self._invalid(None, "Invalid Request: id is not valid Unicode (a lone surrogate)")
        if message.get("jsonrpc", "2.0") != "2.0":
            return self._invalid(callId, 'Invalid Request: jsonrpc must be "2.0"')
        method = message.get("method")
        if not isinstance(method, str):
            return self._invalid(callId, "Invalid Request: method must be a string")
        if not _validText(method):
            return self._invalid(callId, "Invalid Request: method is not valid Unicode (a lone surrogate)")
        params = message.get("params")
        # Any: the method's result, then its answer's bytes.
        d: Deferred[Any]
        if params is not None and not isinstance(params, (list, dict)):
            d = fail(RPCError(INVALID_PARAMS, "Invalid params: params must be an array or an object"))
        elif not _validText(params):
            d = fail(RPCError(INVALID_PARAMS, "Invalid params: a string is not valid Unicode (a lone surrogate)"))
        else:
            d = self._methods.call(method, params)
        d.addCallbacks(
            lambda result: _encode({"jsonrpc": "2.0", "result": result, "id": callId}),
            self._failed,
            errbackArgs=(method, callId),
        )
        # A result that is not JSON is the method's bug too.
        d.addErrback(self._failed, method, callId)
        if "id" not in message:
            d.addCallback(lambda _: None)
        return d

    def _invalid(self, callId: object, message: str) -> Deferred[Optional[bytes]]:
        self.statistics["invalidRequests"] += 1
        # The message's first words say the cause; what follows may be
        # the sender's.
        self._warnings.warn(" ".join(message.split()[:5]), "Control: {message}", message=message)
        return succeed(encodeError(callId, INVALID_REQUEST, message))

    def _failed(self, failure: Failure, method: str, callId: object) -> bytes:
        if failure.check(RPCError):
            error = cast(RPCError, failure.value)
            # An answer like any other: not worth a line each.
            self._log.debug(
                "Control: {method} refused: {message}",
                method=loggable(method),
                message=loggable(error.message),
            )
            return encodeError(callId, error.code, error.message)
        self.statistics["internalErrors"] += 1
        # A bug: its traceback once a minute per method is enough.
        now = self._clock.seconds()
        if now - self._lastFailure.get(method, -60.0) >= 60.0:
            self._lastFailure[method] = now
            self._log.failure("Control: {method} failed", failure, method=loggable(method))
        return encodeError(callId, INTERNAL_ERROR, f"Internal error: {failure.getErrorMessage()}")


def _notJSON(name: str) -> object:
    # Python reads NaN and Infinity, which JSON does not have; answering
    # them in an id would make the answer not JSON either.
    raise ValueError(f"{name} is not JSON")


def _finite(text: str) -> float:
    number = float(text)
    if not math.isfinite(number):
        raise ValueError(f"{text} is out of the range of a double")
    return number


def _validText(value: object) -> bool:
    """
    Whether every string in C{value} (a JSON value, keys included) encodes
    to UTF-8: JSON's C{"\\ud800"} is a lone surrogate, which does not.
    """
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            if not item.isascii():
                try:
                    item.encode("utf-8")
                except UnicodeEncodeError:
                    return False
        elif isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return True


def _batch(results: List[Tuple[bool, Optional[bytes]]]) -> Optional[bytes]:
    answers = [answer for _, answer in results if answer is not None]
    return b"[" + b",".join(answers) + b"]" if answers else None


def _encode(response: Dict[str, Any]) -> bytes:
    try:
        text = json.dumps(response, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    except (TypeError, ValueError) as e:
        raise TypeError(f"the result is not JSON: {e}") from None
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError:
        # A lone surrogate: JSON spells it as an escape.
        return json.dumps(response, separators=(",", ":"), allow_nan=False).encode("ascii")


def encodeError(callId: object, code: int, message: str) -> bytes:
    """
    The JSON-RPC 2.0 error answer to the call C{callId}.
    """
    return _encode({"jsonrpc": "2.0", "error": {"code": code, "message": message}, "id": callId})
