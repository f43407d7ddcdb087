# -*- test-case-name: dmq.test.test_htable_wire -*-
"""
L{BadMessage}: what the wire modules of the shipped peers (htable, usrloc,
dialog) raise for a body they answer C{400}.
"""

from __future__ import annotations

from typing import Optional

__all__ = ["BadMessage"]


class BadMessage(Exception):
    """
    A body we answer C{400}.

    @ivar detail: what is wrong, for the reason phrase; C{None} when the
        body is not a JSON object at all.
    """

    def __init__(self, detail: Optional[str] = None) -> None:
        Exception.__init__(self, detail)
        self.detail = detail

    @property
    def reason(self) -> str:
        """
        The reason phrase of the C{400}: C{"Bad Request (detail)"}.
        """
        return f"Bad Request ({self.detail})" if self.detail else "Bad Request"
