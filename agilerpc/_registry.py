"""
Marking handlers and holding them in a registry.

L{rpc} only marks a function; nothing is registered until a L{Registry} is
asked to.  There is no hidden global registry: a server serves exactly the
registry it is given.
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from types import ModuleType
from typing import Any, TypeVar, overload

from ._errors import InvalidParams

_F = TypeVar("_F", bound=Callable[..., Any])

_MARK = "__agilerpc__"


@dataclass(frozen=True)
class _Mark:
    name: str | None
    thread: bool
    idempotent: bool


@overload
def rpc(func: _F, /) -> _F: ...


@overload
def rpc(
    *, name: str | None = None, thread: bool = False, idempotent: bool = False
) -> Callable[[_F], _F]: ...


def rpc(
    func: _F | None = None,
    /,
    *,
    name: str | None = None,
    thread: bool = False,
    idempotent: bool = False,
) -> _F | Callable[[_F], _F]:
    """
    Mark a function (or method) as an RPC handler.

    Use it bare (C{@rpc}) or with options (C{@rpc(name="math.add")},
    C{@rpc(thread=True)} to run the handler in the reactor's thread pool,
    C{@rpc(idempotent=True)} to tell callers, through C{system.describe},
    that running it twice does no harm).  It returns the function unchanged:
    L{Registry.fromModule} and L{Registry.registerObject} find marked
    functions and register them.
    """

    def mark(f: _F) -> _F:
        setattr(f, _MARK, _Mark(name, thread, idempotent))
        return f

    if func is not None:
        return mark(func)
    return mark


def _markOf(obj: object) -> _Mark | None:
    mark = getattr(obj, _MARK, None)
    return mark if isinstance(mark, _Mark) else None


def _positionalArity(signature: inspect.Signature | None) -> tuple[float, float]:
    """
    The range of positional argument counts that certainly bind to
    C{signature} when no keyword arguments are given, or an empty range when
    that cannot be told without binding (a required keyword-only parameter).
    """
    if signature is None:
        return 0, -1
    minimum = 0
    maximum: float = 0
    for parameter in signature.parameters.values():
        kind = parameter.kind
        if kind is inspect.Parameter.VAR_POSITIONAL:
            maximum = float("inf")
        elif kind is inspect.Parameter.KEYWORD_ONLY:
            if parameter.default is inspect.Parameter.empty:
                return 0, -1
        elif kind is not inspect.Parameter.VAR_KEYWORD:
            maximum += 1
            if parameter.default is inspect.Parameter.empty:
                minimum += 1
    return minimum, maximum


class Method:
    """
    A registered handler.

    @ivar name: the name callers use.
    @ivar func: the callable.
    @ivar thread: run C{func} in the reactor's thread pool.
    @ivar idempotent: its author says running it twice does no harm: clients
        may retry a call of it lost with its connection (shown by
        C{system.describe}).
    """

    __slots__ = (
        "_maxArgs",
        "_minArgs",
        "func",
        "idempotent",
        "name",
        "signature",
        "thread",
    )

    def __init__(
        self,
        name: str,
        func: Callable[..., Any],
        thread: bool,
        idempotent: bool = False,
    ) -> None:
        self.name = name
        self.func = func
        self.thread = thread
        self.idempotent = idempotent
        try:
            self.signature: inspect.Signature | None = inspect.signature(func)
        except (TypeError, ValueError):
            # Some builtins have no introspectable signature: let the call
            # itself say whether the arguments fit.
            self.signature = None
        self._minArgs, self._maxArgs = _positionalArity(self.signature)

    def checkArguments(self, args: list[Any], kwargs: dict[str, Any]) -> None:
        """
        Check that C{args} and C{kwargs} bind to the handler's signature.

        @raise InvalidParams: if they do not.
        """
        # The common case, positional arguments only, without the cost of
        # Signature.bind (a quarter of the server's time per call).
        if not kwargs and self._minArgs <= len(args) <= self._maxArgs:
            return
        if self.signature is not None:
            try:
                self.signature.bind(*args, **kwargs)
            except TypeError as e:
                raise InvalidParams(f"{self.name}: {e}") from None

    def describe(self) -> dict[str, Any]:
        """
        What C{system.describe} says of this method (docs/PROTOCOL.md
        section 7.2): C{signature} (for display), C{doc}, whether it is
        C{idempotent}, and the same signature in a form any language can
        read: C{params} and, when annotated, C{returns}.
        """
        description: dict[str, Any] = {
            "signature": _display(self.signature),
            "doc": inspect.getdoc(self.func) or "",
            "idempotent": self.idempotent,
        }
        if self.signature is None:
            return description
        description["params"] = [_param(p) for p in self.signature.parameters.values()]
        returns = self.signature.return_annotation
        if returns is not inspect.Signature.empty:
            description["returns"] = _annotationText(returns)
        return description


_KINDS = {
    inspect.Parameter.POSITIONAL_ONLY: "positional",
    inspect.Parameter.POSITIONAL_OR_KEYWORD: "positional_or_keyword",
    inspect.Parameter.VAR_POSITIONAL: "var_positional",
    inspect.Parameter.KEYWORD_ONLY: "keyword",
    inspect.Parameter.VAR_KEYWORD: "var_keyword",
}

_DEFAULT_TYPES = (type(None), bool, int, float, str, bytes)


def _annotationText(annotation: object) -> str:
    """
    An annotation as its source text: C{int}, C{list[str]}, C{'Foo'}.
    """
    if isinstance(annotation, str):
        return annotation
    if isinstance(annotation, type):
        return annotation.__qualname__
    return inspect.formatannotation(annotation)


def _param(parameter: inspect.Parameter) -> dict[str, Any]:
    """
    One parameter for C{system.describe}'s C{params}: its C{name}, C{kind},
    whether it is C{required}, its C{default} when it has one msgpack
    encodes as a scalar (nil, boolean, integer, float, str, bin) and its
    C{annotation} text when it has one.
    """
    described: dict[str, Any] = {
        "name": parameter.name,
        "kind": _KINDS[parameter.kind],
        "required": parameter.default is inspect.Parameter.empty
        and parameter.kind
        not in (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD),
    }
    default = parameter.default
    if type(default) in _DEFAULT_TYPES and (
        type(default) is not int or -(2**63) <= default < 2**64
    ):
        described["default"] = default
    if parameter.annotation is not inspect.Parameter.empty:
        described["annotation"] = _annotationText(parameter.annotation)
    return described


class _Annotation(str):
    """
    An annotation kept as text (C{from __future__ import annotations}),
    shown without the quotes C{inspect} would put around a str.
    """

    def __repr__(self) -> str:
        return str(self)


def _display(signature: inspect.Signature | None) -> str:
    """
    C{signature} as Python would write it: C{(a: int, b: int = 2) -> int},
    whether its annotations are objects or (postponed) text.
    """
    if signature is None:
        return "(...)"
    parameters = [
        p.replace(annotation=_Annotation(p.annotation))
        if isinstance(p.annotation, str)
        else p
        for p in signature.parameters.values()
    ]
    returns = signature.return_annotation
    if isinstance(returns, str):
        returns = _Annotation(returns)
    return str(signature.replace(parameters=parameters, return_annotation=returns))


class Registry:
    """
    The methods a server serves, by name.

    Every registry serves the built-ins C{system.listMethods} and
    C{system.describe}; names starting with C{system.} are reserved for them.
    """

    def __init__(self) -> None:
        self._methods: dict[str, Method] = {}
        # Both only read: safe to run twice.
        self._add(Method("system.listMethods", self._listMethods, False, True))
        self._add(Method("system.describe", self._describe, False, True))

    def _add(self, method: Method) -> None:
        if method.name in self._methods:
            raise ValueError(f"a method named {method.name!r} is already registered")
        self._methods[method.name] = method

    def register(
        self,
        func: Callable[..., Any],
        name: str | None = None,
        thread: bool = False,
        idempotent: bool = False,
    ) -> Method:
        """
        Register C{func} under C{name} (default: its C{__name__}).

        @param thread: run it in the reactor's thread pool, for handlers that
            block.
        @param idempotent: running it twice does no harm (see L{rpc}).
        @raise ValueError: if the name is taken, empty or reserved.
        """
        if not callable(func):
            raise TypeError(f"{func!r} is not callable")
        if name is None:
            name = getattr(func, "__name__", None)
            if not isinstance(name, str):
                raise ValueError(f"{func!r} has no __name__: give it a name")
        if not isinstance(name, str):
            raise TypeError(f"a method name must be a str, not {name!r}")
        if not name:
            raise ValueError("a method name cannot be empty")
        if name.startswith("system."):
            raise ValueError(f"{name!r}: names starting with 'system.' are reserved")
        if type(idempotent) is not bool:
            raise TypeError(f"idempotent must be True or False, not {idempotent!r}")
        method = Method(name, func, thread, idempotent)
        self._add(method)
        return method

    def registerMarked(
        self, candidates: Iterable[tuple[str, object]], prefix: str = ""
    ) -> int:
        """
        Register every callable among C{candidates} that is marked with
        L{rpc}; return how many were registered.
        """
        count = 0
        for attr, value in candidates:
            mark = _markOf(value)
            if mark is None or not callable(value):
                continue
            name = prefix + (mark.name or attr)
            existing = self._methods.get(name)
            if existing is not None and existing.func is value:
                # The same function seen twice (a module that re-exports
                # another's handlers, both added): serve it once.
                continue
            self.register(value, name, mark.thread, mark.idempotent)
            count += 1
        return count

    def registerObject(self, obj: object, prefix: str | None = None) -> int:
        """
        Register the methods of C{obj} marked with L{rpc}, as
        C{prefix + "." + name} (no prefix: the bare names).
        """
        candidates = []
        for attr in dir(obj):
            # Look before touching: getattr() would run properties.
            raw = inspect.getattr_static(obj, attr)
            if _markOf(getattr(raw, "__func__", raw)) is not None:
                candidates.append((attr, getattr(obj, attr)))
        return self.registerMarked(candidates, f"{prefix}." if prefix else "")

    def addModule(self, module: ModuleType | str) -> int:
        """
        Register the functions of C{module} (a module or its dotted name)
        marked with L{rpc}; return how many were registered.

        @raise ImportError: if the module cannot be imported.
        """
        if isinstance(module, str):
            module = importlib.import_module(module)
        return self.registerMarked(sorted(vars(module).items()))

    @classmethod
    def fromModule(cls, module: ModuleType | str) -> Registry:
        """
        A registry of the functions of C{module} marked with L{rpc}.
        """
        registry = cls()
        registry.addModule(module)
        return registry

    def lookup(self, name: str) -> Method | None:
        """
        The method registered as C{name}, or L{None}.
        """
        return self._methods.get(name)

    def names(self) -> list[str]:
        """
        The registered names, sorted.
        """
        return sorted(self._methods)

    def __contains__(self, name: object) -> bool:
        return name in self._methods

    def __len__(self) -> int:
        return len(self._methods)

    def _listMethods(self) -> list[str]:
        """
        The names of the methods this server serves.
        """
        return self.names()

    def _describe(self) -> dict[str, dict[str, Any]]:
        """
        The signature and documentation of every method, by name.
        """
        return {name: self._methods[name].describe() for name in self.names()}
