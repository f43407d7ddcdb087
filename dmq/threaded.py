# -*- test-case-name: dmq.test.test_threaded,dmq.test.test_bus -*-
"""
Run a peer whose code blocks (a database call, a slow library) in a thread
pool, so that it does not stop the reactor::

    pool = ThreadPool(minthreads=0, maxthreads=2, name="dmq-peers")
    bus.registerPeer(ThreadedPeer(MyBlockingPeer(), reactor, pool))

The wrapped peer's C{messageReceived} and C{nodeAdded} run in the pool's
threads and must return a plain L{PeerResponse} (not a Deferred).  The bus
still bounds how many run at once (its C{numWorkers}) and how long each may
take (its handler timeout).  A call that overruns is answered C{500} and its
L{Deferred} cancelled: if it is still waiting for a thread, it never runs,
so no change is applied after its sender was told it failed; if it is
running, the thread cannot be interrupted and runs on.

Calls are handed to the pool only while fewer than C{threads} of them are
in it, running or queued, so that calls the bus gave up on do not pile up in
the pool's queue behind a stuck thread: the others wait, cancellably, for a
place.  L{threadedPeer} makes a pool of C{threads} threads for one peer and
stops it when the reactor stops.
"""

from __future__ import annotations

import threading
from typing import Any, Callable, Optional

from twisted.internet.interfaces import IReactorFromThreads

from twisted.internet.defer import CancelledError, Deferred, DeferredSemaphore
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.python.threadpool import ThreadPool
from zope.interface import implementer

from dmq.interfaces import IDMQPeer, PeerResponse
from dmq.nodelist import Node
from dmq.sip import Request

__all__ = ["ThreadedPeer", "threadedPeer"]


@implementer(IDMQPeer)
class ThreadedPeer:
    """
    An L{IDMQPeer} that calls a blocking peer in a thread pool.

    The L{Deferred}s of L{messageReceived} and L{nodeAdded} can be
    cancelled: a call cancelled before a thread starts it is never made.
    """

    _log = Logger()

    def __init__(
        self, peer: IDMQPeer, reactor: IReactorFromThreads, pool: ThreadPool, threads: Optional[int] = None
    ) -> None:
        """
        @param peer: the blocking peer; it provides L{IDMQPeer} but its methods
            return plain values.
        @param reactor: the reactor whose thread pool calls come back in.
        @param pool: a started L{ThreadPool}.
        @param threads: how many calls may be in C{pool} at once, running or
            queued; by default the pool's C{max}.  A call still running after
            it was cancelled keeps its place until it returns.
        """
        self._peer = peer
        self._reactor = reactor
        self._pool = pool
        self._places = DeferredSemaphore(pool.max if threads is None else threads)
        self.peerId = peer.peerId
        self.description = peer.description

    def messageReceived(self, request: Request, node: Optional[Node]) -> Deferred[PeerResponse]:
        return self._call(self._peer.messageReceived, request, node)

    def nodeAdded(self, node: Node) -> Deferred[object]:
        return self._call(self._peer.nodeAdded, node)

    def _call(self, f: Callable[..., Any], *args: object) -> Deferred[Any]:
        """
        Call C{f(*args)} in the pool once there is a place for it.

        @return: a L{Deferred} that fires with the result.  Cancelling it
            fails it at once; the call is then not made unless a thread has
            started it already.
        """
        # Set in the reactor thread, read in the pool's.
        cancelled = threading.Event()
        waiting = self._places.acquire()

        def cancel(result: Deferred[Any]) -> None:
            cancelled.set()
            # Does nothing once the place is taken.
            waiting.cancel()

        result: Deferred[Any] = Deferred(cancel)

        def inThread() -> object:
            if cancelled.is_set():
                raise CancelledError()
            return f(*args)

        def returned(outcome: object) -> None:
            self._places.release()
            if not result.called:
                if isinstance(outcome, Failure):
                    result.errback(outcome)
                else:
                    result.callback(outcome)
            elif isinstance(outcome, Failure) and not outcome.check(CancelledError):
                # Nobody is left to hand it to.
                self._log.failure(
                    "Peer {peer} failed after its call was cancelled", outcome, peer=self.peerId
                )

        def placed(_: object) -> None:
            deferToThreadPool(self._reactor, self._pool, inThread).addBoth(returned)

        waiting.addCallbacks(placed, lambda failure: failure.trap(CancelledError))
        return result


def threadedPeer(peer: IDMQPeer, reactor: Any, threads: int = 2) -> ThreadedPeer:
    """
    Wrap C{peer} in a L{ThreadedPeer} with a pool of its own of C{threads}
    threads (use the bus's C{numWorkers}), started now and stopped when the
    reactor shuts down.
    """
    # reactor: an IReactorCore and an IReactorFromThreads both, which a type
    # annotation cannot say.
    pool = ThreadPool(minthreads=0, maxthreads=threads, name=f"dmq-peer-{peer.peerId}")
    pool.start()
    reactor.addSystemEventTrigger("during", "shutdown", pool.stop)
    return ThreadedPeer(peer, reactor, pool, threads)
