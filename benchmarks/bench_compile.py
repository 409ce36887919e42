"""Full offline ``torch.compile(..., backend="torch_tensorrt", options={"dryrun": True})`` with and without
trt_compat, on the real Torch-TensorRT compiler under the offline harness.

    .venvs/tt-2.5.0/bin/python  -m benchmarks.bench_compile      # writes results/compile-2.5.0.json
    .venvs/tt-2.14.0/bin/python -m benchmarks.bench_compile      # writes results/compile-2.14.0.json

Fair comparison, in one process: the models, inputs and every import are shared; runs alternate in the order
with, without, without, with (so a drift in machine load hits both sides alike), each preceded by
``torch._dynamo.reset()``; "without" is ``trt_compat.revert()``, which puts upstream's own objects back,
"with" is ``trt_compat.apply()``. A warm-up compile of each kind runs first and is not counted (the first compile
in a process pays for lazy imports). Each run is the compile of the first call plus that call, on CPU inputs, timed
as wall time and as the process's CPU time (on a shared machine the latter does not count waiting for a core). The
overhead is judged per pair (``paired_overhead``): the median of the pairs' relative differences, with a bootstrap
95 % interval, so that drift in the machine's load over the run cancels out.

What each patch does inside a compile, beyond the upstream code it wraps, is measured by
``benchmarks/bench_patch_cost.py`` (from the patches' undo logs, so every applied patch is covered).
"""

from __future__ import annotations

import argparse
import gc
import logging
import time

# Imported before torch_tensorrt, as deployments do: the post-import hook applies the patches.
import trt_compat  # noqa: E402
from benchmarks import _common
from tests.harness import activate  # noqa: E402

HARNESS_INFO = activate.prepare()
import torch  # noqa: E402
import torch_tensorrt  # noqa: E402,F401  (the hook applies trt_compat's patches now)

# The dryrun report (hundreds of lines per compile, at INFO) is not what is measured here.
logging.getLogger("torch_tensorrt").setLevel(logging.WARNING)

nn = torch.nn


class BasicBlock(nn.Module):
    def __init__(self, cin, cout, stride):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.down = None
        if stride != 1 or cin != cout:
            self.down = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x):
        out = torch.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return torch.relu(out + (x if self.down is None else self.down(x)))


class ResNetStyle(nn.Module):
    """ResNet-18 layout (stem with a 3x3/2 max pool, 4 stages of 2 basic blocks) at 1/8 of the width."""

    def __init__(self, width=8, classes=10):
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv2d(3, width, 7, 2, 3, bias=False), nn.BatchNorm2d(width), nn.ReLU(), nn.MaxPool2d(3, 2, 1)
        )
        blocks, cin = [], width
        for i, cout in enumerate((width, 2 * width, 4 * width, 8 * width)):
            blocks += [BasicBlock(cin, cout, 1 if i == 0 else 2), BasicBlock(cout, cout, 1)]
            cin = cout
        self.blocks = nn.Sequential(*blocks)
        self.head = nn.Linear(cin, classes)

    def forward(self, x):
        x = self.blocks(self.stem(x))
        return self.head(torch.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1))


class EncoderLayer(nn.Module):
    """Post-norm transformer encoder layer with the head split written as views, as most model code does."""

    def __init__(self, d_model, heads, ff):
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(d_model, 3 * d_model)
        self.proj = nn.Linear(d_model, d_model)
        self.norm1 = nn.LayerNorm(d_model)
        self.ff = nn.Sequential(nn.Linear(d_model, ff), nn.GELU(), nn.Linear(ff, d_model))
        self.norm2 = nn.LayerNorm(d_model)

    def forward(self, x):
        b, t, d = x.shape
        q, k, v = self.qkv(x).view(b, t, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        attn = torch.softmax(q @ k.transpose(-2, -1) / (d // self.heads) ** 0.5, dim=-1)
        y = (attn @ v).transpose(1, 2).reshape(b, t, d)
        x = self.norm1(x + self.proj(y))
        return self.norm2(x + self.ff(x))


class Encoder(nn.Module):
    def __init__(self, layers=12, d_model=64, heads=4, ff=128):
        super().__init__()
        self.layers = nn.Sequential(*(EncoderLayer(d_model, heads, ff) for _ in range(layers)))

    def forward(self, x):
        return self.layers(x)


MODELS = {
    "resnet": (lambda: ResNetStyle(), lambda: torch.randn(1, 3, 64, 64)),
    "transformer12": (lambda: Encoder(), lambda: torch.randn(1, 16, 64)),
}


def compile_once(model, x):
    torch._dynamo.reset()
    # The previous compile's garbage is collected here, not inside this one's timing.
    gc.collect()
    start, start_cpu = time.perf_counter(), time.process_time()
    compiled = torch.compile(model, backend="torch_tensorrt", options={"dryrun": True, "min_block_size": 1})
    with torch.no_grad():
        out = compiled(x)
    return time.perf_counter() - start, time.process_time() - start_cpu, out


def paired_overhead(with_runs, without_runs, resamples=2000):
    """Median over pairs of (with - without) / without, in %, and a 95 % bootstrap interval of that median.

    Pairs ran back to back, so a slow phase of the machine hits both runs of a pair: their difference is far
    steadier than the difference of two medians taken over the whole, drifting, run.
    """
    import random

    ratios = [(w - wo) / wo * 100 for w, wo in zip(with_runs, without_runs)]
    rng = random.Random(0)
    medians = sorted(_common.median([rng.choice(ratios) for _ in ratios]) for _ in range(resamples))
    return {
        "median_pct": round(_common.median(ratios), 2),
        "ci95_pct": [round(medians[int(0.025 * resamples)], 2), round(medians[int(0.975 * resamples) - 1], 2)],
        "pairs_pct": [round(r, 2) for r in ratios],
    }


def set_shim(on):
    report = trt_compat.apply() if on else trt_compat.revert()
    applied = sorted(p.name for p in report.patches if p.state == "applied")
    assert bool(applied) == on, (on, applied)
    return applied


def bench_model(name, pairs):
    make_model, make_input = MODELS[name]
    torch.manual_seed(0)
    model, x = make_model().eval(), make_input()
    with torch.no_grad():
        expected = model(x)
    runs = {True: [], False: []}
    cpu = {True: [], False: []}
    applied = None
    for on in (True, False):  # warm-up, not counted
        set_shim(on)
        compile_once(model, x)
    for i in range(pairs):
        for on in (True, False) if i % 2 == 0 else (False, True):
            patches = set_shim(on)
            applied = patches if on else applied
            seconds, cpu_seconds, out = compile_once(model, x)
            torch.testing.assert_close(out, expected)
            runs[on].append(seconds)
            cpu[on].append(cpu_seconds)
            print(
                f"  {name} {'with   ' if on else 'without'} trt_compat: {seconds:.3f} s, CPU {cpu_seconds:.3f} s",
                flush=True,
            )
    with_s, without_s = _common.median(runs[True]), _common.median(runs[False])
    with_cpu, without_cpu = _common.median(cpu[True]), _common.median(cpu[False])
    return {
        "model": name,
        "pairs": pairs,
        "patches_applied": applied,
        "with_s": with_s,
        "without_s": without_s,
        "with_runs_s": runs[True],
        "without_runs_s": runs[False],
        "overhead_pct": round((with_s - without_s) / without_s * 100, 2),
        "with_cpu_s": with_cpu,
        "without_cpu_s": without_cpu,
        "with_cpu_runs_s": cpu[True],
        "without_cpu_runs_s": cpu[False],
        "overhead_cpu_pct": round((with_cpu - without_cpu) / without_cpu * 100, 2),
        "paired_overhead_cpu": paired_overhead(cpu[True], cpu[False]),
        "paired_overhead_wall": paired_overhead(runs[True], runs[False]),
    }


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--pairs", type=int, default=6, help="with/without pairs per model")
    parser.add_argument("--models", default=",".join(MODELS))
    args = parser.parse_args(argv)
    rows = []
    for name in args.models.split(","):
        print(f"{name}:", flush=True)
        rows.append(bench_model(name, args.pairs))
        r = rows[-1]
        print(
            f"  median with {r['with_s']:.3f} s, without {r['without_s']:.3f} s: {r['overhead_pct']:+.2f} % "
            f"(CPU {r['with_cpu_s']:.3f} s vs {r['without_cpu_s']:.3f} s: {r['overhead_cpu_pct']:+.2f} %); "
            f"paired CPU overhead {r['paired_overhead_cpu']['median_pct']:+.2f} % "
            f"(95 % CI {r['paired_overhead_cpu']['ci95_pct']})",
            flush=True,
        )
    _common.write_results(f"compile-{HARNESS_INFO['wheel']}", {"release": HARNESS_INFO["wheel"], "models": rows})


if __name__ == "__main__":
    main()
