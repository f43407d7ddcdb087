# -*- test-case-name: dmq.test.test_tap -*-
"""
The twistd wiring: L{Options}, the settings of L{dmq.config} as command line
options and a TOML file (C{--config}), and L{makeService}, which builds one
node with its control endpoint and peers.

The node itself is L{dmq.service}'s: L{makeNodeService} is the same wiring
for programs that embed a node instead of running it under twistd (they give
it a L{NodeConfig}); this module re-exports it with the names such programs
need.
"""

from __future__ import annotations

import os
import sys
import textwrap
from typing import Any, Callable, Dict, List, Optional, Tuple

from twisted.python import usage

from dmq import __version__
from dmq.config import PARAMETERS, NodeConfig, Parameter, parseSettings, readConfigFile
from dmq.config import ServerSocket, loadPeer, parseServerAddress, parseServerSocket  # re-exported
from dmq.node import parseNodeAddress  # re-exported
from dmq.service import DMQNodeService, _ControlError, _PeerError, makeNodeService  # re-exported

__all__ = [
    "Options", "makeService", "makeNodeService", "DMQNodeService",
    # From dmq.config and dmq.node, for programs that embed a node.
    "NodeConfig", "ServerSocket", "parseServerAddress", "parseNodeAddress", "parseServerSocket", "loadPeer",
]

class Options(usage.Options):
    """
    C{twistd dmq} options.  Each long name is a Kamailio DMQ module parameter
    with C{-} for C{_}; C{--config FILE} reads them from a TOML file with
    Kamailio's names as keys, and the command line overrides the file (a
    repeatable option given on the command line replaces the file's list).

    After parsing, C{nodeConfig} is the L{NodeConfig}, and each option also
    holds its value: C{server-address} and C{notification-address}
    L{sip.URI}s, C{server-socket} a L{ServerSocket} or C{None},
    C{bind-address} the C{(host, port)} to bind, numbers and booleans as
    such, C{control} an endpoint description or C{None}, C{peer} a list of
    C{(name, object)} from L{loadPeer}.  A repeatable option is a list.

    @ivar nodeConfig: the L{NodeConfig}, once parsed.
    """

    synopsis = "[options]"
    # Printed by getUsage, wrapped without breaking an option or an example.
    longdesc = ""
    _description = (
        "Run a DMQ node: a member of a Kamailio-compatible KDMQ bus. "
        "Option names follow Kamailio's dmq module parameters; a boolean is a "
        "flag (--remove-inactive, --no-remove-inactive), and 0 or 1 (or false or true) "
        "in a --config file. Example: twistd -n dmq --server-address sip:127.0.0.11:5060 "
        "--notification-address sip:127.0.0.12:5060 --htable 'kdmq=>size=8;autoexpire=0;dmqreplicate=1'"
    )

    optParameters = [
        [parameter.option, parameter.short, None, parameter.describe()]
        for parameter in PARAMETERS
        if not parameter.repeatable and not parameter.flag
    ] + [
        [
            "config",
            None,
            None,
            "A TOML file of parameters by their Kamailio names (server_address = \"sip:...\", "
            "notification_address = [...], ...); the command line overrides it.",
        ]
    ]

    optFlags = [
        flag
        for parameter in PARAMETERS
        if parameter.flag
        for flag in (
            [parameter.option, parameter.short, parameter.describe()],
            [parameter.negation, None, f"Turn --{parameter.option} off" + (" (the default)." if parameter.default is False else "")],
        )
    ]

    def __init__(self) -> None:
        usage.Options.__init__(self)
        self._repeated: Dict[str, List[str]] = {
            parameter.name: [] for parameter in PARAMETERS if parameter.repeatable
        }
        self.nodeConfig: NodeConfig

    def getUsage(self, width: Optional[int] = None) -> str:
        """
        The options' help, then the description, wrapped between words only
        (Twisted's wrapping would break C{--no-remove-inactive} at a hyphen).
        """
        if not width:
            width = int(os.environ.get("COLUMNS", "80"))
        wrapped = textwrap.wrap(self._description, width, break_long_words=False, break_on_hyphens=False)
        return usage.Options.getUsage(self, width) + "\n" + "\n".join(wrapped) + "\n"

    def opt_version(self) -> None:
        """
        Display dmq's version and exit.
        """
        print(f"dmq {__version__}")
        sys.exit(0)

    def parseOptions(self, options: Optional[List[str]] = None) -> None:
        """
        Parse C{options} (by default the process's arguments), refusing a
        value given to a boolean flag (C{--remove-inactive=0}, as before
        booleans were flags) with the flag to use instead.
        """
        if options is None:
            options = sys.argv[1:]
        _refuseFlagValues(options)
        usage.Options.parseOptions(self, options)

    def postOptions(self) -> None:
        given: Dict[str, Tuple[str, Any]] = {}
        if self["config"] is not None:
            given.update(readConfigFile(self["config"]))
        for parameter in PARAMETERS:
            where = f"--{parameter.option}"
            if parameter.repeatable:
                if self._repeated[parameter.name]:
                    given[parameter.name] = (where, self._repeated[parameter.name])
            elif parameter.flag:
                if self[parameter.option] and self[parameter.negation]:
                    raise usage.UsageError(f"--{parameter.option} and --{parameter.negation}: give one of them")
                if self[parameter.option]:
                    given[parameter.name] = (where, "1")
                elif self[parameter.negation]:
                    given[parameter.name] = (f"--{parameter.negation}", "0")
            elif self[parameter.option] is not None:
                given[parameter.name] = (where, self[parameter.option])
        self.nodeConfig = parseSettings(given)
        for parameter in PARAMETERS:
            value = getattr(self.nodeConfig, parameter.field)
            self[parameter.option] = list(value) if parameter.repeatable else value
        self["bind-address"] = self.nodeConfig.bindAddress


_FLAG_VALUES = {"0", "1", "true", "false", "yes", "no", "on", "off"}


def _refuseFlagValues(arguments: List[str]) -> None:
    """
    Refuse a boolean flag given a value, C{--remove-inactive=0} or
    C{--remove-inactive 0}, naming the flag that says it.

    @raise usage.UsageError: for the first such flag.
    """
    flags: Dict[str, Parameter] = {}
    for known in PARAMETERS:
        if known.flag:
            flags[known.option] = known
            flags[known.negation] = known
    for i, argument in enumerate(arguments):
        if argument == "--":
            return
        if not argument.startswith("--"):
            continue
        name, equals, value = argument[2:].partition("=")
        parameter = flags.get(name)
        if parameter is None:
            continue
        if not equals:
            following = arguments[i + 1] if i + 1 < len(arguments) else ""
            if following.lower() not in _FLAG_VALUES:
                continue
            value = following
        given = argument if equals else f"{argument} {value}"
        raise usage.UsageError(
            f"{given}: booleans are flags without a value now: --{parameter.option} "
            f"or --{parameter.negation} ({parameter.name} = 0 or 1 in a --config file)"
        )


def _collector(name: str, help: str) -> Callable[[Options, str], None]:
    def collect(self: Options, value: str) -> None:
        self._repeated[name].append(value)

    # The help usage shows.
    collect.__doc__ = help
    return collect


def _addRepeatableOptions() -> None:
    """
    Give L{Options} an C{opt_} method, under the long and the short name,
    for each repeatable setting: it collects every value given.
    """
    for parameter in PARAMETERS:
        if parameter.repeatable:
            collect = _collector(parameter.name, parameter.help)
            setattr(Options, f"opt_{parameter.name}", collect)
            if parameter.short is not None:
                setattr(Options, f"opt_{parameter.short}", collect)


_addRepeatableOptions()


def makeService(config: Options, reactor: Any = None) -> DMQNodeService:
    """
    Build the twistd service from parsed L{Options}: the node, then its
    peers (a factory named by C{--peer} is called with the node service and
    must return an L{IDMQPeer} provider), then the control endpoint.

    @raise usage.UsageError: when a C{--peer} factory fails, makes something
        that is not a peer, or a peer whose id is taken.
    """
    if reactor is None:
        from twisted.internet import reactor
    try:
        return makeNodeService(reactor, config.nodeConfig)
    except _PeerError as e:
        raise usage.UsageError(f"--peer: {e}") from None
    except _ControlError as e:
        raise usage.UsageError(f"--control: {e}") from None
