# -*- test-case-name: dmq.test.test_observers -*-
"""
Tests for L{dmq.observers}.
"""

from __future__ import annotations

from twisted.logger import capturedLogs
from twisted.trial.unittest import SynchronousTestCase

from dmq.observers import Observers


class ObserversTests(SynchronousTestCase):
    """
    Tests for L{Observers}.
    """

    def test_inOrder(self) -> None:
        """
        Observers are told in the order they were added; a removed one is
        told nothing more.
        """
        told: list[str] = []
        observers: Observers[str] = Observers("thing")
        for name in "abc":
            observers.add(name)
        observers.remove("b")
        observers.tell(told.append, "x")
        self.assertEqual(told, ["a", "c"])
        self.assertEqual(len(observers), 2)
        self.assertRaises(ValueError, observers.remove, "b")

    def test_failureLogged(self) -> None:
        """
        An observer that raises is logged with what it was told of, and the
        next one is still told.
        """
        told = []

        def call(observer):
            if observer == "broken":
                raise RuntimeError("broken")
            told.append(observer)

        observers: Observers = Observers("thing")
        observers.add("broken")
        observers.add("fine")
        with capturedLogs() as events:
            observers.tell(call, "news")
        self.assertEqual(told, ["fine"])
        [failure] = [e for e in events if "log_failure" in e]
        self.assertEqual((failure["what"], failure["about"]), ("thing", "news"))
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)

    def test_changesWhileTelling(self) -> None:
        """
        Observers added or removed while they are told take effect from the
        next time.
        """
        observers: Observers = Observers("thing")
        told = []

        def call(observer):
            told.append(observer)
            observers.remove(observer)
            observers.add(observer + "!")

        observers.add("a")
        observers.add("b")
        observers.tell(call, None)
        self.assertEqual(told, ["a", "b"])
        observers.tell(told.append, None)
        self.assertEqual(told, ["a", "b", "a!", "b!"])
