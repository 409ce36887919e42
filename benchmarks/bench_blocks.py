"""TensorRT block counts with and without trt_compat, at two ``min_block_size`` values, on the real Torch-TensorRT.

    .venvs/tt-2.5.0/bin/python  -m benchmarks.bench_blocks     # writes results/blocks-2.5.0.json
    .venvs/tt-2.14.0/bin/python -m benchmarks.bench_blocks     # writes results/blocks-2.14.0.json

Every model of ``benchmarks/zoo.py`` and its small pool cases is compiled by ``torch.compile(backend=
"torch_tensorrt", options={"dryrun": True, "min_block_size": N})`` for N = 1 and 5 (Torch-TensorRT's default), once
with every patch this release needs and once with them reverted. Counted over every Dynamo graph of the model: the
accelerated (TensorRT) blocks Torch-TensorRT's partitioning makes, and the call nodes of each. In dryrun no engine
is built: whether one more block of a few nodes runs faster or slower than those nodes in PyTorch needs a GPU.
"""

from __future__ import annotations

import argparse
from typing import Any, Dict

from benchmarks import _common, zoo
from benchmarks.bench_patch_cost import HARNESS_INFO, BlockCounter, compile_once, set_patches

MIN_BLOCK_SIZES = (1, 5)


def count(build, min_block_size: int, on: bool) -> Dict[str, Any]:
    set_patches(on)
    counter = BlockCounter()
    with counter.watching():
        compile_once(*build(), options={"dryrun": True, "min_block_size": min_block_size})
    return {"blocks": counter.blocks, "block_sizes": counter.block_sizes}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--models", default=",".join([*zoo.SMALL_CASES, *zoo.MODELS]))
    args = parser.parse_args(argv)
    cases = {**zoo.MODELS, **zoo.SMALL_CASES}
    rows = []
    for name in args.models.split(","):
        row = {"model": name, "what": cases[name].__doc__ if name in zoo.SMALL_CASES else None}
        for size in MIN_BLOCK_SIZES:
            for on in (False, True):
                row[f"min_block_size_{size}_{'with' if on else 'without'}"] = count(cases[name], size, on)
        rows.append(row)
        print(
            name,
            "  ".join(
                f"min_block_size={size}: {row[f'min_block_size_{size}_without']['blocks']} -> "
                f"{row[f'min_block_size_{size}_with']['blocks']}"
                for size in MIN_BLOCK_SIZES
            ),
            flush=True,
        )
        # After every case, so that a run cut short keeps what it measured.
        _common.write_results(f"blocks-{HARNESS_INFO['wheel']}", {"release": HARNESS_INFO["wheel"], "cases": rows})
    set_patches(True)


if __name__ == "__main__":
    main()
