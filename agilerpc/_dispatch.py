"""
Running the handler a request names: the registry's method (or a built-in
one), its arguments checked, called in the reactor thread or in the thread
pool, and its result as a plain value or a L{Deferred}.
"""

from __future__ import annotations

import inspect
from contextvars import copy_context
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.threads import deferToThreadPool

from ._errors import MethodNotFound
from ._registry import Method, Registry
from ._streams import isStream

PLAIN = "plain"
DEFERRED = "Deferred"
COROUTINE = "coroutine"
STREAM = "stream"

#: What a handler returned, by type: isinstance(x, Deferred) goes through
#: ABCMeta (Deferred is an Awaitable) and costs more than a dict lookup.
kinds: dict[type, str] = {Deferred: DEFERRED}


def _kindOf(result: object) -> str:
    if isinstance(result, Deferred):
        kind = DEFERRED
    elif inspect.iscoroutine(result):
        kind = COROUTINE
    elif isStream(result):
        kind = STREAM
    else:
        kind = PLAIN
    kinds[type(result)] = kind
    return kind


class Dispatcher:
    """
    Finds and runs handlers for every connection of one server.

    @ivar registry: the methods served.
    @ivar builtins: methods the server answers itself, found when the
        registry has none of the name asked for.
    @ivar reactor: its thread pool runs the handlers registered with
        C{thread=True}.
    """

    __slots__ = ("_methods", "builtins", "reactor", "registry")

    def __init__(
        self, registry: Registry, builtins: dict[str, Method], reactor: Any
    ) -> None:
        self.registry = registry
        self.builtins = builtins
        self.reactor = reactor
        # Registry.lookup, inline: the registry's own dict, which it only
        # ever adds to.
        self._methods = registry._methods

    def serves(self, name: str) -> bool:
        """
        Whether C{name} is a method this dispatcher runs: registered, or
        built in.
        """
        return name in self._methods or name in self.builtins

    def call(self, name: str, args: list[Any], kwargs: dict[str, Any]) -> Any:
        """
        Run the handler for C{name} and return what it returned: a plain
        value, a L{Deferred}, a coroutine, or for a handler registered with
        C{thread=True}, a L{Deferred} of its result in the thread pool (where
        it runs in a copy of the caller's L{contextvars} context).
        L{deferred} tells them apart.

        @raise RpcError: C{MethodNotFound} or C{InvalidParams}.
        @raise Exception: whatever a synchronous handler raised.
        """
        method: Method | None = self._methods.get(name)
        if method is None:
            method = self.builtins.get(name)
            if method is None:
                raise MethodNotFound(f"no method named {name!r}")
        # Method.checkArguments, with its common case inline: positional
        # arguments only, in the range that certainly binds.
        if kwargs or not method._minArgs <= len(args) <= method._maxArgs:
            method.checkArguments(args, kwargs)
        if method.thread:
            reactor = self.reactor
            # The thread runs it in a copy of this context: currentCall()
            # works there too.
            return deferToThreadPool(
                reactor,
                reactor.getThreadPool(),
                copy_context().run,
                method.func,
                *args,
                **kwargs,
            )
        if kwargs:
            return method.func(*args, **kwargs)
        return method.func(*args)


def kindOf(result: object) -> str:
    """
    What kind of value a handler returned: C{PLAIN}, C{DEFERRED},
    C{COROUTINE} or C{STREAM}.
    """
    kind = kinds.get(type(result))
    return _kindOf(result) if kind is None else kind


def deferred(result: object) -> Deferred[Any] | None:
    """
    What to wait for before answering with a handler's C{result}: L{None}
    for a plain value (answer at once) or a stream (see L{kinds}), the
    L{Deferred} itself, or one running a coroutine.

    Callers may skip this for types that L{kinds} already knows as
    C{PLAIN}: the usual case, a dict lookup instead of a call.
    """
    kind = kinds.get(type(result))
    if kind is None:
        kind = _kindOf(result)
    if kind is PLAIN or kind is STREAM:
        return None
    if kind is COROUTINE:
        return Deferred.fromCoroutine(result)  # type: ignore[arg-type]
    return result  # type: ignore[return-value]
