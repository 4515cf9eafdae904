"""
agilerpc: msgpack RPC for Twisted.

Public names are re-exported here; import from C{agilerpc}, not from its
private modules.
"""

from ._blocking import TcpRpcClient
from ._client import ClientStats, RpcClient
from ._clientmetrics import ClientCollector
from ._errors import (
    CallLost,
    CallTimeout,
    Cancelled,
    ClientClosed,
    InvalidParams,
    InvalidRequest,
    InvalidResponse,
    InvalidResult,
    LocalError,
    MessageTooLarge,
    MethodNotFound,
    NotServed,
    QueueFull,
    RemoteError,
    RemoteMessageTooLarge,
    RequestTooLarge,
    RpcError,
    ServerBusy,
    TLSRefused,
    Unauthorized,
)
from ._logging import jsonLogObserver
from ._metrics import ServerMetrics, metricsResource
from ._registry import Method, Registry, rpc
from ._seedserver import TcpRpcServer
from ._server import RpcServerFactory, RpcServerProtocol
from ._service import RpcService
from ._version import __version__

__all__ = [
    "CallLost",
    "CallTimeout",
    "Cancelled",
    "ClientClosed",
    "ClientCollector",
    "ClientStats",
    "InvalidParams",
    "InvalidRequest",
    "InvalidResponse",
    "InvalidResult",
    "LocalError",
    "MessageTooLarge",
    "Method",
    "MethodNotFound",
    "NotServed",
    "QueueFull",
    "Registry",
    "RemoteError",
    "RemoteMessageTooLarge",
    "RequestTooLarge",
    "RpcClient",
    "RpcError",
    "RpcServerFactory",
    "RpcServerProtocol",
    "RpcService",
    "ServerBusy",
    "ServerMetrics",
    "TLSRefused",
    "TcpRpcClient",
    "TcpRpcServer",
    "Unauthorized",
    "__version__",
    "jsonLogObserver",
    "metricsResource",
    "rpc",
]
