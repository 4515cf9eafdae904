# mypy reports trial's untyped assertions called through self under the test
# class's name, which untyped_calls_exclude = ["twisted"] does not match.
# mypy: disable-error-code="no-untyped-call"
"""
Tests for L{agilerpc._registry}: the L{rpc} marker, L{Registry}
registration, lookup, the C{system.*} built-ins and argument checking.
"""

from __future__ import annotations

import inspect
import sys
import types
from typing import Any

from twisted.trial.unittest import SynchronousTestCase

from agilerpc import InvalidParams, Method, Registry, rpc
from agilerpc._registry import _markOf

BUILTINS = ["system.describe", "system.listMethods"]


def plain(a: int, b: int = 2) -> int:
    """
    Add two numbers.
    """
    return a + b


def makeModule(name: str) -> types.ModuleType:
    """
    A module object holding marked and unmarked functions and other values.
    """
    module = types.ModuleType(name)

    @rpc
    def sayHello(name: str) -> str:
        """
        Greet someone.
        """
        return "hello " + name

    @rpc(name="math.add")
    def add(a: int, b: int) -> int:
        return a + b

    @rpc(thread=True)
    def blocking() -> None:
        pass

    def unmarked() -> None:
        pass

    module.sayHello = sayHello  # type: ignore[attr-defined]
    module.add = add  # type: ignore[attr-defined]
    module.blocking = blocking  # type: ignore[attr-defined]
    module.unmarked = unmarked  # type: ignore[attr-defined]
    module.CONSTANT = 5  # type: ignore[attr-defined]
    return module


class RpcMarkerTests(SynchronousTestCase):
    """
    L{rpc} marks a function and returns it unchanged.
    """

    def test_bare(self) -> None:
        """
        C{@rpc} returns the same function, marked with no name and no thread.
        """

        def f() -> None:
            pass

        self.assertIs(rpc(f), f)
        mark = _markOf(f)
        assert mark is not None
        self.assertEqual((mark.name, mark.thread), (None, False))

    def test_name(self) -> None:
        """
        C{@rpc(name=...)} records the name.
        """

        @rpc(name="math.add")
        def f() -> None:
            pass

        mark = _markOf(f)
        assert mark is not None
        self.assertEqual((mark.name, mark.thread), ("math.add", False))
        self.assertEqual(f.__name__, "f")

    def test_thread(self) -> None:
        """
        C{@rpc(thread=True)} records the thread option.
        """

        @rpc(thread=True)
        def f() -> None:
            pass

        mark = _markOf(f)
        assert mark is not None
        self.assertEqual((mark.name, mark.thread), (None, True))

    def test_idempotent(self) -> None:
        """
        C{@rpc(idempotent=True)} records that the method may run twice; a
        bare C{@rpc} says it may not.
        """

        @rpc(idempotent=True)
        def f() -> None:
            pass

        mark = _markOf(f)
        assert mark is not None
        self.assertTrue(mark.idempotent)
        plainMark = _markOf(rpc(lambda: None))
        assert plainMark is not None
        self.assertFalse(plainMark.idempotent)

    def test_unmarked(self) -> None:
        """
        A function never passed to L{rpc} has no mark, and marking registers
        nothing anywhere.
        """
        self.assertIsNone(_markOf(plain))
        self.assertEqual(Registry().names(), BUILTINS)


class RegisterTests(SynchronousTestCase):
    """
    L{Registry.register} adds one method under a name.
    """

    def test_defaultName(self) -> None:
        """
        The name defaults to the function's C{__name__}; the method is found by
        L{Registry.lookup}.
        """
        registry = Registry()
        method = registry.register(plain)
        self.assertIsInstance(method, Method)
        self.assertEqual(
            (method.name, method.func, method.thread), ("plain", plain, False)
        )
        self.assertIs(registry.lookup("plain"), method)
        self.assertIn("plain", registry)
        self.assertEqual(len(registry), 3)

    def test_explicitNameAndThread(self) -> None:
        """
        C{name} and C{thread} are kept.
        """
        registry = Registry()
        method = registry.register(plain, name="math.plus", thread=True)
        self.assertEqual((method.name, method.thread), ("math.plus", True))
        self.assertIsNone(registry.lookup("plain"))
        self.assertIs(registry.lookup("math.plus"), method)

    def test_lambdaNeedsNoName(self) -> None:
        """
        A lambda is registered under its C{__name__} unless named.
        """
        registry = Registry()
        registry.register(lambda: 1, name="one")
        self.assertIn("one", registry)

    def test_duplicate(self) -> None:
        """
        Registering a taken name raises L{ValueError} and keeps the first.
        """
        registry = Registry()
        registry.register(plain)
        with self.assertRaises(ValueError):
            registry.register(lambda: 1, name="plain")
        method = registry.lookup("plain")
        assert method is not None
        self.assertIs(method.func, plain)

    def test_reserved(self) -> None:
        """
        Names starting with C{system.} are reserved, the built-ins included.
        """
        registry = Registry()
        for name in ["system.listMethods", "system.other"]:
            with self.assertRaises(ValueError):
                registry.register(plain, name=name)
        self.assertEqual(registry.names(), BUILTINS)

    def test_emptyName(self) -> None:
        """
        An empty name is refused.
        """
        with self.assertRaises(ValueError):
            Registry().register(plain, name="")

    def test_notCallable(self) -> None:
        """
        Something that is not callable is refused with L{TypeError}.
        """
        with self.assertRaises(TypeError):
            Registry().register(5, name="five")  # type: ignore[arg-type]

    def test_noName(self) -> None:
        """
        A callable with no C{__name__} must be given a name.
        """

        class Callable:
            def __call__(self) -> int:
                return 1

        registry = Registry()
        with self.assertRaises(ValueError):
            registry.register(Callable())
        registry.register(Callable(), name="c")
        self.assertIn("c", registry)

    def test_lookupUnknown(self) -> None:
        """
        L{Registry.lookup} of an unknown name is L{None}.
        """
        self.assertIsNone(Registry().lookup("nope"))
        self.assertNotIn("nope", Registry())

    def test_names(self) -> None:
        """
        L{Registry.names} lists every name, built-ins included, sorted.
        """
        registry = Registry()
        registry.register(plain, name="zeta")
        registry.register(plain, name="alpha")
        self.assertEqual(registry.names(), ["alpha", *BUILTINS, "zeta"])


class ModuleTests(SynchronousTestCase):
    """
    L{Registry.fromModule} and L{Registry.addModule} register a module's
    marked functions, and only those.
    """

    def test_fromModule(self) -> None:
        """
        Every marked function is registered, under its mark's name or its
        attribute name, with its thread option; nothing else is.
        """
        module = makeModule("agilerpc_test_fake")
        registry = Registry.fromModule(module)
        self.assertEqual(
            registry.names(), ["blocking", "math.add", "sayHello", *BUILTINS]
        )
        add = registry.lookup("math.add")
        blocking = registry.lookup("blocking")
        assert add is not None and blocking is not None
        self.assertIs(add.func, module.add)
        self.assertEqual((add.thread, blocking.thread), (False, True))

    def test_addModuleCount(self) -> None:
        """
        L{Registry.addModule} returns how many methods it registered.
        """
        registry = Registry()
        self.assertEqual(registry.addModule(makeModule("agilerpc_test_fake")), 3)

    def test_dottedName(self) -> None:
        """
        A module can be given by its dotted name; it is imported.
        """
        name = "agilerpc_test_dotted"
        self.addCleanup(sys.modules.pop, name, None)
        sys.modules[name] = makeModule(name)
        registry = Registry.fromModule(name)
        self.assertIn("sayHello", registry)
        self.assertEqual(Registry().addModule(name), 3)

    def test_dottedNameNotImportable(self) -> None:
        """
        A dotted name that does not import raises L{ImportError}.
        """
        with self.assertRaises(ImportError):
            Registry.fromModule("agilerpc_test_no_such_module")

    def test_twoModulesClash(self) -> None:
        """
        Two modules offering the same name cannot both be added.
        """
        registry = Registry()
        registry.addModule(makeModule("one"))
        with self.assertRaises(ValueError):
            registry.addModule(makeModule("two"))


class Service:
    """
    An object with marked and unmarked methods, and a property that must not
    be evaluated.
    """

    def __init__(self) -> None:
        self.calls = 0
        self.propertyRead = False

    @rpc
    def ping(self) -> str:
        """
        Answer pong.
        """
        self.calls += 1
        return "pong"

    @rpc(name="add")
    def plus(self, a: int, b: int) -> int:
        return a + b

    @rpc(thread=True)
    def slow(self) -> None:
        pass

    @staticmethod
    @rpc
    def static(x: int) -> int:
        return x

    def helper(self) -> None:
        pass

    @property
    def expensive(self) -> int:
        self.propertyRead = True
        raise AssertionError("a property was evaluated")


class RegisterObjectTests(SynchronousTestCase):
    """
    L{Registry.registerObject} registers an object's marked methods.
    """

    def test_prefix(self) -> None:
        """
        Marked methods are registered bound, as C{prefix.name}; unmarked ones
        and properties are not, and properties are not evaluated.
        """
        service = Service()
        registry = Registry()
        count = registry.registerObject(service, prefix="svc")
        self.assertEqual(count, 4)
        self.assertEqual(
            registry.names(),
            ["svc.add", "svc.ping", "svc.slow", "svc.static", *BUILTINS],
        )
        self.assertFalse(service.propertyRead)
        ping = registry.lookup("svc.ping")
        slow = registry.lookup("svc.slow")
        assert ping is not None and slow is not None
        self.assertEqual(ping.func(), "pong")
        self.assertEqual(service.calls, 1)
        self.assertEqual((ping.thread, slow.thread), (False, True))

    def test_noPrefix(self) -> None:
        """
        Without a prefix the methods keep their bare names.
        """
        registry = Registry()
        registry.registerObject(Service())
        self.assertEqual(registry.names(), ["add", "ping", "slow", "static", *BUILTINS])

    def test_boundSignature(self) -> None:
        """
        The signature checked for a method does not include C{self}.
        """
        registry = Registry()
        registry.registerObject(Service(), prefix="svc")
        add = registry.lookup("svc.add")
        assert add is not None
        add.checkArguments([1, 2], {})
        with self.assertRaises(InvalidParams):
            add.checkArguments([object(), 1, 2], {})


class BuiltinTests(SynchronousTestCase):
    """
    C{system.listMethods} and C{system.describe}.
    """

    def setUp(self) -> None:
        self.registry = Registry()
        self.registry.register(plain, name="math.plain")

    def call(self, name: str, *args: Any) -> Any:
        method = self.registry.lookup(name)
        assert method is not None
        return method.func(*args)

    def test_listMethods(self) -> None:
        """
        C{system.listMethods} returns every name, sorted.
        """
        self.assertEqual(self.call("system.listMethods"), ["math.plain", *BUILTINS])
        self.registry.register(plain, name="later")
        self.assertEqual(
            self.call("system.listMethods"), ["later", "math.plain", *BUILTINS]
        )

    def test_describe(self) -> None:
        """
        C{system.describe} maps every name to its signature and docstring.
        """
        description = self.call("system.describe")
        self.assertEqual(sorted(description), ["math.plain", *BUILTINS])
        self.assertEqual(
            description["math.plain"],
            {
                "signature": "(a: int, b: int = 2) -> int",
                "doc": "Add two numbers.",
                "idempotent": False,
                "params": [
                    {
                        "name": "a",
                        "kind": "positional_or_keyword",
                        "required": True,
                        "annotation": "int",
                    },
                    {
                        "name": "b",
                        "kind": "positional_or_keyword",
                        "required": False,
                        "default": 2,
                        "annotation": "int",
                    },
                ],
                "returns": "int",
            },
        )
        self.assertEqual(
            description["system.listMethods"]["signature"], "() -> list[str]"
        )
        self.assertIn("names", description["system.listMethods"]["doc"])

    def test_describeNoDoc(self) -> None:
        """
        A handler without a docstring is described with an empty doc.
        """
        self.registry.register(lambda x: x, name="nodoc")
        self.assertEqual(
            self.call("system.describe")["nodoc"],
            {
                "signature": "(x)",
                "doc": "",
                "idempotent": False,
                "params": [
                    {"name": "x", "kind": "positional_or_keyword", "required": True}
                ],
            },
        )

    def test_describeIdempotent(self) -> None:
        """
        C{system.describe} says which methods are idempotent: those
        registered with C{idempotent=True} or marked C{@rpc(idempotent=True)},
        and the two built-ins, which only read; every other is not.
        """
        self.registry.register(plain, name="get", idempotent=True)

        @rpc(idempotent=True)
        def put(x: int) -> None:
            pass

        self.registry.registerMarked([("put", put)])
        description = self.call("system.describe")
        self.assertEqual(
            {name: entry["idempotent"] for name, entry in description.items()},
            {
                "get": True,
                "math.plain": False,
                "put": True,
                "system.describe": True,
                "system.listMethods": True,
            },
        )
        method = self.registry.lookup("get")
        assert method is not None
        self.assertTrue(method.idempotent)

    def test_idempotentMustBeBool(self) -> None:
        """
        C{register(idempotent=...)} takes True or False only: a truthy
        string would mark a method by mistake.
        """
        with self.assertRaises(TypeError):
            self.registry.register(plain, name="x", idempotent="no")  # type: ignore[arg-type]
        self.assertNotIn("x", self.registry)

    def test_describeNoSignature(self) -> None:
        """
        A builtin without an introspectable signature is described as
        C{(...)}, without C{params}, and accepts any arguments.
        """
        method = self.registry.register(max, name="nosig")
        if method.signature is not None:
            raise self.skipTest("max has a signature on this Python")
        description = self.call("system.describe")["nosig"]
        self.assertEqual(description["signature"], "(...)")
        self.assertNotIn("params", description)
        method.checkArguments([1, 2, 3, 4], {"x": 1})


class CheckArgumentsTests(SynchronousTestCase):
    """
    L{Method.checkArguments} raises L{InvalidParams} when a call does not bind.
    """

    def setUp(self) -> None:
        self.method = Method("plain", plain, False)

    def test_binds(self) -> None:
        """
        Arguments that bind raise nothing.
        """
        self.method.checkArguments([1], {})
        self.method.checkArguments([1, 2], {})
        self.method.checkArguments([], {"a": 1, "b": 2})

    def test_doesNotBind(self) -> None:
        """
        Too many or too few arguments, an unknown or repeated keyword are
        L{InvalidParams} naming the method.
        """
        for args, kwargs in [
            ([1, 2, 3], {}),
            ([], {}),
            ([1], {"c": 3}),
            ([1], {"a": 1}),
        ]:
            with self.assertRaises(InvalidParams) as caught:
                self.method.checkArguments(args, kwargs)
            self.assertEqual(caught.exception.type, "InvalidParams")
            self.assertTrue(
                caught.exception.message.startswith("plain: "),
                caught.exception.message,
            )


class RegistryEdgeTests(SynchronousTestCase):
    def test_nameMustBeStr(self) -> None:
        """
        A name that is not a str is a TypeError.
        """
        self.assertRaises(TypeError, Registry().register, len, 5)

    def test_reexportedHandlersServedOnce(self) -> None:
        """
        Adding a module and another that re-exports its marked functions
        serves each function once instead of refusing the duplicate name.
        """

        @rpc
        def shared() -> int:
            return 1

        first = types.ModuleType("first")
        first.shared = shared  # type: ignore[attr-defined]
        second = types.ModuleType("second")
        second.shared = shared  # type: ignore[attr-defined]
        registry = Registry()
        self.assertEqual(registry.addModule(first), 1)
        self.assertEqual(registry.addModule(second), 0)
        self.assertIn("shared", registry)

    def test_differentFunctionSameNameRefused(self) -> None:
        """
        Two different functions under one name are still refused.
        """

        @rpc(name="x")
        def one() -> int:
            return 1

        @rpc(name="x")
        def two() -> int:
            return 2

        module = types.ModuleType("m")
        module.one = one  # type: ignore[attr-defined]
        module.two = two  # type: ignore[attr-defined]
        self.assertRaises(ValueError, Registry().addModule, module)


class ArityTests(SynchronousTestCase):
    """
    L{Method.checkArguments} agrees with L{inspect.Signature.bind} for every
    kind of signature, whether or not it takes its positional fast path.
    """

    def assertAgrees(self, func: Any, args: list[Any], kwargs: dict[str, Any]) -> None:
        method = Method("f", func, False)
        try:
            inspect.signature(func).bind(*args, **kwargs)
        except TypeError:
            self.assertRaises(InvalidParams, method.checkArguments, args, kwargs)
        else:
            method.checkArguments(args, kwargs)

    def test_signatures(self) -> None:
        """
        Positional, defaulted, *args, keyword-only (required or not) and
        **kwargs parameters, with 0 to 4 positional arguments and with and
        without a keyword argument.
        """

        def plain(a: Any, b: Any) -> None: ...
        def defaults(a: Any, b: Any = 1) -> None: ...
        def star(a: Any, *rest: Any) -> None: ...
        def kwonly(a: Any, *, k: Any) -> None: ...
        def kwonlyDefault(a: Any, *, k: Any = 1) -> None: ...
        def starstar(a: Any, **kw: Any) -> None: ...
        def posonly(a: Any, /, b: Any = 2) -> None: ...
        def nothing() -> None: ...

        for func in [
            plain,
            defaults,
            star,
            kwonly,
            kwonlyDefault,
            starstar,
            posonly,
            nothing,
        ]:
            for n in range(5):
                for kwargs in ({}, {"k": 1}, {"b": 1}, {"a": 1}):
                    self.assertAgrees(func, list(range(n)), kwargs)


class DescribeSignatureTests(SynchronousTestCase):
    def test_textAndObjectAnnotationsShowAlike(self) -> None:
        """
        Annotations kept as text (postponed evaluation) are shown without
        quotes, like annotations that are objects.
        """

        def f(a, b=2):  # type: ignore[no-untyped-def]
            return a

        f.__annotations__ = {"a": int, "b": "int", "return": "list[int]"}
        self.assertEqual(
            Method("f", f, False).describe()["signature"],
            "(a: int, b: int = 2) -> list[int]",
        )
