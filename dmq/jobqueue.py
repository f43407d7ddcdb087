# -*- test-case-name: dmq.test.test_jobqueue -*-
"""
A bounded job queue with one FIFO per key: the jobs of one key run one at a
time, in the order they came; at most C{numWorkers} jobs run at once; at
most C{maxQueue} wait; and each job must finish within C{timeout} seconds of
its submission.  Time comes from an injected clock.  The bus runs its peers'
handlers on one, keyed by sender and peer, so that one node's requests to
one peer are handled in order (doc/design.md).
"""

from __future__ import annotations

from collections import deque
from types import CoroutineType
from typing import Callable, Deque, Dict, Generic, Hashable, List, Optional, Set, TypeVar

import attr
from twisted.internet.defer import Deferred, maybeDeferred, succeed
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.python.failure import Failure

__all__ = ["KeyedJobQueue", "JobTimedOut", "QueueFull", "ShareUsed"]

# The keys of one queue: the bus's are (source address, peer name).
_K = TypeVar("_K", bound=Hashable)


class QueueFull(Exception):
    """
    A job was submitted that the queue had no room for (see
    L{KeyedJobQueue.accepts}).
    """


class ShareUsed(QueueFull):
    """
    A job was submitted whose group (say, its sender) has as many jobs
    waiting as one group may: its share of the queue is used, while other
    groups may still be taken.
    """


class JobTimedOut(Exception):
    """
    A job did not finish within the queue's timeout: it was taken off the
    queue, or, if it was running, its Deferred was cancelled.
    """


@attr.define(eq=False)
class _Job(Generic[_K]):
    """
    One job, waiting or running.
    """

    key: _K
    work: Optional[Callable[[], object]]
    result: Deferred[object]
    deadline: Optional[IDelayedCall] = None
    running: Optional[Deferred[object]] = None


def _isPlain(result: object) -> bool:
    """
    Whether a job's C{result} is its outcome already: not a L{Deferred}, a
    L{Failure} or a coroutine.
    """
    kind = type(result)
    plain = _plainTypes.get(kind)
    if plain is None:
        # Asked once per type: an isinstance of Deferred, an abstract
        # class, is a Python call.
        plain = _plainTypes[kind] = (
            not issubclass(kind, (Deferred, Failure)) and kind is not CoroutineType
        )
    return plain


# The types jobs have returned, and whether they are plain: as many as the
# peers have kinds of answer.
_plainTypes: Dict[type, bool] = {}


class KeyedJobQueue(Generic[_K]):
    """
    Runs jobs, one key at a time each, C{numWorkers} at a time in all.

    A job is a callable that returns a value, a L{Deferred} or a coroutine.
    L{call} runs it at once when it can, and when it then returns a value,
    that value is the outcome: no L{Deferred}, no timer (a job that answers
    at once needs no deadline).  Otherwise, and always with L{submit}, the
    outcome is a L{Deferred} that fires with the job's result, or fails with
    its failure or with L{JobTimedOut}.  Keys take turns: when a key's job
    ends, its next job queues behind the keys that became ready meanwhile.
    """

    def __init__(
        self,
        clock: IReactorTime,
        numWorkers: int,
        maxQueue: int,
        timeout: float,
        groupOf: Optional[Callable[[_K], Hashable]] = None,
        share: Optional[int] = None,
    ) -> None:
        """
        @param numWorkers: how many jobs may run at once.
        @param maxQueue: how many jobs may wait for a worker.
        @param timeout: seconds from submission within which a job must
            finish.
        @param groupOf: the group of a key (the bus groups its keys by
            sender), or C{None} for no groups.
        @param share: with C{groupOf}, how many jobs of one group may wait;
            by default a quarter of C{maxQueue}, at least 1.
        """
        if numWorkers < 1:
            raise ValueError("numWorkers must be at least 1")
        if maxQueue < 0:
            raise ValueError("maxQueue must not be negative")
        if timeout <= 0:
            raise ValueError("timeout must be positive")
        self._clock = clock
        self._numWorkers = numWorkers
        self._maxQueue = maxQueue
        self.timeout = timeout
        # Per-key FIFO queues, and the keys that have a job waiting and none
        # running, in the order they became ready.
        self._waiting: Dict[_K, Deque[_Job[_K]]] = {}
        self._ready: Deque[_K] = deque()
        # The keys with a job running, and how many run.
        self._busy: Set[_K] = set()
        self._workers = 0
        self._queued = 0
        self._idle: List[Deferred[None]] = []
        self._groupOf = groupOf
        self.share = max(1, maxQueue // 4) if share is None else share
        if self.share < 1:
            raise ValueError("share must be at least 1")
        # How many jobs of each group wait (only groups that have some).
        self._groupWaiting: Dict[Hashable, int] = {}

    @property
    def depth(self) -> int:
        """
        How many jobs wait for a worker.
        """
        return self._queued

    def accepts(self, key: _K) -> bool:
        """
        Whether a job for C{key} would be taken now: it can start at once,
        or there is room for it to wait.
        """
        canStartNow = self._workers < self._numWorkers and key not in self._busy
        return canStartNow or (self._queued < self._maxQueue and self._hasShare(key))

    def _hasShare(self, key: _K) -> bool:
        groupOf = self._groupOf
        return groupOf is None or self._groupWaiting.get(groupOf(key), 0) < self.share

    def _waited(self, key: _K, change: int) -> None:
        groupOf = self._groupOf
        if groupOf is None:
            return
        group = groupOf(key)
        count = self._groupWaiting.get(group, 0) + change
        if count:
            self._groupWaiting[group] = count
        else:
            del self._groupWaiting[group]

    def call(self, key: _K, f: Callable[..., object], *args: object) -> object:
        """
        Run C{f(*args)} as a job of C{key}: now, when no job of C{key} runs
        or waits and a worker is free, or else when its turn comes, as
        L{submit} runs it.

        @return: what C{f} returned, when it ran now and returned a plain
            value; otherwise a L{Deferred}, as from L{submit}.
        @raise QueueFull: when L{accepts} says no.
        """
        if (
            self._workers >= self._numWorkers
            or key in self._busy
            or key in self._waiting
        ):
            return self.submit(key, lambda: f(*args))
        # Nothing of key waits and a worker is free: run it now.
        self._busy.add(key)
        self._workers += 1
        try:
            result = f(*args)
        except BaseException:
            result = Failure()
        if _plainTypes.get(type(result)) or _isPlain(result):
            # Done already, as most jobs are: free the worker.
            self._busy.discard(key)
            self._workers -= 1
            if key in self._waiting:
                self._ready.append(key)
            if self._ready:
                self._pump()
            if self._idle:
                self._checkIdle()
            return result
        job = _Job(key, None, Deferred())
        job.deadline = self._clock.callLater(self.timeout, self._timedOut, job)
        self._follow(job, result)
        return job.result

    def submit(self, key: _K, work: Callable[[], object]) -> Deferred[object]:
        """
        Run C{work} when no other job of C{key} runs and a worker is free.

        @return: a L{Deferred} that fires with what C{work} returned (or
            what its Deferred fired with), or fails with its failure, or
            with L{JobTimedOut} when C{timeout} seconds pass first.  It may
            have fired already.
        @raise QueueFull: when L{accepts} says no; L{ShareUsed} when it says
            no because the group of C{key} has its share waiting.
        """
        if not self.accepts(key):
            if self._queued < self._maxQueue:
                raise ShareUsed(f"{self.share} jobs of its group are waiting already")
            raise QueueFull(f"{self._queued} jobs are waiting already")
        job = _Job(key, work, Deferred())
        job.deadline = self._clock.callLater(self.timeout, self._timedOut, job)
        queue = self._waiting.get(key)
        if queue is None:
            queue = self._waiting[key] = deque()
            if key not in self._busy:
                self._ready.append(key)
        queue.append(job)
        self._queued += 1
        self._waited(key, 1)
        self._pump()
        return job.result

    def whenIdle(self) -> Deferred[None]:
        """
        @return: a L{Deferred} that fires when no job runs or waits.
        """
        if not self._workers and not self._queued:
            return succeed(None)
        d: Deferred[None] = Deferred()
        self._idle.append(d)
        return d

    def _pump(self) -> None:
        while self._ready and self._workers < self._numWorkers:
            key = self._ready.popleft()
            queue = self._waiting[key]
            job = queue.popleft()
            if not queue:
                del self._waiting[key]
            self._queued -= 1
            self._waited(key, -1)
            self._busy.add(key)
            self._workers += 1
            self._run(job)

    def _run(self, job: _Job[_K]) -> None:
        assert job.work is not None
        try:
            result = job.work()
        except BaseException:
            result = Failure()
        if _isPlain(result):
            # Most jobs answer at once: no Deferred to build and run.
            self._finish(result, job)
        else:
            self._follow(job, result)

    def _follow(self, job: _Job[_K], result: object) -> None:
        """
        The running C{job} gave a L{Deferred}, a L{Failure} or a coroutine:
        finish it when that has a result.
        """
        d = maybeDeferred(lambda: result)
        job.running = d
        d.addCallbacks(self._finish, self._finish, callbackArgs=(job,), errbackArgs=(job,))

    def _timedOut(self, job: _Job[_K]) -> None:
        job.deadline = None
        timedOut = Failure(JobTimedOut(f"no result within {self.timeout} s"))
        if job.running is None:
            queue = self._waiting[job.key]
            queue.remove(job)
            self._queued -= 1
            self._waited(job.key, -1)
            if not queue:
                del self._waiting[job.key]
                # The key waits in _ready only while none of its jobs runs;
                # deadlines need not fire in submission order.
                if job.key in self._ready:
                    self._ready.remove(job.key)
            job.result.errback(timedOut)
            self._checkIdle()
        else:
            self._finish(timedOut, job)
            job.running.cancel()

    def _finish(self, outcome: object, job: _Job[_K]) -> None:
        if job.result.called:
            # The deadline ended the job already, and cancelled its Deferred.
            return
        if job.deadline is not None:
            job.deadline.cancel()
            job.deadline = None
        self._busy.discard(job.key)
        self._workers -= 1
        if job.key in self._waiting:
            self._ready.append(job.key)
        if isinstance(outcome, Failure):
            job.result.errback(outcome)
        else:
            job.result.callback(outcome)
        self._pump()
        self._checkIdle()

    def _checkIdle(self) -> None:
        if not self._workers and not self._queued and self._idle:
            waiting, self._idle = self._idle, []
            for d in waiting:
                d.callback(None)
