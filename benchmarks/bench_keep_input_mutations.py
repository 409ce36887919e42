"""Cost of keep_input_mutations: per call (the write-back), and at compile time (finding the writes).

    # writes results/keep-input-mutations-2.14.0.json:
    .venvs/tt-2.14.0/bin/python -m benchmarks.bench_keep_input_mutations
    .venvs/tt-2.14.0/bin/python -m benchmarks.bench_keep_input_mutations --cache-mib 4,64 --only kv_step

Three benchmarks, on the CPU (one torch thread), with only this patch of trt_compat's enabled; per-call times are
taken in alternation (A, B, C, A, B, C, ...) and the median kept, since the machine is shared:

* ``kv_step``: a decoder step's KV-cache write, ``cache.index_copy_(0, pos, row)`` of one 16 KiB row into a cache of
  4, 64 and 256 MiB (float32, 4096 wide), as a buffer of the module and as a tensor the caller passes, compiled by
  the real backend in dryrun: per call, eager, upstream (which loses the write) and trt_compat; the time, and the
  peak of what the call allocates through torch (tests/helpers/memory.py: the profiler's memory records). The
  ``kv_read`` rows do the same with the cache read after the write in the same graph (``cache.sum(0)``), where
  every AOT-traced backend computes the updated cache functionally inside the graph.
* ``no_update``: a graph that updates nothing, through the real backend with trt_compat: the backend returns
  upstream's own module (checked by identity), so the cost per call is exactly zero; timed anyway.
* ``detection``: on real Dynamo graphs of about 1k-10k nodes, with and without a buffer update: the pre-filter
  (``may_write_an_input``, from the graph alone), and, where it lets the graph through, ``find_mutations`` (the
  fake run of the nodes that can write or share an input's memory); next to it, the clones and
  ``aot_export_joint_simple`` trace that upstream's backend runs on the same graph anyway.
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
from trt_compat.patches.keep_input_mutations import find_mutations, may_write_an_input  # noqa: E402

import trt_compat  # noqa: E402
from tests.helpers.memory import peak_bytes  # noqa: E402

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


# ---------------------------------------------------------------------------------------------------- kv_step

WIDTH = 4096


# Each side gets its own code objects: Dynamo caches compiled code per code object, and the guards of one side's
# graph would let another side's calls run it.
STEP_SOURCE = """
class CacheBuffer(nn.Module):
    def __init__(self, rows, read_after_write):
        super().__init__()
        self.register_buffer("cache", torch.zeros(rows, WIDTH))
        self.read_after_write = read_after_write

    def forward(self, row, pos):
        self.cache.index_copy_(0, pos, row)
        return self.cache.sum(0) if self.read_after_write else row * 2


def cache_argument(read_after_write):
    def step(cache, row, pos):
        cache.index_copy_(0, pos, row)
        return cache.sum(0) if read_after_write else row * 2

    return step
"""


def step_code(side):
    namespace = {"nn": nn, "torch": torch, "WIDTH": WIDTH}
    exec(compile(STEP_SOURCE, f"<kv step, {side}>", "exec"), namespace)
    return namespace["CacheBuffer"], namespace["cache_argument"]


def kv_sides(mib, shape, read_after_write):
    """{side: (callable, arguments, the cache it writes)} for eager, upstream and trt_compat."""
    rows = mib * 2**20 // (4 * WIDTH)
    row, pos = torch.randn(1, WIDTH), torch.tensor([rows // 2])
    sides = {}
    for side in ("eager", "upstream", "trt_compat"):
        CacheBuffer, cache_argument = step_code(side)
        if shape == "buffer":
            model = CacheBuffer(rows, read_after_write)
            cache, arguments = model.cache, (row, pos)
        else:
            model, cache = cache_argument(read_after_write), torch.zeros(rows, WIDTH)
            arguments = (cache, row, pos)
        if side != "eager":
            model = torch.compile(model, backend="torch_tensorrt", options=OPTIONS, dynamic=False)
            if side == "trt_compat":
                trt_compat.apply()
            try:
                with torch.no_grad():
                    model(*arguments)  # compile
            finally:
                if side == "trt_compat":
                    trt_compat.revert()  # the compiled module keeps what it was compiled with
        sides[side] = (model, arguments, cache)
    return sides, row


def bench_kv_step(cache_mib, read_after_write):
    rows = []
    for mib in cache_mib:
        for shape in ("buffer", "argument"):
            sides, row = kv_sides(mib, shape, read_after_write)
            names = list(sides)
            with torch.no_grad():
                for model, arguments, cache in sides.values():
                    cache.zero_()
                    model(*arguments)
                kept = {name: bool(torch.equal(sides[name][2][int(sides[name][1][-1])], row[0])) for name in names}
                calls = [lambda name=name: sides[name][0](*sides[name][1]) for name in names]
                times = paired_us([lambda call=call: call() for call in calls], (), seconds=0.05, rounds=9)
                peaks = [min(peak_bytes(call) for _ in range(3)) for call in calls]
            result = {
                "cache_mib": mib,
                "shape": shape,
                "read_after_write": read_after_write,
                **{f"{name}_us": t for name, t in zip(names, times)},
                **{f"{name}_peak_bytes": p for name, p in zip(names, peaks)},
                **{f"{name}_write_kept": kept[name] for name in names},
            }
            assert kept["eager"] and kept["trt_compat"] and not kept["upstream"], kept
            rows.append(result)
            torch._dynamo.reset()
            log(
                f"  {'kv_read' if read_after_write else 'kv_step'} {mib:>4} MiB {shape:<8}: "
                + ", ".join(
                    f"{name} {result[name + '_us']} us / {result[name + '_peak_bytes'] / 2**20:.3f} MiB"
                    for name in names
                )
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
                filtered = [_common.timed(may_write_an_input, gm) for _ in range(repeats)]
                assert filtered[0].result == updates_buffer
                row["pre_filter_s"] = _common.median([t.seconds for t in filtered])
                row["pre_filter_cpu_us_per_node"] = round(
                    _common.median([t.cpu_seconds for t in filtered]) / row["nodes"] * 1e6, 2
                )
                runs = [_common.timed(find_mutations, gm, sample_inputs) for _ in range(repeats)]
                mutations = runs[0].result
                assert len(mutations) == int(updates_buffer)
                row["find_mutations_s"] = _common.median([t.seconds for t in runs])
                row["find_mutations_cpu_s"] = _common.median([t.cpu_seconds for t in runs])
                row["find_mutations_cpu_us_per_node"] = round(row["find_mutations_cpu_s"] / row["nodes"] * 1e6, 1)
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
                f"pre-filter {_common.fmt_ms(row['pre_filter_s'])} ms; "
                f"find_mutations {_common.fmt_ms(row['find_mutations_s'])} ms "
                f"({row['find_mutations_cpu_us_per_node']} us/node CPU); "
                f"upstream's AOT trace {_common.fmt_ms(row['aot_trace_s'])} ms "
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
    parser.add_argument("--cache-mib", default="4,64,256")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--only", default="kv_step,kv_read,no_update,detection")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    cache_mib = [int(s) for s in args.cache_mib.split(",")]
    only = set(args.only.split(","))
    torch.set_num_threads(1)

    results = {
        "release": HARNESS_INFO["wheel"],
        "torch_threads": 1,
        "TRT_COMPAT_DISABLE": os.environ["TRT_COMPAT_DISABLE"],
    }
    if "kv_step" in only:
        log("kv_step")
        results["kv_step"] = bench_kv_step(cache_mib, read_after_write=False)
    if "kv_read" in only:
        log("kv_read")
        results["kv_read"] = bench_kv_step(cache_mib, read_after_write=True)
    if "no_update" in only:
        log("no_update")
        results["no_update"] = bench_no_update()
    if "detection" in only:
        log("detection")
        results["detection"] = bench_detection(sizes, args.repeats)
    _common.write_results(f"keep-input-mutations-{HARNESS_INFO['wheel']}", results)


if __name__ == "__main__":
    main()
