"""Tests for trt_compat.patches.tuple_partition_inputs (upstream pytorch/TensorRT#3185).

The graphs are real exported programs partitioned with torch.fx's own partitioners (the ones
Torch-TensorRT builds on); the defects are injected the way upstream lowering passes create them.
"""

import gc
import operator
import weakref
from unittest import mock

import pytest
import torch
import torch.nn.functional as F
from torch._subclasses.fake_tensor import FakeTensor, FakeTensorMode
from torch.fx import GraphModule
from torch.fx.passes.infra.partitioner import CapabilityBasedPartitioner
from torch.fx.passes.operator_support import OperatorSupportBase
from torch.fx.passes.shape_prop import _extract_tensor_metadata
from torch.fx.passes.split_module import split_module
from torch.fx.passes.split_utils import split_by_tags
from trt_compat.patches.tuple_partition_inputs import (
    PartitionInputError,
    boundary_problems,
    partition_parent,
    remember_partition,
    repair_submodule_inputs,
)

POOL_WITH_INDICES = torch.ops.aten.max_pool2d_with_indices.default
POOL = torch.ops.aten.max_pool2d.default
SPLIT = torch.ops.aten.split_with_sizes.default
REMEDY = "torch_executed_ops"


class ConvPoolConv(torch.nn.Module):
    def __init__(self, return_indices=False):
        super().__init__()
        self.return_indices = return_indices
        self.conv1 = torch.nn.Conv2d(3, 4, 3, padding=1)
        self.conv2 = torch.nn.Conv2d(4, 5, 3, padding=1)

    def forward(self, x):
        values, indices = F.max_pool2d(self.conv1(x), 2, return_indices=True)
        out = self.conv2(values) + x.mean()
        return (out, indices) if self.return_indices else out


class SplitCat(torch.nn.Module):
    def forward(self, x):
        return torch.cat(torch.split(x * 2, 2, dim=1), dim=1).relu()


def export_module(model, example, dynamic_shapes=None):
    torch.manual_seed(0)
    ep = torch.export.export(model, (example,), dynamic_shapes=dynamic_shapes)
    gm = ep.run_decompositions().module()
    # Newer torch adds an unused call to a guard-checking module; it is not part of the model.
    for node in list(gm.graph.nodes):
        if node.op == "call_module" and not node.users:
            gm.graph.erase_node(node)
    gm.recompile()
    return gm


def fuse_pool(gm, keep_meta):
    """Model of upstream's replace_max_pool_with_indices lowering pass.

    Torch-TensorRT 2.4 hands the fused node the with-indices node's own meta dict (tuple val);
    2.3 leaves the new node's meta empty.
    """
    (node,) = [n for n in gm.graph.nodes if n.target is POOL_WITH_INDICES]
    (getitem,) = node.users
    with gm.graph.inserting_after(getitem):
        fused = gm.graph.call_function(POOL, node.args, node.kwargs)
    fused.meta = node.meta if keep_meta else {}
    getitem.replace_all_uses_with(fused)
    gm.graph.erase_node(getitem)
    gm.graph.erase_node(node)
    gm.recompile()
    return fused


def upstream_nodes(gm, target):
    """Names of the call nodes that ``target``'s node depends on, itself included."""
    (node,) = [n for n in gm.graph.nodes if n.target is target]
    names, stack = set(), [node]
    while stack:
        current = stack.pop()
        if current.op == "call_function" and current.name not in names:
            names.add(current.name)
            stack.extend(current.all_input_nodes)
    return names


def by_split_module(gm, first):
    return split_module(gm, gm, lambda node: 0 if node.name in first else 1)


def by_split_by_tags(gm, first):
    for node in gm.graph.nodes:
        if node.op not in ("placeholder", "get_attr", "output"):
            node.tag = "first" if node.name in first else "second"
    return split_by_tags(gm, ["first", "second"])


class _AllButPooling(OperatorSupportBase):
    def is_node_supported(self, submodules, node):
        return node.op == "call_function" and node.target not in (POOL, POOL_WITH_INDICES)


def by_capability(gm, first):
    """Like Torch-TensorRT's global partitioner: unsupported pooling stays in the parent graph."""
    partitioner = CapabilityBasedPartitioner(gm, _AllButPooling(), allows_single_node_partition=True)
    return partitioner.fuse_partitions(partitioner.propose_partitions())


PARTITIONERS = {
    "split_module": by_split_module,
    "split_by_tags": by_split_by_tags,
    "capability": by_capability,
}


def graph_children(parent):
    return {node.target: parent.get_submodule(node.target) for node in parent.graph.nodes if node.op == "call_module"}


def calls_of(parent, child):
    return [n for n in parent.graph.nodes if n.op == "call_module" and parent.get_submodule(n.target) is child]


def only_broken_child(parent):
    (child,) = [c for c in graph_children(parent).values() if boundary_problems(c)]
    return child


def placeholders(gm):
    return [n for n in gm.graph.nodes if n.op == "placeholder"]


def run_capturing(parent, child, *inputs):
    """Run ``parent`` eagerly; return its output and the real values bound to child's inputs."""
    calls = []

    def hook(module, args, kwargs):
        calls.append((args, kwargs))

    handle = child.register_forward_pre_hook(hook, with_kwargs=True)
    try:
        output = parent(*inputs)
    finally:
        handle.remove()
    bound = []
    for args, kwargs in calls:
        bound.append({ph: args[i] if i < len(args) else kwargs[ph.target] for i, ph in enumerate(placeholders(child))})
    return output, bound


def assert_describes(val, real):
    assert isinstance(val, FakeTensor)
    assert isinstance(real, torch.Tensor) and not isinstance(real, FakeTensor)
    assert tuple(val.shape) == tuple(real.shape)
    assert val.stride() == real.stride()
    assert val.dtype == real.dtype
    assert val.device == real.device


def healthy_snapshot(child):
    bad = boundary_problems(child)
    return [(ph, ph.meta, ph.meta.get("val")) for ph in placeholders(child) if ph not in bad]


def assert_untouched(snapshot):
    for ph, meta, val in snapshot:
        assert ph.meta is meta
        assert ph.meta.get("val") is val


def assert_outputs_equal(before, after):
    before = before if isinstance(before, (tuple, list)) else (before,)
    after = after if isinstance(after, (tuple, list)) else (after,)
    assert len(before) == len(after)
    for b, a in zip(before, after):
        assert torch.equal(b, a)


@pytest.mark.parametrize("flavor", ["stale_tuple", "emptied"])
@pytest.mark.parametrize("partitioner", sorted(PARTITIONERS))
def test_single_tensor_input_with_bad_metadata_is_repaired(partitioner, flavor):
    gm = export_module(ConvPoolConv(), torch.randn(2, 3, 8, 8))
    fuse_pool(gm, keep_meta=flavor == "stale_tuple")
    parent = PARTITIONERS[partitioner](gm, upstream_nodes(gm, POOL))
    remember_partition(parent)
    child = only_broken_child(parent)
    (bad,) = boundary_problems(child)
    healthy = healthy_snapshot(child)
    assert healthy
    if flavor == "stale_tuple":
        assert isinstance(bad.meta["val"], tuple)
    else:
        assert not bad.meta
    # Only the global-style partitioner leaves the pooling node itself in the parent graph.
    producers = [n for n in parent.graph.nodes if n.target is POOL]
    old_metas = [(n.meta, n.meta.get("val")) for n in producers]
    assert len(producers) == (partitioner == "capability")

    x = torch.randn(2, 3, 8, 8)
    expected = parent(x)
    repairs = repair_submodule_inputs(child)

    assert len(repairs) == 1 and bad.name in repairs[0] and str(POOL) in repairs[0]
    assert boundary_problems(child) == []
    assert_untouched(healthy)
    output, (bound,) = run_capturing(parent, child, x)
    assert_describes(bad.meta["val"], bound[bad])
    assert_outputs_equal(expected, output)
    # The producer gets its own, corrected dict; the (possibly shared) old one is left as it was.
    for producer, (old_meta, old_val) in zip(producers, old_metas):
        assert producer.meta is not old_meta and old_meta.get("val") is old_val
        assert_describes(producer.meta["val"], bound[bad])
    assert repair_submodule_inputs(child) == []


def test_symbolic_batch_is_repaired_in_the_export_shape_environment():
    batch = torch.export.Dim("batch", min=2, max=15)  # torch 2.2 export guards this model to < 16
    gm = export_module(ConvPoolConv(), torch.randn(4, 3, 8, 8), dynamic_shapes=({0: batch},))
    fuse_pool(gm, keep_meta=True)
    parent = by_split_by_tags(gm, upstream_nodes(gm, POOL))
    child = only_broken_child(parent)
    (bad,) = boundary_problems(child)

    repair_submodule_inputs(child, parent)

    val = bad.meta["val"]
    (x,) = [n for n in parent.graph.nodes if n.op == "placeholder"]
    assert isinstance(val.shape[0], torch.SymInt)
    assert str(val.shape[0]) == str(x.meta["val"].shape[0])
    assert tuple(val.shape[1:]) == (4, 4, 4)
    _, (bound,) = run_capturing(parent, child, torch.randn(6, 3, 8, 8))
    assert tuple(bound[bad].shape) == (6, 4, 4, 4)


@pytest.mark.parametrize("partitioner", ["split_module", "split_by_tags"])
def test_real_tuple_is_hoisted_into_the_parent(partitioner):
    gm = export_module(ConvPoolConv(return_indices=True), torch.randn(2, 3, 8, 8))
    parent = PARTITIONERS[partitioner](gm, upstream_nodes(gm, POOL_WITH_INDICES))
    child = only_broken_child(parent)
    (bad,) = boundary_problems(child)
    assert isinstance(bad.meta["val"], tuple)
    healthy = healthy_snapshot(child)
    (call,) = calls_of(parent, child)
    position = placeholders(child).index(bad)
    call_producer = call.args[position]
    x = torch.randn(2, 3, 8, 8)
    expected = parent(x)

    repairs = repair_submodule_inputs(child, parent)

    assert len(repairs) == 1 and "tuple" in repairs[0]
    assert bad not in placeholders(child)
    assert boundary_problems(child) == []
    assert_untouched(healthy)
    new = placeholders(child)[position : position + 2]
    assert [n.name for n in new] == [f"{bad.name}_0", f"{bad.name}_1"]
    hoisted = call.args[position : position + 2]
    assert [(n.target, n.args) for n in hoisted] == [
        (operator.getitem, (call_producer, 0)),
        (operator.getitem, (call_producer, 1)),
    ]
    assert len(call.args) == len(placeholders(child))
    output, (bound,) = run_capturing(parent, child, x)
    assert_outputs_equal(expected, output)
    for ph in new:
        assert_describes(ph.meta["val"], bound[ph])
        assert ph.meta["tensor_meta"].shape == bound[ph].shape
    assert bound[new[1]].dtype == torch.int64
    for item in hoisted:
        assert_describes(item.meta["val"], bound[new[item.args[1]]])


def test_hoisting_rewrites_every_call_including_keyword_calls():
    gm = export_module(ConvPoolConv(return_indices=True), torch.randn(2, 3, 8, 8))
    parent = by_split_module(gm, upstream_nodes(gm, POOL_WITH_INDICES))
    child = only_broken_child(parent)
    (first_call,) = calls_of(parent, child)
    # Call the same submodule a second time, binding every input by keyword.
    kwargs = {ph.target: arg for ph, arg in zip(placeholders(child), first_call.args)}
    with parent.graph.inserting_after(first_call):
        second_call = parent.graph.call_module(first_call.target, (), kwargs)
    with parent.graph.inserting_after(second_call):
        second_out = parent.graph.call_function(operator.getitem, (second_call, 0))
    (output_node,) = [n for n in parent.graph.nodes if n.op == "output"]
    output_node.args = (tuple(output_node.args[0]) + (second_out,),)
    parent.recompile()
    x = torch.randn(2, 3, 8, 8)
    expected = parent(x)
    remember_partition(parent)
    assert partition_parent(child) == (parent, [first_call, second_call])

    with mock.patch.object(parent, "recompile", wraps=parent.recompile) as recompile:
        repair_submodule_inputs(child)

    assert recompile.call_count == 1
    assert boundary_problems(child) == []
    new = [ph for ph in placeholders(child) if ph.name.startswith("max_pool2d_with_indices")]
    assert len(new) == 2
    assert all(a.target is operator.getitem for a in first_call.args[:2])
    assert [second_call.kwargs[ph.target].args[1] for ph in new] == [0, 1]
    output, bound = run_capturing(parent, child, x)
    assert_outputs_equal(expected, output)
    assert len(bound) == 2
    for values in bound:
        for ph in new:
            assert_describes(ph.meta["val"], values[ph])


def test_tuple_consumed_whole_raises_naming_node_op_and_remedy():
    gm = export_module(SplitCat(), torch.randn(2, 6))
    (split,) = [n for n in gm.graph.nodes if n.target is SPLIT]
    (cat,) = [n for n in gm.graph.nodes if n.target is torch.ops.aten.cat.default]
    # Let cat take split's list directly instead of through getitems.
    getitems = list(split.users)
    cat.args = (split,) + tuple(cat.args[1:])
    for node in getitems:
        gm.graph.erase_node(node)
    gm.recompile()
    x = torch.randn(2, 6)
    assert torch.equal(gm(x), (x * 2).relu())
    parent = by_split_module(gm, upstream_nodes(gm, SPLIT))
    child = only_broken_child(parent)
    (bad,) = boundary_problems(child)
    code = (parent.code, child.code)

    with pytest.raises(PartitionInputError) as info:
        repair_submodule_inputs(child, parent)

    message = str(info.value)
    assert isinstance(info.value, ValueError)
    assert f"'{bad.name}'" in message
    assert "'split_with_sizes_default'" in message  # the producer, as split_module names it
    assert str(SPLIT) in message and "aten.cat.default" in message
    assert REMEDY in message
    assert (parent.code, child.code) == code


def _scaled_pair(x):
    return x * 2, 3


def test_non_tensor_tuple_element_raises():
    mode = FakeTensorMode()
    with mode:
        fake = torch.empty(2, 3)
    child_graph = torch.fx.Graph()
    pair_in = child_graph.placeholder("pair")
    pair_in.meta["val"] = (fake * 2, 3)
    first = child_graph.call_function(operator.getitem, (pair_in, 0))
    second = child_graph.call_function(operator.getitem, (pair_in, 1))
    child_graph.output(child_graph.call_function(operator.mul, (first, second)))
    child = GraphModule(torch.nn.Module(), child_graph)

    parent_graph = torch.fx.Graph()
    x = parent_graph.placeholder("x")
    x.meta["val"] = fake
    pair = parent_graph.call_function(_scaled_pair, (x,))
    pair.meta["val"] = (fake * 2, 3)
    parent_graph.output(parent_graph.call_module("child", (pair,)))
    root = torch.nn.Module()
    root.child = child
    parent = GraphModule(root, parent_graph)
    assert torch.equal(parent(torch.ones(2, 3)), torch.full((2, 3), 6.0))

    with pytest.raises(PartitionInputError) as info:
        repair_submodule_inputs(child, parent)

    message = str(info.value)
    assert "'pair'" in message and "_scaled_pair" in message
    assert "element 1" in message and "int" in message and REMEDY in message


def test_unknown_parent_and_stale_tuple_says_metadata_is_stale():
    gm = export_module(ConvPoolConv(), torch.randn(2, 3, 8, 8))
    fuse_pool(gm, keep_meta=True)
    parent = by_split_module(gm, upstream_nodes(gm, POOL))
    child = only_broken_child(parent)
    (bad,) = boundary_problems(child)
    assert partition_parent(child) is None

    with pytest.raises(PartitionInputError) as info:
        repair_submodule_inputs(child)

    message = str(info.value)
    assert f"'{bad.name}'" in message and "stale" in message and "parent graph" in message
    assert "aten.convolution.default" in message and REMEDY in message
    assert isinstance(bad.meta["val"], tuple)


def test_unknown_parent_and_lost_metadata_raises():
    gm = export_module(ConvPoolConv(), torch.randn(2, 3, 8, 8))
    fuse_pool(gm, keep_meta=False)
    parent = by_split_by_tags(gm, upstream_nodes(gm, POOL))
    child = only_broken_child(parent)
    (bad,) = boundary_problems(child)

    with pytest.raises(PartitionInputError) as info:
        repair_submodule_inputs(child)

    message = str(info.value)
    assert f"'{bad.name}'" in message and "no metadata" in message and "parent graph" in message
    assert "stale" not in message


@pytest.mark.parametrize("partitioner", sorted(PARTITIONERS))
def test_healthy_partitions_are_left_alone(partitioner):
    gm = export_module(ConvPoolConv(), torch.randn(2, 3, 8, 8))
    parent = PARTITIONERS[partitioner](gm, upstream_nodes(gm, operator.getitem))
    remember_partition(parent)
    for child in graph_children(parent).values():
        assert boundary_problems(child) == []
        snapshot = healthy_snapshot(child)
        code = child.code
        with mock.patch.object(child, "recompile", wraps=child.recompile) as recompile:
            assert repair_submodule_inputs(child) == []
        assert recompile.call_count == 0
        assert child.code == code
        assert_untouched(snapshot)


def test_boundary_problems_mirrors_upstream_checks():
    mode = FakeTensorMode()
    with mode:
        fake = torch.empty(2)
    graph = torch.fx.Graph()
    fine_val = graph.placeholder("fine_val")
    fine_val.meta["val"] = fake
    fine_tensor_meta = graph.placeholder("fine_tensor_meta")
    fine_tensor_meta.meta["tensor_meta"] = _extract_tensor_metadata(torch.empty(2))
    no_meta = graph.placeholder("no_meta")
    tuple_val = graph.placeholder("tuple_val")
    tuple_val.meta["val"] = (fake, fake)
    list_val = graph.placeholder("list_val")
    list_val.meta["val"] = [fake]
    none_val = graph.placeholder("none_val")
    none_val.meta["val"] = None
    other_keys = graph.placeholder("other_keys")
    other_keys.meta["stack_trace"] = "somewhere"
    tuple_tensor_meta = graph.placeholder("tuple_tensor_meta")
    tuple_tensor_meta.meta["tensor_meta"] = (fine_tensor_meta.meta["tensor_meta"],) * 2
    graph.output(None)
    gm = GraphModule(torch.nn.Module(), graph)

    assert boundary_problems(gm) == [
        no_meta,
        tuple_val,
        list_val,
        none_val,
        other_keys,
        tuple_tensor_meta,
    ]


def test_graph_without_fake_metadata_is_recomputed_in_a_fresh_fake_mode():
    child_graph = torch.fx.Graph()
    scaled = child_graph.placeholder("scaled")
    child_graph.output(child_graph.call_function(torch.ops.aten.neg.default, (scaled,)))
    child = GraphModule(torch.nn.Module(), child_graph)

    root = torch.nn.Module()
    root.weight = torch.nn.Parameter(torch.randn(3, 1))
    root.child = child
    parent_graph = torch.fx.Graph()
    x = parent_graph.placeholder("x")
    x.meta["val"] = torch.randn(2, 3, 4)  # a real tensor, as some tracers record
    weight = parent_graph.get_attr("weight")
    product = parent_graph.call_function(torch.ops.aten.mul.Tensor, (x, weight))
    parent_graph.output(parent_graph.call_module("child", (product,)))
    parent = GraphModule(root, parent_graph)

    (repair,) = repair_submodule_inputs(child, parent)

    assert "'scaled'" in repair and "aten.mul.Tensor" in repair
    _, (bound,) = run_capturing(parent, child, torch.randn(2, 3, 4))
    assert_describes(scaled.meta["val"], bound[scaled])
    assert_describes(product.meta["val"], bound[scaled])


def test_registry_does_not_keep_graphs_alive():
    gm = export_module(ConvPoolConv(), torch.randn(2, 3, 8, 8))
    parent = by_split_module(gm, upstream_nodes(gm, POOL_WITH_INDICES))
    del gm
    remember_partition(parent)
    children = graph_children(parent)
    child = children["submod_1"]
    other = weakref.ref(children["submod_0"])
    del children
    found = partition_parent(child)
    assert found is not None and found[0] is parent
    assert [n.target for n in found[1]] == ["submod_1"]
    parent_ref = weakref.ref(parent)
    del parent, found
    gc.collect()

    assert parent_ref() is None
    assert other() is None
    assert partition_parent(child) is None
    child_ref = weakref.ref(child)
    del child
    gc.collect()
    assert child_ref() is None
