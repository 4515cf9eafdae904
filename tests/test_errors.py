# mypy reports trial's untyped assertions called through self under the test
# class's name, which untyped_calls_exclude = ["twisted"] does not match.
# mypy: disable-error-code="no-untyped-call"
"""
Tests for L{agilerpc._errors}: the error map an L{RpcError} is sent as, the
exception L{RemoteError.fromWire} builds from a received one, and the local
errors a client raises.
"""

from __future__ import annotations

import inspect
from typing import Any

from twisted.trial.unittest import SynchronousTestCase

import agilerpc
from agilerpc import (
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
    TLSRefused,
    Unauthorized,
)
from agilerpc._errors import _StandardError

from .protocoldoc import loadVectors

STANDARD: list[type[_StandardError]] = [
    MethodNotFound,
    InvalidParams,
    InvalidRequest,
    Cancelled,
    ServerBusy,
    Unauthorized,
    InvalidResult,
    DeadlineExceeded,
]

LOCAL: list[type[LocalError]] = [
    CallLost,
    CallTimeout,
    ClientClosed,
    InvalidResponse,
    NotServed,
    QueueFull,
    RequestTooLarge,
    TLSRefused,
    FeatureNotSupported,
    MetadataTooLarge,
    NotIdempotent,
]


class RpcErrorTests(SynchronousTestCase):
    """
    Tests for L{RpcError}.
    """

    def test_attributes(self) -> None:
        """
        The type, message and data given are kept, and passed to
        L{Exception} as its args.
        """
        error = RpcError("Overdrawn", "balance too low", {"balance": -3})
        self.assertEqual(error.type, "Overdrawn")
        self.assertEqual(error.message, "balance too low")
        self.assertEqual(error.data, {"balance": -3})
        self.assertEqual(error.args, ("Overdrawn", "balance too low", {"balance": -3}))
        self.assertIsNone(RpcError("T", "m").data)

    def test_str(self) -> None:
        """
        C{str()} is C{"type: message"}, without the data.
        """
        self.assertEqual(
            str(RpcError("Overdrawn", "balance too low", [1])),
            "Overdrawn: balance too low",
        )

    def test_toWire(self) -> None:
        """
        The error map has C{type} and C{message}, and C{data} only when there
        is data.
        """
        self.assertEqual(RpcError("T", "m").toWire(), {"type": "T", "message": "m"})
        self.assertEqual(
            RpcError("T", "m", {"k": b"v"}).toWire(),
            {"type": "T", "message": "m", "data": {"k": b"v"}},
        )

    def test_toWireFalsyData(self) -> None:
        """
        Data that is false but not L{None} is still sent.
        """
        for data in [0, "", False, [], {}]:
            self.assertEqual(
                RpcError("T", "m", data).toWire(),
                {"type": "T", "message": "m", "data": data},
            )

    def test_toWireKeyOrder(self) -> None:
        """
        The keys come in the order of the protocol document's vectors: type,
        message, data.
        """
        self.assertEqual(
            list(RpcError("T", "m", 1).toWire()), ["type", "message", "data"]
        )


class StandardErrorTests(SynchronousTestCase):
    """
    Tests for the standard subclasses of L{RemoteError}.
    """

    def test_typeIsClassName(self) -> None:
        """
        Each standard error's wire type is its class name, and it is a
        L{RemoteError} and an L{RpcError}.
        """
        for cls in STANDARD:
            error = cls("went wrong", {"d": 1})
            self.assertIsInstance(error, RemoteError)
            self.assertIsInstance(error, RpcError)
            self.assertEqual(error.type, cls.__name__)
            self.assertEqual(error.message, "went wrong")
            self.assertEqual(error.data, {"d": 1})
            self.assertEqual(str(error), f"{cls.__name__}: went wrong")
            self.assertEqual(
                error.toWire(),
                {"type": cls.__name__, "message": "went wrong", "data": {"d": 1}},
            )

    def test_noData(self) -> None:
        """
        Data defaults to L{None} and is then left off the wire.
        """
        self.assertEqual(
            MethodNotFound("no method named 'x'").toWire(),
            {"type": "MethodNotFound", "message": "no method named 'x'"},
        )

    def test_exported(self) -> None:
        """
        Every standard error, and the local client errors, are public names of
        the package.
        """
        for cls in [
            *STANDARD,
            *LOCAL,
            RpcError,
            RemoteError,
            LocalError,
            MessageTooLarge,
            RemoteMessageTooLarge,
        ]:
            self.assertIs(getattr(agilerpc, cls.__name__), cls)
            self.assertIn(cls.__name__, agilerpc.__all__)


class FromWireTests(SynchronousTestCase):
    """
    Tests for L{RemoteError.fromWire}.
    """

    def test_standardTypes(self) -> None:
        """
        A standard type becomes its own subclass, with the message and data
        received.
        """
        for cls in STANDARD:
            error = RemoteError.fromWire(
                {"type": cls.__name__, "message": "m", "data": [1, b"2"]}
            )
            self.assertIs(type(error), cls)
            self.assertEqual(
                (error.type, error.message, error.data), (cls.__name__, "m", [1, b"2"])
            )

    def test_roundTrip(self) -> None:
        """
        C{fromWire(e.toWire())} gives back an equal error of the same class.
        """
        for error in [
            *(cls("m", {"k": 1}) for cls in STANDARD),
            RemoteError("Custom", "m", None),
        ]:
            again = RemoteError.fromWire(error.toWire())
            self.assertIs(type(again), type(error))
            self.assertEqual(again.toWire(), error.toWire())

    def test_unknownType(self) -> None:
        """
        Any other type, such as a handler's exception class name, becomes a
        plain L{RemoteError} keeping its type, message and data.
        """
        error = RemoteError.fromWire(
            {"type": "ZeroDivisionError", "message": "division by zero", "data": 7}
        )
        self.assertIs(type(error), RemoteError)
        self.assertEqual(
            (error.type, error.message, error.data),
            ("ZeroDivisionError", "division by zero", 7),
        )
        self.assertEqual(str(error), "ZeroDivisionError: division by zero")

    def test_localNamesNotStandard(self) -> None:
        """
        A server cannot make a client raise its local errors, or the base
        classes: those type names give a plain L{RemoteError}.
        """
        for name in [
            "CallLost",
            "ClientClosed",
            "QueueFull",
            "RpcError",
            "RemoteError",
            "_StandardError",
            "Exception",
        ]:
            error = RemoteError.fromWire({"type": name, "message": "m"})
            self.assertIs(type(error), RemoteError, name)
            self.assertEqual(error.type, name)

    def test_noData(self) -> None:
        """
        A missing C{data} is L{None}; unknown keys are ignored.
        """
        error = RemoteError.fromWire({"type": "Cancelled", "message": "m", "x": 1})
        self.assertIs(type(error), Cancelled)
        self.assertIsNone(error.data)
        self.assertEqual(error.toWire(), {"type": "Cancelled", "message": "m"})

    def test_badType(self) -> None:
        """
        A missing or non-str type is reported as C{"RemoteError"}, never as a
        standard type.
        """
        for error_map in [
            {"message": "m"},
            {"type": None, "message": "m"},
            {"type": 1, "message": "m"},
            {"type": b"MethodNotFound", "message": "m"},
            {"type": ["MethodNotFound"], "message": "m"},
        ]:
            error = RemoteError.fromWire(error_map)
            self.assertIs(type(error), RemoteError, error_map)
            self.assertEqual((error.type, error.message), ("RemoteError", "m"))

    def test_badMessage(self) -> None:
        """
        A missing or non-str message becomes the C{repr} of what was there, so
        the error is still readable.
        """
        cases: list[tuple[dict[str, Any], str]] = [
            ({"type": "T"}, "None"),
            ({"type": "T", "message": 123}, "123"),
            ({"type": "T", "message": b"raw"}, "b'raw'"),
            ({"type": "MethodNotFound", "message": ["a"]}, "['a']"),
        ]
        for error_map, message in cases:
            error = RemoteError.fromWire(error_map)
            self.assertEqual(error.message, message, error_map)
            self.assertIsInstance(error.message, str)

    def test_notAMap(self) -> None:
        """
        An error that is not a map gives an L{InvalidResponse} (returned, not
        raised) that shows what was received.
        """
        for value in ["MethodNotFound", ["MethodNotFound", "m"], 1, None, b"x"]:
            error = RemoteError.fromWire(value)
            self.assertIs(type(error), InvalidResponse)
            self.assertEqual(error.message, f"error is not a map: {value!r}")
            self.assertIsNone(error.data)

    def test_protocolVectors(self) -> None:
        """
        Every error map in the protocol document's vectors turns into the
        class its type names and back into the same map.
        """
        errors = [
            v.message[2]
            for v in loadVectors()
            if v.message[0] == 1 and v.message[2] is not None
        ]
        self.assertGreaterEqual(len(errors), 5)
        classes: dict[str, type[RemoteError]] = {cls.__name__: cls for cls in STANDARD}
        classes["MessageTooLarge"] = RemoteMessageTooLarge
        for error_map in errors:
            error = RemoteError.fromWire(error_map)
            self.assertIs(type(error), classes.get(error_map["type"], RemoteError))
            self.assertEqual(error.toWire(), error_map)


class LocalErrorTests(SynchronousTestCase):
    """
    Tests for the errors a client raises itself, without a server's answer.
    """

    def test_connectionLostSaysCallMayHaveRun(self) -> None:
        """
        L{CallLost} tells the user that the call may or may not have run
        and was therefore not resent.
        """
        doc = " ".join((inspect.getdoc(CallLost) or "").split())
        self.assertIn("may or may not have run", doc)
        self.assertIn("not resent", doc)
        self.assertIn("Retry it yourself only if it is safe to repeat", doc)

    def test_connectionLostKeepsMessage(self) -> None:
        """
        The message a client gives L{CallLost} is its C{str()}.
        """
        message = "the connection was lost: it may or may not have run"
        self.assertEqual(str(CallLost(message)), message)

    def test_localErrorsAreNotRemote(self) -> None:
        """
        Local errors share the root L{RpcError} with the server's errors but
        are not L{RemoteError}s: C{except RemoteError} does not catch them,
        so a lost connection is never mistaken for a server's answer.
        """
        for cls in LOCAL:
            self.assertTrue(issubclass(cls, LocalError), cls)
            self.assertTrue(issubclass(cls, RpcError), cls)
            self.assertFalse(issubclass(cls, RemoteError), cls)
        for standard in STANDARD:
            self.assertFalse(issubclass(standard, LocalError), standard)

    def test_localTypeIsClassName(self) -> None:
        """
        A local error's type is its class name and its C{str()} is its
        message alone.
        """
        for cls in LOCAL:
            if cls is RequestTooLarge:
                continue  # its type is MessageTooLarge: see below
            error = cls("went wrong")
            self.assertEqual(
                (error.type, error.message, str(error)),
                (cls.__name__, "went wrong", "went wrong"),
            )

    def test_messageTooLargeEitherSide(self) -> None:
        """
        C{except MessageTooLarge} catches the server's error and the
        client's own refusal to send; only the server's is a
        L{RemoteError}, and both have the wire type C{"MessageTooLarge"}.
        """
        remote = RemoteError.fromWire({"type": "MessageTooLarge", "message": "m"})
        local = RequestTooLarge("m")
        self.assertIs(type(remote), RemoteMessageTooLarge)
        for error in [remote, local, MessageTooLarge("m")]:
            self.assertIsInstance(error, MessageTooLarge)
            self.assertEqual(error.type, "MessageTooLarge")
            self.assertEqual(
                error.toWire(), {"type": "MessageTooLarge", "message": "m"}
            )
        self.assertIsInstance(remote, RemoteError)
        self.assertNotIsInstance(local, RemoteError)
        self.assertIsInstance(local, LocalError)

    def test_standardLibraryBases(self) -> None:
        """
        L{CallTimeout} is a L{TimeoutError} and L{NotServed} a
        L{ConnectionRefusedError}, both without an errno, so code that
        caught the standard library's errors still does.
        """
        timeout = CallTimeout("f() timed out after 1 s")
        self.assertIsInstance(timeout, TimeoutError)
        self.assertIsNone(timeout.errno)
        self.assertEqual(str(timeout), "f() timed out after 1 s")
        refused = NotServed("busy")
        self.assertIsInstance(refused, ConnectionRefusedError)
        self.assertIsNone(refused.errno)
