# -*- test-case-name: dmq.test.test_dialog_wire -*-
"""
Tests for L{dmq.peers.dialog.wire}: Kamailio's dialog bodies, read and
written.  The bodies marked "5.6.3" were sent by Kamailio 5.6.3 in
C{dmq.test.test_dialog_live}'s call.
"""

from __future__ import annotations

import json

import attr
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from dmq.peers.dialog.wire import (
    MAX_PROFILES,
    MAX_VARIABLES,
    BadMessage,
    DialogId,
    DialogState,
    Leg,
    Profile,
    Remove,
    StateChange,
    SyncRequest,
    Update,
    decode,
    encode,
)

# 5.6.3, on the INVITE.
INVITE_UPDATE = (
    b'{"action":1,"h_entry":3816,"h_id":8497,"init_ts":1795996442,"callid":"call1@127.0.4.3",'
    b'"from_uri":"sip:alice@127.0.4.3","to_uri":"sip:bob@127.0.4.3","req_uri":"sip:bob@127.0.4.3:5080",'
    b'"tag1":"a1","cseq1":"1","route_set1":"","contact1":"sip:alice@127.0.4.3:5070",'
    b'"vars":{"origin":"127.0.4.3"},"profiles":"{\\"profiles\\":[{\\"name\\":\\"caller\\",'
    b'\\"value\\":\\"alice\\",\\"puid\\":\\"dlgp-6b0cbb1a-4e37-2\\"},{\\"name\\":\\"calls\\",'
    b'\\"puid\\":\\"dlgp-6b0cbb1a-4e37-1\\"}]}","state":1}'
)

# 5.6.3, on a 180 with a To tag.
EARLY = (
    b'{"action":2,"h_entry":3816,"h_id":8497,"state":2,"start_ts":0,"lifetime":43200,'
    b'"tag1":"a1","cseq1":"1","route_set1":"","contact1":"sip:alice@127.0.4.3:5070"}'
)

# 5.6.3, on the ACK.
CONFIRMED = (
    b'{"action":2,"h_entry":3816,"h_id":8497,"state":4,"start_ts":1795996443,"lifetime":43200,'
    b'"tag1":"a1","tag2":"b1","cseq1":"1","cseq2":"0","route_set1":"","route_set2":"",'
    b'"contact1":"sip:alice@127.0.4.3:5070","contact2":"sip:bob@127.0.4.3:5080"}'
)

# 5.6.3, answering a sync request: the caller's fields twice.
SYNC_UPDATE = (
    b'{"action":1,"h_entry":3816,"h_id":2500,"init_ts":1795996125,"callid":"call1@127.0.4.3",'
    b'"from_uri":"sip:alice@127.0.4.3","to_uri":"sip:bob@127.0.4.3","req_uri":"sip:bob@127.0.4.3:5080",'
    b'"tag1":"a1","cseq1":"1","route_set1":"","contact1":"sip:alice@127.0.4.3:5070","state":4,'
    b'"start_ts":1795996126,"lifetime":43200,"tag1":"a1","tag2":"b1","cseq1":"1","cseq2":"0",'
    b'"route_set1":"","route_set2":"","contact1":"sip:alice@127.0.4.3:5070",'
    b'"contact2":"sip:bob@127.0.4.3:5080"}'
)

CALLER = Leg("a1", "1", "", "sip:alice@127.0.4.3:5070")
CALLEE = Leg("b1", "0", "", "sip:bob@127.0.4.3:5080")


class DecodeTests(SynchronousTestCase):
    """
    L{decode} reads what Kamailio sends.
    """

    def test_update(self) -> None:
        """
        An update made on the INVITE: the dialog, its variables and its
        profiles (a JSON document in a string).
        """
        self.assertEqual(
            decode(INVITE_UPDATE),
            Update(
                DialogId(3816, 8497),
                "call1@127.0.4.3",
                DialogState.UNCONFIRMED,
                "sip:alice@127.0.4.3",
                "sip:bob@127.0.4.3",
                "sip:bob@127.0.4.3:5080",
                1795996442,
                0,
                0,
                CALLER,
                None,
                (("origin", "127.0.4.3"),),
                (
                    Profile("caller", "alice", "dlgp-6b0cbb1a-4e37-2"),
                    Profile("calls", None, "dlgp-6b0cbb1a-4e37-1"),
                ),
            ),
        )

    def test_stateChange(self) -> None:
        """
        A change to confirmed carries both legs, its start and lifetime.
        """
        self.assertEqual(
            decode(CONFIRMED),
            StateChange(DialogId(3816, 8497), DialogState.CONFIRMED, 1795996443, 43200, CALLER, CALLEE),
        )

    def test_early(self) -> None:
        """
        A change to early carries the caller's leg, its start and lifetime.
        """
        self.assertEqual(
            decode(EARLY), StateChange(DialogId(3816, 8497), DialogState.EARLY, 0, 43200, CALLER)
        )

    def test_deleted(self) -> None:
        """
        A change to deleted carries nothing else.
        """
        self.assertEqual(
            decode(b'{"action":2,"h_entry":3816,"h_id":8497,"state":5}'),
            StateChange(DialogId(3816, 8497), DialogState.DELETED),
        )

    def test_remove(self) -> None:
        """
        A removal names the dialog and its last state, if it gives one.
        """
        self.assertEqual(
            decode(b'{"action":3,"h_entry":3816,"h_id":8497,"state":5}'),
            Remove(DialogId(3816, 8497), DialogState.DELETED),
        )
        self.assertEqual(decode(b'{"action":3,"h_entry":1,"h_id":2}'), Remove(DialogId(1, 2)))

    def test_sync(self) -> None:
        """
        C{{"action":4}} asks for every dialog.
        """
        self.assertEqual(decode(b'{"action":4}'), SyncRequest())

    def test_repeatedKeys(self) -> None:
        """
        Kamailio 5.6's sync update repeats the caller's keys; the last
        counts, as in Kamailio.
        """
        update = decode(SYNC_UPDATE)
        assert isinstance(update, Update)
        self.assertEqual((update.state, update.caller, update.callee), (DialogState.CONFIRMED, CALLER, CALLEE))
        self.assertEqual((update.startTS, update.lifetime), (1795996126, 43200))

    def test_unknownKeysIgnored(self) -> None:
        """
        Keys we do not know (C{last_modified} of Kamailio master, say) are
        ignored, as Kamailio ignores them.
        """
        message = decode(b'{"action":4,"last_modified":5,"whatever":[1]}')
        self.assertEqual(message, SyncRequest())

    def test_defaults(self) -> None:
        """
        An update without a state is unconfirmed, and its missing texts
        empty, as Kamailio takes them.
        """
        self.assertEqual(
            decode(b'{"action":1,"h_entry":1,"h_id":2,"callid":"c"}'),
            Update(DialogId(1, 2), "c"),
        )

    def test_profilesWithoutName(self) -> None:
        """
        A profile entry without a name is skipped; expires and flags are
        read.
        """
        profiles = json.dumps(
            {"profiles": [{"value": "x"}, {"name": "p", "expires": 7, "flags": 1}]}
        )
        body = json.dumps({"action": 1, "h_entry": 1, "h_id": 2, "callid": "c", "profiles": profiles})
        update = decode(body.encode())
        assert isinstance(update, Update)
        self.assertEqual(update.profiles, (Profile("p", None, "", 7, 1),))

    def assertBad(self, body: bytes, reason: str = "Bad Request") -> None:
        with self.assertRaises(BadMessage) as caught:
            decode(body)
        self.assertEqual(caught.exception.reason, reason)

    def test_notAnObject(self) -> None:
        """
        An empty body, bad JSON, bad UTF-8, JSON constants and roots that
        are not a non-empty object are answered C{400 Bad Request}.
        """
        for body in (b"", b"not json", b"\xff{}", b"[1]", b'"x"', b"{}", b'{"action":NaN}'):
            self.assertBad(body)

    def test_badFields(self) -> None:
        """
        Missing or mistyped fields are refused, saying which.
        """
        cases = {
            b'{"h_entry":1}': "no action",
            b'{"action":0}': "unknown action 0",
            b'{"action":5}': "unknown action 5",
            b'{"action":true}': "action is not an unsigned 32-bit integer",
            b'{"action":2,"h_entry":1,"state":4}': "no h_entry and h_id",
            b'{"action":2,"h_entry":1,"h_id":2}': "action 2 without a state",
            b'{"action":2,"h_entry":1,"h_id":2,"state":6}': "unknown state 6",
            b'{"action":2,"h_entry":-1,"h_id":2,"state":4}': "h_entry is not an unsigned 32-bit integer",
            b'{"action":2,"h_entry":4294967296,"h_id":2,"state":4}': "h_entry is not an unsigned 32-bit integer",
            b'{"action":2,"h_entry":1.5,"h_id":2,"state":4}': "h_entry is not an unsigned 32-bit integer",
            b'{"action":1,"h_entry":1,"h_id":2}': "action 1 without a callid",
            b'{"action":1,"h_entry":1,"h_id":2,"callid":""}': "action 1 without a callid",
            b'{"action":1,"h_entry":1,"h_id":2,"callid":5}': "callid is not a string",
            b'{"action":1,"h_entry":1,"h_id":2,"callid":"c\\u0000d"}': "callid contains NUL",
            b'{"action":2,"h_entry":1,"h_id":2,"state":4,"tag2":null}': "tag2 is not a string",
            b'{"action":1,"h_entry":1,"h_id":2,"callid":"c","vars":[]}': "vars is not an object",
            b'{"action":1,"h_entry":1,"h_id":2,"callid":"c","vars":{"a":1}}': "var 'a' is not a string",
            b'{"action":1,"h_entry":1,"h_id":2,"callid":"c","profiles":"x"}': "profiles is not a JSON object",
            b'{"action":1,"h_entry":1,"h_id":2,"callid":"c","profiles":"{\\"profiles\\":1}"}':
                "profiles is not an array",
            b'{"action":1,"h_entry":1,"h_id":2,"callid":"c","profiles":"{\\"profiles\\":[1]}"}':
                "a profile is not an object",
            b'{"action":1,"h_entry":1,"h_id":2,"callid":"c","profiles":"{\\"profiles\\":[{\\"name\\":1}]}"}':
                "a profile's name is not a string",
        }
        for body, detail in cases.items():
            self.assertBad(body, f"Bad Request ({detail})")

    def test_bounds(self) -> None:
        """
        More than L{MAX_VARIABLES} variables or L{MAX_PROFILES} profiles are
        refused.
        """
        variables = {f"v{i}": "x" for i in range(MAX_VARIABLES + 1)}
        body = {"action": 1, "h_entry": 1, "h_id": 2, "callid": "c", "vars": variables}
        self.assertBad(json.dumps(body).encode(), f"Bad Request (more than {MAX_VARIABLES} vars)")
        profiles = {"profiles": [{"name": "p"}] * (MAX_PROFILES + 1)}
        body = {"action": 1, "h_entry": 1, "h_id": 2, "callid": "c", "profiles": json.dumps(profiles)}
        self.assertBad(json.dumps(body).encode(), f"Bad Request (more than {MAX_PROFILES} profiles)")

    def test_deepNesting(self) -> None:
        """
        JSON nested too deep for the parser is refused, not raised.
        """
        self.assertBad(b"[" * 100000 + b"]" * 100000)


class EncodeTests(SynchronousTestCase):
    """
    L{encode} writes what Kamailio writes.
    """

    def test_sync(self) -> None:
        """
        A sync request is C{{"action":4}}.
        """
        self.assertEqual(encode(SyncRequest()), b'{"action":4}')

    def test_stateChange(self) -> None:
        """
        A state change is written byte for byte as Kamailio 5.6.3 writes it.
        """
        self.assertEqual(encode(decode(EARLY)), EARLY)
        self.assertEqual(encode(decode(CONFIRMED)), CONFIRMED)
        deleted = b'{"action":2,"h_entry":3816,"h_id":8497,"state":5}'
        self.assertEqual(encode(decode(deleted)), deleted)

    def test_updateOnInvite(self) -> None:
        """
        An unconfirmed dialog's update is written as Kamailio 5.6.3 writes
        it.
        """
        self.assertEqual(encode(decode(INVITE_UPDATE)), INVITE_UPDATE)

    def test_confirmedUpdate(self) -> None:
        """
        A confirmed dialog's update has each key once (as Kamailio 6 writes
        it), the caller's before the state, the callee's after.
        """
        written = encode(decode(SYNC_UPDATE))
        self.assertEqual(
            written,
            b'{"action":1,"h_entry":3816,"h_id":2500,"init_ts":1795996125,"callid":"call1@127.0.4.3",'
            b'"from_uri":"sip:alice@127.0.4.3","to_uri":"sip:bob@127.0.4.3",'
            b'"req_uri":"sip:bob@127.0.4.3:5080","tag1":"a1","cseq1":"1","route_set1":"",'
            b'"contact1":"sip:alice@127.0.4.3:5070","state":4,"start_ts":1795996126,"lifetime":43200,'
            b'"tag2":"b1","cseq2":"0","route_set2":"","contact2":"sip:bob@127.0.4.3:5080"}',
        )
        self.assertEqual(decode(written), decode(SYNC_UPDATE))

    def test_remove(self) -> None:
        """
        A removal carries the state when known.
        """
        self.assertEqual(
            encode(Remove(DialogId(1, 2), DialogState.DELETED)),
            b'{"action":3,"h_entry":1,"h_id":2,"state":5}',
        )
        self.assertEqual(encode(Remove(DialogId(1, 2))), b'{"action":3,"h_entry":1,"h_id":2}')

    def test_profilesRoundTrip(self) -> None:
        """
        Profiles with expires and flags, and raw UTF-8 text, survive a round
        trip.
        """
        update = Update(
            DialogId(1, 2),
            "c\u00e9",
            DialogState.EARLY,
            startTS=5,
            lifetime=60,
            variables=(("k", "v\u00e9"),),
            profiles=(Profile("p", "v", "u", 9, 2), Profile("q")),
        )
        written = encode(update)
        self.assertIn("c\u00e9".encode("utf-8"), written)
        self.assertEqual(decode(written), update)

    def test_notAMessage(self) -> None:
        """
        Anything else is a programming error.
        """
        self.assertRaises(TypeError, encode, object())


_KEYS = (
    "action", "h_entry", "h_id", "state", "init_ts", "start_ts", "lifetime", "callid", "from_uri",
    "to_uri", "req_uri", "tag1", "cseq1", "route_set1", "contact1", "tag2", "cseq2", "route_set2",
    "contact2", "vars", "profiles", "last_modified", "other",
)
_scalars = st.one_of(
    st.none(), st.booleans(), st.integers(-3, 6), st.integers(), st.floats(allow_nan=False),
    st.text(max_size=5),
)
_values = st.recursive(
    _scalars, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=3), inner, max_size=3),
    max_leaves=6,
)
_profiles = st.lists(
    st.dictionaries(st.sampled_from(["name", "value", "puid", "expires", "flags", "x"]), _scalars, max_size=5),
    max_size=3,
).map(lambda entries: json.dumps({"profiles": entries}))
_bodies = st.dictionaries(
    st.sampled_from(_KEYS),
    st.one_of(_values, _profiles, st.dictionaries(st.text(max_size=3), _scalars, max_size=3)),
    max_size=12,
).map(lambda fields: json.dumps(fields).encode())


class PropertyTests(SynchronousTestCase):
    """
    Whatever a body holds, L{decode} gives a message or a L{BadMessage},
    and what it gives is written back to the same message.
    """

    @settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(_bodies)
    def test_decodeNeverRaisesOtherwise(self, body: bytes) -> None:
        """
        Any JSON object of Kamailio's keys is a message or a L{BadMessage};
        a message survives L{encode}, and a store takes it or says it does
        not know the dialog.
        """
        from twisted.internet.task import Clock

        from dmq.peers.dialog.store import DialogStore, UnknownDialog

        try:
            message = decode(body)
        except BadMessage:
            return
        self.assertEqual(decode(encode(message)), _asWritten(message))
        if not isinstance(message, SyncRequest):
            try:
                DialogStore(Clock()).apply(message)
            except UnknownDialog:
                pass


def _asWritten(message):
    """
    What C{encode} keeps of C{message}: a state change's fields its state
    does not carry are not written.
    """
    if isinstance(message, StateChange):
        if message.state not in (DialogState.EARLY, DialogState.CONFIRMED):
            return StateChange(message.id, message.state)
        callee = (message.callee or Leg()) if message.state is DialogState.CONFIRMED else None
        return StateChange(
            message.id, message.state, message.startTS or 0, message.lifetime or 0,
            message.caller if message.state is DialogState.EARLY or message.caller else None, callee,
        )
    if isinstance(message, Update):
        if message.state is DialogState.CONFIRMED:
            message = attr.evolve(message, callee=message.callee or Leg())
        else:
            message = attr.evolve(message, callee=None)
        if message.state not in (DialogState.EARLY, DialogState.CONFIRMED):
            message = attr.evolve(message, startTS=0, lifetime=0)
    return message
