"""The upstream defects trt_compat fixes, reproduced on the real Torch-TensorRT compiler, with and without it.

Every "without trt_compat" test asserts what upstream does on this release *as measured* (UPSTREAM, in
tests/helpers/upstream.py), defect or not: when a new wheel or torch changes that behaviour the test fails and
the table (and maybe a patch's version range) needs a look, instead of a fix silently becoming moot or a defect
silently appearing. "With trt_compat" tests assert the correct result.
"""

from __future__ import annotations

import re

import pytest

from tests.harness import activate

_REASON = activate.unavailable_reason()
if _REASON:
    pytest.skip(_REASON, allow_module_level=True)

import torch  # noqa: E402
from torch_tensorrt.dynamo import partitioning  # noqa: E402
from torch_tensorrt.dynamo.lowering.passes import _aten_lowering_pass as aten_passes  # noqa: E402
from trt_compat.patches.tuple_partition_inputs import ConvCeilPool  # noqa: E402
from trt_compat.patches.tuple_pooling import PoolIndicesViews  # noqa: E402
from trt_compat.patches.view_to_reshape_metadata import ThreeViews  # noqa: E402

from tests.helpers.upstream import (  # noqa: E402
    TUPLE_VAL_ERROR,
    UPSTREAM,
    acc_blocks,
    describe_inputs,
    describe_tensors,
    dryrun_compile,
    expected_patch_states,
    export_and_lower,
    fake_prop_shapes,
    image_input,
    make_model,
    make_pool_meta_stale,
    max_pool_nodes,
    partition,
    post_lowering_pass_names,
    run_activation,
    states,
    tensors_flowing_into_blocks,
    view_input,
    view_mismatches,
    view_nodes,
)

aten = torch.ops.aten


@pytest.fixture
def expect(release_row):
    assert release_row.line in UPSTREAM, (
        f"add a row for torch-tensorrt {release_row.line} to UPSTREAM in tests/helpers/upstream.py: what unpatched "
        "upstream does there, measured (tests/integration/test_matrix.py prints it)"
    )
    return UPSTREAM[release_row.line]


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
        index = next(i for i, p in enumerate(activate.post_lowering_manager().passes) if p is make_pool_meta_stale)
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
        pytest.skip(
            "no construct_submodule_inputs on this release (2.2.0 runs the module on sample inputs to "
            "find each block's inputs, so no metadata reaches them)"
        )


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


def test_dryrun_ceil_pool_with_trt_compat(shim, dryrun_on_cpu, fresh_dynamo, monkeypatch):
    model, x = make_model(ConvCeilPool), image_input()
    out, partitioned = dryrun_compile(model, x, monkeypatch)
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


def test_dryrun_pool_indices_with_trt_compat(shim, dryrun_on_cpu, fresh_dynamo, monkeypatch):
    model, x = make_model(PoolIndicesViews), image_input()
    out, partitioned = dryrun_compile(model, x, monkeypatch)
    assert acc_blocks(partitioned)
    torch.testing.assert_close(out, model(x))


# ------------------------------------------------------------------- the real activation path (subprocess)


# The original three patches' documented ranges (README "What it fixes"), stated here independently of the patch
# modules, so that a patch whose own range drifts fails: (first release that needs it, first that no longer does).
# Every later patch states its own as STATED_RANGE in its test module, tests/integration/test_<patch>.py.
STATED_RANGES = {
    "view_to_reshape_metadata": ((2, 2, 0), (2, 6, 0)),
    "tuple_partition_inputs": ((2, 3, 0), None),  # 2.2.0 has no construct_submodule_inputs
    "tuple_pooling": ((2, 2, 0), None),
}


def test_activation_path_applies_the_patches_the_release_needs(release, harness_info, stated_ranges):
    report = run_activation()
    assert report["versions"]["torch_tensorrt"] == harness_info["wheel"]
    found = states(report)
    for name in found:
        assert name in stated_ranges, (
            f"add a row for {name}: STATED_RANGE = (first release that needs it, first "
            f"that no longer does) in tests/integration/test_{name}.py"
        )
    assert found == expected_patch_states(stated_ranges, release), report


def test_activation_path_honours_disable_all(stated_ranges):
    found = states(run_activation({"TRT_COMPAT_DISABLE": "all"}))
    assert found == {name: "disabled" for name in stated_ranges}, found
