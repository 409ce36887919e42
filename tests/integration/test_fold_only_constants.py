"""fold_only_constants on the real Torch-TensorRT ``torch.compile`` backend, with and without trt_compat.

From 2.12.0 the backend's ``fold_get_attr_item_calls`` replaces ``t.item()`` by the number ``t`` holds at compile
time for every placeholder of the Dynamo graph, and the compiled graph keeps that number when it is called again
with other values. Each model below is compiled with ``options={"dryrun": True, "min_block_size": 1,
"pass_through_build_failures": True}`` (the ``fallback`` tests keep upstream's default, False, on purpose), then
called several times with *different* values; every call's output is compared with eager bit for bit
(``torch.equal``). Dryrun runs the partitioned graph in PyTorch: this says nothing about TensorRT engines'
numerics, only that the graph computes the model at every call.

What upstream does on each release is the table ``UPSTREAM``: a change in a new wheel fails a test here instead
of silently making the patch moot (or a defect appear). Rows marked "predicted" come from reading that release's
code (no environment was built for it here); the compatibility matrix measures them.
"""

from __future__ import annotations

import re
import unittest.mock
from dataclasses import dataclass, field
from typing import Dict, List

import pytest

from tests.harness import activate

_REASON = activate.unavailable_reason()
if _REASON:
    pytest.skip(_REASON, allow_module_level=True)

import torch  # noqa: E402
from torch import nn  # noqa: E402
from trt_compat.patches.fold_only_constants import RunBlock, Scale, ScaleByInput, ScaleBySum  # noqa: E402

FOLD_MODULE = "torch_tensorrt.dynamo.lowering.passes.fold_get_attr_item_calls"

# Outcomes of one model over its calls, compared with eager at each call.
EQUAL = "equal"  # torch.equal to eager at every call
STALE = "stale"  # the first call equals eager, a later call with other values does not: an earlier number is kept
DIFFERS = "differs"  # the first call already differs from eager


@dataclass(frozen=True)
class Fails:
    """The compile fails; ``error`` is a regex of ``"<ExceptionType>: <message>"`` of the backend's exception."""

    error: str


# 2.3-2.9: a captured scalar (aten._local_scalar_dense) becomes an input of a TensorRT block, which
# construct_submodule_inputs rejects.
SYMFLOAT_INPUT = r"ValueError: The meta val for input node _local_scalar_dense is of type : <class 'torch\.SymFloat'>"


@dataclass(frozen=True)
class Upstream:
    """What unpatched upstream does with each model on one release."""

    fold_pass: bool  # the release has fold_get_attr_item_calls (and so the patch applies)
    without: Dict[str, object]  # model -> outcome without trt_compat (empty: the release has no dryrun)
    # model -> outcome with trt_compat where it is not EQUAL: upstream failures trt_compat does not address
    with_: Dict[str, object] = field(default_factory=dict)


MODEL_NAMES = (
    "graph_break_scalar",
    "captured_input_scalar",
    "input_clone_scalar",
    "shared_block_parameter",
    "parameter_changed_in_place",
)
CAPTURED = {name for name in MODEL_NAMES if name != "graph_break_scalar"}  # compiled with capture_scalar_outputs


def unaffected(without):
    """A release without the folding pass: trt_compat does not touch it, so each model does with it what it does
    without."""
    return Upstream(fold_pass=False, without=without, with_={k: v for k, v in without.items() if v != EQUAL})


AFFECTED = Upstream(fold_pass=True, without={name: STALE for name in MODEL_NAMES})
ALL_EQUAL = {name: EQUAL for name in MODEL_NAMES}
SCALARS_REJECTED = {**{name: Fails(SYMFLOAT_INPUT) for name in CAPTURED}, "graph_break_scalar": EQUAL}
# torch 2.3/2.4 (Dynamo without inline_inbuilt_nn_modules): parameters are get_attr constants of a graph compiled
# for each module instance, and AOT tracing evaluates their .item() on the real tensor. Each block gets its own
# number, but a parameter changed in place after compiling is not seen: weights are constants of the graph there,
# a different (older) design that trt_compat leaves alone.
PARAMETERS_AS_ATTRIBUTES = {
    **SCALARS_REJECTED,
    "shared_block_parameter": EQUAL,
    "parameter_changed_in_place": STALE,
}

# The patch's range, stated independently of it (checked against the report by test_defects' activation tests).
STATED_RANGE = ((2, 12, 0), None)

UPSTREAM = {
    "2.2.0": unaffected({}),  # no dryrun: only the absence of the pass is checked
    "2.3.0": unaffected(PARAMETERS_AS_ATTRIBUTES),
    "2.4.0": unaffected(PARAMETERS_AS_ATTRIBUTES),
    "2.5.0": unaffected(SCALARS_REJECTED),
    "2.6.0": unaffected(SCALARS_REJECTED),  # predicted
    "2.6.1": unaffected(SCALARS_REJECTED),  # predicted
    "2.7.0": unaffected(SCALARS_REJECTED),  # predicted
    "2.8.0": unaffected(SCALARS_REJECTED),  # predicted
    "2.9.0": unaffected(SCALARS_REJECTED),  # predicted
    "2.10.0": unaffected(ALL_EQUAL),
    "2.11.0": unaffected(ALL_EQUAL),  # predicted: no folding; .item() reaches AOT tracing, as with trt_compat
    "2.12.0": AFFECTED,  # predicted: the same fold pass and backend as 2.12.1 (source identical)
    "2.12.1": AFFECTED,
    "2.13.0": AFFECTED,
    "2.14.0": AFFECTED,
}


@pytest.fixture
def expect(release_row):
    if release_row.line not in UPSTREAM:
        pytest.fail(
            f"add a row for {release_row.line} to UPSTREAM in {__name__}: measure each model without "
            "trt_compat on that release"
        )
    return UPSTREAM[release_row.line]


# --------------------------------------------------------------------------------------------- models


class InputCloneScalar(nn.Module):
    """An input's ``.item()`` through a clone: upstream removes the clone first, then folds the input."""

    def forward(self, x, s):
        return x * s.clone().item()


def calls_of(name):
    """(model, eager model, the inputs of each call, what to do to the models before each call)."""
    ones = torch.ones(3)
    if name == "graph_break_scalar":
        model = ScaleBySum().eval()
        return model, model, [(torch.full((3,), value),) for value in (1.0, 2.0, 3.0)], None
    if name == "captured_input_scalar":
        model = ScaleByInput().eval()
        return model, model, [(ones, torch.tensor(value)) for value in (2.0, 3.0)], None
    if name == "input_clone_scalar":
        model = InputCloneScalar().eval()
        return model, model, [(ones, torch.tensor(value)) for value in (2.0, 3.0)], None
    if name == "shared_block_parameter":
        model = RunBlock().eval()
        return model, model, [(Scale(2.0).eval(), ones), (Scale(3.0).eval(), ones)], None
    if name == "parameter_changed_in_place":
        model = Scale(2.0).eval()

        def set_scale(call):
            with torch.no_grad():
                model.scale.fill_((2.0, 3.0)[call])

        return model, model, [(ones,), (ones,)], set_scale
    raise KeyError(name)


# --------------------------------------------------------------------------------------------- compiling


@pytest.fixture(autouse=True)
def restore_scalar_capture():
    # Dynamo's config module does not take monkeypatch.setattr.
    previous = torch._dynamo.config.capture_scalar_outputs
    yield
    torch._dynamo.config.capture_scalar_outputs = previous


@dataclass
class Run:
    outcome: object
    traced: List[torch.fx.Graph] = field(default_factory=list)  # the graphs handed to AOT tracing
    compiled_graphs: int = 0  # how many graphs reached torch_tensorrt's compile_module


def run_model(name, monkeypatch, pass_through=True):
    """Compile model ``name`` in dryrun, call it with each call's values, and compare every output with eager."""
    from torch_tensorrt.dynamo.backend import backends

    run = Run(None)
    compile_module, aot_export = backends.compile_module, backends.aot_export_joint_simple

    def compile_module_spy(*args, **kwargs):
        run.compiled_graphs += 1
        return compile_module(*args, **kwargs)

    def aot_export_spy(gm, *args, **kwargs):
        run.traced.append(torch.fx.Graph())
        run.traced[-1].graph_copy(gm.graph, {})
        return aot_export(gm, *args, **kwargs)

    torch._dynamo.config.capture_scalar_outputs = name in CAPTURED  # restored by restore_scalar_capture
    model, eager, calls, before_call = calls_of(name)
    compiled = torch.compile(
        model,
        backend="torch_tensorrt",
        options={"dryrun": True, "min_block_size": 1, "pass_through_build_failures": pass_through},
    )
    # The spies go before this function returns: whatever patch wrapped these functions must find its own wrapper
    # in place when the test's fixtures revert trt_compat, whatever their order.
    with (
        torch.no_grad(),
        unittest.mock.patch.object(backends, "compile_module", compile_module_spy),
        unittest.mock.patch.object(backends, "aot_export_joint_simple", aot_export_spy),
    ):
        for number, inputs in enumerate(calls):
            if before_call:
                before_call(number)
            try:
                output = compiled(*inputs)
            except torch._dynamo.exc.BackendCompilerFailed as failed:
                run.outcome = f"{type(failed.inner_exception).__name__}: {failed.inner_exception}"
                return run
            if not torch.equal(output, eager(*inputs)):
                run.outcome = DIFFERS if number == 0 else STALE
                return run
    assert run.compiled_graphs, "torch_tensorrt's compile_module never ran"
    run.outcome = EQUAL
    return run


def assert_outcome(actual, expected):
    if isinstance(expected, Fails):
        assert isinstance(actual, str) and re.search(expected.error, actual), actual
    else:
        assert actual == expected


def items_reaching_aot(run):
    return sum(1 for graph in run.traced for node in graph.nodes if node.op == "call_method" and node.target == "item")


def applied_patches(report):
    return {patch.name for patch in report.patches if patch.state == "applied"}


# --------------------------------------------------------------------------------------------- tests


def test_fold_pass_presence_decides_the_patch(expect, shim):
    import importlib.util

    assert (importlib.util.find_spec(FOLD_MODULE) is not None) == expect.fold_pass
    assert ("fold_only_constants" in applied_patches(shim)) == expect.fold_pass


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_without_trt_compat(name, upstream, expect, dryrun_on_cpu, constants_on_cpu, fresh_dynamo, monkeypatch):
    run = run_model(name, monkeypatch)
    assert_outcome(run.outcome, expect.without[name])
    if expect.fold_pass:
        assert items_reaching_aot(run) == 0, "upstream no longer folds the input's .item()"


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_with_trt_compat(name, shim, expect, dryrun_on_cpu, constants_on_cpu, fresh_dynamo, monkeypatch):
    run = run_model(name, monkeypatch)
    assert_outcome(run.outcome, expect.with_.get(name, EQUAL))
    if expect.fold_pass:
        # The .item() reaches AOT tracing: traced as aten._local_scalar_dense with captured scalars; otherwise
        # AOT tracing raises DataDependentOutputException and Dynamo runs that graph in PyTorch.
        assert items_reaching_aot(run) >= 1


@pytest.mark.parametrize("pass_through", [True, False])
def test_graph_break_scalar_falls_back_to_pytorch(
    pass_through, shim, expect, dryrun_on_cpu, constants_on_cpu, fresh_dynamo, monkeypatch, caplog
):
    """Without capture_scalar_outputs the unfolded .item() cannot be traced: the graph after the graph break runs in
    PyTorch, through Dynamo (pass_through_build_failures=True) or the backend's own fallback (False, the default)."""
    if not expect.fold_pass:
        pytest.skip("trt_compat does not change this release's folding (it has none)")
    run = run_model("graph_break_scalar", monkeypatch, pass_through=pass_through)
    assert run.outcome == EQUAL
    if not pass_through:
        assert "Returning GraphModule forward instead" in caplog.text


@pytest.mark.parametrize("pass_through", [True, False])
def test_fallback_runs_the_folded_graph_without_trt_compat(
    pass_through, upstream, expect, dryrun_on_cpu, constants_on_cpu, fresh_dynamo, monkeypatch
):
    """A failed TensorRT build falls back to the graph the folding already changed: still stale."""
    from torch_tensorrt.dynamo.backend import backends

    def failing_build(*args, **kwargs):
        raise RuntimeError("TensorRT build failed (simulated)")

    monkeypatch.setattr(backends, "compile_module", failing_build)
    torch._dynamo.config.capture_scalar_outputs = True
    compiled = torch.compile(ScaleByInput(), backend="torch_tensorrt", options={"dryrun": True, "min_block_size": 1})
    x = torch.ones(3)
    with torch.no_grad():
        outputs = [compiled(x, torch.tensor(value)) for value in (2.0, 3.0)]
    assert [t[0].item() for t in outputs] == ([2.0, 2.0] if expect.fold_pass else [2.0, 3.0])


@pytest.fixture
def only(monkeypatch):
    """Apply trt_compat with one of the two patches on the folding pass disabled (TRT_COMPAT_DISABLE)."""
    import trt_compat

    def apply_without(disabled):
        monkeypatch.setenv("TRT_COMPAT_DISABLE", disabled)
        return trt_compat.apply()

    yield apply_without
    trt_compat.revert()


@pytest.mark.parametrize("name", ["captured_input_scalar", "input_clone_scalar"])
@pytest.mark.parametrize("disabled", ["keep_identity_ops", "fold_only_constants"])
def test_each_patch_alone(name, disabled, only, expect, dryrun_on_cpu, constants_on_cpu, fresh_dynamo, monkeypatch):
    """Either patch alone: fold_only_constants fixes every model; keep_identity_ops alone fixes only the clone's,
    by keeping the clone (an input's chain), so that the .item() no longer reads a placeholder."""
    if not expect.fold_pass:
        pytest.skip("neither patch applies to this release")
    report = only(disabled)
    assert {"keep_identity_ops", "fold_only_constants"} - applied_patches(report) == {disabled}
    fixed = disabled == "keep_identity_ops" or name == "input_clone_scalar"
    assert run_model(name, monkeypatch).outcome == (EQUAL if fixed else STALE)


# --------------------------------------------------------------------------------------------- the shipped checks

DEFECT_KEYS = ("graph_break_scalar", "captured_input_scalar", "shared_block_parameter")


def defect_checks(patched):
    """The patch's defect checks and a probe; importing trt_compat applies every patch, so revert for "without"."""
    from trt_compat.patches.fold_only_constants import PATCH

    import trt_compat
    from trt_compat.probing import Probe

    if not patched:
        trt_compat.revert()
    assert tuple(defect.key for defect in PATCH.defects) == DEFECT_KEYS
    return {defect.key: defect.check for defect in PATCH.defects}, Probe()


@pytest.mark.parametrize("key", DEFECT_KEYS)
def test_defect_check_without_trt_compat(key, upstream, expect, fresh_dynamo):
    from trt_compat.patching import NotApplicable

    checks, probe = defect_checks(patched=False)
    if not expect.fold_pass:
        with pytest.raises(NotApplicable):
            checks[key](probe)
        return
    found = checks[key](probe)
    assert found is not None and "\n" not in found
    assert re.search(r"call [23] of [23]: output 0 differs from eager by up to \d", found), found


@pytest.mark.parametrize("key", DEFECT_KEYS)
def test_defect_check_with_trt_compat(key, shim, expect, fresh_dynamo):
    if not expect.fold_pass:
        pytest.skip("NotApplicable here, as shown without trt_compat")
    checks, probe = defect_checks(patched=True)
    assert checks[key](probe) is None
