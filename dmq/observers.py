# -*- test-case-name: dmq.test.test_observers -*-
"""
A list of observers, each told in turn; one that raises is logged and the
others are still told.  The node manager tells its L{INodeObserver}s of
nodes coming and going through one, the bus's sender its outcome observers.
"""

from __future__ import annotations

from typing import Callable, Generic, List, TypeVar

from twisted.logger import Logger

__all__ = ["Observers"]

T = TypeVar("T")


class Observers(Generic[T]):
    """
    Observers of one kind, in the order they were added.

    @ivar what: what they observe, for the log.
    """

    _log = Logger()

    def __init__(self, what: str) -> None:
        self.what = what
        self._observers: List[T] = []

    def __len__(self) -> int:
        return len(self._observers)

    def add(self, observer: T) -> None:
        """
        Tell C{observer} from now on.
        """
        self._observers.append(observer)

    def remove(self, observer: T) -> None:
        """
        Stop telling C{observer}.

        @raise ValueError: if it was not added.
        """
        self._observers.remove(observer)

    def tell(self, call: Callable[[T], object], about: object) -> None:
        """
        Call C{call} with each observer, those added or removed meanwhile
        aside.  A failure is logged, with the observer and C{about}, and the
        next observer is told.

        @param about: what the observers are told of, for the log.
        """
        for observer in list(self._observers):
            try:
                call(observer)
            except Exception:
                self._log.failure(
                    "{what} observer {observer} failed on {about}",
                    what=self.what,
                    observer=observer,
                    about=about,
                )
