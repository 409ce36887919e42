"""Cost of keep_input_mutations: per call (the copy back), and at compile time (finding the writes).

    .venvs/tt-2.14.0/bin/python -m benchmarks.bench_keep_input_mutations     # writes results/keep-input-mutations.json
    .venvs/tt-2.14.0/bin/python -m benchmarks.bench_keep_input_mutations --sizes 1000,2000 --cache-kib 1,1024

Four benchmarks, on the CPU (one torch thread), with only this patch of trt_compat's enabled; per-call times are
taken in alternation (A, B, A, B, ...) and the median kept, since the machine is shared:

* ``write_back``: the wrapper ``write_back`` puts around a compiled graph, alone: a stand-in for the compiled graph
  returns ready-made outputs (one small output and the updated cache of 1 KiB to 64 MiB), so what is timed is the
  wrapper: the copy into the caller's cache and the fixed Python cost. A bare ``cache.copy_(value)`` of the same
  size is the floor.
* ``kv_step``: a decoder-style cache write (``cache[1] = x; return cache[:2].sum(0)``) compiled by the real
  backend in dryrun, per call, with and without trt_compat. Both traced graphs compute a whole new cache
  (``slice_scatter``) every call; without trt_compat it is thrown away (the write is lost), with it it is copied
  into the buffer.
* ``no_update``: a graph that updates nothing, through the real backend with trt_compat: the backend returns
  upstream's own module (checked by identity), so the cost per call is exactly zero; timed anyway.
* ``detection``: ``find_mutations`` (one run of the graph on fake tensors) on real Dynamo graphs of about 1k-10k
  nodes, with and without a buffer update, and ``return_updated_inputs`` where there is one; next to it, the
  clones and ``aot_export_joint_simple`` trace that upstream's backend runs on the same graph anyway.
"""

from __future__ import annotations

import argparse
import logging
import os
import time
import unittest.mock

from benchmarks import _common
from tests.harness import activate  # noqa: E402

HARNESS_INFO = activate.prepare()
# Only this patch: the others change graphs too, and their cost is not this benchmark's.
OTHER_PATCHES = sorted(
    path.stem
    for path in (_common.REPO / "patches").glob("*.py")
    if not path.stem.startswith("_") and path.stem != "keep_input_mutations"
)
os.environ["TRT_COMPAT_DISABLE"] = ",".join(OTHER_PATCHES)
import torch  # noqa: E402
import torch_tensorrt  # noqa: E402,F401
from torch._functorch.aot_autograd import aot_export_joint_simple  # noqa: E402
from torch._guards import detect_fake_mode  # noqa: E402
from torch_tensorrt.dynamo.backend import backends  # noqa: E402
from trt_compat.patches.keep_input_mutations import WriteBack, find_mutations, return_updated_inputs, write_back  # noqa: E402

import trt_compat  # noqa: E402

# Importing trt_compat after torch_tensorrt applies its patches at once; each benchmark applies them where it says.
trt_compat.revert()
logging.getLogger("torch_tensorrt").setLevel(logging.ERROR)
nn = torch.nn
OPTIONS = {"dryrun": True, "min_block_size": 1, "pass_through_build_failures": True}


def log(msg):
    print(msg, flush=True)


def _loops_for(fn, args, seconds):
    """How many calls of ``fn(*args)`` take about ``seconds``."""
    loops = 1
    while True:
        start = time.perf_counter()
        for _ in range(loops):
            fn(*args)
        elapsed = time.perf_counter() - start
        if elapsed >= seconds / 4 or loops >= 1 << 20:
            return max(1, int(loops * seconds / max(elapsed, 1e-9)))
        loops *= 2


def paired_us(functions, args, seconds=0.05, rounds=15):
    """Microseconds per call of each function, measured in alternation (A, B, C, A, B, C, ...) so that a change of
    the machine's load (it is shared) hits all of them alike; the median over the rounds."""
    loops = [_loops_for(fn, args, seconds) for fn in functions]
    times = [[] for _ in functions]
    for _ in range(rounds):
        for index, fn in enumerate(functions):
            start = time.perf_counter()
            for _ in range(loops[index]):
                fn(*args)
            times[index].append((time.perf_counter() - start) / loops[index] * 1e6)
    return [round(_common.median(t), 2) for t in times]


# ------------------------------------------------------------------------------------------------- write_back


def bench_write_back(cache_kib):
    rows = []
    for kib in cache_kib:
        cache = torch.zeros(kib * 256)  # float32: 256 per KiB
        updated = torch.randn(kib * 256)
        outputs = [torch.randn(8), updated]

        def compiled(*args):
            return outputs

        wrapped = write_back(compiled, WriteBack(user_outputs=1, input_positions=(0,), attributes=()))

        def bare_copy(target):
            target.copy_(updated)

        alone, with_write_back, copy_only = paired_us([compiled, wrapped, bare_copy], (cache,))
        row = {
            "cache_kib": kib,
            "compiled_alone_us": alone,
            "with_write_back_us": with_write_back,
            "bare_copy_us": copy_only,
            "overhead_us": round(with_write_back - alone, 2),
        }
        row["overhead_beyond_copy_us"] = round(row["overhead_us"] - copy_only, 2)
        assert torch.equal(cache, updated)
        rows.append(row)
        log(
            f"  write_back {kib:>6} KiB: +{row['overhead_us']} us per call (bare copy {copy_only} us, "
            f"the rest {row['overhead_beyond_copy_us']} us)"
        )
    return rows


# ---------------------------------------------------------------------------------------------------- kv_step


class KVStep(nn.Module):
    def __init__(self, rows, width):
        super().__init__()
        self.register_buffer("cache", torch.zeros(rows, width))

    def forward(self, x):
        self.cache[1] = x
        return self.cache[:2].sum(0)


def compiled_kv_step(kib, with_trt_compat):
    width = 256
    rows = max(2, kib * 256 // width)
    model = KVStep(rows, width)
    x = torch.randn(width)
    torch._dynamo.reset()
    compiled = torch.compile(model, backend="torch_tensorrt", options=OPTIONS, dynamic=False)
    if with_trt_compat:
        trt_compat.apply()
    try:
        with torch.no_grad():
            compiled(x)  # compile
    finally:
        if with_trt_compat:
            trt_compat.revert()  # the compiled module keeps what it was compiled with
    kept = torch.equal(model.cache[1], x)
    return compiled, x, kept


def bench_kv_step(cache_kib):
    rows = []
    for kib in cache_kib:
        (without, x, kept_without), (with_patch, _, kept_with) = (compiled_kv_step(kib, flag) for flag in (False, True))
        assert kept_with and not kept_without
        with torch.no_grad():
            without_us, with_us = paired_us([without, with_patch], (x,), seconds=0.1, rounds=9)
        row = {
            "cache_kib": kib,
            "without_us": without_us,
            "with_us": with_us,
            "overhead_us": round(with_us - without_us, 2),
            "without_write_kept": kept_without,
            "with_write_kept": kept_with,
        }
        torch._dynamo.reset()
        rows.append(row)
        log(
            f"  kv_step {kib:>6} KiB: without {without_us} us (write lost), with {with_us} us (kept): "
            f"+{row['overhead_us']} us"
        )
    return rows


# -------------------------------------------------------------------------------------------------- no_update


class Pure(nn.Module):
    def forward(self, x):
        return torch.relu(x) * 2 + 1


def bench_no_update():
    produced, returned = [], []
    original = backends.compile_module

    def spy(*args, **kwargs):
        produced.append(original(*args, **kwargs))
        return produced[-1]

    def recording(gm, sample_inputs):
        returned.append(backends.aot_torch_tensorrt_aten_backend(gm, sample_inputs, options=OPTIONS))
        return returned[-1]

    x = torch.randn(64, 64)
    compiled, same_module = {}, {}
    for label, with_trt_compat in (("without", False), ("with", True)):
        produced.clear(), returned.clear()
        torch._dynamo.reset()
        if with_trt_compat:
            trt_compat.apply()
        try:
            with unittest.mock.patch.object(backends, "compile_module", spy):
                compiled[label] = torch.compile(Pure(), backend=recording, dynamic=False)
                with torch.no_grad():
                    compiled[label](x)
        finally:
            if with_trt_compat:
                trt_compat.revert()
        same_module[label] = returned[0] is produced[0]
    assert same_module["with"], "a graph without updates must get upstream's module itself"
    with torch.no_grad():
        without_us, with_us = paired_us([compiled["without"], compiled["with"]], (x,))
    torch._dynamo.reset()
    log(
        f"  no_update: the backend returns upstream's module itself: {same_module['with']}; "
        f"{without_us} us per call without trt_compat, {with_us} us with"
    )
    return {"with_returns_upstreams_module": same_module["with"], "without_us": without_us, "with_us": with_us}


# -------------------------------------------------------------------------------------------------- detection


class Block(nn.Module):
    def __init__(self, channels):
        super().__init__()
        self.linear = nn.Linear(channels, channels)

    def forward(self, x):
        y = torch.relu(self.linear(x))
        y = y * 0.5 + x
        return y.transpose(0, 1).contiguous().transpose(0, 1) - 0.25


class Stack(nn.Module):
    def __init__(self, blocks, updates_buffer, channels=8):
        super().__init__()
        self.blocks = nn.ModuleList(Block(channels) for _ in range(blocks))
        self.updates_buffer = updates_buffer
        self.register_buffer("cache", torch.zeros(4, channels))

    def forward(self, x):
        for block in self.blocks:
            x = block(x)
        if self.updates_buffer:
            self.cache[1] = x[0]
        return x


def nodes_per_block():
    seen = []

    def count(gm, sample_inputs):
        seen.append(len(gm.graph.nodes))
        return gm.forward

    for blocks in (1, 2):
        torch._dynamo.reset()
        torch.compile(Stack(blocks, False), backend=count, dynamic=False)(torch.randn(2, 8))
    return seen[1] - seen[0]


def bench_detection(sizes, repeats):
    per_block = nodes_per_block()
    rows = []
    for target in sizes:
        blocks = max(1, target // per_block)
        for updates_buffer in (False, True):
            row = {"target_nodes": target, "blocks": blocks, "updates_buffer": updates_buffer}

            def measure(gm, sample_inputs):
                row["nodes"] = len(gm.graph.nodes)
                runs = [_common.timed(find_mutations, gm, sample_inputs) for _ in range(repeats)]
                mutations = runs[0].result
                assert len(mutations) == int(updates_buffer)
                row["find_mutations_s"] = _common.median([t.seconds for t in runs])
                row["find_mutations_cpu_s"] = _common.median([t.cpu_seconds for t in runs])
                row["find_mutations_cpu_us_per_node"] = round(row["find_mutations_cpu_s"] / row["nodes"] * 1e6, 1)
                if mutations:
                    rewrite = _common.timed(return_updated_inputs, gm, mutations)
                    row["return_updated_inputs_s"] = rewrite.seconds
                    row["return_updated_inputs_recompile_s"] = rewrite.recompile_s
                # What upstream's backend does next on every graph anyway: clone the inputs, trace (on a copy).
                copy = torch.fx.GraphModule(gm, _copy_graph(gm.graph))
                fake_mode = detect_fake_mode(sample_inputs)
                start, start_cpu = time.perf_counter(), time.thread_time()
                with unittest.mock.patch.object(fake_mode, "allow_non_fake_inputs", True), fake_mode:
                    _clone_inputs(copy)
                    aot_export_joint_simple(copy, list(sample_inputs), trace_joint=False)
                row["aot_trace_s"] = time.perf_counter() - start
                row["aot_trace_cpu_s"] = time.thread_time() - start_cpu
                row["detection_share_of_aot_trace_cpu"] = round(row["find_mutations_cpu_s"] / row["aot_trace_cpu_s"], 3)
                return gm.forward

            torch._dynamo.reset()
            start = time.perf_counter()
            torch.compile(Stack(blocks, updates_buffer), backend=measure, dynamic=False)(torch.randn(2, 8))
            row["capture_and_measure_s"] = round(time.perf_counter() - start, 1)
            rows.append(row)
            log(
                f"  detection {row['nodes']:>6} nodes{' + update' if updates_buffer else '         '}: "
                f"find_mutations {_common.fmt_ms(row['find_mutations_s'])} ms "
                f"({row['find_mutations_cpu_us_per_node']} us/node CPU); "
                + (f"rewrite {_common.fmt_ms(row['return_updated_inputs_s'])} ms; " if updates_buffer else "")
                + f"upstream's AOT trace {_common.fmt_ms(row['aot_trace_s'])} ms "
                f"(detection = {row['detection_share_of_aot_trace_cpu']:.0%} of it, CPU)"
            )
    return rows


def _clone_inputs(gm):
    """A clone after every tensor input that all its users read, as upstream's repair_input_aliasing inserts."""
    inputs = [
        n for n in gm.graph.nodes if n.op == "placeholder" and isinstance(n.meta.get("example_value"), torch.Tensor)
    ]
    for node in inputs:
        with gm.graph.inserting_after(inputs[-1]):
            clone = gm.graph.call_function(torch.ops.aten.clone.default, (node,))
        node.replace_all_uses_with(clone, delete_user_cb=lambda user: user is not clone)
    gm.recompile()


def _copy_graph(graph):
    copy = torch.fx.Graph()
    copy.output(copy.graph_copy(graph, {}))
    return copy


# ------------------------------------------------------------------------------------------------------- main


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="1000,2000,5000,10000")
    parser.add_argument("--cache-kib", default="1,16,256,4096,65536")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--only", default="write_back,kv_step,no_update,detection")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    cache_kib = [int(s) for s in args.cache_kib.split(",")]
    only = set(args.only.split(","))
    torch.set_num_threads(1)

    results = {
        "release": HARNESS_INFO["wheel"],
        "torch_threads": 1,
        "TRT_COMPAT_DISABLE": os.environ["TRT_COMPAT_DISABLE"],
    }
    if "write_back" in only:
        log("write_back")
        results["write_back"] = bench_write_back(cache_kib)
    if "kv_step" in only:
        log("kv_step")
        results["kv_step"] = bench_kv_step(cache_kib)
    if "no_update" in only:
        log("no_update")
        results["no_update"] = bench_no_update()
    if "detection" in only:
        log("detection")
        results["detection"] = bench_detection(sizes, args.repeats)
    _common.write_results("keep-input-mutations", results)


if __name__ == "__main__":
    main()
