"""What each applied patch costs inside real dryrun compiles, found from the patches' own undo logs.

    .venvs/tt-2.5.0/bin/python  -m benchmarks.bench_patch_cost     # writes results/patch-cost-2.5.0.json
    .venvs/tt-2.14.0/bin/python -m benchmarks.bench_patch_cost     # writes results/patch-cost-2.14.0.json

Every model of ``benchmarks/zoo.py`` is compiled with ``torch.compile(backend="torch_tensorrt", options={"dryrun":
True, "min_block_size": 1})`` and called once, on the real Torch-TensorRT under the offline harness, one torch thread.

**Own work of each patch.** Nothing here names a patch: every change an applied patch made is read from its undo log
(``trt_compat._engine.context_of(name).records``), and for the length of the instrumented compiles the object it
installed is replaced, in the same place (module attribute, registry entry or lowering-pass list), by a timed copy
of it whose reference to the upstream original it wraps is itself timed. Time is charged to the innermost timed
frame (exclusive time, thread CPU): what runs inside a patch's object but outside the original it calls is that
patch's own work; a replacement lowering pass, which calls no original, is wholly its patch's; wrappers nested on
one target each get their own share. The copies are taken out again before anything is reverted or applied, so the
undo log is never disturbed. Each timed frame costs about a microsecond of bookkeeping, charged to whoever is
running; the script measures that cost (``frame_overhead_us``) and reports the number of calls next to each time.

**Fake-tensor dispatches.** After an uncounted warm-up compile, ``FakeTensorMode.dispatch`` is counted in a compile
with every patch reverted and in one with them applied (and charged to the patch whose frame is running):
deterministic, unlike time.

**The whole compile.** ``--pairs`` back-to-back pairs of uninstrumented compiles, with and without (reverted)
trt_compat, the order alternating, process CPU time; the ratio of the minimum of each side and the paired median
of the relative differences are both reported.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import gc
import logging
import time
from typing import Any, Callable, Dict, Iterator, List, Optional

import trt_compat  # noqa: E402  (first, as deployments import it)
from benchmarks import _common, zoo
from benchmarks.attribution import UPSTREAM, Attribution, frame_overhead_us, instrumented
from tests.harness import activate

HARNESS_INFO = activate.prepare()
import torch  # noqa: E402
import torch_tensorrt  # noqa: E402,F401  (the post-import hook applies the patches)
from torch._subclasses import fake_tensor  # noqa: E402

from trt_compat import _engine  # noqa: E402
from trt_compat.probing import Probe  # noqa: E402

logging.getLogger("torch_tensorrt").setLevel(logging.WARNING)
OPTIONS = {"dryrun": True, "min_block_size": 1}
SCALING_LAYERS = (2, 4, 8, 16)


def applied_changes() -> Dict[str, list]:
    """Every change of every applied patch, by patch name, from the undo logs."""
    report = trt_compat.report()
    return {p.name: list(_engine.context_of(p.name).records) for p in report.patches if p.state == "applied"}


@contextlib.contextmanager
def counting_dispatches(attribution: Attribution) -> Iterator[None]:
    original = fake_tensor.FakeTensorMode.dispatch

    def counting(self, *args, **kwargs):
        attribution.count_dispatch()
        return original(self, *args, **kwargs)

    fake_tensor.FakeTensorMode.dispatch = counting
    try:
        yield
    finally:
        fake_tensor.FakeTensorMode.dispatch = original


def set_patches(on: bool) -> List[str]:
    report = trt_compat.apply() if on else trt_compat.revert()
    applied = sorted(p.name for p in report.patches if p.state == "applied")
    assert bool(applied) == on, (on, applied)
    return applied


class BlockCounter:
    """While ``watching``: the node count of each Dynamo graph the backend receives, and the size (call nodes) of
    each TensorRT block Torch-TensorRT's partitioning makes of them."""

    def __init__(self) -> None:
        self.nodes: List[int] = []
        self.block_sizes: List[int] = []

    @property
    def blocks(self) -> int:
        return len(self.block_sizes)

    @contextlib.contextmanager
    def watching(self) -> Iterator[BlockCounter]:
        from torch_tensorrt.dynamo.backend import backends

        compile_module = backends.compile_module
        # torch.compile(backend="torch_tensorrt") looks the backend up in Dynamo's registry at each compile.
        registry = torch._dynamo.backends.registry._COMPILER_FNS
        registered = registry["torch_tensorrt"]

        def counted_compile(*args, **kwargs):
            partitioned = compile_module(*args, **kwargs)
            for _, block in Probe.accelerated_blocks(partitioned):
                self.block_sizes.append(sum(n.op in ("call_function", "call_method") for n in block.graph.nodes))
            return partitioned

        @functools.wraps(registered)
        def counted_graph(gm, *args, **kwargs):
            self.nodes.append(len(gm.graph.nodes))
            return registered(gm, *args, **kwargs)

        backends.compile_module, registry["torch_tensorrt"] = counted_compile, counted_graph
        try:
            yield self
        finally:
            backends.compile_module, registry["torch_tensorrt"] = compile_module, registered


def compile_once(model: torch.nn.Module, inputs: tuple, options: Optional[dict] = None) -> Dict[str, Any]:
    """One compile (``OPTIONS`` unless told) and first call; CPU times of this thread and of the process, and the
    output."""
    torch._dynamo.reset()
    gc.collect()  # the previous compile's garbage is collected here, not inside this one's timing
    with Probe()._block_inputs_on_cpu():
        start_thread, start_process, start_wall = time.thread_time(), time.process_time(), time.perf_counter()
        compiled = torch.compile(model, backend="torch_tensorrt", options=options or OPTIONS)
        with torch.no_grad():
            output = compiled(*inputs)
        return {
            "thread_cpu_s": time.thread_time() - start_thread,
            "process_cpu_s": time.process_time() - start_process,
            "wall_s": time.perf_counter() - start_wall,
            "output": output,
        }


def _difference(output: Any, expected: Any) -> Optional[float]:
    from torch.utils._pytree import tree_leaves

    got = [t for t in tree_leaves(output) if isinstance(t, torch.Tensor)]
    want = [t for t in tree_leaves(expected) if isinstance(t, torch.Tensor)]
    if len(got) != len(want):
        return float("inf")
    return max((float((a.double() - b.double()).abs().max()) for a, b in zip(got, want) if a.numel()), default=0.0)


def bench_model(name: str, build: Callable, timed_runs: int, pairs: int) -> Dict[str, Any]:
    """Dispatch counts, ``timed_runs`` instrumented compiles and ``pairs`` uninstrumented pairs of one model.

    Every compile gets a model built afresh (the same, seeded): a model that writes its buffers (a KV cache) must
    not compile from another state than the last compile saw.
    """
    model, inputs = build()
    with torch.no_grad():
        expected = model(*inputs)

    row: Dict[str, Any] = {"model": name}
    # Not counted: the first compile of a model also fills the fake-tensor cache (on 2.5.0 it dispatches more than
    # the next compile of the same model, with or without trt_compat) and pays for lazy imports.
    set_patches(False)
    compile_once(*build())
    # Dispatch counts, patches off then on.
    for on in (False, True):
        applied = set_patches(on)
        if on:
            row["patches_applied"] = applied
        attribution, graphs = Attribution(), BlockCounter()
        timing = instrumented(attribution, applied_changes()) if on else contextlib.nullcontext()
        with counting_dispatches(attribution), graphs.watching(), timing:
            result = compile_once(*build())
        side = "on" if on else "off"
        row[f"dispatches_{side}"] = sum(attribution.dispatches.values())
        row[f"blocks_{side}"] = graphs.blocks
        row[f"max_abs_difference_{side}"] = _difference(result["output"], expected)
        if on:
            row["dispatches_by_owner"] = dict(sorted(attribution.dispatches.items()))
        else:
            row["dynamo_graph_nodes"] = graphs.nodes
    row["dispatch_ratio"] = round(row["dispatches_on"] / row["dispatches_off"], 4) if row["dispatches_off"] else None

    # Own work: instrumented compiles with every patch applied.
    set_patches(True)
    own_runs, compile_runs = [], []
    for _ in range(timed_runs):
        attribution = Attribution()
        with instrumented(attribution, applied_changes()):
            result = compile_once(*build())
        own_runs.append({"seconds": dict(attribution.seconds), "calls": dict(attribution.calls)})
        compile_runs.append(result["thread_cpu_s"])
    owners = sorted({owner for run in own_runs for owner in run["seconds"]} - {UPSTREAM})
    row["instrumented_compile_thread_cpu_s"] = compile_runs
    row["own_work"] = {
        owner: {
            "cpu_s_runs": [run["seconds"].get(owner, 0.0) for run in own_runs],
            "cpu_s_min": min(run["seconds"].get(owner, 0.0) for run in own_runs),
            "cpu_s_median": _common.median([run["seconds"].get(owner, 0.0) for run in own_runs]),
            "calls": own_runs[0]["calls"].get(owner, 0),
            "pct_of_compile_median": round(
                _common.median([run["seconds"].get(owner, 0.0) / c * 100 for run, c in zip(own_runs, compile_runs)]),
                4,
            ),
        }
        for owner in owners
    }

    if not pairs:
        return row
    # The whole compile, uninstrumented, with and without, alternating.
    cpu: Dict[bool, List[float]] = {True: [], False: []}
    for i in range(pairs):
        for on in (True, False) if i % 2 == 0 else (False, True):
            set_patches(on)
            cpu[on].append(compile_once(*build())["process_cpu_s"])
    set_patches(True)
    ratios = [(w - wo) / wo * 100 for w, wo in zip(cpu[True], cpu[False])]
    row.update(
        pairs=pairs,
        with_cpu_s_runs=cpu[True],
        without_cpu_s_runs=cpu[False],
        cpu_ratio_of_minimums=round(min(cpu[True]) / min(cpu[False]), 4),
        paired_overhead_cpu_pct_median=round(_common.median(ratios), 2),
        paired_overhead_cpu_pct=[round(r, 2) for r in ratios],
    )
    return row


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--models", default=",".join(zoo.MODELS))
    parser.add_argument("--timed-runs", type=int, default=3, help="instrumented compiles per model")
    parser.add_argument("--pairs", type=int, default=3, help="uninstrumented with/without pairs per model")
    parser.add_argument(
        "--scaling",
        action="store_true",
        help=f"instead: GPT-2 at {', '.join(map(str, SCALING_LAYERS))} layers, own work only (no pairs)",
    )
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    rows = []
    overhead = frame_overhead_us()
    if args.scaling:
        cases = {f"gpt2_{layers}_layers": functools.partial(zoo.gpt2, layers) for layers in SCALING_LAYERS}
        args.pairs = 0
    else:
        cases = {name: zoo.MODELS[name] for name in args.models.split(",")}
    for name, build in cases.items():
        print(f"{name}:", flush=True)
        row = bench_model(name, build, args.timed_runs, args.pairs)
        rows.append(row)
        print(
            f"  dispatches {row['dispatches_on']} on / {row['dispatches_off']} off ({row['dispatch_ratio']}x), "
            f"blocks {row['blocks_on']} / {row['blocks_off']}"
            + (
                f", CPU min ratio {row['cpu_ratio_of_minimums']}, paired {row['paired_overhead_cpu_pct_median']:+.1f} %"
                if args.pairs
                else ""
            ),
            flush=True,
        )
        for owner, own in row["own_work"].items():
            print(
                f"    {owner:<30} {own['cpu_s_median'] * 1e3:8.2f} ms ({own['pct_of_compile_median']:.3f} %), "
                f"{own['calls']} calls",
                flush=True,
            )
        # After every model, so that a run cut short keeps what it measured.
        _common.write_results(
            args.out or f"{'patch-cost-scaling' if args.scaling else 'patch-cost'}-{HARNESS_INFO['wheel']}",
            {
                "release": HARNESS_INFO["wheel"],
                "options": OPTIONS,
                "torch_threads": torch.get_num_threads(),
                "frame_overhead_us": overhead,
                "models": rows,
            },
        )


if __name__ == "__main__":
    main()
