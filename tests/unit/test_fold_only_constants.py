"""Tests for trt_compat.patches.fold_only_constants: CPU only, no torch_tensorrt needed.

Every graph is a real Dynamo graph: a custom ``torch.compile`` backend folds ``.item()`` calls the way the
Torch-TensorRT backend does (the number the tensor holds at compile time replaces the call), but only where the
patch's decision allows it, and returns the graph's ``forward``. The compiled model is called several times with
other values and compared with eager bit for bit at every call. ``apply`` is tested on stand-in modules.
"""

import operator
import re
import textwrap
import types
from typing import Callable, List, NamedTuple

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from trt_compat.patches import fold_only_constants, keep_identity_ops
from trt_compat.patches.fold_only_constants import item_folds_to_constant

from trt_compat import testing
from trt_compat.patching import TargetChanged

if tuple(int(p) for p in torch.__version__.split("+")[0].split(".")[:2]) < (2, 12):
    pytest.skip(
        "the patch applies to Torch-TensorRT 2.12 and newer, which pin torch 2.12 and newer; older Dynamo "
        "graphs differ (parameters as get_attr, floats specialised)",
        allow_module_level=True,
    )


class Fold(NamedTuple):
    decisions: List[tuple]  # (op, name, folded?) of every node an .item() reads, in each graph compiled
    compiled: Callable


def fold_item_calls(gm, example_inputs, decide):
    """What the Torch-TensorRT backend does before AOT tracing (the patch module's stand-in, which ``trt-compat
    demo`` shows too), with ``decide(node)`` saying what may be folded; returns each decision."""
    decisions = []

    def decide_and_note(source):
        decisions.append((source.op, source.name, decide(source)))
        return decisions[-1][2]

    fold_only_constants.fold_item_calls(gm, example_inputs, decide_and_note)
    return decisions


def compile_with_folding(model, decide=item_folds_to_constant, **dynamo_config):
    """``torch.compile(model)`` with a backend that folds ``.item()`` where ``decide`` allows it."""
    decisions = []

    def backend(gm, example_inputs):
        decisions.extend(fold_item_calls(gm, example_inputs, decide))
        return gm.forward

    torch._dynamo.reset()
    config = torch._dynamo.config.patch(**dynamo_config)
    return Fold(decisions, config(torch.compile(model, backend=backend)))


def fold_everything(node):
    """Upstream's rule: any placeholder or get_attr."""
    return True


@pytest.fixture(autouse=True)
def fresh_dynamo():
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()


def outputs(compiled, calls):
    with torch.no_grad():
        return [compiled(*inputs) for inputs in calls]


def assert_eager_at_every_call(compiled, eager, calls):
    with torch.no_grad():
        for number, inputs in enumerate(calls, 1):
            got, want = compiled(*inputs), eager(*inputs)
            assert torch.equal(got, want), f"call {number}: {got} instead of {want}"


def twins(model_cls, *args):
    """A model to compile and an identical one for eager (models that write buffers must not share them)."""
    torch.manual_seed(0)
    compiled = model_cls(*args).eval()
    torch.manual_seed(0)
    return compiled, model_cls(*args).eval()


# ---------------------------------------------------------------------------------------------
# placeholders are graph inputs: never folded


class ScaleBySum(nn.Module):
    def forward(self, x):
        return x * x.sum().item()


def test_graph_break_scalar_is_not_folded():
    # Dynamo's default: .item() breaks the graph; once the number changes it reaches the next graph as an input.
    model = ScaleBySum()
    calls = [(torch.full((3,), value),) for value in (1.0, 2.0, 3.0, 4.0)]
    run = compile_with_folding(model)
    assert_eager_at_every_call(run.compiled, model, calls)
    graph_break_inputs = [decision for decision in run.decisions if decision[0] == "placeholder"]
    assert graph_break_inputs and not any(folded for _, _, folded in graph_break_inputs), run.decisions


def test_graph_break_scalar_folded_as_upstream_does_is_stale():
    # The same graphs folded with upstream's rule: 3, 12, then 18 instead of 27.
    model = ScaleBySum()
    calls = [(torch.full((3,), value),) for value in (1.0, 2.0, 3.0)]
    got = outputs(compile_with_folding(model, fold_everything).compiled, calls)
    assert [t[0].item() for t in got] == [3.0, 12.0, 18.0]
    assert [model(*inputs)[0].item() for inputs in calls] == [3.0, 12.0, 27.0]


GLOBAL_SCALE = torch.tensor(3.0)


class EveryKindOfInput(nn.Module):
    """A parameter, a buffer, a plain tensor attribute, an input and a global, each read with .item()."""

    def __init__(self):
        super().__init__()
        self.scale = nn.Parameter(torch.tensor(0.5))
        self.register_buffer("shift", torch.tensor(0.25))
        self.k = torch.tensor(2.0)

    def forward(self, x, t):
        return x * self.scale.item() + self.shift.item() * self.k.item() + t.item() * GLOBAL_SCALE.item()


def test_no_placeholder_is_folded():
    model = EveryKindOfInput().eval()
    calls = [(torch.ones(3), torch.tensor(value)) for value in (1.0, 2.0, 3.0)]
    run = compile_with_folding(model, capture_scalar_outputs=True)
    assert_eager_at_every_call(run.compiled, model, calls)
    assert sorted(name for _, name, _ in run.decisions) == [
        "g_global_scale_",
        "l_self_buffers_shift_",
        "l_self_k",
        "l_self_parameters_scale_",
        "l_t_",
    ]
    assert {(op, folded) for op, _, folded in run.decisions} == {("placeholder", False)}


class Scale(nn.Module):
    def __init__(self, scale):
        super().__init__()
        self.scale = nn.Parameter(torch.tensor(scale))

    def forward(self, x):
        return x * self.scale.item()


@pytest.mark.parametrize("decide, stale", [(item_folds_to_constant, False), (fold_everything, True)])
def test_blocks_of_one_class_share_the_graph(decide, stale):
    # Module.compile() on each block: Dynamo compiles Scale.forward once and calls it with each block's parameter.
    blocks = [Scale(float(value)).eval() for value in (2.0, 3.0, 5.0)]
    compiled_graphs = []

    def backend(gm, example_inputs):
        compiled_graphs.append(gm)
        fold_item_calls(gm, example_inputs, decide)
        return gm.forward

    with torch._dynamo.config.patch(capture_scalar_outputs=True), torch.no_grad():
        got = [torch.compile(block, backend=backend)(torch.ones(2)) for block in blocks]
    assert len(compiled_graphs) == 1, "Dynamo compiled each block separately: nothing is shared"
    assert [t[0].item() for t in got] == ([2.0, 2.0, 2.0] if stale else [2.0, 3.0, 5.0])


def test_parameter_changed_in_place_is_read_at_each_call():
    model = Scale(2.0).eval()
    run = compile_with_folding(model, capture_scalar_outputs=True)
    for value in (2.0, 7.0):
        with torch.no_grad():
            model.scale.fill_(value)
        assert_eager_at_every_call(run.compiled, model, [(torch.ones(2),)])


# ---------------------------------------------------------------------------------------------
# get_attr: a constant of the graph, folded unless the graph writes it


class FreeTensors(nn.Module):
    def __init__(self):
        super().__init__()
        self.scale = nn.Parameter(torch.tensor(0.5))
        self.register_buffer("shift", torch.tensor(0.25))

    def forward(self, x):
        return x * self.scale.item() + self.shift.item() + GLOBAL_SCALE.item()


def test_get_attr_constants_are_folded():
    # install_free_tensors: Dynamo installs module state and globals into the graph module (get_attr nodes).
    model = FreeTensors().eval()
    run = compile_with_folding(model, capture_scalar_outputs=True, install_free_tensors=True)
    assert_eager_at_every_call(run.compiled, model, [(torch.randn(3),), (torch.randn(3),)])
    assert {(op, folded) for op, _, folded in run.decisions} == {("get_attr", True)}
    assert len(run.decisions) == 3


class WrittenInPlace(nn.Module):
    def __init__(self):
        super().__init__()
        self.register_buffer("count", torch.tensor(1.0))

    def forward(self, x):
        self.count.add_(1.0)
        return x * self.count.item()


class WrittenAfterItsItem(WrittenInPlace):
    def forward(self, x):
        y = x * self.count.item()
        self.count.add_(1.0)
        return y


class WrittenThroughView(nn.Module):
    def __init__(self):
        super().__init__()
        self.register_buffer("scale", torch.tensor([1.5]))

    def forward(self, x):
        self.scale.view(-1).mul_(2)
        return x * self.scale.item()


class WrittenBySetitem(WrittenThroughView):
    def forward(self, x):
        self.scale[0] = self.scale[0] + 1.0
        return x * self.scale.item()


class WrittenByInplaceKeyword(nn.Module):
    def __init__(self):
        super().__init__()
        self.register_buffer("scale", torch.tensor(-2.0))

    def forward(self, x):
        F.relu(self.scale, inplace=True)
        return x * self.scale.item()


class WrittenByOut(WrittenByInplaceKeyword):
    def forward(self, x):
        torch.add(self.scale, 1.0, out=self.scale)
        return x * self.scale.item()


class WrittenThroughTiedBuffer(nn.Module):
    """Two buffers over one storage: writing one changes the other."""

    def __init__(self):
        super().__init__()
        shared = torch.tensor([2.0])
        self.register_buffer("a", shared)
        self.register_buffer("b", shared.view(1))

    def forward(self, x):
        self.b.mul_(3)
        return x * self.a.item()


class WrittenThroughData(nn.Module):
    """``.data`` has its own version counter: the write does not show on the parameter's."""

    def __init__(self):
        super().__init__()
        self.p = nn.Parameter(torch.tensor(3.0))

    def forward(self, x):
        self.p.data.add_(1.0)
        return x * self.p.item()


@pytest.mark.parametrize(
    "model_cls",
    [
        WrittenInPlace,
        WrittenAfterItsItem,
        WrittenThroughView,
        WrittenBySetitem,
        WrittenByInplaceKeyword,
        WrittenByOut,
        WrittenThroughTiedBuffer,
        WrittenThroughData,
    ],
)
def test_get_attr_written_in_the_graph_is_not_folded(model_cls):
    model, eager = twins(model_cls)
    run = compile_with_folding(model, capture_scalar_outputs=True, install_free_tensors=True)
    assert_eager_at_every_call(run.compiled, eager, [(torch.ones(2),)] * 3)
    assert run.decisions and {(op, folded) for op, _, folded in run.decisions} == {("get_attr", False)}


def test_writes_to_other_tensors_do_not_block_folding():
    class CountsAndScales(nn.Module):
        def __init__(self):
            super().__init__()
            self.scale = nn.Parameter(torch.tensor(1.5))
            self.register_buffer("count", torch.tensor(0.0))

        def forward(self, x):
            self.count.add_(1.0)
            return x * self.scale.item()

    model, eager = twins(CountsAndScales)
    run = compile_with_folding(model, capture_scalar_outputs=True, install_free_tensors=True)
    assert_eager_at_every_call(run.compiled, eager, [(torch.ones(2),)] * 2)
    assert run.decisions == [("get_attr", "l__self___scale", True)]


# ---------------------------------------------------------------------------------------------
# graphs without Dynamo's records


def test_get_attr_without_a_traced_value_is_not_folded():
    # symbolic_trace records no values: nothing shows that the graph does not write the tensor.
    gm = torch.fx.symbolic_trace(Scale(2.0))
    scale = next(node for node in gm.graph.nodes if node.op == "get_attr")
    assert not item_folds_to_constant(scale)


def test_get_attr_with_an_inference_tensor_is_not_folded():
    graph = torch.fx.Graph()
    scale = graph.get_attr("scale")
    with torch.inference_mode():
        scale.meta["example_value"] = torch.tensor(2.0)  # no version counter to read
    graph.output(graph.call_method("item", (scale,)))
    assert not item_folds_to_constant(scale)
    scale.meta["example_value"] = torch.tensor(2.0)
    assert item_folds_to_constant(scale)


def test_placeholder_without_dynamo_records_is_not_folded():
    graph = torch.fx.Graph()
    x = graph.placeholder("x")
    x.meta["example_value"] = torch.tensor(2.0)
    graph.output(graph.call_method("item", (x,)))
    assert not item_folds_to_constant(x)


# ---------------------------------------------------------------------------------------------
# apply, on stand-ins for the two Torch-TensorRT modules (our own minimal code with upstream's shape)

FOLD = "torch_tensorrt.dynamo.lowering.passes.fold_get_attr_item_calls"
BACKENDS = "torch_tensorrt.dynamo.backend.backends"

STAND_IN = """
import operator
import re
import torch


def _remove_identity_ops(gm):
    return False


def _get_actual_tensor(origin, gm, sample_inputs, placeholder_index):
    if origin.op == "get_attr":
        return operator.attrgetter(origin.target)(gm)
    return sample_inputs[placeholder_index[origin]]


def fold_get_attr_item_calls(gm, sample_inputs=None):
    _remove_identity_ops(gm)
    index = {node: i for i, node in enumerate(n for n in gm.graph.nodes if n.op == "placeholder")}
    for node in list(gm.graph.nodes):
        if node.op == "call_method" and node.target == "item" and node.args[0].op in ("placeholder", "get_attr"):
            value = _get_actual_tensor(node.args[0], gm, sample_inputs, index)
            if value is None:
                continue
            node.replace_all_uses_with(value.item())
            gm.graph.erase_node(node)
    gm.recompile()
    return gm
"""


def stand_ins(source=STAND_IN):
    fold = types.ModuleType(FOLD)
    exec(textwrap.dedent(source), fold.__dict__)
    backends = types.ModuleType(BACKENDS)
    backends.fold_get_attr_item_calls = fold.fold_get_attr_item_calls
    return fold, backends


def item_graph():
    """``x * x.item() + c.item()``: an input and a constant (with the value Dynamo would have traced)."""
    root = nn.Module()
    root.register_buffer("c", torch.tensor(5.0))
    graph = torch.fx.Graph()
    x, c = graph.placeholder("x"), graph.get_attr("c")
    c.meta["example_value"] = torch.tensor(5.0)
    product = graph.call_function(operator.mul, (x, graph.call_method("item", (x,))))
    graph.output(graph.call_function(operator.add, (product, graph.call_method("item", (c,)))))
    return torch.fx.GraphModule(root, graph)


def items_left(gm):
    return [node.args[0].op for node in gm.graph.nodes if node.op == "call_method" and node.target == "item"]


def test_apply_folds_only_the_constant():
    fold, backends = stand_ins()
    with testing.stub_modules({FOLD: fold, BACKENDS: backends}):
        assert items_left(fold.fold_get_attr_item_calls(item_graph(), [torch.tensor(2.0)])) == []
        with testing.applied(fold_only_constants, release="2.14.0") as ctx:
            assert [change.name for change in ctx.records] == ["_get_actual_tensor"]
            gm = backends.fold_get_attr_item_calls(item_graph(), [torch.tensor(2.0)])
            assert items_left(gm) == ["placeholder"]
            for value in (2.0, 3.0):
                assert torch.equal(gm(torch.tensor(value)), torch.tensor(value * value + 5.0))
        assert items_left(fold.fold_get_attr_item_calls(item_graph(), [torch.tensor(2.0)])) == []


@pytest.mark.parametrize("first", [fold_only_constants, keep_identity_ops])
def test_apply_with_keep_identity_ops_in_either_order(first):
    fold, backends = stand_ins()
    second = keep_identity_ops if first is fold_only_constants else fold_only_constants
    with testing.stub_modules({FOLD: fold, BACKENDS: backends}):
        with testing.applied(first, release="2.14.0"), testing.applied(second, release="2.14.0"):
            assert fold._get_actual_tensor.__trt_compat_patch__ == "fold_only_constants"
            assert fold._remove_identity_ops.__trt_compat_patch__ == "keep_identity_ops"
            assert items_left(backends.fold_get_attr_item_calls(item_graph(), [torch.tensor(2.0)])) == ["placeholder"]
        assert not hasattr(fold._get_actual_tensor, "__trt_compat_patch__")
        assert not hasattr(fold._remove_identity_ops, "__trt_compat_patch__")


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda s: s.replace("(origin, gm,", "(gm, origin,"), "no longer takes the node to fold first"),
        (
            lambda s: s.replace("value = _get_actual_tensor(", "value = globals()['_get_actual_tensor']("),
            "no longer calls the module's _get_actual_tensor",
        ),
        (
            lambda s: s.replace(
                "continue\n            node.replace", "value = torch.tensor(0.0)\n            node.replace"
            ),
            "folds .item() without _get_actual_tensor",
        ),
    ],
)
def test_apply_refuses_a_changed_target(change, message):
    fold, backends = stand_ins(change(STAND_IN))
    with testing.stub_modules({FOLD: fold, BACKENDS: backends}):
        original = fold._get_actual_tensor
        with pytest.raises(TargetChanged, match=re.escape(message)):
            with testing.applied(fold_only_constants, release="2.14.0"):
                pass
        assert fold._get_actual_tensor is original, "a refused apply must leave nothing behind"


def test_apply_refuses_a_backend_calling_another_folding():
    fold, backends = stand_ins()
    backends.fold_get_attr_item_calls = lambda gm, sample_inputs=None: gm
    with testing.stub_modules({FOLD: fold, BACKENDS: backends}):
        with pytest.raises(TargetChanged, match="no longer calls"):
            with testing.applied(fold_only_constants, release="2.14.0"):
                pass
