"""The upstream defects trt_compat fixes, reproduced on the real Torch-TensorRT compiler, with and without it.

Every "without trt_compat" test asserts what upstream does on this release *as measured* (table
UPSTREAM below), defect or not: when a new wheel or torch changes that behaviour the test fails and
the table (and maybe a patch's version range) needs a look, instead of a fix silently becoming moot
or a defect silently appearing. "With trt_compat" tests assert the correct result.

Upstream functions are always reached through their module at call time
(`partitioning.construct_submodule_inputs`, `lowering.post_lowering`), never bound at import, so
that what a test calls is whatever trt_compat has (or has not) put there.
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

import pytest

import activate  # tests/harness, put on sys.path by conftest

_REASON = activate.unavailable_reason()
if _REASON:
    pytest.skip(_REASON, allow_module_level=True)

import torch  # noqa: E402
from torch.fx.passes.fake_tensor_prop import FakeTensorProp  # noqa: E402
from torch._subclasses.fake_tensor import FakeTensorMode  # noqa: E402
from torch_tensorrt.dynamo import lowering, partitioning  # noqa: E402
from torch_tensorrt.dynamo.lowering.passes import _aten_lowering_pass as aten_passes  # noqa: E402

aten = torch.ops.aten
HARNESS = Path(activate.__file__).resolve().parent


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
    # regex of an upstream dryrun failure that has nothing to do with trt_compat's defects: the "with
    # trt_compat" dryrun tests then expect exactly that failure (xfail) instead of a compiled module
    dryrun_unusable: Optional[str] = None


TUPLE_VAL_ERROR = r"meta val for input node max_pool2d_default is of type : <class 'tuple'>"
MISSING_META_ERROR = r"Input max_pool2d_default does not contain metadata"
# 2.10.0: with dryrun the blocks stay GraphModules, and compile_module then calls a TensorRT-module
# method on the block that produces the graph's output.
UNOWNED_OUTPUT_ERROR = r"'GraphModule' object has no attribute 'set_output_tensors_as_unowned'"

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
    "2.10.0": Upstream(  # dryrun itself breaks when a TensorRT block feeds the graph output
        view_pass=False,
        view_mismatches=0,
        pool_meta_after_lowering="tensor",
        registered_stale_pass_survives=False,
        boundary_error=None,
        dryrun_ceil_pool_error=UNOWNED_OUTPUT_ERROR,
        dryrun_indices_ok=False,
        dryrun_unusable=UNOWNED_OUTPUT_ERROR,
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


@pytest.fixture
def expect(release_row):
    if release_row.line not in UPSTREAM:
        pytest.skip(f"no measured upstream behaviour for torch-tensorrt {release_row.line} yet: "
                    "add a row to UPSTREAM in tests/integration/test_defects.py")
    return UPSTREAM[release_row.line]


# --------------------------------------------------------------------------------------------- models


class ThreeViews(torch.nn.Module):
    """Three views of one input, consumed in reverse order: the last view's first user comes first."""

    def forward(self, x):  # x: (2, 3, 4)
        a = x.view(6, 4)
        b = x.view(2, 12)
        c = x.view(24)
        return c + 1, b * 2, a - 1


class ConvCeilPool(torch.nn.Module):
    """#3185: ceil_mode max pooling between two convolutions."""

    def __init__(self):
        super().__init__()
        self.conv1 = torch.nn.Conv2d(3, 8, 3, padding=1)
        self.pool = torch.nn.MaxPool2d(3, 2, ceil_mode=True)
        self.conv2 = torch.nn.Conv2d(8, 4, 3, padding=1)

    def forward(self, x):
        return torch.relu(self.conv2(self.pool(self.conv1(x))))


class PoolIndicesViews(torch.nn.Module):
    """Pooling whose indices are used (unpooling), with views in between: tuples inside the graph."""

    def __init__(self):
        super().__init__()
        self.conv1 = torch.nn.Conv2d(3, 8, 3, padding=1)
        self.pool = torch.nn.MaxPool2d(2, return_indices=True)
        self.unpool = torch.nn.MaxUnpool2d(2)
        self.conv2 = torch.nn.Conv2d(8, 4, 3, padding=1)

    def forward(self, x):
        y = torch.relu(self.conv1(x))
        y, indices = self.pool(y)
        n, c, h, w = y.shape
        y = y.view(n, c, h * w).relu().view(n, c, h, w)
        y = self.unpool(y, indices)
        return self.conv2(y).view(n, -1)


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
VIEW_LIKE = tuple(op for op in (aten.view.default, aten.reshape.default,
                                getattr(getattr(aten, "_reshape_copy", None), "default", None)) if op is not None)


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
    return {old.name: tuple(new.meta["val"].shape) for old, new in copies.items()
            if isinstance(new.meta.get("val"), torch.Tensor)}


def max_pool_nodes(gm):
    return [n for n in gm.graph.nodes if n.op == "call_function" and n.target == aten.max_pool2d.default]


def make_pool_meta_stale(gm, *_):
    """Give each fused max_pool2d node the (values, indices) val 2.2-2.4 leave behind (#3185).

    Also usable as a lowering pass (hence the ignored second argument: sample inputs or settings).
    """
    for node in max_pool_nodes(gm):
        values = node.meta.get("val")  # 2.3 leaves none at all
        if values is not None and not isinstance(values, tuple):
            node.meta["val"] = (values, values.new_empty(values.shape, dtype=torch.int64))
    return gm


# The pool must sit on a block boundary for #3185 to show; keep it in PyTorch even if a release's
# converter starts accepting ceil_mode (none of 2.4.0 / 2.14.0 does today).
POOL_IN_TORCH = {"torch.ops.aten.max_pool2d.default"}


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


# --------------------------------------------------------------------------- view_to_reshape (#3221)


def test_view_to_reshape_pass_presence(upstream, expect):
    names = post_lowering_pass_names()
    assert ("view_to_reshape" in names) == expect.view_pass, names


def test_view_to_reshape_without_trt_compat(upstream, expect, release_row):
    x = view_input()
    gm = export_and_lower(make_model(ThreeViews), x, release_row)
    assert len(view_nodes(gm)) == 3
    if expect.view_pass:
        assert all(n.target == aten.reshape.default for n in view_nodes(gm)), gm.graph
    mismatches = view_mismatches(gm)
    assert len(mismatches) == expect.view_mismatches, mismatches


def test_view_to_reshape_with_trt_compat(shim, expect, release_row):
    x = view_input()
    gm = export_and_lower(make_model(ThreeViews), x, release_row)
    nodes = view_nodes(gm)
    assert len(nodes) == 3
    if expect.view_pass:
        # The fix must keep doing what the pass is for: no aten.view left for TensorRT.
        assert all(n.target == aten.reshape.default for n in nodes), gm.graph
    assert view_mismatches(gm) == []
    recomputed = fake_prop_shapes(gm, x)
    for node in nodes:
        assert tuple(node.meta["val"].shape) == recomputed[node.name], node.name
    torch.testing.assert_close(gm(x), make_model(ThreeViews)(x))


# ---------------------------------------------------------------- tuple meta at a partition boundary (#3185)


def test_3185_pool_meta_after_upstream_lowering(upstream, expect, release_row):
    gm = export_and_lower(make_model(ConvCeilPool), image_input(), release_row)
    pools = max_pool_nodes(gm)
    assert len(pools) == 1, gm.graph
    val = pools[0].meta.get("val")
    kind = "missing" if val is None else "tuple" if isinstance(val, tuple) else "tensor"
    assert kind == expect.pool_meta_after_lowering


def test_3185_user_lowering_pass_with_stale_meta(upstream, expect, release_row):
    """A registered lowering pass that leaves a tuple val: kept (2.4) or recomputed (2.14)."""
    aten_passes._aten_lowering_pass(make_pool_meta_stale)
    try:
        gm = export_and_lower(make_model(ConvCeilPool), image_input(), release_row)
    finally:
        index = next(i for i, p in enumerate(activate.post_lowering_manager().passes)
                     if p is make_pool_meta_stale)
        aten_passes._remove_lowering_pass(index=index)
    assert make_pool_meta_stale not in activate.post_lowering_manager().passes
    (pool,) = max_pool_nodes(gm)
    assert isinstance(pool.meta.get("val"), tuple) == expect.registered_stale_pass_survives


def _lowered_pool_graph(release_row, expect):
    gm = export_and_lower(make_model(ConvCeilPool), image_input(), release_row)
    if expect.pool_meta_after_lowering == "tensor":
        # Upstream lowering is fine here and heals stale vals written by registered passes (see
        # above), so reach the unchanged tuple check in construct_submodule_inputs by hand.
        make_pool_meta_stale(gm)
    return gm


def requires_construct_submodule_inputs():
    if not hasattr(partitioning, "construct_submodule_inputs"):
        pytest.skip("no construct_submodule_inputs on this release (2.2.0 runs the module on sample inputs to "
                    "find each block's inputs, so no metadata reaches them)")


def test_3185_partition_inputs_without_trt_compat(upstream, expect, release_row):
    requires_construct_submodule_inputs()
    partitioned = partition(_lowered_pool_graph(release_row, expect))
    blocks = acc_blocks(partitioned)
    assert len(blocks) == 2, partitioned.graph  # conv1 | pool (PyTorch) | conv2 + relu
    first, after_pool = blocks
    partitioning.construct_submodule_inputs(first[1])  # the block before the pool is fine
    # 2.3's empty meta dict trips an assertion; every other release's tuple val a ValueError.
    with pytest.raises((ValueError, AssertionError), match=expect.boundary_error or re.escape(TUPLE_VAL_ERROR)):
        partitioning.construct_submodule_inputs(after_pool[1])


def test_3185_partition_inputs_with_trt_compat(shim, expect, release_row):
    requires_construct_submodule_inputs()
    x = image_input()
    partitioned = partition(_lowered_pool_graph(release_row, expect))
    blocks = acc_blocks(partitioned)
    assert len(blocks) >= 2, partitioned.graph
    built = {name: partitioning.construct_submodule_inputs(block) for name, block in blocks}
    flowing = tensors_flowing_into_blocks(partitioned, x)
    assert set(flowing) == set(built)
    for name in built:
        assert describe_inputs(built[name]) == describe_tensors(flowing[name]), name
    torch.testing.assert_close(partitioned(x), make_model(ConvCeilPool)(x))


# ------------------------------------------------------------------------------ dryrun torch.compile


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
    compiled = torch.compile(model, backend="torch_tensorrt",
                             options={"dryrun": True, "min_block_size": 1, "pass_through_build_failures": True})
    with torch.no_grad():
        out = compiled(x)
    assert len(produced) == 1, "torch_tensorrt's compile_module did not run exactly once"
    return out, produced[0]


def test_dryrun_ceil_pool_without_trt_compat(upstream, expect, dryrun_on_cpu, fresh_dynamo, monkeypatch):
    model, x = make_model(ConvCeilPool), image_input()
    if expect.dryrun_ceil_pool_error is None:
        out, partitioned = dryrun_compile(model, x, monkeypatch)
        assert acc_blocks(partitioned)
        torch.testing.assert_close(out, model(x))
        return
    with pytest.raises(torch._dynamo.exc.BackendCompilerFailed) as failed:
        dryrun_compile(model, x, monkeypatch)
    # torch.compile wraps whatever the backend raised; the upstream error is the inner exception.
    inner = failed.value.inner_exception
    assert re.search(expect.dryrun_ceil_pool_error, f"{type(inner).__name__}: {inner}"), repr(inner)


def dryrun_with_trt_compat(model, x, monkeypatch, expect):
    """dryrun_compile, or on a release whose dryrun upstream cannot finish at all, that failure and an xfail."""
    if expect.dryrun_unusable is None:
        return dryrun_compile(model, x, monkeypatch)
    with pytest.raises(torch._dynamo.exc.BackendCompilerFailed, match=expect.dryrun_unusable):
        dryrun_compile(model, x, monkeypatch)
    pytest.xfail(f"upstream dryrun fails on this release with or without trt_compat: {expect.dryrun_unusable}")


def test_dryrun_ceil_pool_with_trt_compat(shim, expect, dryrun_on_cpu, fresh_dynamo, monkeypatch):
    model, x = make_model(ConvCeilPool), image_input()
    out, partitioned = dryrun_with_trt_compat(model, x, monkeypatch, expect)
    assert acc_blocks(partitioned)
    torch.testing.assert_close(out, model(x))


def test_dryrun_pool_indices_without_trt_compat(upstream, expect, dryrun_on_cpu, fresh_dynamo, monkeypatch):
    model, x = make_model(PoolIndicesViews), image_input()
    if not expect.dryrun_indices_ok:
        with pytest.raises(torch._dynamo.exc.BackendCompilerFailed):
            dryrun_compile(model, x, monkeypatch)
        return
    out, partitioned = dryrun_compile(model, x, monkeypatch)
    assert acc_blocks(partitioned)
    torch.testing.assert_close(out, model(x))


def test_dryrun_pool_indices_with_trt_compat(shim, expect, dryrun_on_cpu, fresh_dynamo, monkeypatch):
    model, x = make_model(PoolIndicesViews), image_input()
    out, partitioned = dryrun_with_trt_compat(model, x, monkeypatch, expect)
    assert acc_blocks(partitioned)
    torch.testing.assert_close(out, model(x))


# ------------------------------------------------------------------- the real activation path (subprocess)

ACTIVATION_SCRIPT = textwrap.dedent("""
    import json, sys
    sys.path.insert(0, {harness!r})
    import trt_compat
    torch_before = "torch" in sys.modules
    import activate
    activate.prepare()
    import torch_tensorrt
    print(json.dumps({{"torch_imported_by_trt_compat": torch_before, "report": trt_compat.report_dict()}}))
""")


def run_activation(extra_env=None):
    """A fresh interpreter doing what a deployment does: `import trt_compat` first, then torch_tensorrt."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRT_COMPAT_")}
    env.update(extra_env or {})
    done = subprocess.run([sys.executable, "-c", ACTIVATION_SCRIPT.format(harness=str(HARNESS))],
                          env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-4000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["torch_imported_by_trt_compat"] is False, "`import trt_compat` must not import torch"
    return result["report"]


def states(report):
    return {p["name"]: p["state"] for p in report["patches"]}


# Each patch's documented range (README "What it fixes"), stated here independently of the patch modules
# so that a patch whose own range drifts fails: (first release that needs it, first that no longer does).
PATCH_RANGES = {
    "view_to_reshape_metadata": ((2, 2, 0), (2, 6, 0)),
    "tuple_partition_inputs": ((2, 3, 0), None),  # 2.2.0 has no construct_submodule_inputs
    "tuple_pooling": ((2, 2, 0), None),
}


def expected_patch_states(release):
    return {name: "applied" if first <= release and (fixed is None or release < fixed) else "not_needed"
            for name, (first, fixed) in PATCH_RANGES.items()}


def test_activation_path_applies_the_patches_the_release_needs(release, harness_info):
    report = run_activation()
    assert report["versions"]["torch_tensorrt"] == harness_info["wheel"]
    assert states(report) == expected_patch_states(release), report


def test_activation_path_honours_disable_all(release):
    found = states(run_activation({"TRT_COMPAT_DISABLE": "all"}))
    assert found == {name: "disabled" for name in PATCH_RANGES}, found
