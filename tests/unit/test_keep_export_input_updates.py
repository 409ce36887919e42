"""Tests for trt_compat.patches.keep_export_input_updates: CPU only, no torch_tensorrt needed.

The graphs are what ``torch_tensorrt.dynamo.compile`` lowers (``torch.export.export``, decomposed, unlifted): the
pass must keep the ``copy_`` that writes the caller's input, erase what upstream's pass erases otherwise, and the graph
must then behave as the eager model over three calls, outputs and the caller's tensor bit for bit.
"""

import torch
from torch.fx import GraphModule
from trt_compat.patches import keep_export_input_updates as patch
from trt_compat.patches.keep_export_input_updates import remove_unused_nodes_keeping_writes, writes_an_argument

from tests.helpers.stateful import CASES, clone_arguments, compare_calls
from trt_compat import testing

aten = torch.ops.aten


def exported(name):
    torch.manual_seed(0)
    program = torch.export.export(CASES[name].model().eval(), clone_arguments(CASES[name].arguments(0)))
    return program.run_decompositions({}).module()


def test_the_write_into_the_input_is_kept_and_the_graph_behaves_as_eager():
    gm = exported("input_update")
    remove_unused_nodes_keeping_writes(gm)
    assert [n.args[0].op for n in gm.graph.nodes if n.target is aten.copy_.default] == ["placeholder"]
    assert compare_calls(CASES["input_update"], gm) == []


def test_an_unused_node_is_erased_as_upstream_does():
    gm = exported("input_update")
    x = next(n for n in gm.graph.nodes if n.op == "placeholder")
    with gm.graph.inserting_after(x):
        unused = gm.graph.call_function(aten.neg.default, (x,))
    remove_unused_nodes_keeping_writes(gm)
    assert unused not in gm.graph.nodes
    assert compare_calls(CASES["input_update"], gm) == []


def test_writes_are_told_by_the_schema():
    graph = torch.fx.Graph()
    x = graph.placeholder("x")
    nodes = [
        graph.call_function(aten.add_.Tensor, (x, 1)),
        graph.call_function(aten.add.out, (x, 1), {"out": x}),
        graph.call_function(aten.add.Tensor, (x, 1)),
        graph.call_function(torch.add, (x, 1)),
    ]
    graph.output(x)
    assert [writes_an_argument(node) for node in nodes] == [True, True, False, False]
    GraphModule(torch.nn.Module(), graph)  # a well-formed graph


def test_apply_replaces_upstreams_pass_in_place():
    def remove_num_users_is_0_nodes(gm, settings=None):
        return gm

    remove_num_users_is_0_nodes.__module__ = "torch_tensorrt.dynamo.lowering.passes.remove_num_users_is_0_nodes"

    def other(gm, settings=None):
        return gm

    with testing.stub_post_lowering([other, remove_num_users_is_0_nodes]) as manager:
        with testing.applied(patch, release="2.12.1"):
            assert manager.passes[0] is other
            assert manager.passes[1].__name__ == "remove_unused_nodes_keeping_writes"
            gm = exported("input_update")
            assert compare_calls(CASES["input_update"], manager(gm, None)) == []
        assert manager.passes == [other, remove_num_users_is_0_nodes]
