"""
OpenTelemetry tracing of calls (the C{otel} extra, C{opentelemetry-api}).

A client made with C{tracing=True} starts a CLIENT span per call, stream or
notification, and sends its W3C trace context (C{traceparent},
C{tracestate}: whatever the global propagator writes) as metadata the
server may drop: a server that does not take metadata gets the call
without it.  A server made with C{tracing=True} (C{twistd agilerpc --otel})
runs every request, stream and notification inside a SERVER span, the
child of the context its metadata carries, and current while the handler
runs: spans the handler starts, in its coroutines, its thread or its
stream's generator too, are the server span's children.

Imported only when tracing is enabled: C{import agilerpc} loads no
opentelemetry, and an untraced server or client pays nothing for this
module.

The spans follow OpenTelemetry's semantic conventions for RPC spans as of
v1.44.0 (C{opentelemetry-semantic-conventions} 0.66b2):

 - name: the method, or C{"agilerpc"} for a method the server does not
   serve;
 - C{rpc.system.name}: C{"agilerpc"};
 - C{rpc.method}: the method as called (there are no services: a dotted
   name such as C{math.add} is the whole name).  A server sets
   C{"_OTHER"} for a method it does not serve, and the name asked for in
   C{rpc.method_original}: a name that comes from the network must not
   make a span name of it.  A client sets the method its code calls;
 - C{server.address} and C{server.port}: on a server, the address it
   accepted the connection on; on a client with one endpoint, that
   endpoint (a client with several does not know the server when the span
   starts);
 - C{network.peer.address} and C{network.peer.port}: on a server, the
   client's address;
 - a failed call: status C{ERROR} and C{error.type}, the error's type: the
   type of the error response (C{MethodNotFound}, C{DeadlineExceeded},
   C{Cancelled}, a handler's exception class name such as C{ValueError}),
   also set as C{rpc.response.status_code} since the server answered it; on
   a client, a local error's type (C{CallLost}, C{CallTimeout},
   C{QueueFull}...) or an exception's class name (C{CancelledError} when
   the caller cancelled), with its message as the status description.
"""

from __future__ import annotations

from collections.abc import Mapping
from contextvars import Token
from types import TracebackType
from typing import Any, cast

from twisted.internet.defer import CancelledError
from twisted.python.failure import Failure

from ._errors import RemoteError, RpcError
from ._observers import IgnoringObserver
from ._version import __version__

try:
    from opentelemetry import context as otelContext
    from opentelemetry import propagate, trace
    from opentelemetry.context import Context
    from opentelemetry.propagators.textmap import Getter
    from opentelemetry.trace import Span, SpanKind, Status, StatusCode
except ImportError as e:
    raise ImportError(
        "agilerpc tracing needs opentelemetry-api: pip install 'agilerpc[otel]'"
    ) from e

#: The value of C{rpc.system.name}, and the name of a span whose method is
#: not served.
SYSTEM = "agilerpc"
#: The semantic conventions the spans follow.
SCHEMA_URL = "https://opentelemetry.io/schemas/1.44.0"

RPC_SYSTEM_NAME = "rpc.system.name"
RPC_METHOD = "rpc.method"
RPC_METHOD_ORIGINAL = "rpc.method_original"
RPC_RESPONSE_STATUS_CODE = "rpc.response.status_code"
ERROR_TYPE = "error.type"
SERVER_ADDRESS = "server.address"
SERVER_PORT = "server.port"
NETWORK_PEER_ADDRESS = "network.peer.address"
NETWORK_PEER_PORT = "network.peer.port"
#: C{rpc.method} of a method the server does not serve.
OTHER = "_OTHER"


def _tracer(tracerProvider: trace.TracerProvider | None) -> trace.Tracer:
    """
    agilerpc's tracer from C{tracerProvider}, or from the global provider
    (which may be set after this is called).
    """
    return trace.get_tracer(
        "agilerpc", __version__, tracerProvider, schema_url=SCHEMA_URL
    )


def errorType(error: BaseException) -> str:
    """
    C{error.type} of a call that failed with C{error}: an L{RpcError}'s
    type, else the exception's class name.
    """
    if isinstance(error, RpcError):
        return error.type
    return type(error).__name__


def _error(failure: Failure) -> BaseException:
    """
    What C{failure} holds.
    """
    return cast(BaseException, failure.value)


def _failed(
    span: Span, kind: str, statusCode: bool, description: str | None = None
) -> None:
    """
    Mark C{span} as a call that failed with the error type C{kind};
    C{statusCode}: the server answered with it.
    """
    span.set_attribute(ERROR_TYPE, kind)
    if statusCode:
        span.set_attribute(RPC_RESPONSE_STATUS_CODE, kind)
    span.set_status(Status(StatusCode.ERROR, description))


def _address(address: Any) -> tuple[str | None, int | None]:
    """
    The host (or UNIX socket path) and port of a Twisted address, each
    L{None} when it has none.
    """
    host = getattr(address, "host", None)
    if isinstance(host, str):
        port = getattr(address, "port", None)
        return host, port if isinstance(port, int) else None
    name = getattr(address, "name", None)
    if isinstance(name, bytes):
        name = name.decode("utf-8", "replace")
    return (name if isinstance(name, str) else None), None


class _MetadataGetter(Getter[Mapping[str, Any]]):
    """
    Reads a trace context from a call's metadata: its str values (a bytes
    value is no header a propagator writes).
    """

    def get(self, carrier: Mapping[str, Any], key: str) -> list[str] | None:
        value = carrier.get(key)
        return [value] if isinstance(value, str) else None

    def keys(self, carrier: Mapping[str, Any]) -> list[str]:
        return list(carrier)


_GETTER = _MetadataGetter()
_EMPTY: Mapping[str, Any] = {}


class ServerTracing(IgnoringObserver):
    """
    A server's tracing: starts each call's SERVER span as the protocol
    dispatches it (L{callStarted}, L{notificationStarted}) and, as one of
    the server's observers, ends it when the call is answered
    (L{callFinished}).
    """

    def __init__(self, tracerProvider: trace.TracerProvider | None = None) -> None:
        """
        @param tracerProvider: where the spans go; L{None}: the global
            provider.
        """
        self._tracer = _tracer(tracerProvider)
        # The spans of calls dispatched and not answered yet.
        self._spans: dict[tuple[Any, int], Span] = {}

    @property
    def openSpans(self) -> int:
        """
        Spans started and not ended yet.
        """
        return len(self._spans)

    def _start(self, connection: Any, message: Any) -> tuple[Span, Token[Context]]:
        """
        Start the span of C{message} (a request or a notification) received
        on C{connection}, as the child of the context its metadata carries,
        and make it current; the span, and the token that L{detach} takes.
        """
        metadata = getattr(message, "metadata", None)
        parent = propagate.extract(
            _EMPTY if metadata is None else metadata, None, _GETTER
        )
        method = message.method
        attributes: dict[str, str | int] = {RPC_SYSTEM_NAME: SYSTEM}
        if connection.factory.dispatcher.serves(method):
            name = attributes[RPC_METHOD] = method
        else:
            name = SYSTEM
            attributes[RPC_METHOD] = OTHER
            attributes[RPC_METHOD_ORIGINAL] = method
        for hostKey, portKey, address in (
            (SERVER_ADDRESS, SERVER_PORT, connection.transport.getHost()),
            (NETWORK_PEER_ADDRESS, NETWORK_PEER_PORT, connection.peer),
        ):
            host, port = _address(address)
            if host is not None:
                attributes[hostKey] = host
                if port is not None:
                    attributes[portKey] = port
        span = self._tracer.start_span(name, parent, SpanKind.SERVER, attributes)
        return span, otelContext.attach(trace.set_span_in_context(span, parent))

    def callStarted(self, connection: Any, request: Any) -> object:
        """
        The request (or stream request) C{request} is about to run on
        C{connection}: start its span and make it current until L{detach}.
        L{callFinished} ends it.
        """
        span, token = self._start(connection, request)
        self._spans[connection, request.msgid] = span
        return token

    def notificationStarted(
        self, connection: Any, notification: Any
    ) -> NotificationSpan:
        """
        The notification C{notification} is about to run: start its span and
        make it current until L{NotificationSpan.detach}.
        """
        return NotificationSpan(*self._start(connection, notification))

    def detach(self, token: object) -> None:
        """
        The handler returned: its span is no longer current.
        """
        otelContext.detach(cast("Token[Context]", token))

    # -- IServerObserver -------------------------------------------------------

    def callFinished(
        self, connection: Any, msgid: int, method: str, outcome: str, duration: float
    ) -> None:
        span = self._spans.pop((connection, msgid), None)
        if span is not None:
            if outcome != "ok":
                _failed(span, outcome, True)
            span.end()


class NotificationSpan:
    """
    The SERVER span of one notification, which nothing answers: it ends
    when its handler finishes.
    """

    __slots__ = ("_span", "_token")

    def __init__(self, span: Span, token: Token[Context]) -> None:
        self._span = span
        self._token = token

    def detach(self) -> None:
        """
        The handler returned: its span is no longer current.
        """
        otelContext.detach(self._token)

    def ended(self, result: Any) -> Any:
        """
        The handler finished with C{result} (a L{Failure} if it failed): end
        the span.  Returns C{result}.
        """
        if isinstance(result, Failure):
            _failed(self._span, errorType(_error(result)), False)
        self._span.end()
        return result


class ClientSpan:
    """
    The CLIENT span of one call.

    @ivar span: the span.
    @ivar metadata: its trace context, as metadata to send with the call.
    """

    __slots__ = ("metadata", "span")

    def __init__(self, span: Span, metadata: dict[str, str | bytes]) -> None:
        self.span = span
        self.metadata = metadata

    def __enter__(self) -> ClientSpan:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        """
        A blocking call (or stream) ended, raising C{error} if it failed:
        end the span.  A stream's generator closed before its end was
        cancelled by its consumer (C{CancelledError}, as L{RpcClient}'s).
        """
        if error is not None:
            self.failed(CancelledError() if isinstance(error, GeneratorExit) else error)
        self.span.end()

    def ended(self, result: Any) -> Any:
        """
        The call ended with C{result} (a L{Failure} if it failed): end the
        span.  Returns C{result}, to sit in the call's callback chain.
        """
        if isinstance(result, Failure):
            self.failed(_error(result))
        self.span.end()
        return result

    def failed(self, error: BaseException) -> None:
        """
        The call failed with C{error}.
        """
        message = error.message if isinstance(error, RpcError) else str(error)
        _failed(
            self.span,
            errorType(error),
            isinstance(error, RemoteError),
            message or None,
        )


class ClientTracing:
    """
    A client's tracing: the CLIENT span of each call.
    """

    def __init__(
        self,
        tracerProvider: trace.TracerProvider | None,
        endpoints: list[tuple[str, int]],
    ) -> None:
        """
        @param tracerProvider: where the spans go; L{None}: the global
            provider.
        @param endpoints: the client's servers: with one, its spans name it.
        """
        self._tracer = _tracer(tracerProvider)
        self._attributes: dict[str, str | int] = {RPC_SYSTEM_NAME: SYSTEM}
        if len(endpoints) == 1:
            [(host, port)] = endpoints
            self._attributes[SERVER_ADDRESS] = host
            self._attributes[SERVER_PORT] = port

    def start(self, method: str) -> ClientSpan:
        """
        Start the span of a call of C{method}, the child of the current
        span, and write its trace context into the metadata to send.
        """
        span = self._tracer.start_span(
            method,
            kind=SpanKind.CLIENT,
            attributes={**self._attributes, RPC_METHOD: method},
        )
        metadata: dict[str, str | bytes] = {}
        propagate.inject(metadata, trace.set_span_in_context(span))
        return ClientSpan(span, metadata)
