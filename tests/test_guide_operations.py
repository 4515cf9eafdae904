# mypy reports trial's untyped assertions called through self under the test
# class's name, which untyped_calls_exclude = ["twisted"] does not match.
# mypy: disable-error-code="no-untyped-call"
"""
The examples of the guide's operations pages (context, security,
deployment, observability, cli), run against real servers on 127.0.0.1:
each file under C{docs/examples/} that those pages include is loaded with
L{loadExample} and run, so that an example drifting from the API fails
here.  The command lines the pages show are checked against the options
C{twistd agilerpc} and C{agilerpc call} really have.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import shlex
import shutil
import ssl
import subprocess
from pathlib import Path
from typing import Any

from twisted.internet import reactor as globalReactor
from twisted.internet.defer import Deferred, ensureDeferred
from twisted.internet.threads import deferToThread
from twisted.logger import Logger, LogLevel, globalLogPublisher
from twisted.names import dns
from twisted.scripts._twistd_unix import ServerOptions
from twisted.trial.unittest import SynchronousTestCase, TestCase
from twisted.web.client import Agent, readBody

from agilerpc import (
    Registry,
    RemoteError,
    RpcClient,
    RpcServerFactory,
    TLSRefused,
    Unauthorized,
    _cli,
    jsonLogObserver,
    tap,
)
from agilerpc.examples import hello
from agilerpc.metrics import ServerMetrics

from . import serverprocess
from .dnshelpers import FakeResolver, a, srv
from .docexamples import examplePath, loadExample
from .serverprocess import ServerProcess
from .tlshelpers import pki

DOCS = Path(__file__).resolve().parent.parent / "docs"
GUIDE = DOCS / "guide"

# The bound on the calls the examples make, and on every test.
WAIT = 10.0


def page(name: str) -> str:
    """
    The text of C{docs/guide/NAME.md}.
    """
    return (GUIDE / f"{name}.md").read_text(encoding="utf-8")


def serve(testCase: TestCase, registry: Registry, **kwargs: Any) -> tuple[Any, int]:
    """
    Serve C{registry} on 127.0.0.1 with an L{RpcServerFactory} made with
    C{kwargs}, until the test ends; the factory and its port.
    """
    return listen(testCase, RpcServerFactory(registry, globalReactor, **kwargs))


def listen(testCase: TestCase, factory: Any) -> tuple[Any, int]:
    """
    Serve C{factory} on 127.0.0.1 until the test ends; it and its port.
    """
    port: Any = globalReactor.listenTCP(0, factory, interface="127.0.0.1")
    testCase.addCleanup(port.stopListening)
    testCase.addCleanup(abortAll, factory)
    return factory, port.getHost().port


def abortAll(factory: RpcServerFactory) -> None:
    """
    Cut whatever connection a test left open.
    """
    for protocol in list(factory.connections):
        assert protocol.transport is not None
        protocol.transport.abortConnection()


def run(coroutine: Any) -> Deferred[Any]:
    """
    The Deferred of C{coroutine}, failing if it takes longer than L{WAIT}.
    """
    return ensureDeferred(coroutine).addTimeout(WAIT, globalReactor)


# -- command lines shown on the pages ------------------------------------------

_TWISTD_OPTIONS = ServerOptions()


def _longOptions(options: Any) -> dict[str, bool]:
    """
    The long options of a L{twisted.python.usage.Options}, each with whether
    it takes a value.
    """
    names: dict[str, bool] = {}
    for cls in type(options).__mro__:
        for long, *_ in cls.__dict__.get("optParameters", []):
            names[long] = True
        for long, *_ in cls.__dict__.get("optFlags", []):
            names[long] = False
    for attribute in dir(options):
        if attribute.startswith("opt_"):
            name = attribute[4:].replace("_", "-")
            method = getattr(options, attribute)
            takesValue = method.__code__.co_argcount > 1
            names.setdefault(name, takesValue)
    return names


TAP_OPTIONS = {
    name: value
    for name, value in _longOptions(tap.Options()).items()
    if name not in ("help", "version")
}
TWISTD_OPTIONS = _longOptions(_TWISTD_OPTIONS)


def codeBlocks(markdown: str) -> str:
    """
    The fenced code blocks of C{markdown}, one after the other (not the
    directives, such as a graphviz diagram).
    """
    fence = re.compile(r"^```(?!\{)[^\n]*\n(.*?)^```$", re.M | re.S)
    return "\n".join(m.group(1) for m in fence.finditer(markdown))


# A line that runs twistd: "twistd ...", "$ twistd ...", "ExecStart=/x/twistd ...".
_COMMAND = re.compile(r"^\s*(?:\$\s+|ExecStart=)?(?:\S*/)?(twistd\s.*)$")


def twistdCommands(text: str) -> list[list[str]]:
    """
    Every C{twistd ... agilerpc ...} command line in C{text} (shell, with
    backslash continuations), as words.
    """
    joined = re.sub(r"\\\n\s*", " ", text)
    commands = []
    for line in joined.splitlines():
        line = line.split("#", 1)[0] if line.lstrip().startswith("#") else line
        match = _COMMAND.match(line)
        if match is None:
            continue
        try:
            words = shlex.split(match.group(1))
        except ValueError as e:
            raise ValueError(f"{e}: {line!r}") from None
        if "agilerpc" not in words:
            continue
        commands.append(words[words.index("twistd") :])
    return commands


def unknownOptions(words: list[str]) -> list[str]:
    """
    The options of a C{twistd [twistd options] agilerpc [options]} command
    that neither twistd (before C{agilerpc}) nor C{twistd agilerpc} (after
    it) has.
    """
    split = words.index("agilerpc")
    unknown = []
    for known, part in (
        (TWISTD_OPTIONS, words[1:split]),
        (TAP_OPTIONS, words[split + 1 :]),
    ):
        for word in part:
            if word.startswith("--"):
                name = word[2:].split("=", 1)[0]
                if name not in known:
                    unknown.append(word)
    return unknown


class CommandLineTests(SynchronousTestCase):
    """
    The C{twistd agilerpc} and C{agilerpc call} command lines the pages
    and their shell examples show use options that exist.
    """

    def test_parserFindsCommands(self) -> None:
        """
        L{twistdCommands} finds a command split over lines, and
        L{unknownOptions} tells twistd's options from the plugin's.
        """
        text = "x\ntwistd -n --logger a.b agilerpc --port 1 \\\n    --nope 2\n"
        [command] = twistdCommands(text)
        self.assertEqual(
            command,
            [
                "twistd",
                "-n",
                "--logger",
                "a.b",
                "agilerpc",
                "--port",
                "1",
                "--nope",
                "2",
            ],
        )
        self.assertEqual(unknownOptions(command), ["--nope"])
        self.assertEqual(unknownOptions(["twistd", "--port", "agilerpc"]), ["--port"])

    def test_pagesAndShellExamples(self) -> None:
        """
        Every C{twistd ... agilerpc} command on the five pages, in their
        shell examples and in DEPLOY.md uses real options, on the right side
        of C{agilerpc}.
        """
        sources = {
            name: codeBlocks(page(name))
            for name in ("context", "security", "deployment", "observability", "cli")
        }
        sources["DEPLOY.md"] = codeBlocks(
            (DOCS / "DEPLOY.md").read_text(encoding="utf-8")
        )
        for path in sorted((DOCS / "examples").iterdir()):
            if path.name.split("_", 1)[0] in (
                "context",
                "security",
                "deployment",
                "observability",
                "cli",
            ):
                sources[path.name] = path.read_text(encoding="utf-8")
        found = 0
        for name, text in sources.items():
            for command in twistdCommands(text):
                found += 1
                self.assertEqual(unknownOptions(command), [], f"{name}: {command}")
        self.assertGreaterEqual(found, 8)

    def test_deployArgumentLists(self) -> None:
        """
        The argument lists of DEPLOY.md's container recipe and Kubernetes
        Deployment are C{twistd agilerpc} options; its health checks are
        C{agilerpc call} command lines that parse.
        """
        text = (DOCS / "DEPLOY.md").read_text(encoding="utf-8")
        lists = [
            json.loads(m.group(1))
            for m in re.finditer(r"(\[\"[^\]\n]*\"(?:,\s*\n?\s*\"[^\]]*\")*\])", text)
        ]
        calls = [words for words in lists if words[:2] == ["agilerpc", "call"]]
        serverArgs = [words for words in lists if words and words[0] == "--port"]
        self.assertGreaterEqual(len(calls), 3)
        self.assertEqual(len(serverArgs), 2)
        for words in calls:
            options = _cli._parser().parse_args(words[1:])
            self.assertEqual(options.method, "system.ping")
        for words in serverArgs:
            self.assertEqual(unknownOptions(["twistd", "agilerpc", *words]), [])

    def test_everyTapOptionOnCliPage(self) -> None:
        """
        The cli page's table of C{twistd agilerpc} options has a row for
        every option C{tap.Options} has, giving its default, and no row for
        an option it lacks.
        """
        text = page("cli").split("## `twistd agilerpc`", 1)[1]
        rows = {
            name: row
            for row in re.findall(r"^\| `--.*$", text, re.MULTILINE)
            for name in re.findall(r"`--([a-z-]+)`", row.split("|")[1])
        }
        self.assertEqual(sorted(rows), sorted(TAP_OPTIONS))
        for long, short, default, _ in tap.Options.optParameters:
            row = rows[long]
            if short is not None:
                self.assertIn(f"`-{short}`", row)
            if default not in (None, ""):
                shown = f"{default:g}" if isinstance(default, float) else str(default)
                self.assertIn(shown, row.replace(",", ""), long)

    def test_everyCallOptionOnCliPage(self) -> None:
        """
        The cli page documents every option of C{agilerpc call} and
        C{agilerpc methods}.
        """
        text = page("cli")
        parser = _cli._parser()
        [commands] = [action for action in parser._actions if action.dest == "command"]
        choices: Any = commands.choices
        options = {
            option
            for sub in choices.values()
            for action in sub._actions
            for option in action.option_strings
            if option.startswith("--") and option != "--help"
        }
        self.assertIn("--metadata", options)
        for option in sorted(options):
            self.assertIn(f"`{option}", text, option)


# -- context ---------------------------------------------------------------------


class ContextDeadlineTests(TestCase):
    """
    C{docs/examples/context_deadline.py}.
    """

    timeout = 3 * WAIT

    async def test_main(self) -> None:
        """
        A handler sees the time its call has left; a call past its deadline
        fails with C{CallTimeout} on the client and is cancelled on the
        server; a call without a deadline is cut by the server's
        C{maxCallTime} (C{--max-call-time}) with C{DeadlineExceeded}.
        """
        example = loadExample("context_deadline.py")
        metrics = ServerMetrics()
        _, port = serve(
            self, Registry.fromModule(example), maxCallTime=1.5, observers=[metrics]
        )
        outcomes = await run(example.main(globalReactor, "127.0.0.1", port))
        self.assertEqual(
            outcomes, ["report of 0.1 s", "TooLate", "CallTimeout", "DeadlineExceeded"]
        )
        calls = metrics.calls
        self.assertEqual(calls[("report", "ok")], 1)
        self.assertEqual(calls[("report", "TooLate")], 1)
        # The call the client gave up on was cancelled at its request or at
        # its deadline, whichever the server heard of first.
        waits = {k[1]: n for k, n in calls.items() if k[0] == "wait"}
        self.assertEqual(sum(waits.values()), 2, waits)
        self.assertGreaterEqual(waits.get("DeadlineExceeded", 0), 1, waits)


class ContextMetadataTests(TestCase):
    """
    C{docs/examples/context_metadata.py}.
    """

    async def test_main(self) -> None:
        """
        The handler reads the metadata the caller sent; metadata over the
        server's limit is refused on the client.
        """
        example = loadExample("context_metadata.py")
        _, port = serve(self, Registry.fromModule(example))
        answers = await run(example.main(globalReactor, "127.0.0.1", port))
        self.assertEqual(
            answers,
            [
                {"method": "whoami", "tenant": "acme", "request-id": "r-17"},
                {"method": "whoami", "tenant": "default", "request-id": None},
                "MetadataTooLarge",
            ],
        )

    async def test_blocking(self) -> None:
        """
        The blocking client sends metadata with C{call(metadata=)}.
        """
        example = loadExample("context_metadata.py")
        _, port = serve(self, Registry.fromModule(example))
        answer = await deferToThread(example.blocking, "127.0.0.1", port).addTimeout(
            WAIT, globalReactor
        )
        self.assertEqual(answer["tenant"], "acme")


class ContextRetryTests(TestCase):
    """
    C{docs/examples/context_retry.py}.
    """

    async def test_main(self) -> None:
        """
        Both calls are answered once; once the client has read
        C{system.describe}, asking to retry a method the server does not
        mark idempotent fails at once with C{NotIdempotent}, unsent.
        """
        example = loadExample("context_retry.py")
        _, port = serve(self, Registry.fromModule(example))
        answers = await run(example.main(globalReactor, "127.0.0.1", port))
        self.assertEqual(answers, ["zhangsan", 5, "NotIdempotent", 0])
        self.assertEqual(example.BALANCE["total"], 5)

    async def test_lostCallRetried(self) -> None:
        """
        A call of C{getUser}, which the example's client declares
        idempotent, is sent again when its connection is lost while it
        runs, and answered.
        """
        example = loadExample("context_retry.py")
        registry = Registry.fromModule(example)
        factory, port = serve(self, registry)
        runs = []

        def getUser(uid: int) -> Any:
            runs.append(uid)
            if len(runs) == 1:
                abortAll(factory)  # lost in flight: it may have run
                return Deferred()
            return example.getUser(uid)

        registry.register(getUser, name="getUser-flaky", idempotent=True)
        client = RpcClient(
            globalReactor,
            "127.0.0.1",
            port,
            timeout=5,
            idempotent={"getUser-flaky"},
        )
        self.assertEqual(
            await client.callRemote("getUser-flaky", 42).addTimeout(
                WAIT, globalReactor
            ),
            "zhangsan",
        )
        self.assertEqual((runs, client.stats.retries), ([42, 42], 1))
        await client.close()

    async def test_describeSaysIdempotent(self) -> None:
        """
        C{system.describe} marks C{getUser} idempotent and C{charge} not.
        """
        example = loadExample("context_retry.py")
        _, port = serve(self, Registry.fromModule(example))
        client = RpcClient(globalReactor, "127.0.0.1", port, timeout=5)
        described = await client.describe()
        await client.close()
        self.assertEqual(
            (described["getUser"]["idempotent"], described["charge"]["idempotent"]),
            (True, False),
        )


class ContextTracingTests(TestCase):
    """
    C{docs/examples/context_tracing.py}.
    """

    async def test_main(self) -> None:
        """
        The caller's span, the client's span of the call and the server's
        span of it are one trace, each the parent of the next.
        """
        example = loadExample("context_tracing.py")
        provider, exporter = example.tracerProvider()
        factory = example.serverFactory(
            globalReactor, Registry.fromModule(hello), provider
        )
        _, port = listen(self, factory)
        result = await run(example.main(globalReactor, "127.0.0.1", port, provider))
        self.assertEqual(result, "hello zhangsan")
        spans = {span.kind.name: span for span in exporter.get_finished_spans()}
        self.assertEqual(sorted(spans), ["CLIENT", "INTERNAL", "SERVER"])
        checkout, client, server = spans["INTERNAL"], spans["CLIENT"], spans["SERVER"]
        self.assertEqual(checkout.name, "checkout")
        self.assertEqual(
            {s.context.trace_id for s in spans.values()}, {checkout.context.trace_id}
        )
        assert client.parent is not None and server.parent is not None
        self.assertEqual(client.parent.span_id, checkout.context.span_id)
        self.assertEqual(server.parent.span_id, client.context.span_id)


# -- security --------------------------------------------------------------------


def _securityServer(testCase: TestCase) -> tuple[ServerProcess, str]:
    """
    Run the commands of C{docs/examples/security_serve.sh}: make the token
    with its first command, then start its C{twistd agilerpc} command with
    the test's certificates (on 127.0.0.1, any port); the server and the
    token file's path.
    """
    script = examplePath("security_serve.sh").read_text(encoding="utf-8")
    directory = os.path.abspath(testCase.mktemp())
    os.makedirs(directory)
    [tokenLine] = [line for line in script.splitlines() if "token.txt &&" in line]
    subprocess.run(["sh", "-c", tokenLine], cwd=directory, check=True, timeout=WAIT)
    tokenPath = os.path.join(directory, "token.txt")
    [command] = twistdCommands(script)
    files = {
        "server.pem": pki().path("server.pem"),
        "server.key": pki().path("server.key"),
        "ca.pem": pki().path("ca.pem"),
        "token.txt": tokenPath,
    }
    args = [files.get(word, word) for word in command[command.index("agilerpc") + 1 :]]
    # The test's --listen (127.0.0.1, any free port) overrides --port.
    testCase.patch(
        serverprocess,
        "_PORT_LINE",
        re.compile(r"RpcServerFactory(?: \(TLS\))? starting on (\d+)"),
    )
    return ServerProcess.start(testCase, *args), tokenPath


class SecurityTests(TestCase):
    """
    C{docs/examples/security_serve.sh} and C{docs/examples/security_tls.py}:
    a server with TLS, client certificates and a token, and its clients.
    """

    timeout = 4 * WAIT

    def setUp(self) -> None:
        self.server, self.tokenPath = _securityServer(self)
        self.example = loadExample("security_tls.py")
        self.token = self.example.readToken(self.tokenPath)
        p = pki()
        self.files = (p.path("ca.pem"), p.path("client.pem"), p.path("client.key"))

    def test_token(self) -> None:
        """
        The token the script makes is 32 random bytes in base64, readable by
        its owner only.
        """
        self.assertEqual(len(self.token), 44)
        self.assertEqual(os.stat(self.tokenPath).st_mode & 0o777, 0o600)

    async def test_main(self) -> None:
        """
        C{main} reads C{ca.pem}, C{client.pem}, C{client.key} and
        C{token.txt} from the working directory, verifies the server as
        C{localhost} and calls it.
        """
        directory = os.path.abspath(self.mktemp())
        os.makedirs(directory)
        for name in ("ca.pem", "client.pem", "client.key"):
            shutil.copy(pki().path(name), os.path.join(directory, name))
        shutil.copy(self.tokenPath, os.path.join(directory, "token.txt"))
        self.addCleanup(os.chdir, os.getcwd())
        os.chdir(directory)
        result = await run(
            self.example.main(globalReactor, "localhost", self.server.port)
        )
        self.assertEqual(result, "hello zhangsan")

    async def test_twistedClient(self) -> None:
        """
        With the CA, a client certificate and the token, the Twisted client's
        calls are answered; with a wrong token they fail with
        C{Unauthorized}; without a client certificate with C{TLSRefused}.
        """
        ca, cert, key = self.files
        good = self.example.twistedClient(
            globalReactor,
            "127.0.0.1",
            self.server.port,
            "localhost",
            ca,
            cert,
            key,
            self.token,
        )
        self.assertEqual(
            await good.callRemote("sayHello", "x").addTimeout(WAIT, globalReactor),
            "hello x",
        )
        await good.close()
        wrong = self.example.twistedClient(
            globalReactor,
            "127.0.0.1",
            self.server.port,
            "localhost",
            ca,
            cert,
            key,
            "not the token",
        )
        with self.assertRaises(Unauthorized):
            await wrong.callRemote("sayHello", "x").addTimeout(WAIT, globalReactor)
        await wrong.close()
        anonymous = self.example.twistedClient(
            globalReactor,
            "127.0.0.1",
            self.server.port,
            "localhost",
            ca,
            token=self.token,
        )
        with self.assertRaises(TLSRefused):
            await anonymous.callRemote("sayHello", "x").addTimeout(WAIT, globalReactor)
        await anonymous.close()

    def test_blockingClient(self) -> None:
        """
        The blocking client's calls are answered with the CA, a client
        certificate and the token; a server certificate for another name is
        refused with C{ssl.SSLCertVerificationError}.
        """
        ca, cert, key = self.files
        with self.example.blockingClient(
            "127.0.0.1", self.server.port, "localhost", ca, cert, key, self.token
        ) as cli:
            self.assertEqual(cli.call("sayHello", ("y",)), "hello y")
        with self.example.blockingClient(
            "127.0.0.1", self.server.port, "rpc.example.com", ca, cert, key, self.token
        ) as cli:
            self.assertRaises(
                ssl.SSLCertVerificationError, cli.call, "sayHello", ("y",)
            )


# -- observability ---------------------------------------------------------------


class ObservabilityMetricsTests(TestCase):
    """
    C{docs/examples/observability_metrics.py}.
    """

    async def test_serveAndScrape(self) -> None:
        """
        C{serve} answers calls, and a scrape of its C{/metrics} counts them;
        C{clientMetrics} counts the client's.
        """
        example = loadExample("observability_metrics.py")
        rpc, web = example.serve(globalReactor, Registry.fromModule(hello), 0, 0)
        self.addCleanup(web.stopListening)
        self.addCleanup(rpc.stopListening)
        self.addCleanup(abortAll, rpc.factory)
        client = RpcClient(globalReactor, "127.0.0.1", rpc.getHost().port, timeout=5)
        for name in ("a", "b"):
            await client.callRemote("sayHello", name).addTimeout(WAIT, globalReactor)
        url = f"http://127.0.0.1:{web.getHost().port}/metrics".encode("ascii")
        response = await Agent(globalReactor).request(b"GET", url)
        body = (await readBody(response)).decode("utf-8")
        self.assertIn(
            'agilerpc_server_calls_total{method="sayHello",outcome="ok"} 2.0',
            body.splitlines(),
        )
        self.assertIn(
            'agilerpc_client_calls_total{client="billing",outcome="ok"} 2.0',
            example.clientMetrics(client).splitlines(),
        )
        await client.close()


class ObservabilityLoggingTests(TestCase):
    """
    C{docs/examples/observability_logging.py}, and C{jsonLogObserver}.
    """

    async def test_agilerpcProblems(self) -> None:
        """
        The observer passes on the error a failing handler makes the server
        log, with its method, and nothing of other namespaces or of lower
        levels.
        """
        example = loadExample("observability_logging.py")
        seen: list[dict[str, Any]] = []
        observer = example.agilerpcProblems(seen.append)
        globalLogPublisher.addObserver(observer)
        self.addCleanup(globalLogPublisher.removeObserver, observer)
        jsonOut = io.StringIO()
        asJSON = jsonLogObserver(jsonOut)
        globalLogPublisher.addObserver(asJSON)
        self.addCleanup(globalLogPublisher.removeObserver, asJSON)

        def boom() -> None:
            raise ValueError("boom")

        registry = Registry()
        registry.register(boom)
        _, port = serve(self, registry)
        Logger(namespace="yourapp").error("not agilerpc's")
        Logger(namespace="agilerpc.test").info("below warn")
        client = RpcClient(globalReactor, "127.0.0.1", port, timeout=5)
        with self.assertRaises(RemoteError):
            await client.callRemote("boom").addTimeout(WAIT, globalReactor)
        await client.close()
        self.flushLoggedErrors(ValueError)
        self.assertEqual(
            [(e["log_level"], e.get("method")) for e in seen],
            [(LogLevel.error, "boom")],
        )
        lines = [json.loads(line) for line in jsonOut.getvalue().splitlines()]
        [event] = [e for e in lines if e.get("method") == "boom"]
        self.assertEqual(event["log_level"]["name"], "error")
        self.assertTrue(event["peer"].startswith("127.0.0.1:"), event["peer"])


class ObservabilityHealthTests(TestCase):
    """
    C{docs/examples/observability_health.py}.
    """

    async def test_check(self) -> None:
        """
        C{check} returns C{system.stats} of the process that answered.
        """
        example = loadExample("observability_health.py")
        _, port = serve(self, Registry.fromModule(hello))
        stats = await deferToThread(example.check, "127.0.0.1", port).addTimeout(
            WAIT, globalReactor
        )
        self.assertEqual((stats["pid"], stats["worker"]), (os.getpid(), 0))
        self.assertEqual(stats["connections"], 1)


# -- deployment ------------------------------------------------------------------


class DeploymentDiscoveryTests(TestCase):
    """
    C{docs/examples/deployment_discovery.py}.
    """

    async def test_billingClient(self) -> None:
        """
        The client finds both servers in the SRV records of C{BILLING} (their
        addresses in the additional section, as Consul and CoreDNS send
        them) and spreads its calls over both.
        """
        example = loadExample("deployment_discovery.py")
        factories, ports = [], []
        for _ in range(2):
            metrics = ServerMetrics()
            _, port = serve(self, Registry(), observers=[metrics])
            factories.append(metrics)
            ports.append(port)
        resolver = FakeResolver()
        resolver.records = [
            srv(example.BILLING, f"pod{i}.test", port) for i, port in enumerate(ports)
        ]
        resolver.additional = [a(f"pod{i}.test", "127.0.0.1") for i in range(2)]
        client = example.billingClient(globalReactor, resolver=resolver)
        servers = await run(example.main(globalReactor, client, 20))
        await client.close()
        self.assertEqual(servers, sorted(("127.0.0.1", port) for port in ports))
        for metrics in factories:
            self.assertGreater(metrics.calls[("system.ping", "ok")], 0)
        self.assertIn((dns.SRV, example.BILLING), resolver.queries)

    async def test_blockingClient(self) -> None:
        """
        The blocking client finds a server by host name.
        """
        example = loadExample("deployment_discovery.py")
        _, port = serve(self, Registry())

        def ping() -> Any:
            with example.blockingClient("localhost", port) as cli:
                return cli.call("system.ping")

        self.assertEqual(
            await deferToThread(ping).addTimeout(WAIT, globalReactor), "pong"
        )

    async def test_consulClient(self) -> None:
        """
        C{consulClient} makes a client of Consul's SRV name without a lookup
        before its first call.
        """
        example = loadExample("deployment_discovery.py")
        client = example.consulClient(globalReactor)
        self.assertEqual(list(client.readyEndpoints), [])
        await client.close()


# -- cli -------------------------------------------------------------------------


def transcript(text: str) -> list[tuple[str, list[str]]]:
    """
    The commands of a console transcript, each with the lines it prints.
    """
    steps: list[tuple[str, list[str]]] = []
    for line in text.splitlines():
        if line.startswith("$ "):
            steps.append((line[2:], []))
        else:
            steps[-1][1].append(line)
    return steps


def matches(expected: str, actual: str) -> bool:
    """
    Whether C{actual} is C{expected}, where C{...} in C{expected} stands for
    anything.
    """
    pattern = ".*".join(re.escape(part) for part in expected.split("..."))
    return re.fullmatch(pattern, actual) is not None


class CliSessionTests(SynchronousTestCase):
    """
    C{docs/examples/cli_session.txt}: every command of the transcript the
    cli page shows, run against C{twistd agilerpc} serving
    C{agilerpc.examples.hello}, prints what it shows.
    """

    def test_transcript(self) -> None:
        """
        Each C{agilerpc} command prints the lines shown (stdout and stderr),
        and those ending in C{echo "exit $?"} exit with the status shown.
        """
        server = ServerProcess.start(self, module="agilerpc.examples.hello")
        port = server.port
        steps = transcript(examplePath("cli_session.txt").read_text("utf-8"))
        self.assertGreater(len(steps), 10)
        for command, expected in steps:
            words = shlex.split(command.replace("9988", str(port)))
            status = None
            if words[-2:] == ["echo", "exit $?"]:
                words = words[:-2]
                words[-1] = words[-1].rstrip(";")
                status = expected[-1]
                expected = expected[:-1]
            self.assertEqual(words[0], "agilerpc")
            out = io.StringIO()
            with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
                code = _cli.main(words[1:])
            lines = out.getvalue().replace(str(port), "9988").splitlines()
            self.assertEqual(len(lines), len(expected), (command, lines))
            for want, got in zip(expected, lines, strict=True):
                self.assertTrue(matches(want, got), (command, want, got))
            if status is not None:
                self.assertEqual(f"exit {code}", status, command)
            else:
                self.assertEqual(code, 0, command)
