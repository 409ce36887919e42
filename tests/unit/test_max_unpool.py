"""max_unpool{2,3}d decomposed into zeros + scatter (pool_indices="tensorrt"). CPU only, no torch_tensorrt.

torch 2.13's default export decompositions already turn max_unpool into index_put, but Torch-TensorRT's
decomposition table keeps ``aten.max_unpool2d`` / ``max_unpool3d`` (see tests/integration/test_segnet.py),
so the models here are exported without decompositions (``nn.MaxUnpool1d`` exports as
``unsqueeze`` + ``max_unpool2d`` + ``squeeze``).

Duplicate indices (only overlapping pools produce them) write several values to one position. Where
those values are equal -- unpooling a pool's own values -- the result is deterministic and identical to
ATen's. Where they differ, ATen's CPU kernel is not consistent across releases (torch 2.4.1
max_unpool3d keeps the last write; torch 2.13 max_unpool2d/3d can keep an earlier one), and the
decomposition's ``scatter`` is unspecified too, in PyTorch and in TensorRT: the tests only require one
of the written values there.
"""

import pytest
import torch
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from torch import nn
from torch._subclasses.fake_tensor import FakeTensorMode
from torch.fx.passes.fake_tensor_prop import FakeTensorProp
from trt_compat.patches import tuple_pooling as tp

from tests.helpers.pooling import INF, MAX_POOL_WITH_INDICES, NAN, assert_bit_identical, call_nodes

aten = torch.ops.aten
UNPOOL = {2: aten.max_unpool2d.default, 3: aten.max_unpool3d.default}
CONVERTIBLE = {
    aten.reshape.default,
    aten.scalar_tensor.default,
    aten.expand.default,
    aten.scatter.src,  # unpool
    aten.max_pool1d.default,
    aten.max_pool2d.default,
    aten.max_pool3d.default,
    aten.index_select.default,
    aten.lt.Scalar,
    aten.where.self,
    aten.amax.default,
    aten.eq.Tensor,
    aten.amin.default,
    aten.isnan.default,
    aten.ge.Scalar,  # pooling values and indices
    aten.unsqueeze.default,
    aten.squeeze.dim,
    aten.add.Tensor,
    aten.relu.default,  # the models' own ops
}


def aten_reference(spatial_dims, *args):
    """ATen's own unpool, or None where this torch has no CPU kernel for the dtype (torch 2.4: no Half/BFloat16)."""
    try:
        return UNPOOL[spatial_dims](*args)
    except RuntimeError as exc:
        if "not implemented for" not in str(exc):
            raise
        return None


def check_vals(gm, *example):
    """Every call_function node has one tensor val, matching fake propagation of the rewritten graph."""
    recorded = {node.name: node.meta["val"] for node in call_nodes(gm)}
    assert all(isinstance(val, torch.Tensor) for val in recorded.values())
    FakeTensorProp(gm, FakeTensorMode(allow_non_fake_inputs=True)).propagate(*example)
    for node in call_nodes(gm):
        got, want = recorded[node.name], node.meta["val"]
        assert (tuple(got.shape), got.dtype) == (tuple(want.shape), want.dtype), node.name


def unpool_graph(spatial_dims, output_size, example_values, example_indices, extra=()):
    graph = torch.fx.Graph()
    values, indices = graph.placeholder("values"), graph.placeholder("indices")
    graph.output(graph.call_function(UNPOOL[spatial_dims], (values, indices, output_size, *extra)))
    gm = torch.fx.GraphModule(torch.nn.Module(), graph)
    FakeTensorProp(gm, FakeTensorMode()).propagate(example_values, example_indices)
    return gm


# ---------------------------------------------------------------------------------------------
# exported models: pool -> relu -> unpool


class PoolUnpool(nn.Module):
    def __init__(self, spatial_dims, kernel, stride=None, padding=0):
        super().__init__()
        pool = {1: nn.MaxPool1d, 2: nn.MaxPool2d, 3: nn.MaxPool3d}[spatial_dims]
        unpool = {1: nn.MaxUnpool1d, 2: nn.MaxUnpool2d, 3: nn.MaxUnpool3d}[spatial_dims]
        self.pool = pool(kernel, stride, padding, return_indices=True)
        self.unpool = unpool(kernel, stride, padding)

    def forward(self, x):
        values, indices = self.pool(x)
        return self.unpool(torch.relu(values) + 1, indices, output_size=x.shape[-self.spatial_dims :])

    @property
    def spatial_dims(self):
        return {nn.MaxPool1d: 1, nn.MaxPool2d: 2, nn.MaxPool3d: 3}[type(self.pool)]


EXPORTED = {
    "1d": (PoolUnpool(1, 2), (2, 3, 9)),
    "1d-unbatched-padded": (PoolUnpool(1, 3, 3, 1), (3, 10)),
    "2d": (PoolUnpool(2, 2), (2, 3, 8, 6)),
    "2d-odd-size": (PoolUnpool(2, (2, 3), (2, 3)), (1, 2, 7, 8)),
    "2d-unbatched": (PoolUnpool(2, 2), (3, 6, 6)),
    "3d": (PoolUnpool(3, 2), (1, 2, 4, 6, 4)),
    "3d-unbatched-padded": (PoolUnpool(3, 3, 3, 1), (2, 5, 6, 7)),
}


@pytest.mark.parametrize("case", list(EXPORTED))
def test_exported_pool_unpool_is_bit_identical(case):
    model, shape = EXPORTED[case]
    example = torch.randn(shape)
    gm = torch.export.export(model, (example,)).graph_module
    assert any(tp.is_max_unpool_node(node) for node in gm.graph.nodes)
    inputs = [example, torch.randint(-2, 3, shape).float(), torch.full(shape, -INF)]
    inputs[1][..., 0] = NAN
    expected = [model(x) for x in inputs]

    tp.decompose_tuple_pooling(gm, "tensorrt")

    assert not any(tp.is_max_unpool_node(node) or tp.is_tuple_pooling_node(node) for node in gm.graph.nodes)
    assert {node.target for node in call_nodes(gm)} <= CONVERTIBLE, gm.graph
    check_vals(gm, example)
    for x, want in zip(inputs, expected):
        (got,) = gm(x)
        assert_bit_identical(got, want)


def test_torch_mode_leaves_unpool_alone():
    model, shape = EXPORTED["2d"]
    gm = torch.export.export(model, (torch.randn(shape),)).graph_module
    tp.decompose_tuple_pooling(gm, "torch")
    assert sum(tp.is_max_unpool_node(node) for node in gm.graph.nodes) == 1


# ---------------------------------------------------------------------------------------------
# hand-built graphs


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16, torch.float64], ids=str)
@pytest.mark.parametrize("layout", ["contiguous", "channels_last", "strided"])
def test_unpool2d_layouts_and_dtypes(dtype, layout):
    x = torch.randn(2, 3, 6, 8).to(dtype)
    values, indices = MAX_POOL_WITH_INDICES[2](x, [2, 2])
    values = values * -1.5  # not the input's values: unique indices, so the result is deterministic
    if layout == "channels_last":
        values, indices = (t.contiguous(memory_format=torch.channels_last) for t in (values, indices))
    elif layout == "strided":
        values, indices = values.transpose(2, 3).contiguous().transpose(2, 3), indices
    expected = aten_reference(2, values, indices, [7, 9])
    if expected is None:
        pytest.skip(f"ATen on torch {torch.__version__} has no CPU max_unpool2d for {dtype}")
    gm = unpool_graph(2, [7, 9], values, indices)  # larger than the pooled input: trailing zeros
    tp.decompose_tuple_pooling(gm)
    assert {node.target for node in call_nodes(gm)} <= CONVERTIBLE
    check_vals(gm, values, indices)
    assert_bit_identical(gm(values, indices), expected)


def test_unpool3d_with_stride_and_padding_arguments():
    x = torch.randn(2, 5, 6, 7)
    values, indices = MAX_POOL_WITH_INDICES[3](x, [3, 3, 3], [2, 2, 2], [1, 1, 1])
    extra = ([2, 2, 2], [1, 1, 1])
    gm = unpool_graph(3, [5, 6, 7], values, indices, extra)
    tp.decompose_tuple_pooling(gm)
    check_vals(gm, values, indices)
    assert_bit_identical(gm(values, indices), UNPOOL[3](values, indices, [5, 6, 7], *extra))


def test_duplicate_indices_with_equal_values_match_aten():
    # Overlapping windows (stride 1 < kernel 3) pick the same maxima again and again.
    x = torch.randint(-3, 4, (2, 3, 7, 7)).float()
    values, indices = MAX_POOL_WITH_INDICES[2](x, [3, 3], [1, 1])
    assert len(set(indices[0, 0].flatten().tolist())) < indices[0, 0].numel()
    gm = unpool_graph(2, [7, 7], values, indices)
    tp.decompose_tuple_pooling(gm)
    assert_bit_identical(gm(values, indices), UNPOOL[2](values, indices, [7, 7]))


def test_duplicate_indices_with_different_values_write_one_of_them():
    values = torch.tensor([[[[1.0, 2.0, 3.0, 4.0]]]])
    indices = torch.tensor([[[[1, 1, 0, 1]]]])
    gm = unpool_graph(2, [1, 3], values, indices)
    tp.decompose_tuple_pooling(gm)
    ours, theirs = gm(values, indices), UNPOOL[2](values, indices, [1, 3])
    for result in (ours, theirs):
        assert result[0, 0, 0, 0] == 3.0 and result[0, 0, 0, 2] == 0.0
        assert result[0, 0, 0, 1].item() in (1.0, 2.0, 4.0)


def test_out_of_range_indices_raise_like_aten():
    values = torch.ones(1, 1, 2, 2)
    indices = torch.tensor([[[[0, 1], [2, 9]]]])
    gm = unpool_graph(2, [2, 2], values, torch.zeros_like(indices))
    tp.decompose_tuple_pooling(gm)
    with pytest.raises(RuntimeError):
        UNPOOL[2](values, indices, [2, 2])
    with pytest.raises(RuntimeError):
        gm(values, indices)


def test_unpool_without_static_shapes_is_left_alone():
    graph = torch.fx.Graph()
    values, indices = graph.placeholder("values"), graph.placeholder("indices")
    graph.output(graph.call_function(UNPOOL[2], (values, indices, [4, 4])))
    gm = torch.fx.GraphModule(torch.nn.Module(), graph)  # no meta['val'] anywhere
    code = gm.code
    tp.decompose_tuple_pooling(gm)
    assert gm.code == code


def test_unpool_with_dynamic_batch_is_left_alone():
    batch = torch.export.Dim("batch", min=2, max=8)
    model, shape = EXPORTED["2d"]
    gm = torch.export.export(model, (torch.randn(shape),), dynamic_shapes={"x": {0: batch}}).graph_module
    tp.decompose_tuple_pooling(gm)
    assert sum(tp.is_max_unpool_node(node) for node in gm.graph.nodes) == 1
    x = torch.randn(5, *shape[1:])
    assert_bit_identical(gm(x)[0], model(x))


# ---------------------------------------------------------------------------------------------
# property test: pool, change or keep the values, unpool


@st.composite
def unpool_cases(draw):
    spatial_dims = draw(st.sampled_from([2, 3]))
    sizes = draw(st.lists(st.integers(1, 7), min_size=spatial_dims, max_size=spatial_dims))
    batch = [draw(st.integers(1, 2))] if draw(st.booleans()) else []
    shape = tuple(batch + [draw(st.integers(1, 3))] + sizes)
    kernel = [draw(st.integers(1, size)) for size in sizes]
    overlapping = draw(st.booleans())
    stride = [draw(st.integers(1, k)) if overlapping else k for k in kernel]
    padding = [draw(st.integers(0, k // 2)) for k in kernel]
    dtype = draw(st.sampled_from([torch.float32, torch.float16, torch.bfloat16]))
    gen = torch.Generator().manual_seed(draw(st.integers(0, 2**16)))
    x = torch.randint(-3, 4, shape, generator=gen).to(dtype)
    x[torch.rand(shape, generator=gen) < 0.1] = NAN
    grow = [draw(st.integers(0, 2)) for _ in sizes]
    return spatial_dims, x, (kernel, stride, padding), overlapping, grow


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(unpool_cases())
def test_property_unpool_bit_identical(case):
    spatial_dims, x, (kernel, stride, padding), overlapping, grow = case
    try:
        values, indices = MAX_POOL_WITH_INDICES[spatial_dims](x, kernel, stride, padding)
    except RuntimeError:
        assume(False)
    if not overlapping:
        values = values * 2 - 1  # unique indices: any values give a deterministic result
    output_size = [size + extra for size, extra in zip(x.shape[-spatial_dims:], grow)]
    extra = (stride, padding) if spatial_dims == 3 else ()
    expected = aten_reference(spatial_dims, values, indices, output_size, *extra)
    assume(expected is not None)
    gm = unpool_graph(spatial_dims, output_size, values, indices, extra)

    tp.decompose_tuple_pooling(gm, "tensorrt")

    assert {node.target for node in call_nodes(gm)} <= CONVERTIBLE
    check_vals(gm, values, indices)
    assert_bit_identical(gm(values, indices), expected)
