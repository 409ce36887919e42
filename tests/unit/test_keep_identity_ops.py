"""Tests for trt_compat.patches.keep_identity_ops: CPU only, no torch_tensorrt needed.

Every graph is a real Dynamo graph: a custom ``torch.compile`` backend runs the graph function on the
GraphModule Dynamo hands it (only then does each placeholder carry Dynamo's ``grapharg``, which says whether it
is a module parameter or buffer), then folds ``.item()`` calls the way the Torch-TensorRT backend does next, and
returns the resulting graph's ``forward``: the compiled model runs exactly the graph under test, and its output is
compared with eager bit for bit.
"""

import operator
from typing import Callable, List, NamedTuple

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from trt_compat.patches import fold_only_constants
from trt_compat.patches.keep_identity_ops import remove_identity_ops_before_item

if tuple(int(p) for p in torch.__version__.split("+")[0].split(".")[:2]) < (2, 12):
    pytest.skip(
        "the patch applies to Torch-TensorRT 2.12 and newer, which pin torch 2.12 and newer; older Dynamo "
        "graphs differ (parameters as get_attr, no grapharg sources)",
        allow_module_level=True,
    )

aten = torch.ops.aten
IDENTITY = {
    "clone",
    "contiguous",
    "detach",
    aten.clone.default,
    aten.detach.default,
    aten.alias.default,
    aten.contiguous.default,
}


class Captured(NamedTuple):
    output: torch.Tensor
    changed: bool
    before: List[str]  # "op target" of each node, before the graph function ran
    graph: torch.fx.Graph  # after it, and after folding
    compiled: Callable  # to call again


def describe(node):
    return f"{node.op} {node.target}"


def fold_item_calls(gm, example_inputs):
    """What the Torch-TensorRT backend does right after: an ``.item()`` of a graph input or attribute becomes
    the number it holds at compile time (fold_only_constants' stand-in, with upstream's rule)."""
    fold_only_constants.fold_item_calls(gm, example_inputs, lambda node: True)


def run(model, *inputs, capture_scalars=True, **dynamo_config):
    """Compile ``model`` with a backend applying the graph function, then folding; the output is that graph's."""
    captured = []

    def backend(gm, example_inputs):
        before = [describe(node) for node in gm.graph.nodes]
        changed = remove_identity_ops_before_item(gm)
        gm.graph.lint()
        fold_item_calls(gm, example_inputs)
        captured.append((changed, before, gm.graph))
        return gm.forward

    torch._dynamo.reset()
    config = torch._dynamo.config.patch(capture_scalar_outputs=capture_scalars, **dynamo_config)
    compiled = config(torch.compile(model, backend=backend, fullgraph=True))
    with torch.no_grad():
        output = compiled(*inputs)
    assert len(captured) == 1, "expected exactly one Dynamo graph"
    return Captured(output, *captured[0], compiled)


@pytest.fixture(autouse=True)
def fresh_dynamo():
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()


def identity_nodes(graph):
    return [
        describe(node)
        for node in graph.nodes
        if node.op in ("call_method", "call_function") and node.target in IDENTITY
    ]


def item_calls(graph):
    """The .item() calls left after folding, each as the op of the node it reads."""
    return [node.args[0].op for node in graph.nodes if node.op == "call_method" and node.target == "item"]


def removed(result):
    after = [describe(node) for node in result.graph.nodes]
    return sorted(entry for entry in result.before if entry not in after and entry != "call_method item")


def assert_unchanged(result):
    """Nothing removed (an .item() may still have been folded, when it reads module state directly)."""
    assert not result.changed
    after = [describe(node) for node in result.graph.nodes]
    assert [entry for entry in result.before if entry != "call_method item"] == [
        entry for entry in after if entry != "call_method item"
    ]


def assert_same_as_eager(result, model, *inputs):
    with torch.no_grad():
        expected = model(*inputs)
    assert torch.equal(result.output, expected), (result.output, expected)


def fresh(model_cls):
    """A model and a separate, identical one for eager (models that mutate buffers must not share state)."""
    torch.manual_seed(0)
    compiled = model_cls().eval()
    torch.manual_seed(0)
    return compiled, model_cls().eval()


# ---------------------------------------------------------------------------------------------
# identity nodes that do not lead to .item() stay


class Attention(nn.Module):
    def __init__(self, channels=16, heads=2):
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(channels, 3 * channels)

    def forward(self, x):
        batch, tokens, channels = x.shape
        q, k, v = self.qkv(x).split(channels, dim=2)
        q, k, v = (t.view(batch, tokens, self.heads, channels // self.heads).transpose(1, 2) for t in (q, k, v))
        y = torch.softmax(q @ k.transpose(-2, -1), dim=-1) @ v
        return y.transpose(1, 2).contiguous().view(batch, tokens, channels)


class CloneMul(nn.Module):
    def forward(self, x):
        y = x.clone()
        y.mul_(2)
        return x + y


class CloneAddAfterLinear(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(8, 8)

    def forward(self, x):
        y = self.lin(x)
        z = y.clone()
        z.add_(1.0)
        return y * z


class CloneIndexAssign(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(8, 8)

    def forward(self, x):
        y = self.lin(x)
        z = y.clone()
        z[:, 0] = 0
        return y - z


class AtenForms(nn.Module):
    def forward(self, x):
        y = aten.clone.default(x)
        y.mul_(2)
        t = aten.contiguous.default(x.t())
        return x + y + aten.alias.default(aten.detach.default(x)) + t.t()


@pytest.mark.parametrize(
    "model_cls, make_input",
    [
        (Attention, lambda: torch.randn(2, 5, 16)),
        (CloneMul, lambda: torch.ones(2, 3)),
        (CloneAddAfterLinear, lambda: torch.randn(4, 8)),
        (CloneIndexAssign, lambda: torch.randn(4, 8)),
        (AtenForms, lambda: torch.randn(3, 3)),
    ],
)
def test_identity_nodes_without_item_stay(model_cls, make_input):
    model, x = model_cls().eval(), make_input()
    result = run(model, x)
    assert identity_nodes(result.graph), "the model should have identity nodes"
    assert_unchanged(result)
    assert_same_as_eager(result, model, x)


# ---------------------------------------------------------------------------------------------
# chains from parameters, buffers and get_attr to .item() are removed (upstream then folds the .item())


class ScaledLinear(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(8, 8)
        self.scale = nn.Parameter(torch.tensor(0.5))
        self.register_buffer("eps", torch.tensor(0.25))

    def forward(self, x):
        return self.lin(x) * self.scale.clone().item() + self.eps.detach().item()


class LongChain(nn.Module):
    def __init__(self):
        super().__init__()
        self.scale = nn.Parameter(torch.tensor(1.5))

    def forward(self, x):
        return x * self.scale.clone().detach().contiguous().item()


class AtenChain(nn.Module):
    def __init__(self):
        super().__init__()
        self.scale = nn.Parameter(torch.tensor(1.5))

    def forward(self, x):
        return x * aten.alias.default(aten.detach.default(self.scale)).item()


class BranchingChain(nn.Module):
    """One clone read by two .item() calls, one of them through a detach: the whole tree feeds items."""

    def __init__(self):
        super().__init__()
        self.scale = nn.Parameter(torch.tensor(1.5))

    def forward(self, x):
        c = self.scale.clone()
        return x * c.item() + c.detach().item()


class AttentionWithItem(Attention):
    """Identity nodes of both kinds in one graph: only the chain to .item() goes."""

    def __init__(self):
        super().__init__()
        self.temperature = nn.Parameter(torch.tensor(2.0))

    def forward(self, x):
        return super().forward(x) / self.temperature.detach().item()


@pytest.mark.parametrize(
    "model_cls, removed_nodes",
    [
        (ScaledLinear, ["call_method clone", "call_method detach"]),
        (LongChain, ["call_method clone", "call_method detach", "call_method contiguous"]),
        (AtenChain, ["call_function aten.detach.default", "call_function aten.alias.default"]),
        (BranchingChain, ["call_method clone", "call_method detach"]),
        (AttentionWithItem, ["call_method detach"]),
    ],
)
def test_chains_from_module_state_to_item_are_removed(model_cls, removed_nodes):
    model = model_cls().eval()
    x = torch.randn(2, 5, 16) if issubclass(model_cls, Attention) else torch.randn(4, 8)
    result = run(model, x)
    assert result.changed
    assert removed(result) == sorted(removed_nodes)
    assert item_calls(result.graph) == [], "every .item() read the parameter itself, and was folded"
    if model_cls is AttentionWithItem:
        assert identity_nodes(result.graph) == ["call_method contiguous"]
    assert_same_as_eager(result, model, x)


def test_code_regeneration_is_left_to_the_caller():
    # As with upstream's _remove_identity_ops: fold_get_attr_item_calls recompiles once, after folding.
    gm = torch.fx.symbolic_trace(LongChain())
    code = gm.code
    assert remove_identity_ops_before_item(gm)
    assert gm.code == code
    gm.recompile()
    assert "clone" not in gm.code and "detach" not in gm.code and "contiguous" not in gm.code


class FreeTensors(nn.Module):
    """A plain tensor attribute and a global tensor: get_attr nodes when Dynamo installs free tensors."""

    def __init__(self):
        super().__init__()
        self.k = torch.tensor(2.0)

    def forward(self, x):
        return x * self.k.clone().item() + GLOBAL_SCALE.detach().item()


GLOBAL_SCALE = torch.tensor(3.0)


def test_get_attr_roots_are_folded():
    model, x = FreeTensors(), torch.randn(4)
    result = run(model, x, install_free_tensors=True)
    assert "get_attr" in {entry.split()[0] for entry in result.before}
    assert result.changed
    assert identity_nodes(result.graph) == []
    assert item_calls(result.graph) == []
    assert_same_as_eager(result, model, x)


def test_global_tensor_placeholder_is_not_module_state():
    # Without install_free_tensors the global is a graph input whose source is a global, not a module:
    # its value may differ from call to call, so folding it would freeze the first call's value.
    model, x = FreeTensors(), torch.randn(4)
    result = run(model, x)
    assert removed(result) == ["call_method clone"]  # self.k is module state; GLOBAL_SCALE is not
    assert identity_nodes(result.graph) == ["call_method detach"]
    assert item_calls(result.graph) == ["call_method"]
    assert_same_as_eager(result, model, x)


# ---------------------------------------------------------------------------------------------
# chains kept: folding them could change a number


class InputItem(nn.Module):
    def forward(self, x, t):
        return x * t.clone().item()


def test_chain_from_an_ordinary_input_stays():
    # Folding would bake the first call's value of `t` into the graph.
    model, x = InputItem(), torch.randn(4)
    result = run(model, x, torch.tensor(3.0))
    for t in (3.0, 5.0):
        with torch.no_grad():
            assert torch.equal(result.compiled(x, torch.tensor(t)), model(x, torch.tensor(t)))
    assert_unchanged(result)
    assert item_calls(result.graph) == ["call_method"]


class CloneUsedElsewhere(nn.Module):
    def __init__(self):
        super().__init__()
        self.scale = nn.Parameter(torch.tensor(1.5))

    def forward(self, x):
        c = self.scale.clone()
        return x * c + c.item()


class CloneMutatedBeforeItem(nn.Module):
    def __init__(self):
        super().__init__()
        self.register_buffer("scale", torch.tensor(1.5))

    def forward(self, x):
        c = self.scale.clone()
        c.add_(1.0)
        return x * c.item()


class RootMutatedInPlace(nn.Module):
    def __init__(self):
        super().__init__()
        self.register_buffer("count", torch.tensor(1.0))

    def forward(self, x):
        self.count.add_(1.0)
        return x * self.count.detach().item()


class RootMutatedThroughView(nn.Module):
    def __init__(self):
        super().__init__()
        self.register_buffer("scale", torch.tensor([1.5]))

    def forward(self, x):
        self.scale.view(-1).mul_(2)
        return x * self.scale.clone().item()


class RootMutatedBySetitem(nn.Module):
    def __init__(self):
        super().__init__()
        self.register_buffer("scale", torch.tensor([1.5]))

    def forward(self, x):
        self.scale[0] = 4.0
        return x * self.scale.clone().item()


class RootMutatedByInplaceKeyword(nn.Module):
    def __init__(self):
        super().__init__()
        self.register_buffer("scale", torch.tensor(-2.0))

    def forward(self, x):
        F.relu(self.scale, inplace=True)
        return x * self.scale.clone().item()


class RootMutatedByOut(nn.Module):
    def __init__(self):
        super().__init__()
        self.register_buffer("scale", torch.tensor(-2.0))

    def forward(self, x):
        torch.add(x.sum(), 1.0, out=self.scale)
        return x * self.scale.clone().item()


class RootMutatedThroughTiedBuffer(nn.Module):
    """Two buffers over one storage: writing one changes the other."""

    def __init__(self):
        super().__init__()
        shared = torch.tensor([2.0])
        self.register_buffer("a", shared)
        self.register_buffer("b", shared.view(1))

    def forward(self, x):
        self.b.mul_(3)
        return x * self.a.clone().item()


class RootMutatedByIadd(nn.Module):
    def __init__(self):
        super().__init__()
        self.register_buffer("scale", torch.tensor(2.0))

    def forward(self, x):
        s = self.scale
        s += 1.0
        return x * self.scale.clone().item()


@pytest.mark.parametrize(
    "model_cls",
    [
        CloneUsedElsewhere,
        CloneMutatedBeforeItem,
        RootMutatedInPlace,
        RootMutatedThroughView,
        RootMutatedBySetitem,
        RootMutatedByInplaceKeyword,
        RootMutatedByOut,
        RootMutatedThroughTiedBuffer,
        RootMutatedByIadd,
    ],
)
def test_chain_whose_value_could_change_stays(model_cls):
    model, eager_model = fresh(model_cls)
    x = torch.randn(4)
    result = run(model, x)
    with torch.no_grad():
        expected = eager_model(x)
    assert torch.equal(result.output, expected)
    assert identity_nodes(result.graph), "the chain must stay"
    assert_unchanged(result)


class UnrelatedMutation(nn.Module):
    """Writes to another tensor do not stop the folding of a parameter's .item()."""

    def __init__(self):
        super().__init__()
        self.scale = nn.Parameter(torch.tensor(1.5))
        self.register_buffer("count", torch.tensor(0.0))

    def forward(self, x):
        y = x.clone()
        y.mul_(self.scale)
        self.count.add_(1.0)
        return y * self.scale.detach().item()


def test_writes_to_other_tensors_do_not_block_folding():
    model, eager_model = fresh(UnrelatedMutation)
    x = torch.randn(4)
    result = run(model, x)
    assert result.changed
    assert identity_nodes(result.graph) == ["call_method clone"]
    with torch.no_grad():
        expected = eager_model(x)
    assert torch.equal(result.output, expected)


# ---------------------------------------------------------------------------------------------
# graphs without Dynamo's metadata


class TracedScale(nn.Module):
    def __init__(self):
        super().__init__()
        self.scale = nn.Parameter(torch.tensor(1.5))

    def forward(self, x):
        return x * self.scale.clone().item()


class TracedScaleWithWrite(TracedScale):
    def forward(self, x):
        x.add_(1.0)
        return x * self.scale.clone().item()


def test_get_attr_root_without_metadata():
    # symbolic_trace records no values at all: get_attr roots still fold when nothing in the graph writes...
    model = TracedScale()
    gm = torch.fx.symbolic_trace(model)
    assert remove_identity_ops_before_item(gm)
    assert item_calls(gm.graph) == ["get_attr"]
    gm.recompile()
    x = torch.randn(4)
    with torch.no_grad():
        assert torch.equal(gm(x), model(x))


def test_unknown_storage_is_assumed_shared():
    # ...but a write to a tensor of unknown storage might be a write to the root.
    gm = torch.fx.symbolic_trace(TracedScaleWithWrite())
    assert not remove_identity_ops_before_item(gm)
    assert identity_nodes(gm.graph) == ["call_method clone"]


def test_placeholder_without_grapharg_is_not_module_state():
    graph = torch.fx.Graph()
    x = graph.placeholder("x")
    graph.output(graph.call_method("item", (graph.call_method("clone", (x,)),)))
    gm = torch.fx.GraphModule(torch.nn.Module(), graph)
    assert not remove_identity_ops_before_item(gm)
    assert identity_nodes(gm.graph) == ["call_method clone"]


def test_operator_setitem_counts_as_a_write():
    graph = torch.fx.Graph()
    x = graph.placeholder("x")
    scale = graph.get_attr("scale")
    graph.call_function(operator.setitem, (scale, 0, x))
    graph.output(graph.call_method("item", (graph.call_method("detach", (scale,)),)))
    root = torch.nn.Module()
    root.register_buffer("scale", torch.tensor([1.0]))
    gm = torch.fx.GraphModule(root, graph)
    assert not remove_identity_ops_before_item(gm)
