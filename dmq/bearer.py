# -*- test-case-name: dmq.test.test_control -*-
"""
The bearer token of the control endpoint: reading it from its file, which
only its owner may read, and checking a request's C{Authorization} header
against it in constant time.

Both ends use it: the endpoint (L{dmq.control.endpoint}) and C{dmqctl}
(L{dmq.ctl}), so the rules for the file are the same on both.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import os
import stat
from typing import Optional

__all__ = ["MIN_TOKEN", "readTokenFile", "isAuthorized"]

MIN_TOKEN = 16
"""
The fewest characters a token may have: shorter ones can be guessed.
"""


def readTokenFile(path: str) -> bytes:
    """
    Read a token file: one line of printable ASCII (no spaces), at least
    L{MIN_TOKEN} characters, surrounding white space ignored.

    @return: the token.
    @raise ValueError: saying what is wrong: the file cannot be read, group
        or others may read or write it, or its token is unfit.
    """
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError as e:
        raise ValueError(f"cannot read {path}: {e.strerror}") from None
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            raise ValueError(f"{path} is not a regular file")
        if mode & 0o077:
            raise ValueError(
                f"{path} is open to group or others (mode {stat.S_IMODE(mode):04o}): chmod 600 it"
            )
        with os.fdopen(os.dup(fd), "rb") as f:
            data = f.read(4097)
    finally:
        os.close(fd)
    token = data.strip()
    if len(data) > 4096:
        raise ValueError(f"{path}: a token is one line, not {len(data)} bytes or more")
    if not token:
        raise ValueError(f"{path} is empty")
    if any(not 0x21 <= byte <= 0x7E for byte in token):
        raise ValueError(f"{path}: a token is printable ASCII without spaces")
    if len(token) < MIN_TOKEN:
        raise ValueError(f"{path}: a token needs at least {MIN_TOKEN} characters, not {len(token)}")
    return token


def isAuthorized(header: Optional[bytes], token: bytes) -> bool:
    """
    Whether an C{Authorization} header value carries C{token}: as
    C{Bearer TOKEN}, or as the password of C{Basic} (any user name), which
    a browser can send for the status page.

    The comparison takes the same time whatever the header holds.
    """
    if not header:
        return False
    scheme, _, value = header.strip().partition(b" ")
    scheme = scheme.lower()
    if scheme == b"bearer":
        given = value.strip()
    elif scheme == b"basic":
        try:
            decoded = base64.b64decode(value.strip(), validate=True)
        except (binascii.Error, ValueError):
            return False
        given = decoded.partition(b":")[2]
    else:
        return False
    return hmac.compare_digest(given, token)
