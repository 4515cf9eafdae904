"""
The benchmark driver: C{python -m bench} (C{--quick} for a small run).

One run starts fresh agilerpc, bare and AMP servers (and agileutil and grpcio
servers, where installed) for each repeat, runs
every scenario against each of them in turn (rotating the order from one
repeat to the next), and reports the median of each figure and the median of
the ratios measured within the same repeat.  Then, once, scenario F (many
idle connections reaped by the keepalive) and cProfile profiles of the
agilerpc server and client.  It writes C{RESULTS.md}, C{results.json} and
the charts of L{bench.plots} (C{plots/ratios.svg}, C{plots/latency.svg}).

Timings are noisy on a shared machine: compare the ratios within one run,
not absolute numbers across runs.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import os
import platform
import pstats
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import msgpack

import agilerpc
import twisted

from . import plots as plotting
from . import procs
from .amp import MAX_VALUE as AMP_MAX_VALUE
from .stats import medianOrNone, ratio

HOST = "127.0.0.1"
X = "\N{MULTIPLICATION SIGN}"
KiB = 1024
MiB = 1024 * 1024

#: The metadata of scenario A with metadata: two small entries, as a request
#: id and a tenant would be.
METADATA = {"request-id": "r-0123456789", "tenant": "acme"}

FULL: dict[str, Any] = {
    "repeats": 5,
    "seq": {"n": 3000, "warmup": 300},
    "seqMeta": {"n": 3000, "warmup": 300, "metadata": METADATA},
    "blocking": {"n": 3000, "warmup": 100},
    "threads": {"n": 500, "warmup": 20, "threads": 8},
    "pipe": {"n": 60000, "warmup": 2000, "inflight": 100},
    "pipe8": {"n": 60000, "warmup": 2000, "inflight": 100, "conns": 8},
    "pipeWorkers": {"n": 60000, "warmup": 2000, "inflight": 100, "conns": 8},
    "echo64k": {"n": 800, "size": 64 * KiB},
    "echo64kBlocking": {"n": 800, "warmup": 10, "size": 64 * KiB},
    "echo1m": {"n": 40, "size": MiB},
    "echo8m": {"n": 6, "size": 8 * MiB},
    "idle": {"conns": 1000, "batch": 100},
    "reap": {"conns": 10000, "batch": 250, "keepalive": 2, "probeInterval": 0.05},
    "profile": {"seq": 2000, "pipe": 20000, "echo64k": 500, "echo8m": 4},
    "timeout": 120,
}

QUICK: dict[str, Any] = {
    "repeats": 1,
    "seq": {"n": 300, "warmup": 30},
    "seqMeta": {"n": 300, "warmup": 30, "metadata": METADATA},
    "blocking": {"n": 300, "warmup": 10},
    "threads": {"n": 40, "warmup": 2, "threads": 8},
    "pipe": {"n": 2000, "warmup": 200, "inflight": 100},
    "pipe8": {"n": 2000, "warmup": 200, "inflight": 100, "conns": 8},
    "pipeWorkers": {"n": 2000, "warmup": 200, "inflight": 100, "conns": 8},
    "echo64k": {"n": 40, "size": 64 * KiB},
    "echo64kBlocking": {"n": 40, "warmup": 2, "size": 64 * KiB},
    "echo1m": {"n": 4, "size": MiB},
    "echo8m": {"n": 2, "size": 8 * MiB},
    "idle": {"conns": 100, "batch": 50},
    "reap": {"conns": 300, "batch": 100, "keepalive": 2, "probeInterval": 0.05},
    "profile": {"seq": 200, "pipe": 1000, "echo64k": 20, "echo8m": 1},
    "timeout": 40,
}


@dataclass(frozen=True)
class Scenario:
    """
    One measured scenario: its key in the results, the client scenario it
    runs, the implementations it applies to, and how many processes the
    agilerpc server runs (C{--workers}).
    """

    key: str
    client: str
    impls: tuple[str, ...]
    workers: int = 1


# The extra server the scenarios with workers run against.
WORKERS = 2


def serverKey(kind: str, workers: int = 1) -> str:
    """
    The key of a running server: its kind, with C{--workers} if above 1.
    """
    return kind if workers == 1 else f"{kind} --workers {workers}"


#: Every implementation the table has a column for, in its order.
IMPLS = procs.KINDS + procs.PEERS

#: The implementations agilerpc has a ratio column against.
OTHERS = IMPLS[1:]

#: How the report names each implementation.
NAMES = {
    "agilerpc": "agilerpc",
    "bare": "bare",
    "amp": "AMP",
    "agileutil": "agileutil",
    "grpcio": "grpcio",
}

# The Twisted Deferred client's scenarios, and grpcio's channel doing the same.
_ASYNC = ("agilerpc", "bare", "amp", "grpcio")
# The blocking clients' scenarios: agilerpc's TcpRpcClient (agileutil's API)
# against twistd agilerpc, agileutil's client against agileutil's server.
_BLOCKING = ("agilerpc", "bare", "agileutil")

SCENARIOS = (
    # D first, on fresh servers, so that memory freed by earlier scenarios
    # cannot hide the connections' cost.
    Scenario("idle", "idle", IMPLS),
    Scenario("seq", "seq", _ASYNC),
    Scenario("seqMeta", "seq", ("agilerpc",)),
    Scenario("blocking", "blocking", _BLOCKING),
    Scenario("pipe", "pipe", _ASYNC),
    Scenario("pipe8", "pipe", ("agilerpc", "bare")),
    Scenario("pipeWorkers", "pipe", ("agilerpc",), workers=WORKERS),
    Scenario("threads", "blocking", _BLOCKING),
    Scenario("echo64k", "echo", _ASYNC),
    Scenario("echo64kBlocking", "blocking", _BLOCKING),
    Scenario("echo1m", "echo", ("agilerpc", "bare")),
    Scenario("echo8m", "echo", ("agilerpc", "bare")),
)


#: The module each peer's server and client need.
_PEER_MODULES = {"agileutil": "agileutil.rpc.client", "grpcio": "grpc"}


def available() -> tuple[str, ...]:
    """
    The implementations this Python can run: agilerpc, bare and AMP always;
    agileutil and grpcio when installed (the C{bench} extra).
    """
    import importlib.util

    found = []
    for impl in IMPLS:
        module = _PEER_MODULES.get(impl)
        try:
            present = module is None or importlib.util.find_spec(module) is not None
        except ImportError:
            present = False
        if present:
            found.append(impl)
    return tuple(found)


def rotated(items: tuple[str, ...], by: int) -> list[str]:
    """
    C{items} rotated left by C{by}: the order implementations run in, in
    repeat C{by}.
    """
    if not items:
        return []
    by %= len(items)
    return list(items[by:] + items[:by])


def runClient(spec: dict[str, Any], timeout: float) -> dict[str, Any]:
    """
    Run one client measurement in its own process; its figures.

    @raise RuntimeError: with the client's output, if it fails or prints no
        result within C{timeout} seconds (it is killed then).
    """
    env = dict(os.environ)
    env["PYTHONPATH"] = procs.ROOT_DIR
    try:
        completed = subprocess.run(
            [sys.executable, "-m", "bench.client", json.dumps(spec)],
            cwd=procs.ROOT_DIR,
            env=env,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
    except subprocess.TimeoutExpired as e:
        raise RuntimeError(f"the client did not finish within {timeout}s") from e
    for line in completed.stdout.splitlines():
        if line.startswith("RESULT "):
            result: dict[str, Any] = json.loads(line[len("RESULT ") :])
            return result
    raise RuntimeError(
        f"the client exited with {completed.returncode}:\n"
        + (completed.stdout + completed.stderr)[-3000:]
    )


def clientSpec(
    config: dict[str, Any], scenario: Scenario, server: procs.Server
) -> dict[str, Any]:
    """
    The client spec of C{scenario} against C{server}.
    """
    spec: dict[str, Any] = dict(config[scenario.key])
    if scenario.key == "echo64k" and server.kind == "amp":
        # AMP cannot carry 65,536 bytes in one value.
        spec["size"] = min(spec["size"], AMP_MAX_VALUE)
    spec.update(
        scenario=scenario.client,
        impl=server.kind,
        host=HOST,
        port=server.port,
        # With workers, the parent's CPU time would be only part of it.
        serverPid=server.pid if scenario.workers == 1 else None,
        timeout=config["timeout"],
    )
    return spec


@contextlib.contextmanager
def servers(
    kinds: tuple[str, ...], withWorkers: tuple[str, ...] = ()
) -> Iterator[dict[str, procs.Server]]:
    """
    Fresh servers of each kind, and of each kind in C{withWorkers} with
    C{--workers} L{WORKERS}, by L{serverKey}; stopped (by pid) on the way
    out.
    """
    started: dict[str, procs.Server] = {}
    try:
        for kind in kinds:
            started[kind] = procs.startServer(kind)
        for kind in withWorkers:
            started[serverKey(kind, WORKERS)] = procs.startServer(kind, workers=WORKERS)
        yield started
    finally:
        for server in started.values():
            server.stop()


def measure(
    config: dict[str, Any], log: Callable[[str], None]
) -> dict[str, dict[str, list[dict[str, Any] | None]]]:
    """
    Run every scenario for every implementation, C{repeats} times,
    interleaved; the figures of each repeat (L{None} where one failed, with
    its error under C{"errors"}).
    """
    kinds = available()
    missing = [impl for impl in IMPLS if impl not in kinds]
    if missing:
        log(
            f"not installed, left out: {', '.join(missing)}"
            " (pip install -e '.[bench]' adds them)"
        )
    runs: dict[str, dict[str, list[dict[str, Any] | None]]] = {
        s.key: {impl: [] for impl in s.impls if impl in kinds} for s in SCENARIOS
    }
    errors: list[str] = []
    for repeat in range(config["repeats"]):
        log(f"repeat {repeat + 1}/{config['repeats']}")
        with servers(kinds, ("agilerpc",)) as running:
            for scenario in SCENARIOS:
                impls = tuple(i for i in scenario.impls if i in kinds)
                for impl in rotated(impls, repeat):
                    server = running[serverKey(impl, scenario.workers)]
                    spec = clientSpec(config, scenario, server)
                    try:
                        result: dict[str, Any] | None = runClient(
                            spec, config["timeout"] + 30
                        )
                    except Exception as e:
                        result = None
                        errors.append(f"repeat {repeat + 1} {scenario.key} {impl}: {e}")
                        log(errors[-1])
                    runs[scenario.key][impl].append(result)
                    log(f"  {scenario.key:9} {impl:9} {_brief(result)}")
    runs["errors"] = errors  # type: ignore[assignment]
    return runs


def _brief(result: dict[str, Any] | None) -> str:
    if result is None:
        return "failed"
    for key in ("calls_per_s", "kib_per_conn"):
        if key in result:
            return f"{key}={result[key]:.1f}"
    return ""


def measureReap(config: dict[str, Any], log: Callable[[str], None]) -> dict[str, Any]:
    """
    Scenario F: many idle connections to an agilerpc server with a short
    keepalive, reaped by it while a probe keeps calling.
    """
    reap = config["reap"]
    soft, hard = procs.raiseFileLimit(reap["conns"] + 1024)
    log(f"F: {reap['conns']} idle connections, keepalive {reap['keepalive']}s")
    server = procs.startServer("agilerpc", keepalive=reap["keepalive"])
    try:
        spec = dict(reap)
        spec.update(
            scenario="reap",
            impl="agilerpc",
            host=HOST,
            port=server.port,
            serverPid=server.pid,
            timeout=config["timeout"],
        )
        try:
            result = runClient(spec, config["timeout"] + 30)
        except Exception as e:
            log(f"F failed: {e}")
            return {"error": str(e), "fd_limit_driver": [soft, hard]}
        result["fd_limit_driver"] = [soft, hard]
        result["server_alive_after"] = server.process.poll() is None
        return result
    finally:
        server.stop()


def profileAgilerpc(
    config: dict[str, Any], log: Callable[[str], None]
) -> dict[str, dict[str, str]]:
    """
    Profile the agilerpc server (twistd's cProfile) and client under
    scenarios A, B, C (64 KiB) and C-large (8 MiB); the top entries of each,
    by own time.
    """
    profiles: dict[str, dict[str, str]] = {}
    plans = [
        ("seq", Scenario("seq", "seq", ("agilerpc",))),
        ("pipe", Scenario("pipe", "pipe", ("agilerpc",))),
        ("echo64k", Scenario("echo64k", "echo", ("agilerpc",))),
        ("echo8m", Scenario("echo8m", "echo", ("agilerpc",))),
    ]
    with tempfile.TemporaryDirectory(prefix="bench-profile-") as directory:
        for name, scenario in plans:
            log(f"profiling agilerpc under {name}")
            serverStats = os.path.join(directory, f"server-{name}.prof")
            clientStats = os.path.join(directory, f"client-{name}.prof")
            server = procs.startServer("agilerpc", profile=serverStats)
            try:
                spec = clientSpec(config, scenario, server)
                spec["n"] = config["profile"][name]
                spec["profile"] = clientStats
                runClient(spec, config["timeout"] + 30)
            except Exception as e:
                log(f"profiling {name} failed: {e}")
                profiles[name] = {"error": str(e)}
                continue
            finally:
                server.stop()
            # The server also answered the warm-up calls and the check call(s).
            serverCalls = (
                spec["n"] + spec.get("warmup", 0) + 1 + (spec["scenario"] == "echo")
            )
            profiles[name] = {
                "server": topEntries(serverStats, serverCalls),
                "client": topEntries(clientStats, spec["n"]),
            }
    return profiles


_IDLE = ("poll' of 'select.epoll", "'select.select'", "'select.poll'")


def topEntries(path: str, calls: int, count: int = 15) -> str:
    """
    The C{count} functions with the most own time in the cProfile stats
    file C{path}, with their share of the busy time (the time not spent
    waiting in the reactor's poll) and their own time per RPC call, given
    that C{calls} calls were made.
    """
    if not os.path.exists(path):
        return "(no profile was written)"
    stats: dict[Any, Any] = pstats.Stats(path).stats  # type: ignore[attr-defined]
    entries = []
    total = idle = 0.0
    for (filename, line, name), (_, ncalls, own, cumulative, _) in stats.items():
        total += own
        label = f"{os.path.basename(filename)}:{line}({name})" if line else name
        if any(marker in label for marker in _IDLE):
            idle += own
            continue
        entries.append((own, ncalls, cumulative, label))
    busy = total - idle
    entries.sort(reverse=True)
    lines = [
        f"busy {busy:.3f} s ({busy / calls * 1e6:.1f} µs per call over {calls:,} calls);"
        f" {idle:.3f} s waiting in poll left out",
        f"{'own %':>6} {'own µs/call':>11} {'ncalls':>9} {'cum s':>7}  function",
    ]
    for own, ncalls, cumulative, label in entries[:count]:
        share = own / busy if busy else 0.0
        lines.append(
            f"{share:6.1%} {own / calls * 1e6:11.2f} {ncalls:9d} {cumulative:7.3f}  {label}"
        )
    return "\n".join(lines)


def machine() -> dict[str, Any]:
    """
    What the figures were measured on.
    """
    model = ""
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None
    return {
        "cores": os.cpu_count(),
        "usable_cores": usable,
        "cpu": model,
        "platform": platform.platform(),
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "twisted": twisted.__version__,
        "msgpack": ".".join(map(str, msgpack.version)),
        "agilerpc": agilerpc.__version__,
        "agilerpc_path": os.path.dirname(os.path.abspath(agilerpc.__file__)),
        "reactor": "default (epoll)",
        "agileutil": _installed("agileutil"),
        "grpcio": _installed("grpcio"),
        "grpcio_server": procs.GRPC_FLAVOUR,
        "load_average_start": os.getloadavg(),
        "date": datetime.datetime.now(datetime.timezone.utc).strftime(
            "%Y-%m-%d %H:%M UTC"
        ),
    }


def _installed(distribution: str) -> str | None:
    """
    The installed version of C{distribution}, or L{None}.
    """
    import importlib.metadata

    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return None


# -- summarizing ----------------------------------------------------------


@dataclass(frozen=True)
class Row:
    """
    A row of the results table: C{metric} of scenario C{key}.
    """

    label: str
    key: str
    metric: str
    fmt: str


ROWS = (
    Row("A sequential calls/s (Deferred client)", "seq", "calls_per_s", "{:,.0f}"),
    Row("A p50 latency µs", "seq", "p50_us", "{:,.0f}"),
    Row("A p99 latency µs", "seq", "p99_us", "{:,.0f}"),
    Row(
        "A with 2 metadata entries, calls/s (Deferred client)",
        "seqMeta",
        "calls_per_s",
        "{:,.0f}",
    ),
    Row(
        "A' sequential calls/s (blocking client)", "blocking", "calls_per_s", "{:,.0f}"
    ),
    Row("A' p50 latency µs (blocking client)", "blocking", "p50_us", "{:,.0f}"),
    Row("A' p99 latency µs (blocking client)", "blocking", "p99_us", "{:,.0f}"),
    Row("B calls/s, 100 in flight (Deferred client)", "pipe", "calls_per_s", "{:,.0f}"),
    Row(
        "B calls/s, 100 in flight over 8 connections", "pipe8", "calls_per_s", "{:,.0f}"
    ),
    Row(
        f"B calls/s, 100 in flight, --workers {WORKERS} (over 8 connections)",
        "pipeWorkers",
        "calls_per_s",
        "{:,.0f}",
    ),
    Row(
        f"B calls/s, 8 threads {X} blocking client", "threads", "calls_per_s", "{:,.0f}"
    ),
    Row("C 64 KiB echo calls/s", "echo64k", "calls_per_s", "{:,.0f}"),
    Row("C 64 KiB echo s/MiB", "echo64k", "s_per_MiB", "{:.4f}"),
    Row(
        "C 64 KiB echo calls/s (blocking client)",
        "echo64kBlocking",
        "calls_per_s",
        "{:,.0f}",
    ),
    Row("C-large 1 MiB echo s/MiB", "echo1m", "s_per_MiB", "{:.4f}"),
    Row("C-large 8 MiB echo s/MiB", "echo8m", "s_per_MiB", "{:.4f}"),
    Row("D server KiB per idle connection", "idle", "kib_per_conn", "{:.2f}"),
    Row(
        "E server CPU µs per call (B, 100 in flight)",
        "pipe",
        "server_cpu_us_per_call",
        "{:.1f}",
    ),
    Row(
        "E server CPU µs per call (B, 8 threads)",
        "threads",
        "server_cpu_us_per_call",
        "{:.1f}",
    ),
    Row(
        "E server CPU µs per call (A, sequential)",
        "seq",
        "server_cpu_us_per_call",
        "{:.1f}",
    ),
    Row(
        "E server CPU µs per call (A', blocking client)",
        "blocking",
        "server_cpu_us_per_call",
        "{:.1f}",
    ),
    Row(
        "C server CPU µs per 64 KiB echo", "echo64k", "server_cpu_us_per_call", "{:.0f}"
    ),
)


def values(
    runs: dict[str, Any], key: str, impl: str, metric: str
) -> list[float | None]:
    """
    C{metric} of C{impl} in scenario C{key}, one per repeat (L{None} where
    the repeat failed or has no such figure).
    """
    out: list[float | None] = []
    for result in runs.get(key, {}).get(impl, []):
        value = None if result is None else result.get(metric)
        out.append(None if value is None else float(value))
    return out


def pairedRatios(
    top: list[float | None], bottom: list[float | None]
) -> list[float | None]:
    """
    The ratio of each repeat's C{top} to the same repeat's C{bottom}.
    """
    return [ratio(a, b) for a, b in zip(top, bottom, strict=False)]


def summarize(runs: dict[str, Any]) -> list[dict[str, Any]]:
    """
    The table rows: the median of each implementation's figure, and the
    medians of the same-repeat ratios of agilerpc to each other one
    (C{"agilerpc/bare"}, C{"agilerpc/amp"}, C{"agilerpc/agileutil"},
    C{"agilerpc/grpcio"}).
    """
    table = []
    for row in ROWS:
        perRepeat = {impl: values(runs, row.key, impl, row.metric) for impl in IMPLS}
        entry: dict[str, Any] = {
            "figure": row.label,
            "scenario": row.key,
            "metric": row.metric,
            "format": row.fmt,
        }
        for impl in IMPLS:
            entry[impl] = medianOrNone(perRepeat[impl])
        for other in OTHERS:
            entry[f"agilerpc/{other}"] = medianOrNone(
                pairedRatios(perRepeat["agilerpc"], perRepeat[other])
            )
        entry["per_repeat"] = perRepeat
        table.append(entry)
    return table


def _atLeast(value: float | None, target: float) -> tuple[bool | None, str]:
    if value is None:
        return None, "not measured"
    if value >= target:
        return True, f"{value:.2f}{X} (target ≥ {target}{X})"
    return False, (
        f"{value:.2f}{X} (target ≥ {target}{X}): missed by {(1 - value / target):.0%}"
    )


def _atMost(
    value: float | None, target: float, unit: str = X
) -> tuple[bool | None, str]:
    if value is None:
        return None, "not measured"
    if value <= target:
        return True, f"{value:.2f}{unit} (target ≤ {target}{unit})"
    return False, (
        f"{value:.2f}{unit} (target ≤ {target}{unit}): missed by {(value / target - 1):.0%}"
    )


def _combine(*checks: tuple[bool | None, str]) -> tuple[bool | None, str]:
    verdicts = [c[0] for c in checks]
    if None in verdicts:
        met: bool | None = None
    else:
        met = all(v for v in verdicts if v is not None)
    return met, "; ".join(c[1] for c in checks)


def targets(runs: dict[str, Any], reap: dict[str, Any]) -> list[dict[str, Any]]:
    """
    The issue's targets, each with the measured value and a verdict.
    """

    def paired(
        key: str, metric: str, other: str, otherKey: str | None = None
    ) -> float | None:
        return medianOrNone(
            pairedRatios(
                values(runs, key, "agilerpc", metric),
                values(runs, otherKey or key, other, metric),
            )
        )

    rows: list[tuple[str, str, tuple[bool | None, str]]] = []
    rows.append(
        (
            "A calls/s",
            f"≥ 0.95{X} bare, ≥ 1.3{X} AMP",
            _combine(
                _atLeast(paired("seq", "calls_per_s", "bare"), 0.95),
                _atLeast(paired("seq", "calls_per_s", "amp"), 1.3),
            ),
        )
    )
    rows.append(
        (
            "A p99 latency",
            f"≤ 1.1{X} bare",
            _atMost(paired("seq", "p99_us", "bare"), 1.1),
        )
    )
    rows.append(
        (
            "A with metadata",
            f"≥ 0.9{X} agilerpc's A without",
            _atLeast(
                medianOrNone(
                    pairedRatios(
                        values(runs, "seqMeta", "agilerpc", "calls_per_s"),
                        values(runs, "seq", "agilerpc", "calls_per_s"),
                    )
                ),
                0.9,
            ),
        )
    )
    rows.append(
        (
            "A' blocking sequential calls/s",
            f"≥ 1.0{X} bare's Deferred client",
            _atLeast(paired("blocking", "calls_per_s", "bare", "seq"), 1.0),
        )
    )
    rows.append(
        (
            "A' blocking sequential calls/s vs agileutil",
            f"≥ 1.05{X} agileutil's client and server",
            _atLeast(paired("blocking", "calls_per_s", "agileutil"), 1.05),
        )
    )
    rows.append(
        (
            "B calls/s (100 in flight)",
            f"≥ 0.9{X} bare, ≥ 4{X} AMP",
            _combine(
                _atLeast(paired("pipe", "calls_per_s", "bare"), 0.9),
                _atLeast(paired("pipe", "calls_per_s", "amp"), 4.0),
            ),
        )
    )
    rows.append(
        (
            f"B calls/s, 8 threads {X} blocking client, vs agileutil",
            f"≥ 1.0{X} agileutil's client and server",
            _atLeast(paired("threads", "calls_per_s", "agileutil"), 1.0),
        )
    )
    rows.append(
        (
            "C 64 KiB calls/s",
            f"≥ 1.4{X} bare",
            _atLeast(paired("echo64k", "calls_per_s", "bare"), 1.4),
        )
    )
    large = medianOrNone(
        pairedRatios(
            values(runs, "echo8m", "agilerpc", "s_per_MiB"),
            values(runs, "echo64k", "agilerpc", "s_per_MiB"),
        )
    )
    rows.append(
        (
            "C-large",
            f"s/MiB at 8 MiB ≤ 1.5{X} s/MiB at 64 KiB",
            _atMost(large, 1.5),
        )
    )
    rows.append(
        (
            "D",
            "≤ 1.6 KiB per idle connection",
            _atMost(
                medianOrNone(values(runs, "idle", "agilerpc", "kib_per_conn")),
                1.6,
                " KiB",
            ),
        )
    )
    rows.append(
        (
            "E",
            f"server CPU per call ≤ 1.1{X} bare",
            _atMost(paired("pipe", "server_cpu_us_per_call", "bare"), 1.1),
        )
    )
    for figure, key, target in (
        ("A calls/s vs grpcio", "seq", 5.0),
        ("B calls/s (100 in flight) vs grpcio", "pipe", 10.0),
        ("C 64 KiB calls/s vs grpcio", "echo64k", 2.5),
    ):
        rows.append(
            (
                figure,
                f"≥ {target:g}{X} grpcio",
                _atLeast(paired(key, "calls_per_s", "grpcio"), target),
            )
        )
    rows.append(
        (
            "F",
            "10,000 idle connections held and all reaped, server answering throughout",
            reapVerdict(reap),
        )
    )
    return [
        {"figure": figure, "target": target, "met": met, "measured": text}
        for figure, target, (met, text) in rows
    ]


def reapVerdict(reap: dict[str, Any]) -> tuple[bool | None, str]:
    """
    Did scenario F hold every connection at once, see all of them reaped,
    and get every probe call answered?
    """
    if not reap or "error" in reap:
        return (
            None,
            f"not measured ({reap.get('error', 'skipped') if reap else 'skipped'})",
        )
    wanted = reap["conns_wanted"]
    held = reap["peak_held"]
    reaped = reap["reaped"]
    failures = reap["probe_failure_count"]
    parts = [
        f"{held:,} of {wanted:,} held at once",
        f"{reaped:,} reaped"
        + (
            f" in {reap['reap_s']:.1f} s after the last opened"
            if reap.get("reap_s") is not None
            else ""
        ),
        f"{reap['probe_calls']} probe calls, {failures} failed, slowest {reap['probe_max_ms']:.0f} ms",
    ]
    met = (
        held == wanted
        and reaped == wanted
        and reap["left_open"] == 0
        and failures == 0
        and reap.get("server_alive_after", True)
    )
    return met, "; ".join(parts)


# -- output ---------------------------------------------------------------


def _cell(value: float | None, fmt: str) -> str:
    return "n/a" if value is None else fmt.format(value)


def _ratioCell(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f}{X}"


def markdown(report: dict[str, Any], plots: list[str] | None = None) -> str:
    """
    The report as the markdown of C{RESULTS.md}; with the C{plots} written
    beside it (paths relative to it) shown after the table.
    """
    m = report["machine"]
    config = report["config"]
    out = [
        "# agilerpc benchmark results",
        "",
        "Generated by `python -m bench`"
        + (" --quick" if report["quick"] else "")
        + " (see [README.md](README.md) for how to reproduce).  Do not edit by hand:"
        " the analysis at the end comes from `bench/NOTES.md`.",
        "",
        f"- Date: {m['date']}; {config['repeats']} interleaved repeats, medians shown;"
        " ratios are the median of the ratios measured within the same repeat.",
        f"- Machine: {m['cores']} cores ({m['usable_cores']} usable), {m['cpu']}, {m['platform']}",
        f"- Python {m['python']} ({m['implementation']}), Twisted {m['twisted']},"
        f" msgpack {m['msgpack']}, agilerpc {m['agilerpc']} from `{m['agilerpc_path']}`",
        f"- Load average at start {_load(m['load_average_start'])}, at end"
        f" {_load(m['load_average_end'])}: the machine is shared, so absolute"
        " numbers are noisy; the same-run ratios are what to compare.",
        f"- Total time {report['elapsed_s']:.0f} s.",
        "",
        "Server and client are separate processes on 127.0.0.1.  agilerpc runs as"
        " `twistd -n agilerpc --module rpchandlers`; bare is `bench/bare.py`"
        " (Int32StringReceiver + msgpack); AMP is `bench/amp.py`.  These three"
        " set TCP_NODELAY on both sides, as grpcio does and asyncio under"
        " agileutil's server; agileutil's client does not, and writes each call"
        " at once.  agileutil is agileutil"
        f" {m.get('agileutil') or '(not installed)'}'s own"
        " `TcpRpcServer` (`bench/agileutilserver.py`) and `TcpRpcClient`;"
        f" grpcio is grpcio {m.get('grpcio') or '(not installed)'}'s"
        f" {m.get('grpcio_server', 'sync')} server with generic handlers of"
        " msgpack bytes (`bench/grpcserver.py`) and a channel's unary callables."
        "  A and B call `add(1, 2)`; C echoes bytes.",
        "",
        "| figure | "
        + " | ".join(NAMES[impl] for impl in IMPLS)
        + " | "
        + " | ".join(f"agilerpc/{NAMES[other]}" for other in OTHERS)
        + " |",
        "|---|" + "---:|" * (len(IMPLS) + len(OTHERS)),
    ]
    for row in report["table"]:
        fmt = row["format"]
        cells = [_cell(row.get(impl), fmt) for impl in IMPLS]
        cells += [_ratioCell(row.get(f"agilerpc/{other}")) for other in OTHERS]
        out.append(f"| {row['figure']} | " + " | ".join(cells) + " |")
    for plot in plots or ():
        title = plotting.TITLES.get(os.path.basename(plot), plot)
        out += ["", f"![{title}]({plot})"]
    out += [
        "",
        f"C is {config['echo64k']['size']:,} bytes, except AMP: {AMP_MAX_VALUE:,} bytes, the"
        " largest value AMP can carry (so AMP has no C-large figures).  s/MiB counts"
        " the payload once (each echo moves it both ways).  D: each connection made"
        f" one call, then idles; {config['idle']['conns']:,} connections.  E: the"
        " server process's CPU time over the timed calls, divided by the calls:"
        " from /proc/PID/task/*/schedstat (ns), which is the same user+sys time as"
        " /proc/PID/stat without its 10 ms ticks.  A' and the 8-thread row"
        " have no AMP figure: AMP has no blocking client.  agileutil has only a"
        " blocking client: its figures are in the blocking rows (A', the"
        " 8 threads, C with the blocking client), D and E; the agilerpc column"
        " of those rows is agilerpc's `TcpRpcClient` (agileutil's API) against"
        " `twistd agilerpc`.  agileutil compresses frames over 4 KiB with lz4:"
        " every echo sends pseudo-random bytes, which it cannot shrink.  grpcio's"
        f" B keeps {config['pipe']['inflight']} calls in flight with `.future()`"
        " on one channel.  The 8-connection B"
        " rows spread the 100 calls in flight round-robin over 8 connections of"
        " one client process; with `--workers 2` the kernel hands each connection"
        " to the parent or the worker, and the client (one process) shares the"
        f" machine's {m['cores']} cores with both.",
        "",
        "## Targets",
        "",
        "| figure | target | verdict | measured |",
        "|---|---|---|---|",
    ]
    for t in report["targets"]:
        verdict = {True: "**met**", False: "**missed**", None: "not measured"}[t["met"]]
        out.append(f"| {t['figure']} | {t['target']} | {verdict} | {t['measured']} |")
    reap = report["reap"]
    out += ["", "## F: idle connections reaped by the keepalive", ""]
    if reap and "error" not in reap:
        out += [
            f"- {reap['conns']:,} connections wanted {reap['conns_wanted']:,}; fd limit"
            f" (soft, hard) {reap['fd_limit'][0]:,}, {reap['fd_limit'][1]:,}"
            " (raised in the script, inherited by the server).",
            f"- Opened in batches of {config['reap']['batch']} (each waits for its hello)"
            f" in {_seconds(reap['open_s'])}; peak held at once {reap['peak_held']:,};"
            f" hellos {reap['hellos']:,}; goaways {reap['goaways']:,}.",
            f"- Keepalive {config['reap']['keepalive']} s: all reaped"
            f" {_seconds(reap['reap_s'])} after the last was opened; {reap['left_open']}"
            " left open at the end.",
            f"- Server RSS before {reap['rss_before_kib']:,} KiB, with all open"
            f" {reap['rss_peak_kib']:,} KiB"
            f" ({_cell(reap['kib_per_conn_at_peak'], '{:.2f}')} KiB/conn), after"
            f" {reap['rss_after_kib']:,} KiB.",
            f"- A blocking client called `add` every {config['reap']['probeInterval']} s"
            f" throughout: {reap['probe_calls']} calls, {reap['probe_failure_count']}"
            f" failed, slowest {reap['probe_max_ms']:.0f} ms (it shares its process with"
            " the 10,000 sockets' event loop, so its latency includes that loop's).",
        ]
    else:
        out.append(f"Not measured: {reap.get('error') if reap else 'skipped'}.")
    if report["errors"]:
        out += ["", "## Errors", ""] + [f"- {e}" for e in report["errors"]]
    if report["profiles"]:
        out += [
            "",
            "## Profiles",
            "",
            "cProfile of the agilerpc server (`twistd --profile --profiler=cprofile`) and"
            " of the agilerpc client process, one run of each scenario, top entries by"
            " own time.  Profiling slows everything down; read the shares, not the"
            " times.",
        ]
        for name, profile in report["profiles"].items():
            for side in ("server", "client"):
                if side in profile:
                    out += ["", f"### {name}: {side}", "", "```", profile[side], "```"]
            if "error" in profile:
                out += ["", f"### {name}: failed", "", profile["error"]]
    notes = os.path.join(procs.BENCH_DIR, "NOTES.md")
    if os.path.exists(notes):
        with open(notes, encoding="utf-8") as f:
            out += ["", f.read().rstrip()]
    return "\n".join(out) + "\n"


def _load(load: list[float] | tuple[float, ...]) -> str:
    return " / ".join(f"{x:.2f}" for x in load)


def _seconds(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f} s"


def run(
    config: dict[str, Any],
    quick: bool,
    profile: bool,
    reap: bool,
    log: Callable[[str], None],
) -> dict[str, Any]:
    """
    Measure everything C{config} says; the whole report.
    """
    started = time.monotonic()
    facts = machine()
    runs = measure(config, log)
    errors = runs.pop("errors")
    reapResult = measureReap(config, log) if reap else {}
    profiles = profileAgilerpc(config, log) if profile else {}
    facts["load_average_end"] = os.getloadavg()
    return {
        "quick": quick,
        "config": config,
        "machine": facts,
        "runs": runs,
        "errors": errors,
        "table": summarize(runs),
        "targets": targets(runs, reapResult),
        "reap": reapResult,
        "profiles": profiles,
        "elapsed_s": time.monotonic() - started,
    }


#: The figures of the README's table against the peers: (label, scenario,
#: metric), each a row of L{ROWS}.
PEER_ROWS = (
    ("sequential calls/s, Twisted client", "seq", "calls_per_s"),
    ("sequential calls/s, blocking client", "blocking", "calls_per_s"),
    ("calls/s, 100 in flight", "pipe", "calls_per_s"),
    (f"calls/s, 8 threads {X} blocking client", "threads", "calls_per_s"),
    ("64 KiB echo calls/s", "echo64k", "calls_per_s"),
    ("64 KiB echo calls/s, blocking client", "echo64kBlocking", "calls_per_s"),
    ("server CPU µs per call, 100 in flight", "pipe", "server_cpu_us_per_call"),
    ("server KiB per idle connection", "idle", "kib_per_conn"),
)

#: The markers around the README's table against the peers, which
#: L{updateReadme} rewrites.
README_TABLE = ("<!-- peers-table -->", "<!-- /peers-table -->")


def peersTable(report: dict[str, Any]) -> str:
    """
    The README's table against the peers: agilerpc's median for each of
    L{PEER_ROWS}, and each peer's with agilerpc's same-run ratio to it, from
    the report's table (the rows RESULTS.md shows).
    """
    rows = {(r["scenario"], r["metric"]): r for r in report["table"]}
    names = [NAMES[impl] for impl in IMPLS]
    out = [
        "| figure | " + " | ".join(names) + " |",
        "|---|" + "---:|" * len(names),
    ]
    for label, scenario, metric in PEER_ROWS:
        row = rows[(scenario, metric)]
        fmt = row["format"]
        cells = [_cell(row["agilerpc"], fmt)]
        for other in OTHERS:
            value, ratio = row.get(other), row.get(f"agilerpc/{other}")
            cells.append(
                "n/a" if value is None else f"{_cell(value, fmt)} ({_ratioCell(ratio)})"
            )
        out.append(f"| {label} | " + " | ".join(cells) + " |")
    m = report["machine"]
    out += [
        "",
        f"In brackets: agilerpc's figure divided by that one, the median of the"
        f" ratios within each of {report['config']['repeats']} interleaved repeats"
        f" ({m['date']}, {m['cores']} cores, Python {m['python']}, Twisted"
        f" {m['twisted']}).",
    ]
    return "\n".join(out)


def updateReadme(path: str, report: dict[str, Any]) -> bool:
    """
    Rewrite the table between the L{README_TABLE} markers of the README at
    C{path} from C{report}; whether it had them.
    """
    with open(path, encoding="utf-8") as f:
        text = f.read()
    start, end = README_TABLE
    before, found, rest = text.partition(start + "\n")
    if not found or end not in rest:
        return False
    after = rest[rest.index(end) :]
    with open(path, "w", encoding="utf-8") as f:
        f.write(before + start + "\n" + peersTable(report) + "\n" + after)
    return True


def render(report: dict[str, Any], directory: str, log: Callable[[str], None]) -> str:
    """
    Write C{RESULTS.md} and the plots of L{bench.plots} into C{directory}
    from C{report}; the markdown.  Without matplotlib, say so through
    C{log} and write RESULTS.md without plots.
    """
    os.makedirs(directory, exist_ok=True)
    try:
        written = plotting.writePlots(report, directory)
    except ImportError as e:
        written = []
        log(
            f"no plots: matplotlib is not installed ({e}); pip install"
            " matplotlib, or the bench extra (pip install -e '.[bench]')."
            "  RESULTS.md is written without them."
        )
    else:
        log("wrote " + ", ".join(os.path.join(directory, p) for p in written))
    text = markdown(report, written)
    with open(os.path.join(directory, "RESULTS.md"), "w", encoding="utf-8") as f:
        f.write(text)
    log(f"wrote {os.path.join(directory, 'RESULTS.md')}")
    if os.path.abspath(directory) == os.path.abspath(procs.BENCH_DIR):
        readme = os.path.join(os.path.dirname(procs.BENCH_DIR), "README.md")
        if os.path.exists(readme) and updateReadme(readme, report):
            log(f"wrote the table against the peers into {readme}")
    return text


def _terminate(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench", description=__doc__.split("\n\n")[1]
    )
    parser.add_argument(
        "--quick", action="store_true", help="a small run (under a minute) for CI"
    )
    parser.add_argument(
        "--repeats", type=int, help="interleaved repeats (default 3; 1 with --quick)"
    )
    parser.add_argument(
        "--output",
        help="directory for RESULTS.md, results.json and plots/ (default: bench/, or"
        " nowhere with --quick)",
    )
    parser.add_argument("--no-profile", action="store_true", help="skip the profiles")
    parser.add_argument("--no-reap", action="store_true", help="skip scenario F")
    parser.add_argument(
        "--render",
        metavar="JSON",
        help="measure nothing: write RESULTS.md again from a results.json"
        " (after editing bench/NOTES.md, say)",
    )
    options = parser.parse_args(argv)

    def log(message: str) -> None:
        print(message, file=sys.stderr, flush=True)

    if options.render is not None:
        with open(options.render, encoding="utf-8") as f:
            report = json.load(f)
        directory = options.output or os.path.dirname(os.path.abspath(options.render))
        print(render(report, directory, log))
        return 0
    config = json.loads(json.dumps(QUICK if options.quick else FULL))
    if options.repeats is not None:
        if options.repeats < 1:
            parser.error("--repeats must be >= 1")
        config["repeats"] = options.repeats
    output = options.output
    if output is None and not options.quick:
        output = procs.BENCH_DIR
    signal.signal(signal.SIGTERM, _terminate)
    try:
        report = run(
            config, options.quick, not options.no_profile, not options.no_reap, log
        )
    finally:
        procs.killAll()
    if output is None:
        text = markdown(report)
    else:
        os.makedirs(output, exist_ok=True)
        with open(os.path.join(output, "results.json"), "w", encoding="utf-8") as f:
            json.dump(report, f, indent=1)
            f.write("\n")
        log(f"wrote {output}/results.json")
        text = render(report, output, log)
    print(text)
    return 1 if report["errors"] else 0
