# -*- test-case-name: dmq.test.test_htable_wire -*-
"""
Tests for L{dmq.peers.htable.wire}: Kamailio's htable bodies read into
typed messages, the refusals, and the bodies written byte for byte as the
Kamailio 5.6.3 nodes of the captures in C{dmq/test/data/htable/} wrote them.
"""

from __future__ import annotations

import json
import platform

from twisted.trial.unittest import SynchronousTestCase

from dmq.peers import jsonbody
from dmq.peers.htable.spec import MATCH_NAME, MATCH_VALUE
from dmq.peers.jsonbody import decodeObject
from dmq.peers.htable.wire import (
    MAX_SYNC_BODY,
    Action,
    BadCell,
    BadMessage,
    Cell,
    Cells,
    DeleteCell,
    Message,
    RemoveMatching,
    SetCell,
    SetExpire,
    SyncRequest,
    decode,
    encode,
    encodeCells,
)
from dmq.test.test_htable import htableRequests


def decodeCells(body: bytes) -> Cells:
    """
    C{body}, a dump's cells, decoded.
    """
    message = decode(body)
    assert isinstance(message, Cells), message
    return message


def capturedBodies(name):
    """
    The distinct bodies of the htable requests in capture C{name}, in order.
    """
    bodies = []
    for capture, request in htableRequests(name):
        if request.body not in bodies:
            bodies.append(request.body)
    return bodies


class DecodeTests(SynchronousTestCase):
    """
    L{decode} reads each action into its message.
    """

    def test_captured(self):
        """
        The bodies Kamailio sent in captures 03 and 08.
        """
        self.assertEqual(
            [decode(body) for body in capturedBodies("03-htable-replication.txt")],
            [
                SetCell("kdmq", "k1", "hello"),
                SetCell("kdmq", "counter", 42),
                SetCell("kdmq", "k2", "value with spaces"),
                DeleteCell("kdmq", "k2"),
            ],
        )
        self.assertEqual(
            [decode(body) for body in capturedBodies("08-join-n4-init-sync.txt")],
            [
                SyncRequest(),
                Cells((Cell("kdmq", "counter", 42, 0), Cell("kdmq", "k1", "hello", 0))),
                Cells(),
            ],
        )

    def test_setCell(self):
        """
        Action 2 is a L{SetCell}, its value typed by C{type} (an integer when
        there is none); C{mode} is checked and dropped, unknown keys ignored.
        """
        cases = {
            b'{"action":2,"htname":"t","cname":"k","type":2,"strval":"\xc3\xa9","mode":1}':
                SetCell("t", "k", "\xe9"),
            b'{"action":2,"htname":"t","cname":"k","type":0,"intval":-2147483648,"mode":0}':
                SetCell("t", "k", -(2**31)),
            b'{"action":2,"htname":"t","cname":"k","intval":7}': SetCell("t", "k", 7),
            b'{"action":2,"htname":"t","cname":"k","type":3,"strval":"s","intval":1}':
                SetCell("t", "k", "s"),
            b'{"action":2,"htname":"t","cname":"k","type":2,"strval":"v",'
            b'"last_modified":1767225600123,"mode":1}': SetCell("t", "k", "v"),
        }
        for body, message in cases.items():
            self.assertEqual(decode(body), message, body)

    def test_otherChanges(self):
        """
        Actions 3 to 8.
        """
        cases = {
            b'{"action":3,"htname":"t","cname":"k","type":0,"intval":300,"mode":0}':
                SetExpire("t", "k", 300),
            b'{"action":3,"htname":"t","cname":"k","intval":-1}': SetExpire("t", "k", -1),
            b'{"action":4,"htname":"t","cname":"k","mode":0}': DeleteCell("t", "k"),
            b'{"action":5,"htname":"t","type":2,"strval":"^k[0-9]","mode":0}':
                RemoveMatching("t", "re", "^k[0-9]", MATCH_NAME),
            b'{"action":6,"htname":"t","type":2,"strval":"al","mode":1}':
                RemoveMatching("t", "sw", "al", MATCH_VALUE),
            b'{"action":7,"htname":"t","strval":"x"}': RemoveMatching("t", "ew", "x"),
            b'{"action":8,"htname":"t","type":2,"strval":"","mode":0}': RemoveMatching("t", "in", ""),
        }
        for body, message in cases.items():
            self.assertEqual(decode(body), message, body)

    def test_syncRequest(self):
        """
        Action 1 is a L{SyncRequest}, for one table or (without C{htname},
        or an empty one) for all.
        """
        self.assertEqual(decode(b'{"action":1}'), SyncRequest(None))
        self.assertEqual(decode(b'{"action":1,"htname":""}'), SyncRequest(None))
        self.assertEqual(decode(b'{"action":1,"htname":"t","mode":7}'), SyncRequest("t"))

    def test_badCells(self):
        """
        The entries of a dump that cannot be cells are L{BadCell}s, in their
        place, saying why; a cell of any table name is a L{Cell}.
        """
        body = json.dumps({"cells": [
            {"htname": "t", "cname": "a", "type": 2, "strval": "A", "expire": 0},
            {"htname": "t", "cname": "b", "type": 2, "expire": 0},
            {"htname": "t", "type": 0, "intval": 1, "expire": 0},
            {"htname": "nosuch", "cname": "c", "type": 0, "intval": 1},
            "junk",
            {"cname": "d", "type": 0, "intval": 1},
            {"htname": "t", "cname": "e", "type": 0, "intval": 5, "expire": "x"},
            {"htname": "t", "cname": "f", "type": 0, "intval": 6, "expire": 2**31},
            {"htname": "t", "cname": "g", "type": 2**40, "strval": "v"},
            {"htname": "t", "cname": "h", "type": 0, "intval": 2**31},
            {"htname": "t", "cname": "i\x00", "type": 0, "intval": 1},
            {"htname": "t", "cname": "j", "type": 0, "intval": 9, "expire": 1795703284},
        ]}).encode()
        self.assertEqual(
            decode(body),
            Cells((
                Cell("t", "a", "A", 0),
                BadCell("a cell of type 2 without strval"),
                BadCell("a cell without cname"),
                Cell("nosuch", "c", 1, 0),
                BadCell("a cell is not an object"),
                BadCell("a cell without htname"),
                BadCell("a cell with a bad expire"),
                BadCell("a cell with an expire beyond 32 bits"),
                BadCell("a cell with a bad type"),
                BadCell("a cell with an intval beyond 32 bits"),
                BadCell("a cname must not contain NUL"),
                Cell("t", "j", 9, 1795703284),
            )),
        )


class RefusalTests(SynchronousTestCase):
    """
    L{decode} refuses with L{BadMessage}, whose reason is the C{400}'s.
    """

    def assertRefused(self, body, detail):
        error = self.assertRaises(BadMessage, decode, body)
        self.assertEqual(error.detail, detail, body)
        self.assertEqual(error.reason, f"Bad Request ({detail})" if detail else "Bad Request")

    def test_notAnObject(self):
        """
        An empty body, bad JSON, JSON that is not UTF-8, a root that is not
        a non-empty object, C{NaN} and absurd nesting say no more than
        C{Bad Request}.
        """
        for body in (b"", b"{not json", b"[1]", b'"x"', b"1", b"null", b"\xff{}", b"{}",
                     b'{"action":NaN}', b"[" * 100000, b'{"action":1}x'):
            self.assertRefused(body, None)

    def test_fields(self):
        """
        A missing, unknown or mistyped action or field, a bad type or mode,
        an int beyond 32 bits, text with NUL, each say which.
        """
        cases = {
            b'{"htname":"kdmq"}': "no action",
            b'{"action":0,"htname":"kdmq"}': "unknown action 0",
            b'{"action":9,"htname":"kdmq"}': "unknown action 9",
            b'{"action":"2","htname":"kdmq"}': "unknown action '2'",
            b'{"action":true,"htname":"kdmq"}': "unknown action True",
            b'{"action":2.0,"htname":"kdmq"}': "unknown action 2.0",
            b'{"action":2,"htname":"kdmq","type":2,"strval":"v","mode":1}': "no cname",
            b'{"action":2,"htname":"kdmq","cname":"k","type":2,"mode":1}':
                "action 2 of type 2 without strval",
            b'{"action":2,"htname":"kdmq","cname":"k","type":0,"strval":"v","mode":1}':
                "action 2 of type 0 without intval",
            b'{"action":2,"htname":"kdmq","cname":"k","type":0,"intval":2147483648,"mode":1}':
                "action 2 with an intval beyond 32 bits",
            b'{"action":2,"htname":"kdmq","cname":"k","type":0,"intval":1.5,"mode":1}':
                "action 2 of type 0 without intval",
            b'{"action":2,"htname":"kdmq","cname":"k","type":"0","intval":1,"mode":1}':
                "action 2 with a bad type",
            b'{"action":2,"htname":"kdmq","cname":"k","type":4294967298,"strval":"v","mode":1}':
                "action 2 with a bad type",
            b'{"action":2,"htname":"kdmq","cname":"k","type":2,"strval":"\\ud800","mode":1}':
                "a strval must be valid Unicode",
            b'{"action":3,"htname":"kdmq","cname":"k","mode":0}': "action 3 without a 32-bit intval",
            b'{"action":3,"htname":"kdmq","cname":"k","intval":true}': "action 3 without a 32-bit intval",
            b'{"action":4,"htname":"kdmq","cname":"k","mode":2}': "bad mode 2",
            b'{"action":4,"htname":"kdmq","cname":"k","mode":true}': "bad mode True",
            b'{"action":4,"htname":7,"cname":"k","mode":0}': "no htname",
            b'{"action":4,"htname":"","cname":"k","mode":0}': "no htname",
            b'{"action":4,"htname":"kdmq","cname":"","mode":0}': "no cname",
            b'{"action":4,"htname":"kdmq","cname":"a\\u0000b","mode":0}':
                "a cname must not contain NUL",
            b'{"action":5,"htname":"kdmq","type":2,"strval":1,"mode":0}': "strval is not a string",
            b'{"action":7,"htname":"kdmq","mode":0}': "action 7 without strval",
            b'{"action":8,"htname":"kdmq","mode":0}': "action 8 without strval",
            b'{"action":1,"htname":1}': "htname is not a string",
            b'{"cells":{}}': "cells is not an array",
        }
        for body, detail in cases.items():
            self.assertRefused(body, detail)


class EncodeTests(SynchronousTestCase):
    """
    L{encode} and L{encodeCells} write what Kamailio writes, byte for byte.
    """

    def test_capturedChanges(self):
        """
        The changes of capture 03, and the sync request of capture 08.
        """
        self.assertEqual(
            [
                encode(SetCell("kdmq", "k1", "hello")),
                encode(SetCell("kdmq", "counter", 42)),
                encode(SetCell("kdmq", "k2", "value with spaces")),
                encode(DeleteCell("kdmq", "k2")),
            ],
            capturedBodies("03-htable-replication.txt"),
        )
        self.assertEqual(encode(SyncRequest()), capturedBodies("08-join-n4-init-sync.txt")[0])

    def test_capturedDump(self):
        """
        The dump n2 sent in capture 08, and the empty one of n1 and n3.
        """
        [request, dump, empty] = capturedBodies("08-join-n4-init-sync.txt")
        cells = [Cell("kdmq", "counter", 42, 0), Cell("kdmq", "k1", "hello", 0)]
        self.assertEqual(encodeCells(cells), [dump])
        self.assertEqual(encodeCells([]), [empty])
        self.assertEqual(encode(Cells(tuple(cells))), dump)

    def test_otherActions(self):
        """
        The other actions, in Kamailio's format; the removals by suffix and
        substring carry C{type} and C{strval}, which Kamailio 6 leaves out.
        """
        self.assertEqual(
            [
                encode(SetExpire("exp", "203.0.113.7", 300)),
                encode(RemoveMatching("exp", "re", "^203\\.0\\.113\\.")),
                encode(RemoveMatching("exp", "sw", "al", MATCH_VALUE)),
                encode(RemoveMatching("exp", "ew", "x")),
                encode(RemoveMatching("exp", "in", "\xe9\"")),
                encode(SyncRequest("kdmq")),
            ],
            [
                b'{"action":3,"htname":"exp","cname":"203.0.113.7","type":0,"intval":300,"mode":0}',
                b'{"action":5,"htname":"exp","type":2,"strval":"^203\\\\.0\\\\.113\\\\.","mode":0}',
                b'{"action":6,"htname":"exp","type":2,"strval":"al","mode":1}',
                b'{"action":7,"htname":"exp","type":2,"strval":"x","mode":0}',
                '{"action":8,"htname":"exp","type":2,"strval":"\xe9\\"","mode":0}'.encode("utf-8"),
                b'{"action":1,"htname":"kdmq"}',
            ],
        )

    def test_actions(self):
        """
        Each message carries its action code of Kamailio's C{ht_dmq.h}.
        """
        cases: list[tuple[Message, Action]] = [
            (SyncRequest(), Action.SYNC),
            (SetCell("t", "k", 1), Action.SET_CELL),
            (SetExpire("t", "k", 1), Action.SET_CELL_EXPIRE),
            (DeleteCell("t", "k"), Action.DEL_CELL),
            (RemoveMatching("t", "re", "p"), Action.RM_CELL_RE),
            (RemoveMatching("t", "sw", "p"), Action.RM_CELL_SW),
            (RemoveMatching("t", "ew", "p"), Action.RM_CELL_EW),
            (RemoveMatching("t", "in", "p"), Action.RM_CELL_IN),
        ]
        for message, action in cases:
            self.assertEqual(json.loads(encode(message))["action"], action)

    def test_roundTrip(self):
        """
        What L{encode} writes, L{decode} reads back as the same message.
        """
        messages: list[Message] = [
            SetCell("t", "k", "v"),
            SetCell("t\xe9", "k \"\\/\n", "\u2603 \U0001f600"),
            SetCell("t", "k", -(2**31)),
            SetCell("t", "k", 2**31 - 1),
            SetExpire("t", "k", 0),
            SetExpire("t", "k", -5),
            DeleteCell("t", "k"),
            RemoveMatching("t", "re", "^a.*$", MATCH_VALUE),
            RemoveMatching("t", "in", "x", MATCH_NAME),
            SyncRequest(),
            SyncRequest("t"),
            Cells(),
            Cells((Cell("t", "a", 1, 0), Cell("u", "b", "\xe9", 2**31 - 1))),
        ]
        for message in messages:
            self.assertEqual(decode(encode(message)), message)

    def test_notMessages(self):
        """
        L{encode} refuses what is not a message, and a L{BadCell}.
        """
        self.assertRaises(TypeError, encode, object())
        self.assertRaises(TypeError, encode, Cells((BadCell("no"),)))
        self.assertRaises(TypeError, encodeCells, [BadCell("no")])


class ChunkTests(SynchronousTestCase):
    """
    L{encodeCells} cuts a dump as Kamailio does.
    """

    def cells(self, count, size=250):
        template = b'{"htname":"kdmq","cname":"k000","type":2,"strval":"","expire":0}'
        padding = "v" * (size - len(template))
        return [Cell("kdmq", "k%03d" % i, padding) for i in range(count)]

    def test_chunks(self):
        """
        Bodies hold at most L{MAX_SYNC_BODY} octets; a full one is followed
        by one more, so that an exact fit ends with C{{"cells":[]}}.
        """
        # 239 cells of 250 octets with their commas: 12 + 239 * 251 - 1 = 60000.
        bodies = encodeCells(self.cells(478))
        self.assertEqual([len(b) for b in bodies], [MAX_SYNC_BODY, MAX_SYNC_BODY, 12])
        self.assertEqual(bodies[-1], b'{"cells":[]}')
        self.assertEqual(
            [c for b in bodies for c in decodeCells(b).cells], self.cells(478)
        )
        bodies = encodeCells(self.cells(477))
        self.assertEqual([len(b) for b in bodies], [MAX_SYNC_BODY, MAX_SYNC_BODY - 251])

    def test_hugeCell(self):
        """
        A cell larger than a body goes alone, and the dump goes on.
        """
        big = Cell("kdmq", "big", "x" * MAX_SYNC_BODY)
        small = Cell("kdmq", "small", 1)
        bodies = encodeCells([small, big, small])
        self.assertEqual([decodeCells(b).cells for b in bodies], [(small,), (big,), (small,)])


class DecodeObjectTests(SynchronousTestCase):
    """
    L{decodeObject} reads a JSON object as Kamailio's peers do, with PyPy's
    own JSON reader there and the standard decoder elsewhere.
    """

    def test_reader(self):
        """
        On PyPy the body is read by PyPy's JSON reader; elsewhere there is
        none to use.
        """
        self.assertEqual(
            vars(jsonbody)["_pypyLoads"] is not None, platform.python_implementation() == "PyPy"
        )

    def test_constants(self):
        """
        C{NaN}, C{Infinity} and C{-Infinity} are not JSON: refused wherever
        they are, while strings that hold the same words are text.
        """
        for body in (b'{"a":NaN}', b'{"a":Infinity}', b'{"a":-Infinity}', b'{"a":[1,{"b":NaN}]}',
                     b'{"a":"NaN","b":Infinity}'):
            self.assertRaises(BadMessage, decodeObject, body)
        self.assertEqual(
            decodeObject(b'{"a":"NaN","b":"-Infinity","c":1.5}'), {"a": "NaN", "b": "-Infinity", "c": 1.5}
        )

    def test_asTheStandardReads(self):
        """
        Whitespace around the object is skipped, a repeated key keeps its
        last value, a lone surrogate escape is read as one, and what
        follows the object is refused.
        """
        self.assertEqual(decodeObject(b' \r\n{"a":1,"a":2} \n'), {"a": 2})
        self.assertEqual(decodeObject(b'{"a":"\\ud800"}'), {"a": "\ud800"})
        for body in (b'{"a":1}x', b'{"a":1} {}', b"[1]", b"\xff{}", b"{" * 100000):
            self.assertRaises(BadMessage, decodeObject, body)
