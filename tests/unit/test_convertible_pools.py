"""Tests for trt_compat.patches.convertible_pools: CPU only, no torch_tensorrt needed.

Every rewritten graph runs in eager mode and is compared bit for bit with the ATen pool it replaced (NaN
positions, +-inf and the sign of zeros included), and may contain only call_function targets from
CONVERTIBLE. Why those: each has a converter on every release 2.2.0-2.14.0 whose capability validator
accepts the arguments the rewrite gives it (read from each release's aten_ops_converters.py; identical
pool validators on all of them: dilation must be absent or the int 1, ceil_mode absent or False,
divisor_override absent). Only dynamic shapes differ: on 2.3/2.4 constant_pad_nd and avg_poolNd are
registered for static shapes only, which the patch learns from the registry itself (see
test_a_rejected_replacement_leaves_the_pool_alone); tests/integration/test_convertible_pools.py checks
the emitted nodes against the real registries.

| op | 2.2 | 2.3-2.4 | 2.5-2.14 |
|---|---|---|---|
| max_pool{1,2,3}d, avg_pool{1,2,3}d (validator) | static | max: dynamic, avg: static | dynamic |
| constant_pad_nd | static | static | dynamic |
| reshape, permute, slice.Tensor | static | dynamic | dynamic |
| cat | static | 2.3 static, 2.4 dynamic | dynamic (2.11+: cat_validator, met by tensors of one dtype) |
"""

import logging
import math
import operator

import pytest
import torch
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from torch import nn
from torch._subclasses.fake_tensor import FakeTensorMode
from torch.fx.passes.fake_tensor_prop import FakeTensorProp
from trt_compat.patches import convertible_pools as cp
from trt_compat.patches import tuple_pooling as tp

from tests.helpers.pooling import INF, MAX_POOL, NAN, assert_bit_identical, call_nodes

aten = torch.ops.aten
AVG_POOL = {1: aten.avg_pool1d.default, 2: aten.avg_pool2d.default, 3: aten.avg_pool3d.default}
CONVERTIBLE = {
    *MAX_POOL.values(),
    *AVG_POOL.values(),  # without ceil_mode, dilation or divisor_override
    aten.constant_pad_nd.default,
    aten.reshape.default,
    aten.permute.default,
    aten.slice.Tensor,
    aten.cat.default,
}
# What tuple_pooling emits for indices and unpooling (tests/unit/test_pooling_indices.py) and the test's own
# neighbour op: the rewrite adds nothing to them.
TUPLE_POOLING_CONVERTIBLE = {
    aten.index_select.default,
    aten.lt.Scalar,
    aten.scalar_tensor.default,
    aten.where.self,
    aten.eq.Tensor,
    aten.amax.default,
    aten.amin.default,
    aten.isnan.default,
    aten.ge.Scalar,
    aten.expand.default,
    aten.scatter.src,
}
NEIGHBOUR = aten.clone.default  # a converted op in front of the pool: an identity on values, -0.0 and NaN included
FLOAT_DTYPES = [torch.float32, torch.float16, torch.bfloat16, torch.float64]


def special_input(shape, seed, dtype=torch.float32, nan_fraction=0.08):
    """Small integers (so windows tie, 0.0 against -0.0 too) with NaN, -inf and +inf sprinkled in."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.randint(-2, 3, shape, generator=gen).to(dtype)
    x = torch.where(torch.rand(shape, generator=gen) < 0.2, -x, x)  # some zeros become -0.0
    draw = torch.rand(shape, generator=gen)
    x[draw < nan_fraction] = NAN
    x[(draw >= nan_fraction) & (draw < nan_fraction + 0.15)] = -INF
    x[(draw >= nan_fraction + 0.15) & (draw < nan_fraction + 0.2)] = INF
    return x


def pool_graph(op, args, example, kwargs=None, neighbour=True):
    """placeholder -> clone -> pool -> output, with fake vals (the pool reads the clone unless neighbour=False)."""
    graph = torch.fx.Graph()
    x = graph.placeholder("x")
    source = graph.call_function(NEIGHBOUR, (x,)) if neighbour else x
    graph.output(graph.call_function(op, (source, *args), kwargs or {}))
    gm = torch.fx.GraphModule(torch.nn.Module(), graph)
    FakeTensorProp(gm, FakeTensorMode()).propagate(example)
    return gm


def rewritten(gm, example, **kwargs):
    """The rewrite, then: every node's recorded val agrees with fake propagation of the new graph."""
    cp.make_pools_convertible(gm, **kwargs)
    nodes = call_nodes(gm)
    recorded = {node.name: node.meta.get("val") for node in nodes}
    FakeTensorProp(gm, FakeTensorMode(allow_non_fake_inputs=True)).propagate(example)
    for node in nodes:
        got, want = recorded[node.name], node.meta["val"]
        assert got is not None, node.name
        if not isinstance(want, torch.Tensor):
            continue
        assert (tuple(got.shape), got.dtype, got.device) == (tuple(want.shape), want.dtype, want.device), node.name
    return gm


def targets(gm):
    return [node.target for node in call_nodes(gm)]


def assert_converted(gm):
    assert set(targets(gm)) <= CONVERTIBLE | {NEIGHBOUR}, gm.graph
    # Keywords only for a clone's memory format (which a TensorRT engine, having no layout, may ignore).
    assert all(
        cp.validators_of_every_release(node) and (not node.kwargs or set(node.kwargs) == {"memory_format"})
        for node in call_nodes(gm)
    ), gm.graph


def assert_same_layout(got, want):
    """The replacement's output has the pool's strides (a dimension of size 1 has no stride that matters): an op
    after it that runs in PyTorch may have been chosen for that layout."""
    for a, b in zip(got if isinstance(got, (tuple, list)) else (got,), want if isinstance(want, tuple) else (want,)):
        assert all(n == 1 or s == t for n, s, t in zip(b.shape, a.stride(), b.stride())), (a.stride(), b.stride())


def check_against_aten(op, args, x):
    expected = op(x, *args)
    gm = rewritten(pool_graph(op, args, x), x)
    assert_converted(gm)
    assert_bit_identical(gm(x), expected)
    assert_same_layout(gm(x), expected)
    return gm


# ---------------------------------------------------------------------------------------------------------------
# ATen's semantics that the rewrite reproduces, stated and checked against ATen itself


def test_ceil_mode_window_divisor_is_clipped_at_the_padding_so_zero_padding_alone_is_wrong():
    """ceil mode's extra window divides by the elements inside [-padding, size + padding) only: for an input of
    ones the average stays 1. A zero-padded input and an ordinary pool would give 2/3 there."""
    x = torch.ones(1, 1, 6)  # windows [0, 3), [2, 5) fit; ceil mode adds [4, 7)
    args = ([3], [2], [0], True)
    expected = AVG_POOL[1](x, *args)
    assert expected.flatten().tolist() == [1.0, 1.0, 1.0]
    naive = AVG_POOL[1](nn.functional.pad(x, (0, 1)), [3], [2], [0])
    assert naive[0, 0, -1].item() == pytest.approx(2 / 3)
    assert_bit_identical(check_against_aten(AVG_POOL[1], args, x)(x), expected)


@pytest.mark.parametrize("count_include_pad", [True, False])
def test_avg_ceil_window_partly_in_the_padding(count_include_pad):
    # Size 6, kernel 4, stride 3, padding 2: windows [-2, 2), [1, 5) fit; ceil mode adds [4, 8), clipped at 8.
    x = torch.arange(1.0, 7.0).reshape(1, 1, 6)
    args = ([4], [3], [2], True, count_include_pad)
    expected = AVG_POOL[1](x, *args)
    divisor = 4 if count_include_pad else 2  # [4, 8) holds 2 input elements and, up to 6 + 2, 2 padding ones
    assert expected[0, 0, -1].item() == (5.0 + 6.0) / divisor
    check_against_aten(AVG_POOL[1], args, x)


@pytest.mark.parametrize("count_include_pad", [True, False])
def test_avg_ceil_window_that_is_also_the_first(count_include_pad):
    # Size 2, kernel 3, stride 2: no window fits (ceil_mode=False would fail), ceil mode's window [0, 3).
    x = torch.tensor([[[2.0, 4.0]]])
    args = ([3], [2], [0], True, count_include_pad)
    with pytest.raises(RuntimeError):
        AVG_POOL[1](x, *args[:3], False, count_include_pad)
    gm = check_against_aten(AVG_POOL[1], args, x)
    assert aten.cat.default not in targets(gm)


@pytest.mark.parametrize(
    "window",
    [[0.0, -0.0, -1.0], [-0.0, 0.0, -1.0], [NAN, 1.0, INF], [-INF, -INF, -INF], [1.0, NAN, NAN], [INF, NAN, 2.0]],
)
@pytest.mark.parametrize("dtype", FLOAT_DTYPES, ids=str)
def test_max_ties_nan_and_infinities_in_padded_and_dilated_windows(window, dtype):
    """ATen keeps the first maximum in scan order (0.0 and -0.0 tie) unless a NaN comes: -inf padding never wins."""
    x = torch.tensor(window + [-1.0, -2.0], dtype=dtype).reshape(1, 1, -1)  # the last window is short
    for args in (([3], [3], [0], [1], True), ([2], [1], [0], [2], False), ([2], [2], [1], [2], True)):
        check_against_aten(MAX_POOL[1], args, x)


def test_exported_ceil_mode_pool_lists_dilation_which_the_validator_also_rejects():
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.MaxPool2d(3, 2, ceil_mode=True))
    gm = torch.export.export(model.eval(), (torch.randn(1, 3, 16, 16),)).run_decompositions().module()
    tp.decompose_tuple_pooling(gm, "tensorrt")
    pool = next(node for node in gm.graph.nodes if node.target == MAX_POOL[2])
    assert pool.args[4:] == ([1, 1], True)  # spelled out, so "dilation != 1" holds as well
    assert not cp.validators_of_every_release(pool)


# ---------------------------------------------------------------------------------------------------------------
# graph shape


def test_ceil_max_pool_is_an_end_padding_and_a_floor_mode_pool():
    x = torch.randn(2, 3, 12, 12)
    gm = check_against_aten(MAX_POOL[2], ([3, 3], [2, 2], [0, 0], [1, 1], True), x)
    assert targets(gm) == [NEIGHBOUR, aten.constant_pad_nd.default, MAX_POOL[2]]
    pad = next(node for node in call_nodes(gm) if node.target == aten.constant_pad_nd.default)
    assert pad.args[1:] == ([0, 1, 0, 1], -math.inf)
    assert call_nodes(gm)[-1].args[1:] == ([3, 3], [2, 2], [0, 0])


def test_ceil_mode_that_adds_no_window_only_drops_the_arguments():
    x = torch.randn(1, 2, 11, 11)  # (11 - 3) is a multiple of 2: ceil and floor agree
    for op, args in (
        (MAX_POOL[2], ([3, 3], [2, 2], [0, 0], [1, 1], True)),
        (AVG_POOL[2], ([3, 3], [2, 2], [1, 1], True)),
    ):
        gm = check_against_aten(op, args, x)
        assert targets(gm) == [NEIGHBOUR, op]


def test_avg_ceil_mode_is_joined_from_fitting_and_clipped_windows():
    x = torch.randn(1, 2, 6, 6)
    gm = check_against_aten(AVG_POOL[2], ([3, 3], [2, 2], [0, 0], True), x)
    # four pieces: fitting x fitting, fitting x clipped, clipped x fitting, clipped x clipped
    assert targets(gm).count(AVG_POOL[2]) == 4 and targets(gm).count(aten.cat.default) == 3


def test_divisor_override_equal_to_the_kernel_volume_is_a_zero_padded_count_include_pad_pool():
    x = special_input((1, 2, 7, 7), seed=3)
    for args in (([3, 3], [2, 2], [1, 1], True, False, 9), ([2, 2], [2, 2], [0, 0], False, True, 4)):
        gm = check_against_aten(AVG_POOL[2], args, x)
        assert aten.cat.default not in targets(gm)


def test_other_divisor_override_is_left_alone(caplog):
    x = torch.randn(1, 2, 6, 6)
    gm = pool_graph(AVG_POOL[2], ([3, 3], [2, 2], [0, 0], False, True, 5), x)
    with caplog.at_level(logging.INFO, logger=cp.__name__):
        cp.make_pools_convertible(gm)
    assert targets(gm) == [NEIGHBOUR, AVG_POOL[2]]
    assert "avg_pool2d" in caplog.text and "divisor_override=5 is not the kernel volume 9" in caplog.text


def test_dilated_max_pool_becomes_phases_in_the_channel_dim():
    x = special_input((2, 3, 9, 10), seed=4)
    gm = check_against_aten(MAX_POOL[2], ([3, 2], [1, 2], [1, 0], [2, 3], False), x)
    assert set(targets(gm)) == {
        NEIGHBOUR,
        aten.constant_pad_nd.default,
        aten.reshape.default,
        aten.permute.default,
        MAX_POOL[2],
        aten.slice.Tensor,
    }


def test_dilated_pool_output_is_contiguous_like_the_pools_so_flash_attention_after_it_is_right():
    """gen-0-0024 of the differential campaign, reduced: the dilated pool's replacement ends with strided slices;
    AOT tracing had chosen the CPU flash-attention kernel for the pool's contiguous output, which runs in PyTorch
    after the engine and computes wrong numbers on a strided query (off by 0.5 on 2.4.0 and 2.5.0 in dryrun)."""
    graph = torch.fx.Graph()
    x = graph.placeholder("x")
    pooled = graph.call_function(
        MAX_POOL[2], (graph.call_function(NEIGHBOUR, (x,)), [3, 3], [3, 3], [1, 1], [2, 2], True)
    )
    attention = graph.call_function(aten._scaled_dot_product_flash_attention_for_cpu.default, (pooled, pooled, pooled))
    graph.output(graph.call_function(operator.getitem, (attention, 0)))
    gm = torch.fx.GraphModule(torch.nn.Module(), graph)
    x = torch.randn(1, 5, 5, 7)
    FakeTensorProp(gm, FakeTensorMode()).propagate(x)
    expected = gm(x)
    cp.make_pools_convertible(gm)
    assert torch.equal(gm(x), expected)
    assert aten.clone.default in targets(gm)[1:]  # after the replacement (the first clone is the neighbour)


def test_unbatched_and_channels_last_inputs():
    for x in (
        special_input((3, 9, 9), seed=5),
        special_input((2, 3, 9, 9), seed=6).contiguous(memory_format=torch.channels_last),
    ):
        for op, args in (
            (MAX_POOL[2], ([3, 3], [2, 2], [1, 1], [2, 1], True)),
            (AVG_POOL[2], ([3, 3], [2, 2], [1, 1], True, False)),
        ):
            check_against_aten(op, args, x)


def test_keyword_arguments_are_made_positional_since_the_converters_ignore_keywords():
    x = torch.randn(1, 2, 8, 8)
    gm = pool_graph(MAX_POOL[2], ([2, 2],), x, kwargs={"stride": [2, 2]})
    expected = gm(x)
    gm = rewritten(gm, x)
    assert_converted(gm)
    assert call_nodes(gm)[-1].args[1:] == ([2, 2], [2, 2], [0, 0])
    assert_bit_identical(gm(x), expected)


def test_accepted_pools_and_graphs_without_pools_are_untouched(monkeypatch):
    x = torch.randn(1, 2, 8, 8)
    gm = pool_graph(MAX_POOL[2], ([2, 2], [2, 2], [1, 1]), x)
    before = [node.format_node() for node in gm.graph.nodes]
    monkeypatch.setattr(gm, "recompile", lambda: pytest.fail("recompiled without a change"))
    cp.make_pools_convertible(gm)
    assert [node.format_node() for node in gm.graph.nodes] == before


# ---------------------------------------------------------------------------------------------------------------
# what is left alone, and why


def test_pools_whose_op_is_in_leave_alone_are_untouched():
    x = torch.randn(1, 2, 8, 8)
    for spelled in (MAX_POOL[2], aten.max_pool2d, "torch.ops.aten.max_pool2d.default"):
        gm = pool_graph(MAX_POOL[2], ([3, 3], [2, 2], [0, 0], [1, 1], True), x)
        cp.make_pools_convertible(gm, leave_alone={spelled})
        assert targets(gm) == [NEIGHBOUR, MAX_POOL[2]], spelled


def test_a_pool_that_would_be_an_engine_of_its_own_is_left_alone(caplog):
    x = torch.randn(1, 2, 8, 8)
    args = ([3, 3], [2, 2], [0, 0], [1, 1], True)
    gm = pool_graph(MAX_POOL[2], args, x, neighbour=False)  # graph input -> pool -> graph output
    with caplog.at_level(logging.INFO, logger=cp.__name__):
        cp.make_pools_convertible(gm)
    assert targets(gm) == [MAX_POOL[2]]
    assert "max_pool2d" in caplog.text and "extra TensorRT engine" in caplog.text
    # Its producer kept in PyTorch by the user: the same.
    gm = pool_graph(MAX_POOL[2], args, x)
    cp.make_pools_convertible(gm, leave_alone={NEIGHBOUR})
    assert targets(gm) == [NEIGHBOUR, MAX_POOL[2]]


def test_a_pool_reading_a_graph_input_joins_its_users_engine():
    x = torch.randn(1, 2, 8, 8)
    graph = torch.fx.Graph()
    source = graph.placeholder("x")
    pool = graph.call_function(MAX_POOL[2], (source, [3, 3], [2, 2], [0, 0], [1, 1], True))
    graph.output(graph.call_function(aten.relu.default, (pool,)))
    gm = torch.fx.GraphModule(torch.nn.Module(), graph)
    FakeTensorProp(gm, FakeTensorMode()).propagate(x)
    expected = gm(x)
    rewritten(gm, x)
    assert targets(gm) == [aten.constant_pad_nd.default, MAX_POOL[2], aten.relu.default]
    assert_bit_identical(gm(x), expected)


def test_a_chain_of_pools_follows_its_first_pool():
    x = special_input((1, 2, 13, 13), seed=7)
    graph = torch.fx.Graph()
    value = graph.call_function(NEIGHBOUR, (graph.placeholder("x"),))
    for _ in range(2):
        value = graph.call_function(MAX_POOL[2], (value, [3, 3], [2, 2], [0, 0], [1, 1], True))
    value = graph.call_function(AVG_POOL[2], (value, [2, 2], [2, 2], [0, 0], True))
    graph.output(value)
    gm = torch.fx.GraphModule(torch.nn.Module(), graph)
    FakeTensorProp(gm, FakeTensorMode()).propagate(x)
    expected = gm(x)
    assert_converted(rewritten(gm, x))
    assert_bit_identical(gm(x), expected)


def test_a_rejected_replacement_leaves_the_pool_alone(caplog):
    """How the patch learns that a release does not convert an op for this node (2.3/2.4: constant_pad_nd
    with a dynamic shape): nothing of the attempted replacement stays in the graph."""
    x = torch.randn(1, 2, 8, 8)
    gm = pool_graph(MAX_POOL[2], ([3, 3], [2, 2], [0, 0], [1, 1], True), x)
    before = [node.format_node() for node in gm.graph.nodes]

    def no_padding(node):
        return node.target != aten.constant_pad_nd.default and cp.validators_of_every_release(node)

    with caplog.at_level(logging.INFO, logger=cp.__name__):
        cp.make_pools_convertible(gm, accepts=no_padding)
    assert [node.format_node() for node in gm.graph.nodes] == before
    assert "needs aten.constant_pad_nd.default, which this release does not convert" in caplog.text


def test_a_failing_converter_check_or_rewrite_costs_a_graph_break_not_the_compile(monkeypatch, caplog):
    x = torch.randn(1, 2, 8, 8)
    args = ([3, 3], [2, 2], [0, 0], True)
    gm = pool_graph(AVG_POOL[2], args, x)
    before = [node.format_node() for node in gm.graph.nodes]

    def broken(node):
        raise KeyError("a validator reading meta that is not there")

    cp.make_pools_convertible(gm, accepts=broken)
    assert [node.format_node() for node in gm.graph.nodes] == before

    def fails_halfway(emit):
        emit(aten.slice.Tensor, emit.pool.x, 2, 1, 8)
        raise RuntimeError("a bug")

    monkeypatch.setattr(cp, "_emit_avg", fails_halfway)
    with caplog.at_level(logging.WARNING, logger=cp.__name__):
        cp.make_pools_convertible(gm)
    assert [node.format_node() for node in gm.graph.nodes] == before
    assert "leaving avg_pool2d_default (aten.avg_pool2d.default) in PyTorch: rewriting it failed" in caplog.text
    assert_bit_identical(gm(x), AVG_POOL[2](x, *args))


@pytest.mark.parametrize(
    "why, build",
    [
        ("no val", lambda gm: [node.meta.pop("val") for node in gm.graph.nodes if node.target == NEIGHBOUR]),
        ("integer", None),
    ],
)
def test_inputs_without_static_floating_vals_are_left_alone(why, build):
    x = torch.arange(49).reshape(1, 1, 7, 7) if why == "integer" else torch.randn(1, 1, 7, 7)
    gm = pool_graph(MAX_POOL[2], ([3, 3], [2, 2], [0, 0], [1, 1], True), x)
    if build:
        build(gm)
    cp.make_pools_convertible(gm)
    assert targets(gm) == [NEIGHBOUR, MAX_POOL[2]]


def test_parameters_that_are_not_constants_are_left_alone():
    """A kernel size computed in the graph (here from a symbolic size) cannot be planned for."""
    graph = torch.fx.Graph()
    x = graph.placeholder("x")
    source = graph.call_function(NEIGHBOUR, (x,))
    size = graph.call_function(aten.sym_size.int, (x, 0))
    graph.output(graph.call_function(MAX_POOL[2], (source, [size, 2], [2, 2], [0, 0], [1, 1], True)))
    gm = torch.fx.GraphModule(torch.nn.Module(), graph)
    cp.make_pools_convertible(gm)
    assert MAX_POOL[2] in targets(gm) and aten.constant_pad_nd.default not in targets(gm)


def test_symbolic_spatial_sizes_are_left_alone():
    class Pool(nn.Module):
        def forward(self, x):
            return nn.functional.max_pool2d(x.clone(), 2, 1, dilation=2)

    x = torch.randn(2, 3, 12, 12)
    height = torch.export.Dim("height", min=8, max=32)
    gm = torch.export.export(Pool(), (x,), dynamic_shapes=({2: height},)).run_decompositions().module()
    tp.decompose_tuple_pooling(gm, "tensorrt")
    cp.make_pools_convertible(gm)
    pool = next(node for node in gm.graph.nodes if node.target == MAX_POOL[2])
    assert pool.args[4] == [2, 2]


# ---------------------------------------------------------------------------------------------------------------
# exported models: symbolic batch sizes, and together with tuple_pooling's indices


class CeilPools(nn.Module):
    """No parameters: the exported graph module is called with the input alone on every torch release."""

    def __init__(self):
        super().__init__()
        self.max = nn.MaxPool2d(3, 2, ceil_mode=True)
        self.dilated = nn.MaxPool2d(2, 1, padding=1, dilation=2)
        self.avg = nn.AvgPool2d(3, 2, padding=1, ceil_mode=True, count_include_pad=False)
        self.avg1d = nn.AvgPool1d(3, 2, ceil_mode=True)

    def forward(self, x):
        y = self.avg(self.dilated(self.max(x * 2.0)))
        return y, self.avg1d(y.flatten(2))


def test_exported_model_with_a_symbolic_batch_size():
    model, x = CeilPools().eval(), torch.randn(2, 3, 17, 17)
    batch = torch.export.Dim("batch", min=2, max=16)
    gm = torch.export.export(model, (x,), dynamic_shapes={"x": {0: batch}}).run_decompositions().graph_module
    tp.decompose_tuple_pooling(gm, "tensorrt")
    rewritten(gm, x)
    pools = [node for node in gm.graph.nodes if node.target in (*MAX_POOL.values(), *AVG_POOL.values())]
    assert len(pools) > 4 and all(cp.validators_of_every_release(node) for node in pools)
    for size in (3, 5):  # no batch size baked in
        inputs = special_input((size, 3, 17, 17), seed=size)
        with torch.no_grad():
            for got, want in zip(gm(inputs), model(inputs)):
                assert_bit_identical(got, want)


class CeilSegNet(nn.Module):
    """Ceil-mode pools whose indices the decoder's unpools use (sizes that ceil mode rounds up)."""

    def __init__(self):
        super().__init__()
        self.encoders = nn.ModuleList([nn.Conv2d(3, 4, 3, padding=1), nn.Conv2d(4, 4, 3, padding=1)])
        self.decoders = nn.ModuleList([nn.Conv2d(4, 2, 3, padding=1), nn.Conv2d(4, 4, 3, padding=1)])
        self.pool = nn.MaxPool2d(2, return_indices=True, ceil_mode=True)
        self.unpool = nn.MaxUnpool2d(2)

    def forward(self, x):
        indices, sizes = [], []
        for conv in self.encoders:
            x = conv(x)
            sizes.append(x.shape[-2:])
            x, index = self.pool(x)
            indices.append(index)
        for depth in reversed(range(len(self.decoders))):
            x = self.decoders[depth](self.unpool(x, indices[depth], output_size=sizes[depth]))
        return x


@pytest.mark.parametrize("mode", ["tensorrt", "torch"])
def test_after_tuple_pooling_values_and_indices_stay_exact(mode):
    """tuple_pooling computes the indices from the unpadded input (or with ATen's op in "torch" mode); this
    rewrite only replaces the values node, so the decoder receives ATen's indices either way."""
    torch.manual_seed(0)
    model, x = CeilSegNet().eval(), torch.randn(1, 3, 11, 13)
    # Without export's default decompositions, which turn max_unpool2d into index_put: Torch-TensorRT's keep it.
    gm = torch.export.export(model, (x,)).module()
    tp.decompose_tuple_pooling(gm, mode)
    rewritten(gm, x)
    allowed = CONVERTIBLE | TUPLE_POOLING_CONVERTIBLE | {aten.conv2d.default, aten.convolution.default}
    if mode == "torch":
        allowed |= {tp.MAX_POOL_INDICES, aten.max_unpool2d.default}
    assert set(targets(gm)) <= allowed, gm.graph
    assert not any(
        node.target in MAX_POOL.values() and not cp.validators_of_every_release(node) for node in gm.graph.nodes
    )
    for seed in range(3):
        inputs = special_input((1, 3, 11, 13), seed=seed)
        with torch.no_grad():
            assert_bit_identical(gm(inputs), model(inputs))


# ---------------------------------------------------------------------------------------------------------------
# property tests


def layouts(draw, x):
    """The same values as contiguous, channels_last(_3d) or a strided view."""
    choice = draw(st.sampled_from(["contiguous", "channels_last", "strided"]))
    if choice == "channels_last" and x.dim() in (4, 5):
        return x.contiguous(memory_format=torch.channels_last if x.dim() == 4 else torch.channels_last_3d)
    if choice == "strided":
        wide = torch.full((*x.shape[:-1], 2 * x.shape[-1]), 99.0, dtype=x.dtype)
        wide[..., ::2] = x
        return wide[..., ::2]
    return x


@st.composite
def pool_cases(draw):
    spatial_dims = draw(st.integers(1, 3))
    is_max = draw(st.booleans())
    sizes = draw(st.lists(st.integers(1, 9), min_size=spatial_dims, max_size=spatial_dims))
    dilation = [draw(st.integers(1, 3)) if is_max else 1 for _ in sizes]
    kernel = [draw(st.integers(1, max(1, (size - 1) // d + 1))) for size, d in zip(sizes, dilation)]
    stride = [draw(st.integers(1, 3)) for _ in sizes]
    padding = [draw(st.integers(0, ((k - 1) * d + 1) // 2)) for k, d in zip(kernel, dilation)]
    ceil_mode = draw(st.booleans())
    if is_max:
        op, args = MAX_POOL[spatial_dims], (kernel, stride, padding, dilation, ceil_mode)
    else:
        op, args = AVG_POOL[spatial_dims], (kernel, stride, padding, ceil_mode, draw(st.booleans()))
        if spatial_dims > 1 and draw(st.booleans()):
            args += (draw(st.sampled_from([math.prod(kernel), math.prod(kernel) + 1, 1])),)
    batch = [draw(st.integers(1, 2))] if draw(st.booleans()) else []
    shape = tuple(batch + [draw(st.integers(1, 3))] + sizes)
    dtype = draw(st.sampled_from(FLOAT_DTYPES))
    if draw(st.booleans()):
        x = special_input(shape, draw(st.integers(0, 2**16)), dtype, draw(st.sampled_from([0.0, 0.1, 0.5])))
    else:
        x = torch.randn(shape, generator=torch.Generator().manual_seed(draw(st.integers(0, 2**16)))).to(dtype)
    return op, args, layouts(draw, x)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(pool_cases())
def test_property_bit_identical_to_aten(case):
    op, args, x = case
    try:
        expected = op(x, *args)
    except RuntimeError:  # parameters ATen rejects
        assume(False)
    gm = rewritten(pool_graph(op, args, x), x)
    if op in AVG_POOL.values() and len(args) == 6 and args[5] != math.prod(args[0]):
        assert targets(gm) == [NEIGHBOUR, op]  # the one case left in PyTorch
    else:
        assert_converted(gm)
    assert_bit_identical(gm(x), expected)


# ---------------------------------------------------------------------------------------------------------------
# the lowering pass: what it takes from each release's calling convention


class StandInRegistry:
    """The parts of Torch-TensorRT's converter registry the pass uses (2.5+ shape), recording its settings."""

    def __init__(self):
        self.compilation_settings, self.disallowed_targets, self.seen = None, set(), []

    def set_compilation_settings(self, settings):
        self.compilation_settings = settings
        self.disallowed_targets = settings.torch_executed_ops

    def __contains__(self, node):
        self.seen.append(self.compilation_settings)
        target = node.target
        return cp.validators_of_every_release(node) and target not in self.disallowed_targets


class CompilationSettings:
    """What the pass reads of Torch-TensorRT's CompilationSettings (found by its class name)."""

    def __init__(self, torch_executed_ops=()):
        self.torch_executed_ops = set(torch_executed_ops)
        self.assume_dynamic_shape_support = False


def ceil_pool_graph():
    x = torch.randn(1, 2, 8, 8)
    return pool_graph(MAX_POOL[2], ([3, 3], [2, 2], [0, 0], [1, 1], True), x)


def test_pass_uses_the_settings_argument_and_restores_the_registry():
    registry = StandInRegistry()
    run = cp._pass_for(registry)
    gm = run(ceil_pool_graph(), CompilationSettings())  # 2.6+: (gm, settings)
    assert aten.constant_pad_nd.default in targets(gm)
    assert registry.seen and all(isinstance(seen, CompilationSettings) for seen in registry.seen)
    assert registry.compilation_settings is None and registry.disallowed_targets == set()
    gm = run(ceil_pool_graph(), CompilationSettings({"torch.ops.aten.max_pool2d.default"}))
    assert targets(gm) == [NEIGHBOUR, MAX_POOL[2]]


def test_pass_without_settings_uses_those_of_the_backend_call():
    registry = StandInRegistry()
    run = cp._pass_for(registry)
    gm = run(ceil_pool_graph(), [torch.randn(1)])  # 2.2-2.4: (gm, sample_inputs), outside any compile
    assert aten.constant_pad_nd.default in targets(gm)
    # 2.5: the pass gets (gm) only; the torch.compile backend's frame holds the compile's settings.
    backend_module = {"__name__": "torch_tensorrt.dynamo.backend.backends", "run": run}
    exec("def _pretraced_backend(gm, sample_inputs, settings):\n    return run(gm)\n", backend_module)
    gm = backend_module["_pretraced_backend"](ceil_pool_graph(), [], CompilationSettings({MAX_POOL[2]}))
    assert targets(gm) == [NEIGHBOUR, MAX_POOL[2]]
