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
    signRefusal,
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


def withBranch(message, branch):
    """
    C{message} with its top Via's branch changed to C{branch}.
    """
    headers = tuple(
        (name, value.replace("branch=z9hG4bK1", "branch=" + branch) if name == "Via" else value)
        for name, value in message.headers
    )
    return attr.evolve(message, headers=headers)


def refusal(keyring, received, code=403, reason="Stale Signature", now=1040.0, extra=(), body=b""):
    """
    The refusal the receiver makes of C{received}, through the codec, as
    the sender reads it.
    """
    retryAfter = dict(extra).get("Retry-After", "")
    value = signRefusal(keyring, code, reason, received, body, now, retryAfter)
    reply = sip.responseFor(received, code, reason, [*extra, (SIGNATURE_HEADER, value)], body)
    return sip.parse(sip.serialise(reply))


class RefusalSignatureTests(SynchronousTestCase):
    """
    L{signRefusal}, and L{verifyReply} of a refusal: bound to the whole
    request and its branch, not to the request's signature.
    """

    def test_roundTrip(self):
        """
        A refusal of our request verifies, with its code and reason; its
        header ends with the refusal mark.
        """
        keyring = Keyring([OLD])
        sent = signed(keyring)
        reply = refusal(keyring, sent)
        self.assertEqual((reply.code, reply.reason), (403, "Stale Signature"))
        self.assertTrue(reply.header(SIGNATURE_HEADER).endswith(";refusal"))
        self.assertIsNone(verifyReply(keyring, sent, reply, 1000.0))

    def test_timestampNotWindowed(self):
        """
        A refusal made on a clock 40 s off ours still verifies (it is bound
        to our fresh request); a reply made so does not.
        """
        keyring = Keyring([OLD])
        sent = signed(keyring)
        self.assertIsNone(verifyReply(keyring, sent, refusal(keyring, sent, now=1040.0), 1000.0))
        value = signReply(keyring, 200, sent, b"", 1040.0)
        reply = sip.responseFor(sent, 200, "OK", [(SIGNATURE_HEADER, value)])
        self.assertEqual(verifyReply(keyring, sent, reply, 1000.0), STALE)

    def test_tampered(self):
        """
        A refusal whose code, reason, body, Retry-After or mark changed in
        flight is badly signed.
        """
        keyring = Keyring([OLD])
        sent = signed(keyring)
        reply = refusal(keyring, sent, 503, "Too Many Requests From You", extra=[("Retry-After", "10")])
        self.assertIsNone(verifyReply(keyring, sent, reply, 1000.0))
        value = reply.header(SIGNATURE_HEADER)
        others = [(n, v) for n, v in reply.headers if n not in ("Retry-After", SIGNATURE_HEADER)]
        tampered = [
            attr.evolve(reply, code=403),
            attr.evolve(reply, reason="Shutting Down"),
            attr.evolve(reply, body=b"x"),
            attr.evolve(reply, headers=(*others, ("Retry-After", "3600"), (SIGNATURE_HEADER, value))),
            attr.evolve(reply, headers=(*others, (SIGNATURE_HEADER, value))),
            attr.evolve(
                reply,
                headers=(*others, ("Retry-After", "10"), (SIGNATURE_HEADER, value[: -len(";refusal")])),
            ),
        ]
        for bad in tampered:
            self.assertEqual(verifyReply(keyring, sent, bad, 1000.0), BAD_SIGNATURE, bad)

    def test_unknownKey(self):
        """
        A refusal signed with a key we do not hold is badly signed.
        """
        sent = signed(Keyring([OLD]))
        reply = refusal(Keyring([NEW]), sent)
        self.assertEqual(verifyReply(Keyring([OLD]), sent, reply, 1000.0), BAD_SIGNATURE)

    def test_boundToBranch(self):
        """
        The refusal of a copy of our request sent with another branch (a
        replay: with the same branch it is a retransmission) does not
        verify as the answer to ours, even moved to our branch; a reply
        bound only to the request's signature would.
        """
        keyring = Keyring([OLD])
        sent = signed(keyring)
        replayed = withBranch(sent, "z9hG4bKreplay")
        refused = refusal(keyring, replayed, reason="Replayed Request")
        moved = sip.parse(sip.serialise(refused).replace(b"z9hG4bKreplay", b"z9hG4bK1"))
        assert isinstance(moved, sip.Response)
        self.assertEqual(moved.via[0].branch, "z9hG4bK1")
        self.assertEqual(verifyReply(keyring, sent, moved, 1000.0), BAD_SIGNATURE)
        value = signReply(keyring, 403, replayed, b"", 1000.0)
        bound = sip.responseFor(sent, 403, "Replayed Request", [(SIGNATURE_HEADER, value)])
        self.assertIsNone(verifyReply(keyring, sent, bound, 1000.0))

    def test_boundToWholeRequest(self):
        """
        The refusal of a tampered copy of our request (same signature
        header, same branch, another body or Call-ID) does not verify as
        the answer to ours; a reply bound only to the signature would.
        """
        keyring = Keyring([OLD])
        sent = signed(keyring)
        otherCall = tuple((n, "other" if n == "Call-ID" else v) for n, v in sent.headers)
        for tampered in [attr.evolve(sent, body=b"evil"), attr.evolve(sent, headers=otherCall)]:
            reply = refusal(keyring, tampered, reason="Bad Signature")
            self.assertEqual(verifyReply(keyring, sent, reply, 1000.0), BAD_SIGNATURE)
        value = signReply(keyring, 403, attr.evolve(sent, body=b"evil"), b"", 1000.0)
        bound = sip.responseFor(sent, 403, "Bad Signature", [(SIGNATURE_HEADER, value)])
        self.assertIsNone(verifyReply(keyring, sent, bound, 1000.0))

    def test_replyNotARefusal(self):
        """
        A reply's signature with the refusal mark added does not verify.
        """
        keyring = Keyring([OLD])
        sent = signed(keyring)
        value = signReply(keyring, 403, sent, b"", 1000.0) + ";refusal"
        reply = sip.responseFor(sent, 403, "Not A Member", [(SIGNATURE_HEADER, value)])
        self.assertEqual(verifyReply(keyring, sent, reply, 1000.0), BAD_SIGNATURE)


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

    def test_knows(self):
        """
        L{ReplayGuard.knows} says whether a request was seen within the
        window, and remembers nothing.
        """
        guard = ReplayGuard()
        self.assertFalse(guard.knows(request(), 1000.0))
        self.assertFalse(guard.seen(request(), 1000.0))
        self.assertTrue(guard.knows(request(), 1059.0))
        self.assertFalse(guard.knows(request(), 1061.0))
        self.assertFalse(guard.knows(request(callID="b"), 1000.0))
        self.assertEqual(len(guard), 1)

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
