"""
The C{agilerpc} command line: call a method, or list what a server serves::

    agilerpc call 127.0.0.1:9988 sayHello zhangsan
    agilerpc call 127.0.0.1:9988 add 1 2
    agilerpc call --kwarg b=2 127.0.0.1:9988 add 1
    agilerpc methods 127.0.0.1:9988
    agilerpc call --tls-ca ca.pem --token-file token.txt host:9988 sayHello x

Each ARG (and each --kwarg value) is parsed as JSON when it parses, and
taken as a string otherwise: C{1} is a number, C{'"1"'} and C{x} are strings,
C{'[1, 2]'} a list, C{null} is nil.  The result is printed as one line of
JSON; bytes (msgpack bin) are printed as C{{"$bytes": "<base64>"}}, so they
cannot be confused with strings.

Exit status (a one-line message on stderr for every failure):
  - 0: success;
  - 1: the call failed on the server (C{MethodNotFound: ...}), or the server
    sent something this client does not understand;
  - 2: bad usage, such as an address that is not HOST:PORT;
  - 3: cannot connect (refused, unknown host, unreachable): nothing was sent;
  - 4: the call timed out: it may or may not have run;
  - 5: the connection was lost during the call: it may or may not have run.
"""

from __future__ import annotations

import argparse
import base64
import json
import ssl
import sys
from typing import Any

from . import _address
from ._blocking import TcpRpcClient
from ._calloptions import parseMetadataPair
from ._errors import CallLost, NotServed, RemoteError, RpcError
from ._version import __version__

EXIT_OK = 0
EXIT_REMOTE_ERROR = 1
EXIT_USAGE = 2
EXIT_CONNECT = 3
EXIT_TIMEOUT = 4
EXIT_LOST = 5

DEFAULT_TIMEOUT = 10.0

_EPILOG = """\
ARG and --kwarg values are parsed as JSON when they parse, else taken as
strings.  The result is printed as JSON; bytes as {"$bytes": "<base64>"}.

TLS: --tls verifies the server against the system's CA store; --tls-ca
FILE trusts only the CAs in FILE; --tls-cert and --tls-key present a client
certificate (mutual TLS).  Each --tls-* option implies --tls.

exit status: 0 success, 1 remote error (Unauthorized included), 2 usage
error, 3 cannot connect (TLS verification failures included), 4 timeout,
5 connection lost during the call.
"""


def parseAddress(text: str) -> tuple[str, int]:
    """
    Parse C{HOST:PORT} (C{[ADDRESS]:PORT} for IPv6) with
    L{agilerpc._address.parseAddress}.

    @raise argparse.ArgumentTypeError: if C{text} is not one.
    """
    try:
        return _address.parseAddress(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def parseValue(text: str) -> Any:
    """
    C{text} parsed as JSON if it parses, else C{text} itself.
    """
    try:
        return json.loads(text)
    except ValueError:
        return text


def _parseKwarg(text: str) -> tuple[str, Any]:
    name, sep, value = text.partition("=")
    if not sep or not name:
        raise argparse.ArgumentTypeError(f"expected NAME=VALUE, not {text!r}")
    return name, parseValue(value)


def _parseMetadata(text: str) -> tuple[str, str]:
    try:
        return parseMetadataPair(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def _parseTimeout(text: str) -> float | None:
    try:
        timeout = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected a number of seconds, not {text!r}"
        ) from None
    if not timeout >= 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, not {text!r}")
    return timeout or None


def toJSON(value: Any) -> str:
    """
    C{value}, as msgpack decoded it, as one line of JSON: bytes become
    C{{"$bytes": "<base64>"}} (map keys: C{"$bytes:<base64>"}), and anything
    else JSON has no form for (msgpack extension types) its C{str()}.
    """
    limit = sys.getrecursionlimit()
    # A value may nest 1024 arrays and maps (PROTOCOL.md section 3), and
    # converting and encoding one takes a few frames a level: more than
    # Python's default limit of 1000 allows.
    sys.setrecursionlimit(max(limit, _FRAMES_FOR_DEEPEST))
    try:
        return json.dumps(_jsonable(value), ensure_ascii=False, default=str)
    finally:
        sys.setrecursionlimit(limit)


_FRAMES_FOR_DEEPEST = 4 * 1024 + 200


def _jsonable(value: Any) -> Any:
    if isinstance(value, bytes):
        return {"$bytes": base64.b64encode(value).decode("ascii")}
    if isinstance(value, list):
        return [_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {
            ("$bytes:" + base64.b64encode(k).decode("ascii"))
            if isinstance(k, bytes)
            else k: _jsonable(v)
            for k, v in value.items()
        }
    return value


def _parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--timeout",
        type=_parseTimeout,
        default=DEFAULT_TIMEOUT,
        metavar="SECONDS",
        help=f"give up after this long, connect included (default "
        f"{DEFAULT_TIMEOUT:g}; 0: never)",
    )
    common.add_argument(
        "--token-file",
        metavar="PATH",
        help="send the token in this file (trailing newline stripped) to the "
        "server first",
    )
    common.add_argument(
        "--tls",
        action="store_true",
        help="connect with TLS, verifying the server with the system CA store",
    )
    common.add_argument(
        "--tls-ca", metavar="FILE", help="trust only the CA certificates in FILE"
    )
    common.add_argument(
        "--tls-cert", metavar="FILE", help="client certificate (PEM), for mutual TLS"
    )
    common.add_argument(
        "--tls-key", metavar="FILE", help="private key of --tls-cert (PEM)"
    )
    common.add_argument(
        "--tls-hostname",
        metavar="NAME",
        help="the name the server's certificate must match (default: HOST)",
    )
    parser = argparse.ArgumentParser(
        prog="agilerpc",
        description="Call methods on an agilerpc server.",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--version", action="version", version=f"agilerpc {__version__}"
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    commands.required = True

    call = commands.add_parser(
        "call",
        parents=[common],
        help="call METHOD with ARGs and print its result as JSON",
        description="Call METHOD with ARGs and print its result as JSON.",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    call.add_argument(
        "--kwarg",
        type=_parseKwarg,
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="a keyword argument (repeatable)",
    )
    call.add_argument(
        "--metadata",
        type=_parseMetadata,
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="send this metadata with the call (repeatable; VALUE is a string)",
    )
    call.add_argument(
        "--stream",
        action="store_true",
        help="call a streaming method: print each item as a JSON line as it comes",
    )
    call.add_argument("address", type=parseAddress, metavar="HOST:PORT")
    call.add_argument("method", metavar="METHOD")
    call.add_argument("args", type=parseValue, nargs="*", metavar="ARG")

    methods = commands.add_parser(
        "methods",
        parents=[common],
        help="list the methods a server serves, with signatures and docs",
        description="List the methods a server serves, with signatures and docs.",
    )
    methods.add_argument("address", type=parseAddress, metavar="HOST:PORT")
    methods.add_argument(
        "--json", action="store_true", help="print system.describe's result as JSON"
    )
    return parser


def _describe(description: Any) -> str:
    """
    The text C{agilerpc methods} prints for C{system.describe}'s result.
    """
    if not isinstance(description, dict):
        raise ValueError(f"system.describe returned {description!r}")
    lines = []
    for name in sorted(description):
        entry = description[name]
        if not isinstance(entry, dict):
            entry = {}
        lines.append(f"{name}{entry.get('signature', '(...)')}")
        doc = entry.get("doc") or ""
        lines.extend("    " + line if line else "" for line in str(doc).splitlines())
    return "\n".join(lines)


def _oneLine(text: str) -> str:
    return " ".join(text.split("\n"))


def main(argv: list[str] | None = None) -> int:
    """
    Run the command line C{argv} (default: C{sys.argv[1:]}); the exit status.
    """
    try:
        options = _parser().parse_args(argv)
    except SystemExit as e:
        return e.code if isinstance(e.code, int) else EXIT_USAGE
    host, port = options.address
    where = f"{host}:{port}"
    try:
        token = _readTokenFile(options.token_file)
        context = _tlsContext(options)
    except _UsageError as e:
        return _fail(EXIT_USAGE, str(e))
    security: dict[str, Any] = {}
    if context is not None:
        security.update(ssl_context=context, server_hostname=options.tls_hostname)
    if token is not None:
        security["token"] = token
    try:
        with TcpRpcClient(
            host, port, options.timeout, connectRetry=0, **security
        ) as client:
            if options.command == "call" and options.stream:
                try:
                    items = client.callStream(
                        options.method,
                        options.args,
                        dict(options.kwarg),
                        metadata=dict(options.metadata) or None,
                    )
                    for item in items:
                        sys.stdout.write(toJSON(item) + "\n")
                        sys.stdout.flush()
                except ssl.SSLError:
                    raise
                except (TypeError, ValueError, OverflowError) as e:
                    return _fail(EXIT_USAGE, f"cannot encode the arguments: {e}")
                return EXIT_OK
            if options.command == "call":
                try:
                    result = client.call(
                        options.method,
                        options.args,
                        dict(options.kwarg),
                        metadata=dict(options.metadata) or None,
                    )
                except ssl.SSLError:
                    # Also a ValueError: handled below as a connect failure.
                    raise
                except (TypeError, ValueError, OverflowError) as e:
                    # msgpack cannot encode them (an integer beyond 64 bits).
                    return _fail(EXIT_USAGE, f"cannot encode the arguments: {e}")
                output = toJSON(result)
            else:
                result = client.call("system.describe")
                try:
                    output = toJSON(result) if options.json else _describe(result)
                except ValueError as e:
                    return _fail(EXIT_REMOTE_ERROR, str(e))
    except RemoteError as e:
        return _fail(EXIT_REMOTE_ERROR, str(e))
    except CallLost as e:
        return _fail(EXIT_LOST, str(e))
    except TimeoutError as e:
        if e.errno is None:
            return _fail(EXIT_TIMEOUT, f"timed out: {e}")
        return _fail(EXIT_CONNECT, f"cannot connect to {where}: {e.strerror}")
    except ssl.SSLError as e:
        return _fail(EXIT_CONNECT, f"cannot connect to {where}: TLS: {e}")
    except NotServed as e:
        return _fail(EXIT_CONNECT, f"cannot connect to {where}: {e.message}")
    except OSError as e:
        return _fail(EXIT_CONNECT, f"cannot connect to {where}: {e.strerror or e}")
    except RpcError as e:
        # Decided here: a response this client cannot read, a request too
        # large to send.
        return _fail(EXIT_REMOTE_ERROR, str(e))
    except KeyboardInterrupt:
        return 130
    sys.stdout.write(output + "\n")
    sys.stdout.flush()
    return EXIT_OK


class _UsageError(Exception):
    """
    A bad option value found after parsing (an unreadable file, say).
    """


def _readTokenFile(path: str | None) -> bytes | None:
    """
    The token in the file at C{path} without its trailing newline, or
    L{None} without C{path}.
    """
    if path is None:
        return None
    try:
        with open(path, "rb") as f:
            token = f.read().rstrip(b"\r\n")
    except OSError as e:
        raise _UsageError(f"--token-file {path}: {e.strerror or e}") from None
    if not token:
        raise _UsageError(f"--token-file {path}: the file is empty")
    return token


def _tlsContext(options: argparse.Namespace) -> ssl.SSLContext | None:
    """
    The TLS context the options ask for, or L{None} for plain TCP.
    """
    if (options.tls_cert is None) != (options.tls_key is None):
        raise _UsageError("--tls-cert and --tls-key go together")
    if not (options.tls or options.tls_ca or options.tls_cert or options.tls_hostname):
        return None
    try:
        context = ssl.create_default_context(cafile=options.tls_ca)
    except (OSError, ssl.SSLError) as e:
        raise _UsageError(f"--tls-ca {options.tls_ca}: {_why(e)}") from None
    if options.tls_cert is not None:
        try:
            context.load_cert_chain(options.tls_cert, options.tls_key)
        except (OSError, ssl.SSLError) as e:
            raise _UsageError(
                f"--tls-cert {options.tls_cert} --tls-key {options.tls_key}: {_why(e)}"
            ) from None
    return context


def _why(e: OSError) -> str:
    return str(e.strerror or e) if not isinstance(e, ssl.SSLError) else str(e)


def _fail(status: int, message: str) -> int:
    sys.stderr.write(f"agilerpc: {_oneLine(message)}\n")
    return status
