"""What the integration tests share: what unpatched upstream does per release (UPSTREAM), and small helpers
to lower, partition and dryrun-compile models on the real Torch-TensorRT, and to run the activation path in a
fresh interpreter.

Upstream functions are always reached through their module at call time (`partitioning.construct_submodule_inputs`,
`lowering.post_lowering`), never bound at import, so that what a test calls is whatever trt_compat has (or has not)
put there. Imported only where torch_tensorrt is installed (the integration suites).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import torch
from torch._subclasses.fake_tensor import FakeTensorMode
from torch.fx.passes.fake_tensor_prop import FakeTensorProp
from torch_tensorrt.dynamo import lowering, partitioning
from trt_compat.patches.tuple_partition_inputs import POOL_IN_TORCH, make_pool_meta_stale  # noqa: F401  (re-exported)

from tests.harness import activate

aten = torch.ops.aten
REPO = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class Upstream:
    """What unpatched upstream does on one release, measured on this harness."""

    view_pass: bool  # view_to_reshape is in the post-lowering pass list
    view_mismatches: int  # view/reshape nodes whose meta['val'] disagrees with their args or is missing
    pool_meta_after_lowering: str  # the fused max_pool2d's val: "tuple" (stale), "missing" or "tensor"
    registered_stale_pass_survives: bool  # post_lowering keeps a stale val that a user pass wrote
    # regex of what construct_submodule_inputs raises for the block after the ceil_mode pool; None: fine
    boundary_error: Optional[str]
    dryrun_ceil_pool_error: Optional[str]  # regex of the error a dryrun compile dies of; None: compiles
    dryrun_indices_ok: bool  # the pool-indices + views model dryrun-compiles (True where dryrun is absent)


TUPLE_VAL_ERROR = r"meta val for input node max_pool2d_default is of type : <class 'tuple'>"
MISSING_META_ERROR = r"Input max_pool2d_default does not contain metadata"

UPSTREAM = {
    "2.2.0": Upstream(  # view_to_reshape leaves all three reshapes without meta['val']; no dryrun
        view_pass=True,
        view_mismatches=3,
        pool_meta_after_lowering="missing",
        registered_stale_pass_survives=False,
        boundary_error=None,
        dryrun_ceil_pool_error=None,
        dryrun_indices_ok=True,
    ),
    "2.3.0": Upstream(
        view_pass=True,
        view_mismatches=2,
        pool_meta_after_lowering="missing",
        registered_stale_pass_survives=False,
        boundary_error=MISSING_META_ERROR,
        dryrun_ceil_pool_error=MISSING_META_ERROR,
        dryrun_indices_ok=True,
    ),
    "2.4.0": Upstream(
        view_pass=True,
        view_mismatches=2,  # the first and the last reshape trade metadata
        pool_meta_after_lowering="tuple",
        registered_stale_pass_survives=True,
        boundary_error=re.escape(TUPLE_VAL_ERROR),
        dryrun_ceil_pool_error=re.escape(TUPLE_VAL_ERROR),
        dryrun_indices_ok=True,
    ),
    "2.5.0": Upstream(
        view_pass=True,
        view_mismatches=2,
        pool_meta_after_lowering="tensor",  # 2.5 gives the fused node its own val
        registered_stale_pass_survives=True,
        boundary_error=None,
        dryrun_ceil_pool_error=None,
        dryrun_indices_ok=True,
    ),
    "2.6.0": Upstream(
        view_pass=True,
        view_mismatches=0,
        pool_meta_after_lowering="tensor",
        registered_stale_pass_survives=True,
        boundary_error=None,
        dryrun_ceil_pool_error=None,
        dryrun_indices_ok=True,
    ),
    "2.6.1": Upstream(
        view_pass=True,
        view_mismatches=0,
        pool_meta_after_lowering="tensor",
        registered_stale_pass_survives=True,
        boundary_error=None,
        dryrun_ceil_pool_error=None,
        dryrun_indices_ok=True,
    ),
    "2.7.0": Upstream(
        view_pass=False,
        view_mismatches=0,
        pool_meta_after_lowering="tensor",
        registered_stale_pass_survives=True,
        boundary_error=None,
        dryrun_ceil_pool_error=None,
        dryrun_indices_ok=True,
    ),
    "2.8.0": Upstream(
        view_pass=False,
        view_mismatches=0,
        pool_meta_after_lowering="tensor",
        registered_stale_pass_survives=True,
        boundary_error=None,
        dryrun_ceil_pool_error=None,
        dryrun_indices_ok=True,
    ),
    "2.9.0": Upstream(
        view_pass=False,
        view_mismatches=0,
        pool_meta_after_lowering="tensor",
        registered_stale_pass_survives=True,
        boundary_error=None,
        dryrun_ceil_pool_error=None,
        dryrun_indices_ok=True,
    ),
    "2.10.0": Upstream(
        view_pass=False,
        view_mismatches=0,
        pool_meta_after_lowering="tensor",
        registered_stale_pass_survives=False,
        boundary_error=None,
        dryrun_ceil_pool_error=None,
        dryrun_indices_ok=True,
    ),
    "2.11.0": Upstream(
        view_pass=False,
        view_mismatches=0,
        pool_meta_after_lowering="tensor",
        registered_stale_pass_survives=False,
        boundary_error=None,
        dryrun_ceil_pool_error=None,
        dryrun_indices_ok=True,
    ),
    "2.12.0": Upstream(
        view_pass=False,
        view_mismatches=0,
        pool_meta_after_lowering="tensor",
        registered_stale_pass_survives=False,
        boundary_error=None,
        dryrun_ceil_pool_error=None,
        dryrun_indices_ok=True,
    ),
    "2.12.1": Upstream(
        view_pass=False,
        view_mismatches=0,
        pool_meta_after_lowering="tensor",
        registered_stale_pass_survives=False,
        boundary_error=None,
        dryrun_ceil_pool_error=None,
        dryrun_indices_ok=True,
    ),
    "2.13.0": Upstream(
        view_pass=False,
        view_mismatches=0,
        pool_meta_after_lowering="tensor",
        registered_stale_pass_survives=False,
        boundary_error=None,
        dryrun_ceil_pool_error=None,
        dryrun_indices_ok=True,
    ),
    "2.14.0": Upstream(
        view_pass=False,
        view_mismatches=0,
        pool_meta_after_lowering="tensor",
        # post_lowering ends with FakeTensorUpdater.incremental_update, which recomputes changed vals.
        registered_stale_pass_survives=False,
        boundary_error=None,
        dryrun_ceil_pool_error=None,
        dryrun_indices_ok=True,
    ),
}


def view_input():
    return torch.randn(2, 3, 4)


def image_input():
    # 16x16 through a 3/2 pool: 8x8 with ceil_mode, 7x7 without, so a wrong shape shows.
    return torch.randn(1, 3, 16, 16)


def make_model(cls):
    torch.manual_seed(0)
    return cls().eval()


# -------------------------------------------------------------------------------------------- helpers


def export_and_lower(model, x, release_row):
    """The path torch_tensorrt.dynamo.compile takes: export, decompose, unlift, post_lowering."""
    ep = torch.export.export(model, (x,))
    ep = ep.run_decompositions(lowering.get_decompositions(False))
    gm = ep.module()
    signature = release_row.post_lowering_signature
    if signature == "sample_inputs":
        # 2.2.0 calls it apply_lowering_passes
        post_lowering = getattr(lowering, "post_lowering", None) or lowering.apply_lowering_passes
        return post_lowering(gm, [x])
    if signature == "none":
        return lowering.post_lowering(gm)
    from torch_tensorrt.dynamo import CompilationSettings

    return lowering.post_lowering(gm, CompilationSettings())


def post_lowering_pass_names():
    return [getattr(p, "__name__", repr(p)) for p in activate.post_lowering_manager().passes]


# 2.14's decomposition table turns aten.view into aten._reshape_copy before lowering ever runs.
VIEW_LIKE = tuple(
    op
    for op in (aten.view.default, aten.reshape.default, getattr(getattr(aten, "_reshape_copy", None), "default", None))
    if op is not None
)


def view_nodes(gm):
    """Nodes computing one of the model's views, whatever op decomposition and lowering made of them."""
    return [n for n in gm.graph.nodes if n.op == "call_function" and n.target in VIEW_LIKE]


def view_mismatches(gm):
    """View/reshape nodes whose recorded shape is not what their own arguments produce."""
    bad = []
    for node in view_nodes(gm):
        source, shape = node.args[0], node.args[1]
        wanted = torch.empty(source.meta["val"].shape, device="meta").reshape(shape).shape
        if "val" not in node.meta:  # 2.2.0's view_to_reshape drops it
            bad.append(f"{node.name}: args give {tuple(wanted)}, no meta['val']")
            continue
        recorded = node.meta["val"].shape
        if tuple(wanted) != tuple(recorded):
            bad.append(f"{node.name}: args give {tuple(wanted)}, meta['val'] says {tuple(recorded)}")
    return bad


def fake_prop_shapes(gm, *inputs):
    """Node name -> shape recomputed by FakeTensorProp on a copy (the original meta stays as it is)."""
    graph = torch.fx.Graph()
    copies = {}
    graph.output(graph.graph_copy(gm.graph, copies))
    clone = torch.fx.GraphModule(gm, graph)
    FakeTensorProp(clone, FakeTensorMode(allow_non_fake_inputs=True)).propagate(*inputs)
    return {
        old.name: tuple(new.meta["val"].shape)
        for old, new in copies.items()
        if isinstance(new.meta.get("val"), torch.Tensor)
    }


def max_pool_nodes(gm):
    return [n for n in gm.graph.nodes if n.op == "call_function" and n.target == aten.max_pool2d.default]


def fast_partition(gm, **kwargs):
    """The partitioned module (2.3+ also return the supported-ops record, 2.2.0 only the module)."""
    result = partitioning.fast_partition(gm, **kwargs)
    return result[0] if isinstance(result, tuple) else result


def partition(gm):
    return fast_partition(gm, min_block_size=1, torch_executed_ops=POOL_IN_TORCH)


def acc_blocks(partitioned):
    return [(name, mod) for name, mod in partitioned.named_children() if "_run_on_acc" in name]


def tensors_flowing_into_blocks(partitioned, x):
    """Run the partitioned module eagerly on the CPU and record each accelerated block's real inputs."""
    seen = {}
    handles = []
    for name, block in acc_blocks(partitioned):

        def record(_module, args, name=name):
            seen[name] = [a for a in args if isinstance(a, torch.Tensor)]

        handles.append(block.register_forward_pre_hook(record))
    try:
        with torch.no_grad():
            partitioned(x)
    finally:
        for handle in handles:
            handle.remove()
    return seen


def describe_inputs(inputs):
    return [(tuple(i.shape), i.dtype.to(torch.dtype)) for i in inputs]


def describe_tensors(tensors):
    return [(tuple(t.shape), t.dtype) for t in tensors]


def dryrun_compile(model, x, monkeypatch):
    """torch.compile with dryrun; returns (output, partitioned module the backend produced).

    pass_through_build_failures=True: otherwise the backend answers AssertionError/RuntimeError with
    a silent fallback to eager, and a broken compile would look like a passing one. The spy on
    compile_module proves the partitioned path really ran.
    """
    from torch_tensorrt.dynamo.backend import backends

    produced = []
    original = backends.compile_module

    def spy(*args, **kwargs):
        result = original(*args, **kwargs)
        produced.append(result)
        return result

    monkeypatch.setattr(backends, "compile_module", spy)
    compiled = torch.compile(
        model,
        backend="torch_tensorrt",
        options={"dryrun": True, "min_block_size": 1, "pass_through_build_failures": True},
    )
    with torch.no_grad():
        out = compiled(x)
    assert len(produced) == 1, "torch_tensorrt's compile_module did not run exactly once"
    return out, produced[0]


ACTIVATION_SCRIPT = textwrap.dedent("""
    import json, sys
    sys.path.insert(0, {repo!r})
    import trt_compat
    torch_before = "torch" in sys.modules
    from tests.harness import activate
    activate.prepare()
    import torch_tensorrt
    print(json.dumps({{"torch_imported_by_trt_compat": torch_before, "report": trt_compat.report_dict()}}))
""")


def run_activation(extra_env=None):
    """A fresh interpreter doing what a deployment does: `import trt_compat` first, then torch_tensorrt."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRT_COMPAT_")}
    env.update(extra_env or {})
    done = subprocess.run(
        [sys.executable, "-c", ACTIVATION_SCRIPT.format(repo=str(REPO))],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["torch_imported_by_trt_compat"] is False, "`import trt_compat` must not import torch"
    return result["report"]


def states(report):
    return {p["name"]: p["state"] for p in report["patches"]}


def expected_patch_states(stated_ranges, release):
    """What the report must say of each patch on ``release``, from the independently stated ranges."""
    return {
        name: "applied" if first <= release and (fixed is None or release < fixed) else "not_needed"
        for name, (first, fixed) in stated_ranges.items()
    }


def stated_ranges() -> dict:
    """Every patch's range as its integration tests state it: ``STATED_RANGES`` (a dict by patch name) or
    ``STATED_RANGE`` (for the patch ``test_<patch>.py`` is named after) in tests/integration/test_*.py.

    Read from the files' source, not by importing them: test modules are not libraries, and a run that selects
    one test file still knows every patch's stated range.
    """
    import ast

    ranges = {}
    for path in sorted((REPO / "tests" / "integration").glob("test_*.py")):
        for node in ast.parse(path.read_text()).body:
            if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
                if node.targets[0].id == "STATED_RANGES":
                    ranges.update(ast.literal_eval(node.value))
                elif node.targets[0].id == "STATED_RANGE":
                    ranges[path.stem[len("test_") :]] = ast.literal_eval(node.value)
    return ranges
