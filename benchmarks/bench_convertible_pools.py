"""What convertible_pools costs: the rewrite per pool (1k-20k pools), and the padding memory it adds per model.

    .venvs/unit/bin/python -m benchmarks.bench_convertible_pools --only rewrite      # results/convertible-pools.json
    .venvs/tt-2.14.0/bin/python -m benchmarks.bench_convertible_pools --only memory  # needs torchvision

* ``rewrite``: ``make_pools_convertible`` on synthetic graphs of N pools (built like benchmarks/graphs.py, every
  node with its fake val), each reading its own relu of one input and summed into a running total, the kinds
  taking turns: a GoogLeNet-style
  ceil-mode max pool (3x3, stride 2: padding + pool), a ceil-mode average pool without count_include_pad (four
  pieces joined by cat), a dilated max pool (phases in the channel dim), and an accepted pool (left alone).
  Reported: wall and thread-CPU time per pool, with the one ``recompile`` at the end timed apart, and the nodes
  added per pool. The validators' model stands in for the registry (no torch_tensorrt needed).
* ``memory``: torchvision's GoogLeNet, SqueezeNet 1.0/1.1 and Inception v3 (random weights), exported and
  decomposed, then tuple_pooling and this rewrite (needs torchvision). Per rewritten pool: the tensor its
  ``constant_pad_nd`` creates and how much of it is padding, at batch 1 and fp32 -- an upper bound on the extra
  activation memory and traffic inside the engine, when TensorRT does not fold the padding into the pooling
  layer. Set against the graph breaks the rewrite removes (tests/integration/test_convertible_pools.py). Latency
  with and without needs a GPU (tests/gpu); this machine has none.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

from benchmarks import _common

# Blocks measured on the offline harness (tests/integration/test_convertible_pools.py, 2.4.0, 2.5.0, 2.14.0):
# without this rewrite (every other trt_compat patch applied) -> with it.
BLOCKS = {"googlenet": (11, 1), "squeezenet1_0": (4, 1), "squeezenet1_1": (4, 1), "inception_v3": (1, 1)}
MODELS = {
    "googlenet": ((1, 3, 224, 224), lambda tv: tv.googlenet(weights=None, aux_logits=False, init_weights=False)),
    "squeezenet1_0": ((1, 3, 224, 224), lambda tv: tv.squeezenet1_0(weights=None)),
    "squeezenet1_1": ((1, 3, 224, 224), lambda tv: tv.squeezenet1_1(weights=None)),
    "inception_v3": ((1, 3, 299, 299), lambda tv: tv.inception_v3(weights=None, aux_logits=False, init_weights=False)),
}
_LONG_RUNS_FROM = 5_000


def log(msg):
    print(msg, flush=True)


def pool_chain(pools: int):
    """``pools`` pools, each on its own relu of one (1, 8, 18, 18) input, each summed into a running total.

    Every pool has one user with one input, as in a real network (a fan-in of all pools into the graph's output
    would make each replace_all_uses_with scan thousands of arguments).
    """
    import torch
    import torch.fx as fx
    from torch._subclasses.fake_tensor import FakeTensorMode

    aten = torch.ops.aten
    kinds = [
        (aten.max_pool2d.default, ([3, 3], [2, 2], [0, 0], [1, 1], True)),  # GoogLeNet's
        (aten.avg_pool2d.default, ([3, 3], [2, 2], [1, 1], True, False)),
        (aten.max_pool2d.default, ([3, 3], [1, 1], [1, 1], [2, 2])),
        (aten.max_pool2d.default, ([2, 2], [2, 2])),  # accepted as it is
    ]
    mode, graph = FakeTensorMode(), fx.Graph()

    def call(target, *args):
        node = graph.call_function(target, args)
        with mode:
            node.meta["val"] = target(*fx.node.map_arg(args, lambda arg: arg.meta["val"]))
        return node

    x = graph.placeholder("x")
    x.meta["val"] = mode.from_tensor(torch.empty(1, 8, 18, 18))
    total = call(aten.sum.default, x)
    for i in range(pools):
        op, args = kinds[i % len(kinds)]
        pool = call(op, call(aten.relu.default, x), *args)
        total = call(aten.add.Tensor, total, call(aten.sum.default, pool))
    graph.output(total)
    return fx.GraphModule(torch.nn.Module(), graph)


def bench_rewrite(sizes, repeats):
    from trt_compat.patches.convertible_pools import make_pools_convertible, validators_of_every_release

    rows = []
    for n in sizes:
        t0 = time.perf_counter()
        pool_chain(n)  # warm the fake-tensor caches out of the timing
        runs, nodes_before, nodes_after = [], None, None
        for _ in range(repeats if n < _LONG_RUNS_FROM else 1):
            gm = pool_chain(n)
            nodes_before = len(gm.graph.nodes)
            timing = _common.timed(make_pools_convertible, gm)
            nodes_after = len(gm.graph.nodes)
            assert timing.recompiles == 1
            assert all(validators_of_every_release(node) for node in gm.graph.nodes if node.op == "call_function")
            runs.append(timing)
        med = _common.median
        row = {
            "pools": n,
            "rewritten": n - n // 4,
            "nodes_before": nodes_before,
            "nodes_after": nodes_after,
            "build_s": round(time.perf_counter() - t0, 3),
            "repeats": len(runs),
            "total_s": med([t.seconds for t in runs]),
            "total_cpu_s": med([t.cpu_seconds for t in runs]),
            "graph_work_s": med([t.work_s for t in runs]),
            "graph_work_cpu_s": med([t.work_cpu_s for t in runs]),
            "recompile_s": med([t.recompile_s for t in runs]),
        }
        row["per_pool_us"] = round(row["total_s"] / n * 1e6, 1)
        row["graph_work_cpu_per_pool_us"] = round(row["graph_work_cpu_s"] / n * 1e6, 1)
        row["nodes_added_per_rewritten_pool"] = round((nodes_after - nodes_before) / row["rewritten"], 2)
        rows.append(row)
        log(
            f"  rewrite {n:>6}: {_common.fmt_ms(row['total_s'])} ms ({row['per_pool_us']} us/pool; graph work "
            f"{row['graph_work_cpu_per_pool_us']} us/pool CPU; recompile {_common.fmt_ms(row['recompile_s'])} ms; "
            f"+{row['nodes_added_per_rewritten_pool']} nodes per rewritten pool)"
        )
    return rows


def bench_memory(names):
    import torch
    import torchvision
    from trt_compat.patches import convertible_pools, tuple_pooling

    aten = torch.ops.aten
    rows = []
    for name in names:
        shape, build = MODELS[name]
        torch.manual_seed(0)
        model, x = build(torchvision.models).eval(), torch.randn(shape)
        gm = torch.export.export(model, (x,)).run_decompositions().module()
        tuple_pooling.decompose_tuple_pooling(gm, "tensorrt")
        rejected = [
            node
            for node in gm.graph.nodes
            if convertible_pools._is_pool(node) and not convertible_pools.validators_of_every_release(node)
        ]
        t0 = time.perf_counter()
        convertible_pools.make_pools_convertible(gm)
        seconds = time.perf_counter() - t0
        pads = []
        for node in gm.graph.nodes:
            if node.target is aten.constant_pad_nd.default:
                padded, source = node.meta["val"], node.args[0].meta["val"]
                pads.append(
                    {
                        "node": node.name,
                        "input": list(source.shape),
                        "padded": list(padded.shape),
                        "padded_bytes": padded.numel() * padded.element_size(),
                        "padding_bytes": (padded.numel() - source.numel()) * padded.element_size(),
                    }
                )
        row = {
            "model": name,
            "input": list(shape),
            "pools_rejected": len(rejected),
            "pads": len(pads),
            "padded_bytes": sum(p["padded_bytes"] for p in pads),
            "padding_bytes": sum(p["padding_bytes"] for p in pads),
            "per_pool": pads,
            "rewrite_s": round(seconds, 3),
            "blocks_without_to_with": BLOCKS.get(name),
        }
        activations = sum(p["padded_bytes"] - p["padding_bytes"] for p in pads)
        row["padding_fraction_of_pool_inputs"] = round(row["padding_bytes"] / activations, 4) if activations else 0.0
        rows.append(row)
        log(
            f"  {name:>14}: {len(rejected)} pools rewritten, {len(pads)} pads, padded tensors "
            f"{row['padded_bytes'] / 2**20:.2f} MiB, of which padding {row['padding_bytes'] / 2**10:.1f} KiB "
            f"({100 * row['padding_fraction_of_pool_inputs']:.1f}% of the pool inputs); blocks {BLOCKS.get(name)}"
        )
    return rows


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--only", default="rewrite,memory")
    parser.add_argument("--sizes", default=",".join(map(str, _common.SIZES)))
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--out", default="convertible-pools")
    args = parser.parse_args(argv)
    only = set(args.only.split(","))
    import torch

    # The sections may be run in different venvs: each records its own torch and load.
    measured_with = {"torch": torch.__version__, "command": " ".join(sys.argv), "load_before": list(os.getloadavg())}
    results = {}
    if "rewrite" in only:
        log("rewrite per pool")
        results["rewrite"] = bench_rewrite([int(s) for s in args.sizes.split(",")], args.repeats)
        results["rewrite_measured_with"] = dict(measured_with, load_after=list(os.getloadavg()))
    if "memory" in only:
        log("padding memory per model (batch 1, fp32)")
        results["memory"] = bench_memory(args.models.split(","))
        results["memory_measured_with"] = dict(measured_with, load_after=list(os.getloadavg()))
    previous = _common.RESULTS / f"{args.out}.json"
    merged = json.loads(previous.read_text()) if previous.exists() else {}
    merged.update(results)
    _common.write_results(args.out, merged)


if __name__ == "__main__":
    main()
