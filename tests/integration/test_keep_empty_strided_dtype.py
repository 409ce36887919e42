"""keep_empty_strided_dtype on the real Torch-TensorRT ``torch.compile`` backend, with and without trt_compat.

From 2.4.0 Torch-TensorRT decomposes ``aten.empty_strided`` into a float32 ``empty`` + ``as_strided`` whatever dtype
was asked for. Each model is compiled in dryrun (``trt_compat.probing.Probe``: ``min_block_size=1``,
``pass_through_build_failures=True``; the final multiplication kept in PyTorch, because 2.10.0's dryrun cannot
finish a graph whose output a TensorRT block produces) and compared with eager bit for bit. Dryrun runs the
partitioned graph in PyTorch: this says nothing about TensorRT engines' numerics, only that the graph computes the
model. ``CAUSAL_MASK_LOST`` lists the releases whose torch builds the causal mask of
``scaled_dot_product_attention`` with ``empty_strided`` on this path (measured on 2.4.0 and 2.5.0 and 2.14.0; the
compatibility matrix measures every row): a change in a new wheel fails a test here.
"""

from __future__ import annotations

import pytest

from tests.harness import activate

_REASON = activate.unavailable_reason()
if _REASON:
    pytest.skip(_REASON, allow_module_level=True)

import torch  # noqa: E402
from trt_compat.patches import keep_empty_strided_dtype as kesd  # noqa: E402

# The patch's range, stated independently of it (checked against the report by test_defects' activation tests).
STATED_RANGE = ((2, 4, 0), None)

CAUSAL_MASK_LOST = {"2.4.0"}


@pytest.fixture
def decomposes(release):
    first, fixed = STATED_RANGE
    return first <= release and (fixed is None or release < fixed)


@pytest.fixture
def dryrun(release_row):
    if release_row.line == "2.2.0":
        pytest.skip("2.2.0 has no dryrun")


def test_release_decomposes_empty_strided_as_stated(decomposes):
    from torch_tensorrt.dynamo.lowering import _decompositions

    assert (torch.ops.aten.empty_strided.default in _decompositions.TORCH_TRT_DECOMPOSITIONS) == decomposes


def test_integer_dtype_lost_without_trt_compat(upstream, decomposes, dryrun, fresh_dynamo):
    from trt_compat.patching import NotApplicable
    from trt_compat.probing import Probe

    if not decomposes:
        with pytest.raises(NotApplicable):
            kesd.check_integer_dtype(Probe())
        return
    found = kesd.check_integer_dtype(Probe())
    assert found is not None and found.endswith("output 0 differs from eager by up to 256"), found


def test_causal_mask_lost_without_trt_compat(upstream, decomposes, dryrun, release_row, fresh_dynamo):
    from trt_compat.probing import Probe

    if not decomposes:
        pytest.skip("NotApplicable here, as shown by the integer check")
    found = kesd.check_causal_mask(Probe())
    assert (found is not None) == (release_row.line in CAUSAL_MASK_LOST), found


@pytest.mark.parametrize("check", ["check_integer_dtype", "check_causal_mask"])
def test_defects_gone_with_trt_compat(check, shim, decomposes, dryrun, fresh_dynamo):
    from trt_compat.probing import Probe

    if not decomposes:
        pytest.skip("NotApplicable here, as shown without trt_compat")
    assert getattr(kesd, check)(Probe()) is None


def test_whole_causal_attention_equals_eager_with_trt_compat(shim, decomposes, dryrun, release_row, fresh_dynamo):
    """The whole output, not only the first query position, on the release where the mask was lost."""
    from trt_compat.probing import Probe

    if release_row.line not in CAUSAL_MASK_LOST:
        pytest.skip("the mask is kept here without trt_compat (the rest rounds as AOT tracing's decompositions do)")
    model, x = kesd.CausalAttention().eval(), torch.randn(2, 4, 9, 7)
    probe = Probe()
    assert probe.same(probe.compile(model, x, torch_executed_ops={torch.ops.aten.mul.Tensor}).output, model(x)) is None


def test_revert_restores_upstreams_decomposition(shim, decomposes):
    from torch_tensorrt.dynamo.lowering import _decompositions

    import trt_compat

    if not decomposes:
        pytest.skip("nothing to wrap on this release")
    table = _decompositions.TORCH_TRT_DECOMPOSITIONS
    installed = table[torch.ops.aten.empty_strided.default]
    assert installed.__trt_compat_patch__ == "keep_empty_strided_dtype"
    trt_compat.revert()
    assert table[torch.ops.aten.empty_strided.default] is installed.__wrapped__
