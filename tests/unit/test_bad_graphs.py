"""Malformed and unusual graphs fed to each of trt_compat's graph functions.

``replace_views_with_reshapes``, ``decompose_tuple_pooling``, ``repair_submodule_inputs`` (the partition-input
repair) and ``trt_compat.audit.mismatches`` get nodes without ``meta``, ``tensor_meta`` only, SymInt / SymFloat
values, nested tuples, lists, None and dynamic shapes. Each case is either handled correctly (checked against
eager execution or fake propagation) or rejected with a PartitionInputError naming the node, its op and the
remedy.
"""

import operator

import pytest
import torch
from torch._subclasses.fake_tensor import FakeTensorMode
from torch.fx import Graph, GraphModule
from torch.fx.experimental.symbolic_shapes import ShapeEnv
from torch.fx.passes.fake_tensor_prop import FakeTensorProp
from torch.fx.passes.shape_prop import ShapeProp
from torch.fx.passes.split_module import split_module
from trt_compat.patches.tuple_partition_inputs import (
    PartitionInputError,
    boundary_problems,
    remember_partition,
    repair_submodule_inputs,
)
from trt_compat.patches.tuple_pooling import decompose_tuple_pooling
from trt_compat.patches.view_to_reshape_metadata import replace_views_with_reshapes

from trt_compat import audit

aten = torch.ops.aten
REMEDY = "Remedy: add "


def pool_graph():
    """x -> view -> max_pool2d_with_indices -> (values + 1, indices) and an adaptive pool of the values."""
    g = Graph()
    x = g.placeholder("x")
    flat = g.call_function(aten.view.default, (x, [1, 2, 36]))
    square = g.call_function(aten.view.default, (flat, [1, 2, 6, 6]))
    pool = g.call_function(aten.max_pool2d_with_indices.default, (square, [2, 2], [2, 2]))
    values = g.call_function(operator.getitem, (pool, 0))
    indices = g.call_function(operator.getitem, (pool, 1))
    adaptive = g.call_function(aten.adaptive_max_pool2d.default, (values, [2, 2]))
    adaptive_values = g.call_function(operator.getitem, (adaptive, 0))
    out = g.call_function(aten.add.Tensor, (adaptive_values, 1))
    g.output((out, indices))
    return GraphModule(torch.nn.Module(), g), torch.randn(1, 2, 6, 6)


def fake_vals(gm, *inputs):
    FakeTensorProp(gm, FakeTensorMode()).propagate(*inputs)
    return gm


def run_both(gm, x):
    """Eager outputs before and after the two graph passes."""
    with torch.no_grad():
        expected = [t.clone() for t in gm(x)]
        replace_views_with_reshapes(gm)
        decompose_tuple_pooling(gm)
        got = list(gm(x))
    for g, e in zip(got, expected):
        assert torch.equal(g, e)
    return gm


def targets(gm):
    return [n.target for n in gm.graph.nodes if n.op == "call_function"]


# ------------------------------------------------------------------------------- view / pooling passes


def test_graph_passes_on_nodes_without_meta():
    gm, x = pool_graph()
    assert all(not n.meta for n in gm.graph.nodes)
    run_both(gm, x)
    assert aten.view.default not in targets(gm) and aten.max_pool2d_with_indices.default not in targets(gm)
    # The adaptive pool's bins depend on its input's static sizes, which nothing records here: left alone.
    assert aten.adaptive_max_pool2d.default in targets(gm)


def test_graph_passes_on_tensor_meta_only():
    gm, x = pool_graph()
    ShapeProp(gm).propagate(x)
    for node in gm.graph.nodes:
        node.meta.pop("val", None)
    run_both(gm, x)
    assert all("val" not in n.meta or isinstance(n.meta["val"], torch.Tensor) for n in gm.graph.nodes)


def test_graph_passes_with_fake_vals_agree_with_propagation():
    gm, x = pool_graph()
    fake_vals(gm, x)
    run_both(gm, x)
    assert aten.adaptive_max_pool2d.default not in targets(gm)
    assert audit.mismatches(gm) == []


def test_pooling_with_a_non_getitem_user_is_left_alone():
    g = Graph()
    x = g.placeholder("x")
    pool = g.call_function(aten.max_pool2d_with_indices.default, (x, [2, 2]))
    g.output(pool)  # the tuple itself leaves the graph
    gm = fake_vals(GraphModule(torch.nn.Module(), g), torch.randn(1, 1, 4, 4))
    decompose_tuple_pooling(gm)
    assert targets(gm) == [aten.max_pool2d_with_indices.default]


def test_pooling_with_a_symbolic_kernel_is_left_alone():
    g = Graph()
    x = g.placeholder("x")
    k = g.placeholder("k")
    pool = g.call_function(aten.max_pool2d_with_indices.default, (x, [k, k]))
    g.output((g.call_function(operator.getitem, (pool, 0)),))
    gm = GraphModule(torch.nn.Module(), g)
    decompose_tuple_pooling(gm)
    assert targets(gm)[0] == aten.max_pool2d_with_indices.default


class DynamicPool(torch.nn.Module):
    def forward(self, x):
        n = x.shape[0]
        values, indices = torch.nn.functional.max_pool2d(x, 2, return_indices=True)
        flat = values.view(n, -1)
        return flat * 2, indices, torch.nn.functional.adaptive_max_pool2d(values, 1).view(n, -1)


def exported(model, x, dynamic_shapes=None):
    ep = torch.export.export(model, (x,), dynamic_shapes=dynamic_shapes)
    gm = ep.run_decompositions().module()
    for node in list(gm.graph.nodes):  # newer torch adds an unused guard-checking call
        if node.op == "call_module" and not node.users:
            gm.graph.erase_node(node)
    gm.recompile()
    return gm


def test_graph_passes_on_dynamic_shapes_and_symint_nodes():
    x = torch.randn(3, 2, 6, 6)
    batch = torch.export.Dim("batch", min=2, max=64)
    gm = exported(DynamicPool(), x, {"x": {0: batch}})
    assert any(isinstance(n.meta.get("val"), torch.SymInt) for n in gm.graph.nodes)
    expected = [t.clone() for t in gm(x)]
    replace_views_with_reshapes(gm)
    decompose_tuple_pooling(gm)
    assert audit.mismatches(gm) == []
    for other in (x, torch.randn(5, 2, 6, 6)):
        reference = DynamicPool()(other)
        for got, want in zip(gm(other), reference):
            assert torch.equal(got, want)
    assert all(torch.equal(g, e) for g, e in zip(gm(x), expected))


def test_audit_on_symfloat_and_none_vals():
    g = Graph()
    x = g.placeholder("x")
    total = g.call_function(aten.sum.default, (x,))
    scalar = g.call_function(aten._local_scalar_dense.default, (total,))
    g.output((g.call_function(aten.mul.Tensor, (x, 2)), scalar))
    gm = GraphModule(torch.nn.Module(), g)
    # A shape environment turns the data-dependent scalar into an unbacked SymFloat.
    FakeTensorProp(gm, FakeTensorMode(shape_env=ShapeEnv())).propagate(torch.randn(2, 3))
    assert isinstance(scalar.meta["val"], torch.SymFloat)
    total.meta["val"] = None  # None where a tensor flows: named
    found = audit.mismatches(gm)
    assert [(m.node, m.recorded, m.propagated) for m in found] == [(total.name, "None", "Tensor[] float32")]


# ----------------------------------------------------------------------------- partition-input repair


def split(gm, first_names):
    parent = split_module(gm, gm, lambda node: 0 if node.name in first_names else 1)
    remember_partition(parent)
    return parent, parent.submod_1


def two_blocks(producer_outputs, consumer):
    """Parent calling block ``a`` (whose output is ``producer_outputs(graph, x)``) then ``b`` on it."""
    ga = Graph()
    xa = ga.placeholder("x")
    ga.output(producer_outputs(ga, xa))
    gb = Graph()
    value = gb.placeholder("value")
    gb.output(consumer(gb, value))
    root = torch.nn.Module()
    root.a, root.b = GraphModule(torch.nn.Module(), ga), GraphModule(torch.nn.Module(), gb)
    gp = Graph()
    x = gp.placeholder("x")
    middle = gp.call_module("a", (x,))
    gp.output(gp.call_module("b", (middle,)))
    parent = GraphModule(root, gp)
    x_val = torch.randn(2, 4)
    mode = FakeTensorMode()
    fake_x = mode.from_tensor(x_val)
    for node in gp.nodes:
        if node.op == "placeholder":
            node.meta["val"] = fake_x
    remember_partition(parent)
    return parent, parent.b, x_val


def test_repair_of_placeholder_without_meta():
    gm = exported(torch.nn.Sequential(torch.nn.ReLU(), torch.nn.Tanh()), torch.randn(2, 3))
    parent, second = split(gm, {"relu"})
    (placeholder,) = [n for n in second.graph.nodes if n.op == "placeholder"]
    placeholder.meta = {}
    (note,) = repair_submodule_inputs(second)
    assert "has no metadata; set its meta['val'] to Tensor(shape=[2, 3]" in note
    assert boundary_problems(second) == []


def test_tensor_meta_only_placeholder_is_left_as_upstream_accepts_it():
    gm = exported(torch.nn.Sequential(torch.nn.ReLU(), torch.nn.Tanh()), torch.randn(2, 3))
    ShapeProp(gm).propagate(torch.randn(2, 3))
    parent, second = split(gm, {"relu"})
    (placeholder,) = [n for n in second.graph.nodes if n.op == "placeholder"]
    del placeholder.meta["val"]
    meta = placeholder.meta
    assert repair_submodule_inputs(second) == [] and placeholder.meta is meta


def test_repair_of_none_val():
    gm = exported(torch.nn.Sequential(torch.nn.ReLU(), torch.nn.Tanh()), torch.randn(2, 3))
    parent, second = split(gm, {"relu"})
    (placeholder,) = [n for n in second.graph.nodes if n.op == "placeholder"]
    placeholder.meta["val"] = None
    (note,) = repair_submodule_inputs(second)
    assert "has meta['val'] = None; set its meta['val'] to Tensor(shape=[2, 3]" in note


def test_symint_crossing_a_boundary_is_accepted():
    x = torch.randn(3, 4)
    gm = exported(SymCross(), x, {"x": {0: torch.export.Dim("n", min=2, max=32)}})
    first = {n.name for n in gm.graph.nodes if n.op == "call_function" and n.name.startswith("sym_size")}
    parent, second = split(gm, first)
    vals = [n.meta.get("val") for n in second.graph.nodes if n.op == "placeholder"]
    assert any(isinstance(v, torch.SymInt) for v in vals)
    assert repair_submodule_inputs(second) == []


class SymCross(torch.nn.Module):
    def forward(self, x):
        return x.view(x.shape[0] * 4).relu()


def test_list_crossing_a_boundary_is_split_into_tensors():
    def producer(g, x):
        return g.call_function(aten.split.Tensor, (x, 2, 1))

    def consumer(g, value):
        return g.call_function(
            aten.add.Tensor,
            (g.call_function(operator.getitem, (value, 0)), g.call_function(operator.getitem, (value, 1))),
        )

    parent, block, x = two_blocks(producer, consumer)
    expected = parent(x)
    (note,) = repair_submodule_inputs(block)
    assert "receives a real tuple" in note and "moved its elements [0, 1] into the parent" in note
    placeholders = [n for n in block.graph.nodes if n.op == "placeholder"]
    assert [tuple(p.meta["val"].shape) for p in placeholders] == [(2, 2), (2, 2)]
    assert torch.equal(parent(x), expected)


def test_nested_tuple_crossing_a_boundary_is_rejected_with_node_op_and_remedy():
    def producer(g, x):
        relu = g.call_function(aten.relu.default, (x,))
        return ((relu, relu), relu)

    def consumer(g, value):
        inner = g.call_function(operator.getitem, (value, 0))
        return g.call_function(operator.getitem, (inner, 1))

    parent, block, x = two_blocks(producer, consumer)
    with pytest.raises(PartitionInputError) as raised:
        repair_submodule_inputs(block)
    message = str(raised.value)
    assert "Input 'value' of submodule 'b'" in message
    assert "It is produced by node 'a' (submodule 'a')" in message
    assert "element 0 of its value is tuple of 2" in message and REMEDY in message


def test_whole_tuple_consumed_inside_a_block_is_rejected():
    def producer(g, x):
        return g.call_function(aten.split.Tensor, (x, 2, 1))

    def consumer(g, value):
        return g.call_function(aten.cat.default, (value, 1))

    parent, block, x = two_blocks(producer, consumer)
    with pytest.raises(PartitionInputError) as raised:
        repair_submodule_inputs(block)
    message = str(raised.value)
    assert "Input 'value' of submodule 'b'" in message and "aten.split.Tensor" in message
    assert "consumes the whole list (aten.cat.default)" in message and REMEDY in message


def test_none_flowing_into_a_block_is_rejected():
    def producer(g, x):
        return None

    def consumer(g, value):
        return value

    parent, block, x = two_blocks(producer, consumer)
    (placeholder,) = [n for n in block.graph.nodes if n.op == "placeholder"]
    placeholder.meta["val"] = None
    with pytest.raises(PartitionInputError) as raised:
        repair_submodule_inputs(block)
    message = str(raised.value)
    assert "Input 'value' of submodule 'b' has meta['val'] = None" in message
    assert "yields NoneType at runtime; TensorRT inputs must be tensors" in message and REMEDY in message


def test_orphan_submodule_is_rejected_naming_node_and_remedy():
    g = Graph()
    value = g.placeholder("value")
    g.output(g.call_function(aten.relu.default, (value,)))
    orphan = GraphModule(torch.nn.Module(), g)
    value.meta["val"] = (torch.empty(2), torch.empty(2, dtype=torch.int64))
    with pytest.raises(PartitionInputError) as raised:
        repair_submodule_inputs(orphan)
    message = str(raised.value)
    assert "Submodule input 'value' has a tuple meta['val']" in message and "aten.relu.default" in message
    assert "stale" in message and REMEDY in message


def test_dynamic_shapes_stale_tuple_is_repaired_symbolically():
    x = torch.randn(3, 2, 6, 6)
    gm = exported(DynamicPool(), x, {"x": {0: torch.export.Dim("batch", min=2, max=64)}})
    (pool,) = [n for n in gm.graph.nodes if n.target == aten.max_pool2d_with_indices.default]
    first = (
        {pool.name}
        | {n.name for n in pool.users}
        | {n.name for n in gm.graph.nodes if n.op == "call_function" and n.name.startswith("sym_size")}
    )
    parent, second = split(gm, first)
    for node in second.graph.nodes:
        if node.op == "placeholder" and isinstance(node.meta.get("val"), torch.Tensor):
            val = node.meta["val"]
            node.meta["val"] = (val, val)  # stale, as upstream's fused pool leaves it
    repair_submodule_inputs(second)
    assert boundary_problems(second) == []
    shapes = [
        str(tuple(n.meta["val"].shape))
        for n in second.graph.nodes
        if n.op == "placeholder" and isinstance(n.meta.get("val"), torch.Tensor)
    ]
    assert shapes and all(s.startswith("(s") for s in shapes), shapes
    for other in (x, torch.randn(4, 2, 6, 6)):
        assert all(torch.equal(a, b) for a, b in zip(parent(other), DynamicPool()(other)))
