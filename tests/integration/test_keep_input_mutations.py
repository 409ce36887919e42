"""In-place updates of graph inputs and buffers on the real Torch-TensorRT wheel, with and without trt_compat.

``torch.compile(..., backend="torch_tensorrt")`` in dryrun (the accelerated blocks run in PyTorch on the CPU), three
calls per model, each compared with eager mode bit for bit: the outputs, the caller's tensors and the module's
buffers (2.2.0 has no dryrun: there the partitioned graph is replaced by the lowered one, see backend_runs_here).
Without trt_compat every release loses the updates, or fails to trace them (buffers on 2.2-2.4); with it they are
kept. The export path (``torch_tensorrt.dynamo.compile``) and the AOT Autograd option are measured too, as upstream
behaviour; the export path's fixes are other patches'
(tests/integration/test_export_path.py), so with trt_compat its updates are kept as well.

What upstream does differs per release and is stated in UPSTREAM below, so that a new wheel that changes it makes a
test fail instead of a fix silently becoming moot. TensorRT engines cannot be compared here (no GPU).
"""

from __future__ import annotations

import copy
import dataclasses
import inspect
import re
from dataclasses import dataclass
from typing import Any, Callable, Dict, FrozenSet, List, Optional, Tuple

import pytest

from tests.harness import activate

_REASON = activate.unavailable_reason()
if _REASON:
    pytest.skip(_REASON, allow_module_level=True)

import torch  # noqa: E402
import torch_tensorrt  # noqa: E402
from torch import nn  # noqa: E402
from torch_tensorrt.dynamo.backend import backends  # noqa: E402

# ---------------------------------------------------------------------------------------------------- models


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
    """A decoder step's cache write, at a position given as a Python int (each position is its own graph)."""

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


class IndexCopyCache(nn.Module):
    """transformers' StaticCache write: ``index_copy_`` of the step's row at a position given as a tensor."""

    def __init__(self):
        super().__init__()
        self.register_buffer("cache", torch.zeros(6, 3))

    def forward(self, x, pos):
        self.cache.index_copy_(0, pos, x * 2)
        return x + 1


class IndexCopyIntoArgument(nn.Module):
    """The same write into a cache the caller passes (the other torch.compile shape of a cache)."""

    def forward(self, cache, x, pos):
        cache.index_copy_(0, pos, x * 2)
        return x + 1


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


class OutArgument(nn.Module):
    def forward(self, x, y):
        torch.add(x, y, out=x)
        return x * 2


class InputAndBuffer(nn.Module):
    def __init__(self):
        super().__init__()
        self.register_buffer("total", torch.zeros(2, 3))

    def forward(self, x):
        x.mul_(2)
        self.total.add_(x)
        return self.total - x


class BatchNormTraining(nn.Module):
    def __init__(self):
        super().__init__()
        self.bn = nn.BatchNorm1d(3)

    def forward(self, x):
        return self.bn(x) * 1


class Pure(nn.Module):
    def forward(self, x):
        return torch.relu(x) + 1


@dataclass(frozen=True)
class Case:
    model: Callable[[], nn.Module]
    arguments: Callable[[int], tuple]  # call i's arguments; the same tensor object again when the caller reuses it


def _cases() -> Dict[str, Case]:
    generator = torch.Generator().manual_seed(0)
    a, b = torch.randn(2, 3, generator=generator), torch.randn(2, 3, generator=generator)
    square, row = torch.randn(3, 3, generator=generator), torch.randn(3, generator=generator)
    cache = torch.zeros(6, 3)
    return {
        # the three models of the issue
        "add_to_input": Case(AddToInput, lambda i: (a,)),
        "step_counter": Case(StepCounter, lambda i: (a,)),
        "kv_cache": Case(KVCache, lambda i: (row + i, i)),
        # variants
        "index_put_cache": Case(IndexPutCache, lambda i: (row[None] + i, torch.tensor([i]))),
        "index_copy_cache": Case(IndexCopyCache, lambda i: (row[None] - i, torch.tensor([2 * i]))),
        "index_copy_argument": Case(IndexCopyIntoArgument, lambda i: (cache, row[None] - i, torch.tensor([2 * i]))),
        "copy_into_buffer": Case(CopyIntoBuffer, lambda i: (a,)),
        "copy_into_input": Case(CopyIntoInput, lambda i: (a, b)),
        "slice_assign": Case(SliceAssign, lambda i: (square,)),
        "through_view": Case(ThroughView, lambda i: (a,)),
        "through_transpose": Case(ThroughTranspose, lambda i: (square,)),
        "out_argument": Case(OutArgument, lambda i: (a, b)),
        "input_and_buffer": Case(InputAndBuffer, lambda i: (a,)),
    }


CASES = _cases()
BUFFER_CASES = frozenset(
    {"step_counter", "kv_cache", "index_put_cache", "index_copy_cache", "copy_into_buffer", "input_and_buffer"}
)

# ------------------------------------------------------------------------------------ upstream, per release

# torch 2.2-2.4 keep buffers as get_attr nodes; the functional trace fails on their update (an AssertionError on the
# copy_, without a message on 2.3; functionalization refusing to write a non-functional tensor; on 2.2 AOT Autograd
# finding a copy_ left in its graph).
GET_ATTR_UPDATE_FAILS = (
    r"^AssertionError: (n=copy_|$)|mutating a non-functional tensor with a functional tensor"
    r"|expected to have an entirely functional graph"
)


@dataclass(frozen=True)
class Upstream:
    """What unpatched upstream does on one release, measured on this harness."""

    backend_fails: Dict[str, str]  # torch.compile backend: model -> regex of its error (pass_through_build_failures)
    # every other model in CASES: its updates are lost, without an error
    batch_norm_fails: Optional[str]  # training-mode BatchNorm: regex of its error, or None (statistics lost)
    export_keeps: FrozenSet[str]  # export path (dryrun): models whose outputs and caller's tensors match eager
    export_loses: FrozenSet[str]  # ... that run, but differ from eager
    export_needs_mem_get_info: bool = False  # dynamo.compile asks torch.cuda.mem_get_info (no driver here)
    # The option that traces through AOT Autograd (2.6+): "keeps" (the updates), a regex of the error it dies of,
    # or None where there is no such option.
    aot_autograd: Optional[str] = "keeps"


EXPORT_INPUTS = frozenset({"add_to_input", "copy_into_input", "slice_assign", "through_view", "out_argument"})
EXPORT_BUFFERS = frozenset({"step_counter", "index_put_cache", "copy_into_buffer"})

# 2.5.0-2.6.1.
EXPORT_KEEPS_INPUTS = Upstream(
    backend_fails={},
    batch_norm_fails=None,
    # buffer updates computed from the inputs survive; the counter (count + 1, from the buffer alone) does not
    export_keeps=EXPORT_INPUTS | {"index_put_cache", "copy_into_buffer"},
    export_loses=frozenset({"step_counter"}),
)

# 2.7.0 and newer.
LOSES_ON_BOTH_PATHS = Upstream(
    backend_fails={},
    batch_norm_fails=None,
    # Inputs: the post-lowering pass remove_num_users_is_0_nodes (in the list since 2.7.0) erases the copy_ into each
    # input, which has no users (on 2.14.0, with that pass taken out in a test process, they are kept). Buffers: up to
    # 2.13 constant_fold and the same pass erase their copy_; 2.14 files these (a counter, 2-D caches) as copy-back,
    # which its compiled module never applies (test_apply_buffer_copy_back.py).
    export_keeps=frozenset(),
    export_loses=EXPORT_INPUTS | EXPORT_BUFFERS,
    export_needs_mem_get_info=True,
)

# 2.2.0-2.4.0: torch keeps buffers as get_attr nodes. (2.2.0 has no dryrun, so no export-path measurement.)
BUFFER_UPDATES_FAIL = Upstream(
    backend_fails={name: GET_ATTR_UPDATE_FAILS for name in BUFFER_CASES},
    batch_norm_fails=GET_ATTR_UPDATE_FAILS,  # BatchNorm stays a call_module node; its buffers are not inputs
    export_keeps=EXPORT_INPUTS,
    export_loses=EXPORT_BUFFERS,
    aot_autograd=None,
)

UPSTREAM = {
    "2.2.0": BUFFER_UPDATES_FAIL,
    "2.3.0": BUFFER_UPDATES_FAIL,
    "2.4.0": BUFFER_UPDATES_FAIL,
    "2.5.0": dataclasses.replace(EXPORT_KEEPS_INPUTS, aot_autograd=None),
    # use_aot_joint_export=False reaches a line of aot_torch_tensorrt_aten_backend that names an undefined `aten`.
    "2.6.0": dataclasses.replace(EXPORT_KEEPS_INPUTS, aot_autograd=r"NameError: name 'aten' is not defined"),
    "2.6.1": dataclasses.replace(EXPORT_KEEPS_INPUTS, aot_autograd=r"NameError: name 'aten' is not defined"),
    "2.7.0": dataclasses.replace(LOSES_ON_BOTH_PATHS, export_needs_mem_get_info=False),
    "2.8.0": LOSES_ON_BOTH_PATHS,
    "2.9.0": LOSES_ON_BOTH_PATHS,
    # Dryrun cannot finish when an accelerated block returns the graph's one output: compile_module then calls a
    # TensorRT-module method on the block (a GraphModule in dryrun).
    "2.10.0": LOSES_ON_BOTH_PATHS,
    "2.11.0": LOSES_ON_BOTH_PATHS,
    "2.12.0": LOSES_ON_BOTH_PATHS,
    "2.12.1": LOSES_ON_BOTH_PATHS,
    "2.13.0": LOSES_ON_BOTH_PATHS,
    "2.14.0": LOSES_ON_BOTH_PATHS,
}


# The patch's range, stated independently of it (checked against the report by test_defects' activation tests).
STATED_RANGE = ((2, 2, 0), None)


@pytest.fixture
def expect(release_row) -> Upstream:
    if release_row.line not in UPSTREAM:
        pytest.fail(
            f"add a row for {release_row.line} to UPSTREAM in tests/integration/test_keep_input_mutations.py: "
            "run this file and record which models fail and which lose their updates"
        )
    return UPSTREAM[release_row.line]


# ------------------------------------------------------------------------------------------------ helpers


class Caller:
    """One copy of every tensor argument, passed again while the case passes the same object, as a caller
    holding on to its tensors would; a new object in the case's arguments replaces the copy."""

    def __init__(self, case: Case):
        self.case = case
        self.held: Dict[int, Tuple[torch.Tensor, torch.Tensor]] = {}

    def arguments(self, call: int) -> list:
        arguments = []
        for position, value in enumerate(self.case.arguments(call)):
            if isinstance(value, torch.Tensor):
                if position not in self.held or self.held[position][0] is not value:
                    self.held[position] = (value, value.clone())
                value = self.held[position][1]
            arguments.append(value)
        return arguments


def state_of(model: nn.Module, arguments) -> Dict[str, torch.Tensor]:
    state = {f"argument {i}": a.clone() for i, a in enumerate(arguments) if isinstance(a, torch.Tensor)}
    state.update((f"buffer {name}", b.clone()) for name, b in model.named_buffers())
    return state


def differences(actual: Any, expected: Any, what: str, tolerance: float = 0.0) -> List[str]:
    """What differs between ``actual`` and eager's ``expected``: bit for bit unless a tolerance is given."""
    if isinstance(expected, (tuple, list)):
        if not isinstance(actual, (tuple, list)) or len(actual) != len(expected):
            return [f"{what}: {type(actual).__name__} instead of {len(expected)} outputs"]
        return [
            found
            for i, (a, e) in enumerate(zip(actual, expected))
            for found in differences(a, e, f"{what}[{i}]", tolerance)
        ]
    if actual.dtype != expected.dtype or actual.shape != expected.shape:
        return [f"{what}: {actual.dtype}{tuple(actual.shape)} instead of {expected.dtype}{tuple(expected.shape)}"]
    gap = (actual.double() - expected.double()).abs().max().item() if actual.numel() else 0.0
    if (tolerance == 0.0 and not torch.equal(actual, expected)) or gap > tolerance:
        return [f"{what}: max |difference| {gap:g}"]
    return []


OPTIONS = {"dryrun": True, "min_block_size": 1, "pass_through_build_failures": True}


@pytest.fixture
def backend_runs_here(request, release_row, monkeypatch):
    """The backend run to its end on this GPU-less machine: in dryrun (conftest's dryrun_on_cpu), or on 2.2.0, which
    has no dryrun (and ignores the option), with compile_module replaced by the lowered graph itself (test process
    only): everything upstream does before partitioning -- the clones, the AOT trace, lowering -- is real."""
    if release_row.dryrun != "absent":
        request.getfixturevalue("dryrun_on_cpu")
        return
    monkeypatch.setattr(backends, "compile_module", lambda gm, *args, **kwargs: gm)


@pytest.fixture
def produced(backend_runs_here, monkeypatch):
    """Every partitioned module torch_tensorrt's compile_module builds: proof that the partitioned path ran."""
    modules = []
    original = backends.compile_module

    def spy(*args, **kwargs):
        modules.append(original(*args, **kwargs))
        return modules[-1]

    monkeypatch.setattr(backends, "compile_module", spy)
    return modules


def compare_calls(
    case: Case, compiled_with: Callable[[nn.Module], Callable], calls: int = 3, tolerance: float = 0.0
) -> List[str]:
    """Run eager and compiled copies of the model side by side; what differs after each call."""
    torch.manual_seed(0)
    model = case.model()
    eager, compiled_model = copy.deepcopy(model), copy.deepcopy(model)
    compiled = compiled_with(compiled_model)
    eager_caller, compiled_caller = Caller(case), Caller(case)
    found = []
    with torch.no_grad():
        for call in range(calls):
            eager_arguments, compiled_arguments = eager_caller.arguments(call), compiled_caller.arguments(call)
            expected = eager(*eager_arguments)
            actual = compiled(*compiled_arguments)
            found += differences(actual, expected, f"call {call} output", tolerance)
            expected_state = state_of(eager, eager_arguments)
            actual_state = state_of(compiled_model, compiled_arguments)
            for key in expected_state:
                found += differences(actual_state[key], expected_state[key], f"call {call} {key}", tolerance)
    return found


def torch_compile(model: nn.Module, **options) -> Callable:
    # dynamic=False: the KV cache's int position must not become a SymInt input, which 2.5.0's backend cannot take
    # at all (it traces with the tensor inputs only, and the graph still has the SymInt placeholder).
    return torch.compile(model, backend="torch_tensorrt", options={**OPTIONS, **options}, dynamic=False)


# ------------------------------------------------------------------ the torch.compile backend, without / with


@pytest.mark.parametrize("name", sorted(CASES))
def test_backend_without_trt_compat(
    name, upstream, expect, backend_runs_here, constants_on_cpu, fresh_dynamo, produced
):
    if name in expect.backend_fails:
        with pytest.raises(torch._dynamo.exc.BackendCompilerFailed) as failed:
            compare_calls(CASES[name], torch_compile)
        inner = failed.value.inner_exception
        assert re.search(expect.backend_fails[name], f"{type(inner).__name__}: {inner}"), repr(inner)
        return
    found = compare_calls(CASES[name], torch_compile)
    assert produced, "torch_tensorrt's compile_module did not run"
    # The defect: the state of what the model updates differs from eager, without any error.
    assert [d for d in found if "argument" in d or "buffer" in d], f"{name}: upstream kept every update"


@pytest.mark.parametrize("name", sorted(CASES))
def test_backend_with_trt_compat(name, shim, backend_runs_here, constants_on_cpu, fresh_dynamo, produced):
    assert compare_calls(CASES[name], torch_compile) == []
    # kv_cache: one graph per position; every one of them went through the partitioned path.
    assert len(produced) == (3 if name == "kv_cache" else 1)


def test_kv_cache_keeps_every_row(shim, backend_runs_here, constants_on_cpu, fresh_dynamo, produced):
    model = KVCache()
    compiled = torch_compile(model)
    rows = [torch.full((3,), float(step + 1)) for step in range(4)]
    with torch.no_grad():
        for step, row in enumerate(rows):
            output = compiled(row, step)
    assert torch.equal(model.cache, torch.stack(rows)) and torch.equal(output, torch.stack(rows).sum(0))


class AddThroughDetach(nn.Module):
    """gen-0-0078 of the differential campaign, reduced: an input updated through its detached alias."""

    def forward(self, x):
        y = x.detach()
        x = x * 0.5
        y.add_(0.25)
        return x + y


def test_update_through_a_detached_alias_is_kept(shim, backend_runs_here, constants_on_cpu, fresh_dynamo, produced):
    """Upstream's remove_detach does not recompile the module, so AOT tracing would still see the detach; with the
    updated input returned as an output, functionalization then refuses the trace."""
    case = Case(AddThroughDetach, lambda i: (torch.arange(6.0).view(2, 3) - i,))
    assert compare_calls(case, torch_compile) == []
    assert produced, "torch_tensorrt's compile_module did not run"


def test_batch_norm_training_without_trt_compat(upstream, expect, backend_runs_here, constants_on_cpu, fresh_dynamo):
    case = Case(lambda: BatchNormTraining().train(), lambda i: (torch.arange(24.0).view(8, 3) / (i + 1),))
    if expect.batch_norm_fails is not None:
        with pytest.raises(torch._dynamo.exc.BackendCompilerFailed, match=expect.batch_norm_fails):
            compare_calls(case, torch_compile)
        return
    # The running statistics never move: off by far more than rounding.
    assert [d for d in compare_calls(case, torch_compile, tolerance=1e-5) if "running_mean" in d]


def test_batch_norm_training_with_trt_compat(shim, release, backend_runs_here, constants_on_cpu, fresh_dynamo):
    """Upstream's batch-norm decomposition rounds differently from eager's kernel (outputs differ by ~1e-7 with and
    without trt_compat), so the statistics are compared to that precision, not bit for bit."""
    case = Case(lambda: BatchNormTraining().train(), lambda i: (torch.arange(24.0).view(8, 3) / (i + 1),))
    if release < (2, 5, 0):  # torch 2.2-2.4: BatchNorm is a call_module node, whose buffers are left to upstream
        with pytest.raises(torch._dynamo.exc.BackendCompilerFailed, match=GET_ATTR_UPDATE_FAILS):
            compare_calls(case, torch_compile)
        return
    assert compare_calls(case, torch_compile, tolerance=1e-5) == []


# ------------------------------------------------------------------------- state that is never wrong or half-written


def test_a_kv_cache_write_costs_the_row_not_the_cache(
    shim, backend_runs_here, constants_on_cpu, fresh_dynamo, produced
):
    """16 MiB caches, one 4 KiB row written per call, a buffer and an argument: each call allocates no more than the
    row-sized values, and the caches equal eager's bit for bit (upstream loses the write; see the cases above)."""
    from tests.helpers.memory import peak_bytes

    class Buffer(nn.Module):
        def __init__(self):
            super().__init__()
            self.register_buffer("cache", torch.zeros(4096, 1024))

        def forward(self, x, pos):
            self.cache.index_copy_(0, pos, x * 2)
            return x + 1

    def into_argument(cache, x, pos):
        cache.index_copy_(0, pos, x * 2)
        return x + 1

    model, argument = Buffer(), torch.zeros(4096, 1024)
    expected = torch.zeros(4096, 1024)
    row = torch.randn(1, 1024, generator=torch.Generator().manual_seed(3))
    compiled_buffer, compiled_argument = torch_compile(model), torch_compile(into_argument)
    with torch.no_grad():
        for step in range(3):
            pos = torch.tensor([step * 100])
            expected.index_copy_(0, pos, row * 2)
            for call, arguments in ((compiled_buffer, (row, pos)), (compiled_argument, (argument, row, pos))):
                if step == 0:
                    call(*arguments)  # compiles, and writes the row
                    continue
                allocated = peak_bytes(lambda: call(*arguments))  # noqa: B023 (called at once)
                assert allocated <= 4 * row.nbytes, f"a call allocated {allocated} bytes for a {row.nbytes}-byte row"
            assert torch.equal(model.cache, expected) and torch.equal(argument, expected), f"step {step}"
    assert len(produced) == 2


def gradient_through_update(compile_function: Callable) -> float:
    """``x = leaf * 2; f(x)`` with ``f`` doing ``x.mul_(3)``, then ``(x * x).sum().backward()``: eager gives 72."""

    def triple(x):
        x.mul_(3)
        return x + 0

    leaf = torch.ones((), requires_grad=True)
    x = leaf * 2
    compile_function(triple)(x)
    (x * x).sum().backward()
    return leaf.grad.item()


def test_autograd_misses_the_update_without_trt_compat(upstream, backend_runs_here, constants_on_cpu, fresh_dynamo):
    assert gradient_through_update(lambda f: f) == 72.0
    assert gradient_through_update(torch_compile) == 8.0  # the update is lost: x is still 2


def test_autograd_sees_the_update_with_trt_compat(shim, backend_runs_here, constants_on_cpu, fresh_dynamo, produced):
    assert gradient_through_update(torch_compile) == 72.0
    assert produced


def write_first_row(x, y):
    x[0] = y
    return y * 2


@pytest.mark.parametrize("patching", ["upstream", "shim"])
def test_a_row_of_an_expanded_input(patching, request, backend_runs_here, constants_on_cpu, fresh_dynamo, produced):
    """``x = base.expand(2, 3); x[0] = y`` is legal in eager: kept with trt_compat (a whole copy back would fail at
    every call), lost without."""
    request.getfixturevalue(patching)
    base, expected_base, y = torch.zeros(3), torch.zeros(3), torch.arange(3.0) + 1
    with torch.no_grad():
        output = torch_compile(write_first_row)(base.expand(2, 3), y)
    assert torch.equal(output, write_first_row(expected_base.expand(2, 3), y)) and produced
    assert torch.equal(base, expected_base) == (patching == "shim"), base


def test_a_failing_call_writes_nothing(shim, backend_runs_here, constants_on_cpu, fresh_dynamo):
    """Two inputs updated in one graph, the second with an out-of-range index on the second call: the replay checks
    every index before its first write, so the call raises with both tensors untouched."""

    def add_then_write(a, cache, row, pos):
        a.add_(1)
        cache.index_copy_(0, pos, row)
        return row * 2

    a, cache, row = torch.zeros(2), torch.zeros(4, 3), torch.ones(1, 3)
    compiled = torch_compile(add_then_write)
    with torch.no_grad():
        compiled(a, cache, row, torch.tensor([1]))
        before_a, before_cache = a.clone(), cache.clone()
        with pytest.raises(IndexError):
            compiled(a, cache, row * 5, torch.tensor([9]))
    assert torch.equal(a, before_a) and torch.equal(cache, before_cache)


class KeyValueViews(nn.Module):
    """Buffers that are views of one storage (``k = base[0]``, ``v = base[1]``), each updated in place."""

    def __init__(self):
        super().__init__()
        base = torch.zeros(2, 4, 3)
        self.register_buffer("k", base[0])
        self.register_buffer("v", base[1])

    def forward(self, x):
        self.k[1] = x
        self.v[2] = x * 2
        return self.k.sum(0) + self.v.sum(0)


def test_buffers_viewing_one_storage_are_kept_with_trt_compat(
    shim, backend_runs_here, constants_on_cpu, fresh_dynamo, produced
):
    case = Case(KeyValueViews, lambda i: (torch.arange(3.0) + i,))
    assert compare_calls(case, torch_compile) == []
    assert produced


# ------------------------------------------------------------------------------ cost and refusals, with trt_compat


def compile_through_backend(model: nn.Module, *arguments) -> Any:
    """What the Torch-TensorRT backend returns to Dynamo for ``model``'s graph."""
    returned = []

    def recording(gm, sample_inputs):
        returned.append(backends.aot_torch_tensorrt_aten_backend(gm, sample_inputs, options=OPTIONS))
        return returned[-1]

    with torch.no_grad():
        torch.compile(model, backend=recording, dynamic=False)(*arguments)
    assert len(returned) == 1
    return returned[0]


def test_a_graph_updating_nothing_gets_upstreams_module(
    shim, backend_runs_here, constants_on_cpu, fresh_dynamo, produced
):
    assert compile_through_backend(Pure(), torch.randn(2, 3)) is produced[0]


def test_a_graph_updating_an_input_gets_upstreams_module_wrapped(
    shim, backend_runs_here, constants_on_cpu, fresh_dynamo, produced
):
    compiled = compile_through_backend(AddToInput(), torch.randn(2, 3))
    assert compiled is not produced[0] and compiled.__wrapped__ is produced[0]


def test_an_updated_input_sharing_memory_with_another_is_refused(
    shim, backend_runs_here, constants_on_cpu, fresh_dynamo
):
    from trt_compat.patches.keep_input_mutations import InputMutationError

    def update_a(a, b):
        a.add_(1)
        return a + b

    base = torch.zeros(8)
    with pytest.raises(torch._dynamo.exc.BackendCompilerFailed) as failed:
        torch.compile(update_a, backend="torch_tensorrt", options=OPTIONS, dynamic=False)(base[:4], base[2:6])
    assert isinstance(failed.value.inner_exception, InputMutationError)
    assert "updates graph input 'L_a_' (L['a']) in place, and its memory overlaps that of graph input 'L_b_'" in str(
        failed.value.inner_exception
    )


# ------------------------------------------------------- upstream's AOT Autograd path (use_distributed_mode_trace)


def aot_autograd_option(release):
    """The option that makes the backend trace through AOT Autograd (None before 2.6.0, which has none)."""
    if release < (2, 6, 0):
        return None
    return {"use_aot_joint_export": False} if release < (2, 7, 0) else {"use_distributed_mode_trace": True}


@pytest.mark.parametrize("patching", ["upstream", "shim"])
@pytest.mark.parametrize("name", ["add_to_input", "step_counter", "kv_cache"])
def test_aot_autograd_path_keeps_updates(
    name, patching, request, expect, release, backend_runs_here, constants_on_cpu, fresh_dynamo, produced
):
    """From 2.7 an option makes the backend trace through AOT Autograd, which copies updated inputs back itself
    (the remedy trt_compat's errors name): its forward graph then writes nothing, and trt_compat leaves it alone."""
    option = aot_autograd_option(release)
    if option is None:
        pytest.skip("this release always traces with aot_export_joint_simple")
    request.getfixturevalue(patching)  # without trt_compat, or with it
    if expect.aot_autograd != "keeps":
        with pytest.raises(torch._dynamo.exc.BackendCompilerFailed) as failed:
            compare_calls(CASES[name], lambda model: torch_compile(model, **option))
        inner = failed.value.inner_exception
        assert re.search(expect.aot_autograd, f"{type(inner).__name__}: {inner}"), repr(inner)
        return
    assert compare_calls(CASES[name], lambda model: torch_compile(model, **option)) == []
    assert produced


# ------------------------------------------------------------------------- upstream's fallback to the graph


@pytest.fixture
def failing_conversion(backend_runs_here, monkeypatch):
    """Conversion fails after tracing: _pretraced_backend then returns the graph itself (no pass-through)."""

    def fail(*args, **kwargs):
        raise RuntimeError("conversion failed (simulated by the test)")

    monkeypatch.setattr(backends, "compile_module", fail)


def fallback_compile(model: nn.Module) -> Callable:
    return torch_compile(model, pass_through_build_failures=False)


def test_fallback_graph_without_trt_compat(
    upstream, backend_runs_here, constants_on_cpu, fresh_dynamo, failing_conversion
):
    """The graph upstream falls back to has its clones already: the input update is lost there too."""
    found = compare_calls(CASES["add_to_input"], fallback_compile)
    assert [d for d in found if "argument 0" in d]


def test_fallback_graph_with_trt_compat(shim, backend_runs_here, constants_on_cpu, fresh_dynamo, failing_conversion):
    for name in ("add_to_input", "step_counter", "input_and_buffer"):
        torch._dynamo.reset()
        assert compare_calls(CASES[name], fallback_compile) == [], name


# ------------------------------------------------------------------- the export path, as upstream does it


def export_compile(monkeypatch, expect: Upstream, release_row) -> Callable[[nn.Module], Callable]:
    if release_row.dryrun == "absent":
        pytest.skip(f"torch_tensorrt.dynamo.compile of {release_row.line} has no dryrun: it builds engines")
    if expect.export_needs_mem_get_info:
        # Test process only: 2.14 asks the free GPU memory before building engines, even in dryrun.
        monkeypatch.setattr(torch.cuda, "mem_get_info", lambda *args, **kwargs: (1 << 34, 1 << 34))
    keyword = "arg_inputs" if "arg_inputs" in inspect.signature(torch_tensorrt.dynamo.compile).parameters else "inputs"

    def compile_exported(case_arguments: tuple) -> Callable[[nn.Module], Callable]:
        def compiled_with(model: nn.Module) -> Callable:
            example = tuple(a.clone() for a in case_arguments)
            program = torch.export.export(model, example)
            module = torch_tensorrt.dynamo.compile(program, **{keyword: list(example)}, dryrun=True, min_block_size=1)

            def run(*arguments):
                output = module(*arguments)
                # Some releases return a single output as a one-element tuple or list.
                return output[0] if isinstance(output, (tuple, list)) and len(output) == 1 else output

            return run

        return compiled_with

    return compile_exported


def export_differences(name: str, compile_exported) -> List[str]:
    """Outputs and the caller's tensors over three calls (buffers live inside the compiled module, where each
    release keeps them differently; a lost buffer update shows in the outputs)."""
    case = CASES[name]
    found = compare_calls(case, compile_exported(case.arguments(0)))
    return [d for d in found if "buffer" not in d]


@pytest.mark.parametrize("name", sorted(EXPORT_INPUTS | EXPORT_BUFFERS))
def test_export_path_without_trt_compat(
    name, upstream, expect, release_row, backend_runs_here, constants_on_cpu, monkeypatch
):
    found = export_differences(name, export_compile(monkeypatch, expect, release_row))
    if name in expect.export_keeps:
        assert found == []
    else:
        assert name in expect.export_loses and found, f"{name}: the export path kept the update"


@pytest.mark.parametrize("name", ["add_to_input", "step_counter"])
def test_export_path_with_trt_compat(name, shim, expect, release_row, backend_runs_here, constants_on_cpu, monkeypatch):
    assert export_differences(name, export_compile(monkeypatch, expect, release_row)) == []


# --------------------------------------------------------------------------------------------------- reproducers


class Probe:
    """The part of trt_compat's probe the reproducers use: one dryrun compile and call, and a bit-exact comparison."""

    on_gpu = False

    def compile(self, model, *inputs):
        torch._dynamo.reset()
        with torch.no_grad():
            output = torch_compile(model)(*inputs)
        return type("Compiled", (), {"output": output})()

    @staticmethod
    def same(actual, expected):
        found = differences(actual, expected, "value")
        return found[0] if found else None


@pytest.fixture
def reproducers():
    """The patch's defect checks, with torch_tensorrt pristine (the session's first `import trt_compat` patches
    the already imported torch_tensorrt at once)."""
    from trt_compat.patches import keep_input_mutations

    import trt_compat

    trt_compat.revert()
    return keep_input_mutations.PATCH.defects


def test_defect_reproducers_without_trt_compat(
    reproducers, upstream, expect, backend_runs_here, constants_on_cpu, fresh_dynamo
):
    found = {defect.key: defect.check(Probe()) for defect in reproducers}
    assert all(found.values()), found


def test_defect_reproducers_with_trt_compat(reproducers, shim, backend_runs_here, constants_on_cpu, fresh_dynamo):
    assert {defect.key: defect.check(Probe()) for defect in reproducers} == {d.key: None for d in reproducers}
