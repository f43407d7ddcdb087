# -*- test-case-name: dmq.test.test_threaded -*-
"""
Tests for L{dmq.threaded}: a blocking peer called through a thread pool,
with a fake pool whose "threads" the test runs by hand.
"""

from __future__ import annotations

from twisted.internet.defer import CancelledError
from twisted.internet.interfaces import IReactorFromThreads
from twisted.python.failure import Failure
from twisted.python.threadpool import ThreadPool
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import implementer
from zope.interface.verify import verifyObject

from dmq import sip
from dmq.interfaces import IDMQPeer, PeerResponse
from dmq.node import Node, NodeStatus
from dmq.threaded import ThreadedPeer

NODE = Node(sip.URI("127.0.0.12", 5060), NodeStatus.ACTIVE)


def request(n: int) -> sip.Request:
    """
    The KDMQ request numbered C{n}: its body says which it is.
    """
    uri = sip.URI("127.0.0.11", 5060, user="blocking")
    return sip.Request(
        "KDMQ",
        uri,
        (
            ("To", f"<{uri.toString()}>"),
            ("From", "<sip:blocking@127.0.0.12:5060>;tag=1"),
            ("CSeq", f"{n + 1} KDMQ"),
            ("Call-ID", f"{n}@127.0.0.12"),
            ("Max-Forwards", "1"),
        ),
        str(n).encode("ascii"),
    )


@implementer(IDMQPeer)
class BlockingPeer:
    """
    A peer with plain (blocking) methods that records its calls.
    """

    peerId = "blocking"
    description = "blocks"

    def __init__(self, error=None):
        self.received = []
        self.added = []
        self.error = error

    def messageReceived(self, request, node):
        self.received.append(request)
        if self.error is not None:
            raise self.error
        return PeerResponse(200, "OK")

    def nodeAdded(self, node):
        self.added.append(node)


class FakePool(ThreadPool):
    """
    A L{ThreadPool <twisted.python.threadpool.ThreadPool>} that starts no threads: calls handed to it wait in
    C{queue} until the test starts one (L{startCall}), and return when the test says so.
    """

    def __init__(self, max=2):
        super().__init__(minthreads=0, maxthreads=max, name="fake")
        self.queue = []

    def callInThreadWithCallback(self, onResult, func, *args, **kw):
        self.queue.append((onResult, func, args, kw))

    def startCall(self):
        """
        A thread takes the oldest queued call and runs it.

        @return: a callable that hands its outcome back.
        """
        onResult, f, args, kwargs = self.queue.pop(0)
        try:
            outcome = (True, f(*args, **kwargs))
        except BaseException:
            outcome = (False, Failure())
        return lambda: onResult(*outcome)

    def run(self):
        """
        Run every queued call to its end, and those queued meanwhile.
        """
        while self.queue:
            self.startCall()()


@implementer(IReactorFromThreads)
class FakeReactor:
    """
    Calls from a thread run at once.
    """

    def callFromThread(self, callable, *args, **kwargs):
        callable(*args, **kwargs)


class ThreadedPeerTests(SynchronousTestCase):
    """
    L{ThreadedPeer}.
    """

    def setUp(self):
        self.peer = BlockingPeer()
        self.pool = FakePool(max=2)
        self.threaded = ThreadedPeer(self.peer, FakeReactor(), self.pool)

    def test_interface(self):
        """
        L{ThreadedPeer} provides L{IDMQPeer}, with the wrapped peer's id and
        description.
        """
        self.assertTrue(verifyObject(IDMQPeer, self.threaded))
        self.assertEqual(
            (self.threaded.peerId, self.threaded.description), ("blocking", "blocks")
        )

    def test_calls(self):
        """
        C{messageReceived} and C{nodeAdded} run the wrapped peer's in the
        pool and fire with what it returns.
        """
        received = self.threaded.messageReceived(request(0), None)
        added = self.threaded.nodeAdded(NODE)
        self.assertNoResult(received)
        self.assertEqual(self.peer.received, [])
        self.pool.run()
        self.assertEqual(self.successResultOf(received), PeerResponse(200, "OK"))
        self.assertIsNone(self.successResultOf(added))
        self.assertEqual((self.peer.received, self.peer.added), ([request(0)], [NODE]))

    def test_error(self):
        """
        An exception in the wrapped peer fails the L{Deferred <twisted.internet.defer.Deferred>} with it.
        """
        threaded = ThreadedPeer(BlockingPeer(error=ZeroDivisionError()), FakeReactor(), self.pool)
        d = threaded.messageReceived(request(0), None)
        self.pool.run()
        self.failureResultOf(d, ZeroDivisionError)

    def test_cancelledBeforeStart(self):
        """
        A call cancelled while it waits in the pool's queue fails at once
        and is never made: its place is then free again.
        """
        d = self.threaded.messageReceived(request(0), None)
        self.assertEqual(len(self.pool.queue), 1)
        d.cancel()
        self.failureResultOf(d, CancelledError)
        self.pool.run()
        self.assertEqual(self.peer.received, [])
        self.assertEqual(self.flushLoggedErrors(), [])
        again = [self.threaded.messageReceived(request(i), None) for i in range(2)]
        self.assertEqual(len(self.pool.queue), 2)
        self.pool.run()
        self.assertEqual([self.successResultOf(d).code for d in again], [200, 200])

    def test_bound(self):
        """
        No more calls than the pool has threads are handed to it; the others
        wait, in order, for one to return.
        """
        calls = [self.threaded.messageReceived(request(i), None) for i in range(5)]
        self.assertEqual(len(self.pool.queue), 2)
        finish = self.pool.startCall()
        self.assertEqual(len(self.pool.queue), 1)
        finish()
        self.assertEqual(len(self.pool.queue), 2)
        self.pool.run()
        self.assertEqual(self.peer.received, [request(i) for i in range(5)])
        self.assertEqual([self.successResultOf(d).code for d in calls], [200] * 5)

    def test_threads(self):
        """
        C{threads} sets the bound instead of the pool's C{max}.
        """
        threaded = ThreadedPeer(self.peer, FakeReactor(), self.pool, threads=1)
        for i in range(3):
            threaded.messageReceived(request(i), None)
        self.assertEqual(len(self.pool.queue), 1)

    def test_cancelledWhileWaiting(self):
        """
        A call cancelled while it waits for a place fails at once and never
        reaches the pool.
        """
        first = self.threaded.messageReceived(request(0), None)
        second = self.threaded.messageReceived(request(1), None)
        waiting = self.threaded.messageReceived(request(2), None)
        waiting.cancel()
        self.failureResultOf(waiting, CancelledError)
        self.pool.run()
        self.assertEqual(self.peer.received, [request(0), request(1)])
        self.successResultOf(first)
        self.successResultOf(second)

    def test_cancelledWhileRunning(self):
        """
        A call cancelled while a thread runs it fails at once, but keeps its
        place until the thread returns, so that the next call waits.
        """
        threaded = ThreadedPeer(self.peer, FakeReactor(), self.pool, threads=1)
        running = threaded.messageReceived(request(0), None)
        finish = self.pool.startCall()
        running.cancel()
        self.failureResultOf(running, CancelledError)
        following = threaded.messageReceived(request(1), None)
        self.assertEqual(self.pool.queue, [])
        finish()
        self.pool.run()
        self.assertEqual(self.peer.received, [request(0), request(1)])
        self.successResultOf(following)

    def test_errorAfterCancel(self):
        """
        An exception in a call that was cancelled while it ran is logged,
        since nobody is left to receive it.
        """
        threaded = ThreadedPeer(BlockingPeer(error=ZeroDivisionError()), FakeReactor(), self.pool)
        d = threaded.messageReceived(request(0), None)
        finish = self.pool.startCall()
        d.cancel()
        finish()
        self.failureResultOf(d, CancelledError)
        self.assertEqual(len(self.flushLoggedErrors(ZeroDivisionError)), 1)
