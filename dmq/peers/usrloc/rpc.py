# -*- test-case-name: dmq.test.test_usrloc_peer -*-
"""
Kamailio's C{ul.dump} and C{ul.lookup} RPC commands over a L{UsrlocPeer},
for the control endpoint, with the shapes Kamailio 5.6's usrloc gives them.

See C{doc/peers.md} (usrloc) for the whole design.
"""

from __future__ import annotations

from typing import Any, Callable, Dict, List, Optional, Tuple, Union

from twisted.internet.interfaces import IReactorTime

from dmq.interfaces import RPCError
from dmq.peers.usrloc.contact import HASH_SIZE, Q_UNSPECIFIED, Contact
from dmq.peers.usrloc.peer import UsrlocPeer

__all__ = ["DOMAIN", "UsrlocRPC", "RPCError"]

#: The one usrloc domain (table) served, Kamailio's C{usrloc_domain}.
DOMAIN = "location"

_NOT_SET = "[not set]"


def _q(q: int) -> Union[int, float]:
    if q == Q_UNSPECIFIED:
        return -1
    value = q / 1000
    return int(value) if value.is_integer() else value


class UsrlocRPC:
    """
    Kamailio's usrloc RPC commands that read, with its names, parameters,
    results and faults, over a L{UsrlocPeer}.  Each method takes the
    positional parameters of the call and returns a JSON-able result or
    raises L{RPCError}; L{methods} maps the RPC names to them.
    """

    def __init__(self, peer: UsrlocPeer, clock: IReactorTime, domain: str = DOMAIN) -> None:
        """
        @param clock: the clock the peer runs on, for the remaining seconds
            C{Expires} shows.
        @param domain: the name of the one table served.
        """
        self._peer = peer
        self._clock = clock
        self._domain = domain

    def methods(self) -> Dict[str, Callable[..., object]]:
        """
        @return: C{{"ul.dump": self.dump, "ul.lookup": self.lookup}}, to
            register on an RPC server.
        """
        return {"ul.dump": self.dump, "ul.lookup": self.lookup}

    def dump(self, *params: object) -> Dict[str, Any]:
        """
        C{ul.dump [brief]}: C{{"Domains": [{"Domain": {"Domain", "Size",
        "AoRs", "Stats": {"Records", "Max-Slots"}}}]}}; each AoR is
        C{{"Info": {"AoR", "HashID", "Contacts": [{"Contact": {...}}]}}},
        or C{{"AoR": aor}} with C{brief}.  Expired contacts not purged yet
        are there, as C{"Expires": "expired"}.
        """
        brief = bool(params) and params[0] == "brief"
        now = int(self._clock.seconds())
        aors: List[Dict[str, object]] = []
        perSlot: Dict[int, int] = {}
        for aor, aorHash, contacts in self._peer.records():
            slot = aorHash & (HASH_SIZE - 1)
            perSlot[slot] = perSlot.get(slot, 0) + 1
            if brief:
                aors.append({"AoR": aor})
            else:
                aors.append(
                    {
                        "Info": {
                            "AoR": aor,
                            "HashID": aorHash,
                            "Contacts": [{"Contact": self._contact(c, now)} for c in contacts],
                        }
                    }
                )
        domain = {
            "Domain": self._domain,
            "Size": HASH_SIZE,
            "AoRs": aors,
            "Stats": {"Records": len(aors), "Max-Slots": max(perSlot.values(), default=0)},
        }
        return {"Domains": [{"Domain": domain}]}

    def lookup(self, *params: object) -> Dict[str, Any]:
        """
        C{ul.lookup table aor}: C{{"AoR", "Contacts": [{"Contact":
        {...}}]}} with the live contacts.  The AoR is looked up as given,
        then as Kamailio's default registrar stores it: without its
        C{@domain}, in lower case.
        """
        texts = [p for p in params[:2] if isinstance(p, str)]
        if len(texts) < 2:
            raise RPCError(500, "Not enough parameters (table and AOR to lookup)")
        table, aor = texts
        if table != self._domain:
            raise RPCError(500, "Domain table not found")
        found = self._find(aor)
        if found is None:
            raise RPCError(500, "AOR not found in location table")
        aor, contacts = found
        if not contacts:
            raise RPCError(500, "AOR has no contacts")
        now = int(self._clock.seconds())
        return {"AoR": aor, "Contacts": [{"Contact": self._contact(c, now)} for c in contacts]}

    def _find(self, aor: str) -> Optional[Tuple[str, List[Contact]]]:
        for candidate in (aor, aor.partition("@")[0].lower()):
            if self._peer.hasAoR(candidate):
                return candidate, self._peer.lookup(candidate)
        return None

    def _contact(self, contact: Contact, now: int) -> Dict[str, object]:
        expires: Union[str, int]
        if contact.expires == 0:
            expires = "permanent"
        elif now > contact.expires:
            expires = "expired"
        else:
            expires = contact.expires - now
        return {
            "Address": contact.uri,
            "Expires": expires,
            "Q": _q(contact.q),
            "Call-ID": contact.callID,
            "CSeq": contact.cseq,
            "User-Agent": contact.userAgent or _NOT_SET,
            "Received": contact.received or _NOT_SET,
            "Path": contact.path or _NOT_SET,
            "State": "CS_NEW",
            "Flags": contact.flags,
            "CFlags": contact.cflags,
            "Socket": contact.socket or _NOT_SET,
            "Methods": contact.methods,
            "Ruid": contact.ruid,
            "Instance": contact.instance or _NOT_SET,
            "Reg-Id": contact.regID,
            "Server-Id": contact.serverID,
            "Tcpconn-Id": -1,
            "Keepalive": 0,
            "Last-Keepalive": contact.lastModified,
            "KA-Roundtrip": 0,
            "Last-Modified": contact.lastModified,
        }
