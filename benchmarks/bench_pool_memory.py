"""Memory of tuple_pooling's TensorRT-convertible indices against eager, across kernel sizes, with and without the
gather budget.

    .venvs/unit/bin/python -m benchmarks.bench_pool_memory          # writes results/pool-memory.json

One max pool with used indices, stride 1, "same" padding, on a (1, 8, 128, 128) float32 input, for kernels 3, 7, 15
and 31. Each configuration runs in its own interpreter (peak RSS only grows): the rewrite's peak RSS increase, the
constant index tables it registers, the peak RSS increase of running the rewritten graph once in eager PyTorch,
and eager ATen's own output, all in MiB. "budget off" is the decomposition as it was before the budget existed.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

from benchmarks import _common

KERNELS = (3, 7, 15, 31)
SHAPE = (1, 8, 128, 128)

CHILD = """
import json, operator, resource, sys
import torch
from torch._subclasses.fake_tensor import FakeTensorMode
from torch.fx.passes.fake_tensor_prop import FakeTensorProp
from trt_compat.patches import tuple_pooling as tp

kernel, budget = int(sys.argv[1]), sys.argv[2] == "on"
if not budget:
    tp.MAX_GATHER_RATIO = tp.MAX_TABLE_BYTES = float("inf")
shape = {shape}
args = ([kernel, kernel], [1, 1], [kernel // 2, kernel // 2], [1, 1], False)

def peak():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # MiB (Linux reports KiB)

graph = torch.fx.Graph()
x = graph.placeholder("x")
pool = graph.call_function(torch.ops.aten.max_pool2d_with_indices.default, (x, *args))
graph.output(tuple(graph.call_function(operator.getitem, (pool, i)) for i in (0, 1)))
gm = torch.fx.GraphModule(torch.nn.Module(), graph)
example = torch.randn(shape)
FakeTensorProp(gm, FakeTensorMode()).propagate(example)
with torch.no_grad():
    eager = torch.ops.aten.max_pool2d_with_indices.default(example, *args)
start = peak()
tp.decompose_tuple_pooling(gm, "tensorrt")
rewrite = peak() - start
constants = sum(b.numel() * b.element_size() for name, b in gm.named_buffers() if "pool_window" in name)
form = "torch op" if any(n.target is tp.MAX_POOL_INDICES for n in gm.graph.nodes) else "tensorrt ops"
before_run = peak()
with torch.no_grad():
    values, indices = gm(example)
run = peak() - before_run
assert torch.equal(indices, eager[1])
print(json.dumps({{"kernel": kernel, "budget": "on" if budget else "off", "form": form,
                  "rewrite_peak_rss_mib": round(rewrite, 1), "constant_mib": round(constants / 2**20, 1),
                  "run_peak_rss_mib": round(run, 1),
                  "eager_output_mib": round(sum(t.numel() * t.element_size() for t in eager) / 2**20, 2)}}))
"""


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--out", default="pool-memory")
    args = parser.parse_args(argv)
    rows = []
    for budget in ("off", "on"):
        for kernel in KERNELS:
            done = subprocess.run(
                [sys.executable, "-c", CHILD.format(shape=SHAPE), str(kernel), budget],
                capture_output=True,
                text=True,
                cwd=_common.REPO,
                timeout=1800,
            )
            if done.returncode != 0:
                raise SystemExit(done.stderr[-3000:])
            rows.append(json.loads(done.stdout.strip().splitlines()[-1]))
            print(rows[-1], flush=True)
    _common.write_results(args.out, {"shape": list(SHAPE), "rows": rows})
    return 0


if __name__ == "__main__":
    sys.exit(main())
