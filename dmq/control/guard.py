# -*- test-case-name: dmq.test.test_control -*-
"""
Where the control endpoint may listen without a token.

The endpoint changes the node list and sends on the bus, so whoever
reaches it owns the node.  L{controlBinding} reads a server endpoint
description and makes it safe by default: a TCP (or TLS) endpoint without
an C{interface} listens on loopback (C{127.0.0.1}, or C{::1} for C{tcp6}),
and a C{unix:} socket without a C{mode} is made C{0600}.  What then still
reaches beyond this host's own users (another interface, a socket open to
its group or others, an endpoint type whose address is not known here)
needs the bearer token of C{--control-token-file}: L{checkControl} says so.
"""

from __future__ import annotations

import ipaddress
from typing import Optional

import attr

__all__ = ["ControlBinding", "controlBinding", "checkControl"]


@attr.frozen
class ControlBinding:
    """
    A control endpoint description, made safe by default.

    @ivar description: the description to listen on.
    @ivar local: whether only this host's users can reach it: a loopback
        address, or a UNIX socket only its owner may open.
    @ivar where: what it listens on, for messages.
    """

    description: str
    local: bool
    where: str


class _NoReactor:
    """
    Stands for the reactor while a description is only parsed.
    """


def _hasArgument(description: str, name: str) -> bool:
    return any(part.startswith(name + "=") for part in description.split(":")[1:])


def controlBinding(description: str) -> ControlBinding:
    """
    Read C{description}, a Twisted server endpoint description, adding a
    loopback C{interface} to a TCP or TLS endpoint that has none and
    C{mode=600} to a UNIX socket that has none.

    @raise ValueError: if Twisted cannot parse it.
    """
    # Only a node that serves its control endpoint needs the parsers.
    from twisted.internet import endpoints

    try:
        endpoint = endpoints.serverFromString(_NoReactor(), description)
    except Exception as e:
        raise ValueError(f"{description!r} is not a Twisted server endpoint: {e}") from None
    port = getattr(endpoint, "_port", None)
    if isinstance(port, int) and not 0 <= port <= 65535:
        raise ValueError(f"{description!r}: port {port} is out of range")
    interface = getattr(endpoint, "_interface", None)
    if isinstance(interface, str):
        if not _hasArgument(description, "interface"):
            loopback = "\\:\\:1" if interface == "::" else "127.0.0.1"
            description += ":interface=" + loopback
            interface = "::1" if interface == "::" else "127.0.0.1"
        try:
            local = ipaddress.ip_address(interface).is_loopback
        except ValueError:
            # "" (every interface) or a name.
            local = False
        return ControlBinding(description, local, f"interface {interface or 'every interface'}")
    mode = getattr(endpoint, "_mode", None)
    address = getattr(endpoint, "_address", None)
    if isinstance(mode, int) and isinstance(address, str):
        if not _hasArgument(description, "mode"):
            description += ":mode=600"
            mode = 0o600
        return ControlBinding(description, not mode & 0o077, f"UNIX socket {address} (mode {mode:04o})")
    return ControlBinding(description, False, description.partition(":")[0] + " endpoint")


def checkControl(description: str, tokenFile: Optional[str]) -> ControlBinding:
    """
    L{controlBinding}, and refuse one that reaches beyond this host's own
    users without a token.

    @raise ValueError: saying why.
    """
    binding = controlBinding(description)
    if not binding.local and tokenFile is None:
        raise ValueError(
            f"{description!r} listens on {binding.where}, which others can reach: give "
            "--control-token-file, or listen on a loopback address or a unix: socket of mode 600"
        )
    return binding
