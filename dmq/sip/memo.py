# -*- test-case-name: dmq.test.test_sip -*-
"""
Bounded memo tables for the header values a bus repeats.

A bus has few distinct Request-URIs (one per peer and node), From and To
URIs, Via sent-bys and CSeqs, and every request carries them again.  A
L{Memo} maps such a text to the immutable value its parser made of it, so
that a request costs one dictionary lookup per value instead of a parse.
Only what the parser accepted is kept, so a hit is as strict as a parse: a
text that fails is parsed, and fails, every time.
"""

from __future__ import annotations

from typing import Callable, Dict, Generic, TypeVar

__all__ = ["Memo", "MEMO_SIZE"]

_V = TypeVar("_V")

MEMO_SIZE = 512
"""
How many texts a L{Memo} keeps.  Full, it starts again from empty: a sender
that makes up values cannot grow it, nor keep the values of the bus out of
it for longer than it takes them to come again.
"""


class Memo(Dict[str, _V], Generic[_V]):
    """
    A dictionary from text to what C{parser} makes of it, filled on first
    use: C{memo[text]} is C{parser(text)}, computed once.  A lookup that
    hits is a plain C{dict} lookup, with no Python call.

    The values must be immutable, as they are shared by every message that
    carried the same text.
    """

    def __init__(self, parser: Callable[[str], _V], size: int = MEMO_SIZE) -> None:
        """
        @param parser: makes the value of a text, or raises (then nothing is
            kept).
        @param size: how many texts to keep at most.
        """
        dict.__init__(self)
        self._parser = parser
        self._size = size

    def __missing__(self, text: str) -> _V:
        value = self._parser(text)
        if len(self) >= self._size:
            self.clear()
        self[text] = value
        return value
