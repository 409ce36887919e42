"""Tests for trt_compat.patches.keep_exported_buffer_updates: CPU only, no torch_tensorrt needed.

Every graph is what ``torch_tensorrt.dynamo.compile`` lowers: ``torch.export.export``, decomposed, unlifted with
``ExportedProgram.module()``. The lifted graph must compute eager's outputs and the buffers' new values from the
inputs and the buffers; put back (as if ``compile_module`` had returned the graph as it is), the module must behave as
the eager model over three calls, outputs and buffers bit for bit.
"""

import types

import pytest
import torch
from torch.fx import GraphModule
from trt_compat.patches import keep_exported_buffer_updates as patch
from trt_compat.patches.keep_exported_buffer_updates import (
    BufferUpdateError,
    lift_updated_buffers,
    lifted_placeholders,
    put_buffers_back,
)

from tests.helpers.stateful import CASES, clone_arguments, compare_calls
from trt_compat import testing

aten = torch.ops.aten
BUFFER_CASES = ["counter", "counter_returned", "kv_slice", "kv_index_copy"]


def exported(name):
    torch.manual_seed(0)
    model = CASES[name].model().eval()
    program = torch.export.export(model, clone_arguments(CASES[name].arguments(0)))
    return model, program.run_decompositions({}).module()


@pytest.mark.parametrize("name", BUFFER_CASES)
def test_the_lifted_graph_computes_the_outputs_and_new_values(name):
    model, gm = exported(name)
    lifted, placeholders = lift_updated_buffers(gm)
    assert [n.op for n in lifted.graph.nodes if n.target is aten.copy_.default] == []
    assert not [n for n in lifted.graph.nodes if n.op == "get_attr" and n.target in dict(model.named_buffers())]
    arguments = CASES[name].arguments(0)
    buffers = [dict(model.named_buffers())[n.meta[patch._LIFTED].target].clone() for n in placeholders]
    with torch.no_grad():
        results = lifted(*clone_arguments(arguments), *buffers)
        expected = model(*clone_arguments(arguments))
    expected = list(expected) if isinstance(expected, tuple) else [expected]
    *outputs, new_values = results[: len(expected)], results[len(expected) :]
    for actual, want in zip(outputs[0], expected):
        assert torch.equal(actual, want)
    assert [torch.equal(v, b) for v, b in zip(new_values, model.buffers())] == [True] * len(new_values)


@pytest.mark.parametrize("name", BUFFER_CASES)
def test_put_back_the_module_behaves_as_eager_over_three_calls(name):
    _, gm = exported(name)
    lifted, _ = lift_updated_buffers(gm)
    assert compare_calls(CASES[name], put_buffers_back(lifted)) == []


def test_put_back_the_buffer_is_written_after_every_reader_and_the_calling_convention_is_the_models():
    _, gm = exported("counter")
    restored = put_buffers_back(lift_updated_buffers(gm)[0])
    nodes = list(restored.graph.nodes)
    copy = next(n for n in nodes if n.target is aten.copy_.default)
    assert nodes.index(copy) == len(nodes) - 2 and copy.args[0].op == "get_attr"
    assert [n.name for n in restored.graph.nodes if n.op == "placeholder"] == ["x"]
    assert type(restored.graph._codegen) is type(gm.graph._codegen)
    assert "count" in dict(restored.named_buffers())


def test_a_graph_updating_no_buffer_is_left_as_it_is():
    _, gm = exported("input_update")
    code = gm.code
    assert lift_updated_buffers(gm) == (gm, []) and gm.code == code


def test_nested_buffers_are_lifted_and_put_back_under_their_names():
    class Outer(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.inner = CASES["counter"].model()

        def forward(self, x):
            return self.inner(x) + 1

    program = torch.export.export(Outer().eval(), (torch.ones(2, 3),))
    lifted, placeholders = lift_updated_buffers(program.run_decompositions({}).module())
    assert placeholders[0].meta[patch._LIFTED].target == "inner.count"
    restored = put_buffers_back(lifted)
    with torch.no_grad():
        restored(torch.ones(2, 3))
        second = restored(torch.ones(2, 3))
    assert torch.equal(second, torch.full((2, 3), 3.0)) and float(restored.inner.count) == 2.0


def hand_made(second_write=False, returned_dtype=None):
    """get_attr count; value = count + 1 (or a cast of it); copy_(count, value); maybe a second copy_ or returned."""
    graph = torch.fx.Graph()
    x = graph.placeholder("x")
    count = graph.get_attr("count")
    count.meta["val"] = torch.empty(())
    value = graph.call_function(aten.add.Tensor, (count, 1))
    value.meta["val"] = torch.empty(())
    if returned_dtype is not None:
        value = graph.call_function(aten._to_copy.default, (value,), {"dtype": returned_dtype})
        value.meta["val"] = torch.empty((), dtype=returned_dtype)
    copy = graph.call_function(aten.copy_.default, (count, value))
    if second_write:
        graph.call_function(aten.copy_.default, (count, x))
    graph.output((graph.call_function(aten.mul.Tensor, (x, value)), copy) if returned_dtype else (x,))
    root = torch.nn.Module()
    root.register_buffer("count", torch.zeros(()))
    return GraphModule(root, graph)


def test_two_writes_of_one_buffer_are_refused_naming_both():
    with pytest.raises(
        BufferUpdateError, match=r"node 'copy__default' .* and node 'copy__default_1' .* both write buffer 'count'"
    ):
        lift_updated_buffers(hand_made(second_write=True))


def test_a_returned_buffer_written_with_another_dtype_is_refused():
    with pytest.raises(
        BufferUpdateError, match=r"node 'copy__default' .*another shape or dtype into buffer 'count'.*Remedy"
    ):
        lift_updated_buffers(hand_made(returned_dtype=torch.int64))


# ------------------------------------------------------------------------------- apply, with a stand-in compiler


def stand_in_compiler():
    """dynamo.compile's shape: post_lowering then compile_module (here: the graph itself), and another function that
    calls post_lowering without compile_module, as convert_exported_program_to_serialized_trt_engine does."""
    compiler = types.ModuleType("torch_tensorrt.dynamo._compiler")
    exec(
        "def post_lowering(gm, settings=None):\n"
        "    return gm\n"
        "def compile_module(gm, sample_arg_inputs, sample_kwarg_inputs=None, settings=None):\n"
        "    compile_module.seen.append(list(sample_arg_inputs))\n"
        "    return gm\n"
        "compile_module.seen = []\n"
        "def compile(gm, inputs):\n"
        "    gm = post_lowering(gm)\n"
        "    return compile_module(gm, inputs)\n"
        "def convert_exported_program_to_serialized_trt_engine(gm):\n"
        "    return post_lowering(gm)\n",
        vars(compiler),
    )
    top = types.ModuleType("torch_tensorrt")
    top.Input = types.SimpleNamespace(from_tensor=lambda tensor: ("Input", tuple(tensor.shape)))
    return {"torch_tensorrt": top, "torch_tensorrt.dynamo._compiler": compiler}


def test_apply_lifts_for_compile_and_puts_the_buffers_back():
    modules = stand_in_compiler()
    compiler = modules["torch_tensorrt.dynamo._compiler"]
    with testing.stub_modules(modules), testing.applied(patch, release="2.12.1") as ctx:
        assert sorted(change.name for change in ctx.records) == ["compile_module", "post_lowering"]
        _, gm = exported("counter")
        compiled = compiler.compile(gm, ["x"])
        assert compiler.compile_module.__wrapped__.seen == [["x", ("Input", ())]]
        assert compare_calls(CASES["counter"], compiled) == []


def test_apply_leaves_a_caller_without_compile_module_alone():
    modules = stand_in_compiler()
    compiler = modules["torch_tensorrt.dynamo._compiler"]
    with testing.stub_modules(modules), testing.applied(patch, release="2.12.1"):
        _, gm = exported("counter")
        code = gm.code
        assert compiler.convert_exported_program_to_serialized_trt_engine(gm) is gm and gm.code == code
        assert lifted_placeholders(gm) == []


def test_apply_refuses_a_compile_that_no_longer_calls_compile_module():
    modules = stand_in_compiler()
    exec("def compile(gm, inputs):\n    return post_lowering(gm)\n", vars(modules["torch_tensorrt.dynamo._compiler"]))
    with testing.stub_modules(modules), pytest.raises(patch.TargetChanged, match="compile_module"):
        with testing.applied(patch, release="2.12.1"):
            pass
