"""
The C{twistd agilerpc} plugin: command-line options and the service they
make.

    twistd -n agilerpc --port 9988 --keepalive 75 --module yourpkg.handlers
"""

from __future__ import annotations

import importlib
from typing import Any, ClassVar

from twisted.application.service import IService
from twisted.internet import endpoints
from twisted.internet.interfaces import IStreamServerEndpoint
from twisted.logger import Logger
from twisted.python import usage

from ._registry import Registry
from ._server import RpcServerFactory
from ._service import RpcService
from ._wire import DEFAULT_MAX_MESSAGE_SIZE

DEFAULT_MODULE = "agilerpc.examples.hello"

_log = Logger(namespace="agilerpc.tap")


def _number(
    kind: type, name: str, value: Any, minimum: float, allowZero: bool = True
) -> Any:
    try:
        number = kind(value)
    except (TypeError, ValueError):
        raise usage.UsageError(f"--{name} must be a number, not {value!r}") from None
    if number != number or number < minimum or (not allowZero and number == 0):
        bound = f"> {minimum}" if not allowZero else f">= {minimum}"
        raise usage.UsageError(f"--{name} must be {bound}, not {value!r}")
    return number


class Options(usage.Options):
    """
    Options of C{twistd agilerpc}.
    """

    synopsis = "[options]"
    longdesc = (
        "Serve the RPC handlers of one or more Python modules over the agilerpc "
        "protocol (msgpack in length-prefixed frames).  Functions marked with "
        "@agilerpc.rpc in each --module are served; without --module the "
        f"examples in {DEFAULT_MODULE} are."
    )

    optParameters: ClassVar[list[list[Any]]] = [
        ["port", "p", 9988, "TCP port to listen on (ignored when --listen is given)."],
        ["interface", "i", "", "Interface to listen on (default: all)."],
        ["keepalive", "k", 75.0, "Seconds a connection may stay idle; 0 disables."],
        [
            "max-message-size",
            None,
            DEFAULT_MAX_MESSAGE_SIZE,
            "Largest message accepted or sent, in bytes.",
        ],
        [
            "shutdown-grace",
            None,
            10.0,
            "Seconds dispatched calls get to finish when the server stops.",
        ],
    ]
    optFlags: ClassVar[list[list[Any]]] = [
        [
            "debug",
            None,
            "Send tracebacks of failed calls to callers (development only).",
        ],
    ]

    def __init__(self) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self["listen"] = []
        self["module"] = []

    def opt_listen(self, description: str) -> None:
        """
        Listen on a strports endpoint, e.g. tcp:9988:interface=127.0.0.1,
        unix:/run/agilerpc.sock or ssl:...; repeatable; overrides --port.
        """
        self["listen"].append(description)

    def opt_module(self, name: str) -> None:
        """
        Serve the @rpc functions of this module (dotted name); repeatable.
        """
        self["module"].append(name)

    def postOptions(self) -> None:
        self["port"] = _number(int, "port", self["port"], 0)
        if self["port"] > 65535:
            raise usage.UsageError(f"--port must be <= 65535, not {self['port']}")
        self["keepalive"] = _number(float, "keepalive", self["keepalive"], 0)
        self["max-message-size"] = _number(
            int, "max-message-size", self["max-message-size"], 0, allowZero=False
        )
        self["shutdown-grace"] = _number(
            float, "shutdown-grace", self["shutdown-grace"], 0
        )
        # The same module named twice is served once.
        modules = list(dict.fromkeys(self["module"])) or [DEFAULT_MODULE]
        registry = Registry()
        for name in modules:
            try:
                module = importlib.import_module(name)
            except Exception as e:
                raise usage.UsageError(
                    f"--module {name}: cannot import it: {e}"
                ) from None
            try:
                count = registry.addModule(module)
            except ValueError as e:
                raise usage.UsageError(f"--module {name}: {e}") from None
            if not count:
                raise usage.UsageError(
                    f"--module {name}: it has no functions marked with @agilerpc.rpc"
                )
        self["registry"] = registry
        if not self["listen"]:
            listen = f"tcp:{self['port']}"
            if self["interface"]:
                listen += ":interface=" + self["interface"].replace(":", r"\:")
            self["listen"] = [listen]
        for description in self["listen"]:
            # Parsing needs no reactor (endpoints only keep it for later), so
            # a bad description is a usage error now rather than a traceback
            # once twistd is running.
            _endpoint(None, description)


def _endpoint(reactor: Any, description: str) -> IStreamServerEndpoint:
    try:
        endpoint: IStreamServerEndpoint = endpoints.serverFromString(
            reactor, description
        )
    except Exception as e:
        raise usage.UsageError(f"--listen {description}: {e}") from None
    return endpoint


def makeService(config: Options, reactor: Any = None) -> IService:
    """
    The service C{config} describes; C{reactor} defaults to the global one.
    """
    if reactor is None:
        from twisted.internet import reactor as globalReactor

        reactor = globalReactor
    factory = RpcServerFactory(
        config["registry"],
        reactor,
        keepalive=config["keepalive"],
        maxMessageSize=config["max-message-size"],
        debug=bool(config["debug"]),
    )
    serverEndpoints = [_endpoint(reactor, d) for d in config["listen"]]
    _log.info(
        "agilerpc serving {methods} on {listen} (keepalive {keepalive}s)",
        methods=", ".join(config["registry"].names()),
        listen=", ".join(config["listen"]),
        keepalive=config["keepalive"],
    )
    return RpcService(factory, serverEndpoints, config["shutdown-grace"])
