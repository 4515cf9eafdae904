"""
The C{twistd agilerpc} plugin: command-line options and the service they
make::

    twistd -n agilerpc --port 9988 --keepalive 75 --module yourpkg.handlers

TLS comes two ways: an C{ssl:} strports description per listener
(C{--listen ssl:9988:privateKey=key.pem:certKey=cert.pem}), or
C{--tls-cert}/C{--tls-key}, which serve TLS on every listener and are the
only way to require client certificates (C{--tls-client-ca}: mutual TLS).
"""

from __future__ import annotations

import importlib
import sys
from typing import TYPE_CHECKING, Any, ClassVar

from twisted.application.service import IService, MultiService
from twisted.internet import endpoints
from twisted.internet.interfaces import IStreamServerEndpoint
from twisted.logger import Logger
from twisted.python import usage

from ._observers import CallLog, IServerObserver
from ._registry import Registry
from ._server import (
    DEFAULT_FRAME_TIMEOUT,
    DEFAULT_MAX_INPUT_TOTAL,
    DEFAULT_MAX_UNSENT,
    DEFAULT_MAX_UNSENT_TOTAL,
    RpcServerFactory,
)
from ._service import RpcService
from ._tlsoptions import readFile, serverTLSOptions
from ._wire import (
    DEFAULT_MAX_CONTAINERS,
    DEFAULT_MAX_MESSAGE_SIZE,
    DEFAULT_MAX_METADATA_SIZE,
    MAX_DEADLINE,
)

if TYPE_CHECKING:
    from ._workers import WorkerSupervisor
    from .metrics import ServerMetrics

__all__ = ["DEFAULT_MODULE", "Options", "makeService"]

#: The handlers module served when no C{--module} is given: the examples.
DEFAULT_MODULE = "agilerpc.examples.hello"
_DEFAULT_BACKLOG = 1024

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
        [
            "max-in-flight",
            None,
            1000,
            "Calls one connection may have outstanding; past it the server "
            "stops reading that connection until some finish.",
        ],
        [
            "frame-timeout",
            None,
            DEFAULT_FRAME_TIMEOUT,
            "Seconds a frame may take to arrive once it has started, whatever "
            "else the connection does; then the connection ends with a "
            "FrameTimeout goaway (0 disables).",
        ],
        [
            "max-input-total",
            None,
            DEFAULT_MAX_INPUT_TOTAL,
            "Bytes of unfinished frames all connections (of one process) may "
            "hold together; past it the connections holding the most get a "
            "ServerBusy goaway (0: no limit; else at least --max-message-size "
            "+ 4).",
        ],
        [
            "max-containers",
            None,
            DEFAULT_MAX_CONTAINERS,
            "Arrays and maps one request may hold (its own array included); "
            "more is refused with InvalidRequest before they are built "
            "(0: no limit).",
        ],
        [
            "max-unsent",
            None,
            DEFAULT_MAX_UNSENT,
            "Bytes of responses one connection may hold that its client has "
            "not read; past it the connection is aborted (0: no limit; else "
            "at least --max-message-size).",
        ],
        [
            "max-unsent-total",
            None,
            DEFAULT_MAX_UNSENT_TOTAL,
            "Bytes of responses all connections may hold that their clients "
            "have not read; past it the connections holding the most are "
            "aborted (0: no limit; else at least --max-message-size).",
        ],
        [
            "max-call-time",
            None,
            0,
            "Seconds a call may run when its caller set no deadline, and the "
            "longest deadline a caller may set; past it the call is cancelled "
            "and answered DeadlineExceeded (0: no limit).",
        ],
        [
            "max-metadata-size",
            None,
            DEFAULT_MAX_METADATA_SIZE,
            "Bytes of keys and values one call's metadata may hold; more is "
            "refused with InvalidRequest.",
        ],
        [
            "max-connections",
            None,
            0,
            "Open connections allowed; more get a ServerBusy goaway (0: no limit).",
        ],
        [
            "auth-token-file",
            None,
            None,
            "Require clients to send the token in this file (surrounding "
            "whitespace stripped) before anything else.  Without TLS it crosses "
            "the network in the clear.",
        ],
        [
            "tls-cert",
            None,
            None,
            "Serve TLS on every listener with this PEM certificate (followed by "
            "any intermediate certificates); needs --tls-key.",
        ],
        ["tls-key", None, None, "The PEM private key of --tls-cert."],
        [
            "metrics-port",
            None,
            None,
            "Serve Prometheus metrics over HTTP at /metrics on this TCP port "
            "(needs pip install 'agilerpc[metrics]'); with --workers, the "
            "totals of every process.",
        ],
        [
            "metrics-interface",
            None,
            None,
            "Interface of --metrics-port (default: the one of --interface).",
        ],
        [
            "workers",
            None,
            1,
            "Processes serving the listeners (default 1): this one and N-1 "
            "workers that share its sockets, restarted when they die.",
        ],
        [
            "tls-client-ca",
            None,
            None,
            "Mutual TLS: require every client to present a certificate signed "
            "by a CA in this PEM file; needs --tls-cert.",
        ],
    ]
    optFlags: ClassVar[list[list[Any]]] = [
        [
            "debug",
            None,
            "Send tracebacks of failed calls to callers (development only).",
        ],
        [
            "log-calls",
            None,
            "Log every call (peer, method, msgid, outcome, duration) at debug level.",
        ],
        [
            "otel",
            None,
            "Run every call in an OpenTelemetry span, continuing the trace its "
            "caller sent, through the global tracer provider (needs pip install "
            "'agilerpc[otel]'; set up the SDK and its exporter with "
            "opentelemetry-instrument or in a --module).",
        ],
    ]

    def __init__(self) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self["listen"] = []
        self["module"] = []

    def parseOptions(self, options: list[str] | None = None) -> None:
        # Keep the command line: --workers starts workers with the same one.
        self["argv"] = list(sys.argv[1:] if options is None else options)
        try:
            super().parseOptions(options)  # type: ignore[no-untyped-call]
        except usage.UsageError as e:
            if self.parent is None:
                raise
            # twistd before 26.10 prints a usage error and exits 0, which
            # systemd and container runtimes take for a start: print what
            # twistd prints and exit 1, as it does since.
            print(self.parent)
            print(f"{' '.join(sys.argv[0:2])}: {e}")
            raise SystemExit(1) from None

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
        self["max-in-flight"] = _number(int, "max-in-flight", self["max-in-flight"], 1)
        self["max-connections"] = _number(
            int, "max-connections", self["max-connections"], 0
        )
        self["max-containers"] = _number(
            int, "max-containers", self["max-containers"], 0
        )
        self["frame-timeout"] = _number(
            float, "frame-timeout", self["frame-timeout"], 0
        )
        self["max-call-time"] = _number(
            float, "max-call-time", self["max-call-time"], 0
        )
        if self["max-call-time"] > MAX_DEADLINE:
            raise usage.UsageError(
                f"--max-call-time must be at most {MAX_DEADLINE:.0f} (a year), "
                f"not {self['max-call-time']}"
            )
        self["max-metadata-size"] = _number(
            int, "max-metadata-size", self["max-metadata-size"], 0
        )
        for name in ("max-unsent", "max-unsent-total"):
            self[name] = _number(int, name, self[name], 0)
            if 0 < self[name] < self["max-message-size"]:
                raise usage.UsageError(
                    f"--{name} must be 0 or >= --max-message-size "
                    f"({self['max-message-size']}), not {self[name]}"
                )
        self["max-input-total"] = _number(
            int, "max-input-total", self["max-input-total"], 0
        )
        smallest = self["max-message-size"] + 4
        if 0 < self["max-input-total"] < smallest:
            raise usage.UsageError(
                "--max-input-total must be 0 or hold a frame of --max-message-size "
                f"(at least {smallest}), not {self['max-input-total']}"
            )
        self["workers"] = _number(int, "workers", self["workers"], 1)
        self["metrics"] = self._metrics()
        if self["otel"]:
            try:
                import opentelemetry.trace  # noqa: F401
            except ImportError:
                raise usage.UsageError(
                    "--otel needs opentelemetry-api: pip install 'agilerpc[otel]'"
                ) from None
        self["auth-token"] = (
            None
            if self["auth-token-file"] is None
            else _readToken(self["auth-token-file"])
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
            # Twisted's default backlog of 50 drops connections in a burst
            # (bench/NOTES.md); the kernel caps it at net.core.somaxconn.
            listen = f"tcp:{self['port']}:backlog={_DEFAULT_BACKLOG}"
            if self["interface"]:
                listen += ":interface=" + self["interface"].replace(":", r"\:")
            self["listen"] = [listen]
        self["tls"] = self._tls()
        for description in self["listen"]:
            # Parsing needs no reactor (endpoints only keep it for later), so
            # a bad description is a usage error now rather than a traceback
            # once twistd is running.
            if self["workers"] > 1 and description.split(":", 1)[0].lower() not in (
                "tcp",
                "tcp6",
                "unix",
            ):
                raise usage.UsageError(
                    f"--listen {description}: --workers shares tcp:, tcp6: and "
                    "unix: listeners only (for TLS use --tls-cert and --tls-key)"
                )
            _endpoint(None, description)

    def _metrics(self) -> str | None:
        """
        The strports description of the --metrics-port listener, or L{None}.
        """
        if self["metrics-port"] is None:
            if self["metrics-interface"] is not None:
                raise usage.UsageError("--metrics-interface needs --metrics-port")
            return None
        port = _number(int, "metrics-port", self["metrics-port"], 0)
        if port > 65535:
            raise usage.UsageError(f"--metrics-port must be <= 65535, not {port}")
        self["metrics-port"] = port
        try:
            import prometheus_client  # noqa: F401
        except ImportError:
            raise usage.UsageError(
                "--metrics-port needs prometheus-client: "
                "pip install 'agilerpc[metrics]'"
            ) from None
        interface = self["metrics-interface"]
        if interface is None:
            interface = self["interface"]
        description = f"tcp:{port}"
        if interface:
            description += ":interface=" + interface.replace(":", r"\:")
        return description

    def _tls(self) -> Any:
        """
        The TLS options of --tls-cert, --tls-key and --tls-client-ca, or
        L{None} without them.
        """
        cert, key, clientCA = (
            self["tls-cert"],
            self["tls-key"],
            self["tls-client-ca"],
        )
        if cert is None and key is None:
            if clientCA is not None:
                raise usage.UsageError(
                    "--tls-client-ca needs --tls-cert and --tls-key (an ssl: "
                    "--listen cannot require client certificates)"
                )
            return None
        if cert is None or key is None:
            raise usage.UsageError("--tls-cert and --tls-key go together")
        for description in self["listen"]:
            if description.split(":", 1)[0].lower() == "ssl":
                raise usage.UsageError(
                    f"--listen {description}: with --tls-cert every listener "
                    "serves TLS already; use tcp: (or unix:) descriptions"
                )
        return serverTLSOptions(cert, key, clientCA)


def _readToken(path: str) -> bytes:
    """
    The token in the file at C{path}, without surrounding whitespace.

    @raise usage.UsageError: if it cannot be read or is empty.
    """
    token = readFile("auth-token-file", path).strip()
    if not token:
        raise usage.UsageError(f"--auth-token-file {path}: the file is empty")
    return token


def _endpoint(reactor: Any, description: str) -> IStreamServerEndpoint:
    try:
        endpoint: IStreamServerEndpoint = endpoints.serverFromString(
            reactor, description
        )
    except Exception as e:
        raise usage.UsageError(f"--listen {description}: {e}") from None
    return endpoint


def makeService(
    config: Options,
    reactor: Any = None,
    serverEndpoints: list[IStreamServerEndpoint] | None = None,
    worker: int = 0,
    metrics: ServerMetrics | None = None,
) -> IService:
    """
    The service C{config} describes; C{reactor} defaults to the global one.
    With C{--workers} above 1 the service also runs the workers, and its
    C{--metrics-port} serves the totals of every process.

    A worker process passes the C{serverEndpoints} it adopted, its number
    (C{worker}, from 1) and, with C{--metrics-port}, the L{ServerMetrics} to
    count into (which it sends to the parent: it serves no HTTP itself).
    """
    if reactor is None:
        from twisted.internet import reactor as globalReactor

        reactor = globalReactor
    observers: list[IServerObserver] = []
    if metrics is None and config["metrics"] is not None and not worker:
        from .metrics import ServerMetrics

        metrics = ServerMetrics()
    if metrics is not None:
        observers.append(metrics)
    if config["log-calls"]:
        observers.append(CallLog())
    factory = RpcServerFactory(
        config["registry"],
        reactor,
        keepalive=config["keepalive"],
        maxMessageSize=config["max-message-size"],
        debug=bool(config["debug"]),
        authToken=config["auth-token"],
        maxInFlight=config["max-in-flight"],
        maxConnections=config["max-connections"] or None,
        maxContainers=config["max-containers"] or None,
        frameTimeout=config["frame-timeout"],
        maxUnsent=config["max-unsent"] or None,
        maxUnsentTotal=config["max-unsent-total"] or None,
        maxInputTotal=config["max-input-total"] or None,
        maxCallTime=config["max-call-time"] or None,
        maxMetadataSize=config["max-metadata-size"],
        observers=observers,
        tracing=bool(config["otel"]),
        worker=worker,
    )
    if serverEndpoints is None:
        serverEndpoints = [_endpoint(reactor, d) for d in config["listen"]]
    supervisor: WorkerSupervisor | None = None
    if config["workers"] > 1:
        from ._workers import WorkerSupervisor

        supervisor = WorkerSupervisor(
            reactor,
            config["argv"],
            config["workers"] - 1,
            serverEndpoints,
            killAfter=config["shutdown-grace"] + 5.0,
        )
        serverEndpoints = list(supervisor.endpoints)
    tls = config["tls"]
    _log.info(
        "agilerpc serving {methods} on {listen} (keepalive {keepalive}s{tls}{auth})",
        methods=", ".join(config["registry"].names()),
        listen=", ".join(config["listen"]),
        keepalive=config["keepalive"],
        tls=""
        if tls is None
        else ", TLS with client certificates"
        if config["tls-client-ca"]
        else ", TLS",
        auth="" if config["auth-token"] is None else ", token auth",
    )
    service = RpcService(factory, serverEndpoints, config["shutdown-grace"], tls=tls)
    if worker or (metrics is None and supervisor is None):
        # A worker's metrics go to the parent, which serves them.
        return service
    # Started in this order (the parent listens, then the workers share its
    # sockets); stopped together.
    parent = MultiService()
    service.setServiceParent(parent)  # type: ignore[no-untyped-call]
    if supervisor is not None:
        supervisor.setServiceParent(parent)  # type: ignore[no-untyped-call]
    if metrics is not None:
        _serveMetrics(parent, reactor, config["metrics"], metrics, supervisor)
    return parent


def _serveMetrics(
    parent: MultiService,
    reactor: Any,
    description: str,
    metrics: ServerMetrics,
    supervisor: WorkerSupervisor | None,
) -> None:
    """
    Add to C{parent} an HTTP listener on C{description} serving C{metrics}
    at C{/metrics}, plus the workers' with a C{supervisor}.
    """
    from twisted.application.internet import StreamServerEndpointService

    from .metrics import MetricsSite, metricsResource

    resource = metricsResource(
        metrics, workers=None if supervisor is None else supervisor.metrics
    )
    web = StreamServerEndpointService(
        endpoints.serverFromString(reactor, description),
        MetricsSite(resource),  # type: ignore[no-untyped-call]
    )
    web.setServiceParent(parent)
    _log.info("agilerpc metrics on {listen}, at /metrics", listen=description)
