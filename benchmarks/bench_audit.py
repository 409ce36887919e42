"""What trt_compat's audits cost: a dryrun ``torch.compile`` with trt_compat never imported, imported with the
audit off, with the metadata audit and with the value audit on (every patch disabled in all four, so only the
audit differs).

    .venvs/tt-2.14.0/bin/python -m benchmarks.bench_audit              # writes results/audit-2.14.0.json
    .venvs/tt-2.14.0/bin/python -m benchmarks.bench_audit --processes 10 --models resnet18

Each measurement is a fresh interpreter (``--child``), so "never imported" really never imports trt_compat: it
prepares the harness, imports trt_compat first where the mode has it (timing that import), then torch and
torch_tensorrt, builds the model, compiles it once unmeasured (lazy imports), then ``--compiles`` times after
``torch._dynamo.reset()``, timing the compile plus the first call (wall and process CPU time). It also reports what
is wrapped: with the audit off nothing may be. The modes run in a rotating order, process after process, so a
drift in the machine's load hits them alike; each mode's compiles are compared with "never imported" pair by pair
(process i of one mode against process i of the other: the median of the relative differences, with a bootstrap
95 % interval).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

from benchmarks import _common

MODES = {
    "never": None,  # trt_compat never imported
    "off": "",  # imported, audit off
    "metadata": "metadata",
    "values": "values",
}
# Models that compile on every release with every patch disabled (the smoke models need the patches on some).
MODELS = ("resnet18", "mobilenet_v3_small")


def child(mode: str, model_name: str, compiles: int) -> dict:
    started = time.perf_counter()
    if mode != "never":
        import trt_compat.audit  # noqa: F401  (before torch_tensorrt, as deployments import it)
    import_seconds = time.perf_counter() - started
    from tests.harness import activate

    info = activate.prepare()
    import torch
    import torch_tensorrt  # noqa: F401

    model, x = build(model_name)
    compile_once = compiler(torch, info["row"].dryrun)
    compile_once(model, x)  # lazy imports and first-use costs, not counted
    wall, cpu = [], []
    for _ in range(compiles):
        torch._dynamo.reset()
        wall_start, cpu_start = time.perf_counter(), time.process_time()
        compile_once(model, x)
        wall.append(time.perf_counter() - wall_start)
        cpu.append(time.process_time() - cpu_start)
    imported = sys.modules.get("trt_compat")  # never imported here in "never" mode: importing it would patch
    return {
        "import_seconds": import_seconds,
        "wall": wall,
        "cpu": cpu,
        "wrapped": wrapped(),
        "trt_compat": getattr(imported, "__file__", None),
    }


def build(name: str):
    import torch
    import torchvision

    torch.manual_seed(0)
    return getattr(torchvision.models, name)(weights=None).eval(), torch.randn(1, 3, 64, 64)


def compiler(torch, dryrun: str):
    if dryrun == "cpu_block_inputs":  # 2.3/2.4 run each block once on cuda:0 in dryrun: kept on the CPU
        import torch_tensorrt.dynamo._compiler as compiler_module

        original = compiler_module.get_torch_inputs
        compiler_module.get_torch_inputs = lambda inputs, device, *a, **k: original(inputs, "cpu", *a, **k)
        torch.Tensor.cuda = lambda self, *a, **k: self

    def compile_once(model, x):
        options = {"dryrun": True, "min_block_size": 1, "pass_through_build_failures": True}
        compiled = torch.compile(model, backend="torch_tensorrt", options=options)
        with torch.no_grad():
            compiled(x)

    return compile_once


def wrapped() -> list:
    """What trt_compat has wrapped in the backends module and the post-lowering pass list."""
    from torch_tensorrt.dynamo.backend import backends
    from torch_tensorrt.dynamo.lowering.passes import _aten_lowering_pass as passes

    manager = getattr(passes, "ATEN_POST_LOWERING_PASSES", None) or passes.ATEN_LOWERING_PASSES
    found = [name for name in dir(backends) if _ours(getattr(backends, name))]
    found += [f"pass {getattr(p, '__name__', p)}" for p in manager.passes if _ours(p)]
    return found


def _ours(function) -> bool:
    code = getattr(function, "__code__", None)
    return code is not None and f"{os.sep}trt_compat{os.sep}" in code.co_filename


def run_child(mode: str, model: str, compiles: int) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRT_COMPAT_")}
    if MODES[mode] is not None:
        env.update(TRT_COMPAT_DISABLE="all", TRT_COMPAT_AUDIT=MODES[mode])
    # -m from the repository root: this checkout's trt_compat, not an installed copy.
    command = [sys.executable, "-m", "benchmarks.bench_audit", "--child", mode, "--models", model]
    command += ["--compiles", str(compiles)]
    done = subprocess.run(command, env=env, capture_output=True, text=True, cwd=_common.REPO, timeout=3600)
    if done.returncode != 0:
        raise RuntimeError(f"{mode} {model}: {done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--child", choices=MODES)
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--processes", type=int, default=8, help="fresh interpreters per mode and model")
    parser.add_argument("--compiles", type=int, default=3, help="measured compiles per interpreter")
    args = parser.parse_args()
    if args.child:
        import contextlib

        with contextlib.redirect_stdout(sys.stderr):
            result = child(args.child, args.models, args.compiles)
        print(json.dumps(result))
        return 0

    results = {}
    order = list(MODES)
    for model in args.models.split(","):
        runs = {mode: [] for mode in MODES}
        for process in range(args.processes):
            for mode in order[process % len(order) :] + order[: process % len(order)]:
                runs[mode].append(run_child(mode, model, args.compiles))
                print(f"{model} {process + 1}/{args.processes} {mode}: {_median_of(runs[mode][-1]['cpu']):.2f} s CPU")
        summary = {}
        for mode, processes in runs.items():
            cpu = [_median_of(p["cpu"]) for p in processes]
            wall = [_median_of(p["wall"]) for p in processes]
            summary[mode] = {
                "cpu_median": _median_of(cpu),
                "wall_median": _median_of(wall),
                "import_ms_median": 1000 * _median_of([p["import_seconds"] for p in processes]),
                "wrapped": processes[0]["wrapped"],
                "processes": processes,
            }
            if mode != "never":
                never = [_median_of(p["cpu"]) for p in runs["never"]]
                summary[mode]["cpu_vs_never"] = paired_overhead(cpu, never)
                summary[mode]["wall_vs_never"] = paired_overhead(wall, [_median_of(p["wall"]) for p in runs["never"]])
        results[model] = summary
    release = _common.versions()["torch-tensorrt"]
    _common.write_results(f"audit-{release}", {"models": results, "processes": args.processes})
    print(table(release, results))
    return 0


def _median_of(values):
    return _common.median(values)


def paired_overhead(runs, baseline, resamples=2000):
    """Median over pairs of (run - baseline) / baseline, in %, and a 95 % bootstrap interval of that median: pairs
    ran back to back, so a slow phase of the machine hits both runs of a pair."""
    import random

    ratios = [(run - base) / base * 100 for run, base in zip(runs, baseline)]
    rng = random.Random(0)
    medians = sorted(_common.median([rng.choice(ratios) for _ in ratios]) for _ in range(resamples))
    return {
        "median_pct": round(_common.median(ratios), 2),
        "ci95_pct": [round(medians[int(0.025 * resamples)], 2), round(medians[int(0.975 * resamples) - 1], 2)],
        "pairs_pct": [round(r, 2) for r in ratios],
    }


def table(release: str, results: dict) -> str:
    lines = [
        "| release | model | mode | compile CPU s (median) | vs never imported, CPU [95 % CI] | wall s "
        "| vs never imported, wall [95 % CI] | import ms | wrapped |",
        "|---|---|---|---:|---:|---:|---:|---:|---|",
    ]
    for model, summary in results.items():
        for mode, row in summary.items():
            cpu = row.get("cpu_vs_never")
            wall = row.get("wall_vs_never")
            lines.append(
                f"| {release} | {model} | {mode} | {row['cpu_median']:.2f} "
                f"| {_pct(cpu)} | {row['wall_median']:.2f} | {_pct(wall)} | {row['import_ms_median']:.1f} "
                f"| {', '.join(row['wrapped']) or 'nothing'} |"
            )
    return "\n".join(lines)


def _pct(overhead) -> str:
    if not overhead:
        return "—"
    low, high = overhead["ci95_pct"]
    return f"{overhead['median_pct']:+.1f} % [{low:+.1f}, {high:+.1f}]"


if __name__ == "__main__":
    sys.exit(main())
