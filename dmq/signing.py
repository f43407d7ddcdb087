# -*- test-case-name: dmq.test.test_signing -*-
"""
Signed requests between dmq nodes: an HMAC-SHA256 over what makes a KDMQ
request (method, Request-URI, Call-ID, CSeq, From tag, a timestamp and the
body), carried in one header; one over the reply to a signed request; one
over a refusal (L{signRefusal}), bound to the whole request it refuses and
its transaction; the keyring they are made with (L{Keyring}, read by
L{loadKeyring}); and the replay guard (L{ReplayGuard}).  Pure: time is
given, nothing is sent.

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

from dmq.sip import Request, Response, SIPParseError

__all__ = [
    "SIGNATURE_HEADER",
    "REFUSAL_MARK",
    "WINDOW",
    "MIN_KEY_LENGTH",
    "Keyring",
    "loadKeyring",
    "signRequest",
    "verifyRequest",
    "signReply",
    "signRefusal",
    "verifyReply",
    "ReplayGuard",
    "BAD_SIGNATURE",
    "UNSIGNED",
    "STALE",
]

SIGNATURE_HEADER = "X-DMQ-Signature"

REFUSAL_MARK = "refusal"
"""
The last field of the L{SIGNATURE_HEADER} of a refusal
(C{t=...;s=...;refusal}): its MAC is over L{_refusalFields}, not
L{_replyFields}.  A node that does not know the mark ignores it, and finds
the MAC bad, as it found the refusal unsigned before.
"""

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


def _refusalFields(
    code: int,
    reason: str,
    request: Request,
    branch: str,
    timestamp: int,
    retryAfter: str,
    body: bytes,
) -> Tuple[bytes, ...]:
    # A refusal may answer a request whose signature is bad, or a replay of
    # a good one, so the request's signature binds nothing: the refusal is
    # bound to the whole request as it came (every signed field, the
    # signature header as written, the body) and to its transaction (the
    # top Via branch, which the signature does not cover and which a
    # replay must change to be more than a retransmission).
    cseq = request.cseq
    return (
        b"dmq-refusal-v1",
        str(code).encode("ascii"),
        reason.encode("utf-8", "replace"),
        request.method.encode("utf-8"),
        request.uri.toString().encode("utf-8"),
        request.callID.encode("utf-8"),
        f"{cseq.number} {cseq.method}".encode("utf-8"),
        _fromTag(request),
        branch.encode("utf-8", "replace"),
        (request.header(SIGNATURE_HEADER) or "").encode("utf-8", "replace"),
        request.body,
        str(timestamp).encode("ascii"),
        retryAfter.encode("utf-8", "replace"),
        body,
    )


def _header(timestamp: int, mac: str) -> str:
    return f"t={timestamp};s={mac}"


def _parseHeader(value: Optional[str]) -> Optional[Tuple[int, str, bool]]:
    """
    @return: the timestamp, the MAC, and whether the value carries
        L{REFUSAL_MARK}; C{None} when it is no signature.
    """
    if value is None:
        return None
    fields = dict(part.strip().partition("=")[::2] for part in value.split(";"))
    timestamp, mac = fields.get("t", ""), fields.get("s", "")
    if not timestamp.isdigit() or len(timestamp) > 12 or len(mac) != 64:
        return None
    return int(timestamp), mac, REFUSAL_MARK in fields


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
    timestamp, mac, _ = parsed
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


def signRefusal(
    keyring: Keyring,
    code: int,
    reason: str,
    request: Request,
    body: bytes,
    now: float,
    retryAfter: str = "",
) -> str:
    """
    @return: the value of the L{SIGNATURE_HEADER} of our refusal of
        C{request} (answered before, or instead of, checking its
        signature): C{code}, C{reason}, C{body} and the value of its
        C{Retry-After} header (C{""} for none), bound to the request as it
        came, its top Via branch included.  It ends with L{REFUSAL_MARK}.

    @raise dmq.sip.SIPParseError: if C{request} has no readable Via.
    """
    timestamp = int(now)
    fields = _refusalFields(
        code, reason, request, request.via[0].branch or "", timestamp, retryAfter, body
    )
    return f"{_header(timestamp, _mac(keyring.keys[0], fields))};{REFUSAL_MARK}"


def verifyReply(
    keyring: Keyring, request: Request, response: Response, now: float
) -> Optional[str]:
    """
    Check the signature of C{response}, the reply to our signed C{request}:
    a reply's (L{signReply}) or a refusal's (L{signRefusal}).

    A refusal's timestamp is not held to the window: it is bound to our
    request, whose signature holds our own timestamp, and to the branch of
    its transaction, so it cannot be an old one; and it is how a node
    whose clock is off by more than the window hears C{403 Stale
    Signature} from the others.

    @param request: the request as we signed it; the branch it was sent
        with is the one of C{response}'s top Via, by which the transaction
        layer matched C{response} to it.
    @return: C{None} when good; else L{UNSIGNED}, L{BAD_SIGNATURE} or
        L{STALE}.
    """
    value = response.header(SIGNATURE_HEADER)
    parsed = _parseHeader(value)
    if parsed is None:
        return UNSIGNED if value is None else BAD_SIGNATURE
    timestamp, mac, refusal = parsed
    if refusal:
        try:
            branch = response.via[0].branch or ""
        except SIPParseError:
            return BAD_SIGNATURE
        fields = _refusalFields(
            response.code,
            response.reason,
            request,
            branch,
            timestamp,
            response.header("Retry-After") or "",
            response.body,
        )
        return None if _verify(keyring, fields, mac) else BAD_SIGNATURE
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

    def knows(self, request: Request, now: float) -> bool:
        """
        Whether C{request}'s (Call-ID, CSeq) was seen within the window,
        without remembering it.
        """
        cseq = request.cseq
        expires = self._seen.get((request.callID, f"{cseq.number} {cseq.method}"))
        return expires is not None and expires > now

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
