"""One ``trt_compat.revert()`` + ``trt_compat.apply()`` cycle on the real Torch-TensorRT (offline harness).

    .venvs/tt-2.14.0/bin/python -m benchmarks.bench_cycle --cycles 200     # writes results/cycle-<release>.json

Wall time per cycle (min / median / max) after one warm-up cycle; what a cycle costs is trt_compat's own
bookkeeping (reading the installed versions, deciding, undoing and redoing each patch's recorded changes).
"""

from __future__ import annotations

import argparse
import sys
import time

from benchmarks import _common
from tests.harness import activate


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--cycles", type=int, default=200)
    args = parser.parse_args(argv)
    info = activate.prepare()
    import torch_tensorrt  # noqa: F401

    import trt_compat

    trt_compat.revert()
    trt_compat.apply()
    seconds = []
    for _ in range(args.cycles):
        started = time.perf_counter()
        trt_compat.revert()
        trt_compat.apply()
        seconds.append(time.perf_counter() - started)
    seconds.sort()
    row = {
        "cycles": args.cycles,
        "min_ms": round(seconds[0] * 1e3, 3),
        "median_ms": round(_common.median(seconds) * 1e3, 3),
        "max_ms": round(seconds[-1] * 1e3, 3),
        "applied": [p.name for p in trt_compat.report().patches if p.state == "applied"],
    }
    print(row)
    _common.write_results(f"cycle-{info['wheel']}", {"release": info["wheel"], **row})
    return 0


if __name__ == "__main__":
    sys.exit(main())
