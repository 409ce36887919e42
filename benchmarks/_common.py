"""Shared pieces of the benchmark scripts: timing, recompile counting, machine description, results files."""

from __future__ import annotations

import contextlib
import gc
import json
import os
import platform
import signal
import statistics
import sys
import time
from pathlib import Path

BENCHMARKS = Path(__file__).resolve().parent
REPO = BENCHMARKS.parent
RESULTS = BENCHMARKS / "results"
HARNESS = REPO / "tests" / "harness"

SIZES = (1_000, 2_000, 5_000, 10_000, 20_000)


def median(values):
    return statistics.median(values) if values else None


def machine() -> dict:
    """What the numbers were measured on; the load average matters on a shared machine."""
    info = {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "loadavg_at_start": [round(x, 2) for x in os.getloadavg()],
    }
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                info["cpu"] = line.split(":", 1)[1].strip()
                break
    return info


def versions() -> dict:
    from importlib import metadata

    found = {}
    for dist in ("torch", "torch-tensorrt"):
        try:
            found[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            found[dist] = None
    return found


def write_results(name: str, data: dict) -> Path:
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"{name}.json"
    data = dict(
        data,
        machine=dict(machine(), **data.get("machine", {})),
        versions=versions(),
        command=" ".join(
            [
                Path(sys.executable).relative_to(REPO).as_posix()
                if sys.executable.startswith(str(REPO))
                else sys.executable
            ]
            + sys.argv
        ),
        finished_at=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    )
    path.write_text(json.dumps(data, indent=2) + "\n")
    print(f"wrote {path.relative_to(REPO)}", flush=True)
    return path


class RecompileCounter:
    """Counts and times every ``GraphModule.recompile`` while active, so a pass's own graph work can be
    separated from the code generation it ends with (which grows with the graph for any pass).

    Also keeps the CPU time of this thread: on a shared machine wall time includes waiting for a core,
    while the thread's CPU time measures only the work done.
    """

    def __init__(self):
        self.calls = 0
        self.seconds = 0.0
        self.cpu_seconds = 0.0

    def __enter__(self):
        import torch.fx

        self._cls = torch.fx.GraphModule
        self._original = self._cls.recompile
        counter, original = self, self._original

        def recompile(gm, *args, **kwargs):
            start, start_cpu = time.perf_counter(), time.thread_time()
            try:
                return original(gm, *args, **kwargs)
            finally:
                counter.calls += 1
                counter.seconds += time.perf_counter() - start
                counter.cpu_seconds += time.thread_time() - start_cpu

        self._cls.recompile = recompile
        return self

    def __exit__(self, *exc):
        self._cls.recompile = self._original
        return False


class Timeout(Exception):
    pass


@contextlib.contextmanager
def time_limit(seconds: float):
    """Abort the block with Timeout after ``seconds`` (SIGALRM: main thread only, same process)."""

    def expired(signum, frame):
        raise Timeout(f"over {seconds:g} s")

    previous = signal.signal(signal.SIGALRM, expired)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


class Timing:
    """One call: wall and thread-CPU seconds, in total and inside ``recompile``, and the recompile count."""

    def __init__(self, seconds, cpu_seconds, counter, result):
        self.seconds, self.cpu_seconds, self.result = seconds, cpu_seconds, result
        self.recompiles = counter.calls
        self.recompile_s, self.recompile_cpu_s = counter.seconds, counter.cpu_seconds

    @property
    def work_s(self):
        return self.seconds - self.recompile_s

    @property
    def work_cpu_s(self):
        return self.cpu_seconds - self.recompile_cpu_s


def timed(fn, *args) -> Timing:
    """Time one call of ``fn(*args)``.

    The garbage collector is paused, as timeit does: a collection of the previous repeat's graph
    landing inside this one would be charged to the wrong pass.
    """
    gc.collect()
    gc.disable()
    try:
        with RecompileCounter() as counter:
            start, start_cpu = time.perf_counter(), time.thread_time()
            result = fn(*args)
            seconds, cpu_seconds = time.perf_counter() - start, time.thread_time() - start_cpu
    finally:
        gc.enable()
    return Timing(seconds, cpu_seconds, counter, result)


def fmt_ms(seconds) -> str:
    return "-" if seconds is None else f"{seconds * 1e3:.1f}"
