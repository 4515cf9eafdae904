"""
Server processes for the benchmark, and what C{/proc} says about them.

Every process started here is remembered and killed by its pid at exit
(L{killAll} runs from C{atexit}, and callers stop servers in C{finally}).
"""

from __future__ import annotations

import atexit
import contextlib
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from typing import IO

import agilerpc

BENCH_DIR = os.path.dirname(os.path.abspath(__file__))
# The directory holding the bench package: client subprocesses run from it.
ROOT_DIR = os.path.dirname(BENCH_DIR)
# Where the agilerpc this process imported lives: the server imports the same.
AGILERPC_PARENT = os.path.dirname(os.path.dirname(os.path.abspath(agilerpc.__file__)))

KINDS = ("agilerpc", "bare", "amp")

#: The peers that need a package of their own (the C{bench} extra):
#: agileutil's C{TcpRpcServer}, and grpcio (L{bench.grpcserver}).
PEERS = ("agileutil", "grpcio")

#: Which grpcio server L{startServer} starts: C{"sync"} (a thread pool) or
#: C{"aio"}.
GRPC_FLAVOUR = "sync"

_PORT_LINES = {
    "agilerpc": re.compile(r"RpcServerFactory starting on (\d+)"),
    "bare": re.compile(r"bare listening on (\d+)"),
    "amp": re.compile(r"amp listening on (\d+)"),
    "pushbare": re.compile(r"pushbare listening on (\d+)"),
    "grpc": re.compile(r"grpc listening on (\d+)"),
    "agileutil": re.compile(r"agileutil listening on (\d+)"),
    "grpcio": re.compile(r"grpcio listening on (\d+)"),
}

_CLOCK_TICKS = os.sysconf("SC_CLK_TCK")

_running: dict[int, subprocess.Popen[bytes]] = {}


def twistdPath() -> str:
    """
    The C{twistd} script of the running Python.
    """
    candidate = os.path.join(os.path.dirname(sys.executable), "twistd")
    if os.path.exists(candidate):
        return candidate
    found = shutil.which("twistd")
    if found is None:
        raise RuntimeError("cannot find twistd next to sys.executable or on PATH")
    return found


def cpuSeconds(pid: int) -> float:
    """
    The user + system CPU time process C{pid} has used, in seconds, from
    C{/proc/PID/stat}.
    """
    with open(f"/proc/{pid}/stat", "rb") as f:
        stat = f.read()
    # The command name (field 2) may hold spaces: split after its ")".
    fields = stat[stat.rindex(b")") + 2 :].split()
    # utime and stime are fields 14 and 15, i.e. 11 and 12 after field 3.
    return (int(fields[11]) + int(fields[12])) / _CLOCK_TICKS


def cpuNanoseconds(pid: int) -> int | None:
    """
    The CPU time all threads of process C{pid} have used, in nanoseconds,
    from C{/proc/PID/task/*/schedstat} (finer than the 10 ms ticks of
    C{/proc/PID/stat}); L{None} where the kernel does not provide it.
    """
    total = 0
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
        for task in tasks:
            with open(f"/proc/{pid}/task/{task}/schedstat", "rb") as f:
                total += int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        return None
    return total


def rssKiB(pid: int) -> int:
    """
    The resident set size of process C{pid} in KiB, from C{/proc/PID/status}.
    """
    with open(f"/proc/{pid}/status", "rb") as f:
        for line in f:
            if line.startswith(b"VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError(f"no VmRSS in /proc/{pid}/status")


def raiseFileLimit(wanted: int) -> tuple[int, int]:
    """
    Raise this process's soft C{RLIMIT_NOFILE} towards C{wanted} (children
    inherit it), as far as the hard limit allows.

    @return: the soft and hard limits afterwards.
    """
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if target > soft:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)


class _Drain(threading.Thread):
    """
    Read a child's output to its end, so that it never blocks on a full pipe.
    """

    def __init__(self, pipe: IO[bytes]) -> None:
        super().__init__(daemon=True)
        self._pipe = pipe
        self.lines: list[str] = []
        self.condition = threading.Condition()
        self.closed = False

    def run(self) -> None:
        try:
            for line in iter(self._pipe.readline, b""):
                with self.condition:
                    self.lines.append(line.decode("utf-8", "replace"))
                    self.condition.notify_all()
        except (OSError, ValueError):
            pass
        finally:
            with self.condition:
                self.closed = True
                self.condition.notify_all()

    def waitFor(self, pattern: re.Pattern[str], timeout: float) -> re.Match[str] | None:
        deadline = time.monotonic() + timeout
        with self.condition:
            while True:
                match = pattern.search("".join(self.lines))
                if match is not None or self.closed:
                    return match
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return None
                self.condition.wait(remaining)

    def text(self) -> str:
        with self.condition:
            return "".join(self.lines)


class Server:
    """
    A running benchmark server on 127.0.0.1.

    @ivar kind: C{"agilerpc"}, C{"bare"}, C{"amp"}, C{"agileutil"} or
        C{"grpcio"} (or a streaming server of L{bench.streams}).
    @ivar pid: its process id.
    @ivar port: the TCP port it listens on.
    """

    def __init__(
        self,
        kind: str,
        process: subprocess.Popen[bytes],
        drain: _Drain,
        directory: str,
    ) -> None:
        self.kind = kind
        self.process = process
        self.pid = process.pid
        self.port = 0
        self._drain = drain
        self._directory = directory

    def output(self) -> str:
        """
        What the server wrote so far.
        """
        return self._drain.text()

    def cpuSeconds(self) -> float:
        """
        The CPU time the server has used so far.
        """
        return cpuSeconds(self.pid)

    def cpuNanoseconds(self) -> int | None:
        """
        The CPU time the server has used so far, from schedstat.
        """
        return cpuNanoseconds(self.pid)

    def rssKiB(self) -> int:
        """
        The server's resident set size now.
        """
        return rssKiB(self.pid)

    def stop(self, timeout: float = 15.0) -> int | None:
        """
        Stop the server with SIGTERM (SIGKILL if it is still running after
        C{timeout} seconds); its exit code.
        """
        try:
            if self.process.poll() is None:
                os.kill(self.pid, signal.SIGTERM)
                try:
                    self.process.wait(timeout)
                except subprocess.TimeoutExpired:
                    os.kill(self.pid, signal.SIGKILL)
                    self.process.wait(5)
        finally:
            _running.pop(self.pid, None)
            self._drain.join(2)
            if self.process.stdout is not None:
                self.process.stdout.close()
            shutil.rmtree(self._directory, ignore_errors=True)
        return self.process.returncode


def serverCommand(
    kind: str,
    keepalive: float = 75,
    maxMessageSize: int = 32 * 1024 * 1024,
    profile: str | None = None,
    workers: int = 1,
) -> list[str]:
    """
    The command line that starts a C{kind} server on a free port of
    127.0.0.1: C{twistd -n agilerpc ...} for agilerpc, as users start it
    (with C{--workers} when C{workers} is above 1).
    """
    if kind == "agilerpc":
        args = [twistdPath(), "-n", "--pidfile="]
        if profile is not None:
            args += [f"--profile={profile}", "--profiler=cprofile", "--savestats"]
        if workers > 1:
            args += ["agilerpc", "--workers", str(workers)]
        else:
            args += ["agilerpc"]
        return [
            *args,
            "--listen",
            "tcp:0:interface=127.0.0.1:backlog=1024",
            "--keepalive",
            str(keepalive),
            "--max-message-size",
            str(maxMessageSize),
            "--module",
            "rpchandlers",
        ]
    if kind in ("bare", "amp"):
        return [sys.executable, "-m", f"bench.{kind}", "--port", "0"]
    if kind == "agileutil":
        return [sys.executable, "-m", "bench.agileutilserver", "--port", "0"]
    if kind == "grpcio":
        aio = ["--aio"] if GRPC_FLAVOUR == "aio" else []
        return [sys.executable, "-m", "bench.grpcserver", "--port", "0", *aio]
    if kind in ("pushbare", "grpc"):
        serve = "serve-bare" if kind == "pushbare" else "serve-grpc"
        return [sys.executable, "-m", "bench.streams", serve, "--port", "0"]
    raise ValueError(f"unknown server kind {kind!r}")


def startServer(
    kind: str,
    keepalive: float = 75,
    maxMessageSize: int = 32 * 1024 * 1024,
    profile: str | None = None,
    timeout: float = 30.0,
    workers: int = 1,
) -> Server:
    """
    Start a C{kind} server and wait until it listens.  An agilerpc server
    with C{workers} above 1 stops its workers when it stops (and they stop
    by themselves if it is killed: their stdin closes).

    @raise RuntimeError: with its output, if it does not listen within
        C{timeout} seconds.
    """
    directory = tempfile.mkdtemp(prefix=f"bench-{kind}-")
    env = dict(os.environ)
    env["PYTHONUNBUFFERED"] = "1"
    if kind == "agilerpc":
        env["PYTHONPATH"] = os.pathsep.join([BENCH_DIR, AGILERPC_PARENT])
    else:
        env["PYTHONPATH"] = ROOT_DIR
    process = subprocess.Popen(
        serverCommand(kind, keepalive, maxMessageSize, profile, workers),
        cwd=directory,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    _running[process.pid] = process
    assert process.stdout is not None
    drain = _Drain(process.stdout)
    drain.start()
    server = Server(kind, process, drain, directory)
    match = drain.waitFor(_PORT_LINES[kind], timeout)
    if match is None:
        server.stop(timeout=2)
        raise RuntimeError(f"the {kind} server did not listen:\n{drain.text()}")
    server.port = int(match.group(1))
    if workers > 1:
        ready = re.compile(
            r"(?:\[worker \d+ \(pid \d+\) [^]\n]*\] RpcServerFactory starting on"
            r"[^\n]*\n"
            rf"(?:.*\n)*?){{{workers - 1}}}"
        )
        if drain.waitFor(ready, timeout) is None:
            server.stop(timeout=2)
            raise RuntimeError(f"the {kind} workers did not listen:\n{drain.text()}")
    return server


def killAll() -> None:
    """
    Kill every process started here that is still running, by its pid.
    """
    for pid, process in list(_running.items()):
        if process.poll() is None:
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
            with contextlib.suppress(Exception):
                process.wait(5)
        _running.pop(pid, None)


atexit.register(killAll)
