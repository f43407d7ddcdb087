# -*- test-case-name: dmq.test.test_htable_wire -*-
"""
The JSON bodies of the shipped peers (htable, usrloc, dialog): reading one
into an object (L{decodeObject}), and L{BadMessage}, what their wire modules
raise for a body they answer C{400}.
"""

from __future__ import annotations

import json
from typing import Dict, Optional

__all__ = ["BadMessage", "decodeObject"]


class BadMessage(Exception):
    """
    A body we answer C{400}.

    @ivar detail: what is wrong, for the reason phrase; C{None} when the
        body is not a JSON object at all.
    """

    def __init__(self, detail: Optional[str] = None) -> None:
        Exception.__init__(self, detail)
        self.detail = detail

    @property
    def reason(self) -> str:
        """
        The reason phrase of the C{400}: C{"Bad Request (detail)"}.
        """
        return f"Bad Request ({self.detail})" if self.detail else "Bad Request"


def _rejectConstant(name: str) -> object:
    raise ValueError(f"{name} is not JSON")


# json.loads with any keyword builds a new decoder (and its scanner) per call.
# A repeated key keeps its last value, as in Kamailio (Kamailio 5.6's dialog
# module writes some keys twice).
_DECODER = json.JSONDecoder(parse_constant=_rejectConstant)
_SCAN = _DECODER.scan_once  # type: ignore[attr-defined]

# PyPy's own JSON reader (what json.loads uses there when given no hooks),
# eight times as fast on a KDMQ body as the decoder above, which PyPy runs
# in Python.  It reads NaN and Infinity, which we refuse: a body that names
# either, even in a string, goes to the decoder above.
try:
    from _pypyjson import loads as _pypyLoads  # type: ignore[import-not-found]
except ImportError:
    _pypyLoads = None


def decodeObject(body: bytes) -> Dict[str, object]:
    """
    Read C{body} as a JSON object, as Kamailio's peers read theirs.

    @raise BadMessage: (with no detail) when C{body} is empty, not UTF-8,
        not JSON (C{NaN} and C{Infinity} included, or nested too deep), or
        not an object.
    """
    if not body:
        raise BadMessage()
    try:
        text = body.decode("utf-8")
        if _pypyLoads is not None and "NaN" not in text and "Infinity" not in text:
            message = _pypyLoads(text, json.JSONDecodeError)
        else:
            # A body as Kamailio writes it, an object with no whitespace
            # around it, is read by the scanner alone; anything else, as
            # decode() reads it (the whitespace skipped, the rest refused).
            message, end = _SCAN(text, 0) if text[:1] == "{" else (None, -1)
            if end != len(text):
                message = _DECODER.decode(text)
    except (ValueError, RecursionError, StopIteration):
        raise BadMessage() from None
    if not isinstance(message, dict):
        raise BadMessage()
    return message
