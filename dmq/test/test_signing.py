# -*- test-case-name: dmq.test.test_signing -*-
"""
Tests for L{dmq.signing}: the signatures of requests and replies, the
keyring file, and the replay guard.
"""

from __future__ import annotations

import os

import attr
from twisted.trial.unittest import SynchronousTestCase

from dmq import sip
from dmq.signing import (
    BAD_SIGNATURE,
    SIGNATURE_HEADER,
    STALE,
    UNSIGNED,
    Keyring,
    ReplayGuard,
    loadKeyring,
    signReply,
    signRequest,
    verifyReply,
    verifyRequest,
)

OLD = b"old-key-0123456789abcdef"
NEW = b"new-key-0123456789abcdef"


def request(body=b"hello", callID="abc@127.0.0.11", cseq="10 KDMQ", signature=None):
    headers = [
        ("Via", "SIP/2.0/UDP 127.0.0.11:5060;branch=z9hG4bK1"),
        ("To", "<sip:htable@127.0.0.12:5060>"),
        ("From", "<sip:htable@127.0.0.11:5060>;tag=t1"),
        ("CSeq", cseq),
        ("Call-ID", callID),
        ("Max-Forwards", "1"),
        ("Content-Type", "text/plain"),
    ]
    if signature is not None:
        headers.append((SIGNATURE_HEADER, signature))
    return sip.Request("KDMQ", sip.URI("127.0.0.12", 5060, "htable"), tuple(headers), body)


def signed(keyring, now=1000.0, **kwargs):
    unsigned = request(**kwargs)
    value = signRequest(keyring, unsigned, now)
    # Through the codec, as the receiver reads it.
    return sip.parse(sip.serialise(attr.evolve(unsigned, headers=(*unsigned.headers, (SIGNATURE_HEADER, value)))))


class RequestSignatureTests(SynchronousTestCase):
    """
    L{signRequest} and L{verifyRequest}.
    """

    def test_good(self):
        """
        A request signed by a key of the keyring, within the window, is good.
        """
        keyring = Keyring([OLD])
        self.assertIsNone(verifyRequest(keyring, signed(keyring), 1000.0))
        self.assertIsNone(verifyRequest(keyring, signed(keyring), 1029.0))

    def test_unsigned(self):
        """
        A request without the header is L{UNSIGNED}.
        """
        self.assertEqual(verifyRequest(Keyring([OLD]), request(), 1000.0), UNSIGNED)

    def test_tamperedBody(self):
        """
        A request whose body changed after signing is badly signed.
        """
        keyring = Keyring([OLD])
        good = signed(keyring)
        tampered = attr.evolve(good, body=b"hellO")
        self.assertEqual(verifyRequest(keyring, tampered, 1000.0), BAD_SIGNATURE)

    def test_tamperedFields(self):
        """
        The Request-URI, the Call-ID, the CSeq and the From tag are signed.
        """
        keyring = Keyring([OLD])
        good = signed(keyring)
        value = good.header(SIGNATURE_HEADER)
        for changed in [
            attr.evolve(good, uri=sip.URI("127.0.0.12", 5060, "usrloc")),
            request(callID="other@127.0.0.11", signature=value),
            request(cseq="11 KDMQ", signature=value),
        ]:
            self.assertEqual(verifyRequest(keyring, changed, 1000.0), BAD_SIGNATURE)
        headers = tuple(
            (n, v.replace("tag=t1", "tag=t2") if n == "From" else v) for n, v in good.headers
        )
        self.assertEqual(
            verifyRequest(keyring, attr.evolve(good, headers=headers), 1000.0), BAD_SIGNATURE
        )

    def test_wrongKey(self):
        """
        A request signed with a key not in the keyring is badly signed.
        """
        self.assertEqual(
            verifyRequest(Keyring([NEW]), signed(Keyring([OLD])), 1000.0), BAD_SIGNATURE
        )

    def test_garbage(self):
        """
        A header that is not ours is a bad signature, not an error.
        """
        for value in ["", "t=1;s=zz", "nonsense", "t=;s=", "t=99999999999999;s=" + "0" * 64]:
            self.assertEqual(
                verifyRequest(Keyring([OLD]), request(signature=value), 1000.0), BAD_SIGNATURE
            )

    def test_oldTimestamp(self):
        """
        A request signed more than 30 s before or after now is L{STALE}.
        """
        keyring = Keyring([OLD])
        self.assertEqual(verifyRequest(keyring, signed(keyring), 1031.0), STALE)
        self.assertEqual(verifyRequest(keyring, signed(keyring), 969.0), STALE)

    def test_rotation(self):
        """
        The first key signs and every key verifies: a node with the new key
        first still takes requests signed with the old one until it is
        removed from the keyring.
        """
        rotated = Keyring([NEW, OLD])
        self.assertIsNone(verifyRequest(rotated, signed(Keyring([OLD])), 1000.0))
        self.assertIsNone(verifyRequest(Keyring([OLD, NEW]), signed(rotated), 1000.0))
        self.assertEqual(
            verifyRequest(Keyring([NEW]), signed(Keyring([OLD])), 1000.0), BAD_SIGNATURE
        )


class ReplySignatureTests(SynchronousTestCase):
    """
    L{signReply} and L{verifyReply}.
    """

    def test_roundTrip(self):
        """
        A reply signed by the receiver verifies at the sender; a changed
        code or body does not; an unsigned reply is L{UNSIGNED}.
        """
        keyring = Keyring([OLD])
        sent = signed(keyring)
        value = signReply(keyring, 200, sent, b"ok", 1000.0)
        reply = sip.responseFor(sent, 200, "OK", [(SIGNATURE_HEADER, value)], b"ok")
        self.assertIsNone(verifyReply(keyring, sent, reply, 1001.0))
        self.assertEqual(
            verifyReply(keyring, sent, attr.evolve(reply, body=b"no"), 1001.0), BAD_SIGNATURE
        )
        self.assertEqual(
            verifyReply(keyring, sent, attr.evolve(reply, code=500), 1001.0), BAD_SIGNATURE
        )
        self.assertEqual(
            verifyReply(keyring, sent, sip.responseFor(sent, 200, "OK"), 1001.0), UNSIGNED
        )

    def test_boundToRequest(self):
        """
        A signed reply to one request does not verify as the reply to
        another.
        """
        keyring = Keyring([OLD])
        first, second = signed(keyring), signed(keyring, now=1001.0)
        value = signReply(keyring, 200, first, b"", 1000.0)
        reply = sip.responseFor(second, 200, "OK", [(SIGNATURE_HEADER, value)])
        self.assertEqual(verifyReply(keyring, second, reply, 1001.0), BAD_SIGNATURE)


class ReplayGuardTests(SynchronousTestCase):
    """
    L{ReplayGuard}.
    """

    def test_replay(self):
        """
        A second request with a seen Call-ID and CSeq, within the window, is
        a replay; another CSeq is not.
        """
        guard = ReplayGuard()
        self.assertFalse(guard.seen(request(), 1000.0))
        self.assertTrue(guard.seen(request(), 1010.0))
        self.assertFalse(guard.seen(request(cseq="11 KDMQ"), 1010.0))

    def test_expires(self):
        """
        Entries are forgotten after twice the window (by then the timestamp
        check refuses the request).
        """
        guard = ReplayGuard()
        guard.seen(request(), 1000.0)
        guard.seen(request(callID="b"), 1050.0)
        self.assertFalse(guard.seen(request(), 1061.0))
        self.assertEqual(len(guard), 2)

    def test_bounded(self):
        """
        At most C{maxEntries} are kept; the oldest are let go, and counted.
        """
        guard = ReplayGuard(maxEntries=3)
        for i in range(5):
            guard.seen(request(callID=f"c{i}"), 1000.0)
        self.assertEqual((len(guard), guard.evicted), (3, 2))


class KeyringFileTests(SynchronousTestCase):
    """
    L{loadKeyring}.
    """

    def write(self, text, mode=0o600):
        path = self.mktemp()
        with open(path, "w") as f:
            f.write(text)
        os.chmod(path, mode)
        return path

    def test_keys(self):
        """
        One key a line, the first first; blanks and comments skipped.
        """
        keyring = loadKeyring(self.write("# rotated 2026-11\n\n  %s  \n%s\n" % (NEW.decode(), OLD.decode())))
        self.assertEqual(keyring.keys, (NEW, OLD))
        self.assertNotIn("new-key", repr(keyring))

    def test_readableByOthers(self):
        """
        A file its group or others may read is refused, saying how to fix it.
        """
        for mode in (0o644, 0o640, 0o604, 0o660):
            error = self.assertRaises(ValueError, loadKeyring, self.write(OLD.decode(), mode))
            self.assertIn("chmod 600", str(error))

    def test_empty(self):
        """
        A file with no key, or a short key, is refused.
        """
        self.assertRaises(ValueError, loadKeyring, self.write("# nothing\n"))
        self.assertRaises(ValueError, loadKeyring, self.write("short\n"))

    def test_missing(self):
        """
        A file that cannot be read is a C{ValueError}, not an C{OSError}.
        """
        self.assertRaises(ValueError, loadKeyring, self.mktemp())
