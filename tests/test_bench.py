"""
Tests for the benchmark suite in C{bench/}: its statistics helpers, the bare
and AMP baselines, the client loops, the report it builds, and a C{--quick}
run end to end.  Timings are never asserted; only that the bench code
computes and reports what it says.
"""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
import tempfile
import time
from typing import Any
from unittest import SkipTest, mock

import msgpack
from twisted.internet.defer import Deferred
from twisted.internet.testing import StringTransport
from twisted.protocols import amp as twistedAmp
from twisted.test import iosim
from twisted.trial.unittest import SynchronousTestCase

from bench import client as benchClient
from bench import plots, procs, run, streams
from bench.amp import Add, BenchAMP, Echo
from bench.bare import (
    BareBlockingClient,
    BareClientProtocol,
    BareError,
    BareServerProtocol,
)
from bench.stats import latencySummary, median, medianOrNone, percentile, ratio


def frame(message: Any) -> bytes:
    """
    C{message} packed with msgpack, with a 4-byte big-endian length prefix.
    """
    payload: bytes = msgpack.packb(message)
    return struct.pack(">I", len(payload)) + payload


class StatsTests(SynchronousTestCase):
    """
    Tests for L{bench.stats}.
    """

    def test_medianOdd(self) -> None:
        """
        The median of an odd count is the middle value, whatever the order.
        """
        self.assertEqual(median([5, 1, 3]), 3.0)

    def test_medianEven(self) -> None:
        """
        The median of an even count is the mean of the two middle values.
        """
        self.assertEqual(median([4, 1, 3, 10]), 3.5)

    def test_medianEmpty(self) -> None:
        """
        The median of nothing is an error, not a number.
        """
        self.assertRaises(ValueError, median, [])

    def test_percentileNearestRank(self) -> None:
        """
        Percentiles use the nearest rank: p50 of 1..100 is 50, p99 is 99,
        p100 is the maximum and p0 the minimum.
        """
        values = list(range(100, 0, -1))
        self.assertEqual(percentile(values, 0.5), 50.0)
        self.assertEqual(percentile(values, 0.99), 99.0)
        self.assertEqual(percentile(values, 1.0), 100.0)
        self.assertEqual(percentile(values, 0.0), 1.0)

    def test_percentileSmallSample(self) -> None:
        """
        With fewer than 100 values, p99 is the maximum.
        """
        self.assertEqual(percentile([3, 1, 2], 0.99), 3.0)

    def test_percentileBadInput(self) -> None:
        """
        An empty sample or a fraction outside [0, 1] is refused.
        """
        self.assertRaises(ValueError, percentile, [], 0.5)
        self.assertRaises(ValueError, percentile, [1], 1.5)

    def test_ratio(self) -> None:
        """
        A ratio is a quotient, or None when a side is missing or the
        denominator is zero.
        """
        self.assertEqual(ratio(3, 4), 0.75)
        self.assertIsNone(ratio(None, 4))
        self.assertIsNone(ratio(3, None))
        self.assertIsNone(ratio(3, 0))

    def test_medianOrNone(self) -> None:
        """
        Missing values are left out of the median; none at all gives None.
        """
        self.assertEqual(medianOrNone([None, 2.0, 4.0, None, 9.0]), 4.0)
        self.assertIsNone(medianOrNone([None, None]))

    def test_latencySummary(self) -> None:
        """
        Latencies in nanoseconds are summarized in microseconds.
        """
        self.assertEqual(
            latencySummary([1000 * i for i in range(1, 101)]),
            {"p50_us": 50.0, "p99_us": 99.0, "max_us": 100.0},
        )


class BareServerTests(SynchronousTestCase):
    """
    Tests for L{BareServerProtocol} over an in-memory transport.
    """

    def setUp(self) -> None:
        self.transport = StringTransport()
        self.protocol = BareServerProtocol()
        self.protocol.makeConnection(self.transport)

    def test_add(self) -> None:
        """
        A request is answered with C{[1, msgid, None, result]}.
        """
        self.protocol.dataReceived(frame([0, 7, "add", [1, 2]]))
        self.assertEqual(self.transport.value(), frame([1, 7, None, 3]))

    def test_echoPipelinedInPieces(self) -> None:
        """
        Requests that arrive together, split anywhere, are each answered in
        order.
        """
        data = frame([0, 1, "echo", [b"x" * 300]]) + frame([0, 2, "add", [2, 3]])
        for i in range(0, len(data), 7):
            self.protocol.dataReceived(data[i : i + 7])
        self.assertEqual(
            self.transport.value(),
            frame([1, 1, None, b"x" * 300]) + frame([1, 2, None, 5]),
        )

    def test_unknownMethod(self) -> None:
        """
        An unknown method is answered with an error map naming the exception.
        """
        self.protocol.dataReceived(frame([0, 3, "nope", []]))
        self.assertEqual(
            self.transport.value(),
            frame([1, 3, {"type": "KeyError", "message": "'nope'"}, None]),
        )

    def test_largeFrameAccepted(self) -> None:
        """
        The raised C{MAX_LENGTH} lets a 1 MiB echo through (the default
        limit of 99,999 bytes would close the connection).
        """
        payload = b"y" * (1024 * 1024)
        self.protocol.dataReceived(frame([0, 4, "echo", [payload]]))
        self.assertEqual(self.transport.value(), frame([1, 4, None, payload]))
        self.assertFalse(self.transport.disconnecting)


class BareClientTests(SynchronousTestCase):
    """
    Tests for L{BareClientProtocol}.
    """

    def setUp(self) -> None:
        self.transport = StringTransport()
        self.protocol = BareClientProtocol()
        self.protocol.makeConnection(self.transport)

    def test_callRemoteSendsRequests(self) -> None:
        """
        Each call is sent at once with the next msgid.
        """
        self.protocol.callRemote("add", 1, 2)
        self.protocol.callRemote("echo", b"z")
        self.assertEqual(
            self.transport.value(),
            frame([0, 0, "add", [1, 2]]) + frame([0, 1, "echo", [b"z"]]),
        )

    def test_responsesInAnyOrder(self) -> None:
        """
        Responses are matched to their calls by msgid, in any order.
        """
        first = self.protocol.callRemote("add", 1, 2)
        second = self.protocol.callRemote("add", 3, 4)
        self.protocol.dataReceived(frame([1, 1, None, 7]) + frame([1, 0, None, 3]))
        self.assertEqual(self.successResultOf(first), 3)
        self.assertEqual(self.successResultOf(second), 7)

    def test_errorResponse(self) -> None:
        """
        An error response fails the call with L{BareError}.
        """
        d = self.protocol.callRemote("nope")
        self.protocol.dataReceived(frame([1, 0, {"type": "KeyError"}, None]))
        failure = self.failureResultOf(d, BareError)
        self.assertEqual(failure.value.args, ({"type": "KeyError"},))

    def test_againstServer(self) -> None:
        """
        The bare client and server answer each other over an in-memory
        connection.
        """
        # connectedServerAndClient returns the client first.
        client, _server, pump = iosim.connectedServerAndClient(
            BareServerProtocol, BareClientProtocol
        )
        d = client.callRemote("echo", b"q" * 100000)
        pump.flush()
        self.assertEqual(self.successResultOf(d), b"q" * 100000)


class AmpTests(SynchronousTestCase):
    """
    Tests for the AMP baseline's commands.
    """

    def setUp(self) -> None:
        self.client, self.server, self.pump = iosim.connectedServerAndClient(
            BenchAMP, BenchAMP
        )

    def test_add(self) -> None:
        """
        C{Add} answers the sum as C{total}.
        """
        d = self.client.callRemote(Add, a=40, b=2)
        self.pump.flush()
        self.assertEqual(self.successResultOf(d), {"total": 42})

    def test_echoLargestValue(self) -> None:
        """
        C{Echo} returns the largest value AMP can carry, 65,535 bytes.
        """
        d = self.client.callRemote(Echo, value=b"v" * 65535)
        self.pump.flush()
        self.assertEqual(self.successResultOf(d), {"value": b"v" * 65535})

    def test_echo64KiBRefused(self) -> None:
        """
        AMP cannot carry 64 KiB in one value, which is why the benchmark
        echoes 65,535 bytes through it.
        """
        self.assertRaises(
            twistedAmp.TooLong,
            self.client.callRemote,
            Echo,
            value=b"v" * 65536,
        )

    def test_specCapsAmpEcho(self) -> None:
        """
        The C scenario's spec asks AMP for 65,535 bytes and the others for
        64 KiB.
        """
        scenario = next(s for s in run.SCENARIOS if s.key == "echo64k")
        sizes = {}
        for kind in procs.KINDS:
            server = _FakeServer(kind)
            sizes[kind] = run.clientSpec(run.FULL, scenario, server)["size"]  # type: ignore[arg-type]
        self.assertEqual(sizes, {"agilerpc": 65536, "bare": 65536, "amp": 65535})


class _FakeServer:
    """
    What L{run.clientSpec} reads from a server.
    """

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self.port = 1234
        self.pid = 4321


class LoopTests(SynchronousTestCase):
    """
    Tests for the client loops L{benchClient.sequential} and
    L{benchClient.pipelined}, with calls answered by hand.
    """

    def setUp(self) -> None:
        self.outstanding: list[Deferred[Any]] = []
        self.made = 0
        self.mostAtOnce = 0

    def call(self) -> Deferred[Any]:
        d: Deferred[Any] = Deferred()
        self.outstanding.append(d)
        self.made += 1
        self.mostAtOnce = max(self.mostAtOnce, len(self.outstanding))
        return d

    def answerOldest(self) -> None:
        self.outstanding.pop(0).callback(3)

    def test_sequentialOneAtATime(self) -> None:
        """
        The sequential loop makes exactly C{n} calls, one at a time, and
        fires with one latency per call.
        """
        d = benchClient.sequential(self.call, 5)
        for _ in range(5):
            self.assertEqual(len(self.outstanding), 1)
            self.answerOldest()
        latencies = self.successResultOf(d)
        self.assertEqual(len(latencies), 5)
        self.assertEqual((self.made, self.mostAtOnce), (5, 1))
        self.assertTrue(all(x >= 0 for x in latencies))

    def test_pipelinedKeepsInflight(self) -> None:
        """
        The pipelined loop keeps C{inflight} calls outstanding until C{n}
        were made, and fires when all are answered.
        """
        d = benchClient.pipelined(self.call, 10, 4)
        self.assertEqual(len(self.outstanding), 4)
        while self.outstanding:
            self.assertNoResult(d)
            self.answerOldest()
        self.assertEqual(self.successResultOf(d), 10)
        self.assertEqual((self.made, self.mostAtOnce), (10, 4))

    def test_failureStopsLoop(self) -> None:
        """
        A failed call fails the loop.
        """
        d = benchClient.pipelined(self.call, 10, 2)
        self.outstanding.pop(0).errback(ValueError("boom"))
        self.failureResultOf(d, ValueError)


def _runs(
    agilerpc: float,
    bare: float,
    amp: float | None,
    agileutil: float | None = None,
    grpcio: float | None = None,
) -> dict[str, Any]:
    """
    Results of one fake repeat where every figure of each implementation is
    the given number (agileutil and grpcio absent unless given).
    """
    metrics = [
        "calls_per_s",
        "p50_us",
        "p99_us",
        "s_per_MiB",
        "kib_per_conn",
        "server_cpu_us_per_call",
    ]
    runs: dict[str, Any] = {}
    for scenario in run.SCENARIOS:
        runs[scenario.key] = {}
        for impl, value in (
            ("agilerpc", agilerpc),
            ("bare", bare),
            ("amp", amp),
            ("agileutil", agileutil),
            ("grpcio", grpcio),
        ):
            if impl in ("agileutil", "grpcio") and value is None:
                continue
            if impl in scenario.impls:
                runs[scenario.key][impl] = [
                    None if value is None else dict.fromkeys(metrics, value)
                ]
    return runs


class ReportTests(SynchronousTestCase):
    """
    Tests for how L{bench.run} summarizes repeats and judges the targets.
    """

    def test_rotated(self) -> None:
        """
        Each repeat starts with the next implementation.
        """
        kinds = ("a", "b", "c")
        self.assertEqual(
            [run.rotated(kinds, r) for r in range(4)],
            [["a", "b", "c"], ["b", "c", "a"], ["c", "a", "b"], ["a", "b", "c"]],
        )

    def test_ratiosPairedWithinRepeat(self) -> None:
        """
        The ratio column is the median of the ratios within each repeat, not
        the ratio of the medians.
        """
        runs = {
            "seq": {
                "agilerpc": [
                    {"calls_per_s": 10},
                    {"calls_per_s": 100},
                    {"calls_per_s": 30},
                ],
                "bare": [
                    {"calls_per_s": 10},
                    {"calls_per_s": 200},
                    {"calls_per_s": 40},
                ],
                "amp": [None, {"calls_per_s": 50}, {"calls_per_s": 10}],
            }
        }
        row = next(r for r in run.summarize(runs) if r["figure"].startswith("A seq"))
        self.assertEqual(row["agilerpc"], 30.0)
        self.assertEqual(row["bare"], 40.0)
        self.assertEqual(row["amp"], 30.0)
        # Same-repeat ratios to bare 1.0, 0.5, 0.75: median 0.75.  To AMP:
        # (none), 2.0, 3.0: median 2.5, where the ratio of the medians
        # would be 30 / 30 = 1.0.
        self.assertEqual(row["agilerpc/bare"], 0.75)
        self.assertEqual(row["agilerpc/amp"], 2.5)

    def test_metadataTarget(self) -> None:
        """
        A with metadata is measured against agilerpc's own A of the same
        repeat: 0.85x misses the 0.9x target, 0.95x meets it.
        """
        for withMetadata, met in ((8.5, False), (9.5, True)):
            runs = _runs(agilerpc=10.0, bare=5.0, amp=1.0)
            runs["seqMeta"]["agilerpc"] = [{"calls_per_s": withMetadata}]
            verdicts = {t["figure"]: t for t in run.targets(runs, {})}
            self.assertEqual(verdicts["A with metadata"]["met"], met)

    def test_targetsMet(self) -> None:
        """
        With agilerpc far ahead on every figure where higher is better and
        ahead on memory and CPU too, the speed targets are met.
        """
        runs = _runs(agilerpc=10.0, bare=5.0, amp=1.0, agileutil=1.0, grpcio=1.0)
        reap = {
            "conns_wanted": 10,
            "peak_held": 10,
            "reaped": 10,
            "left_open": 0,
            "probe_failure_count": 0,
            "probe_calls": 3,
            "probe_max_ms": 1.0,
            "reap_s": 2.0,
        }
        verdicts = {t["figure"]: t["met"] for t in run.targets(runs, reap)}
        self.assertEqual(
            verdicts,
            {
                "A calls/s": True,
                # Latency is "lower is better": 10 vs 5 is 2x, a miss.
                "A p99 latency": False,
                # seqMeta has the same figures as seq: 1.0x.
                "A with metadata": True,
                "A' blocking sequential calls/s": True,
                "A' blocking sequential calls/s vs agileutil": True,
                "B calls/s (100 in flight)": True,
                "B calls/s, 8 threads \N{MULTIPLICATION SIGN} blocking client,"
                " vs agileutil": True,
                "C 64 KiB calls/s": True,
                "C-large": True,
                "D": False,
                "E": False,
                "A calls/s vs grpcio": True,
                # 10 against 1 is exactly the 10x target.
                "B calls/s (100 in flight) vs grpcio": True,
                "C 64 KiB calls/s vs grpcio": True,
                "F": True,
            },
        )

    def test_targetMissReportsHowMuch(self) -> None:
        """
        A missed target says by how much.
        """
        runs = _runs(agilerpc=1.0, bare=2.0, amp=1.0)
        target = next(t for t in run.targets(runs, {}) if t["figure"] == "A calls/s")
        self.assertFalse(target["met"])
        self.assertEqual(
            target["measured"],
            "0.50\N{MULTIPLICATION SIGN} (target ≥ 0.95\N{MULTIPLICATION SIGN}):"
            " missed by 47%; 1.00\N{MULTIPLICATION SIGN} (target ≥"
            " 1.3\N{MULTIPLICATION SIGN}): missed by 23%",
        )

    def test_missingFiguresNotJudged(self) -> None:
        """
        A target whose figures are missing is neither met nor missed.
        """
        runs = _runs(agilerpc=1.0, bare=2.0, amp=None)
        verdicts = {t["figure"]: t["met"] for t in run.targets(runs, {})}
        self.assertIsNone(verdicts["A calls/s"])
        self.assertIsNone(verdicts["F"])

    def test_reapVerdictCountsEverything(self) -> None:
        """
        F is missed when not every connection was held at once, or a probe
        call failed.
        """
        reap = {
            "conns_wanted": 10,
            "peak_held": 9,
            "reaped": 10,
            "left_open": 0,
            "probe_failure_count": 0,
            "probe_calls": 3,
            "probe_max_ms": 1.0,
            "reap_s": 2.0,
        }
        self.assertFalse(run.reapVerdict(reap)[0])
        reap["peak_held"] = 10
        self.assertTrue(run.reapVerdict(reap)[0])
        reap["probe_failure_count"] = 1
        self.assertFalse(run.reapVerdict(reap)[0])


class ProcTests(SynchronousTestCase):
    """
    Tests for the C{/proc} readers of L{bench.procs}.
    """

    def test_cpuAndMemoryOfThisProcess(self) -> None:
        """
        This process has used some CPU time, its schedstat total grows with
        work, and it has a resident set.
        """
        before = procs.cpuNanoseconds(os.getpid())
        deadline = time.process_time() + 0.05
        while time.process_time() < deadline:
            pass
        after = procs.cpuNanoseconds(os.getpid())
        assert before is not None and after is not None
        self.assertGreater(after, before)
        self.assertGreater(procs.cpuSeconds(os.getpid()), 0)
        self.assertGreater(procs.rssKiB(os.getpid()), 1000)

    def test_topEntriesLeavesOutPoll(self) -> None:
        """
        The profile summary lists the busiest functions and leaves the
        reactor's waiting out of the busy time.
        """
        import cProfile
        import select

        def busyWork() -> int:
            return sum(i * i for i in range(200000))

        poller = select.epoll()
        self.addCleanup(poller.close)
        profiler = cProfile.Profile()
        profiler.enable()
        busyWork()
        poller.poll(0.05)
        profiler.disable()
        path = self.mktemp()
        profiler.dump_stats(path)
        text = run.topEntries(path, calls=10)
        self.assertIn("busyWork", text)
        self.assertNotIn("epoll", text.split("\n", 1)[1])
        self.assertIn("waiting in poll left out", text.split("\n", 1)[0])


def _stopServer(server: procs.Server) -> None:
    server.stop(timeout=5)


class ServerProcessTests(SynchronousTestCase):
    """
    The three benchmark servers, started as the benchmark starts them, answer
    a real client on 127.0.0.1.
    """

    def start(self, kind: str) -> procs.Server:
        server = procs.startServer(kind, timeout=30)
        self.addCleanup(_stopServer, server)
        return server

    def test_bareServerProcess(self) -> None:
        """
        The bare server process answers the blocking bare client, and exits
        when stopped.
        """
        server = self.start("bare")
        client = BareBlockingClient("127.0.0.1", server.port, timeout=10)
        self.addCleanup(client.close)
        self.assertEqual(client.call("add", (1, 2)), 3)
        self.assertEqual(client.call("echo", (b"b" * 200000,)), b"b" * 200000)
        self.assertRaises(BareError, client.call, "nope")
        server.stop(timeout=5)
        self.assertIsNotNone(server.process.returncode)

    def test_clientScenariosAgainstEachServer(self) -> None:
        """
        A small sequential run of the client process against each server
        reports its figures (its check of C{add(1, 2)} passed).
        """
        for kind in procs.KINDS:
            server = self.start(kind)
            spec = {
                "scenario": "seq",
                "impl": kind,
                "host": "127.0.0.1",
                "port": server.port,
                "serverPid": server.pid,
                "n": 20,
                "warmup": 2,
                "timeout": 30,
            }
            result = run.runClient(spec, 60)
            self.assertEqual(result["n"], 20, kind)
            self.assertGreater(result["calls_per_s"], 0, kind)
            self.assertGreaterEqual(result["server_cpu_us_per_call"], 0, kind)


class QuickRunTests(SynchronousTestCase):
    """
    C{python -m bench --quick} runs end to end.
    """

    def test_quickRun(self) -> None:
        """
        A quick run finishes within its bound, writes RESULTS.md and
        results.json, has every agilerpc figure, judges every target (those
        against a peer whose package is installed), and saw every F
        connection reaped.
        """
        output = tempfile.mkdtemp()
        started = time.monotonic()
        completed = subprocess.run(
            [sys.executable, "-m", "bench", "--quick", "--output", output],
            cwd=procs.ROOT_DIR,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=180,
        )
        elapsed = time.monotonic() - started
        self.assertEqual(completed.returncode, 0, completed.stderr[-3000:])
        with open(os.path.join(output, "results.json"), encoding="utf-8") as f:
            report = json.load(f)
        with open(os.path.join(output, "RESULTS.md"), encoding="utf-8") as f:
            markdown = f.read()
        self.assertEqual(report["errors"], [])
        self.assertTrue(report["quick"])
        for row in report["table"]:
            self.assertIsNotNone(row["agilerpc"], row["figure"])
            self.assertIn(row["figure"], markdown)
        self.assertEqual(len(report["targets"]), 15)
        found = run.available()
        for target in report["targets"]:
            peers = [p for p in ("agileutil", "grpcio") if p in target["figure"]]
            if all(p in found for p in peers):
                self.assertIn(target["met"], (True, False), target)
            else:
                # Its peer's package is not installed: not judged.
                self.assertIsNone(target["met"], target)
        reap = report["reap"]
        self.assertEqual(reap["reaped"], reap["conns_wanted"])
        self.assertEqual(reap["goaways"], reap["conns_wanted"])
        self.assertEqual(set(report["profiles"]), {"seq", "pipe", "echo64k", "echo8m"})
        self.assertIn("_server.py", report["profiles"]["pipe"]["server"])
        for key in ("cores", "python", "twisted", "msgpack"):
            self.assertIn(key, report["machine"])
        table = {row["scenario"] + " " + row["metric"]: row for row in report["table"]}
        for peer, key in (
            ("agileutil", "blocking calls_per_s"),
            ("grpcio", "pipe calls_per_s"),
        ):
            if peer in run.available():
                self.assertIsNotNone(table[key][f"agilerpc/{peer}"], peer)
        if _hasMatplotlib():
            for plot in (plots.RATIOS, plots.LATENCY):
                self.assertTrue(os.path.exists(os.path.join(output, plot)), plot)
                self.assertIn(f"]({plot})", markdown)
        # "Under a minute" on an idle machine; the bound leaves room for a
        # busy one.
        self.assertLess(elapsed, 120)


class ServerLoopTests(SynchronousTestCase):
    """
    L{bench.serverloop} drives a real server protocol (timings are not
    asserted, only that it measured something).
    """

    def test_measures(self) -> None:
        """
        C{measure} runs its requests through the protocol and returns a
        positive time per request.
        """
        from bench import serverloop

        perRequest = serverloop.measure(200, 10, passes=1)
        self.assertGreater(perRequest, 0)


class ClientLoopTests(SynchronousTestCase):
    """
    L{bench.clientloop} drives a real client over a fake transport (timings
    are not asserted, only that it measured something).
    """

    def test_measures(self) -> None:
        """
        C{measure} makes its calls, each answered with its result, and
        returns a positive time per call.
        """
        from bench import clientloop

        perCall = clientloop.measure(200, passes=1)
        self.assertGreater(perCall, 0)


class StallTests(SynchronousTestCase):
    """
    L{bench.stall} builds legal worst cases and one over the container limit
    (timings are not asserted).
    """

    def test_cases(self) -> None:
        """
        Every case fits the maximum message size; the last one holds more
        arrays than the default limit and is refused.
        """
        from bench import stall

        cases = list(stall.cases())
        self.assertGreaterEqual(len(cases), 5)
        for name, payload in cases:
            self.assertLessEqual(len(payload), 8 * 1024 * 1024, name)
        _, median, outcome = stall.measure(cases[-1][1], passes=1)
        self.assertGreater(median, 0)
        self.assertEqual(
            outcome, "refused: the message holds more than 65536 arrays and maps"
        )


class StreamsTests(SynchronousTestCase):
    """
    Tests for L{bench.streams}, the streaming scenario.
    """

    def test_measure(self) -> None:
        """
        A tiny run of agilerpc against the bare push loop streams every item
        through each (the clients check the count) and reports items/s,
        MiB/s and agilerpc's ratio; grpcio too when it is installed.
        """
        kinds = ["agilerpc", "pushbare"]
        try:
            import grpc  # type: ignore[import-untyped]  # noqa: F401
        except ImportError:
            pass
        else:
            kinds.append("grpc")
        report = streams.measure(items=300, size=10, repeats=1, window=8, kinds=kinds)
        for kind in kinds:
            self.assertEqual(len(report[kind]["seconds"]), 1)
            self.assertGreater(report[kind]["items/s"], 0)
        self.assertGreater(report["agilerpc/pushbare"], 0)


def _hasMatplotlib() -> bool:
    import importlib.util

    return importlib.util.find_spec("matplotlib") is not None


def _peerRuns() -> dict[str, Any]:
    """
    Three fake repeats with agileutil and grpcio figures: agilerpc's
    blocking client at 9, 10, 12 calls/s against agileutil's 10 in each
    (ratios 0.9, 1.0, 1.2: median 1.0); agilerpc's Deferred client at 30
    calls/s against grpcio's 10, 5, 6 (ratios 3, 6, 5: median 5).
    """
    runs = _runs(agilerpc=10.0, bare=5.0, amp=1.0, agileutil=10.0, grpcio=2.0)
    runs["blocking"]["agilerpc"] = [{"calls_per_s": v} for v in (9.0, 10.0, 12.0)]
    runs["blocking"]["agileutil"] = [{"calls_per_s": 10.0}] * 3
    runs["seq"]["agilerpc"] = [{"calls_per_s": 30.0, "p50_us": 100.0}] * 3
    runs["seq"]["grpcio"] = [{"calls_per_s": v} for v in (10.0, 5.0, 6.0)]
    return runs


def _report(runs: dict[str, Any]) -> dict[str, Any]:
    """
    A report of C{runs} as L{run.run} builds it, with made-up machine facts.
    """
    machine = {
        "date": "2026-01-01 00:00 UTC",
        "cores": 2,
        "usable_cores": 2,
        "cpu": "test",
        "platform": "test",
        "python": "3.x",
        "implementation": "CPython",
        "twisted": "x",
        "msgpack": "x",
        "agilerpc": "x",
        "agilerpc_path": "/x",
        "load_average_start": [0.0, 0.0, 0.0],
        "load_average_end": [0.0, 0.0, 0.0],
        "agileutil": "0.0.26",
        "grpcio": "1.0",
        "grpcio_server": "sync",
    }
    return {
        "quick": False,
        "config": run.FULL,
        "machine": machine,
        "runs": runs,
        "errors": [],
        "table": run.summarize(runs),
        "targets": run.targets(runs, {}),
        "reap": {},
        "profiles": {},
        "elapsed_s": 1.0,
    }


class PeerReportTests(SynchronousTestCase):
    """
    The agileutil and grpcio columns, ratios and targets of the report,
    from synthetic results.
    """

    def test_peerRatiosPairedWithinRepeat(self) -> None:
        """
        agilerpc/agileutil and agilerpc/grpcio are medians of the ratios
        within each repeat, like agilerpc/bare.
        """
        table = {
            r["scenario"] + " " + r["metric"]: r for r in run.summarize(_peerRuns())
        }
        blocking = table["blocking calls_per_s"]
        self.assertEqual(blocking["agileutil"], 10.0)
        self.assertEqual(blocking["agilerpc/agileutil"], 1.0)
        self.assertIsNone(blocking["grpcio"])
        self.assertIsNone(blocking["agilerpc/grpcio"])
        seq = table["seq calls_per_s"]
        self.assertEqual(seq["grpcio"], 6.0)
        # The ratio of the medians would be 30 / 6 = 5 too; the paired
        # ratios 3, 6 and 5 have the median 5.
        self.assertEqual(seq["agilerpc/grpcio"], 5.0)
        self.assertIsNone(seq["agileutil"])

    def test_peerTargets(self) -> None:
        """
        The agileutil and grpcio targets are judged on the paired ratios,
        and a miss says by how much.
        """
        targets = {t["figure"]: t for t in run.targets(_peerRuns(), {})}
        mark = "\N{MULTIPLICATION SIGN}"
        blocking = targets["A' blocking sequential calls/s vs agileutil"]
        self.assertFalse(blocking["met"])
        self.assertEqual(
            blocking["measured"], f"1.00{mark} (target ≥ 1.05{mark}): missed by 5%"
        )
        self.assertTrue(targets["A calls/s vs grpcio"]["met"])
        # 10 against 2 in the one repeat of B: 5x, half the 10x target.
        grpcB = targets["B calls/s (100 in flight) vs grpcio"]
        self.assertFalse(grpcB["met"])
        self.assertTrue(grpcB["measured"].endswith("missed by 50%"), grpcB)
        self.assertEqual(
            targets["B calls/s, 8 threads " + mark + " blocking client, vs agileutil"][
                "met"
            ],
            True,
        )

    def test_newTargetsReplaceOlder(self) -> None:
        """
        D is judged against 1.6 KiB, E against 1.1x bare and B against 0.9x
        bare: 1.7 KiB, 1.12x and 0.88x, which met the older targets, miss.
        """
        runs = _runs(agilerpc=1.0, bare=1.0, amp=0.1)
        runs["idle"]["agilerpc"] = [{"kib_per_conn": 1.7}]
        runs["pipe"]["agilerpc"] = [
            {"calls_per_s": 0.88, "server_cpu_us_per_call": 1.12}
        ]
        targets = {t["figure"]: t for t in run.targets(runs, {})}
        self.assertFalse(targets["D"]["met"])
        self.assertIn("1.6 KiB", targets["D"]["target"])
        self.assertFalse(targets["E"]["met"])
        self.assertFalse(targets["B calls/s (100 in flight)"]["met"])

    def test_peersMissingNotJudged(self) -> None:
        """
        Without agileutil and grpcio figures their targets are not judged,
        and the others still are.
        """
        targets = {t["figure"]: t["met"] for t in run.targets(_runs(10, 5, 1), {})}
        self.assertIsNone(targets["A calls/s vs grpcio"])
        self.assertIsNone(targets["A' blocking sequential calls/s vs agileutil"])
        self.assertTrue(targets["A calls/s"])

    def test_availableLeavesOutMissingPeers(self) -> None:
        """
        A peer whose package cannot be imported is left out of the run;
        agilerpc, bare and AMP never are.
        """
        with mock.patch.dict(sys.modules, {"grpc": None}):
            found = run.available()
        self.assertNotIn("grpcio", found)
        self.assertEqual(found[:3], ("agilerpc", "bare", "amp"))

    def test_markdownPeerColumns(self) -> None:
        """
        RESULTS.md has a column for each system and for each ratio, and the
        peer targets in its Targets table.
        """
        text = run.markdown(_report(_peerRuns()))
        self.assertIn(
            "| figure | agilerpc | bare | AMP | agileutil | grpcio | agilerpc/bare"
            " | agilerpc/AMP | agilerpc/agileutil | agilerpc/grpcio |",
            text,
        )
        mark = "\N{MULTIPLICATION SIGN}"
        # bare has one repeat: agilerpc/bare pairs it with agilerpc's first, 9.
        self.assertIn(
            "| A' sequential calls/s (blocking client) | 10 | 5 | n/a | 10 | n/a"
            f" | 1.80{mark} | n/a | 1.00{mark} | n/a |",
            text,
        )
        self.assertIn(
            "| A' blocking sequential calls/s vs agileutil |"
            f" ≥ 1.05{mark} agileutil's client and server | **missed** |",
            text,
        )
        self.assertIn("grpcio 1.0's sync server", text)
        self.assertNotIn("![", text)

    def test_peersTable(self) -> None:
        """
        The README's table has agilerpc's figure and each peer's with
        agilerpc's same-run ratio to it; a peer without the figure has
        "n/a".
        """
        table = run.peersTable(_report(_peerRuns()))
        mark = "\N{MULTIPLICATION SIGN}"
        lines = table.splitlines()
        self.assertEqual(
            lines[0], "| figure | agilerpc | bare | AMP | agileutil | grpcio |"
        )
        self.assertIn(
            "| sequential calls/s, Twisted client | 30 | 5 (6.00{m}) | 1 (30.00{m})"
            " | n/a | 6 (5.00{m}) |".replace("{m}", mark),
            lines,
        )
        self.assertIn(
            "| sequential calls/s, blocking client | 10 | 5 (1.80{m}) | n/a |"
            " 10 (1.00{m}) | n/a |".replace("{m}", mark),
            lines,
        )
        self.assertEqual(len(lines), 2 + len(run.PEER_ROWS) + 2)

    def test_updateReadme(self) -> None:
        """
        updateReadme rewrites what is between the markers, and leaves a
        README without them alone.
        """
        path = self.mktemp()
        start, end = run.README_TABLE
        with open(path, "w", encoding="utf-8") as f:
            f.write(f"before\n{start}\nold table\n{end}\nafter\n")
        report = _report(_peerRuns())
        self.assertTrue(run.updateReadme(path, report))
        with open(path, encoding="utf-8") as f:
            text = f.read()
        self.assertEqual(
            text, f"before\n{start}\n{run.peersTable(report)}\n{end}\nafter\n"
        )
        with open(path, "w", encoding="utf-8") as f:
            f.write("no markers\n")
        self.assertFalse(run.updateReadme(path, report))

    def test_markdownOfAnOlderReport(self) -> None:
        """
        A results.json written before the peers existed still renders, with
        n/a in their columns.
        """
        report = _report(_runs(agilerpc=10.0, bare=5.0, amp=1.0))
        for row in report["table"]:
            for key in ("agileutil", "grpcio", "agilerpc/agileutil", "agilerpc/grpcio"):
                del row[key]
        del report["machine"]["grpcio"]
        text = run.markdown(report)
        self.assertIn("| 10 | 5 | 1 | n/a | n/a | 2.00", text)


class PlotTests(SynchronousTestCase):
    """
    The charts of L{bench.plots}, and L{run.render} which writes them beside
    RESULTS.md.
    """

    def setUp(self) -> None:
        self.report = _report(_peerRuns())
        self.directory = self.mktemp()
        self.logged: list[str] = []

    def requireMatplotlib(self) -> None:
        if not _hasMatplotlib():
            raise SkipTest("matplotlib is not installed")

    def test_renderWritesCharts(self) -> None:
        """
        C{render} writes the two SVG charts at their stable paths (the
        figures' labels as text, no date) and RESULTS.md showing them; the
        same report drawn again gives byte-identical files.
        """
        self.requireMatplotlib()
        text = run.render(self.report, self.directory, self.logged.append)
        with open(os.path.join(self.directory, "RESULTS.md"), encoding="utf-8") as f:
            self.assertEqual(f.read(), text)
        self.assertIn("](plots/ratios.svg)", text)
        self.assertIn("](plots/latency.svg)", text)
        with open(os.path.join(self.directory, plots.RATIOS), encoding="utf-8") as f:
            ratios = f.read()
        self.assertTrue(ratios.startswith("<?xml"))
        self.assertIn("agilerpc / grpcio", ratios)
        self.assertIn("A' sequential calls/s (blocking client)", ratios)
        self.assertNotIn("<dc:date>", ratios)
        with open(os.path.join(self.directory, plots.LATENCY), encoding="utf-8") as f:
            self.assertIn("blocking clients", f.read())
        other = self.mktemp()
        self.assertEqual(
            plots.writePlots(self.report, other), [plots.RATIOS, plots.LATENCY]
        )
        for plot in (plots.RATIOS, plots.LATENCY):
            with open(os.path.join(self.directory, plot), "rb") as f:
                first = f.read()
            with open(os.path.join(other, plot), "rb") as f:
                self.assertEqual(f.read(), first, plot)

    def test_renderWithoutMatplotlib(self) -> None:
        """
        Without matplotlib, C{render} says so and still writes RESULTS.md,
        without charts.
        """
        with mock.patch.dict(sys.modules, {"matplotlib": None}):
            text = run.render(self.report, self.directory, self.logged.append)
        self.assertTrue(os.path.exists(os.path.join(self.directory, "RESULTS.md")))
        self.assertNotIn("![", text)
        self.assertIn("matplotlib is not installed", self.logged[0])
        self.assertFalse(os.path.exists(os.path.join(self.directory, plots.RATIOS)))


class PeerSmokeTests(SynchronousTestCase):
    """
    agileutil's and grpcio's servers, started as the benchmark starts them,
    answer the benchmark's client scenarios for them on 127.0.0.1 (skipped
    where the package is not installed).
    """

    def start(self, kind: str) -> procs.Server:
        if kind not in run.available():
            raise SkipTest(f"{kind} is not installed")
        server = procs.startServer(kind, timeout=30)
        self.addCleanup(_stopServer, server)
        return server

    def spec(self, server: procs.Server, **fields: Any) -> dict[str, Any]:
        spec = {
            "impl": server.kind,
            "host": "127.0.0.1",
            "port": server.port,
            "serverPid": server.pid,
            "timeout": 30,
        }
        spec.update(fields)
        return spec

    def check(self, server: procs.Server, scenarios: list[dict[str, Any]]) -> None:
        for fields in scenarios:
            result = run.runClient(self.spec(server, **fields), 60)
            self.assertEqual(result["n"], fields["n"], fields)
            self.assertGreater(result["calls_per_s"], 0, fields)
            self.assertGreaterEqual(result["server_cpu_us_per_call"], 0, fields)

    def test_agileutil(self) -> None:
        """
        agileutil's client and server: sequential adds, and 64 KiB echoes
        (which it compresses) checked by the client.  (Its D runs in the
        quick run.)
        """
        self.check(
            self.start("agileutil"),
            [
                {"scenario": "blocking", "n": 20, "warmup": 2},
                {"scenario": "blocking", "n": 3, "size": 65536},
            ],
        )

    def test_grpcio(self) -> None:
        """
        grpcio's channel and server: sequential adds, calls in flight, and
        64 KiB echoes checked by the client.  (Its D runs in the quick run.)
        """
        self.check(
            self.start("grpcio"),
            [
                {"scenario": "seq", "n": 20, "warmup": 2},
                {"scenario": "pipe", "n": 200, "warmup": 20, "inflight": 20},
                {"scenario": "echo", "n": 3, "size": 65536},
            ],
        )
