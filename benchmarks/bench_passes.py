"""Scaling of trt_compat's graph passes, and of upstream's view_to_reshape, on synthetic graphs of 1k-20k nodes.

    .venvs/tt-2.5.0/bin/python -m benchmarks.bench_passes            # everything, writes results/passes.json
    .venvs/unit/bin/python -m benchmarks.bench_passes --only pooling,partition --sizes 1000,2000

Three benchmarks (graphs from benchmarks/graphs.py):

* ``view``: ``replace_views_with_reshapes`` against the real ``view_to_reshape`` pass of the installed
  Torch-TensorRT (2.5.0 under the offline harness), in this same process, on the same graphs. Every
  ``GraphModule.recompile`` is counted and timed, so each pass's own graph work is reported apart from the
  code generation it ends with. Upstream runs are capped by ``--upstream-timeout`` per run.
* ``view-work``: trt_compat's view pass alone with ``recompile`` stubbed out, 3x the repeats, for the
  doubling test of its own graph work.
* ``pooling``: ``decompose_tuple_pooling`` on N tuple pools whose values and indices are both used.
* ``partition``: ``repair_submodule_inputs`` on each of N accelerated blocks with a stale tuple input, after
  ``remember_partition`` on their parent -- what trt_compat's wrappers do inside ``fast_partition`` and
  ``construct_submodule_inputs``.
"""

from __future__ import annotations

import argparse
import importlib
import inspect
import json
import os
import sys
import time

from benchmarks import _common, graphs

# From this size on, a pooling or partition run takes tens of seconds on a shared 2-core machine: one run.
_LONG_RUNS_FROM = 5_000


def log(msg):
    print(msg, flush=True)


def load_upstream_view_pass():
    """The installed Torch-TensorRT's own view_to_reshape, or None (with the reason) when there is none."""
    try:
        from tests.harness import activate

        activate.prepare()
        # The package re-exports the function under the module's name, so ask for the module itself.
        module = importlib.import_module("torch_tensorrt.dynamo.lowering.passes.view_to_reshape")
    except Exception as exc:  # no torch_tensorrt here, or a release without the pass
        return None, f"{type(exc).__name__}: {exc}"
    fn = module.view_to_reshape
    # 2.2-2.4 take (gm, sample_inputs); 2.5 takes (gm).
    extra = len(inspect.signature(fn).parameters) - 1
    return (lambda gm: fn(gm, *([None] * extra))), None


def _summary(prefix, runs):
    """Medians of a list of Timing: wall total, graph work (wall and thread CPU) and recompile."""
    med = _common.median
    return {
        f"{prefix}total_s": med([t.seconds for t in runs]),
        f"{prefix}total_cpu_s": med([t.cpu_seconds for t in runs]),
        f"{prefix}graph_work_s": med([t.work_s for t in runs]),
        f"{prefix}graph_work_cpu_s": med([t.work_cpu_s for t in runs]),
        f"{prefix}recompile_s": med([t.recompile_s for t in runs]),
        f"{prefix}recompiles_per_call": sorted({t.recompiles for t in runs}),
        f"{prefix}repeats": len(runs),
    }


def bench_view(sizes, repeats, upstream_timeout, upstream_repeats):
    import torch
    from trt_compat.patches.view_to_reshape_metadata import replace_views_with_reshapes

    aten = torch.ops.aten
    upstream, why_not = load_upstream_view_pass()
    if upstream is None:
        log(f"  upstream view_to_reshape not available: {why_not}")
    rows = []
    upstream_gave_up = False
    for n in sizes:
        t0 = time.perf_counter()
        gm = graphs.view_chain(n)
        build = time.perf_counter() - t0
        assert graphs.count_targets(gm, aten.view.default) == n
        ours = []
        for _ in range(repeats):
            timing = _common.timed(replace_views_with_reshapes, gm)
            assert graphs.count_targets(gm, aten.reshape.default) == n and timing.recompiles == 1
            ours.append(timing)
            graphs.restore_views(gm)
        row = {"views": n, "nodes": len(gm.graph.nodes), "build_s": round(build, 3), **_summary("ours_", ours)}
        # The same size without any view: nothing to change, so no recompile either.
        no_view = _common.timed(replace_views_with_reshapes, graphs.relu_chain(n))
        row["ours_recompiles_without_views"] = no_view.recompiles
        assert no_view.recompiles == 0

        if upstream is not None and not upstream_gave_up:
            runs, timeout = [], None
            for _ in range(upstream_repeats if n <= 5_000 else 1):
                fresh = graphs.copy_module(gm)
                try:
                    with _common.time_limit(upstream_timeout):
                        timing = _common.timed(upstream, fresh)
                except _common.Timeout:
                    timeout = upstream_timeout
                    break
                assert graphs.count_targets(timing.result, aten.view.default) == 0
                runs.append(timing)
            row.update(_summary("upstream_", runs), upstream_timeout_s=timeout)
            if row["upstream_total_s"]:
                row["speedup"] = round(row["upstream_total_s"] / row["ours_total_s"], 1)
                row["speedup_cpu"] = round(row["upstream_total_cpu_s"] / row["ours_total_cpu_s"], 1)
            # Bigger graphs only take longer: do not spend a timeout on each of them.
            upstream_gave_up = timeout is not None
        elif upstream is not None:
            row.update(upstream_total_s=None, upstream_timeout_s=upstream_timeout, upstream_skipped=True)
        rows.append(row)
        log(
            f"  view {n:>6}: ours {_common.fmt_ms(row['ours_total_s'])} ms "
            f"(graph work {_common.fmt_ms(row['ours_graph_work_s'])} ms wall, "
            f"{_common.fmt_ms(row['ours_graph_work_cpu_s'])} ms CPU; recompile "
            f"{_common.fmt_ms(row['ours_recompile_s'])} ms; total CPU {_common.fmt_ms(row['ours_total_cpu_s'])} ms); "
            f"upstream {_common.fmt_ms(row.get('upstream_total_s'))} ms "
            f"(CPU {_common.fmt_ms(row.get('upstream_total_cpu_s'))} ms)"
            + (f" (over the {upstream_timeout:g} s cap)" if row.get("upstream_timeout_s") else "")
        )
    return rows


def bench_view_work(sizes, repeats):
    """trt_compat's view pass with ``GraphModule.recompile`` replaced by a no-op: its own graph work alone.

    Timed this way (more repeats, CPU time) because inside a full run each repeat's graph work of a few ms sits
    next to a recompile of seconds, whose cache churn and the machine's load swamp a doubling test.
    """
    import torch.fx
    from trt_compat.patches.view_to_reshape_metadata import replace_views_with_reshapes

    rows = []
    original = torch.fx.GraphModule.recompile
    torch.fx.GraphModule.recompile = lambda gm, *args, **kwargs: None
    try:
        for n in sizes:
            gm = graphs.view_chain(n)
            runs = []
            for _ in range(repeats):
                runs.append(_common.timed(replace_views_with_reshapes, gm))
                graphs.restore_views(gm)
            cpu = [t.cpu_seconds for t in runs]
            rows.append(
                {
                    "views": n,
                    "graph_work_cpu_s": _common.median(cpu),
                    "graph_work_cpu_min_s": min(cpu),
                    "graph_work_s": _common.median([t.seconds for t in runs]),
                    "repeats": repeats,
                }
            )
            log(
                f"  view graph work {n:>6}: {_common.fmt_ms(rows[-1]['graph_work_cpu_s'])} ms CPU "
                f"(min {_common.fmt_ms(min(cpu))} ms)"
            )
    finally:
        torch.fx.GraphModule.recompile = original
    return rows


def bench_pooling(sizes, repeats):
    from trt_compat.patches.tuple_pooling import TUPLE_POOLING_OPS, decompose_tuple_pooling

    rows = []
    for n in sizes:
        t0 = time.perf_counter()
        template = graphs.pooling_chain(n)
        build = time.perf_counter() - t0
        runs = []
        for _ in range(repeats if n < _LONG_RUNS_FROM else 1):
            gm = graphs.copy_module(template)
            timing = _common.timed(decompose_tuple_pooling, gm)
            assert timing.recompiles == 1
            assert not any(n.op == "call_function" and n.target in TUPLE_POOLING_OPS for n in gm.graph.nodes)
            runs.append(timing)
        row = {
            "pools": n,
            "nodes_before": len(template.graph.nodes),
            "nodes_after": len(gm.graph.nodes),
            "build_s": round(build, 3),
            **_summary("", runs),
        }
        row["per_pool_us"] = round(row["total_s"] / n * 1e6, 1)
        row["graph_work_cpu_per_pool_us"] = round(row["graph_work_cpu_s"] / n * 1e6, 1)
        rows.append(row)
        log(
            f"  pooling {n:>6}: {_common.fmt_ms(row['total_s'])} ms ({row['per_pool_us']} us/pool; graph work "
            f"{row['graph_work_cpu_per_pool_us']} us/pool CPU; recompile {_common.fmt_ms(row['recompile_s'])} ms)"
        )
    return rows


def bench_partition(sizes, repeats):
    from trt_compat.patches.tuple_partition_inputs import (
        boundary_problems,
        remember_partition,
        repair_submodule_inputs,
    )

    def repair_all(parent):
        remember_partition(parent)
        for block in graphs.accelerated_blocks(parent):
            repair_submodule_inputs(block)

    rows = []
    for n in sizes:
        runs = []
        for _ in range(repeats if n < _LONG_RUNS_FROM else 1):
            parent = graphs.partitioned_chain(n)
            blocks = graphs.accelerated_blocks(parent)
            assert len(blocks) == n and all(boundary_problems(b) for b in blocks)
            runs.append(_common.timed(repair_all, parent))
            assert not any(boundary_problems(b) for b in blocks)
        row = {"boundaries": n, **_summary("", runs)}
        row["per_boundary_us"] = round(row["total_s"] / n * 1e6, 1)
        row["cpu_per_boundary_us"] = round(row["graph_work_cpu_s"] / n * 1e6, 1)
        rows.append(row)
        log(
            f"  partition {n:>6}: {_common.fmt_ms(row['total_s'])} ms ({row['per_boundary_us']} us/boundary; "
            f"{row['cpu_per_boundary_us']} us/boundary CPU)"
        )
    return rows


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--only", default="view,pooling,partition")
    parser.add_argument("--sizes", default=",".join(map(str, _common.SIZES)))
    parser.add_argument("--repeats", type=int, default=7, help="repeats of trt_compat's passes (median)")
    parser.add_argument("--upstream-repeats", type=int, default=3, help="repeats of upstream up to 5k views")
    parser.add_argument("--upstream-timeout", type=float, default=120.0, help="seconds per upstream run")
    parser.add_argument("--out", default="passes")
    args = parser.parse_args(argv)
    sizes = [int(s) for s in args.sizes.split(",")]
    only = set(args.only.split(","))
    # Deep fx graphs are walked recursively in a few places of torch (e.g. when a GraphModule is deleted).
    sys.setrecursionlimit(max(sys.getrecursionlimit(), 100_000))

    results = {"sizes": sizes, "load_before": list(os.getloadavg())}
    if "view" in only:
        log("view -> reshape")
        results["view"] = bench_view(sizes, args.repeats, args.upstream_timeout, args.upstream_repeats)
    if "view-work" in only:
        log("view -> reshape, graph work only")
        results["view_work"] = bench_view_work(sizes, 3 * args.repeats)
    if "pooling" in only:
        log("pooling decomposition")
        results["pooling"] = bench_pooling(sizes, max(1, args.repeats // 2))
    if "partition" in only:
        log("partition-input repair")
        results["partition"] = bench_partition(sizes, max(1, args.repeats // 2))
    results["load_after"] = list(os.getloadavg())
    # Sections not re-run this time are kept, so the benchmarks can be run one at a time.
    previous = _common.RESULTS / f"{args.out}.json"
    merged = json.loads(previous.read_text()) if previous.exists() else {}
    merged.update(results)
    _common.write_results(args.out, merged)


if __name__ == "__main__":
    main()
