"""Pooling indices decomposed into ops Torch-TensorRT converts (pool_indices="tensorrt"), and the switch.

CPU only, no torch_tensorrt. Every rewritten graph is compared bit for bit with ATen, values and
indices, and may contain only call_function targets from CONVERTIBLE: ops that have a converter
(and pass its capability validator for the arguments used here) in the real registries of
Torch-TensorRT 2.4.0, 2.5.0 and 2.14.0 (tests/integration/test_segnet.py checks that end to end).
"""

import logging
import math
import operator

import pytest
import torch
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from torch._subclasses.fake_tensor import FakeTensorMode
from torch.fx.passes.fake_tensor_prop import FakeTensorProp
from trt_compat.patches import tuple_pooling as tp

import trt_compat
from tests.helpers.pooling import ADAPTIVE_MAX_POOL, INF, MAX_POOL_WITH_INDICES, NAN, assert_bit_identical, call_nodes
from trt_compat import _config

aten = torch.ops.aten
CONVERTIBLE = {
    aten.max_pool1d.default,
    aten.max_pool2d.default,
    aten.max_pool3d.default,  # values
    aten.slice.Tensor,
    aten.amax.default,
    aten.cat.default,
    aten.clone.default,  # adaptive values
    aten.reshape.default,
    aten.index_select.default,
    aten.lt.Scalar,
    aten.scalar_tensor.default,
    aten.where.self,
    aten.eq.Tensor,
    aten.amin.default,
    aten.isnan.default,
    aten.ge.Scalar,  # indices
}
FLOAT_DTYPES = [torch.float32, torch.float16, torch.bfloat16, torch.float64]


def special_input(shape, seed, dtype=torch.float32, nan_fraction=0.08):
    """Small integers (so windows tie, including 0.0 against -0.0) with NaN, -inf and +inf sprinkled in."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.randint(-2, 3, shape, generator=gen).to(dtype)
    x = torch.where(torch.rand(shape, generator=gen) < 0.2, -x, x)  # some zeros become -0.0
    draw = torch.rand(shape, generator=gen)
    x[draw < nan_fraction] = NAN
    x[(draw >= nan_fraction) & (draw < nan_fraction + 0.15)] = -INF
    x[(draw >= nan_fraction + 0.15) & (draw < nan_fraction + 0.2)] = INF
    return x


def pool_graph(op, args, example, use=("values", "indices")):
    graph = torch.fx.Graph()
    x = graph.placeholder("x")
    pool = graph.call_function(op, (x, *args))
    items = {name: graph.call_function(operator.getitem, (pool, i)) for i, name in enumerate(("values", "indices"))}
    graph.output(tuple(items[name] for name in use))
    gm = torch.fx.GraphModule(torch.nn.Module(), graph)
    FakeTensorProp(gm, FakeTensorMode()).propagate(example)
    return gm


def rewrite_and_check(gm, example, mode="tensorrt"):
    tp.decompose_tuple_pooling(gm, mode)
    nodes = call_nodes(gm)
    recorded = {node.name: node.meta["val"] for node in nodes}
    assert all(isinstance(val, torch.Tensor) for val in recorded.values())
    FakeTensorProp(gm, FakeTensorMode(allow_non_fake_inputs=True)).propagate(example)
    for node in nodes:
        got, want = recorded[node.name], node.meta["val"]
        assert (tuple(got.shape), got.dtype, got.device) == (tuple(want.shape), want.dtype, want.device), node.name
    return gm


def decomposed(op, args, x, use=("values", "indices")):
    gm = rewrite_and_check(pool_graph(op, args, x, use), x)
    assert {node.target for node in call_nodes(gm)} <= CONVERTIBLE, gm.graph
    return gm


# ---------------------------------------------------------------------------------------------
# ATen's choice, stated explicitly (and checked against ATen itself)


def window_1d(values, **kwargs):
    return torch.tensor(values).reshape(1, 1, -1), {"kernel": len(values), **kwargs}


SEMANTICS = {
    # name: (window values, index ATen picks)
    "first-of-equal-maxima": ([3.0, 1.0, 3.0, 2.0], 0),
    "last-nan": ([1.0, NAN, 2.0, NAN], 3),
    "nan-beats-inf": ([INF, NAN, INF], 1),
    "nan-first": ([NAN, 5.0, 7.0], 0),
    "all-minus-inf": ([-INF, -INF, -INF], 0),
    "plus-inf": ([1.0, INF, INF], 1),
    "zero-then-negative-zero": ([0.0, -0.0], 0),
    "negative-zero-then-zero": ([-0.0, 0.0], 0),
}


@pytest.mark.parametrize("dtype", FLOAT_DTYPES, ids=str)
@pytest.mark.parametrize("case", list(SEMANTICS))
def test_documented_tie_and_nan_rules(case, dtype):
    values, index = SEMANTICS[case]
    x = torch.tensor(values, dtype=dtype).reshape(1, 1, 1, -1)
    op, args = MAX_POOL_WITH_INDICES[2], ([1, len(values)],)
    aten_values, aten_indices = op(x, *args)
    assert aten_indices.item() == index  # the rule, as ATen's CPU kernel applies it
    gm = decomposed(op, args, x)
    got_values, got_indices = gm(x)
    assert_bit_identical(got_indices, aten_indices)
    assert_bit_identical(got_values, aten_values)
    for layout in (torch.channels_last,):
        assert_bit_identical(gm(x.contiguous(memory_format=layout))[1], aten_indices)


def test_aten_channels_last_3d_quirk_for_all_minus_inf_windows():
    """ATen's channels_last_3d CPU kernel (torch 2.4.1 and 2.13) may report, for a window holding only
    -inf, an index without its depth term -- outside the window -- for channels past its vector width.
    The decomposition does not depend on the layout and reports the first valid position, as ATen's
    contiguous kernel does."""
    x = torch.full((1, 3, 2, 2, 2), -INF)
    op, args = MAX_POOL_WITH_INDICES[3], ([1, 1, 1], [1, 1, 1])
    contiguous = op(x, *args)[1]
    assert contiguous[0, 2].flatten().tolist() == list(range(8))
    channels_last = x.contiguous(memory_format=torch.channels_last_3d)
    assert op(channels_last, *args)[1][0, 2].flatten().tolist() == [0, 1, 2, 3, 0, 1, 2, 3]
    gm = decomposed(op, args, x)
    for layout in (x, channels_last):
        assert_bit_identical(gm(layout)[1], contiguous)


def test_padding_never_wins_an_all_minus_inf_window():
    x = torch.full((1, 1, 3, 3), -INF)
    op, args = MAX_POOL_WITH_INDICES[2], ([3, 3], [2, 2], [1, 1])
    expected = op(x, *args)[1]
    assert expected.flatten().tolist() == [0, 1, 3, 4]  # the first valid position of each window
    assert_bit_identical(decomposed(op, args, x)(x)[1], expected)


def test_adaptive_overlapping_bins_follow_the_same_rules():
    x = torch.tensor([[[1.0, NAN, 2.0, NAN, 7.0, 7.0, 7.0]]])
    op, args = ADAPTIVE_MAX_POOL[1], ([2],)
    expected = op(x, *args)[1]
    assert expected.flatten().tolist() == [3, 3]  # bins [0, 4) and [3, 7) share the NaN at 3
    assert_bit_identical(decomposed(op, args, x)(x)[1], expected)


# ---------------------------------------------------------------------------------------------
# graph shape


def test_graph_uses_only_convertible_ops_and_shares_constants():
    graph = torch.fx.Graph()
    x = graph.placeholder("x")
    outputs = []
    for _ in range(2):  # two pools of the same geometry
        pool = graph.call_function(MAX_POOL_WITH_INDICES[2], (x, [2, 2]))
        outputs.append(graph.call_function(operator.getitem, (pool, 1)))
    graph.output(tuple(outputs))
    gm = torch.fx.GraphModule(torch.nn.Module(), graph)
    example = torch.randn(2, 3, 8, 6)
    FakeTensorProp(gm, FakeTensorMode()).propagate(example)

    rewrite_and_check(gm, example)

    assert {node.target for node in call_nodes(gm)} <= CONVERTIBLE
    constants = [node for node in gm.graph.nodes if node.op == "get_attr"]
    assert len(constants) == 2  # one window table and one gather index, shared by both pools
    assert not any(name.startswith("_trt_compat") for name in gm.state_dict())
    expected = MAX_POOL_WITH_INDICES[2](example, [2, 2])[1]
    for got in gm(example):
        assert_bit_identical(got, expected)


def test_window_tables():
    table = tp.max_pool_windows([5], [3], [2], [1], [1], False)
    # windows -1..1, 1..3, 3..5: position -1 and 5 are padding, marked with the input size (5).
    assert table.tolist() == [[5, 0, 1], [1, 2, 3], [3, 4, 5]]
    table = tp.max_pool_windows([2, 3], [2, 2], [1, 1], [0, 0], [1, 2], False)
    assert table.tolist() == [[[0, 2, 3, 5]]]  # scan order: row-major over the window
    table = tp.adaptive_max_pool_windows([5], [2])
    assert table.tolist() == [[0, 1, 2], [2, 3, 4]]
    table = tp.adaptive_max_pool_windows([3], [2])
    assert table.tolist() == [[0, 1], [1, 2]]
    table = tp.adaptive_max_pool_windows([4], [3])
    assert table.tolist() == [[0, 1], [1, 2], [2, 3]]


def test_output_size_rule_matches_aten():
    for size in range(1, 9):
        for kernel in range(1, 4):
            for stride in range(1, 4):
                for padding in range(0, kernel // 2 + 1):
                    for dilation in (1, 2):
                        for ceil_mode in (False, True):
                            args = ([kernel], [stride], [padding], [dilation], ceil_mode)
                            try:
                                expected = MAX_POOL_WITH_INDICES[1](torch.zeros(1, size), *args)[1].shape[-1]
                            except RuntimeError:
                                continue
                            got = tp.pooling_output_size(size, kernel, stride, padding, dilation, ceil_mode)
                            assert got == expected, (size, args)


def test_window_without_any_input_element_keeps_the_indices_op():
    # Window -1, 2 over an input of size 2: no valid position, ATen reports index 2 (outside the input).
    op, args = MAX_POOL_WITH_INDICES[1], ([2], [1], [1], [3], False)
    x = torch.randn(1, 2)
    gm = rewrite_and_check(pool_graph(op, args, x, use=("indices",)), x)
    assert [node.target for node in call_nodes(gm)] == [tp.MAX_POOL_INDICES]
    assert_bit_identical(gm(x)[0], op(x, *args)[1])


def test_integer_input_keeps_the_indices_op():
    # -inf masking and NaN rules are for floating point; integer pools keep ATen's own indices.
    op, args = MAX_POOL_WITH_INDICES[2], ([2, 2],)
    x = torch.arange(16).reshape(1, 4, 4)
    gm = rewrite_and_check(pool_graph(op, args, x, use=("indices",)), x)
    assert [node.target for node in call_nodes(gm)] == [tp.MAX_POOL_INDICES]
    assert_bit_identical(gm(x)[0], op(x, *args)[1])


# ---------------------------------------------------------------------------------------------
# property tests


def layouts(draw, x):
    """The same values as contiguous, channels_last(_3d) or a strided view."""
    choice = draw(st.sampled_from(["contiguous", "channels_last", "strided"]))
    if choice == "channels_last" and x.dim() in (4, 5):
        fmt = torch.channels_last if x.dim() == 4 else torch.channels_last_3d
        return x.contiguous(memory_format=fmt)
    if choice == "strided":
        wide = torch.full((*x.shape[:-1], 2 * x.shape[-1]), 99.0, dtype=x.dtype)
        wide[..., ::2] = x
        view = wide[..., ::2]
        assert not view.is_contiguous() or x.shape[-1] == 1
        return view
    return x


@st.composite
def max_pool_cases(draw):
    spatial_dims = draw(st.integers(1, 3))
    sizes = draw(st.lists(st.integers(1, 7), min_size=spatial_dims, max_size=spatial_dims))
    batch = [draw(st.integers(1, 2))] if draw(st.booleans()) else []
    shape = tuple(batch + [draw(st.integers(1, 3))] + sizes)
    dilation = [draw(st.integers(1, 3)) for _ in sizes]
    kernel = [draw(st.integers(1, max(1, (size - 1) // d + 1))) for size, d in zip(sizes, dilation)]
    stride = [draw(st.integers(1, 3)) for _ in sizes]
    padding = [draw(st.integers(0, k // 2)) for k in kernel]
    args = (kernel, stride, padding, dilation, draw(st.booleans()))
    dtype = draw(st.sampled_from(FLOAT_DTYPES))
    x = special_input(shape, draw(st.integers(0, 2**16)), dtype, draw(st.sampled_from([0.0, 0.1, 0.5])))
    return MAX_POOL_WITH_INDICES[spatial_dims], args, layouts(draw, x)


@st.composite
def adaptive_cases(draw):
    spatial_dims = draw(st.integers(1, 3))
    sizes = draw(st.lists(st.integers(1, 9), min_size=spatial_dims, max_size=spatial_dims))
    batch = [draw(st.integers(1, 2))] if draw(st.booleans()) else []
    shape = tuple(batch + [draw(st.integers(1, 3))] + sizes)
    output_size = draw(st.lists(st.integers(1, 10), min_size=spatial_dims, max_size=spatial_dims))
    dtype = draw(st.sampled_from(FLOAT_DTYPES))
    x = special_input(shape, draw(st.integers(0, 2**16)), dtype, draw(st.sampled_from([0.0, 0.1, 0.5])))
    return ADAPTIVE_MAX_POOL[spatial_dims], (output_size,), layouts(draw, x)


def gathered_ratio(op, args, in_sizes):
    """Window elements the indices decomposition gathers per input element."""
    if op in MAX_POOL_WITH_INDICES.values():
        kernel = args[0]
        windows = math.prod(
            tp.pooling_output_size(size, *geometry, args[4]) for size, geometry in zip(in_sizes, zip(*args[:4]))
        )
        return windows * math.prod(kernel) / math.prod(in_sizes)
    longest = [
        max(end - start for start, end in tp.adaptive_pool_bins(size, out)) for size, out in zip(in_sizes, args[0])
    ]
    return math.prod(args[0]) * math.prod(longest) / math.prod(in_sizes)


def check_against_aten(op, args, x):
    try:
        expected = op(x, *args)
    except RuntimeError:  # parameters ATen rejects, or no CPU kernel for this dtype
        assume(False)
    contiguous = op(x.contiguous(), *args)
    if not torch.equal(expected[1], contiguous[1]):
        # ATen's channels_last_3d quirk (test below): only all -inf windows differ; the decomposition,
        # like ATen's other kernels, reports their first valid position.
        assert x.dim() == 5 and x.is_contiguous(memory_format=torch.channels_last_3d)
        assert bool((expected[0][expected[1] != contiguous[1]] == -INF).all())
        expected = contiguous
    gm = pool_graph(op, args, x)
    tp.decompose_tuple_pooling(gm, "tensorrt")
    if any(node.target in (tp.MAX_POOL_INDICES, tp.ADAPTIVE_MAX_POOL_INDICES) for node in call_nodes(gm)):
        # Only a window with no input element at all (see the test above), or windows over the gather budget,
        # keep the indices op.
        in_sizes = list(x.shape[x.dim() - len(args[0]) :])
        assert (expected[1] >= math.prod(in_sizes)).any() or gathered_ratio(op, args, in_sizes) > tp.MAX_GATHER_RATIO
    else:
        assert {node.target for node in call_nodes(gm)} <= CONVERTIBLE
    values, indices = gm(x)
    assert_bit_identical(indices, expected[1])
    if op in MAX_POOL_WITH_INDICES.values():
        assert_bit_identical(values, expected[0])
    else:
        # amax may return either zero where a bin holds both 0.0 and -0.0 (documented); all else is exact.
        assert torch.equal(values.isnan(), expected[0].isnan())
        assert bool(((values == expected[0]) | values.isnan()).all())


@settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(max_pool_cases())
def test_property_max_pool_indices_bit_identical(case):
    check_against_aten(*case)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(adaptive_cases())
def test_property_adaptive_indices_bit_identical(case):
    check_against_aten(*case)


# ---------------------------------------------------------------------------------------------
# the switch


@pytest.fixture
def clean_switch(monkeypatch):
    monkeypatch.delenv(tp.POOL_INDICES.env, raising=False)
    monkeypatch.setattr(_config, "_warned", set())  # each problem is logged once per process
    trt_compat.set_pool_indices(None)
    yield monkeypatch
    trt_compat.set_pool_indices(None)


def indices_target(mode=None):
    x = torch.randn(1, 2, 4, 4)
    gm = pool_graph(MAX_POOL_WITH_INDICES[2], ([2, 2],), x, use=("indices",))
    tp.decompose_tuple_pooling(gm, mode)
    return "torch" if any(node.target is tp.MAX_POOL_INDICES for node in call_nodes(gm)) else "tensorrt"


def test_switch_default_is_tensorrt(clean_switch):
    assert trt_compat.get_pool_indices() == "tensorrt"
    assert indices_target() == "tensorrt"


def test_switch_environment_is_read_at_pass_time(clean_switch):
    clean_switch.setenv("TRT_COMPAT_POOL_INDICES", " Torch ")
    assert trt_compat.get_pool_indices() == "torch"
    assert indices_target() == "torch"
    clean_switch.setenv("TRT_COMPAT_POOL_INDICES", "tensorrt")
    assert indices_target() == "tensorrt"


def test_switch_api_overrides_the_environment_until_reset(clean_switch):
    clean_switch.setenv("TRT_COMPAT_POOL_INDICES", "tensorrt")
    trt_compat.set_pool_indices("torch")
    assert indices_target() == "torch"
    trt_compat.set_pool_indices("TensorRT")
    clean_switch.setenv("TRT_COMPAT_POOL_INDICES", "torch")
    assert indices_target() == "tensorrt"
    trt_compat.set_pool_indices(None)
    assert indices_target() == "torch"


def test_switch_argument_overrides_everything(clean_switch):
    trt_compat.set_pool_indices("torch")
    assert indices_target("tensorrt") == "tensorrt"
    with pytest.raises(ValueError, match="tensorrt"):
        tp.decompose_tuple_pooling(torch.fx.GraphModule(torch.nn.Module(), torch.fx.Graph()), "trt")


def test_switch_rejects_unknown_modes_from_python(clean_switch):
    with pytest.raises(ValueError, match="'tensorrt', 'torch'"):
        trt_compat.set_pool_indices("gpu")
    assert trt_compat.get_pool_indices() == "tensorrt"


def test_switch_ignores_unknown_environment_values_with_a_warning(clean_switch, caplog):
    clean_switch.setenv("TRT_COMPAT_POOL_INDICES", "gpu")
    with caplog.at_level(logging.WARNING, logger="trt_compat"):
        assert indices_target() == "tensorrt"
    assert "TRT_COMPAT_POOL_INDICES='gpu'" in caplog.text
