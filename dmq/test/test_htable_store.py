# -*- test-case-name: dmq.test.test_htable_store -*-
"""
Tests for L{dmq.peers.htable.store}: the tables on a L{Clock}, without a
bus: values, expiry, removal by match and Kamailio's slot order, the caps
on cells and octets; and for L{dmq.peers.htable.pattern}, the guard on the
regular expressions of removals.
"""

from __future__ import annotations

import time

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from dmq.peers.htable.spec import MATCH_NAME, MATCH_VALUE, coreCaseHash, parseTableSpec
from dmq.peers.htable.pattern import MAX_PATTERN_LENGTH, BadPattern, TooCostly, compilePattern
from dmq.peers.htable.store import MATCHES, MAX_BYTES, MAX_CELLS, Change, HTableStore, NoSuchTable, TableFull

KDMQ = "kdmq=>size=8;autoexpire=0;dmqreplicate=1"
LOCAL = "local=>size=4;autoexpire=0"
EXPIRING = "exp=>size=4;autoexpire=60;dmqreplicate=1"
FIXED = "fixed=>autoexpire=60;updateexpire=0"


class StoreTestCase(SynchronousTestCase):
    """
    A store of four tables on a L{Clock}, and the changes it told.
    """

    def setUp(self):
        self.clock = Clock()
        self.store = HTableStore(self.clock, [KDMQ, LOCAL, EXPIRING, parseTableSpec(FIXED)])
        self.changes: list[Change] = []
        self.store.subscribe(self.changes.append)


class TablesTests(StoreTestCase):
    """
    The declared tables.
    """

    def test_tables(self):
        """
        C{tables} lists the tables in declaration order, C{spec} gives their
        spec, C{in} says whether one is declared.
        """
        self.assertEqual(self.store.tables(), ["kdmq", "local", "exp", "fixed"])
        self.assertEqual(self.store.spec("exp").autoexpire, 60)
        self.assertFalse(self.store.spec("fixed").updateexpire)
        self.assertIn("kdmq", self.store)
        self.assertNotIn("nosuch", self.store)
        self.assertNotIn(None, self.store)

    def test_duplicateTable(self):
        """
        Two tables of one name, or a bad spec, are refused.
        """
        self.assertRaises(ValueError, HTableStore, self.clock, [KDMQ, "kdmq=>size=4"])
        self.assertRaises(ValueError, HTableStore, self.clock, ["kdmq=>bogus=1"])

    def test_noSuchTable(self):
        """
        Every call on an undeclared table raises L{NoSuchTable}.
        """
        for call in (
            lambda: self.store.spec("x"),
            lambda: self.store.get("x", "k"),
            lambda: self.store.expiresAt("x", "k"),
            lambda: self.store.items("x"),
            lambda: self.store.cells("x"),
            lambda: self.store.set("x", "k", 1),
            lambda: self.store.setExpire("x", "k", 1),
            lambda: self.store.delete("x", "k"),
            lambda: self.store.removeMatching("x", "re", "k"),
        ):
            self.assertRaises(NoSuchTable, call)


class ValueTests(StoreTestCase):
    """
    Setting, reading and deleting cells.
    """

    def test_setGet(self):
        """
        A cell holds a str or an int, replaced by the next set; each change
        is told with the origin given.
        """
        self.store.set("kdmq", "k", "v")
        self.store.set("kdmq", "k", 7, "replicated")
        self.store.set("kdmq", "n", -(2**31), "sync")
        self.assertEqual(self.store.get("kdmq", "k"), 7)
        self.assertEqual(self.store.get("kdmq", "n"), -(2**31))
        self.assertIsNone(self.store.get("kdmq", "nothing"))
        self.assertIsNone(self.store.get("local", "k"))
        self.assertEqual(
            self.changes,
            [
                Change("kdmq", "k", None, "v", "local"),
                Change("kdmq", "k", "v", 7, "replicated"),
                Change("kdmq", "n", None, -(2**31), "sync"),
            ],
        )

    def test_badArguments(self):
        """
        Keys are non-empty str without NUL, values str or 32-bit int; a
        refused change changes nothing and is not told.
        """
        self.assertRaises(TypeError, self.store.set, "kdmq", b"k", 1)
        self.assertRaises(TypeError, self.store.set, "kdmq", "k", 1.5)
        self.assertRaises(TypeError, self.store.set, "kdmq", "k", True)
        self.assertRaises(TypeError, self.store.set, "kdmq", "k", None)
        self.assertRaises(ValueError, self.store.set, "kdmq", "", 1)
        self.assertRaises(ValueError, self.store.set, "kdmq", "a\x00", 1)
        self.assertRaises(ValueError, self.store.set, "kdmq", "k", 2**31)
        self.assertRaises(ValueError, self.store.set, "kdmq", "k", "\ud800")
        self.assertRaises(ValueError, self.store.delete, "kdmq", "")
        self.assertEqual(self.store.items("kdmq"), [])
        self.assertEqual(self.changes, [])

    def test_delete(self):
        """
        C{delete} says whether the cell existed, and tells the change.
        """
        self.store.set("kdmq", "k", "v")
        self.assertTrue(self.store.delete("kdmq", "k", "replicated"))
        self.assertFalse(self.store.delete("kdmq", "k"))
        self.assertIsNone(self.store.get("kdmq", "k"))
        self.assertEqual(self.changes[-1], Change("kdmq", "k", "v", None, "replicated"))
        self.assertEqual(len(self.changes), 2)

    def test_slotOrder(self):
        """
        C{items} lists the cells by Kamailio's slot (hash modulo the slot
        count), then by hash, then oldest first.
        """
        self.store.set("kdmq", "k1", "hello")
        self.store.set("kdmq", "counter", 42)
        self.assertEqual(self.store.items("kdmq"), [("counter", 42), ("k1", "hello")])
        # Eight slots: many names share one.
        store = HTableStore(self.clock, ["small=>size=0"])
        names = ["n%d" % i for i in range(40)] + ["N1", "n1x"]
        for name in reversed(names):
            store.set("small", name, 1)
        keys = [key for key, value in store.items("small")]
        self.assertEqual(
            keys,
            sorted(names, key=lambda n: (coreCaseHash(n) & 7, coreCaseHash(n), -names.index(n))),
        )
        # Names of one hash (ASCII case folded) stay oldest first.
        self.assertLess(keys.index("N1"), keys.index("n1"))

    def test_subscribe(self):
        """
        A failing subscriber is logged and does not stop the others;
        unsubscribing (twice is harmless) stops the calls.
        """
        heard: list[Change] = []

        def broken(change):
            raise RuntimeError("subscriber bug")

        self.store.subscribe(broken)
        unsubscribe = self.store.subscribe(heard.append)
        self.store.set("kdmq", "k", 1)
        unsubscribe()
        unsubscribe()
        self.store.set("kdmq", "k", 2)
        self.assertEqual(heard, [Change("kdmq", "k", None, 1, "local")])
        self.assertEqual(len(self.changes), 2)
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 2)


class ExpiryTests(StoreTestCase):
    """
    Expiry on the clock, as Kamailio's C{autoexpire}, C{updateexpire} and
    expiry changes.
    """

    def expired(self):
        return [c.key for c in self.changes if c.origin == "expired"]

    def test_autoexpire(self):
        """
        A cell of a table with C{autoexpire} expires that many seconds after
        it was set, which is told once, with origin C{"expired"}.
        """
        self.clock.advance(100)
        self.store.set("exp", "k", "v")
        self.assertEqual(self.store.expiresAt("exp", "k"), 160)
        self.clock.advance(59.9)
        self.assertEqual(self.store.get("exp", "k"), "v")
        self.clock.advance(0.1)
        self.assertIsNone(self.store.get("exp", "k"))
        self.assertIsNone(self.store.expiresAt("exp", "k"))
        self.assertEqual(self.changes[-1], Change("exp", "k", "v", None, "expired"))
        self.assertEqual(self.expired(), ["k"])

    def test_noAutoexpire(self):
        """
        Without C{autoexpire}, cells never expire.
        """
        self.store.set("kdmq", "k", "v")
        self.assertIsNone(self.store.expiresAt("kdmq", "k"))
        self.clock.advance(10**9)
        self.assertEqual(self.store.get("kdmq", "k"), "v")

    def test_updateexpire(self):
        """
        Setting a cell again restarts its expiry, unless the table says
        C{updateexpire=0}.
        """
        self.store.set("exp", "a", 1)
        self.store.set("fixed", "a", 1)
        self.clock.advance(40)
        self.store.set("exp", "a", 2)
        self.store.set("fixed", "a", 2)
        self.assertEqual(self.store.expiresAt("exp", "a"), 100)
        self.assertEqual(self.store.expiresAt("fixed", "a"), 60)
        self.clock.advance(30)
        self.assertEqual(self.store.get("exp", "a"), 2)
        self.assertIsNone(self.store.get("fixed", "a"))

    def test_expireAt(self):
        """
        A set given an expiry (a synced cell's) keeps it on a table with
        C{autoexpire}, and whatever C{updateexpire} says; elsewhere it is
        ignored.
        """
        self.clock.advance(1000)
        self.store.set("exp", "a", 1, "sync", 1010.0)
        self.store.set("fixed", "a", 1)
        self.store.set("fixed", "a", 2, "sync", 2000.0)
        self.store.set("kdmq", "a", 1, "sync", 1010.0)
        self.assertEqual(self.store.expiresAt("exp", "a"), 1010)
        self.assertEqual(self.store.expiresAt("fixed", "a"), 2000)
        self.assertIsNone(self.store.expiresAt("kdmq", "a"))

    def test_setExpire(self):
        """
        C{setExpire} moves the expiry to that many seconds from now; 0 or
        less makes the cell permanent; a missing cell is left alone, and
        none of it is told as a change.
        """
        self.store.set("exp", "a", 1)
        self.store.setExpire("exp", "a", 5)
        self.assertEqual(self.store.expiresAt("exp", "a"), 5)
        self.store.setExpire("exp", "nothing", 5)
        self.assertIsNone(self.store.get("exp", "nothing"))
        self.assertEqual(len(self.changes), 1)
        self.clock.advance(5)
        self.assertIsNone(self.store.get("exp", "a"))
        for seconds in (0, -1):
            self.store.set("exp", "b", 1)
            self.store.setExpire("exp", "b", seconds)
            self.assertIsNone(self.store.expiresAt("exp", "b"))
        self.clock.advance(1000)
        self.assertEqual(self.store.get("exp", "b"), 1)

    def test_setExpireRefused(self):
        """
        C{setExpire} refuses a table without C{autoexpire} (Kamailio ignores
        expiry there) and seconds beyond 32 bits.
        """
        self.store.set("kdmq", "k", "v")
        self.assertRaises(ValueError, self.store.setExpire, "kdmq", "k", 10)
        self.assertRaises(ValueError, self.store.setExpire, "exp", "k", 2**31)
        self.assertRaises(ValueError, self.store.setExpire, "exp", "k", True)
        self.assertRaises(ValueError, self.store.setExpire, "exp", "k", 1.5)
        self.assertRaises(ValueError, self.store.setExpire, "exp", "", 1)

    def test_cells(self):
        """
        C{cells} gives each live cell's expiry, and drops the expired ones.
        """
        self.store.set("exp", "a", "x")
        self.clock.advance(30)
        self.store.set("exp", "b", 2)
        self.clock.advance(31)
        self.assertEqual(self.store.cells("exp"), [("b", 2, 90)])
        self.assertEqual(self.expired(), ["a"])

    def test_purgeExpired(self):
        """
        C{purgeExpired} drops every expired cell of every table, telling
        each.
        """
        self.store.set("exp", "a", 1)
        self.store.set("fixed", "b", 2)
        self.store.set("kdmq", "c", 3)
        self.clock.advance(60)
        self.store.purgeExpired()
        self.assertEqual(sorted(self.expired()), ["a", "b"])
        self.store.purgeExpired()
        self.assertEqual(len(self.expired()), 2)
        self.assertEqual(self.store.items("kdmq"), [("c", 3)])


class RemoveMatchingTests(StoreTestCase):
    """
    Removal of the cells whose name or string value matches, as Kamailio's
    C{sht_rm_name} and C{sht_rm_value}.
    """

    def setUp(self):
        StoreTestCase.setUp(self)
        cells: list[tuple[str, int | str]] = [
            ("203.0.113.7", "ban"),
            ("203.0.113.8", 1),
            ("alice", "sip:alice@192.0.2.10"),
            ("bob", "sip:bob@example.com"),
            ("Alpha", "x-bob-x\nline 2"),
        ]
        for key, value in cells:
            self.store.set("kdmq", key, value)
        self.changes[:] = []

    def remove(self, how, pattern, mode=MATCH_NAME):
        removed = self.store.removeMatching("kdmq", how, pattern, mode, "replicated")
        self.assertEqual({c.origin for c in self.changes}, {"replicated"} if removed else set())
        self.assertEqual([c.key for c in self.changes], removed)
        self.changes[:] = []
        return sorted(removed)

    def test_kinds(self):
        """
        The four kinds are Kamailio's operator names.
        """
        self.assertEqual(MATCHES, ("re", "sw", "ew", "in"))

    def test_byName(self):
        """
        Each kind matches the names: a regular expression searched, a
        prefix, a suffix, a substring.
        """
        self.assertEqual(self.remove("re", "\\.[78]$"), ["203.0.113.7", "203.0.113.8"])
        self.assertEqual(self.remove("sw", "al"), ["alice"])
        self.assertEqual(self.remove("ew", "ob"), ["bob"])
        self.assertEqual(self.remove("in", "lph"), ["Alpha"])
        self.assertEqual(self.store.items("kdmq"), [])

    def test_byValue(self):
        """
        Each kind matches the string values; integer values never match.
        """
        self.assertEqual(self.remove("in", "1", MATCH_VALUE), ["alice"])
        self.assertEqual(self.remove("re", "^[0-9]", MATCH_VALUE), [])
        self.assertEqual(self.remove("sw", "sip:bob", MATCH_VALUE), ["bob"])
        self.assertEqual(self.remove("ew", "ban", MATCH_VALUE), ["203.0.113.7"])
        self.assertEqual(self.remove("re", "BOB", MATCH_VALUE), ["Alpha"])
        self.assertEqual(self.store.items("kdmq"), [("203.0.113.8", 1)])

    def test_regularExpressions(self):
        """
        Regular expressions are POSIX extended ones with C{REG_ICASE} and
        C{REG_NEWLINE}: case-insensitive, C{^}/C{$} at line ends, the POSIX
        classes understood.
        """
        self.assertEqual(self.remove("re", "^LINE 2$", MATCH_VALUE), ["Alpha"])
        self.assertEqual(self.remove("re", "^[[:alpha:]]+$"), ["alice", "bob"])
        self.assertEqual(self.remove("re", "^[[:digit:].]+[[:digit:]]$"), ["203.0.113.7", "203.0.113.8"])

    def test_caseSensitive(self):
        """
        The other kinds are case-sensitive, as in Kamailio.
        """
        self.assertEqual(self.remove("sw", "AL"), [])
        self.assertEqual(self.remove("ew", "BOB"), [])
        self.assertEqual(self.remove("in", "BOB", MATCH_VALUE), [])
        self.assertEqual(len(self.store.items("kdmq")), 5)

    def test_refused(self):
        """
        An unknown kind or mode, an empty or non-str pattern, one with NUL,
        and a bad regular expression are refused, and nothing is removed.
        """
        for how, pattern, mode in [
            ("eq", "a", MATCH_NAME),
            ("re", "a", 2),
            ("re", "a", True),
            ("sw", "", MATCH_NAME),
            ("sw", None, MATCH_NAME),
            ("sw", "a\x00", MATCH_NAME),
            ("re", "(", MATCH_NAME),
        ]:
            self.assertRaises(ValueError, self.store.removeMatching, "kdmq", how, pattern, mode)
        self.assertEqual(len(self.store.items("kdmq")), 5)
        self.assertEqual(self.changes, [])

    def test_slotOrder(self):
        """
        Cells are removed, and told, in slot order.
        """
        order = [key for key, value in self.store.items("kdmq")]
        removed = self.store.removeMatching("kdmq", "re", ".")
        self.assertEqual(removed, order)

    def test_expiredNotRemoved(self):
        """
        Expired cells go as expired before the match, not as removed.
        """
        self.store.set("exp", "a1", 1)
        self.clock.advance(30)
        self.store.set("exp", "a2", 2)
        self.clock.advance(30)
        self.changes[:] = []
        self.assertEqual(self.store.removeMatching("exp", "sw", "a"), ["a2"])
        self.assertEqual(
            self.changes,
            [Change("exp", "a1", 1, None, "expired"), Change("exp", "a2", 2, None, "local")],
        )


class PatternGuardTests(SynchronousTestCase):
    """
    L{compilePattern} refuses the expressions Python's backtracking engine
    could spend minutes on, fast and without a traceback, and takes the
    ones Kamailio users write.
    """

    def assertRefused(self, pattern, words):
        started = time.perf_counter()
        e = self.assertRaises(BadPattern, compilePattern, pattern)
        self.assertLess(time.perf_counter() - started, 0.1)
        self.assertIn(words, str(e))
        self.assertIsInstance(e, ValueError)

    def test_hostile(self):
        """
        The three patterns of issue 14: exponential backtracking, a repeat
        count that overflows, a thousand nested groups.
        """
        self.assertRefused("^(a+)+$", "nested quantifiers")
        self.assertRefused("a{99999999999}", "repetition number is too large")
        self.assertRefused("(" * 1000 + "a" + ")" * 1000, "at most 256 characters")

    def test_refused(self):
        """
        Nested repeats and alternations in a repeat, deep nesting, large
        counts, backreferences, lookarounds, syntax errors and long
        patterns are refused.
        """
        for pattern, words in [
            ("(a*)*b", "nested quantifiers"),
            ("(a?b?)+c", "nested quantifiers"),
            ("(x+x+)+y", "nested quantifiers"),
            ("(a|ab)*c", "alternation inside a repeated group"),
            ("(" * 20 + "a" + ")" * 20, "nested deeper than 16"),
            ("a{101}", "at most 100"),
            ("a{2,1000}", "at most 100"),
            ("(a)\\1", "backreference"),
            ("(?=a)", "lookaround"),
            ("(?<!a)b", "lookaround"),
            # Python 3.11 reads these as an atomic group and a possessive
            # repeat; PyPy 3.9 does not read them: refused either way.
            ("(?>a+)", ""),
            ("a*+", ""),
            ("[", "unterminated character set"),
            ("a{5,3}", "min repeat greater than max repeat"),
            ("x" * (MAX_PATTERN_LENGTH + 1), "at most 256 characters"),
        ]:
            self.assertRefused(pattern, words)

    def test_ordinary(self):
        """
        Patterns Kamailio users write are taken and match as Kamailio's
        C{REG_ICASE | REG_NEWLINE} expressions.
        """
        for pattern, text, found in [
            ("^user_.*", "USER_alice", True),
            ("^user_.*", "a_user_b", False),
            ("[0-9]+$", "sip:alice@192.0.2.1", True),
            ("[0-9]+$", "alice", False),
            ("^[[:digit:]]+$", "12345", True),
            ("^[[:alpha:]]+$", "Alice", True),
            ("^[[:alnum:]._-]+@example\\.com$", "a.b-c@EXAMPLE.com", True),
            ("^203\\.0\\.113\\.", "203.0.113.7", True),
            ("(ab)+c", "xababc", True),
            ("^(sip|tel):", "tel:+1", True),
            ("a{2,5}", "baab", True),
            ("^line 2$", "line 1\nline 2", True),
            (".*foo.*", "afoob", True),
            ("(a+)?b", "aab", True),
        ]:
            self.assertEqual(compilePattern(pattern).search(text), found, (pattern, text))

    def test_cost(self):
        """
        The cost of a search grows with the text as the engine's worst case
        does: linear without repeats or anchored, quadratic with one
        unanchored repeat; a leading or trailing repeat that may match
        nothing costs nothing.
        """
        text = "x" * 99
        self.assertEqual(compilePattern("abc").cost(text), 100)
        self.assertEqual(compilePattern("^abc").cost(text), 1)
        self.assertEqual(compilePattern("^abc").cost("a\nb\nc"), 3)
        self.assertEqual(compilePattern("[0-9]+$").cost(text), 100 * 100)
        self.assertEqual(compilePattern("a.*b.*c").cost(text), 100 ** 3)
        self.assertEqual(compilePattern(".*foo.*").cost(text), 100)
        self.assertEqual(compilePattern("a{2,5}").cost(text), 100 * 4)
        self.assertEqual(compilePattern("(ab|cd)x").cost(text), 100 * 2)


class RemovalWorkTests(StoreTestCase):
    """
    A removal by regular expression adds up the cost of its searches
    before removing anything, and is refused past its bound.
    """

    def test_hostileKeys(self):
        """
        The pattern of issue 14 over keys of 28 C{a}s is refused at once;
        a quadratic pattern over long keys is refused as too costly, and
        nothing is removed; over short keys it runs.
        """
        for n in range(20, 29):
            self.store.set("kdmq", "a" * n, 1)
        started = time.perf_counter()
        self.assertRaises(BadPattern, self.store.removeMatching, "kdmq", "re", "^(a+)+$")
        self.assertLess(time.perf_counter() - started, 0.1)
        store = HTableStore(self.clock, [KDMQ], maxRemovalWork=10**6)
        for i in range(10):
            store.set("kdmq", "%d%s" % (i, "1" * 2000), i)
        store.set("kdmq", "short1", 1)
        e = self.assertRaises(TooCostly, store.removeMatching, "kdmq", "re", "[0-9]+$")
        self.assertIn("nothing removed", str(e))
        self.assertEqual(store.size("kdmq")[0], 11)
        self.assertEqual(store.removeMatching("kdmq", "re", "^short"), ["short1"])

    def test_defaultBound(self):
        """
        By default, a quadratic pattern over 60 KB of text in one cell (a
        few seconds of backtracking) is refused; the same over a table of
        ordinary keys is not.
        """
        self.store.set("kdmq", "k", "1" * 60000 + "x")
        self.assertRaises(TooCostly, self.store.removeMatching, "kdmq", "re", "[0-9]+$", MATCH_VALUE)
        store = HTableStore(self.clock, [KDMQ])
        for i in range(10000):
            store.set("kdmq", "user_%d@example.com" % i, i)
        self.assertEqual(len(store.removeMatching("kdmq", "re", "[0-9]+$")), 0)
        self.assertEqual(len(store.removeMatching("kdmq", "re", "^user_1.*")), 1111)


class CapTests(SynchronousTestCase):
    """
    Each table holds at most C{maxCells} cells and C{maxBytes} octets of
    keys and values; a change past either is refused with L{TableFull}
    and changes nothing.
    """

    def setUp(self):
        self.clock = Clock()
        self.store = HTableStore(self.clock, [KDMQ, EXPIRING], maxCells=3, maxBytes=100)
        self.changes: list[Change] = []
        self.store.subscribe(self.changes.append)

    def test_defaults(self):
        """
        By default a table holds 100,000 cells and 64 MiB.
        """
        store = HTableStore(self.clock, [KDMQ])
        self.assertEqual((store.maxCells, store.maxBytes), (MAX_CELLS, MAX_BYTES))
        self.assertEqual((MAX_CELLS, MAX_BYTES), (100000, 64 * 1024 * 1024))

    def test_cells(self):
        """
        A new cell past C{maxCells} is refused; changing one that exists
        is not, and neither is a new one once a cell is deleted.
        """
        for key in "abc":
            self.store.set("kdmq", key, 1)
        e = self.assertRaises(TableFull, self.store.set, "kdmq", "d", 1)
        self.assertIn("3 cells", str(e))
        self.assertIsNone(self.store.get("kdmq", "d"))
        self.store.set("kdmq", "a", 2)
        self.store.delete("kdmq", "a")
        self.store.set("kdmq", "d", 1)
        self.assertEqual(self.store.size("kdmq"), (3, 3 + 3 * 4))

    def test_bytes(self):
        """
        Keys and string values count their UTF-8 octets, integers 4; a
        value that would pass C{maxBytes} is refused, the cell keeping
        its value.
        """
        self.store.set("kdmq", "k", "\xe9" * 40)
        self.assertEqual(self.store.size("kdmq"), (1, 81))
        self.assertRaises(TableFull, self.store.set, "kdmq", "l", "x" * 19)
        self.assertRaises(TableFull, self.store.set, "kdmq", "k", "x" * 100)
        self.assertEqual(self.store.get("kdmq", "k"), "\xe9" * 40)
        self.store.set("kdmq", "l", "x" * 18)
        self.assertEqual(self.store.size("kdmq"), (2, 100))
        self.store.removeMatching("kdmq", "sw", "k")
        self.assertEqual(self.store.size("kdmq"), (1, 19))
        self.assertEqual(self.store.size("exp"), (0, 0))

    def test_expiredMakeRoom(self):
        """
        In a table with C{autoexpire}, expired cells are dropped to make
        room before a change is refused.
        """
        for key in "abc":
            self.store.set("exp", key, 1)
        self.clock.advance(61)
        self.store.set("exp", "d", 1)
        self.assertEqual(self.store.size("exp"), (1, 5))
