# -*- test-case-name: dmq.test.test_dialog -*-
"""
Kamailio's dialog RPC commands that read (C{dlg.list}, C{dlg.dlg_list},
C{dlg.stats_active}, C{dlg.profile_get_size}, C{dlg.profile_list}) over a
L{DialogPeer}, for the control endpoint.

See C{doc/peers.md} (dialog) for the whole design.
"""

from __future__ import annotations

from typing import Callable, Dict, List, Optional, Sequence

from twisted.internet.interfaces import IReactorTime

from dmq.interfaces import RPCError
from dmq.peers.dialog.peer import DialogPeer
from dmq.peers.dialog.store import Dialog
from dmq.peers.dialog.wire import DialogState, Leg

__all__ = ["DialogRPC", "RPCError"]

# Kamailio's DLG_IFLAG_DMQ_SYNC: how its own replicas show in dlg.list.
IFLAG_DMQ_SYNC = 64


def _leg(leg: Optional[Leg]) -> Dict[str, object]:
    if leg is None:
        return dict.fromkeys(("tag", "contact", "cseq", "route_set", "socket"))
    return {
        "tag": leg.tag,
        "contact": leg.contact,
        "cseq": leg.cseq,
        "route_set": leg.routeSet,
        "socket": None,
    }


class DialogRPC:
    """
    Kamailio's reading dialog RPC commands, with its names, parameters and
    results, over a L{DialogPeer}.  Each method takes the positional
    parameters of the call and returns a JSON-able result or raises
    L{RPCError}; L{methods} maps the RPC names to them.
    """

    def __init__(self, peer: DialogPeer, clock: IReactorTime) -> None:
        self._peer = peer
        self._clock = clock

    def methods(self) -> Dict[str, Callable[..., object]]:
        """
        @return: C{{"dlg.list": self.list, ...}}, to register on an RPC
            server.
        """
        return {
            "dlg.list": self.list,
            "dlg.list_ctx": self.list,
            "dlg.dlg_list": self.dlgList,
            "dlg.dlg_list_ctx": self.dlgList,
            "dlg.stats_active": self.statsActive,
            "dlg.profile_get_size": self.profileGetSize,
            "dlg.profile_list": self.profileList,
        }

    def describe(self, dialog: Dialog) -> Dict[str, object]:
        """
        One dialog as Kamailio 5.6's C{dlg.list} prints it.  What only the
        owning node knows is printed as a replica of Kamailio prints it:
        C{ref} 1, no flags but C{iflags} 64 (synced over DMQ), no sockets.
        C{end_ts} is when we learnt of the dialog's end, and C{timeout}
        when we will drop it (0 unless it is answered).
        """
        now = int(self._clock.seconds())
        duration = 0
        if dialog.startTS:
            duration = max(0, (dialog.endTS or now) - dialog.startTS)
        timeout = 0
        if dialog.state in (DialogState.CONFIRMED_NA, DialogState.CONFIRMED):
            expiresAt = self._peer.expiresAt(dialog.id.hEntry, dialog.id.hId)
            timeout = int(expiresAt) if expiresAt is not None else 0
        return {
            "h_entry": dialog.id.hEntry,
            "h_id": dialog.id.hId,
            "ref": 1,
            "call-id": dialog.callID,
            "from_uri": dialog.fromURI,
            "to_uri": dialog.toURI,
            "state": int(dialog.state),
            "start_ts": dialog.startTS,
            "init_ts": dialog.initTS,
            "end_ts": dialog.endTS,
            "duration": duration,
            "timeout": timeout,
            "lifetime": dialog.lifetime,
            "dflags": 0,
            "sflags": 0,
            "iflags": IFLAG_DMQ_SYNC,
            "caller": _leg(dialog.caller),
            "callee": _leg(dialog.callee),
            "profiles": [
                profile.name if profile.value is None else {profile.name: profile.value}
                for profile in dialog.profiles
            ],
            "variables": [{name: value} for name, value in dialog.variables],
        }

    def list(self, *params: object) -> List[Dict[str, object]]:
        """
        C{dlg.list}: every dialog (deleted ones until removed), by
        C{h_entry}; extra parameters are ignored, as by Kamailio.
        """
        return [self.describe(dialog) for dialog in self._peer.dialogs()]

    def _texts(self, params: Sequence[object], least: int, most: int, usage: str) -> List[str]:
        if not least <= len(params) <= most or not all(isinstance(p, str) for p in params):
            raise RPCError(400, f"Invalid parameters: {usage}")
        return list(params)  # type: ignore[arg-type]

    def dlgList(self, *params: object) -> object:
        """
        C{dlg.dlg_list callid [from_tag]}: the dialogs of that Call-ID (and
        caller's tag): the one dialog, or a list when several match, or
        C{{}} when none does, as Kamailio answers.
        """
        texts = self._texts(params, 1, 2, "call-id [from-tag]")
        found = [self.describe(dialog) for dialog in self._peer.find(*texts)]
        if not found:
            return {}
        return found[0] if len(found) == 1 else found

    def statsActive(self, *params: object) -> Dict[str, int]:
        """
        C{dlg.stats_active}: how many dialogs are in each state but deleted.
        """
        counts = dict.fromkeys(DialogState, 0)
        for dialog in self._peer.dialogs():
            counts[dialog.state] += 1
        result = {
            "starting": counts[DialogState.UNCONFIRMED],
            "connecting": counts[DialogState.EARLY],
            "answering": counts[DialogState.CONFIRMED_NA],
            "ongoing": counts[DialogState.CONFIRMED],
        }
        result["all"] = sum(result.values())
        return result

    def _inProfile(self, params: Sequence[object]) -> List[Dialog]:
        texts = self._texts(params, 1, 2, "profile [value]")
        name, value = texts[0], (texts[1] if len(texts) > 1 else None)
        return [
            dialog
            for dialog in self._peer.dialogs()
            if any(
                p.name == name and (value is None or p.value == value) for p in dialog.profiles
            )
        ]

    def profileGetSize(self, *params: object) -> int:
        """
        C{dlg.profile_get_size profile [value]}: how many dialogs are in the
        profile (with that value).  A profile no dialog is in counts 0: we
        cannot know which profiles the Kamailio nodes declare.
        """
        return len(self._inProfile(params))

    def profileList(self, *params: object) -> List[Dict[str, object]]:
        """
        C{dlg.profile_list profile [value]}: the dialogs in the profile
        (with that value).
        """
        return [self.describe(dialog) for dialog in self._inProfile(params)]
