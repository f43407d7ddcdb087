# -*- test-case-name: dmq.test.test_htable -*-
"""
L{Receiver}: the htable messages from the bus, applied to the store and
answered as Kamailio answers them, or refused, counted and logged at most
once a minute per cause.  Their changes are labelled C{"replicated"} or
C{"sync"} and never sent on.

See C{doc/design-htable.md} for the whole design.
"""

from __future__ import annotations

from collections import Counter
from typing import Optional

from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from dmq import sip
from dmq.interfaces import OK, PeerResponse
from dmq.node import Node
from dmq.peers.htable.outbox import ReplicationRefused
from dmq.peers.htable.pattern import BadPattern, TooCostly
from dmq.peers.htable.spec import Value
from dmq.peers.htable.store import HTableStore, TableFull
from dmq.peers.htable.sync import SyncDumps
from dmq.peers.htable.wire import (
    MAX_BODY,
    BadCell,
    BadMessage,
    Cells,
    DeleteCell,
    Message,
    SetCell,
    SetExpire,
    SyncRequest,
    decode,
    encode,
)
from dmq.ratelimit import RateLimitedWarnings

__all__ = ["Receiver", "checkFits"]


class _Failed(Exception):
    """
    A message we answer C{500}, as Kamailio does when a replay fails; the
    first argument says why, the second is the reason phrase.
    """

    def __init__(self, detail: str, reason: str = "Server Internal Error") -> None:
        Exception.__init__(self, detail, reason)


# A bound on the octets of a set-cell body besides its table, key and string
# value: the keys and punctuation, or those and the longest int (65 and 74
# octets now).
_SET_OVERHEAD = 128


def checkFits(table: str, key: str, value: Value) -> None:
    """
    @raise ReplicationRefused: when a change setting the cell would not
        fit one datagram: we could not send it on, nor in a sync dump.
    """
    # Nearly every cell is far from the limit: no character takes more than
    # 6 octets in the body (\u001f, or 4 octets of UTF-8), so when that
    # bound fits, so does the body, without encoding it.
    text = len(table) + len(key) + (len(value) if isinstance(value, str) else 0)
    if _SET_OVERHEAD + 6 * text <= MAX_BODY:
        return
    size = len(encode(SetCell(table, key, value)))
    if size > MAX_BODY:
        raise ReplicationRefused(
            f"the request setting cell {key[:40]!r} would be {size} octets, "
            f"more than the {MAX_BODY} one datagram carries"
        )


class Receiver:
    """
    The bus side of an L{HTablePeer<dmq.peers.htable.peer.HTablePeer>}.
    """

    def __init__(
        self,
        clock: IReactorTime,
        store: HTableStore,
        dumps: SyncDumps,
        statistics: Counter[str],
        warnings: RateLimitedWarnings,
        log: Logger,
    ) -> None:
        """
        @param dumps: where sync requests go.
        @param statistics: the counter to count in.
        @param warnings: where warnings go, rate-limited.
        @param log: where the rest goes.
        """
        self._clock = clock
        self._store = store
        self._dumps = dumps
        self.statistics = statistics
        self._warnings = warnings
        self._log = log

    def messageReceived(self, request: sip.Request, node: Optional[Node]) -> PeerResponse:
        """
        Apply a change, a sync dump, or answer a sync request: C{200}.  A
        body L{decode} refuses is answered C{400} with its reason; a change
        to an unknown table, or a regular expression that is refused, C{500}
        as by Kamailio; a set past the table's cap C{503} (the table may
        have room later: Kamailio answers C{500} when it has no memory
        left); a cell too large for us to send on C{413}.  Each is counted
        and logged, at most once a minute per cause.
        """
        try:
            self._apply(decode(request.body), node)
        except BadMessage as e:
            return self._refused(
                request, node, "badMessages", 400, e.reason, e.detail or "not a JSON object"
            )
        except _Failed as e:
            return self._refused(request, node, "failedMessages", 500, e.args[1], e.args[0])
        except TableFull as e:
            return self._refused(request, node, "tableFull", 503, "Service Unavailable (table full)", str(e))
        except ReplicationRefused as e:
            return self._refused(
                request, node, "tooLarge", 413, "Request Entity Too Large (cell does not fit one datagram)", str(e)
            )
        return OK

    def _refused(
        self, request: sip.Request, node: Optional[Node], cause: str, code: int, reason: str, detail: str
    ) -> PeerResponse:
        self.statistics[cause] += 1
        self._warnings.warn(
            cause,
            "htable message from {sender} refused: {detail}; answered {code}",
            sender=node if node is not None else sip.fromURI(request),
            detail=detail,
            code=code,
            body=request.body[:200],
        )
        return PeerResponse(code, reason)

    def _apply(self, message: Message, node: Optional[Node]) -> None:
        """
        Apply a message from the bus: its changes are labelled
        C{"replicated"} or C{"sync"} and never sent on.

        @raise _Failed: for an unknown table or a pattern the store refuses.
        """
        if isinstance(message, Cells):
            self._receiveCells(message)
            return
        if isinstance(message, SyncRequest):
            self._dumps.request(node, message.table)
            return
        if message.table not in self._store:
            raise _Failed(f"no table {message.table!r}")
        if isinstance(message, SetCell):
            checkFits(message.table, message.key, message.value)
            self._store.set(message.table, message.key, message.value, "replicated")
        elif isinstance(message, SetExpire):
            # Kamailio ignores expiry changes to a table without autoexpire.
            if self._store.spec(message.table).autoexpire:
                self._store.setExpire(message.table, message.key, message.seconds)
        elif isinstance(message, DeleteCell):
            self._store.delete(message.table, message.key, "replicated")
        else:
            try:
                self._store.removeMatching(
                    message.table, message.how, message.pattern, message.mode, "replicated"
                )
            except BadPattern as e:
                self.statistics["patternsRefused"] += 1
                raise _Failed(str(e), "Server Internal Error (regular expression refused)") from None
            except TooCostly as e:
                self.statistics["patternsRefused"] += 1
                raise _Failed(str(e), "Server Internal Error (removal too costly)") from None
            except ValueError as e:
                raise _Failed(str(e)) from None

    def _receiveCells(self, message: Cells) -> None:
        now = int(self._clock.seconds())
        skipped = 0
        for cell in message.cells:
            # The causes of the rate limit are few: the details may name
            # what the sender chose.
            if isinstance(cell, BadCell):
                # wire's details of bad cells are fixed words.
                cause, detail = cell.detail, cell.detail
            elif cell.table not in self._store:
                cause, detail = "unknownTable", f"a cell of unknown table {cell.table[:40]!r}"
            else:
                # expire is absolute; when it is 0 or past, Kamailio gives
                # the cell the table's default expiry.
                expireAt = float(cell.expire) if cell.expire - now > 0 else None
                try:
                    checkFits(cell.table, cell.key, cell.value)
                    self._store.set(cell.table, cell.key, cell.value, "sync", expireAt)
                    continue
                except TableFull as e:
                    cause, detail = "tableFull", str(e)
                except ReplicationRefused as e:
                    cause, detail = "tooLarge", str(e)
            skipped += 1
            self.statistics["skippedCells"] += 1
            self._warnings.warn(
                f"skippedCell:{cause}", "Skipped a synced htable cell: {detail}", detail=detail
            )
        self._log.debug(
            "Applied {count} synced htable cells",
            count=len(message.cells) - skipped,
            skipped=skipped,
        )
