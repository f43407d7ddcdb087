# -*- test-case-name: dmq.test.test_bus -*-
"""
Run a peer whose code blocks (a database call, a slow library) in a thread
pool, so that it does not stop the reactor.

    pool = ThreadPool(minthreads=0, maxthreads=2, name="dmq-peers")
    bus.registerPeer(ThreadedPeer(MyBlockingPeer(), reactor, pool))

The wrapped peer's C{messageReceived} and C{nodeAdded} run in the pool's
threads and must return a plain L{PeerResponse} (not a Deferred).  The bus
still bounds how many run at once (its C{numWorkers}) and how long each may
take (its handler timeout): a call that overruns is answered C{500}, though
the thread cannot be interrupted and runs on.  L{threadedPeer} makes a pool of
C{threads} threads for one peer and stops it when the reactor stops.
"""

from __future__ import annotations

from twisted.internet.defer import Deferred
from twisted.internet.threads import deferToThreadPool
from twisted.python.threadpool import ThreadPool
from zope.interface import implementer

from dmq.interfaces import IDMQPeer

__all__ = ["ThreadedPeer", "threadedPeer"]


@implementer(IDMQPeer)
class ThreadedPeer:
    """
    An L{IDMQPeer} that calls a blocking peer in a thread pool.
    """

    def __init__(self, peer, reactor, pool: ThreadPool) -> None:
        """
        @param peer: the blocking peer; it provides L{IDMQPeer} but its methods
            return plain values.
        @param reactor: the reactor whose thread pool calls come back in.
        @param pool: a started L{ThreadPool}.
        """
        self._peer = peer
        self._reactor = reactor
        self._pool = pool
        self.peerId = peer.peerId
        self.description = peer.description

    def messageReceived(self, request, node) -> Deferred:
        return deferToThreadPool(self._reactor, self._pool, self._peer.messageReceived, request, node)

    def nodeAdded(self, node) -> Deferred:
        return deferToThreadPool(self._reactor, self._pool, self._peer.nodeAdded, node)


def threadedPeer(peer, reactor, threads: int = 2) -> ThreadedPeer:
    """
    Wrap C{peer} in a L{ThreadedPeer} with a pool of its own of C{threads}
    threads (use the bus's C{numWorkers}), started now and stopped when the
    reactor shuts down.
    """
    pool = ThreadPool(minthreads=0, maxthreads=threads, name=f"dmq-peer-{peer.peerId}")
    pool.start()
    reactor.addSystemEventTrigger("during", "shutdown", pool.stop)
    return ThreadedPeer(peer, reactor, pool)
