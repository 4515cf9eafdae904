"""
agilerpc: msgpack RPC for Twisted.

Public names are re-exported here; import from C{agilerpc}, not from its
private modules.
"""

from ._blocking import TcpRpcClient
from ._client import ClientStats, RpcClient
from ._clientmetrics import ClientCollector
from ._errors import (
    Cancelled,
    ClientClosed,
    ConnectionLost,
    InvalidParams,
    InvalidRequest,
    InvalidResponse,
    InvalidResult,
    MessageTooLarge,
    MethodNotFound,
    QueueFull,
    RemoteError,
    RpcError,
    ServerBusy,
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
    "Cancelled",
    "ClientClosed",
    "ClientCollector",
    "ClientStats",
    "ConnectionLost",
    "InvalidParams",
    "InvalidRequest",
    "InvalidResponse",
    "InvalidResult",
    "MessageTooLarge",
    "Method",
    "MethodNotFound",
    "QueueFull",
    "Registry",
    "RemoteError",
    "RpcClient",
    "RpcError",
    "RpcServerFactory",
    "RpcServerProtocol",
    "RpcService",
    "ServerBusy",
    "ServerMetrics",
    "TcpRpcClient",
    "TcpRpcServer",
    "Unauthorized",
    "__version__",
    "jsonLogObserver",
    "metricsResource",
    "rpc",
]
