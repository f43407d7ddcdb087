# -*- test-case-name: dmq.test.test_htable,dmq.test.test_htable_store -*-
"""
What an htable is: a table's declaration in Kamailio's syntax (L{TableSpec},
L{parseTableSpec}), what its cells may hold (L{checkKey}, L{checkValue}), and
Kamailio's hash, which orders the cells by slot (L{coreCaseHash}).

Pure, no I/O.  See C{doc/design.md} (the htable peer) for the whole design.
"""

from __future__ import annotations

import re
from typing import Dict, List, Optional, Tuple, Union

import attr

__all__ = [
    "INT32_MIN",
    "INT32_MAX",
    "Value",
    "MATCH_NAME",
    "MATCH_VALUE",
    "checkKey",
    "checkText",
    "checkValue",
    "TableSpec",
    "parseTableSpec",
    "coreCaseHash",
]

# Kamailio reads integers as C ints (SRJSON_GET_INT), and so do we.
INT32_MIN = -(2**31)
INT32_MAX = 2**31 - 1

# What a cell holds.
Value = Union[int, str]

# What a removal matches: the cell names, or their string values.
MATCH_NAME = 0
MATCH_VALUE = 1


def checkKey(key: object) -> str:
    """
    Check that C{key} may name a cell: a non-empty str, valid Unicode,
    without NUL.

    @return: C{key}.
    @raise TypeError: when it is not a str.
    @raise ValueError: when it is empty or not valid text.
    """
    if not isinstance(key, str):
        raise TypeError(f"a key is a str, not {type(key).__name__}")
    if not key:
        raise ValueError("a key must not be empty")
    checkText(key, "key")
    return key


def checkText(text: str, what: str) -> None:
    """
    Check that C{text} has no NUL (Kamailio would cut it there) and encodes
    to UTF-8 (it has no lone surrogate).

    @param what: what C{text} is, for the error: C{"key"}, C{"cname"}, ...
    @raise ValueError: saying what is wrong.
    """
    if "\x00" in text:
        raise ValueError(f"a {what} must not contain NUL")
    if text.isascii():
        # Nearly every key and value: nothing to encode to know.
        return
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError(f"a {what} must be valid Unicode") from None


def checkValue(value: object) -> Value:
    """
    Check that C{value} may be held by a cell: a str as for L{checkText}, or
    an int (not a bool) within C int32.

    @return: C{value}.
    @raise TypeError: when it is neither an int nor a str.
    @raise ValueError: for an int beyond 32 bits, or text that is not valid.
    """
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise TypeError(f"a value is an int or a str, not {type(value).__name__}")
    if isinstance(value, int):
        if not INT32_MIN <= value <= INT32_MAX:
            raise ValueError(f"{value} is out of the 32-bit range Kamailio reads integers in")
    else:
        checkText(value, "value")
    return value


def coreCaseHash(name: str) -> int:
    """
    Kamailio's C{core_case_hash()} of C{name} (its UTF-8 octets, ASCII
    letters folded to lower case), with which htable picks a cell's slot:
    the slot is the hash modulo the table's slot count.

    @return: an unsigned 32-bit integer.
    """
    data = name.encode("utf-8")
    mask = 0xFFFFFFFF
    folded = _FOLDED
    h = 0
    end = len(data)
    p = 0
    while p <= end - 4:
        v = (
            (folded[data[p]] << 24)
            + (folded[data[p + 1]] << 16)
            + (folded[data[p + 2]] << 8)
            + folded[data[p + 3]]
        ) & mask
        h = (h + (v ^ (v >> 3))) & mask
        p += 4
    v = 0
    while p < end:
        v = ((v << 8) + folded[data[p]]) & mask
        p += 1
    h = (h + (v ^ (v >> 3))) & mask
    return ((h + (h >> 11)) + ((h >> 13) + (h >> 23))) & mask


# Each octet as core_case_hash() adds it: ASCII letters folded to lower
# case, and the value of a C char, which is signed on the platforms
# Kamailio runs on.
_FOLDED = tuple(
    (b | 0x20 if 0x41 <= b <= 0x5A else b) - (256 if b > 127 else 0) for b in range(256)
)


def _nonNegative(instance: object, attribute: "attr.Attribute[int]", value: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"{attribute.name} must be a non-negative integer, not {value!r}")


def _tableName(instance: object, attribute: "attr.Attribute[str]", value: str) -> None:
    if not isinstance(value, str) or not value or any(c in value for c in "= \t\r\n;\x00"):
        raise ValueError(f"{value!r} is not a table name")


@attr.frozen
class TableSpec:
    """
    One table, as Kamailio's C{htable} module parameter declares it
    (C{name=>size=8;autoexpire=0;dmqreplicate=1}).

    @ivar name: the table name.
    @ivar size: Kamailio's size exponent: the table has 2**size slots (8
        when size is 0 or 1, 2**14 when it is over 31).  It only orders
        dumps here.
    @ivar autoexpire: seconds after which a cell expires unless set again;
        0 for never.
    @ivar updateexpire: whether setting a cell again restarts its expiry.
    @ivar dmqreplicate: whether changes are sent to the bus.
    @ivar initval: Kamailio's C{initval}, kept for listings.
    @ivar dbtable: Kamailio's C{dbtable}, kept for listings (nothing is
        loaded from a database).
    @ivar dbmode: Kamailio's C{dbmode}, kept for listings.
    """

    name: str = attr.ib(validator=_tableName)
    size: int = attr.ib(default=4, validator=_nonNegative)
    autoexpire: int = attr.ib(default=0, validator=_nonNegative)
    updateexpire: bool = attr.ib(default=True, converter=bool)
    dmqreplicate: bool = attr.ib(default=False, converter=bool)
    initval: Optional[int] = None
    dbtable: str = ""
    dbmode: int = attr.ib(default=0, validator=_nonNegative)

    @property
    def slots(self) -> int:
        """
        The number of hash slots, as Kamailio's C{ht_add_table()} computes it.
        """
        if self.size <= 1:
            return 8
        if self.size > 31:
            return 1 << 14
        return 1 << self.size


_UNSIGNED = re.compile(r"[0-9]+\Z")
_SIGNED = re.compile(r"[+-]?[0-9]+\Z")
_SPEC = re.compile(r"\s*([^=\s]+)\s*=>\s*(.*)\Z", re.DOTALL)
_UNSIGNED_ATTRIBUTES = ("size", "autoexpire", "dbmode", "updateexpire", "dmqreplicate", "reloadat")


def _splitParameters(text: str, spec: str) -> List[Tuple[str, str]]:
    """
    Split C{a=1;b="x;y";c} as Kamailio's C{parse_params()} does.
    """
    parameters = []
    current = []
    quoted = False
    for c in text + ";":
        if c == '"':
            quoted = not quoted
            current.append(c)
        elif c == ";" and not quoted:
            parameters.append("".join(current).strip())
            current = []
        else:
            current.append(c)
    if quoted:
        raise ValueError(f"{spec!r}: unterminated quoted value")
    result = []
    for parameter in parameters:
        if not parameter:
            raise ValueError(f"{spec!r}: empty attribute")
        name, equals, value = parameter.partition("=")
        name, value = name.strip(), value.strip()
        if len(value) >= 2 and value[0] == value[-1] == '"':
            value = value[1:-1]
        if not name:
            raise ValueError(f"{spec!r}: attribute without a name")
        result.append((name, value))
    return result


def parseTableSpec(text: str) -> TableSpec:
    """
    Parse a table declaration in Kamailio's syntax, as given to its
    C{htable} module parameter: C{name=>attr=value;attr=value}.

    Kamailio's attributes are C{size}, C{autoexpire}, C{updateexpire},
    C{dmqreplicate}, C{initval}, C{dbtable}, C{dbmode}, C{cols},
    C{coldelim}, C{colnull} and C{reloadat}; the last four are checked and
    ignored, and a name Kamailio does not know is refused, as Kamailio
    refuses it.  Numbers are decimal, unsigned but for C{initval}.

    @raise ValueError: saying what is wrong.
    """
    if not isinstance(text, str):
        raise ValueError(f"{text!r} is not a table spec")
    match = _SPEC.match(text)
    if match is None:
        raise ValueError(
            f"{text!r} is not a table spec: expected 'name=>attribute=value;...', "
            "for example 'kdmq=>size=8;autoexpire=0;dmqreplicate=1'"
        )
    name, rest = match.groups()
    rest = rest.strip()
    if rest.endswith(";"):
        rest = rest[:-1]
    values: Dict[str, object] = {}
    for attribute, value in _splitParameters(rest, text) if rest else []:
        if attribute in _UNSIGNED_ATTRIBUTES:
            if not _UNSIGNED.match(value) or int(value) > 0xFFFFFFFF:
                raise ValueError(
                    f"{text!r}: {attribute} must be a non-negative integer, not {value!r}"
                )
            values[attribute] = int(value)
        elif attribute == "initval":
            if not _SIGNED.match(value) or not -(2**63) <= int(value) < 2**63:
                raise ValueError(f"{text!r}: initval must be an integer, not {value!r}")
            values[attribute] = int(value)
        elif attribute in ("dbtable", "cols"):
            values[attribute] = value
        elif attribute in ("coldelim", "colnull"):
            if len(value) > 1 or (attribute == "coldelim" and not value):
                raise ValueError(f"{text!r}: {attribute} must be one character, not {value!r}")
        else:
            raise ValueError(f"{text!r}: unknown table attribute {attribute!r}")
    return TableSpec(
        name,
        size=values.get("size", 4),  # type: ignore[arg-type]
        autoexpire=values.get("autoexpire", 0),  # type: ignore[arg-type]
        updateexpire=values.get("updateexpire", 1),
        dmqreplicate=values.get("dmqreplicate", 0),
        initval=values.get("initval"),  # type: ignore[arg-type]
        dbtable=values.get("dbtable", ""),  # type: ignore[arg-type]
        dbmode=values.get("dbmode", 0),  # type: ignore[arg-type]
    )
