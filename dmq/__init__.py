# -*- test-case-name: dmq.test -*-
"""
dmq: a distributed message queue for Twisted programs, wire-compatible with
Kamailio's DMQ module.

Implement L{dmq.interfaces.IDMQPeer} to receive the messages of a channel,
and call L{dmq.interfaces.IDMQBus} to send them.
"""

from dmq._version import __version__

__all__ = ["__version__"]
