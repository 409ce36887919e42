"""Cost of keep_identity_ops: its graph function against upstream's ``_remove_identity_ops``; its share of a compile.

    .venvs/tt-2.14.0/bin/python -m benchmarks.bench_keep_identity_ops      # writes results/keep-identity-ops.json
    .venvs/tt-2.14.0/bin/python -m benchmarks.bench_keep_identity_ops --sizes 1000,2000 --pairs 2

Two benchmarks, on the real Torch-TensorRT (2.12 or newer) under the offline harness:

* ``scaling``: ``remove_identity_ops_before_item`` and upstream's ``_remove_identity_ops`` on real Dynamo graphs of
  about 1k-20k nodes: blocks of Linear, ``.transpose().contiguous().view()``, a clone changed in place, a
  ``detach`` and a parameter read through ``.clone().item()`` (captured with ``capture_scalar_outputs=True``, so
  every block gives the graph function a chain to remove and a root whose writes must be checked: its worst
  case). The same graphs without the ``.item()`` (the common case) measure the early exit. Each run works on a fresh
  copy of the captured graph (made outside the timing); thread CPU time per node must stay flat for linear cost.
* ``compile``: a full dryrun ``torch.compile(..., backend="torch_tensorrt")`` of a 12-layer GPT-style transformer
  (``.transpose(1, 2).contiguous().view()`` attention and a per-layer temperature read with ``.detach().item()``)
  with trt_compat, and the time spent inside ``remove_identity_ops_before_item`` (attributable time); and of a
  12-layer encoder whose attention uses ``reshape`` (no identity op, no ``.item()``: it compiles without
  trt_compat too), with and without trt_compat, with the time spent inside either function. Without trt_compat
  the GPT-style model does not compile (upstream removes its ``contiguous``), so it has no "without" time.
"""

from __future__ import annotations

import argparse
import gc
import inspect
import logging
import os
import statistics
import time

from trt_compat.patches import keep_identity_ops  # noqa: E402

import trt_compat  # noqa: E402  (before torch_tensorrt, as deployments do)
from benchmarks import _common
from tests.harness import activate  # noqa: E402

HARNESS_INFO = activate.prepare()
import torch  # noqa: E402
import torch_tensorrt  # noqa: E402,F401  (the import hook applies trt_compat's patches now)
from torch_tensorrt.dynamo.lowering.passes import fold_get_attr_item_calls as fold_module  # noqa: E402

logging.getLogger("torch_tensorrt").setLevel(logging.WARNING)
nn = torch.nn
UPSTREAM_REMOVAL = inspect.unwrap(fold_module._remove_identity_ops)  # under trt_compat's wrapper, if applied


def log(msg):
    print(msg, flush=True)


# --------------------------------------------------------------------------------------------- scaling


class Block(nn.Module):
    def __init__(self, channels, with_item):
        super().__init__()
        self.linear = nn.Linear(channels, channels)
        self.scale = nn.Parameter(torch.tensor(0.5))
        self.with_item = with_item

    def forward(self, x):
        b, t, c = x.shape
        y = self.linear(x).view(b, t, 2, c // 2).transpose(1, 2)
        y = y.transpose(1, 2).contiguous().view(b, t, c)
        z = y.clone()
        z.mul_(0.5)
        y = y + z.detach()
        return y * self.scale.clone().item() if self.with_item else y * self.scale


class Stack(nn.Module):
    def __init__(self, blocks, with_item, channels=8):
        super().__init__()
        self.blocks = nn.ModuleList(Block(channels, with_item) for _ in range(blocks))

    def forward(self, x):
        for block in self.blocks:
            x = block(x)
        return x


def capture(blocks, with_item):
    """The Dynamo graph of ``blocks`` blocks, copied inside the backend (Dynamo's placeholder metadata is complete
    only there), and the capture time."""
    captured = []

    def backend(gm, example_inputs):
        graph = torch.fx.Graph()
        graph.output(graph.graph_copy(gm.graph, {}))
        captured.append(torch.fx.GraphModule(gm, graph))
        return gm.forward

    torch._dynamo.reset()
    previous = torch._dynamo.config.capture_scalar_outputs
    torch._dynamo.config.capture_scalar_outputs = True
    start = time.perf_counter()
    try:
        with torch.no_grad():
            torch.compile(Stack(blocks, with_item).eval(), backend=backend, fullgraph=True)(torch.randn(2, 4, 8))
    finally:
        torch._dynamo.config.capture_scalar_outputs = previous
        torch._dynamo.reset()
    return captured[0], time.perf_counter() - start


def fresh_copy(gm):
    graph = torch.fx.Graph()
    graph.output(graph.graph_copy(gm.graph, {}))
    return torch.fx.GraphModule(gm, graph)


def identity_count(gm):
    return sum(
        1
        for n in gm.graph.nodes
        if (n.op == "call_method" and n.target in ("clone", "contiguous", "detach"))
        or n.target in (torch.ops.aten.clone.default, torch.ops.aten.detach.default)
    )


def time_function(fn, gm, repeats):
    runs, removed = [], None
    for _ in range(repeats):
        graph = fresh_copy(gm)
        before = identity_count(graph)
        runs.append(_common.timed(fn, graph))
        removed = before - identity_count(graph)
    med = _common.median
    return {
        "total_s": med([t.seconds for t in runs]),
        "total_cpu_s": med([t.cpu_seconds for t in runs]),
        "graph_work_cpu_s": med([t.work_cpu_s for t in runs]),
        "recompile_cpu_s": med([t.recompile_cpu_s for t in runs]),
        "recompiles_per_call": sorted({t.recompiles for t in runs}),
        "identity_nodes_removed": removed,
        "repeats": repeats,
    }


def bench_scaling(sizes, repeats):
    rows = []
    per_block = None
    for size in sizes:
        for with_item in (True, False):
            if per_block is None:
                probe, _ = capture(10, True)
                per_block = len(probe.graph.nodes) / 10
            blocks = max(1, round(size / per_block))
            gm, capture_s = capture(blocks, with_item)
            nodes = len(gm.graph.nodes)
            row = {
                "target_nodes": size,
                "nodes": nodes,
                "blocks": blocks,
                "with_item": with_item,
                "identity_nodes": identity_count(gm),
                "capture_s": round(capture_s, 2),
                "ours": time_function(keep_identity_ops.remove_identity_ops_before_item, gm, repeats),
                "upstream": time_function(UPSTREAM_REMOVAL, gm, repeats),
            }
            for side in ("ours", "upstream"):
                row[side]["cpu_us_per_node"] = round(row[side]["total_cpu_s"] / nodes * 1e6, 3)
            rows.append(row)
            ours, upstream = row["ours"], row["upstream"]
            log(
                f"  {nodes:6d} nodes, .item() chains {'yes' if with_item else 'no '}: ours "
                f"{ours['total_cpu_s'] * 1e3:8.2f} ms CPU ({ours['cpu_us_per_node']:.2f} us/node, removed "
                f"{ours['identity_nodes_removed']}), upstream {upstream['total_cpu_s'] * 1e3:8.2f} ms CPU "
                f"({upstream['cpu_us_per_node']:.2f} us/node, removed {upstream['identity_nodes_removed']}); "
                f"capture {capture_s:.1f} s"
            )
    return rows


# --------------------------------------------------------------------------------------------- compile


class GPTLayer(nn.Module):
    def __init__(self, channels=64, heads=4):
        super().__init__()
        self.heads = heads
        self.norm1 = nn.LayerNorm(channels)
        self.qkv = nn.Linear(channels, 3 * channels)
        self.proj = nn.Linear(channels, channels)
        self.norm2 = nn.LayerNorm(channels)
        self.mlp = nn.Sequential(nn.Linear(channels, 4 * channels), nn.GELU(), nn.Linear(4 * channels, channels))
        self.temperature = nn.Parameter(torch.tensor(8.0))

    def forward(self, x):
        b, t, c = x.shape
        q, k, v = self.qkv(self.norm1(x)).split(c, dim=2)
        q, k, v = (z.view(b, t, self.heads, c // self.heads).transpose(1, 2) for z in (q, k, v))
        att = torch.softmax(q @ k.transpose(-2, -1) / self.temperature.detach().item(), dim=-1)
        x = x + self.proj((att @ v).transpose(1, 2).contiguous().view(b, t, c))
        return x + self.mlp(self.norm2(x))


class EncoderLayer(nn.Module):
    def __init__(self, channels=64, heads=4):
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(channels, 3 * channels)
        self.proj = nn.Linear(channels, channels)
        self.norm1 = nn.LayerNorm(channels)
        self.ff = nn.Sequential(nn.Linear(channels, 2 * channels), nn.GELU(), nn.Linear(2 * channels, channels))
        self.norm2 = nn.LayerNorm(channels)

    def forward(self, x):
        b, t, d = x.shape
        q, k, v = self.qkv(x).view(b, t, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        attn = torch.softmax(q @ k.transpose(-2, -1) / (d // self.heads) ** 0.5, dim=-1)
        x = self.norm1(x + self.proj((attn @ v).transpose(1, 2).reshape(b, t, d)))
        return self.norm2(x + self.ff(x))


COMPILE_MODELS = {
    "gpt12": (lambda: nn.Sequential(*(GPTLayer() for _ in range(12))), True),
    "encoder12": (lambda: nn.Sequential(*(EncoderLayer() for _ in range(12))), False),
}


class Stopwatch:
    """Accumulates the wall and thread-CPU time of every call of a module-level function while installed."""

    def __init__(self, module, name):
        self.module, self.name, self.seconds, self.cpu_seconds, self.calls = module, name, 0.0, 0.0, 0

    def __enter__(self):
        self.original = original = getattr(self.module, self.name)
        watch = self

        def timed(*args, **kwargs):
            start, start_cpu = time.perf_counter(), time.thread_time()
            try:
                return original(*args, **kwargs)
            finally:
                watch.calls += 1
                watch.seconds += time.perf_counter() - start
                watch.cpu_seconds += time.thread_time() - start_cpu

        setattr(self.module, self.name, timed)
        return self

    def __exit__(self, *exc):
        setattr(self.module, self.name, self.original)
        return False


def compile_once(model, x, capture_scalars, patched):
    """One dryrun compile and first call; wall and process-CPU seconds, and the time inside the removal function."""
    report = trt_compat.apply() if patched else trt_compat.revert()
    applied = {p.name for p in report.patches if p.state == "applied"}
    assert ("keep_identity_ops" in applied) == patched, applied
    # With trt_compat, upstream's _remove_identity_ops calls ours through the module global, looked up per call.
    module, name = (
        (keep_identity_ops, "remove_identity_ops_before_item") if patched else (fold_module, "_remove_identity_ops")
    )
    torch._dynamo.reset()
    torch._dynamo.config.capture_scalar_outputs = capture_scalars
    gc.collect()
    try:
        with Stopwatch(module, name) as watch:
            start, start_cpu = time.perf_counter(), time.process_time()
            compiled = torch.compile(
                model,
                backend="torch_tensorrt",
                options={"dryrun": True, "min_block_size": 1, "pass_through_build_failures": True},
            )
            with torch.no_grad():
                out = compiled(x)
            seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - start_cpu
    finally:
        torch._dynamo.config.capture_scalar_outputs = False
    return seconds, cpu_seconds, watch, out


def bench_compile(pairs):
    rows = []
    for name, (make_model, capture_scalars) in COMPILE_MODELS.items():
        torch.manual_seed(0)
        model, x = make_model().eval(), torch.randn(1, 16, 64)
        with torch.no_grad():
            expected = model(x)
        sides = (True, False) if name == "encoder12" else (True,)
        runs = {side: [] for side in sides}
        for side in sides:  # warm-up, not counted
            compile_once(model, x, capture_scalars, side)
        for i in range(pairs):
            for side in sides if i % 2 == 0 else tuple(reversed(sides)):
                seconds, cpu_seconds, watch, out = compile_once(model, x, capture_scalars, side)
                assert torch.equal(out, expected), f"{name}: dryrun output differs from eager"
                runs[side].append(
                    {
                        "compile_s": seconds,
                        "compile_cpu_s": cpu_seconds,
                        "function_s": watch.seconds,
                        "function_cpu_s": watch.cpu_seconds,
                        "function_calls": watch.calls,
                    }
                )
                log(
                    f"  {name} {'with   ' if side else 'without'} trt_compat: compile {seconds:.2f} s "
                    f"(CPU {cpu_seconds:.2f} s), inside the removal function {watch.seconds * 1e3:.2f} ms "
                    f"({watch.calls} calls)"
                )
        row = {"model": name, "capture_scalar_outputs": capture_scalars, "pairs": pairs}
        for side, label in ((True, "with"), (False, "without")):
            if side not in runs:
                continue
            med = {key: statistics.median(r[key] for r in runs[side]) for key in runs[side][0]}
            row[label] = dict(
                med, runs=runs[side], function_pct_of_compile=round(med["function_s"] / med["compile_s"] * 100, 4)
            )
        rows.append(row)
    return rows


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default=",".join(str(s) for s in _common.SIZES))
    parser.add_argument("--repeats", type=int, default=5, help="runs per graph and function (median reported)")
    parser.add_argument("--pairs", type=int, default=4, help="compiles per model and side")
    parser.add_argument("--only", default="scaling,compile")
    args = parser.parse_args(argv)
    only = args.only.split(",")
    data = {"release": HARNESS_INFO["wheel"], "TRT_COMPAT_DISABLE": os.environ.get("TRT_COMPAT_DISABLE")}
    if "scaling" in only:
        log("scaling:")
        data["scaling"] = bench_scaling([int(s) for s in args.sizes.split(",")], args.repeats)
    if "compile" in only:
        log("compile:")
        data["compile"] = bench_compile(args.pairs)
    _common.write_results("keep-identity-ops", data)


if __name__ == "__main__":
    main()
