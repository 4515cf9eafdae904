"""
agilerpc: msgpack RPC for Twisted.

Public names are re-exported here; import from C{agilerpc}, not from its
private modules.  The Prometheus side lives in L{agilerpc.metrics}, which
loads C{twisted.web}: its names are re-exported lazily, so that
C{import agilerpc} does not load it.
"""

from typing import TYPE_CHECKING, Any

from ._agileutil import TcpRpcServer
from ._blocking import TcpRpcClient
from ._calloptions import CallOptions
from ._client import ClientStats, EndpointState, RpcCaller, RpcClient
from ._clientstream import RpcStream
from ._context import CallContext, currentCall
from ._errors import (
    CallLost,
    CallTimeout,
    Cancelled,
    ClientClosed,
    DeadlineExceeded,
    FeatureNotSupported,
    InvalidParams,
    InvalidRequest,
    InvalidResponse,
    InvalidResult,
    LocalError,
    MessageTooLarge,
    MetadataTooLarge,
    MethodNotFound,
    NotIdempotent,
    NotServed,
    QueueFull,
    RemoteError,
    RemoteMessageTooLarge,
    RequestTooLarge,
    RpcError,
    ServerBusy,
    StreamsNotSupported,
    TLSRefused,
    Unauthorized,
)
from ._logging import jsonLogObserver
from ._observers import IServerObserver
from ._registry import Method, Registry, rpc
from ._retry import RetryPolicy
from ._server import RpcServerFactory, RpcServerProtocol
from ._service import RpcService
from ._streams import Stream
from ._version import __version__

if TYPE_CHECKING:
    from .metrics import ClientCollector, ServerMetrics, metricsResource

_LAZY = frozenset({"ClientCollector", "ServerMetrics", "metricsResource"})


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        from . import metrics

        return getattr(metrics, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "CallContext",
    "CallLost",
    "CallOptions",
    "CallTimeout",
    "Cancelled",
    "ClientClosed",
    "ClientCollector",
    "ClientStats",
    "DeadlineExceeded",
    "EndpointState",
    "FeatureNotSupported",
    "IServerObserver",
    "InvalidParams",
    "InvalidRequest",
    "InvalidResponse",
    "InvalidResult",
    "LocalError",
    "MessageTooLarge",
    "MetadataTooLarge",
    "Method",
    "MethodNotFound",
    "NotIdempotent",
    "NotServed",
    "QueueFull",
    "Registry",
    "RemoteError",
    "RemoteMessageTooLarge",
    "RequestTooLarge",
    "RetryPolicy",
    "RpcCaller",
    "RpcClient",
    "RpcError",
    "RpcServerFactory",
    "RpcServerProtocol",
    "RpcService",
    "RpcStream",
    "ServerBusy",
    "ServerMetrics",
    "Stream",
    "StreamsNotSupported",
    "TLSRefused",
    "TcpRpcClient",
    "TcpRpcServer",
    "Unauthorized",
    "__version__",
    "currentCall",
    "jsonLogObserver",
    "metricsResource",
    "rpc",
]
