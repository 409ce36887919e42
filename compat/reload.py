"""The export path's last step, in a fresh process: load programs saved by ``torch_tensorrt.save`` and call them.

    python -m compat.reload DIRECTORY [--with-trt-compat]      (from the repository root, in a harness venv)

DIRECTORY holds, per model, ``<n>.pt2`` (the saved program) and ``<n>.calls.pt`` (the three calls' inputs); this
writes ``<n>.without.pt`` or ``<n>.with.pt``: for each call its outputs and its inputs' contents after the call (the
campaign compares them with eager), or the error. Without ``--with-trt-compat`` the process never imports trt_compat
(checked at the end: a deployment that loads the program without it); with it, trt_compat is imported first, as a
deployment would. The offline harness is activated either way (it only stands in for TensorRT), and the module is
loaded with ``torch_tensorrt.load``. The campaign's own code is not imported here beyond this file and the harness.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import List, Optional


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("directory", type=Path)
    parser.add_argument("--with-trt-compat", action="store_true")
    args = parser.parse_args(argv)
    side = "with" if args.with_trt_compat else "without"
    if args.with_trt_compat:
        import trt_compat  # noqa: F401  (first, as in a deployment)
    from tests.harness import activate

    activate.prepare()
    import torch
    import torch_tensorrt
    from torch.utils._pytree import tree_leaves

    if args.with_trt_compat:
        import trt_compat

        trt_compat.apply()
    for program in sorted(args.directory.glob("*.pt2")):
        stem = program.name[: -len(".pt2")]
        started = time.perf_counter()
        result: dict = {"calls": []}
        try:
            module = torch_tensorrt.load(str(program)).module()
            for inputs in torch.load(program.parent / f"{stem}.calls.pt"):
                with torch.no_grad():
                    output = module(*inputs)
                result["calls"].append(
                    {
                        "outputs": [leaf for leaf in tree_leaves(output)],
                        "inputs": [x for x in inputs if isinstance(x, torch.Tensor)],
                    }
                )
            result["buffers"] = dict(module.named_buffers())
        except Exception as exc:
            text = (str(exc).strip().splitlines() or [""])[0]
            result["error"] = f"{type(exc).__name__}: {text}"[:300]
        result["seconds"] = round(time.perf_counter() - started, 2)
        torch.save(result, program.parent / f"{stem}.{side}.pt")
        print(f"reload ({side} trt_compat) {stem}: {result.get('error', 'ran')}", flush=True)
    if not args.with_trt_compat and any(name == "trt_compat" or name.startswith("trt_compat.") for name in sys.modules):
        print("reload: trt_compat was imported in the process meant to run without it", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
