"""Synthetic ATen graphs of a chosen size, built directly with torch.fx, every node with a fake ``meta['val']``.

Built node by node rather than exported: ``torch.export`` of a 20,000-node model takes minutes and would
dominate the run, and the passes under test only read the graph and its metadata. Each value is the real
fake-tensor result of the node's op, as export would record it.
"""

from __future__ import annotations

import operator

import torch
import torch.fx as fx
from torch._subclasses.fake_tensor import FakeTensorMode

aten = torch.ops.aten


class _Builder:
    def __init__(self):
        self.mode = FakeTensorMode()
        self.graph = fx.Graph()

    def placeholder(self, name, shape):
        node = self.graph.placeholder(name)
        node.meta["val"] = self.mode.from_tensor(torch.empty(shape))
        return node

    def call(self, target, *args):
        node = self.graph.call_function(target, args)
        vals = fx.node.map_arg(args, lambda n: n.meta["val"])
        with self.mode:
            node.meta["val"] = target(*vals)
        return node

    def module(self, output, root=None):
        self.graph.output(output)
        return fx.GraphModule(root if root is not None else torch.nn.Module(), self.graph)


def view_chain(views: int) -> fx.GraphModule:
    """``views`` aten.view nodes: a chain of view -> relu -> view blocks (two views per block)."""
    b = _Builder()
    x = b.placeholder("x", (4, 64))
    for _ in range(views // 2):
        x = b.call(aten.view.default, x, [16, 16])
        x = b.call(aten.relu.default, x)
        x = b.call(aten.view.default, x, [4, 64])
    return b.module(x)


def relu_chain(nodes: int) -> fx.GraphModule:
    """No view at all: the pass must leave the graph alone and not regenerate its code."""
    b = _Builder()
    x = b.placeholder("x", (4, 64))
    for _ in range(nodes):
        x = b.call(aten.relu.default, x)
    return b.module(x)


def restore_views(gm: fx.GraphModule) -> None:
    """Undo trt_compat's in-place retarget, so the next repeat starts from the same graph."""
    for node in gm.graph.nodes:
        if node.op == "call_function" and node.target is aten.reshape.default:
            node.target = aten.view.default


def count_targets(gm: fx.GraphModule, target) -> int:
    return sum(1 for n in gm.graph.nodes if n.op == "call_function" and n.target is target)


def pooling_chain(pools: int) -> fx.GraphModule:
    """``pools`` tuple-returning pools, both outputs used (SegNet-style pool/unpool pairs), alternating
    ``max_pool2d_with_indices`` (2x2, stride 2) and ``adaptive_max_pool2d`` (to 4x4) on an 8x8 map."""
    b = _Builder()
    x = b.placeholder("x", (1, 4, 8, 8))
    for i in range(pools):
        if i % 2 == 0:
            pool = b.call(aten.max_pool2d_with_indices.default, x, [2, 2], [2, 2])
        else:
            pool = b.call(aten.adaptive_max_pool2d.default, x, [4, 4])
        values = b.call(operator.getitem, pool, 0)
        indices = b.call(operator.getitem, pool, 1)
        x = b.call(aten.max_unpool2d.default, values, indices, [8, 8])
    return b.module(x)


def copy_module(gm: fx.GraphModule) -> fx.GraphModule:
    """A structural copy (meta dicts copied, vals shared), much cheaper than rebuilding with fake ops."""
    graph = fx.Graph()
    graph.output(graph.graph_copy(gm.graph, {}))
    return fx.GraphModule(gm, graph)


def partitioned_chain(boundaries: int) -> fx.GraphModule:
    """A parent graph as Torch-TensorRT's fast partitioner leaves it, with ``boundaries`` stale inputs.

    ``_run_on_gpu_{2k}`` (a fused ``max_pool2d``, kept in PyTorch) and ``_run_on_acc_{2k+1}`` (relu,
    TensorRT) alternate. Each fused pool still carries the ``(values, indices)`` tuple val of the
    ``max_pool2d_with_indices`` node it replaced -- the 2.4 defect -- and the partitioner copied that
    tuple onto the placeholder of the TensorRT block it feeds: ``boundaries`` accelerated blocks whose
    input upstream's ``construct_submodule_inputs`` rejects.
    """
    mode = FakeTensorMode()
    shape = (1, 4, 8, 8)
    with mode:
        t = torch.empty(shape)
        pooled = aten.max_pool2d_with_indices.default(t, [3, 3], [1, 1], [1, 1])
        relu = aten.relu.default(t)
    fresh = mode.from_tensor(torch.empty(shape))

    def block(kind):
        g = fx.Graph()
        p = g.placeholder("x")
        if kind == "acc":
            p.meta = {"val": pooled}  # stale: copied from the fused pool
            out = g.call_function(aten.relu.default, (p,))
            out.meta = {"val": relu}
        else:
            p.meta = {"val": relu}
            out = g.call_function(aten.max_pool2d.default, (p, [3, 3], [1, 1], [1, 1]))
            out.meta = {"val": pooled}  # stale: the replaced node's tuple
        g.output(out)
        return fx.GraphModule(torch.nn.Module(), g)

    root = torch.nn.Module()
    parent = fx.Graph()
    x = parent.placeholder("x")
    x.meta = {"val": fresh}
    for i in range(2 * boundaries):
        kind = "gpu" if i % 2 == 0 else "acc"
        name = f"_run_on_{kind}_{i}"
        root.add_module(name, block(kind))
        x = parent.call_module(name, (x,))
    parent.output(x)
    return fx.GraphModule(root, parent)


def accelerated_blocks(parent: fx.GraphModule):
    return [m for name, m in parent.named_children() if name.startswith("_run_on_acc_")]
