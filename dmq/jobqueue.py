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
from typing import Callable, Deque, Dict, Hashable, Optional, Set

import attr
from twisted.internet.defer import Deferred, fail, maybeDeferred, succeed
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.python.failure import Failure

__all__ = ["KeyedJobQueue", "JobTimedOut", "QueueFull"]


class QueueFull(Exception):
    """
    A job was submitted that the queue had no room for (see
    L{KeyedJobQueue.accepts}).
    """


class JobTimedOut(Exception):
    """
    A job did not finish within the queue's timeout: it was taken off the
    queue, or, if it was running, its Deferred was cancelled.
    """


@attr.define(eq=False)
class _Job:
    """
    One job, waiting or running.
    """

    key: Hashable
    work: Callable[[], object]
    result: Deferred
    deadline: Optional[IDelayedCall] = None
    running: Optional[Deferred] = None


class KeyedJobQueue:
    """
    Runs jobs, one key at a time each, C{numWorkers} at a time in all.

    A job is a callable of no arguments that returns a value, a L{Deferred}
    or a coroutine.  L{submit} gives a L{Deferred} that fires with its
    result, or fails with its failure or with L{JobTimedOut}.  Keys take
    turns: when a key's job ends, its next job queues behind the keys that
    became ready meanwhile.
    """

    def __init__(
        self, clock: IReactorTime, numWorkers: int, maxQueue: int, timeout: float
    ) -> None:
        """
        @param numWorkers: how many jobs may run at once.
        @param maxQueue: how many jobs may wait for a worker.
        @param timeout: seconds from submission within which a job must
            finish.
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
        self._waiting: Dict[Hashable, Deque[_Job]] = {}
        self._ready: Deque[Hashable] = deque()
        self._busy: Set[Hashable] = set()
        self._queued = 0
        self._running: Set[_Job] = set()
        self._idle: list[Deferred] = []

    @property
    def depth(self) -> int:
        """
        How many jobs wait for a worker.
        """
        return self._queued

    def accepts(self, key: Hashable) -> bool:
        """
        Whether a job for C{key} would be taken now: it can start at once,
        or there is room for it to wait.
        """
        canStartNow = len(self._running) < self._numWorkers and key not in self._busy
        return canStartNow or self._queued < self._maxQueue

    def submit(self, key: Hashable, work: Callable[[], object]) -> Deferred:
        """
        Run C{work} when no other job of C{key} runs and a worker is free.

        @return: a L{Deferred} that fires with what C{work} returned (or
            what its Deferred fired with), or fails with its failure, or
            with L{JobTimedOut} when C{timeout} seconds pass first.  It may
            have fired already.
        @raise QueueFull: when L{accepts} says no.
        """
        if not self.accepts(key):
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
        self._pump()
        return job.result

    def whenIdle(self) -> Deferred:
        """
        @return: a L{Deferred} that fires when no job runs or waits.
        """
        if not self._running and not self._queued:
            return succeed(None)
        d: Deferred = Deferred()
        self._idle.append(d)
        return d

    def _pump(self) -> None:
        while self._ready and len(self._running) < self._numWorkers:
            key = self._ready.popleft()
            queue = self._waiting[key]
            job = queue.popleft()
            if not queue:
                del self._waiting[key]
            self._queued -= 1
            self._busy.add(key)
            self._run(job)

    def _run(self, job: _Job) -> None:
        self._running.add(job)
        try:
            result = job.work()
        except BaseException:
            d = fail()
        else:
            if not isinstance(result, (Deferred, Failure)) and type(result) is not CoroutineType:
                # Most jobs answer at once: no Deferred to build and run.
                self._finish(result, job)
                return
            d = maybeDeferred(lambda: result)
        job.running = d
        d.addCallbacks(self._finish, self._finish, callbackArgs=(job,), errbackArgs=(job,))

    def _timedOut(self, job: _Job) -> None:
        job.deadline = None
        timedOut = Failure(JobTimedOut(f"no result within {self.timeout} s"))
        if job.running is None:
            queue = self._waiting[job.key]
            queue.remove(job)
            self._queued -= 1
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

    def _finish(self, outcome: object, job: _Job) -> None:
        if job.result.called:
            # The deadline ended the job already, and cancelled its Deferred.
            return
        if job.deadline is not None:
            job.deadline.cancel()
            job.deadline = None
        self._running.discard(job)
        self._busy.discard(job.key)
        if job.key in self._waiting:
            self._ready.append(job.key)
        if isinstance(outcome, Failure):
            job.result.errback(outcome)
        else:
            job.result.callback(outcome)
        self._pump()
        self._checkIdle()

    def _checkIdle(self) -> None:
        if not self._running and not self._queued and self._idle:
            waiting, self._idle = self._idle, []
            for d in waiting:
                d.callback(None)
