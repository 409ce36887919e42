"""Tests for trt_compat.patches.tuple_pooling: CPU only, no torch_tensorrt needed.

Eager results of rewritten graphs are compared bit for bit (NaN positions included) with the
original ATen ops, and every new node's meta['val'] with what FakeTensorProp computes. Tests that
depend on where the indices are computed run in both modes ("tensorrt", the default: decomposed into
converter-friendly ops; "torch": the trt_compat:: indices ops); the decomposition itself is tested in
depth in test_pooling_indices.py.
"""

import importlib
import logging
import operator

import pytest
import torch
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from torch import nn
from torch._subclasses.fake_tensor import FakeTensorMode
from torch.fx.passes.fake_tensor_prop import FakeTensorProp
from trt_compat.patches import tuple_pooling as tp

from tests.helpers.pooling import ADAPTIVE_MAX_POOL, INF, MAX_POOL, MAX_POOL_WITH_INDICES, NAN, call_nodes

aten = torch.ops.aten
MODES = ["tensorrt", "torch"]


# ---------------------------------------------------------------------------------------------
# helpers


def special_input(shape, seed, dtype=torch.float32, nan_fraction=0.08):
    """Small integers (so windows tie) with NaN, -inf and +inf sprinkled in."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.randint(-2, 3, shape, generator=gen).to(dtype)
    draw = torch.rand(shape, generator=gen)
    x[draw < nan_fraction] = NAN
    x[(draw >= nan_fraction) & (draw < nan_fraction + 0.15)] = -INF
    x[(draw >= nan_fraction + 0.15) & (draw < nan_fraction + 0.2)] = INF
    return x


def inputs_for(shape):
    """Plain, special, all -inf (ties of -inf everywhere), all equal, and NaN-heavy inputs."""
    return [
        torch.randn(shape, generator=torch.Generator().manual_seed(0)),
        special_input(shape, seed=1),
        torch.full(shape, -INF),
        torch.full(shape, 3.0),
        special_input(shape, seed=2, nan_fraction=0.5),
    ]


def assert_bit_identical(actual, expected):
    assert actual.dtype == expected.dtype
    assert actual.shape == expected.shape
    if expected.dtype == torch.int64:
        assert torch.equal(actual, expected)
    else:
        torch.testing.assert_close(actual, expected, rtol=0, atol=0, equal_nan=True)
        assert torch.equal(actual.isnan(), expected.isnan())


def assert_outputs_identical(actual, expected):
    assert len(actual) == len(expected)
    for got, want in zip(actual, expected):
        assert_bit_identical(got, want)


def count_target(gm, target):
    return sum(node.target == target for node in call_nodes(gm))


def check_rewritten_graph(gm, example_inputs, fake_prop=True):
    """No tuple crosses anything, vals are single tensors matching fake propagation, metas unshared."""
    nodes = call_nodes(gm)
    assert not any(tp.is_tuple_pooling_node(node) for node in nodes)
    assert not any(node.target is operator.getitem for node in nodes)
    recorded = {}
    for node in nodes:
        val = node.meta.get("val")
        assert isinstance(val, torch.Tensor), f"{node.name} has meta['val'] {val!r}"
        recorded[node.name] = val
    all_nodes = list(gm.graph.nodes)
    assert len({id(node.meta) for node in all_nodes}) == len(all_nodes)
    assert len({node.name for node in all_nodes}) == len(all_nodes)
    stacks = [node.meta["nn_module_stack"] for node in nodes if "nn_module_stack" in node.meta]
    assert len({id(stack) for stack in stacks}) == len(stacks)
    if fake_prop:
        # The decomposed indices read their window table from a buffer (a real tensor).
        FakeTensorProp(gm, FakeTensorMode(allow_non_fake_inputs=True)).propagate(*example_inputs)
        for node in nodes:
            expected = node.meta["val"]
            got = recorded[node.name]
            assert tuple(got.shape) == tuple(expected.shape), node.name
            assert got.dtype == expected.dtype, node.name
            assert got.device == expected.device, node.name


def pool_graph(op, args, kwargs=None, use=("values", "indices"), example=None):
    """x -> op -> getitem 0/1 (both always created; unused ones stay dead) -> outputs in ``use``."""
    graph = torch.fx.Graph()
    x = graph.placeholder("x")
    pool = graph.call_function(op, (x, *args), kwargs or {})
    items = {
        "values": graph.call_function(operator.getitem, (pool, 0)),
        "indices": graph.call_function(operator.getitem, (pool, 1)),
    }
    graph.output(tuple(items[name] for name in use))
    gm = torch.fx.GraphModule(torch.nn.Module(), graph)
    if example is not None:
        FakeTensorProp(gm, FakeTensorMode()).propagate(example)
    return gm


def reference(op, x, args, kwargs=None, use=("values", "indices")):
    values, indices = op(x, *args, **(kwargs or {}))
    return tuple({"values": values, "indices": indices}[name] for name in use)


def pool_node(gm):
    return next(node for node in gm.graph.nodes if tp.is_tuple_pooling_node(node))


# ---------------------------------------------------------------------------------------------
# exported models


class PoolModel(torch.nn.Module):
    def __init__(self, pool, use_values=True, use_indices=True):
        super().__init__()
        self.pool = pool
        self.use_values = use_values
        self.use_indices = use_indices

    def forward(self, x):
        out = self.pool(x)
        values, indices = out if isinstance(out, tuple) else (out, None)
        results = []
        if self.use_values:
            results.append(values + 1)
        if self.use_indices:
            results.append(indices)
        return tuple(results)


EXPORTED_CASES = {
    "max1d-pad-stride": (nn.MaxPool1d(3, stride=2, padding=1, return_indices=True), (2, 3, 9), True, True),
    "max2d-unbatched-dilation-ceil": (
        nn.MaxPool2d(3, stride=2, padding=1, dilation=2, ceil_mode=True, return_indices=True),
        (3, 11, 10),
        True,
        True,
    ),
    "max2d-values-only": (nn.MaxPool2d(2), (2, 3, 8, 8), True, False),
    "max2d-indices-only": (
        nn.MaxPool2d((2, 3), stride=(1, 2), return_indices=True),
        (2, 3, 7, 9),
        False,
        True,
    ),
    "max3d-ceil": (
        nn.MaxPool3d((2, 3, 2), stride=(1, 2, 2), padding=(1, 1, 0), ceil_mode=True, return_indices=True),
        (2, 2, 5, 7, 6),
        True,
        True,
    ),
    "max3d-unbatched-values-only": (nn.MaxPool3d(2, padding=1), (2, 4, 5, 6), True, False),
    "adaptive1d-divisible": (nn.AdaptiveMaxPool1d(4, return_indices=True), (2, 3, 12), True, True),
    "adaptive2d-mixed": (nn.AdaptiveMaxPool2d((3, 5), return_indices=True), (2, 3, 7, 10), True, True),
    "adaptive2d-global-unbatched": (nn.AdaptiveMaxPool2d(1), (3, 8, 6), True, False),
    "adaptive2d-upsampling": (nn.AdaptiveMaxPool2d((5, 4), return_indices=True), (2, 3, 3, 2), True, True),
    "adaptive2d-identity-unbatched": (nn.AdaptiveMaxPool2d((4, 5)), (2, 4, 5), True, False),
    "adaptive3d-mixed": (nn.AdaptiveMaxPool3d((2, 3, 4), return_indices=True), (1, 2, 6, 5, 4), True, True),
    "adaptive3d-indices-only": (
        nn.AdaptiveMaxPool3d((3, 2, 2), return_indices=True),
        (2, 7, 4, 5),
        False,
        True,
    ),
}


def export_graph(model, example, **kwargs):
    return torch.export.export(model, (example,), **kwargs).run_decompositions().graph_module


def expected_indices_nodes(gm, indices_op, use_indices, mode):
    """The custom op in "torch" mode; in "tensorrt" mode no custom op but one window gather."""
    if mode == "torch":
        assert count_target(gm, indices_op) == (1 if use_indices else 0)
    else:
        assert count_target(gm, indices_op) == 0
        assert count_target(gm, aten.index_select.default) == (1 if use_indices else 0)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("case", list(EXPORTED_CASES))
def test_exported_model(case, mode):
    pool, shape, use_values, use_indices = EXPORTED_CASES[case]
    example = torch.randn(shape)
    gm = export_graph(PoolModel(pool, use_values, use_indices), example)
    assert any(tp.is_tuple_pooling_node(node) for node in gm.graph.nodes)
    inputs = inputs_for(shape)
    expected = [gm(x) for x in inputs]

    assert tp.decompose_tuple_pooling(gm, mode) is gm

    for x, want in zip(inputs, expected):
        assert_outputs_identical(gm(x), want)
    adaptive = isinstance(pool, (nn.AdaptiveMaxPool1d, nn.AdaptiveMaxPool2d, nn.AdaptiveMaxPool3d))
    indices_op = tp.ADAPTIVE_MAX_POOL_INDICES if adaptive else tp.MAX_POOL_INDICES
    expected_indices_nodes(gm, indices_op, use_indices, mode)
    if not adaptive:
        assert sum(node.target in MAX_POOL.values() for node in call_nodes(gm)) == (1 if use_values else 0)
    elif use_values and "identity" not in case:
        assert count_target(gm, aten.amax.default) >= 1
    check_rewritten_graph(gm, [example])


@pytest.mark.parametrize("mode", MODES)
def test_unlifted_module_with_parameters(mode):
    model = nn.Sequential(nn.Conv2d(2, 4, 3), nn.AdaptiveMaxPool2d((2, 3), return_indices=True))
    example = special_input((2, 2, 9, 8), seed=10)
    gm = torch.export.export(model, (example,)).run_decompositions().module()
    expected = gm(example)

    tp.decompose_tuple_pooling(gm, mode)

    assert not any(tp.is_tuple_pooling_node(node) for node in gm.graph.nodes)
    expected_indices_nodes(gm, tp.ADAPTIVE_MAX_POOL_INDICES, True, mode)
    assert_outputs_identical(gm(example), expected)


def test_exported_provenance_is_copied_not_shared():
    gm = export_graph(PoolModel(nn.AdaptiveMaxPool2d((3, 5), return_indices=True)), torch.randn(2, 3, 7, 10))
    old_meta = pool_node(gm).meta
    tp.decompose_tuple_pooling(gm)
    new_nodes = [node for node in call_nodes(gm) if node.target is not aten.add.Tensor]
    assert len(new_nodes) > 2
    for node in new_nodes:
        assert node.meta is not old_meta
        for key in ("stack_trace", "nn_module_stack"):
            if key in old_meta:
                assert node.meta[key] == old_meta[key]
        if "nn_module_stack" in old_meta:
            assert node.meta["nn_module_stack"] is not old_meta["nn_module_stack"]


@pytest.mark.parametrize("mode", MODES)
def test_exported_dynamic_batch_avoids_baking_the_batch_size(mode):
    batch = torch.export.Dim("batch", min=2, max=16)
    model = PoolModel(nn.AdaptiveMaxPool2d((3, 5), return_indices=True))
    gm = export_graph(model, torch.randn(4, 3, 7, 10), dynamic_shapes={"x": {0: batch}})

    tp.decompose_tuple_pooling(gm, mode)

    # 10 -> 5 is divisible, but a reshape would need the symbolic batch size, so slices are used;
    # the decomposed indices reshape with -1 in place of the batch size.
    reshapes = [node for node in call_nodes(gm) if node.target is aten.reshape.default]
    assert all(node.args[1][0] == -1 for node in reshapes)
    assert len(reshapes) == (0 if mode == "torch" else 2)
    check_rewritten_graph(gm, [], fake_prop=False)
    for node in call_nodes(gm):
        # Only the window-table mask and scalar constants carry no batch dim.
        if node.target not in (aten.lt.Scalar, aten.scalar_tensor.default):
            assert not isinstance(node.meta["val"].shape[0], int), node.name
    for n in (2, 5):
        x = special_input((n, 3, 7, 10), seed=n)
        values, indices = aten.adaptive_max_pool2d.default(x, [3, 5])
        assert_outputs_identical(gm(x), (values + 1, indices))


# ---------------------------------------------------------------------------------------------
# hand-built graphs


HAND_BUILT_CASES = {
    # name: (op, args, input shape)
    "max1d": (MAX_POOL_WITH_INDICES[1], ([3], [2], [1], [2], True), (2, 3, 11)),
    "max1d-unbatched-defaults": (MAX_POOL_WITH_INDICES[1], ([2],), (3, 8)),
    "max2d-scalar-lists": (MAX_POOL_WITH_INDICES[2], ([3], [], [1], [1], True), (3, 7, 6)),
    "max3d-dilation": (
        MAX_POOL_WITH_INDICES[3],
        ([2, 2, 3], [1, 2, 1], [1, 0, 1], [2, 1, 1], False),
        (1, 2, 5, 6, 7),
    ),
    "adaptive1d-nondivisible": (ADAPTIVE_MAX_POOL[1], ([5],), (2, 3, 7)),
    "adaptive1d-unbatched-upsampling": (ADAPTIVE_MAX_POOL[1], ([9],), (3, 4)),
    "adaptive2d-global": (ADAPTIVE_MAX_POOL[2], ([1, 1],), (2, 3, 5, 4)),
    "adaptive3d-unbatched": (ADAPTIVE_MAX_POOL[3], ([2, 3, 1],), (2, 4, 7, 5)),
}
USES = {"values+indices": ("values", "indices"), "values": ("values",), "indices": ("indices",)}


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("use", list(USES))
@pytest.mark.parametrize("case", list(HAND_BUILT_CASES))
def test_hand_built_graph(case, use, mode):
    op, args, shape = HAND_BUILT_CASES[case]
    use = USES[use]
    example = torch.randn(shape)
    gm = pool_graph(op, args, use=use, example=example)

    tp.decompose_tuple_pooling(gm, mode)

    check_rewritten_graph(gm, [example])
    indices_op = tp.ADAPTIVE_MAX_POOL_INDICES if op in ADAPTIVE_MAX_POOL.values() else tp.MAX_POOL_INDICES
    expected_indices_nodes(gm, indices_op, "indices" in use, mode)
    if "values" not in use and mode == "torch":
        assert len(call_nodes(gm)) == 1
    for x in inputs_for(shape):
        assert_outputs_identical(gm(x), reference(op, x, args, use=use))


@pytest.mark.parametrize("dtype", [torch.float64, torch.bfloat16, torch.float16])
@pytest.mark.parametrize(
    "op",
    [MAX_POOL_WITH_INDICES[2], ADAPTIVE_MAX_POOL[2], ADAPTIVE_MAX_POOL[3]],
    ids=["max2d", "adaptive2d", "adaptive3d"],
)
def test_other_float_dtypes(op, dtype):
    shape, args = {
        MAX_POOL_WITH_INDICES[2]: ((2, 3, 6, 7), ([3, 2], [2, 1])),
        ADAPTIVE_MAX_POOL[2]: ((2, 3, 6, 7), ([4, 3],)),
        ADAPTIVE_MAX_POOL[3]: ((2, 3, 6, 7, 4), ([2, 3, 3],)),
    }[op]
    x = special_input(shape, seed=3, dtype=dtype)
    try:
        expected = reference(op, x, args)
    except RuntimeError as error:
        pytest.skip(f"ATen has no CPU kernel here: {error}")
    gm = pool_graph(op, args, example=x)
    tp.decompose_tuple_pooling(gm)
    check_rewritten_graph(gm, [x])
    assert_outputs_identical(gm(x), expected)


def test_channels_last_input():
    x = special_input((2, 5, 7, 6), seed=4).contiguous(memory_format=torch.channels_last)
    for op, args in ((MAX_POOL_WITH_INDICES[2], ([3, 2], [1, 2], [1, 0])), (ADAPTIVE_MAX_POOL[2], ([3, 2],))):
        gm = pool_graph(op, args, example=x)
        tp.decompose_tuple_pooling(gm)
        check_rewritten_graph(gm, [x])
        assert_outputs_identical(gm(x), reference(op, x, args))


def test_adaptive_identity_values_are_a_new_tensor():
    op, args = ADAPTIVE_MAX_POOL[2], ([5, 4],)
    x = special_input((2, 3, 5, 4), seed=9)
    gm = pool_graph(op, args, use=("values",), example=x)

    tp.decompose_tuple_pooling(gm)

    check_rewritten_graph(gm, [x])
    (values,) = gm(x)
    assert values.data_ptr() != x.data_ptr()
    assert_outputs_identical((values,), reference(op, x, args, use=("values",)))


def test_kwargs_are_kept_on_values_and_understood_for_indices():
    op = MAX_POOL_WITH_INDICES[2]
    kwargs = {"kernel_size": [3, 2], "padding": [1], "ceil_mode": True}
    x = special_input((2, 3, 7, 8), seed=5)
    gm = pool_graph(op, (), kwargs=kwargs, example=x)

    tp.decompose_tuple_pooling(gm, "torch")

    values_node = next(node for node in call_nodes(gm) if node.target is MAX_POOL[2])
    assert values_node.kwargs == kwargs
    indices_node = next(node for node in call_nodes(gm) if node.target is tp.MAX_POOL_INDICES)
    # Explicit per-dim lists: the indices op reads the pooling rank from their length.
    assert indices_node.args[1:] == ([3, 2], [3, 2], [1, 1], [1, 1], True)
    check_rewritten_graph(gm, [x])
    assert_outputs_identical(gm(x), reference(op, x, (), kwargs))


def test_stale_single_tensor_val_is_recomputed():
    """Torch-TensorRT 2.2-2.4 leaves a tuple node's val on a single-output node; it must not leak."""
    op, args = MAX_POOL_WITH_INDICES[2], ([2, 2],)
    x = torch.randn(2, 3, 6, 8)
    gm = pool_graph(op, args, example=x)
    node = pool_node(gm)
    node.meta["val"] = node.meta["val"][1]  # a lone int64 tensor: the wrong dtype for the values

    tp.decompose_tuple_pooling(gm)

    check_rewritten_graph(gm, [x])
    values_node = next(n for n in call_nodes(gm) if n.target is MAX_POOL[2])
    assert values_node.meta["val"].dtype == torch.float32


def test_tuple_val_is_split_between_the_new_nodes():
    op, args = MAX_POOL_WITH_INDICES[3], ([2, 2, 2],)
    x = torch.randn(1, 2, 4, 4, 4)
    gm = pool_graph(op, args, example=x)
    values_val, indices_val = pool_node(gm).meta["val"]

    tp.decompose_tuple_pooling(gm, "torch")

    assert next(n for n in call_nodes(gm) if n.target is MAX_POOL[3]).meta["val"] is values_val
    assert next(n for n in call_nodes(gm) if n.target is tp.MAX_POOL_INDICES).meta["val"] is indices_val


def test_without_any_meta_max_pool_is_rewritten_and_vals_stay_absent():
    op, args = MAX_POOL_WITH_INDICES[2], ([3, 3], [2, 2], [1, 1])
    gm = pool_graph(op, args)

    tp.decompose_tuple_pooling(gm)

    assert not any(tp.is_tuple_pooling_node(node) for node in gm.graph.nodes)
    assert all("val" not in node.meta for node in call_nodes(gm))
    x = special_input((2, 3, 9, 9), seed=6)
    assert_outputs_identical(gm(x), reference(op, x, args))


def test_adaptive_without_input_shape_is_left_alone_unless_only_indices_are_used(caplog):
    op, args = ADAPTIVE_MAX_POOL[2], ([3, 3],)
    gm = pool_graph(op, args)
    gm.recompile = lambda: pytest.fail("nothing changed, nothing to recompile")
    with caplog.at_level(logging.DEBUG, logger=tp.logger.name):
        tp.decompose_tuple_pooling(gm)
    assert tp.is_tuple_pooling_node(pool_node(gm))
    assert "static spatial sizes" in caplog.text

    gm = pool_graph(op, args, use=("indices",))
    tp.decompose_tuple_pooling(gm)
    assert [node.target for node in call_nodes(gm)] == [tp.ADAPTIVE_MAX_POOL_INDICES]
    x = special_input((2, 3, 8, 7), seed=7)
    assert_outputs_identical(gm(x), reference(op, x, args, use=("indices",)))


def test_node_with_a_non_getitem_user_is_left_alone(caplog):
    graph = torch.fx.Graph()
    x = graph.placeholder("x")
    pool = graph.call_function(MAX_POOL_WITH_INDICES[2], (x, [2, 2]))
    graph.output((graph.call_function(operator.getitem, (pool, 1)), pool))
    gm = torch.fx.GraphModule(torch.nn.Module(), graph)
    code = gm.code
    with caplog.at_level(logging.DEBUG, logger=tp.logger.name):
        tp.decompose_tuple_pooling(gm)
    assert gm.code == code
    assert "users other than getitem" in caplog.text


@pytest.mark.parametrize("mode", MODES)
def test_repeated_and_negative_getitems_share_one_replacement(mode):
    op, args = MAX_POOL_WITH_INDICES[2], ([2, 2],)
    x = torch.randn(2, 3, 6, 6)
    graph = torch.fx.Graph()
    placeholder = graph.placeholder("x")
    pool = graph.call_function(op, (placeholder, *args))
    outputs = [graph.call_function(operator.getitem, (pool, index)) for index in (1, -1, 0, -2)]
    graph.output(tuple(outputs))
    gm = torch.fx.GraphModule(torch.nn.Module(), graph)
    FakeTensorProp(gm, FakeTensorMode()).propagate(x)

    tp.decompose_tuple_pooling(gm, mode)

    expected_indices_nodes(gm, tp.MAX_POOL_INDICES, True, mode)
    assert count_target(gm, MAX_POOL[2]) == 1
    check_rewritten_graph(gm, [x])
    values, indices = op(x, *args)
    assert_outputs_identical(gm(x), (indices, indices, values, values))


def test_pooling_whose_outputs_are_all_dead_is_removed():
    graph = torch.fx.Graph()
    x = graph.placeholder("x")
    pool = graph.call_function(ADAPTIVE_MAX_POOL[2], (x, [2, 2]))
    graph.call_function(operator.getitem, (pool, 0))
    graph.output(graph.call_function(aten.relu.default, (x,)))
    gm = torch.fx.GraphModule(torch.nn.Module(), graph)

    tp.decompose_tuple_pooling(gm)

    assert [node.target for node in call_nodes(gm)] == [aten.relu.default]


def test_graph_without_pooling_is_not_recompiled(monkeypatch):
    gm = export_graph(torch.nn.Sequential(torch.nn.ReLU()), torch.randn(2, 3))
    code = gm.code
    calls = []
    monkeypatch.setattr(gm, "recompile", lambda: calls.append(1))

    assert tp.decompose_tuple_pooling(gm) is gm

    assert calls == []
    assert gm.code == code


def test_rewrite_recompiles_exactly_once(monkeypatch):
    graph = torch.fx.Graph()
    x = graph.placeholder("x")
    outputs = []
    for op, args in ((MAX_POOL_WITH_INDICES[2], ([2, 2],)), (ADAPTIVE_MAX_POOL[2], ([2, 2],))):
        pool = graph.call_function(op, (x, *args))
        outputs += [graph.call_function(operator.getitem, (pool, index)) for index in (0, 1)]
    graph.output(tuple(outputs))
    gm = torch.fx.GraphModule(torch.nn.Module(), graph)
    FakeTensorProp(gm, FakeTensorMode()).propagate(torch.randn(1, 2, 4, 4))
    recompile = gm.recompile
    calls = []
    monkeypatch.setattr(gm, "recompile", lambda: calls.append(1) or recompile())

    tp.decompose_tuple_pooling(gm)

    assert calls == [1]
    assert not any(tp.is_tuple_pooling_node(node) for node in gm.graph.nodes)


# ---------------------------------------------------------------------------------------------
# custom ops and helpers


def test_adaptive_pool_bins_match_aten_indices():
    for in_size in range(1, 12):
        for out_size in range(1, 14):
            bins = tp.adaptive_pool_bins(in_size, out_size)
            x = torch.arange(in_size, dtype=torch.float32).reshape(1, 1, in_size)
            values, _ = ADAPTIVE_MAX_POOL[1](x, [out_size])
            # With increasing input, the max of each bin sits at its last element.
            assert [end - 1 for _, end in bins] == values.flatten().long().tolist()
            assert all(0 <= start < end <= in_size for start, end in bins)


def test_indices_ops_have_fake_and_meta_kernels():
    real = torch.randn(2, 3, 9, 8)
    max_pool_args = ([3, 3], [2, 2], [1, 1], [1, 1], True)
    expected = MAX_POOL_WITH_INDICES[2](real, *max_pool_args)[1]
    with FakeTensorMode() as mode:
        x = mode.from_tensor(real)
        indices = tp.MAX_POOL_INDICES(x, *max_pool_args)
        assert indices.shape == expected.shape and indices.dtype == torch.int64
        assert tp.ADAPTIVE_MAX_POOL_INDICES(x, [4, 3]).shape == (2, 3, 4, 3)
    meta = torch.empty(3, 7, device="meta")
    assert tp.ADAPTIVE_MAX_POOL_INDICES(meta, [2]).shape == (3, 2)
    assert tp.MAX_POOL_INDICES(meta, [2], [2], [0], [1], False).shape == (3, 3)


def test_indices_op_rejects_unsupported_ranks():
    with pytest.raises(Exception, match="spatial dims"):
        tp.MAX_POOL_INDICES(torch.randn(1, 1, 2, 2, 2, 2), [1] * 4, [1] * 4, [0] * 4, [1] * 4, False)


def test_registration_is_idempotent():
    library = tp._LIBRARY
    assert tp._register_ops() is None
    module = importlib.reload(tp)
    assert module._LIBRARY is library
    x = special_input((2, 3, 6), seed=8)
    assert torch.equal(module.ADAPTIVE_MAX_POOL_INDICES(x, [4]), ADAPTIVE_MAX_POOL[1](x, [4])[1])


# ---------------------------------------------------------------------------------------------
# property test


@st.composite
def pooling_cases(draw):
    spatial_dims = draw(st.integers(1, 3))
    sizes = draw(st.lists(st.integers(1, 8), min_size=spatial_dims, max_size=spatial_dims))
    batch = [draw(st.integers(1, 2))] if draw(st.booleans()) else []
    shape = tuple(batch + [draw(st.integers(1, 3))] + sizes)
    if draw(st.booleans()):
        op = ADAPTIVE_MAX_POOL[spatial_dims]
        args = (draw(st.lists(st.integers(1, 9), min_size=spatial_dims, max_size=spatial_dims)),)
    else:
        op = MAX_POOL_WITH_INDICES[spatial_dims]
        dilation = [draw(st.integers(1, 2)) for _ in sizes]
        kernel = [draw(st.integers(1, (size - 1) // d + 1)) for size, d in zip(sizes, dilation)]
        stride = [draw(st.integers(1, 3)) for _ in sizes]
        padding = [draw(st.integers(0, k // 2)) for k in kernel]
        args = (kernel, stride, padding, dilation, draw(st.booleans()))
    dtype = draw(st.sampled_from([torch.float32, torch.float64]))
    nan_fraction = draw(st.sampled_from([0.0, 0.1, 0.5]))
    x = special_input(shape, seed=draw(st.integers(0, 2**16)), dtype=dtype, nan_fraction=nan_fraction)
    use = draw(st.sampled_from(list(USES.values())))
    stale_val = draw(st.booleans())
    mode = draw(st.sampled_from(MODES))
    return op, args, x, use, stale_val, mode


@settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(pooling_cases())
def test_property_bit_identical_to_aten(case):
    op, args, x, use, stale_val, mode = case
    try:
        expected = reference(op, x, args, use=use)
    except RuntimeError:
        assume(False)
    gm = pool_graph(op, args, use=use, example=x)
    if stale_val:
        node = pool_node(gm)
        node.meta["val"] = node.meta["val"][0]

    tp.decompose_tuple_pooling(gm, mode)

    check_rewritten_graph(gm, [x])
    assert_outputs_identical(gm(x), expected)
