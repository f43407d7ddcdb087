# -*- test-case-name: dmq.test.test_jobqueue -*-
"""
Tests for L{dmq.jobqueue}, on a L{Clock}.
"""

from __future__ import annotations

from typing import List

from twisted.internet.base import DelayedCall
from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from dmq.jobqueue import JobTimedOut, KeyedJobQueue, QueueFull, ShareUsed


class Outcomes:
    """
    Records how the Deferreds given by L{KeyedJobQueue.submit} end.
    """

    def __init__(self) -> None:
        self.events: List[tuple] = []

    def watch(self, name: str, d: Deferred) -> Deferred:
        d.addCallbacks(
            lambda result: self.events.append((name, result)),
            lambda failure: self.events.append((name, failure.type)),
        )
        return d


class KeyedJobQueueTests(SynchronousTestCase):
    """
    Tests for L{KeyedJobQueue}.
    """

    def setUp(self) -> None:
        self.clock = Clock()
        self.queue: KeyedJobQueue[str] = KeyedJobQueue(self.clock, numWorkers=2, maxQueue=2, timeout=10.0)
        self.outcomes = Outcomes()
        self.started: List[str] = []
        self.pending: dict = {}
        self.cancelled: List[str] = []

    def job(self, name: str):
        """
        A job that records its start and returns a Deferred to fire by hand.
        """

        def work():
            self.started.append(name)
            d = self.pending[name] = Deferred(lambda d: self.cancelled.append(name))
            return d

        return work

    def submit(self, key, name: str) -> Deferred:
        return self.outcomes.watch(name, self.queue.submit(key, self.job(name)))

    def test_immediateValue(self) -> None:
        """
        A job that returns a value has its Deferred fired at once, and
        leaves no timer.
        """
        d = self.queue.submit("k", lambda: 42)
        self.assertEqual(self.successResultOf(d), 42)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_deferredResult(self) -> None:
        """
        A job that returns a Deferred ends when it fires.
        """
        self.submit("k", "a")
        self.assertEqual(self.outcomes.events, [])
        self.pending["a"].callback("done")
        self.assertEqual(self.outcomes.events, [("a", "done")])
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_coroutine(self) -> None:
        """
        A job may be a coroutine function.
        """
        waiting: Deferred = Deferred()

        async def work():
            return await waiting

        d = self.queue.submit("k", work)
        self.assertNoResult(d)
        waiting.callback("done")
        self.assertEqual(self.successResultOf(d), "done")

    def test_failures(self) -> None:
        """
        A job that raises, or whose Deferred fails, fails its Deferred with
        that error.
        """

        def broken():
            raise ZeroDivisionError()

        self.failureResultOf(self.queue.submit("a", broken), ZeroDivisionError)
        self.submit("b", "b")
        self.pending["b"].errback(KeyError("x"))
        self.assertEqual(self.outcomes.events, [("b", KeyError)])
        self.assertEqual(self.queue.depth, 0)

    def test_oneAtATimePerKey(self) -> None:
        """
        The jobs of one key run one at a time, in order, while another
        key's job runs beside them.
        """
        self.submit("k", "k1")
        self.submit("k", "k2")
        self.submit("j", "j1")
        self.assertEqual(self.started, ["k1", "j1"])
        self.assertEqual(self.queue.depth, 1)
        self.pending["k1"].callback(None)
        self.assertEqual(self.started, ["k1", "j1", "k2"])
        self.assertEqual(self.queue.depth, 0)

    def test_numWorkers(self) -> None:
        """
        At most C{numWorkers} jobs run at once; keys then take turns in the
        order they became ready.
        """
        self.submit("a", "a1")
        self.submit("b", "b1")
        self.submit("a", "a2")
        self.submit("c", "c1")
        self.assertEqual(self.started, ["a1", "b1"])
        self.pending["b1"].callback(None)
        # "a" had a job waiting first, but "a1" still runs.
        self.assertEqual(self.started, ["a1", "b1", "c1"])
        self.pending["a1"].callback(None)
        self.assertEqual(self.started, ["a1", "b1", "c1", "a2"])

    def test_maxQueue(self) -> None:
        """
        Once C{maxQueue} jobs wait, a job that cannot start at once is
        refused; one that can start at once is still taken.
        """
        queue: KeyedJobQueue[str] = KeyedJobQueue(self.clock, numWorkers=2, maxQueue=1, timeout=10.0)
        queue.submit("a", self.job("a1"))
        queue.submit("a", self.job("a2"))
        self.assertFalse(queue.accepts("a"))
        self.assertRaises(QueueFull, queue.submit, "a", self.job("a3"))
        self.assertTrue(queue.accepts("b"))
        queue.submit("b", self.job("b1"))
        self.assertFalse(queue.accepts("c"))
        self.assertEqual(self.started, ["a1", "b1"])
        self.assertEqual(queue.depth, 1)

    def test_noQueue(self) -> None:
        """
        With C{maxQueue} 0, only jobs that can start at once are taken.
        """
        queue: KeyedJobQueue[str] = KeyedJobQueue(self.clock, numWorkers=1, maxQueue=0, timeout=10.0)
        self.assertTrue(queue.accepts("a"))
        queue.submit("a", self.job("a1"))
        self.assertFalse(queue.accepts("b"))

    def test_allTimeOut(self) -> None:
        """
        Jobs whose time is up fail with L{JobTimedOut}, in turn: the one
        running, then the one that started in its place.
        """
        self.submit("k", "k1")
        self.submit("k", "k2")
        self.clock.advance(10)
        self.assertEqual(self.outcomes.events, [("k1", JobTimedOut), ("k2", JobTimedOut)])
        self.assertEqual(self.started, ["k1", "k2"])
        self.assertEqual(self.queue.depth, 0)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_runningJobTimesOut(self) -> None:
        """
        A running job whose time is up fails with L{JobTimedOut}, its
        Deferred is cancelled, and the key's next job starts; what the job
        does afterwards is ignored.
        """
        self.submit("k", "k1")
        self.clock.advance(5)
        self.submit("k", "k2")
        self.clock.advance(5)
        self.assertEqual(self.outcomes.events, [("k1", JobTimedOut)])
        self.assertEqual(self.cancelled, ["k1"])
        self.assertEqual(self.started, ["k1", "k2"])
        self.pending["k2"].callback("ok")
        self.assertEqual(self.outcomes.events, [("k1", JobTimedOut), ("k2", "ok")])

    def test_deadlinesOutOfOrder(self) -> None:
        """
        When the deadline of a waiting job fires before that of the job of
        its key that runs (equal times fire in any order), the waiting one
        fails and the running one is unharmed.
        """
        self.submit("k", "k1")
        self.submit("k", "k2")
        first, second = self.clock.getDelayedCalls()
        assert isinstance(second, DelayedCall)
        func, args, kw = second.func, second.args, second.kw
        second.cancel()
        func(*args, **kw)
        self.assertEqual(self.outcomes.events, [("k2", JobTimedOut)])
        self.assertEqual(self.queue.depth, 0)
        self.pending["k1"].callback("ok")
        self.assertEqual(self.outcomes.events, [("k2", JobTimedOut), ("k1", "ok")])
        self.assertEqual(self.started, ["k1"])

    def test_whenIdle(self) -> None:
        """
        L{KeyedJobQueue.whenIdle} fires at once on an idle queue, else once
        no job runs or waits.
        """
        self.successResultOf(self.queue.whenIdle())
        self.submit("k", "k1")
        self.submit("k", "k2")
        idle = self.queue.whenIdle()
        self.pending["k1"].callback(None)
        self.assertNoResult(idle)
        self.pending["k2"].callback(None)
        self.successResultOf(idle)

    def test_whenIdleAfterTimeouts(self) -> None:
        """
        Jobs that time out count as ended for L{KeyedJobQueue.whenIdle}.
        """
        self.submit("a", "a1")
        self.submit("a", "a2")
        idle = self.queue.whenIdle()
        self.clock.advance(10)
        self.successResultOf(idle)

    def test_arguments(self) -> None:
        """
        A queue needs a worker, a queue size that is not negative and a
        positive timeout.
        """
        self.assertRaises(ValueError, KeyedJobQueue, self.clock, 0, 1, 1.0)
        self.assertRaises(ValueError, KeyedJobQueue, self.clock, 1, -1, 1.0)
        self.assertRaises(ValueError, KeyedJobQueue, self.clock, 1, 1, 0)


class CallTests(SynchronousTestCase):
    """
    Tests for L{KeyedJobQueue.call}: the way in for jobs that mostly answer
    at once.
    """

    def setUp(self) -> None:
        self.clock = Clock()
        self.queue: KeyedJobQueue[str] = KeyedJobQueue(self.clock, numWorkers=2, maxQueue=2, timeout=10.0)

    def test_atOnce(self) -> None:
        """
        A job of an idle key that returns a value gives that value, not a
        Deferred, and leaves no timer and no worker taken.
        """
        self.assertEqual(self.queue.call("k", lambda a, b: a + b, 40, 2), 42)
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.successResultOf(self.queue.whenIdle())
        self.assertTrue(self.queue.accepts("k"))

    def test_behindItsKey(self) -> None:
        """
        A job whose key has a job running waits for it, in order, and its
        outcome is a Deferred.
        """
        first: Deferred = Deferred()
        order: List[str] = []
        running = self.queue.call("k", lambda: first)

        def secondJob():
            order.append("second")
            return "two"

        second = self.queue.call("k", secondJob)
        assert isinstance(running, Deferred)
        assert isinstance(second, Deferred)
        self.assertEqual(order, [])
        first.callback("one")
        self.assertEqual(self.successResultOf(running), "one")
        self.assertEqual(self.successResultOf(second), "two")
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_noWorker(self) -> None:
        """
        With every worker taken, a job of another key waits as well.
        """
        blockers: list[Deferred[None]] = [Deferred(), Deferred()]
        for key, blocker in zip("ab", blockers):
            self.queue.call(key, lambda blocker=blocker: blocker)
        waiting = self.queue.call("c", lambda: "c")
        assert isinstance(waiting, Deferred)
        self.assertNoResult(waiting)
        blockers[0].callback(None)
        self.assertEqual(self.successResultOf(waiting), "c")

    def test_deferredTimesOut(self) -> None:
        """
        A job that answers with a Deferred must still finish within the
        timeout, counted from the call.
        """
        d = self.queue.call("k", Deferred)
        self.clock.advance(10)
        self.failureResultOf(d, JobTimedOut)
        self.successResultOf(self.queue.whenIdle())

    def test_raises(self) -> None:
        """
        A job that raises gives a failed Deferred, and frees its worker.
        """

        def broken() -> None:
            raise ZeroDivisionError()

        self.failureResultOf(self.queue.call("k", broken), ZeroDivisionError)
        self.assertEqual(self.queue.call("k", lambda: 1), 1)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_full(self) -> None:
        """
        A job there is no room for is refused with L{QueueFull}.
        """
        blockers: list[Deferred[None]] = [Deferred(), Deferred()]
        for key, blocker in zip("ab", blockers):
            self.queue.call(key, lambda blocker=blocker: blocker)
        self.queue.call("c", lambda: None)
        self.queue.call("d", lambda: None)
        self.assertRaises(QueueFull, self.queue.call, "e", lambda: None)

    def test_submittedDuringCall(self) -> None:
        """
        A job of the same key submitted while a called job runs waits for it.
        """
        order: List[str] = []

        def work() -> str:
            order.append("first")
            later.append(self.queue.submit("k", lambda: order.append("second")))
            order.append("first done")
            return "one"

        later: List[Deferred] = []
        self.assertEqual(self.queue.call("k", work), "one")
        self.successResultOf(later[0])
        self.assertEqual(order, ["first", "first done", "second"])


class ShareTests(SynchronousTestCase):
    """
    The share of one group (the bus's: one source address) of the jobs
    waiting.
    """

    def setUp(self) -> None:
        self.clock = Clock()
        self.queue: KeyedJobQueue[tuple[str, int]] = KeyedJobQueue(
            self.clock, numWorkers=1, maxQueue=4, timeout=10.0, groupOf=lambda key: key[0], share=2
        )
        self.blocker: Deferred = Deferred()
        self.timedOut: List[object] = []
        self.submit(("busy", 0), lambda: self.blocker)

    def submit(self, key, work) -> None:
        self.queue.submit(key, work).addErrback(lambda f: self.timedOut.append(f.type))

    def test_shareUsed(self) -> None:
        """
        Past its share, a group's job raises L{ShareUsed} (a L{QueueFull}),
        while another group's is still taken.
        """
        self.submit(("a", 1), lambda: 1)
        self.submit(("a", 2), lambda: 2)
        self.assertFalse(self.queue.accepts(("a", 3)))
        self.assertRaises(ShareUsed, self.queue.submit, ("a", 3), lambda: 3)
        self.assertRaises(QueueFull, self.queue.call, ("a", 3), lambda: 3)
        self.submit(("b", 1), lambda: 1)
        self.assertEqual(self.queue.depth, 3)

    def test_shareFreed(self) -> None:
        """
        A group's share is free again once its jobs run or time out.
        """
        self.submit(("a", 1), lambda: 1)
        self.submit(("a", 2), lambda: 2)
        self.blocker.callback(None)
        self.submit(("a", 3), lambda: 3)
        self.submit(("busy", 0), lambda: Deferred())
        self.submit(("a", 4), lambda: 4)
        self.submit(("a", 5), lambda: 5)
        self.assertRaises(ShareUsed, self.queue.submit, ("a", 6), lambda: 6)
        self.clock.advance(10)
        self.assertEqual(self.queue.depth, 0)
        self.submit(("a", 7), lambda: 7)

    def test_defaultShare(self) -> None:
        """
        By default a group may have a quarter of the queue waiting.
        """
        queue = KeyedJobQueue(self.clock, 1, 1024, 10.0, groupOf=lambda key: key)
        self.assertEqual(queue.share, 256)
