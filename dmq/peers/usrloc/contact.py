# -*- test-case-name: dmq.test.test_usrloc_store,dmq.test.test_usrloc_wire -*-
"""
L{Contact}: one registered contact of an address of record, as Kamailio's
usrloc holds it and its C{dmq_usrloc} module sends it; what each field may
hold; and Kamailio's C{core_hash()}, which places an AoR in usrloc's hash
table (and so orders dumps).

Pure, no I/O.  See C{doc/peers.md} (usrloc) for the whole design.
"""

from __future__ import annotations

import itertools
import os
import secrets
from typing import Any

import attr

__all__ = [
    "ALL_METHODS",
    "UINT32_MAX",
    "Q_UNSPECIFIED",
    "HASH_SIZE",
    "Contact",
    "newRUID",
    "coreHash",
    "checkText",
]

UINT32_MAX = 0xFFFFFFFF

#: Kamailio's C{ALL_METHODS}: what registrar stores when a REGISTER has no
#: Allow header.
ALL_METHODS = UINT32_MAX

#: A contact registered without a q value (Kamailio's C{Q_UNSPECIFIED}).
Q_UNSPECIFIED = -1

#: The slots of usrloc's hash table (its C{hash_size} 10, the default).
HASH_SIZE = 1024

_ruids = itertools.count(1)
_RUID_PREFIX = f"dmq-{secrets.token_hex(4)}-{os.getpid() & 0xFFFF:04x}"


def newRUID() -> str:
    """
    A fresh record id, unique in this process and unlikely to meet another
    node's: C{dmq-<random>-<pid>-<n>}, in the form of Kamailio's
    C{uloc-<time>-<pid>-<n>}.
    """
    return f"{_RUID_PREFIX}-{next(_ruids)}"


def checkText(text: object, what: str) -> str:
    """
    Check that C{text} is a str without NUL (Kamailio would cut it there)
    that encodes to UTF-8.

    @param what: what it is, for the error.
    @raise ValueError: saying what is wrong.
    """
    if not isinstance(text, str):
        raise ValueError(f"{what} is not a string")
    if "\x00" in text:
        raise ValueError(f"{what} contains NUL")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError(f"{what} is not valid Unicode") from None
    return text


def _text(instance: Any, attribute: "attr.Attribute[str]", value: object) -> None:
    checkText(value, attribute.name)


def _nonEmpty(instance: Any, attribute: "attr.Attribute[str]", value: object) -> None:
    checkText(value, attribute.name)
    if not value:
        raise ValueError(f"{attribute.name} is empty")


def _uint32(instance: Any, attribute: "attr.Attribute[int]", value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= UINT32_MAX:
        raise ValueError(f"{attribute.name} must be an integer from 0 to {UINT32_MAX}, not {value!r}")


def _q(instance: Any, attribute: "attr.Attribute[int]", value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not Q_UNSPECIFIED <= value <= 1000:
        raise ValueError(f"q must be -1 (unspecified) or 0 to 1000 (thousandths), not {value!r}")


@attr.frozen
class Contact:
    """
    One contact of an address of record, with the fields Kamailio's
    C{dmq_usrloc} replicates (its JSON key in brackets).

    Every field is checked when the value is made: strings have no NUL,
    numbers are Kamailio's unsigned 32-bit ones, C{q} is C{-1} or 0 to 1000.

    @ivar aor: the address of record (C{aor}), as the registrar stores it
        (C{alice}, or C{alice@example.com} with C{use_domain}).
    @ivar uri: the contact URI (C{c}).
    @ivar ruid: usrloc's record id (C{ruid}), unique per contact; a fresh
        one (L{newRUID}) by default.
    @ivar expires: when it expires, in absolute Unix seconds (C{expires});
        0 for never.
    @ivar q: the q value in thousandths (C{q}), C{-1} when not given.
    @ivar methods: the methods it accepts, a bit mask (C{methods}).
    @ivar lastModified: when it was last saved, in Unix seconds
        (C{last_modified}).
    @ivar socket: the Kamailio socket it came in on, C{proto:host:port}
        (C{sock}, with C{replicate_socket_info} 1), or C{""}.
    @ivar socketName: the name of that socket (C{sockname}, with
        C{replicate_socket_info} 2, Kamailio 5.7 and later), or C{""}.
    """

    aor: str = attr.field(validator=_nonEmpty)
    uri: str = attr.field(validator=_nonEmpty)
    ruid: str = attr.field(factory=newRUID, validator=_nonEmpty)
    received: str = attr.field(default="", validator=_text)
    path: str = attr.field(default="", validator=_text)
    callID: str = attr.field(default="", validator=_text)
    userAgent: str = attr.field(default="", validator=_text)
    instance: str = attr.field(default="", validator=_text)
    expires: int = attr.field(default=0, validator=_uint32)
    cseq: int = attr.field(default=0, validator=_uint32)
    flags: int = attr.field(default=0, validator=_uint32)
    cflags: int = attr.field(default=0, validator=_uint32)
    q: int = attr.field(default=Q_UNSPECIFIED, validator=_q)
    lastModified: int = attr.field(default=0, validator=_uint32)
    methods: int = attr.field(default=ALL_METHODS, validator=_uint32)
    regID: int = attr.field(default=0, validator=_uint32)
    serverID: int = attr.field(default=0, validator=_uint32)
    socket: str = attr.field(default="", validator=_text)
    socketName: str = attr.field(default="", validator=_text)

    def expired(self, now: float) -> bool:
        """
        @return: whether the contact has expired at Unix time C{now}
            (Kamailio's C{VALID_CONTACT}, negated).
        """
        return self.expires != 0 and self.expires <= now


def coreHash(text: str) -> int:
    """
    Kamailio's C{core_hash()} of C{text} (its UTF-8 octets, case kept),
    usrloc's C{aorhash}: the C{HashID} of C{ul.dump}; the hash table slot is
    its low 10 bits.

    @return: an unsigned 32-bit integer.
    """
    data = text.encode("utf-8")
    mask = UINT32_MAX
    # C's char is signed on the platforms Kamailio runs on.
    octets = [b - 256 if b > 127 else b for b in data]
    h = 0
    end = len(octets)
    p = 0
    while p <= end - 4:
        v = ((octets[p] << 24) + (octets[p + 1] << 16) + (octets[p + 2] << 8) + octets[p + 3]) & mask
        h = (h + (v ^ (v >> 3))) & mask
        p += 4
    v = 0
    while p < end:
        v = ((v << 8) + octets[p]) & mask
        p += 1
    h = (h + (v ^ (v >> 3))) & mask
    return ((h + (h >> 11)) + ((h >> 13) + (h >> 23))) & mask
