"""Cost of ``import trt_compat`` in an interpreter without torch_tensorrt (what every deployment pays first).

    .venvs/unit/bin/python -m benchmarks.bench_import          # writes results/import.json

Two measurements, each the median of ``--runs`` fresh interpreters, alternated so load changes hit both sides:

* ``-X importtime``: the cumulative microseconds of the ``trt_compat`` line (the import itself, without the
  interpreter's start-up);
* wall time of ``python -c "import trt_compat"`` minus that of ``python -c "pass"``, and the same difference in
  the children's CPU time (user + system, from rusage), which waiting for a core on a loaded machine does not inflate;
* the thread CPU time of the ``import trt_compat`` statement, measured inside the interpreter.

A separate run checks that the import leaves torch, torch_tensorrt and the other heavy modules unimported.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time

from benchmarks import _common

CHECK = (
    "import sys, trt_compat\n"
    "heavy = [m for m in ('torch', 'torch_tensorrt', 'numpy', 'wrapt', 'packaging') if m in sys.modules]\n"
    "assert not heavy, heavy\n"
)


def importtime_us(python: str, env: dict) -> int:
    out = subprocess.run(
        [python, "-X", "importtime", "-c", "import trt_compat"], env=env, capture_output=True, text=True, check=True
    ).stderr
    for line in out.splitlines():
        # "import time:   self [us] | cumulative | imported package"
        parts = [p.strip() for p in line.split("|")]
        if len(parts) == 3 and parts[2] == "trt_compat":
            return int(parts[1])
    raise RuntimeError(f"no trt_compat line in -X importtime output:\n{out}")


def wall_and_cpu_s(python: str, code: str, env: dict):
    """Wall time and the child's CPU time (user + system, from its rusage) of one interpreter run."""
    start = time.perf_counter()
    child = subprocess.Popen([python, "-c", code], env=env)
    _, status, usage = os.wait4(child.pid, 0)
    wall = time.perf_counter() - start
    child.returncode = os.waitstatus_to_exitcode(status)
    assert child.returncode == 0, child.returncode
    return wall, usage.ru_utime + usage.ru_stime


def in_process_cpu_us(python: str, env: dict) -> float:
    """CPU time of the import statement alone, measured inside the interpreter (immune to waiting for a core)."""
    code = "import time; t = time.thread_time(); import trt_compat; print((time.thread_time() - t) * 1e6)"
    return float(subprocess.run([python, "-c", code], env=env, capture_output=True, text=True, check=True).stdout)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--python", default=sys.executable)
    args = parser.parse_args(argv)
    env = dict(os.environ)
    env.pop("PYTHONDONTWRITEBYTECODE", None)  # measure with cached bytecode, as an installed package has

    probe = subprocess.run(
        [args.python, "-c", "import importlib.util as u; print(u.find_spec('torch_tensorrt'))"],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    assert probe == "None", f"torch_tensorrt is importable in {args.python}: measure without it"
    subprocess.run([args.python, "-c", CHECK], env=env, check=True)  # also warms the bytecode cache

    importtime, bare, with_import, bare_cpu, with_import_cpu, own_cpu = [], [], [], [], [], []
    for _ in range(args.runs):
        importtime.append(importtime_us(args.python, env))
        wall, cpu = wall_and_cpu_s(args.python, "pass", env)
        bare.append(wall)
        bare_cpu.append(cpu)
        wall, cpu = wall_and_cpu_s(args.python, "import trt_compat", env)
        with_import.append(wall)
        with_import_cpu.append(cpu)
        own_cpu.append(in_process_cpu_us(args.python, env))
    delta = [w - b for w, b in zip(with_import, bare)]
    delta_cpu = [w - b for w, b in zip(with_import_cpu, bare_cpu)]
    result = {
        "runs": args.runs,
        "importtime_ms_median": _common.median(importtime) / 1e3,
        "importtime_ms_min": min(importtime) / 1e3,
        "importtime_ms_max": max(importtime) / 1e3,
        "wall_pass_ms_median": _common.median(bare) * 1e3,
        "wall_import_ms_median": _common.median(with_import) * 1e3,
        "wall_delta_ms_median": _common.median(delta) * 1e3,
        "cpu_pass_ms_median": _common.median(bare_cpu) * 1e3,
        "cpu_import_ms_median": _common.median(with_import_cpu) * 1e3,
        "cpu_delta_ms_median": _common.median(delta_cpu) * 1e3,
        "in_process_cpu_ms_median": _common.median(own_cpu) / 1e3,
        "torch_imported": False,
    }
    for key, value in result.items():
        print(f"{key:>24}: {value:.2f}" if isinstance(value, float) else f"{key:>24}: {value}")
    _common.write_results("import", result)


if __name__ == "__main__":
    main()
