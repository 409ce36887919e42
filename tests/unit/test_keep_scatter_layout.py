"""keep_scatter_layout without Torch-TensorRT: the layout fix as a plain function, and the defect's mechanism traced
with torch's own functionalization and a decomposition table that decomposes slice_scatter/select_scatter the way
Torch-TensorRT 2.4.0-2.13.x does (into a contiguous ``scatter``): the patch module's stand-ins, written from that
behaviour, which ``trt-compat demo`` shows too."""

from __future__ import annotations

import pytest
import torch
from torch.fx.experimental.proxy_tensor import make_fx
from trt_compat.patches import keep_scatter_layout as ksl
from trt_compat.patches.keep_scatter_layout import contiguous_slice_scatter, traced_with

aten = torch.ops.aten


def keeping_layout(*args, **kwargs):
    return ksl._keeping_layout(contiguous_slice_scatter, None, args, kwargs)


def row_update_then_contiguous(x):
    x = x.transpose(2, 3).clone()
    x[:, 0] += x[:, -1]
    x = x * 0.25
    y = x.contiguous()
    y.add_(2)
    return x * y


def slice_update_then_contiguous(x):
    x = x.permute(0, 2, 1).clone()
    x[:, 1:3] = x[:, 1:3] * 2
    x = x + 1
    y = x.contiguous()
    y.mul_(3)
    return x - y


def whole_dimension_update_then_contiguous(x):
    """A slice over the whole dimension: upstream returns the source itself, in the source's layout."""
    x = x.transpose(0, 1).clone()
    x[:, :] = x.t().contiguous().t() * 2
    x = x.exp()
    y = x.contiguous()
    y.zero_()
    return x + y


MODELS = {
    "row": (row_update_then_contiguous, (2, 4, 9, 7)),
    "slice": (slice_update_then_contiguous, (2, 3, 5)),
    "whole_dimension": (whole_dimension_update_then_contiguous, (4, 6)),
}


@pytest.mark.parametrize("name", ["row", "slice"])
def test_contiguous_scatter_makes_a_later_contiguous_an_alias(name):
    """The defect's mechanism: the traced program is wrong with a contiguous scatter, exact with the fix."""
    function, shape = MODELS[name]
    x = torch.randn(shape)
    assert not torch.equal(traced_with(function, contiguous_slice_scatter, x)(x), function(x))
    assert torch.equal(traced_with(function, keeping_layout, x)(x), function(x))


def test_whole_dimension_slice_is_exact_with_the_fix():
    function, shape = MODELS["whole_dimension"]
    x = torch.randn(shape)
    assert torch.equal(traced_with(function, keeping_layout, x)(x), function(x))


LAYOUTS = {
    "transposed": lambda: torch.randn(2, 4, 7, 9).transpose(2, 3),
    "channels_last": lambda: torch.randn(2, 3, 8, 8).to(memory_format=torch.channels_last),
    "size_one_dimension": lambda: torch.randn(3, 1, 4).transpose(0, 2),
    "offset_slice": lambda: torch.randn(5, 3).t()[:, 1:],
}


@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_result_gets_the_input_layout_and_keeps_its_values(layout):
    x = LAYOUTS[layout]()
    result = x.contiguous()
    out = ksl.with_input_layout(result, x)
    assert torch.equal(out, x)
    assert all(size == 1 or a == b for size, a, b in zip(x.shape, out.stride(), x.stride())), (out.stride(), x.stride())


@pytest.mark.parametrize(
    "x",
    [torch.randn(3, 4), torch.randn(2, 3, 4).transpose(1, 2)],
    ids=["contiguous", "already_transposed"],
)
def test_result_already_in_the_input_layout_is_returned_as_it_is(x):
    result = x.clone()  # preserve_format: the input's strides
    assert ksl.with_input_layout(result, x) is result


def test_input_with_gaps_is_left_to_upstream():
    x = torch.randn(4, 6)[:, ::2]
    result = x.contiguous()
    assert ksl.eager_strides(x) is None and ksl.with_input_layout(result, x) is result


def test_symbolic_sizes_get_the_input_layout_too():
    """With dynamic shapes the sizes and strides are symbolic: their traced values give the layout (the campaign
    found the defect left in place on 2.12.1 with mark_dynamic, scatter_then_contiguous off by 6.09)."""

    def relayout(x):
        x = x.transpose(0, 1)
        return ksl.with_input_layout(x.contiguous(), x)

    gm = make_fx(relayout, tracing_mode="symbolic")(torch.randn(3, 5))
    targets = [node.target for node in gm.graph.nodes if node.op == "call_function"]
    assert aten.permute.default in targets, targets
    for shape in ((3, 5), (4, 7)):
        x = torch.randn(shape)
        assert gm(x).stride() == x.transpose(0, 1).stride()


@pytest.mark.parametrize("name", ["row", "slice"])
def test_the_defect_is_fixed_with_symbolic_sizes(name):
    function, shape = MODELS[name]
    table = {
        aten.slice_scatter.default: keeping_layout,
        aten.select_scatter.default: ksl.select_scatter_as_slice_scatter,
    }
    gm = make_fx(torch.func.functionalize(function), decomposition_table=table, tracing_mode="symbolic")(
        torch.randn(shape)
    )
    for size in (shape[0], shape[0] + 1):
        x = torch.randn((size, *shape[1:]))
        assert torch.equal(gm(x), function(x))


def test_the_fix_adds_a_copy_only_where_the_layout_differs():
    row, shape = MODELS["row"]
    x = torch.randn(shape)
    permutes = [
        sum(node.target is aten.permute.default for node in traced_with(row, decomposition, x).graph.nodes)
        for decomposition in (contiguous_slice_scatter, keeping_layout)
    ]
    # Into the input's physical order and back, around one contiguous copy, per scatter that functionalization
    # emits for the update (it replays the write onto the base as well).
    assert permutes[0] == 0 and permutes[1] > 0 and permutes[1] % 2 == 0, permutes
    contiguous = torch.randn(2, 3, 4)

    def contiguous_row_update(x):
        x = x.clone()
        x[:, 0] += 1
        return x

    untouched = traced_with(contiguous_row_update, keeping_layout, contiguous)
    assert not any(node.target is aten.permute.default for node in untouched.graph.nodes)


def test_a_call_without_dim_gets_the_schemas_default():
    """torch 2.8's export calls slice_scatter(x, src) for a whole-tensor update; upstream's decomposition has no
    default for dim (the schema's is 0)."""

    def requires_dim(input_tensor, src, dim, start=None, end=None, step=1):
        return contiguous_slice_scatter(input_tensor, src, dim, start, end, step)

    x, src = torch.randn(3, 4).t(), torch.randn(4, 3)
    out = ksl._keeping_layout(requires_dim, None, (x, src), {})
    assert torch.equal(out, torch.slice_scatter(x, src)) and out.stride() == x.stride()
