# -*- test-case-name: dmq.test.test_signing -*-
"""
Signed requests between dmq nodes: an HMAC-SHA256 over what makes a KDMQ
request (method, Request-URI, Call-ID, CSeq, From tag, a timestamp and the
body), carried in one header, and one over the reply to a signed request;
the keyring they are made with (L{Keyring}, read by L{loadKeyring}); and the
replay guard (L{ReplayGuard}).  Pure: time is given, nothing is sent.

The keyring is a list of shared secrets: the first signs, every one
verifies, so keys rotate without downtime (add the new key second on every
node, then move it first, then remove the old one), as HashiCorp
memberlist's keyring does.  Why and how it is wired: doc/security.md.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import stat
from collections import OrderedDict
from typing import Iterable, Optional, Sequence, Tuple

import attr

from dmq.sip import Request, Response

__all__ = [
    "SIGNATURE_HEADER",
    "WINDOW",
    "MIN_KEY_LENGTH",
    "Keyring",
    "loadKeyring",
    "signRequest",
    "verifyRequest",
    "signReply",
    "verifyReply",
    "ReplayGuard",
    "BAD_SIGNATURE",
    "UNSIGNED",
    "STALE",
]

SIGNATURE_HEADER = "X-DMQ-Signature"

WINDOW = 30
"""
Seconds a signed request's timestamp may be off our clock, either way.
"""

MIN_KEY_LENGTH = 16
"""
The fewest characters a key may have.
"""

# What verifyRequest and verifyReply answer when they refuse.
UNSIGNED = "unsigned"
BAD_SIGNATURE = "badSignature"
STALE = "stale"


def _keys(keys: Iterable[bytes]) -> Tuple[bytes, ...]:
    # Keyring's converter: a bare tuple would leave mypy's attrs plugin
    # to type the argument as Iterable[_T_co], which no list of keys is.
    return tuple(keys)


@attr.frozen(repr=False)
class Keyring:
    """
    The shared secrets of a bus: the first signs, all verify.

    @ivar keys: the keys, at least one.
    """

    keys: Tuple[bytes, ...] = attr.ib(converter=_keys)

    def __attrs_post_init__(self) -> None:
        if not self.keys:
            raise ValueError("a keyring needs at least one key")
        for key in self.keys:
            if len(key) < MIN_KEY_LENGTH:
                raise ValueError(f"a key needs at least {MIN_KEY_LENGTH} characters")

    def __repr__(self) -> str:
        # Never the keys themselves: configs and logs print this.
        return f"<Keyring of {len(self.keys)} key(s)>"


def loadKeyring(path: str) -> Keyring:
    """
    Read a keyring file: one key a line, the first signs; blank lines and
    lines starting with C{#} are skipped, the others stripped of spaces.

    @raise ValueError: if the file cannot be read, may be read or written
        by its group or by others, or holds no key or a short one.
    """
    try:
        mode = os.stat(path).st_mode
        if mode & (stat.S_IRWXG | stat.S_IRWXO):
            raise ValueError(
                f"{path} may be read by its group or others (mode {stat.S_IMODE(mode):04o}); "
                f"make it private: chmod 600 {path}"
            )
        with open(path, "rb") as f:
            lines = f.read().splitlines()
    except OSError as e:
        raise ValueError(f"cannot read {path}: {e.strerror}") from None
    keys = [line.strip() for line in lines]
    keys = [key for key in keys if key and not key.startswith(b"#")]
    if not keys:
        raise ValueError(f"{path} holds no key")
    try:
        return Keyring(keys)
    except ValueError as e:
        raise ValueError(f"{path}: {e}") from None


def _mac(key: bytes, fields: Iterable[bytes]) -> str:
    mac = hmac.new(key, digestmod=hashlib.sha256)
    for field in fields:
        # Each field with its length: no two field lists write one text.
        mac.update(b"%d:" % (len(field),))
        mac.update(field)
    return mac.hexdigest()


def _fromTag(message: Request) -> bytes:
    try:
        tag = message.fromAddress.tag
    except Exception:
        tag = None
    return (tag or "").encode("utf-8")


def _requestFields(request: Request, timestamp: int) -> Tuple[bytes, ...]:
    cseq = request.cseq
    return (
        b"dmq-request-v1",
        request.method.encode("utf-8"),
        request.uri.toString().encode("utf-8"),
        request.callID.encode("utf-8"),
        f"{cseq.number} {cseq.method}".encode("utf-8"),
        _fromTag(request),
        str(timestamp).encode("ascii"),
        request.body,
    )


def _replyFields(
    code: int, request: Request, requestSignature: str, timestamp: int, body: bytes
) -> Tuple[bytes, ...]:
    # The request's own signature binds the reply to it.
    return (
        b"dmq-reply-v1",
        str(code).encode("ascii"),
        requestSignature.encode("ascii", "replace"),
        request.callID.encode("utf-8"),
        _fromTag(request),
        str(timestamp).encode("ascii"),
        body,
    )


def _header(timestamp: int, mac: str) -> str:
    return f"t={timestamp};s={mac}"


def _parseHeader(value: Optional[str]) -> Optional[Tuple[int, str]]:
    if value is None:
        return None
    fields = dict(part.strip().partition("=")[::2] for part in value.split(";"))
    timestamp, mac = fields.get("t", ""), fields.get("s", "")
    if not timestamp.isdigit() or len(timestamp) > 12 or len(mac) != 64:
        return None
    return int(timestamp), mac


def signRequest(keyring: Keyring, request: Request, now: float) -> str:
    """
    @return: the value of the L{SIGNATURE_HEADER} of C{request} sent at
        C{now}, signed with the first key.
    """
    timestamp = int(now)
    return _header(timestamp, _mac(keyring.keys[0], _requestFields(request, timestamp)))


def _verify(keyring: Keyring, fields: Sequence[bytes], mac: str) -> bool:
    good = False
    for key in keyring.keys:
        # Every key is tried, whichever matches: the time does not tell which.
        good |= hmac.compare_digest(_mac(key, fields), mac)
    return good


def verifyRequest(keyring: Keyring, request: Request, now: float) -> Optional[str]:
    """
    Check the signature of a received C{request} at C{now}.

    @return: C{None} when it is signed by a key of C{keyring} within
        L{WINDOW} seconds of C{now}; else why not: L{UNSIGNED},
        L{BAD_SIGNATURE} or L{STALE}.  Replays are L{ReplayGuard}'s.
    """
    value = request.header(SIGNATURE_HEADER)
    if value is None:
        return UNSIGNED
    parsed = _parseHeader(value)
    if parsed is None:
        return BAD_SIGNATURE
    timestamp, mac = parsed
    if not _verify(keyring, _requestFields(request, timestamp), mac):
        return BAD_SIGNATURE
    if abs(now - timestamp) > WINDOW:
        return STALE
    return None


def signReply(keyring: Keyring, code: int, request: Request, body: bytes, now: float) -> str:
    """
    @return: the value of the L{SIGNATURE_HEADER} of our C{code} reply to
        the signed C{request}, with C{body}.
    """
    timestamp = int(now)
    requestSignature = request.header(SIGNATURE_HEADER) or ""
    return _header(
        timestamp,
        _mac(keyring.keys[0], _replyFields(code, request, requestSignature, timestamp, body)),
    )


def verifyReply(
    keyring: Keyring, request: Request, response: Response, now: float
) -> Optional[str]:
    """
    Check the signature of C{response}, the reply to our signed C{request}.

    @return: C{None} when good; else L{UNSIGNED}, L{BAD_SIGNATURE} or
        L{STALE}.
    """
    parsed = _parseHeader(response.header(SIGNATURE_HEADER))
    if parsed is None:
        return UNSIGNED if response.header(SIGNATURE_HEADER) is None else BAD_SIGNATURE
    timestamp, mac = parsed
    requestSignature = request.header(SIGNATURE_HEADER) or ""
    fields = _replyFields(response.code, request, requestSignature, timestamp, response.body)
    if not _verify(keyring, fields, mac):
        return BAD_SIGNATURE
    if abs(now - timestamp) > WINDOW:
        return STALE
    return None


class ReplayGuard:
    """
    The (Call-ID, CSeq) of the signed requests seen within the replay
    window, at most C{maxEntries} of them: a new transaction that carries one
    of them again is a replay.  (A retransmission of a request is absorbed by
    its server transaction, and never reaches this.)

    @ivar evicted: entries let go, still within the window, because the
        cache was full: a replay of one of them would not be caught.
    """

    def __init__(self, maxEntries: int = 65536, window: float = WINDOW) -> None:
        if maxEntries < 1:
            raise ValueError("maxEntries must be positive")
        self._maxEntries = maxEntries
        # Kept for twice the window: a timestamp may be WINDOW ahead of us.
        self._keep = 2 * window
        self._seen: "OrderedDict[Tuple[str, str], float]" = OrderedDict()
        self.evicted = 0

    def __len__(self) -> int:
        return len(self._seen)

    def seen(self, request: Request, now: float) -> bool:
        """
        Whether C{request}'s (Call-ID, CSeq) was seen within the window;
        remember it if not.
        """
        seen = self._seen
        while seen:
            key, expires = next(iter(seen.items()))
            if expires > now:
                break
            del seen[key]
        cseq = request.cseq
        key = (request.callID, f"{cseq.number} {cseq.method}")
        if key in seen:
            return True
        if len(seen) >= self._maxEntries:
            seen.popitem(last=False)
            self.evicted += 1
        seen[key] = now + self._keep
        return False
