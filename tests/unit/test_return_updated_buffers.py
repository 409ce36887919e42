"""Tests for trt_compat.patches.return_updated_buffers: CPU only, no torch_tensorrt needed.

The graph of a model returning the buffer it updates, as ``torch_tensorrt.dynamo.compile`` gets it: after the
patch's rewrite the ``copy_`` has no reader (so 2.14's ``lift_mutated_buffers`` can erase it), and the graph still
behaves as the eager model over three calls, outputs and buffer bit for bit.
"""

import types

import pytest
import torch
from torch.fx import GraphModule
from trt_compat.patches import return_updated_buffers as patch
from trt_compat.patches.return_updated_buffers import BufferUpdateError, read_updated_buffer_values

from tests.helpers.stateful import CASES, clone_arguments, compare_calls
from trt_compat import testing

aten = torch.ops.aten


def exported(name):
    torch.manual_seed(0)
    program = torch.export.export(CASES[name].model().eval(), clone_arguments(CASES[name].arguments(0)))
    return program.run_decompositions({}).module()


def copies(gm):
    return [n for n in gm.graph.nodes if n.target is aten.copy_.default]


def test_the_copy_loses_its_reader_and_the_graph_behaves_as_eager():
    gm = exported("counter_returned")
    assert [len(c.users) for c in copies(gm)] == [1]
    assert read_updated_buffer_values(gm) == 1
    assert [len(c.users) for c in copies(gm)] == [0]
    assert compare_calls(CASES["counter_returned"], gm) == []


def test_a_graph_not_returning_its_buffer_is_not_changed():
    gm = exported("counter")
    code = gm.code
    assert read_updated_buffer_values(gm) == 0 and gm.code == code


def test_a_value_of_another_dtype_is_refused():
    graph = torch.fx.Graph()
    count = graph.get_attr("count")
    count.meta["val"] = torch.empty(())
    value = graph.call_function(aten.ones.default, ([],), {"dtype": torch.int64})
    value.meta["val"] = torch.empty((), dtype=torch.int64)
    graph.output((graph.call_function(aten.copy_.default, (count, value)),))
    root = torch.nn.Module()
    root.register_buffer("count", torch.zeros(()))
    with pytest.raises(BufferUpdateError, match=r"another shape or dtype into buffer 'count'.*Remedy: return a copy"):
        read_updated_buffer_values(GraphModule(root, graph))


def test_apply_wraps_lift_mutated_buffers_where_compile_looks_it_up():
    compiler = types.ModuleType("torch_tensorrt.dynamo._compiler")
    compiler.torch = torch
    exec(
        "def lift_mutated_buffers(gm, settings=None):\n"
        "    return gm, [n for n in gm.graph.nodes if n.target is torch.ops.aten.copy_.default and n.users]\n"
        "def compile(gm):\n"
        "    return lift_mutated_buffers(gm)\n",
        vars(compiler),
    )
    with testing.stub_modules({"torch_tensorrt.dynamo._compiler": compiler}):
        with testing.applied(patch, release="2.14.0"):
            gm, still_read = compiler.compile(exported("counter_returned"))
            assert still_read == []
