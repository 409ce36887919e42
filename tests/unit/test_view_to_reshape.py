"""Tests for trt_compat.patches.view_to_reshape_metadata (upstream pytorch/TensorRT#3221)."""

import operator
from unittest import mock

import pytest
import sympy
import torch
from torch._guards import detect_fake_mode
from torch._subclasses.fake_tensor import FakeTensorMode
from torch.fx.passes.fake_tensor_prop import FakeTensorProp
from trt_compat.patches.view_to_reshape_metadata import replace_views_with_reshapes

VIEW = torch.ops.aten.view.default
RESHAPE = torch.ops.aten.reshape.default


class ThreeViews(torch.nn.Module):
    """Three views of one input whose consumers run in a different order than the views.

    ``replace_pattern`` puts each reshape right before the first user of its view, so the
    reshapes come out as (c, a, b) while the views were (a, b, c).
    """

    def forward(self, x):
        a = x.view(2, 6)
        b = x.view(3, 4)
        c = x.view(4, 3)
        doubled = c * 2
        return a + 1, b - 1, doubled


class SymbolicViews(torch.nn.Module):
    def forward(self, x):
        flat = x.view(x.shape[0], -1)
        return flat.view(-1, 4) + 1, flat.sum(dim=1)


def export_graph(model, args, dynamic_shapes=None):
    ep = torch.export.export(model, args, dynamic_shapes=dynamic_shapes)
    return ep.run_decompositions().graph_module


def run_counting_recompiles(gm):
    with mock.patch.object(gm, "recompile", wraps=gm.recompile) as recompile:
        result = replace_views_with_reshapes(gm)
    assert result is gm
    return recompile.call_count


def describe(t):
    # str() keeps symbolic sizes comparable without adding guards to the shape environment.
    return tuple(map(str, t.shape)), tuple(map(str, t.stride())), t.dtype, t.device


def shape_matches_own_args(node):
    """Whether node.meta['val'] is what reshaping its own input to its own shape argument gives."""
    source = node.args[0].meta["val"]
    requested = [a.meta["val"] if isinstance(a, torch.fx.Node) else a for a in node.args[1]]
    result = node.meta["val"]
    if len(requested) != result.dim():
        return False
    for want, got in zip(requested, result.shape):
        if not (isinstance(want, int) and want == -1) and str(want) != str(got):
            return False
    difference = result.numel() - source.numel()
    # torch 2.2 has no statically_known_true: ask sympy whether the sizes are provably equal.
    return sympy.simplify(difference.node.expr if isinstance(difference, torch.SymInt) else difference) == 0


def fake_prop_vals(gm):
    """Recompute every node's val with FakeTensorProp on a copy, leaving gm's metadata alone."""
    graph = torch.fx.Graph()
    copies = {}
    out = graph.graph_copy(gm.graph, copies)
    graph.output(out)
    copy_gm = torch.fx.GraphModule(gm, graph)
    inputs = [n.meta["val"] for n in gm.graph.nodes if n.op == "placeholder"]
    FakeTensorProp(copy_gm, detect_fake_mode(inputs)).propagate_dont_convert_inputs(*inputs)
    return {node: copies[node].meta["val"] for node in copies}


def check_rewritten(gm, nodes_before, metas_before, names_before):
    nodes_after = list(gm.graph.nodes)
    assert len(nodes_after) == len(nodes_before)
    assert all(a is b for a, b in zip(nodes_after, nodes_before))
    assert [n.name for n in nodes_after] == names_before
    assert all(n.meta is m for n, m in zip(nodes_after, metas_before))
    assert not [n for n in nodes_after if n.target is VIEW]
    reshapes = [n for n in nodes_after if n.target is RESHAPE]
    recomputed = fake_prop_vals(gm)
    for node in reshapes:
        assert shape_matches_own_args(node), node.format_node()
        assert describe(node.meta["val"]) == describe(recomputed[node])
    return reshapes


def test_reordered_consumers_keep_own_metadata():
    gm = export_graph(ThreeViews(), (torch.randn(12),))
    x = torch.randn(12)
    expected = gm(x)
    nodes = list(gm.graph.nodes)
    views = [n for n in nodes if n.target is VIEW]
    assert len(views) == 3
    view_shapes = {n: tuple(n.meta["val"].shape) for n in views}

    assert run_counting_recompiles(gm) == 1

    reshapes = check_rewritten(gm, nodes, [n.meta for n in nodes], [n.name for n in nodes])
    assert reshapes == views
    assert {n: tuple(n.meta["val"].shape) for n in reshapes} == view_shapes
    assert "aten.reshape.default" in gm.code and "aten.view.default" not in gm.code
    for want, got in zip(expected, gm(x)):
        assert torch.equal(want, got)


def test_upstream_order_based_copy_swaps_metadata():
    """Minimal model of upstream's algorithm: it gives the reshapes each other's metadata."""
    gm = export_graph(ThreeViews(), (torch.randn(12),))

    def pattern(inp, shape):
        return VIEW(inp, shape)

    def replacement(inp, shape):
        return RESHAPE(inp, shape)

    metadata = [n.meta for n in gm.graph.nodes if n.target is VIEW]
    assert torch.fx.subgraph_rewriter.replace_pattern(gm, pattern, replacement)
    reshapes = [n for n in gm.graph.nodes if n.target is RESHAPE]
    for node, meta in zip(reshapes, metadata):
        node.meta = meta

    # The first reshape now feeds the mul (view(4, 3)) but carries view(2, 6)'s metadata.
    assert reshapes[0].args[1] == [4, 3]
    assert tuple(reshapes[0].meta["val"].shape) == (2, 6)
    assert not all(shape_matches_own_args(n) for n in reshapes)


def test_symbolic_shapes():
    batch = torch.export.Dim("batch", min=2, max=64)
    gm = export_graph(SymbolicViews(), (torch.randn(5, 2, 4),), dynamic_shapes=({0: batch},))
    x = torch.randn(7, 2, 4)
    expected = gm(x)
    nodes = list(gm.graph.nodes)
    views = [n for n in nodes if n.target is VIEW]
    assert len(views) == 2
    assert any(isinstance(d, torch.SymInt) for v in views for d in v.meta["val"].shape)

    assert run_counting_recompiles(gm) == 1

    reshapes = check_rewritten(gm, nodes, [n.meta for n in nodes], [n.name for n in nodes])
    assert reshapes == views
    for want, got in zip(expected, gm(x)):
        assert torch.equal(want, got)


def test_hand_built_graph_only_retargets_aten_view_default():
    mode = FakeTensorMode()
    with mode:
        fake = torch.empty(2, 3, 4)
    graph = torch.fx.Graph()
    x = graph.placeholder("x")
    x.meta["val"] = fake
    first = graph.call_function(VIEW, (x, [6, 4]))
    second = graph.call_function(VIEW, (first, [-1]))
    method_view = graph.call_method("view", (x, 24))
    as_int = graph.call_function(torch.ops.aten.view.dtype, (x, torch.int32))
    total = graph.call_function(operator.add, (second, method_view))
    graph.output((total, as_int))
    with mode:
        first.meta["val"] = fake.reshape(6, 4)
        second.meta["val"] = first.meta["val"].reshape(-1)
    first.meta["stack_trace"] = "first view"
    second.meta["stack_trace"] = "second view"
    gm = torch.fx.GraphModule(torch.nn.Module(), graph)
    real = torch.randn(2, 3, 4)
    expected = gm(real)
    nodes = list(gm.graph.nodes)
    metas = [n.meta for n in nodes]

    assert run_counting_recompiles(gm) == 1

    assert list(gm.graph.nodes) == nodes
    assert all(n.meta is m for n, m in zip(nodes, metas))
    assert first.target is RESHAPE and second.target is RESHAPE
    assert first.meta["stack_trace"] == "first view" and second.meta["stack_trace"] == "second view"
    assert method_view.op == "call_method" and method_view.target == "view"
    assert as_int.target is torch.ops.aten.view.dtype
    assert shape_matches_own_args(first) and shape_matches_own_args(second)
    for want, got in zip(expected, gm(real)):
        assert torch.equal(want, got)


@pytest.mark.parametrize(
    "model, args",
    [
        (lambda: torch.nn.Linear(4, 2), (torch.randn(3, 4),)),
        (lambda: torch.nn.ReLU(), (torch.randn(3, 4),)),
    ],
    ids=["linear", "relu"],
)
def test_graph_without_views_is_not_recompiled(model, args):
    gm = export_graph(model(), args)
    assert not [n for n in gm.graph.nodes if n.target is VIEW]
    code = gm.code
    assert run_counting_recompiles(gm) == 0
    assert gm.code == code


def test_many_views_single_recompile():
    graph = torch.fx.Graph()
    node = graph.placeholder("x")
    count = 20_000
    for i in range(count):
        node = graph.call_function(VIEW, (node, [2, 3] if i % 2 else [3, 2]))
    graph.output(node)
    gm = torch.fx.GraphModule(torch.nn.Module(), graph)

    assert run_counting_recompiles(gm) == 1
    assert sum(n.target is RESHAPE for n in gm.graph.nodes) == count
    assert next(n for n in gm.graph.nodes if n.target is RESHAPE).args[1] == [3, 2]
    if hasattr(gm.graph, "find_nodes"):  # torch >= 2.3: its lookup table must follow the retargeting
        assert gm.graph.find_nodes(op="call_function", target=RESHAPE)[0].args[1] == [3, 2]
        assert not gm.graph.find_nodes(op="call_function", target=VIEW)
