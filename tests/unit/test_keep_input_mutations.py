"""Tests for trt_compat.patches.keep_input_mutations: CPU only, no torch_tensorrt needed.

Every graph is a real Dynamo graph, handed to a custom ``torch.compile`` backend. The backend that loses
updates, ``clone_and_trace`` (the patch module's stand-in, which ``trt-compat demo`` shows too), does what the
Torch-TensorRT backend does before partitioning: a clone after every tensor input, then ``aot_export_joint_simple``
(functional tracing), and it runs the traced graph in PyTorch.
``compile_keeping_mutations`` around it must give the outputs and states of eager mode, bit for bit, call after
call. Runs on any torch from 2.4 (buffers are ``get_attr`` nodes there and graph inputs from 2.5).
"""

import copy
import operator
import unittest.mock
from typing import Any, Callable, Dict, List, NamedTuple, Sequence

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch._functorch.aot_autograd import aot_export_joint_simple
from torch._guards import detect_fake_mode
from trt_compat.patches.keep_input_mutations import (
    InputMutationError,
    WriteBack,
    clone_and_trace,
    clone_every_input,
    compile_keeping_mutations,
    describe_target,
    find_mutations,
    may_write_an_input,
    may_write_in_place,
    return_updated_inputs,
    write_back,
)

aten = torch.ops.aten
# From torch 2.5 Dynamo inlines nn.Module calls and passes buffers as graph inputs; torch 2.4 reads them with get_attr.
BUFFERS_ARE_INPUTS = tuple(int(part) for part in torch.__version__.split("+")[0].split(".")[:2]) >= (2, 5)


@pytest.fixture(autouse=True)
def fresh_dynamo():
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()


# ---------------------------------------------------------------------------------------------
# Models: each updates an input or a buffer in place (or deliberately does not)


class AddToInput(nn.Module):
    def forward(self, x):
        x.add_(1)
        return x * 2


class StepCounter(nn.Module):
    def __init__(self):
        super().__init__()
        self.register_buffer("count", torch.zeros(()))

    def forward(self, x):
        self.count.add_(1)
        return x * self.count


class KVCache(nn.Module):
    """The write of a decoder step: one row of a cache buffer, at a position given as a Python int."""

    def __init__(self):
        super().__init__()
        self.register_buffer("cache", torch.zeros(4, 3))

    def forward(self, x, pos: int):
        self.cache[pos] = x
        return self.cache.sum(0)


class IndexPutCache(nn.Module):
    def __init__(self):
        super().__init__()
        self.register_buffer("cache", torch.zeros(4, 3))

    def forward(self, x, index):
        self.cache.index_put_((index,), x, accumulate=True)
        return self.cache * 1


class CopyIntoBuffer(nn.Module):
    def __init__(self):
        super().__init__()
        self.register_buffer("state", torch.zeros(2, 3))

    def forward(self, x):
        total = self.state + x
        self.state.copy_(total)
        return total * 1


class CopyIntoInput(nn.Module):
    def forward(self, x, y):
        x.copy_(y + x)
        return x.sum() * 1


class SliceAssign(nn.Module):
    def forward(self, x):
        x[:, :2] = x[:, 1:3] * 2
        return x + 1


class ThroughView(nn.Module):
    def forward(self, x):
        x.view(-1)[0] = 1
        return x * 3


class ThroughTranspose(nn.Module):
    def forward(self, x):
        x.transpose(0, 1).mul_(2)
        return x - 1


class ReluInPlace(nn.Module):
    def forward(self, x):
        F.relu(x, inplace=True)
        return x + 1


class OutArgument(nn.Module):
    def forward(self, x, y):
        torch.add(x, y, out=x)
        return x * 2


class ThroughDetach(nn.Module):
    """``detach`` shares storage with its input: writing the detached tensor writes the caller's."""

    def forward(self, x):
        x.detach().add_(1)
        return x * 1


class ForeachUpdate(nn.Module):
    """A list of inputs written by one op (as optimizers update parameters)."""

    def forward(self, x, y):
        torch._foreach_mul_([x, y], 0.5)
        return x + y


class InputAndBuffer(nn.Module):
    def __init__(self):
        super().__init__()
        self.register_buffer("total", torch.zeros(2, 3))

    def forward(self, x):
        x.mul_(2)
        self.total.add_(x)
        return self.total - x


class ReturnsUpdated(nn.Module):
    """Dynamo returns graph inputs itself, outside the graph: the caller gets its own tensors back."""

    def __init__(self):
        super().__init__()
        self.register_buffer("count", torch.zeros(()))

    def forward(self, x):
        self.count.add_(1)
        x.mul_(2)
        return x, self.count


class IntermediateOnly(nn.Module):
    def forward(self, x):
        y = x * 2
        y.add_(1)
        return y


class Pure(nn.Module):
    def forward(self, x):
        return torch.relu(x) + 1


class BatchNormTraining(nn.Module):
    def __init__(self):
        super().__init__()
        self.bn = nn.BatchNorm1d(3)

    def forward(self, x):
        return self.bn(x) * 1


class Case(NamedTuple):
    model: Callable[[], nn.Module]
    arguments: Callable[[int], tuple]  # the arguments of call i (the same tensor objects when the caller reuses them)


def _cases() -> Dict[str, Case]:
    generator = torch.Generator().manual_seed(0)
    a, b = torch.randn(2, 3, generator=generator), torch.randn(2, 3, generator=generator)
    square, row = torch.randn(3, 3, generator=generator), torch.randn(3, generator=generator)
    return {
        "add_to_input": Case(AddToInput, lambda i: (a,)),
        "step_counter": Case(StepCounter, lambda i: (a,)),
        "kv_cache": Case(KVCache, lambda i: (row + i, i)),
        "index_put_cache": Case(IndexPutCache, lambda i: (row[None] + i, torch.tensor([i]))),
        "copy_into_buffer": Case(CopyIntoBuffer, lambda i: (a,)),
        "copy_into_input": Case(CopyIntoInput, lambda i: (a, b)),
        "slice_assign": Case(SliceAssign, lambda i: (square,)),
        "through_view": Case(ThroughView, lambda i: (a,)),
        "through_transpose": Case(ThroughTranspose, lambda i: (square,)),
        "relu_in_place": Case(ReluInPlace, lambda i: (a - 0.5,)),
        "out_argument": Case(OutArgument, lambda i: (a, b)),
        "through_detach": Case(ThroughDetach, lambda i: (a,)),
        "input_and_buffer": Case(InputAndBuffer, lambda i: (a,)),
        "returns_updated": Case(ReturnsUpdated, lambda i: (a,)),
        "foreach_update": Case(ForeachUpdate, lambda i: (a, b)),
    }


CASES = _cases()


class Caller:
    """Keeps one copy of every tensor argument, so that a tensor the model updates is passed again next call,
    as a caller holding on to it would; a new tensor object in the case's arguments replaces the copy."""

    def __init__(self, case: Case):
        self.case = case
        self.held: Dict[int, tuple] = {}

    def arguments(self, call: int) -> list:
        arguments = []
        for position, value in enumerate(self.case.arguments(call)):
            if isinstance(value, torch.Tensor):
                if position not in self.held or self.held[position][0] is not value:
                    self.held[position] = (value, value.clone())
                value = self.held[position][1]
            arguments.append(value)
        return arguments


def state_of(model: nn.Module, arguments: Sequence[Any]) -> Dict[str, torch.Tensor]:
    state = {f"argument {i}": a.clone() for i, a in enumerate(arguments) if isinstance(a, torch.Tensor)}
    state.update((f"buffer {name}", b.clone()) for name, b in model.named_buffers())
    return state


def assert_identical(actual: Any, expected: Any, what: str) -> None:
    if isinstance(expected, (tuple, list)):
        assert isinstance(actual, (tuple, list)) and len(actual) == len(expected), (what, actual, expected)
        for index, (a, e) in enumerate(zip(actual, expected)):
            assert_identical(a, e, f"{what}[{index}]")
        return
    assert actual.dtype == expected.dtype and actual.shape == expected.shape, (what, actual, expected)
    assert torch.equal(actual, expected), (what, actual, expected)


# ---------------------------------------------------------------------------------------------
# Backends


def keeping(backend: Callable) -> Callable:
    def compile_graph(gm, sample_inputs):
        return compile_keeping_mutations(backend, gm, sample_inputs)

    return compile_graph


def run_calls(case: Case, backend: Callable, calls: int = 3):
    """(eager, compiled) outputs and states after each call, each model starting from the same weights."""
    torch.manual_seed(0)
    model = case.model()
    eager, compiled_model = copy.deepcopy(model), copy.deepcopy(model)
    compiled = torch.compile(compiled_model, backend=backend, dynamic=False)
    eager_caller, compiled_caller = Caller(case), Caller(case)
    results = []
    with torch.no_grad():
        for call in range(calls):
            eager_arguments, compiled_arguments = eager_caller.arguments(call), compiled_caller.arguments(call)
            expected = eager(*eager_arguments)
            actual = compiled(*compiled_arguments)
            results.append(
                ((expected, state_of(eager, eager_arguments)), (actual, state_of(compiled_model, compiled_arguments)))
            )
    return results


# ---------------------------------------------------------------------------------------------
# Write-back: outputs and states identical to eager, call after call


@pytest.mark.parametrize("name", sorted(CASES))
def test_updates_are_kept_bit_exactly(name):
    for call, ((expected, expected_state), (actual, actual_state)) in enumerate(
        run_calls(CASES[name], keeping(clone_and_trace))
    ):
        assert_identical(actual, expected, f"{name}: output of call {call}")
        assert actual_state.keys() == expected_state.keys()
        for key in expected_state:
            assert_identical(actual_state[key], expected_state[key], f"{name}: {key} after call {call}")


@pytest.mark.parametrize("name", ["add_to_input", "step_counter", "kv_cache", "through_view", "input_and_buffer"])
def test_the_clone_and_trace_backend_loses_them(name):
    """The stand-in for upstream really reproduces the defect, so the test above proves something."""
    if not BUFFERS_ARE_INPUTS and name in ("step_counter", "kv_cache", "input_and_buffer"):
        with pytest.raises(torch._dynamo.exc.BackendCompilerFailed):  # torch 2.4: a get_attr buffer fails tracing
            run_calls(CASES[name], clone_and_trace)
        return
    lost = [
        key
        for (_, expected_state), (_, actual_state) in run_calls(CASES[name], clone_and_trace)
        for key in expected_state
        if not torch.equal(actual_state[key], expected_state[key])
    ]
    assert lost, f"{name}: the clone-and-trace backend kept every update"


def test_kv_cache_keeps_every_row_over_many_steps():
    case = CASES["kv_cache"]
    for (expected, expected_state), (actual, actual_state) in run_calls(case, keeping(clone_and_trace), calls=4):
        assert_identical(actual, expected, "output")
        assert_identical(actual_state["buffer cache"], expected_state["buffer cache"], "cache")
    assert torch.count_nonzero(actual_state["buffer cache"].abs().sum(1)) == 4


class AddThroughDetach(nn.Module):
    def forward(self, x):
        y = x.detach()
        x = x * 0.5
        y.add_(0.25)
        return x + y


def clone_remove_detach_and_trace(gm: torch.fx.GraphModule, sample_inputs: Sequence[Any]) -> Callable:
    """clone_and_trace with upstream's remove_detach (2.3-2.14) between: it edits the graph but does not recompile
    the module, so the trace still runs the detach, through torch's decomposition of it (an alias), which
    Torch-TensorRT's decomposition table includes."""
    fake_mode = detect_fake_mode(sample_inputs)
    with unittest.mock.patch.object(fake_mode, "allow_non_fake_inputs", True), fake_mode:
        clone_every_input(gm)
        for node in list(gm.graph.nodes):
            if node.op == "call_method" and node.target == "detach":
                node.replace_all_uses_with(node.args[0])
                gm.graph.erase_node(node)
        decompositions = torch._decomp.get_decompositions([aten.detach])
        return aot_export_joint_simple(gm, list(sample_inputs), trace_joint=False, decompositions=decompositions)


def test_an_update_through_a_detached_alias_is_kept_although_remove_detach_does_not_recompile():
    """Without the patch's own detach removal this trace fails on torch 2.3-2.7 (tests/run.sh runs this file on
    2.4.1 too); the CPU torch of the unit venv traces it either way."""
    case = Case(AddThroughDetach, lambda call: (torch.arange(6.0).view(2, 3) - call,))
    for call, ((expected, expected_state), (actual, actual_state)) in enumerate(
        run_calls(case, keeping(clone_remove_detach_and_trace))
    ):
        assert_identical(actual, expected, f"output {call}")
        assert actual_state.keys() == expected_state.keys()
        for key in expected_state:
            assert_identical(actual_state[key], expected_state[key], f"{key} after call {call}")


def test_returned_inputs_are_the_callers_tensors():
    model = ReturnsUpdated()
    x = torch.ones(2, 3)
    compiled = torch.compile(model, backend=keeping(clone_and_trace), dynamic=False)
    with torch.no_grad():
        returned_x, returned_count = compiled(x)
    assert returned_x is x and returned_count is model.count
    assert torch.equal(x, torch.full((2, 3), 2.0)) and model.count.item() == 1


def test_batch_norm_running_statistics_are_kept():
    """Training-mode batch norm: the functional trace computes the statistics by its own decomposition, so values
    match eager to rounding, not bit for bit (the same difference as for the output)."""
    x = torch.randn(8, 3, generator=torch.Generator().manual_seed(1))
    case = Case(lambda: BatchNormTraining().train(), lambda i: (x + i,))
    if not BUFFERS_ARE_INPUTS:
        # torch 2.4 keeps BatchNorm as a call_module node: its buffers are not graph inputs, and the functional
        # trace fails on their update, loudly, with or without the patch.
        for backend in (clone_and_trace, keeping(clone_and_trace)):
            with pytest.raises(torch._dynamo.exc.BackendCompilerFailed, match="mutating a non-functional tensor"):
                run_calls(case, backend)
        return
    for (expected, expected_state), (actual, actual_state) in run_calls(case, keeping(clone_and_trace)):
        torch.testing.assert_close(actual, expected, rtol=0, atol=1e-6)
        for key in ("buffer bn.running_mean", "buffer bn.running_var", "buffer bn.num_batches_tracked"):
            torch.testing.assert_close(actual_state[key], expected_state[key], rtol=0, atol=1e-6)
    assert actual_state["buffer bn.num_batches_tracked"].item() == 3


# ---------------------------------------------------------------------------------------------
# Detection on captured Dynamo graphs


def capture(model: nn.Module, *arguments, inspect: Callable = find_mutations, **dynamo_config):
    """Run ``inspect(gm, sample_inputs)`` inside a backend (where Dynamo's tracing context is, as in upstream's)."""
    seen = []

    def backend(gm, sample_inputs):
        seen.append((gm, inspect(gm, sample_inputs)))
        return gm.forward

    with torch._dynamo.config.patch(**dynamo_config):
        torch.compile(model, backend=backend, dynamic=False, fullgraph=True)(*arguments)
    assert len(seen) == 1
    return seen[0]


def summary(mutations) -> List[tuple]:
    """(what is written, kind of target, the writing node's target, the ATen op) of each mutation."""
    return [
        (
            m.target.target,
            m.target.op,
            m.writer.target
            if m.writer.op != "call_function"
            else getattr(m.writer.target, "__name__", str(m.writer.target)),
            m.op,
        )
        for m in mutations
    ]


def buffer_target(name: str):
    """How Dynamo names the buffer ``name`` of the compiled module: a graph input (torch 2.5+) or an attribute."""
    return (f"L_self_buffers_{name}_", "placeholder") if BUFFERS_ARE_INPUTS else (f"L__self___{name}", "get_attr")


def test_detects_writes_of_inputs_and_buffers_with_the_op():
    _, mutations = capture(InputAndBuffer(), torch.ones(2, 3))
    target, kind = buffer_target("total")
    assert sorted(summary(mutations)) == sorted(
        [
            ("L_x_", "placeholder", "mul_", "aten.mul_.Tensor"),
            (target, kind, "add_", "aten.add_.Tensor"),
        ]
    )
    assert [m.position for m in mutations if m.target.op == "placeholder" and m.target.target == "L_x_"] == [
        [n.target for n in mutations[0].target.graph.nodes if n.op == "placeholder"].index("L_x_")
    ]


@pytest.mark.parametrize(
    "model, arguments, writer, op",
    [
        (SliceAssign(), (torch.ones(3, 3),), "setitem", "aten.copy_.default"),
        (ThroughView(), (torch.ones(2, 3),), "setitem", "aten.copy_.default"),
        (ThroughTranspose(), (torch.ones(3, 3),), "mul_", "aten.mul_.Tensor"),
        (ReluInPlace(), (torch.ones(2, 3),), "relu", "aten.relu_.default"),
        (OutArgument(), (torch.ones(2, 3), torch.ones(2, 3)), "add", "aten.add.out"),
        (ThroughDetach(), (torch.ones(2, 3),), "add_", "aten.add_.Tensor"),
        (CopyIntoInput(), (torch.ones(2, 3), torch.ones(2, 3)), "copy_", "aten.copy_.default"),
    ],
)
def test_detects_writes_through_views_aliases_and_out_arguments(model, arguments, writer, op):
    _, mutations = capture(model, *arguments)
    assert [(m.target.target, m.writer.name.rstrip("_0123456789") or m.writer.name, m.op) for m in mutations] == [
        ("L_x_", writer.rstrip("_0123456789") or writer, op)
    ]


def test_kv_cache_write_is_detected_on_the_cache_buffer():
    _, mutations = capture(KVCache(), torch.ones(3), 1)
    target, kind = buffer_target("cache")
    assert [(m.target.target, m.target.op, m.op) for m in mutations] == [(target, kind, "aten.copy_.default")]


@pytest.mark.skipif(not BUFFERS_ARE_INPUTS, reason="torch 2.4 keeps BatchNorm as a call_module node, not watched")
def test_batch_norm_running_statistics_count_as_writes():
    """``native_batch_norm``'s schema hides the running-statistics update; the Python dispatcher routes it
    through ``_native_batch_norm_legit``, whose schema declares it."""
    _, mutations = capture(BatchNormTraining().train(), torch.randn(4, 3))
    written = {m.target.target: m.op for m in mutations}
    assert written == {
        "L_self_modules_bn_buffers_running_mean_": "aten._native_batch_norm_legit.default",
        "L_self_modules_bn_buffers_running_var_": "aten._native_batch_norm_legit.default",
        "L_self_modules_bn_buffers_num_batches_tracked_": "aten.add_.Tensor",
    }


@pytest.mark.parametrize("model", [IntermediateOnly(), Pure(), BatchNormTraining().eval()])
def test_graphs_writing_no_input_have_no_mutations(model):
    _, mutations = capture(model, torch.randn(4, 3))
    assert mutations == []


def test_detection_leaves_the_inputs_and_dynamos_graph_untouched():
    model, x = InputAndBuffer(), torch.ones(2, 3)

    def inspect(gm, sample_inputs):
        before = str(gm.graph)
        versions = [t._version for t in sample_inputs if isinstance(t, torch.Tensor)]
        mutations = find_mutations(gm, sample_inputs)
        assert str(gm.graph) == before
        assert [t._version for t in sample_inputs if isinstance(t, torch.Tensor)] == versions
        return mutations

    capture(model, x, inspect=inspect)
    # The compiled graph ran once in eager mode (the capture backend returns gm.forward): one update, not two.
    assert torch.equal(x, torch.full((2, 3), 2.0)) and torch.equal(model.total, torch.full((2, 3), 2.0))


def test_mutation_before_a_higher_order_op_is_detected():
    def update_then_branch(x):
        x.add_(1)
        return torch.cond(x.sum() > 0, lambda t: t * 2, lambda t: t - 1, (x,))

    _, mutations = capture(update_then_branch, torch.ones(3))
    assert [(m.target.target, m.op) for m in mutations] == [("L_x_", "aten.add_.Tensor")]


def clone_only(gm, sample_inputs):
    """The clones without the trace, run in PyTorch: loses updates the same way, and takes SymInt inputs."""
    clone_every_input(gm)
    return gm.forward


def test_dynamic_shapes_and_int_inputs():
    def write_prefix(x, n: int):
        x[:n].add_(1)
        return x.view(-1, 2).sum(1)

    seen = []

    def backend(gm, sample_inputs):
        seen.append((list(sample_inputs), find_mutations(gm, sample_inputs)))
        return compile_keeping_mutations(clone_only, gm, sample_inputs)

    compiled = torch.compile(write_prefix, backend=backend, dynamic=True)
    for n, size in ((2, 8), (3, 6), (1, 10)):
        x, expected_x = torch.zeros(size), torch.zeros(size)
        expected = write_prefix(expected_x, n)
        assert_identical(compiled(x, n), expected, "output")
        assert_identical(x, expected_x, "input")
    assert len(seen) == 1, "one graph for every size and n"
    assert any(isinstance(s, torch.SymInt) for s in seen[0][0])
    assert [(m.target.target, m.op) for m in seen[0][1]] == [("L_x_", "aten.add_.Tensor")]


def test_inputs_the_backend_erases_are_not_passed_to_its_module():
    """2.4/2.5's backend erases unused SymInt placeholders from the graph it gets (remove_sym_nodes) and compiles
    the rest; Dynamo still passes one argument per placeholder of its own graph (found by the campaign: add_to_input
    with mark_dynamic on 2.5.0, 'forward() takes 2 positional arguments but 3 were given')."""

    def add_to_input(x):
        x.add_(1)
        return x * 2

    def erase_unused_symints(gm, sample_inputs):
        kept = []
        for node, value in zip([n for n in gm.graph.nodes if n.op == "placeholder"], sample_inputs):
            if isinstance(value, torch.SymInt) and not node.users:
                gm.graph.erase_node(node)
            else:
                kept.append(value)
        gm.recompile()
        return clone_only(gm, kept)

    x, expected_x = torch.zeros(3, 2), torch.zeros(3, 2)
    torch._dynamo.mark_dynamic(x, 0)
    compiled = torch.compile(add_to_input, backend=keeping(erase_unused_symints))
    assert_identical(compiled(x), add_to_input(expected_x), "output")
    assert_identical(x, expected_x, "input")
    y, expected_y = torch.ones(5, 2), torch.ones(5, 2)
    assert_identical(compiled(y), add_to_input(expected_y), "output at another size")
    assert_identical(y, expected_y, "input at another size")


# ---------------------------------------------------------------------------------------------
# get_attr tensors (torch 2.4's buffers; here from torch.fx.symbolic_trace)


class Counter(nn.Module):
    def __init__(self):
        super().__init__()
        self.register_buffer("count", torch.zeros(()))


def counter_graph() -> torch.fx.GraphModule:
    """``count.add_(1); return (x * count, count + 0)`` with ``count`` read by get_attr nodes, as torch 2.4's Dynamo
    reads buffers (built by hand: torch.fx.symbolic_trace would run the in-place op on the real buffer)."""
    graph = torch.fx.Graph()
    x = graph.placeholder("x", type_expr=torch.Tensor)
    count = graph.get_attr("count")
    graph.call_method("add_", (count, 1))
    product = graph.call_function(operator.mul, (x, graph.get_attr("count")))
    graph.output((product, graph.call_function(operator.add, (count, 0))))
    return torch.fx.GraphModule(Counter(), graph)


def eager_counter(model, x):
    model.count.add_(1)
    return (x * model.count, model.count + 0)


def test_a_written_get_attr_becomes_an_input_and_is_written_back():
    gm = counter_graph()
    x = torch.ones(2)
    mutations = find_mutations(gm, [x])
    assert [(m.target.op, m.target.target, m.position, m.op) for m in mutations] == [
        ("get_attr", "count", None, "aten.add_.Tensor")
    ]
    assert gm.count.item() == 0 and gm.count._version == 0, "the fake run touched the real buffer"
    rewritten, plan = return_updated_inputs(gm, mutations)
    rewritten.graph.lint()
    assert [n.target for n in rewritten.graph.nodes if n.op == "placeholder"] == ["x", "count"]
    assert not [n for n in rewritten.graph.nodes if n.op == "get_attr"]
    assert plan.returned_from == 2 and plan.input_positions == () and plan.attributes[0] is gm.count
    assert plan.copied_attributes == (0,) and plan.replay is None
    # The original graph is untouched: Dynamo calls the compiled graph according to its placeholders.
    assert [n.op for n in gm.graph.nodes].count("get_attr") == 2

    fake_mode = torch._subclasses.FakeTensorMode(allow_non_fake_inputs=True)
    with fake_mode:
        clone_every_input(rewritten)
        traced = aot_export_joint_simple(rewritten, [x, gm.count], trace_joint=False)
    run = write_back(traced, plan)
    eager = Counter()
    for call in range(3):
        assert_identical(run(x), eager_counter(eager, x), f"output {call}")
        assert_identical(gm.count, eager.count, f"count {call}")


# ---------------------------------------------------------------------------------------------
# The write-back wrapper


def test_no_update_gives_the_backends_own_result():
    compiled_graph = object()

    def backend(gm, sample_inputs, *args, **kwargs):
        assert args == ("settings",) and kwargs == {"engine_cache": None}
        return compiled_graph

    gm = torch.fx.symbolic_trace(Pure())
    assert compile_keeping_mutations(backend, gm, [torch.ones(2)], "settings", engine_cache=None) is compiled_graph


def test_the_backend_gets_the_rewritten_graph_and_the_attributes_as_inputs():
    gm, x = counter_graph(), torch.ones(2)
    received = []

    def backend(graph_module, sample_inputs, settings):
        received.append((graph_module, list(sample_inputs), settings))
        return clone_only(graph_module, sample_inputs)

    run = compile_keeping_mutations(backend, gm, [x], "settings")
    rewritten, sample_inputs, settings = received[0]
    assert settings == "settings" and sample_inputs[0] is x and sample_inputs[1] is gm.count
    assert rewritten is not gm and [n.op for n in gm.graph.nodes].count("get_attr") == 2
    output, plus_one = run(x)  # the rewritten graph, on clones as upstream runs it; then the write, replayed
    assert gm.count.item() == 1 and torch.equal(output, x) and plus_one.item() == 1


def test_write_back_copies_in_place_and_returns_only_the_original_outputs():
    x, buffer = torch.zeros(3), torch.zeros(2)
    x_storage = x.untyped_storage().data_ptr()

    def compiled(x_argument, buffer_argument):
        assert buffer_argument is buffer
        return [x_argument + 10, x_argument + 1, buffer_argument + 2]

    plan = WriteBack(
        outputs=(("compiled", 0),),
        returned_from=1,
        replay=None,
        input_positions=(0,),
        attributes=(buffer,),
        copied_attributes=(0,),
    )
    run = write_back(compiled, plan)
    outputs = run(x)
    assert isinstance(outputs, list) and len(outputs) == 1 and torch.equal(outputs[0], torch.full((3,), 10.0))
    assert torch.equal(x, torch.ones(3)) and torch.equal(buffer, torch.full((2,), 2.0))
    assert x.untyped_storage().data_ptr() == x_storage


def test_write_back_under_grad_mode_does_not_record_history():
    x = torch.zeros(3)
    plan = WriteBack(
        outputs=(("compiled", 0),),
        returned_from=1,
        replay=None,
        input_positions=(0,),
        attributes=(),
        copied_attributes=(),
    )
    run = write_back(lambda a: (a * 0 + 5, torch.ones(3, requires_grad=True) * 2), plan)
    run(x)
    assert x.grad_fn is None and torch.equal(x, torch.full((3,), 2.0))


# ---------------------------------------------------------------------------------------------
# Refusals: at compile time, naming the node, the input and the remedy


def test_a_layout_change_of_an_input_is_refused():
    class TransposeInPlace(nn.Module):
        def forward(self, x):
            x.t_()
            return (x * 2,)

    gm = torch.fx.symbolic_trace(TransposeInPlace())  # Dynamo itself runs t_ of an input outside the graph
    with pytest.raises(InputMutationError) as refused:
        compile_keeping_mutations(pytest.fail, gm, [torch.ones(2, 3)])
    message = str(refused.value)
    assert "node 't_' (aten.t_.default)" in message and "graph input 'x'" in message
    assert "shape, strides or storage" in message and "x = x.t()" in message
    assert "TRT_COMPAT_DISABLE=keep_input_mutations" in message


def test_an_updated_input_sharing_memory_with_another_input_is_refused():
    def update_a(a, b):
        a.add_(1)
        return a + b

    base = torch.zeros(8)
    with pytest.raises(torch._dynamo.exc.BackendCompilerFailed) as failed:
        torch.compile(update_a, backend=keeping(pytest.fail), dynamic=False)(base[:4], base[2:6])
    error = failed.value.inner_exception
    assert isinstance(error, InputMutationError)
    assert "node 'add_' (aten.add_.Tensor) updates graph input 'L_a_' (L['a'])" in str(error)
    assert "its memory overlaps that of graph input 'L_b_' (L['b'])" in str(error)
    assert "a .clone() of one of them" in str(error)


def test_inputs_sharing_memory_are_fine_when_none_is_written():
    def read_only(a, b):
        return a + b

    base = torch.arange(8.0)
    compiled = torch.compile(read_only, backend=keeping(clone_and_trace), dynamic=False)
    assert_identical(compiled(base[:4], base[2:6]), read_only(base[:4], base[2:6]), "output")


def test_a_graph_returning_a_single_value_cannot_carry_updates():
    gm = torch.fx.symbolic_trace(AddToInput())  # returns x * 2, not a tuple
    with pytest.raises(InputMutationError, match="returns Node rather than a tuple of outputs"):
        compile_keeping_mutations(pytest.fail, gm, [torch.ones(2)])


@torch.fx.wrap
def opaque_to_fake_tensors(x):
    return x + torch.tensor(x.tolist())


class UpdatesThenOpaque(nn.Module):
    def forward(self, x):
        x.add_(1)
        return (opaque_to_fake_tensors(x),)


class OnlyOpaque(nn.Module):
    def forward(self, x):
        return (opaque_to_fake_tensors(x) * 2,)


def test_a_graph_that_cannot_run_on_fake_tensors_is_refused_when_it_may_write():
    gm = torch.fx.symbolic_trace(UpdatesThenOpaque())
    with pytest.raises(InputMutationError) as refused:
        compile_keeping_mutations(pytest.fail, gm, [torch.ones(2)])
    assert "could not run the graph on fake tensors" in str(refused.value)
    assert "node 'add_'" in str(refused.value)


def test_a_graph_that_cannot_run_on_fake_tensors_and_writes_nothing_goes_to_the_backend():
    gm = torch.fx.symbolic_trace(OnlyOpaque())
    assert compile_keeping_mutations(lambda graph, inputs: "compiled", gm, [torch.ones(2)]) == "compiled"


def test_a_data_dependent_index_is_left_to_dynamos_graph_break():
    """``cache[pos] = x`` with a tensor ``pos`` needs its value; upstream's trace fails with the same fake-tensor
    exception, after which Dynamo runs the op eagerly. The patch re-raises it so the same happens."""

    class CacheAtTensorPosition(nn.Module):
        def __init__(self):
            super().__init__()
            self.register_buffer("cache", torch.zeros(4, 3))

        def forward(self, x, pos):
            self.cache[pos] = x
            return self.cache.sum(0)

    model, eager = CacheAtTensorPosition(), CacheAtTensorPosition()
    compiled = torch.compile(model, backend=keeping(clone_and_trace), dynamic=False)
    for step in range(3):
        x, pos = torch.full((3,), float(step + 1)), torch.tensor(step)
        assert_identical(compiled(x, pos), eager(x, pos), f"output {step}")
        assert_identical(model.cache, eager.cache, f"cache {step}")


# ---------------------------------------------------------------------------------------------
# Names and the static check used when the fake run fails


def test_targets_are_described_with_dynamos_source():
    # Inside the backend: Dynamo drops its records of graph inputs once compiling is done.
    _, described = capture(
        StepCounter(),
        torch.ones(2),
        inspect=lambda gm, inputs: [describe_target(m.target) for m in find_mutations(gm, inputs)],
    )
    expected = (
        "graph input 'L_self_buffers_count_' (L['self']._buffers['count'])"
        if BUFFERS_ARE_INPUTS
        else "attribute 'L__self___count'"
    )
    assert described == [expected]


def _node(op: str, target: Any, *args, **kwargs) -> torch.fx.Node:
    graph = torch.fx.Graph()
    x = graph.placeholder("x")
    return graph.create_node(op, target, (x,) + args, kwargs)


@pytest.mark.parametrize(
    "node, writes",
    [
        (_node("call_method", "add_", 1), True),
        (_node("call_method", "__iadd__", 1), True),
        (_node("call_method", "add", 1), False),
        (_node("call_method", "__add__", 1), False),
        (_node("call_function", operator.setitem, 0, 1.0), True),
        (_node("call_function", operator.iadd, 1), True),
        (_node("call_function", operator.add, 1), False),
        (_node("call_function", torch.relu_), True),
        (_node("call_function", torch.add, 1, out=None), True),
        (_node("call_function", F.relu, inplace=True), True),
        (_node("call_function", F.relu, True), True),
        (_node("call_function", F.relu), False),
        (_node("call_function", aten.add_.Tensor, 1), True),
        (_node("call_function", aten.add.Tensor, 1), False),
        (_node("call_function", torch.ops.higher_order.cond, 1), True),
        (_node("call_function", F.batch_norm, None, None), True),
        (_node("call_module", "submodule"), True),
        (_node("get_attr", "weight"), False),
    ],
)
def test_static_in_place_check_is_conservative(node, writes):
    assert may_write_in_place(node) is writes


def test_detection_in_grad_mode_with_parameters():
    """Written with a value that requires grad, the buffer's recorded value says requires_grad=True after Dynamo's
    trace; the fake run must not then trip over autograd's check of in-place ops on leaves."""

    class LinearIntoCache(nn.Module):
        def __init__(self):
            super().__init__()
            self.linear = nn.Linear(3, 3)
            self.register_buffer("cache", torch.zeros(4, 3))

        def forward(self, x):
            self.cache[1] = self.linear(x)[0]
            return self.cache.sum(0)

    _, mutations = capture(LinearIntoCache(), torch.ones(2, 3))
    target, kind = buffer_target("cache")
    assert [(m.target.target, m.target.op) for m in mutations] == [(target, kind)]


# ---------------------------------------------------------------------------------------------
# Replay: the graph's writes run again on the caller's tensors, at the cost of what they write


class IndexCopyCache(nn.Module):
    """A decoder step's KV-cache write, as transformers' StaticCache does it: ``index_copy_`` at a position."""

    def __init__(self, rows: int = 512, width: int = 16):
        super().__init__()
        self.register_buffer("cache", torch.zeros(rows, width))

    def forward(self, x, pos):
        self.cache.index_copy_(0, pos, torch.tanh(x))
        return x * 2


def index_copy_into_argument(cache, x, pos):
    cache.index_copy_(0, pos, torch.tanh(x))
    return x * 2


def recording(backend: Callable, seen: list) -> Callable:
    """``backend``, noting the recorded values of the outputs of each graph it is handed (before it changes it)."""

    def record(gm, sample_inputs, *args, **kwargs):
        output = next(node for node in gm.graph.nodes if node.op == "output")
        seen.append([arg.meta.get("example_value") for arg in output.args[0]])
        return backend(gm, sample_inputs, *args, **kwargs)

    return record


@pytest.mark.parametrize("as_argument", [False, True], ids=["buffer", "argument"])
def test_a_kv_cache_write_returns_only_the_row_and_keeps_the_cache_exactly(as_argument):
    seen = []
    rows = torch.randn(3, 1, 16, generator=torch.Generator().manual_seed(2))
    if as_argument:
        case = Case(lambda: nn.Identity(), lambda i: None)
        cache, expected_cache = torch.zeros(512, 16), torch.zeros(512, 16)
        compiled = torch.compile(index_copy_into_argument, backend=keeping(recording(clone_and_trace, seen)))
        for step in range(3):
            pos = torch.tensor([step * 7])
            assert_identical(
                compiled(cache, rows[step], pos), index_copy_into_argument(expected_cache, rows[step], pos), "output"
            )
            assert_identical(cache, expected_cache, f"cache after step {step}")
    else:
        case = Case(IndexCopyCache, lambda i: (rows[i], torch.tensor([i * 7])))
        for (expected, expected_state), (actual, actual_state) in run_calls(
            case, keeping(recording(clone_and_trace, seen))
        ):
            assert_identical(actual, expected, "output")
            assert_identical(actual_state["buffer cache"], expected_state["buffer cache"], "cache")
    assert len(seen) == 1
    # What the compiled graph hands back: the user's output and the row the write takes, never the 32 KiB cache.
    assert [tuple(value.shape) for value in seen[0]] == [(1, 16), (1, 16)]


def test_outputs_that_view_an_updated_input_are_views_of_the_callers_tensor():
    def write_then_view(cache, x):
        cache[1] = x
        return cache[:2], x + 1

    cache, expected_cache, x = torch.zeros(4, 3), torch.zeros(4, 3), torch.ones(3)
    compiled = torch.compile(write_then_view, backend=keeping(clone_and_trace))
    head, plus_one = compiled(cache, x)
    expected_head, expected_plus_one = write_then_view(expected_cache, x)
    assert_identical((head, plus_one), (expected_head, expected_plus_one), "outputs")
    assert head.data_ptr() == cache.data_ptr() and head._base is cache, "eager returns a view of the caller's cache"
    cache[0] = 5.0
    assert head[0, 0].item() == 5.0


def test_version_counters_advance_once_per_write_as_in_eager():
    def two_writes(x):
        x.add_(1)
        x.mul_(2)
        return x * 1

    x, expected_x = torch.ones(3), torch.ones(3)
    compiled = torch.compile(two_writes, backend=keeping(clone_and_trace))
    for _ in range(2):
        compiled(x)
        two_writes(expected_x)
    assert_identical(x, expected_x, "x")
    assert x._version == expected_x._version == 4


def test_a_write_into_one_row_of_an_expanded_input_is_kept():
    """``x = base.expand(2, 3); x[0] = y`` is legal in eager (the row does not overlap itself); copying the whole of
    ``x`` back would not be."""

    def write_row(x, y):
        x[0] = y
        return y * 2

    base, expected_base, y = torch.zeros(3), torch.zeros(3), torch.arange(3.0)
    compiled = torch.compile(write_row, backend=keeping(clone_and_trace), dynamic=False)
    assert_identical(compiled(base.expand(2, 3), y), write_row(expected_base.expand(2, 3), y), "output")
    assert_identical(base, expected_base, "the expanded tensor's memory")


def test_a_whole_copy_back_into_an_expanded_input_is_refused_at_compile_time():
    """An ``out=`` write is copied back whole, which a tensor whose elements share memory cannot take."""

    def add_into_first_row(x, y):
        torch.add(y, 1, out=x[0])
        return y * 2

    base = torch.zeros(3)
    with pytest.raises(torch._dynamo.exc.BackendCompilerFailed) as failed:
        torch.compile(add_into_first_row, backend=keeping(pytest.fail), dynamic=False)(base.expand(2, 3), torch.ones(3))
    error = failed.value.inner_exception
    assert isinstance(error, InputMutationError)
    assert "several elements share memory" in str(error) and "graph input 'L_x_'" in str(error)
    assert torch.equal(base, torch.zeros(3)), "nothing is written"


def test_a_bad_index_raises_before_anything_is_written():
    """Eager raises at index_copy_ after add_ has written ``a``; the replay checks every index first, so a failing
    call leaves every tensor as it was (the graph itself never ran the dead write)."""

    def add_then_write(a, cache, row, pos):
        a.add_(1)
        cache.index_copy_(0, pos, row)
        return row * 2

    a, cache, row = torch.zeros(2), torch.zeros(4, 3), torch.ones(1, 3)
    compiled = torch.compile(add_then_write, backend=keeping(clone_and_trace), dynamic=False)
    compiled(a, cache, row, torch.tensor([1]))
    assert torch.equal(a, torch.ones(2)) and torch.equal(cache[1], torch.ones(3))
    before = cache.clone()
    with pytest.raises(IndexError):
        compiled(a, cache, row * 5, torch.tensor([9]))
    assert torch.equal(a, torch.ones(2)) and torch.equal(cache, before), "a failed call writes nothing"


def test_views_of_one_buffer_that_do_not_overlap_are_kept():
    """``k = base[0]``, ``v = base[1]``: one storage, disjoint memory; each update is its own."""

    def write_k_and_v(k, v, x):
        k[1] = x
        v[2] = x * 2
        return k.sum(0) + v.sum(0)

    base, expected_base, x = torch.zeros(2, 4, 3), torch.zeros(2, 4, 3), torch.arange(3.0)
    compiled = torch.compile(write_k_and_v, backend=keeping(clone_and_trace), dynamic=False)
    for _ in range(2):
        assert_identical(compiled(base[0], base[1], x), write_k_and_v(expected_base[0], expected_base[1], x), "output")
        assert_identical(base, expected_base, "base")


def test_autograd_sees_a_replayed_update_as_in_eager():
    """``x = leaf * 2; f(x)`` where ``f`` does ``x.mul_(3)``: the replay runs ``mul_`` on the caller's ``x`` with grad
    mode as in eager, so the gradient is eager's (72), not 24 (a copy under no_grad) or 8 (the update lost)."""

    def triple(x):
        x.mul_(3)
        return x + 0

    def gradient(function):
        leaf = torch.ones((), requires_grad=True)
        x = leaf * 2
        function(x)
        (x * x).sum().backward()
        return leaf.grad

    compiled = torch.compile(triple, backend=keeping(clone_and_trace), dynamic=False)
    assert gradient(triple).item() == 72.0
    assert gradient(compiled).item() == 72.0


def test_an_update_with_history_into_a_tensor_requiring_grad_is_refused():
    """The value written comes from the compiled graph, which has no autograd history: refused, not wrong."""

    def add_product(x, w):
        x.add_(w * 3)
        return x + 0

    leaf, w = torch.ones((), requires_grad=True), torch.ones((), requires_grad=True)
    with pytest.raises(torch._dynamo.exc.BackendCompilerFailed) as failed:
        torch.compile(add_product, backend=keeping(pytest.fail), dynamic=False)(leaf * 2, w)
    error = failed.value.inner_exception
    assert isinstance(error, InputMutationError)
    assert "graph input 'L_x_'" in str(error) and "requires grad" in str(error) and "torch.no_grad()" in str(error)
    with torch.no_grad():
        x = torch.ones(())
        torch.compile(add_product, backend=keeping(clone_and_trace), dynamic=False)(x, w)
    assert x.item() == 4.0, "under no_grad the same update is kept"


def test_a_call_module_batch_norm_is_run_on_fake_state_only():
    """torch 2.2-2.4 (and inline_inbuilt_nn_modules=False on 2.5) keep BatchNorm as a call_module node: finding the
    writes must not count a batch on its real buffers (torch.fx.symbolic_trace keeps it as one here too)."""
    model = BatchNormTraining().train()
    gm = torch.fx.symbolic_trace(model)
    assert any(node.op == "call_module" for node in gm.graph.nodes)
    versions = [buffer._version for buffer in model.buffers()]
    assert find_mutations(gm, [torch.randn(4, 3)]) == []
    assert [buffer._version for buffer in model.buffers()] == versions
    assert model.bn.num_batches_tracked.item() == 0 and torch.equal(model.bn.running_mean, torch.zeros(3))


class ConvReluInPlace(nn.Module):
    """In-place ops on the graph's own intermediates only (ResNet's ReLU(inplace=True)), and an eval BatchNorm."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.bn = nn.BatchNorm2d(4)

    def forward(self, x):
        y = F.relu(self.bn(self.conv(x)), inplace=True)
        y += 1
        return F.dropout(y, 0.5, training=False).flatten(1)


def test_graphs_whose_writes_cannot_reach_an_input_are_not_run_at_all(monkeypatch):
    """The pre-filter: in-place ops on the graph's own intermediates need no fake run."""
    from trt_compat.patches import keep_input_mutations

    monkeypatch.setattr(keep_input_mutations, "_run_on_fakes", pytest.fail)
    compiled_graph = object()
    _, result = capture(
        ConvReluInPlace().eval(),
        torch.randn(1, 3, 8, 8),
        inspect=lambda gm, inputs: compile_keeping_mutations(lambda g, i: compiled_graph, gm, inputs),
    )
    assert result is compiled_graph


def test_the_pre_filter_lets_every_write_into_an_input_through():
    for name, case in CASES.items():
        model = case.model()
        _, possible = capture(model, *case.arguments(0), inspect=lambda gm, inputs: may_write_an_input(gm))
        assert possible, name


def test_the_pre_filter_reads_each_functions_signature_once(monkeypatch):
    """``F.hardswish(x, True)`` says ``inplace`` positionally: the pre-filter reads the function's signature to know,
    once per function, not once per node (MobileNetV3 has dozens of such nodes in every graph)."""
    import inspect

    from trt_compat.patches import keep_input_mutations

    class HardswishChain(nn.Module):
        def forward(self, x):
            x = x * 2
            for _ in range(3):
                x = F.hardswish(x, True)
            return x

    gm, _ = capture(HardswishChain(), torch.randn(3), inspect=lambda gm, _: None)
    keep_input_mutations._parameters.cache_clear()
    read = []
    signature = inspect.signature
    monkeypatch.setattr(inspect, "signature", lambda function: read.append(function) or signature(function))
    assert may_write_an_input(gm) is False
    assert read == [F.hardswish]


def test_the_pre_filter_flattens_no_value_that_is_one_tensor(monkeypatch):
    """The pre-filter runs on every graph, over every graph input (from torch 2.5 each parameter is one) and every
    node that may write: a value that is one tensor, or a written operand that is one node, is taken as it is. A
    pytree flatten of each was a third of its cost in dryrun compiles (benchmarks/bench_patch_cost.py)."""
    from trt_compat.patches import keep_input_mutations

    flattened = []
    flatten = keep_input_mutations.tree_flatten
    monkeypatch.setattr(keep_input_mutations, "tree_flatten", lambda tree: flattened.append(tree) or flatten(tree))
    _, possible = capture(
        ConvReluInPlace().eval(), torch.randn(1, 3, 8, 8), inspect=lambda gm, _: may_write_an_input(gm)
    )
    assert (possible, flattened) == (False, [])
    _, possible = capture(AddToInput(), torch.ones(3), inspect=lambda gm, _: may_write_an_input(gm))
    assert (possible, flattened) == (True, [])


def test_a_backend_running_the_rewritten_graph_on_the_callers_tensors_gets_the_original_graph():
    """Were upstream to fall back to the graph before inserting its clones, the graph itself writes the caller's
    tensors: it then runs as is, never written twice."""
    x, expected_x = torch.ones(3), torch.ones(3)
    compiled = torch.compile(AddToInput(), backend=keeping(lambda gm, inputs: gm), dynamic=False)
    for _ in range(2):
        assert_identical(compiled(x), AddToInput()(expected_x), "output")
    assert_identical(x, expected_x, "x")


def test_a_slice_write_with_dynamic_shapes_is_replayed_with_its_sizes_computed_again():
    """``cache[pos:pos + n] = y * 2`` with dynamic shapes: the slice's end is SymInt arithmetic on the call's own
    arguments, computed again by the replay; the compiled graph returns only what the write takes."""

    def write(cache, y, pos: int):
        cache[pos : pos + y.shape[0]] = y * 2
        return y.sum()

    seen = []
    compiled = torch.compile(write, backend=keeping(recording(clone_only, seen)), dynamic=True)
    for pos, rows in ((2, 2), (3, 4), (4, 5)):  # never 0 or 1, which Dynamo specializes
        cache, expected_cache, y = torch.zeros(10, 3), torch.zeros(10, 3), torch.randn(rows, 3)
        assert_identical(compiled(cache, y, pos), write(expected_cache, y, pos), "output")
        assert_identical(cache, expected_cache, f"cache after writing {rows} rows at {pos}")
    assert len(seen) == 1, "one graph for every size"
    # The user's sum and the rows written (y * 2): never the 10-row cache.
    assert [value.dim() for value in seen[0]] == [0, 2]
    assert str(seen[0][1].shape[0]) != "10"


def test_reads_of_an_updated_input_that_lead_to_no_write_are_not_run_on_fake_tensors(monkeypatch):
    """A decoder step writes one row of its cache and then reads the whole cache (attention): only the write and
    what it writes through run on fake tensors; the reads lead to no write and are skipped. An output that is a view
    of the cache still runs, so that it is returned as a view of the caller's tensor."""

    def step(cache, row, pos):
        cache.index_copy_(0, pos, row)
        keys = cache[:, None].expand(4, 2, 3)  # read after the write, as attention reads a KV cache
        return (keys * 2).sum(), cache[1:]

    ran = []
    run_node = torch.fx.Interpreter.run_node
    monkeypatch.setattr(torch.fx.Interpreter, "run_node", lambda self, n: ran.append(n.name) or run_node(self, n))
    arguments = (torch.zeros(4, 3), torch.ones(1, 3), torch.tensor([2]))
    gm, mutations = capture(step, *arguments)
    assert [(m.target.name, m.op) for m in mutations] == [("l_cache_", "aten.index_copy_.default")]
    computed = [name for name in ran if not name.startswith("l_") and name != "output"]
    assert computed and all("expand" not in name and "mul" not in name for name in computed), computed
    assert any(node.name in computed for node in gm.graph.nodes if node.target is operator.getitem), computed

    cache, expected = torch.zeros(4, 3), torch.zeros(4, 3)
    compiled = torch.compile(step, backend=keeping(clone_only), dynamic=False)
    for position in range(3):
        row, pos = torch.full((1, 3), float(position + 1)), torch.tensor([position])
        total, tail = compiled(cache, row, pos)
        assert_identical([total, tail], list(step(expected, row, pos)), f"outputs of call {position}")
        assert_identical(cache, expected, f"cache after call {position}")
        assert tail.untyped_storage().data_ptr() == cache.untyped_storage().data_ptr()


def test_the_rewritten_graph_generates_its_code_when_called_as_dynamos_does():
    """Dynamo hands over a lazy module (code generated at the first call); the rewritten one is lazy too, so the
    code upstream's backend regenerates after inserting its clones is the only code generated for it."""
    lazy = pytest.importorskip("torch.fx._lazy_graph_module")
    kinds = []

    def backend(gm, sample_inputs):
        kinds.append((type(gm).__mro__[1], getattr(type(gm), "_needs_recompile", lambda: None)()))
        return clone_only(gm, sample_inputs)

    def inspect(gm, sample_inputs):
        kinds.append((type(gm).__mro__[1], None))
        return compile_keeping_mutations(backend, gm, sample_inputs)

    _, run = capture(AddToInput(), torch.ones(3), inspect=inspect)
    (dynamos, _), (rewritten, code_pending) = kinds
    assert rewritten is dynamos
    assert code_pending is (True if dynamos is lazy._LazyGraphModule else None)
    x, expected = torch.ones(3), torch.ones(3)
    assert_identical(run(x), [AddToInput()(expected)], "output")
    assert_identical(x, expected, "x")
