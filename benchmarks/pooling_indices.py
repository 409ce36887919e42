"""Eager CPU cost of trt_compat's pooling-indices and unpool decompositions against the ATen ops.

    .venvs/unit/bin/python -m benchmarks.pooling_indices [--threads 1] [--repeats 15]

For each representative shape, times (median of --repeats runs, after a warm-up) the ATen op and the
graph ``decompose_tuple_pooling(gm, "tensorrt")`` makes of it, run eagerly by PyTorch, and checks they
agree bit for bit. The decomposition exists to be converted by Torch-TensorRT, not to run in PyTorch:
this measures what it costs where it does run in PyTorch (a fallback block, or the eager reference).
Prints a Markdown table (see benchmarks/POOLING_INDICES.md).
"""

from __future__ import annotations

import argparse
import operator
import os
import platform
import statistics
import time

import torch
from torch._subclasses.fake_tensor import FakeTensorMode
from torch.fx.passes.fake_tensor_prop import FakeTensorProp
from trt_compat.patches import tuple_pooling as tp

aten = torch.ops.aten

# name, ATen op, its arguments after the input, input shape
POOLS = [
    (
        "SegNet max_pool2d 2x2/2, 1x64x224x224",
        aten.max_pool2d_with_indices.default,
        ([2, 2], [2, 2]),
        (1, 64, 224, 224),
    ),
    ("SegNet max_pool2d 2x2/2, 8x128x56x56", aten.max_pool2d_with_indices.default, ([2, 2], [2, 2]), (8, 128, 56, 56)),
    (
        "ResNet stem max_pool2d 3x3/2 pad 1, 1x64x112x112",
        aten.max_pool2d_with_indices.default,
        ([3, 3], [2, 2], [1, 1]),
        (1, 64, 112, 112),
    ),
    ("max_pool1d 3/1 pad 1, 16x256x512", aten.max_pool1d_with_indices.default, ([3], [1], [1]), (16, 256, 512)),
    (
        "max_pool3d 2x2x2/2, 1x32x32x64x64",
        aten.max_pool3d_with_indices.default,
        ([2, 2, 2], [2, 2, 2]),
        (1, 32, 32, 64, 64),
    ),
    ("adaptive_max_pool2d 7x7, 8x512x14x14", aten.adaptive_max_pool2d.default, ([7, 7],), (8, 512, 14, 14)),
    (
        "adaptive_max_pool2d 6x6 (uneven bins), 8x256x13x13",
        aten.adaptive_max_pool2d.default,
        ([6, 6],),
        (8, 256, 13, 13),
    ),
]
# name, pooling (op, args) producing the unpool's inputs, input shape
UNPOOLS = [
    ("SegNet max_unpool2d 2x2, 1x64x112x112 -> 224x224", ([2, 2], [2, 2]), (1, 64, 224, 224)),
    ("SegNet max_unpool2d 2x2, 8x128x28x28 -> 56x56", ([2, 2], [2, 2]), (8, 128, 56, 56)),
]


def median_seconds(fn, repeats):
    fn()  # warm-up: allocator, lazy initialisation
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def traced(build, *examples):
    graph = torch.fx.Graph()
    placeholders = [graph.placeholder(f"in{i}") for i in range(len(examples))]
    graph.output(build(graph, *placeholders))
    gm = torch.fx.GraphModule(torch.nn.Module(), graph)
    FakeTensorProp(gm, FakeTensorMode()).propagate(*examples)
    tp.decompose_tuple_pooling(gm, "tensorrt")
    return gm


def same(a, b):
    return bool(((a == b) | (a.isnan() & b.isnan())).all())


def bench_pools(repeats):
    rows = []
    for name, op, args, shape in POOLS:
        x = torch.randn(shape)

        def build(graph, x_node, op=op, args=args):
            pool = graph.call_function(op, (x_node, *args))
            return tuple(graph.call_function(operator.getitem, (pool, i)) for i in (0, 1))

        gm = traced(build, x)
        values, indices = gm(x)
        want_values, want_indices = op(x, *args)
        assert same(values, want_values) and torch.equal(indices, want_indices), name
        with torch.no_grad():
            aten_s = median_seconds(lambda op=op, x=x, args=args: op(x, *args), repeats)
            ours_s = median_seconds(lambda gm=gm, x=x: gm(x), repeats)
        rows.append((name, aten_s, ours_s))
    return rows


def bench_unpools(repeats):
    rows = []
    for name, pool_args, shape in UNPOOLS:
        values, indices = aten.max_pool2d_with_indices.default(torch.randn(shape), *pool_args)
        size = list(shape[-2:])

        def build(graph, v, i, size=size):
            return graph.call_function(aten.max_unpool2d.default, (v, i, size))

        gm = traced(build, values, indices)
        assert torch.equal(gm(values, indices), aten.max_unpool2d.default(values, indices, size)), name
        with torch.no_grad():
            aten_s = median_seconds(
                lambda v=values, i=indices, size=size: aten.max_unpool2d.default(v, i, size), repeats
            )
            ours_s = median_seconds(lambda gm=gm, v=values, i=indices: gm(v, i), repeats)
        rows.append((name, aten_s, ours_s))
    return rows


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads (default 1: a shared machine)")
    parser.add_argument("--repeats", type=int, default=15)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(
        f"torch {torch.__version__}, Python {platform.python_version()}, {platform.machine()}, "
        f"{args.threads} thread(s), {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f}, "
        f"median of {args.repeats}"
    )
    print()
    print("| case | ATen (ms) | decomposed, eager (ms) | ratio |")
    print("|---|---:|---:|---:|")
    for name, aten_s, ours_s in bench_pools(args.repeats) + bench_unpools(args.repeats):
        print(f"| {name} | {aten_s * 1e3:.2f} | {ours_s * 1e3:.2f} | {ours_s / aten_s:.1f}x |")


if __name__ == "__main__":
    main()
