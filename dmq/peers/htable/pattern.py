# -*- test-case-name: dmq.test.test_htable_store -*-
"""
The regular expressions of removals by regex (Kamailio's C{sht_rm_name_re},
the htable action 5): L{compilePattern} reads a POSIX extended expression
as Kamailio does (C{REG_ICASE | REG_NEWLINE}, POSIX classes) and refuses
those Python's backtracking engine could spend minutes on; L{Pattern}
searches with a bound on the work of one removal.

Python's C{re} backtracks: C{^(a+)+$} over 28 C{a}s takes seconds, doubling
with each one more.  What is refused (L{BadPattern}):

  - a pattern longer than L{MAX_PATTERN_LENGTH} characters, or nested
    deeper than L{MAX_NESTING} groups;
  - one that does not parse (C{re.error}, and the C{OverflowError} and
    C{RecursionError} the parser raises for C{a{99999999999}} and
    C{((((...))))});
  - a repeated subpattern holding another repeat or an alternation
    (C{(a+)+}, C{(a|ab)*}): the nested quantifiers that backtrack
    exponentially;
  - a repeat count over L{MAX_REPEAT_COUNT};
  - backreferences, lookarounds, atomic groups and possessive repeats:
    not POSIX (Kamailio's C{regcomp} reads them otherwise or not at all).

What is left still backtracks polynomially: C{[0-9]+$} is quadratic in
the text, C{a.*b.*c} cubic.  So each search is given a cost (L{Pattern.cost}:
the starts it may try times what each repeat may backtrack over), a
removal adds them up before it removes anything, and refuses
(L{TooCostly}) past L{MAX_REMOVAL_WORK}; a leading or trailing repeat that
may match nothing (C{.*foo.*}) cannot change whether a search finds
something, and is dropped first.

Runs on CPython 3.11 (C{re._parser}) and PyPy 3.9 (C{sre_parse}).
"""

from __future__ import annotations

import re
import warnings
from typing import Any, List, Tuple

try:
    # typeshed has no stubs for re's private modules (the sre_* ones below
    # are the same code): mypy sees them as Any.
    from re import _compiler as _sre_compile, _constants as _sre_constants, _parser as _sre_parse  # type: ignore[attr-defined]
except ImportError:  # PyPy 3.9, CPython before 3.11
    import sre_compile as _sre_compile
    import sre_constants as _sre_constants
    import sre_parse as _sre_parse

__all__ = [
    "MAX_PATTERN_LENGTH",
    "MAX_NESTING",
    "MAX_REPEAT_COUNT",
    "MAX_REMOVAL_WORK",
    "BadPattern",
    "TooCostly",
    "Pattern",
    "compilePattern",
]

MAX_PATTERN_LENGTH = 256
"""
The longest pattern taken, in characters.
"""

MAX_NESTING = 16
"""
The deepest nesting of groups taken.
"""

MAX_REPEAT_COUNT = 100
"""
The largest count of a bounded repeat (C{a{2,100}}).
"""

MAX_REMOVAL_WORK = 200_000_000
"""
The most work one removal by regex may do, in the units of
L{Pattern.cost}: about half a second of the slowest backtracking.
"""

_FLAGS = re.IGNORECASE | re.MULTILINE

_POSIX_CLASSES = {
    "[:alnum:]": "a-zA-Z0-9",
    "[:alpha:]": "a-zA-Z",
    "[:blank:]": " \\t",
    "[:cntrl:]": "\\x00-\\x1f\\x7f",
    "[:digit:]": "0-9",
    "[:graph:]": "\\x21-\\x7e",
    "[:lower:]": "a-z",
    "[:print:]": "\\x20-\\x7e",
    "[:punct:]": "!-/:-@\\[-`{-~",
    "[:space:]": " \\t\\n\\r\\f\\v",
    "[:upper:]": "A-Z",
    "[:xdigit:]": "0-9A-Fa-f",
}

_C = _sre_constants
_REPEATS = frozenset(
    op for op in (_C.MAX_REPEAT, _C.MIN_REPEAT, getattr(_C, "POSSESSIVE_REPEAT", None)) if op is not None
)
_NOT_POSIX = {
    _C.GROUPREF: "a backreference",
    _C.GROUPREF_EXISTS: "a conditional backreference",
    _C.ASSERT: "a lookaround",
    _C.ASSERT_NOT: "a lookaround",
}
for _name, _what in (("POSSESSIVE_REPEAT", "a possessive repeat"), ("ATOMIC_GROUP", "an atomic group"),
                     ("GROUPREF_IGNORE", "a backreference"), ("GROUPREF_LOC_IGNORE", "a backreference"),
                     ("GROUPREF_UNI_IGNORE", "a backreference")):
    if hasattr(_C, _name):
        _NOT_POSIX[getattr(_C, _name)] = _what


class BadPattern(ValueError):
    """
    A regular expression that is refused: it does not parse, or it could
    make the search backtrack for too long.  The message says why.
    """


class TooCostly(ValueError):
    """
    A removal whose searches would do more than L{MAX_REMOVAL_WORK}: it is
    refused, and nothing is removed.
    """


class Pattern:
    """
    A compiled, checked pattern: L{search} as C{re} does, L{cost} of a
    search in a given text.

    @ivar source: the pattern as given.
    """

    def __init__(self, source: str, compiled: "re.Pattern[str]", anchored: bool, factors: Tuple[int, ...]) -> None:
        self.source = source
        self._compiled = compiled
        self._anchored = anchored
        # Each repeat's range of counts (None: unbounded), each
        # alternation's number of branches.
        self._factors = factors

    def search(self, text: str) -> bool:
        """
        @return: whether the pattern matches somewhere in C{text}.
        """
        return self._compiled.search(text) is not None

    def cost(self, text: str) -> int:
        """
        A bound on the steps of L{search} over C{text}: the positions it may
        start at (each line's start for a pattern anchored by C{^}, else
        every position) times, for each repeat, the counts it may try
        (at most the text's length) and, for each alternation, its
        branches.
        """
        length = len(text) + 1
        work = text.count("\n") + 1 if self._anchored else length
        for factor in self._factors:
            work *= length if factor <= 0 or factor > length else factor
        return work


def compilePattern(pattern: str) -> Pattern:
    """
    Compile a POSIX extended regular expression as Kamailio's C{REG_ICASE |
    REG_NEWLINE}, its character classes translated, or refuse it.

    @raise BadPattern: saying why it is refused.
    """
    if len(pattern) > MAX_PATTERN_LENGTH:
        raise BadPattern(f"a pattern is at most {MAX_PATTERN_LENGTH} characters, not {len(pattern)}")
    translated = pattern
    for posix, python in _POSIX_CLASSES.items():
        translated = translated.replace(posix, python)
    try:
        with warnings.catch_warnings():
            # "Possible nested set" and the like: about Python's future
            # syntax, nothing an operator can act on.
            warnings.simplefilter("ignore")
            parsed = _sre_parse.parse(translated, _FLAGS)
        _check(parsed, [], 0, False)
        # A leading or trailing repeat that may match nothing does not
        # change whether a search finds something: drop it, with its cost.
        items = parsed.data
        while items and _optional(items[0]):
            del items[0]
        while items and _optional(items[-1]):
            del items[-1]
        parsed.width = None
        factors: List[int] = []
        _check(parsed, factors, 0, False)
        anchored = bool(items) and items[0][0] is _C.AT and items[0][1] in (
            _C.AT_BEGINNING,
            _C.AT_BEGINNING_STRING,
        )
        compiled = _sre_compile.compile(parsed, _FLAGS)
    except BadPattern:
        raise
    except re.error as e:
        raise BadPattern(f"bad regular expression {pattern!r}: {e}") from None
    except (OverflowError, RecursionError, ValueError, TypeError, AssertionError) as e:
        raise BadPattern(f"bad regular expression {pattern!r}: {e or type(e).__name__}") from None
    return Pattern(pattern, compiled, anchored, tuple(factors))


def _optional(item: Tuple[Any, Any]) -> bool:
    op, av = item
    return op in _REPEATS and av[0] == 0


def _check(items: Any, factors: List[int], depth: int, repeated: bool) -> None:
    """
    Refuse what the module docstring lists, in the parsed C{items}, and
    add the cost factors of their repeats and alternations to C{factors}.

    @param repeated: whether C{items} are inside a repeat (of more than
        one).
    """
    if depth > MAX_NESTING:
        raise BadPattern(f"groups nested deeper than {MAX_NESTING}")
    for op, av in items:
        if op in _NOT_POSIX:
            raise BadPattern(f"{_NOT_POSIX[op]} is not allowed (not POSIX, or too slow to search)")
        if op in _REPEATS:
            low, high, body = av
            for count in (low, high):
                if count != _C.MAXREPEAT and count > MAX_REPEAT_COUNT:
                    raise BadPattern(f"a repeat count is at most {MAX_REPEAT_COUNT}, not {count}")
            if repeated:
                raise BadPattern("a repeat inside a repeated group (nested quantifiers) is not allowed")
            # Unbounded: as many as the text is long (0 says so).
            factors.append(0 if high == _C.MAXREPEAT else high - low + 1)
            _check(body, factors, depth + 1, high > 1)
        elif op is _C.BRANCH:
            if repeated:
                raise BadPattern("an alternation inside a repeated group is not allowed")
            branches = av[1]
            factors.append(len(branches))
            for branch in branches:
                _check(branch, factors, depth + 1, repeated)
        elif op is _C.SUBPATTERN:
            _check(av[-1], factors, depth + 1, repeated)
