"""
The public surface: every name the package and its public modules promise
is there, is the object it claims to be, and nothing else is promised.

A refactor that moves an implementation between private modules must keep
these names; one that drops or adds a public name must change this list,
the guide (docs/guide/) and the changelog (docs/changelog.md) together.
Each name is in the API reference (tests/test_docs.py checks its docstring;
tox -e docs checks pydoctor's output).
"""

from __future__ import annotations

import importlib
import inspect

from twisted.trial.unittest import SynchronousTestCase

import agilerpc

#: Each public name of C{agilerpc}, and the private module that defines it.
PACKAGE = {
    "CallContext": "_context",
    "CallLost": "_errors",
    "CallOptions": "_calloptions",
    "CallTimeout": "_errors",
    "Cancelled": "_errors",
    "ClientClosed": "_errors",
    "ClientCollector": "metrics",
    "ClientStats": "_client",
    "DeadlineExceeded": "_errors",
    "EndpointState": "_client",
    "FeatureNotSupported": "_errors",
    "IServerObserver": "_observers",
    "InvalidParams": "_errors",
    "InvalidRequest": "_errors",
    "InvalidResponse": "_errors",
    "InvalidResult": "_errors",
    "LocalError": "_errors",
    "MessageTooLarge": "_errors",
    "MetadataTooLarge": "_errors",
    "Method": "_registry",
    "MethodNotFound": "_errors",
    "NotIdempotent": "_errors",
    "NotServed": "_errors",
    "QueueFull": "_errors",
    "Registry": "_registry",
    "RemoteError": "_errors",
    "RemoteMessageTooLarge": "_errors",
    "RequestTooLarge": "_errors",
    "RetryPolicy": "_retry",
    "RpcCaller": "_client",
    "RpcClient": "_client",
    "RpcStream": "_clientstream",
    "Stream": "_streams",
    "StreamsNotSupported": "_errors",
    "RpcError": "_errors",
    "RpcServerFactory": "_server",
    "RpcServerProtocol": "_server",
    "RpcService": "_service",
    "ServerBusy": "_errors",
    "ServerMetrics": "metrics",
    "TLSRefused": "_errors",
    "TcpRpcClient": "_blocking",
    "TcpRpcServer": "_agileutil",
    "Unauthorized": "_errors",
    "__version__": "_version",
    "currentCall": "_context",
    "jsonLogObserver": "_logging",
    "metricsResource": "metrics",
    "rpc": "_registry",
}

#: The public modules besides the package, and the names each promises.
MODULES = {
    "agilerpc.testing": {"MemoryConnection", "MemoryServer"},
    "agilerpc.tap": {"DEFAULT_MODULE", "Options", "makeService"},
    "agilerpc.metrics": {
        "ABORT_REASONS",
        "DEFAULT_BUCKETS",
        "REFUSAL_REASONS",
        "UNKNOWN_METHOD",
        "ClientCollector",
        "MethodStats",
        "MetricsSite",
        "MetricsSnapshot",
        "ServerCollector",
        "ServerMetrics",
        "metricsResource",
    },
}


class PackageExportsTests(SynchronousTestCase):
    """
    C{agilerpc}'s C{__all__}.
    """

    def test_allIsThePromise(self) -> None:
        """
        C{__all__} holds exactly the names listed here, without repeats.
        """
        self.assertEqual(len(agilerpc.__all__), len(set(agilerpc.__all__)))
        self.assertEqual(sorted(agilerpc.__all__), sorted(PACKAGE))

    def test_eachNameIsItsDefinition(self) -> None:
        """
        Each public name is the very object its defining module holds, and a
        class or function says it comes from that module.
        """
        for name, where in PACKAGE.items():
            module = importlib.import_module(f"agilerpc.{where}")
            exported = getattr(agilerpc, name)
            self.assertIs(exported, getattr(module, name), name)
            if inspect.isclass(exported) or inspect.isfunction(exported):
                self.assertEqual(exported.__module__, module.__name__, name)

    def test_noPrivateNameInAll(self) -> None:
        """
        Nothing private is promised.
        """
        for name in agilerpc.__all__:
            self.assertFalse(name.startswith("_") and name != "__version__", name)

    def test_unknownNameIsAnAttributeError(self) -> None:
        """
        A name the package does not have is an L{AttributeError} naming it,
        lazy re-exports notwithstanding.
        """
        with self.assertRaises(AttributeError) as caught:
            agilerpc.NoSuchName  # noqa: B018
        self.assertIn("NoSuchName", str(caught.exception))


class ModuleExportsTests(SynchronousTestCase):
    """
    The public modules' C{__all__}.
    """

    def test_allIsThePromise(self) -> None:
        """
        Each public module's C{__all__} holds exactly its listed names, and
        each is there.
        """
        for name, promised in MODULES.items():
            module = importlib.import_module(name)
            self.assertEqual(set(module.__all__), promised, name)
            for attribute in promised:
                self.assertTrue(hasattr(module, attribute), f"{name}.{attribute}")
