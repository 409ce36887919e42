"""trt_compat.audit without Torch-TensorRT.

Metadata audit, on plain torch.export graphs: the check itself, the pass wrapper's attribution of a mismatch to the
pass that introduced it, strict mode, and that the audit never breaks a pass. Value audit, on Dynamo graphs
captured by a custom torch.compile backend: passes that do what upstream's do (or what a broken one would) are
named or not, bit for bit, on real and generated inputs; the audit never writes the model or the inputs; and
switching it on and off wraps and restores a stand-in backends module exactly. The real passes are audited in
tests/integration/test_audit.py.
"""

import logging
import math
import operator
import subprocess
import sys
import textwrap
import types

import pytest
import torch
from trt_compat.patches.view_to_reshape_metadata import replace_views_with_reshapes

from trt_compat import _config, audit, testing


class Views(torch.nn.Module):
    def forward(self, x):
        return x.view(6, 4) + 1, x.view(24) * 2


def exported():
    return torch.export.export(Views(), (torch.randn(2, 3, 4),)).run_decompositions().graph_module


def views(gm):
    return [n for n in gm.graph.nodes if n.op == "call_function" and n.target == torch.ops.aten.view.default]


def swap_view_vals(gm, *_):
    """What upstream's view_to_reshape does on 2.3-2.5: two views trade metadata."""
    first, second = views(gm)
    first.meta, second.meta = second.meta, first.meta
    return gm


@pytest.fixture(autouse=True)
def clean(monkeypatch):
    monkeypatch.delenv("TRT_COMPAT_STRICT", raising=False)
    audit.clear()
    yield
    audit.clear()


def test_a_correct_graph_has_no_mismatches():
    gm = exported()
    assert audit.mismatches(gm) == []
    assert audit.mismatches(replace_views_with_reshapes(gm)) == []


def test_swapped_metadata_is_named():
    found = audit.mismatches(swap_view_vals(exported()))
    assert [str(m) for m in found] == [
        "node 'view' (aten.view.default): meta['val'] is Tensor[24] float32, "
        "fake propagation gives Tensor[6, 4] float32",
        "node 'view_1' (aten.view.default): meta['val'] is Tensor[6, 4] float32, "
        "fake propagation gives Tensor[24] float32",
    ]


def test_tuple_and_missing_vals_are_named():
    gm = exported()
    first, second = views(gm)
    first.meta["val"] = (first.meta["val"], first.meta["val"])
    del second.meta["val"]
    second.meta.pop("tensor_meta", None)
    found = {m.node: (m.recorded, m.propagated) for m in audit.mismatches(gm)}
    assert found == {
        "view": ("(Tensor[6, 4] float32, Tensor[6, 4] float32)", "Tensor[6, 4] float32"),
        "view_1": ("missing", "Tensor[24] float32"),
    }


def test_the_wrapper_blames_the_pass_that_broke_it_and_no_later_one():
    gm = exported()
    broken = audit._audited(swap_view_vals)
    later = audit._audited(replace_views_with_reshapes)
    assert later(broken(gm, "sample inputs")) is gm
    found = audit.findings()
    assert [(f.pass_name, f.node) for f in found] == [("swap_view_vals", "view"), ("swap_view_vals", "view_1")]
    assert broken.__name__ == "swap_view_vals" and broken.__wrapped__ is swap_view_vals


def test_strict_mode_raises_after_the_pass(monkeypatch):
    monkeypatch.setenv("TRT_COMPAT_STRICT", "1")
    with pytest.raises(audit.AuditError, match=r"lowering pass 'swap_view_vals' broke meta\['val'\] of node 'view'"):
        audit._audited(swap_view_vals)(exported())


def test_the_audit_failing_never_fails_the_pass(monkeypatch, caplog):
    def pass_returning_something_odd(graph_module, *_):
        return "not a graph module"

    assert audit._audited(pass_returning_something_odd)(exported()) == "not a graph module"

    def raising_pass(graph_module, *_):
        raise ValueError("the pass's own error")

    with pytest.raises(ValueError, match="the pass's own error"):
        audit._audited(raising_pass)(exported())

    def audit_bug(gm):
        raise RuntimeError("a bug in the audit")

    monkeypatch.setattr(audit, "mismatches", audit_bug)
    gm = exported()
    assert audit._audited(swap_view_vals)(gm) is gm
    assert "could not check the graph around pass 'swap_view_vals': RuntimeError: a bug in the audit" in caplog.text
    assert audit.findings() == []


def test_propagation_failure_is_reported_at_its_node():
    gm = exported()
    first, _ = views(gm)
    first.args = (first.args[0], [5, 5])  # 24 elements cannot be viewed as 5x5
    (mismatch,) = audit.mismatches(gm)
    assert mismatch.node == "view" and mismatch.propagated.startswith("an error (")


def test_graph_without_fake_inputs_is_not_checked():
    gm = exported()
    for node in gm.graph.nodes:
        node.meta.pop("val", None)
    assert audit.mismatches(gm) == []


def test_enable_without_torch_tensorrt_wraps_nothing_and_raises_nothing():
    assert "torch_tensorrt" not in sys.modules
    audit.enable()
    try:
        assert audit.is_enabled() and audit._installed == []
    finally:
        audit.disable()
    assert audit.is_enabled() is False


def test_env_switch_and_api_precedence(monkeypatch):
    monkeypatch.setattr(audit, "_api_switch", None)
    monkeypatch.setenv("TRT_COMPAT_AUDIT", "1")
    assert audit.is_enabled()
    monkeypatch.setenv("TRT_COMPAT_AUDIT", "0")
    assert not audit.is_enabled()
    with audit.auditing() as found:
        assert audit.is_enabled()
    assert found == [] and not audit.is_enabled()


def test_importing_the_audit_imports_no_torch():
    code = "import sys, trt_compat.audit; print([m for m in ('torch', 'torch_tensorrt') if m in sys.modules])"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.stdout.strip() == "[]", done.stderr


# -- the value audit ------------------------------------------------------------------------------------------------
# Dynamo graphs captured by a custom torch.compile backend on CPU torch, and passes that do to them what upstream's
# passes do (or what a broken one would); the real passes are judged in tests/integration/test_audit.py.


def in_backend(act, model, *inputs, scalars=False):
    """``act(gm, example_inputs)`` run inside torch.compile's call of a backend, where the Dynamo graph's inputs still
    carry Dynamo's references to the real tensors (it drops them once the backend returns); returns what it gave."""
    results = []

    def backend(gm, example_inputs):
        forward = gm.forward  # the graph as captured: the passes under test may change gm
        results.append(act(gm, list(example_inputs)))
        return forward

    torch._dynamo.reset()
    try:
        with torch._dynamo.config.patch(capture_scalar_outputs=scalars):
            torch.compile(model, backend=backend, fullgraph=True)(*inputs)
    except torch._dynamo.exc.BackendCompilerFailed as exc:
        raise exc.inner_exception from None
    finally:
        torch._dynamo.reset()
    (result,) = results
    return result


class CloneThenScale(torch.nn.Module):
    def forward(self, x):
        y = x.clone()
        y.mul_(2)
        return x + y


class AddToInput(torch.nn.Module):
    def forward(self, x):
        x.add_(1)
        return x * 2


class ScaledByItem(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.scale = torch.nn.Parameter(torch.tensor(3.0))

    def forward(self, x):
        return x * self.scale.item()


def strip_identity_ops(gm, *_):
    """What 2.12+'s fold_get_attr_item_calls does first: every clone/contiguous/detach replaced by its input."""
    for node in list(gm.graph.nodes):
        if node.op == "call_method" and node.target in ("clone", "contiguous", "detach"):
            node.replace_all_uses_with(node.args[0])
            gm.graph.erase_node(node)
    gm.recompile()
    return gm


def clone_inputs(gm, *_):
    """What repair_input_aliasing does: every user of a tensor input reads a clone of it instead."""
    placeholders = [node for node in gm.graph.nodes if node.op == "placeholder"]
    for node in placeholders:
        with gm.graph.inserting_after(placeholders[-1]):
            clone = gm.graph.call_function(torch.ops.aten.clone.default, (node,))
        node.replace_all_uses_with(clone, delete_user_cb=lambda user, clone=clone: user is not clone)
    gm.recompile()
    return gm


def retarget(gm, old, new):
    for node in gm.graph.nodes:
        if node.op == "call_function" and node.target is old:
            node.target = new
    gm.recompile()
    return gm


def fold_items(value_of):
    """A pass folding ``<tensor>.item()`` of a placeholder or attribute into ``value_of(gm, node)`` (upstream: the
    real tensor's value)."""

    def fold_item_calls(gm, *_):
        for node in list(gm.graph.nodes):
            if node.op == "call_method" and node.target == "item" and node.args[0].op in ("placeholder", "get_attr"):
                number = value_of(gm, node.args[0])
                for user in list(node.users):
                    user.args = tuple(number if arg is node else arg for arg in user.args)
                gm.graph.erase_node(node)
        gm.recompile()
        return gm

    return fold_item_calls


def judged(graph_pass, gm, *args, phase=audit.PRE_AOT, name=None):
    """Run ``graph_pass`` through the value audit's wrapper, as the installed audit does; returns its findings."""
    wrapper = audit._values_wrapper(name or graph_pass.__name__, phase)
    start = len(audit.findings())
    wrapper(graph_pass, None, (gm,) + args, {})
    return audit.findings()[start:]


def judged_in_backend(graph_pass, model, *inputs, scalars=False, phase=audit.PRE_AOT, name=None):
    """``graph_pass`` judged on ``model``'s Dynamo graph, inside the backend call as the torch.compile backend does."""
    return in_backend(
        lambda gm, example_inputs: judged(graph_pass, gm, example_inputs, phase=phase, name=name),
        model,
        *inputs,
        scalars=scalars,
    )


@pytest.mark.parametrize(
    "raw, modes",
    [
        ("", set()),
        ("0", set()),
        ("1", {"metadata"}),
        ("true", {"metadata"}),
        ("metadata", {"metadata"}),
        ("values", {"values"}),
        ("metadata,values", {"metadata", "values"}),
        ("Values, 1", {"metadata", "values"}),
        ("all", {"metadata", "values"}),
    ],
)
def test_audits_chosen_in_the_environment(monkeypatch, raw, modes):
    monkeypatch.setattr(audit, "_api_switch", None)
    monkeypatch.setenv("TRT_COMPAT_AUDIT", raw)
    assert audit.modes() == modes
    assert audit.mode() == ("+".join(m for m in audit.MODES if m in modes) or "off")


@pytest.mark.parametrize(
    "raw, modes, bad",
    [
        ("value", set(), "'value'"),
        ("metadata,value", {"metadata"}, "'value'"),
        ("valuez, VALUES", {"values"}, "'valuez'"),
    ],
)
def test_an_unknown_audit_word_switches_no_audit_on(monkeypatch, caplog, raw, modes, bad):
    """A typo of one audit must not run another: the word is ignored, the rest of the list counts."""
    monkeypatch.setattr(audit, "_api_switch", None)
    monkeypatch.setattr(_config, "_warned", set())
    monkeypatch.setenv("TRT_COMPAT_AUDIT", raw)
    with caplog.at_level(logging.WARNING, logger="trt_compat"):
        assert audit.modes() == modes
        assert audit.modes() == modes
    problem = audit.environment_problem()
    assert f"{bad} is not an audit" in problem and problem.endswith(f"audits on: {'+'.join(modes) or 'none'}")
    assert caplog.text.count(problem) == 1


def test_python_switch_chooses_audits_and_rejects_unknown_ones():
    with audit.auditing("values"):
        assert audit.modes() == {"values"} and audit.mode_source() == "python"
    with audit.auditing("metadata", "values"):
        assert audit.mode() == "metadata+values"
    with pytest.raises(ValueError, match="unknown audit"):
        audit.enable("value")


def test_a_mutated_clone_stripped_by_a_pass_is_named():
    (finding,) = judged_in_backend(strip_identity_ops, CloneThenScale(), torch.randn(2, 3))
    assert (finding.pass_name, finding.phase, finding.what, finding.node) == (
        "strip_identity_ops",
        "pre-AOT",
        "output 0",
        "add",
    )
    assert finding.inputs == audit.REAL and finding.difference > 0
    assert str(finding).startswith("pre-AOT pass 'strip_identity_ops' (torch-tensorrt ")


def test_an_input_update_dropped_by_a_pass_is_named():
    x = torch.randn(2, 3)
    before = x.clone()

    def act(gm, example_inputs):
        found = judged(clone_inputs, gm, example_inputs)
        assert torch.equal(x, before), "the audit ran the graph on a copy of the caller's tensor"
        return found

    (finding,) = in_backend(act, AddToInput(), x)
    assert finding.what == "final contents of input 'l_x_' (no longer written)"
    assert finding.difference == pytest.approx(1.0, abs=1e-6) and finding.op == "a graph input"


def test_a_pass_that_keeps_every_bit_is_not_named():
    class Twice(torch.nn.Module):
        def forward(self, x):
            return x * 2, torch.neg(x)

    # x * 2 == x + x in every bit, NaN and infinities included: the special draw must not make it a finding.
    doubling = judged_in_backend(
        lambda gm, *_: retarget(gm, operator.mul, lambda a, b: a + a), Twice(), torch.randn(2, 3), name="doubling"
    )
    assert doubling == []


def test_the_sign_of_zero_counts():
    class Negate(torch.nn.Module):
        def forward(self, x):
            return torch.neg(x)

    # -(0.0) is -0.0, but 0 - 0.0 is 0.0: the generated draws hold zeros of both signs.
    (finding,) = judged_in_backend(
        lambda gm, *_: retarget(gm, torch.neg, lambda a: 0 - a), Negate(), torch.randn(2, 3), name="negation"
    )
    assert finding.difference == 0.0 and "the sign of zero differs" in finding.detail
    assert finding.inputs in (audit.SPECIAL, audit.FINITE)


@pytest.mark.parametrize(
    "actual, expected, differs",
    [
        (torch.tensor([1.0, float("nan")]), torch.tensor([1.0, float("nan")]), None),
        (torch.tensor([float("inf")]), torch.tensor([float("inf")]), None),
        (torch.tensor([float("-inf")]), torch.tensor([float("inf")]), (math.inf, "1 of 1 elements differ")),
        (torch.tensor([1.0, float("nan")]), torch.tensor([1.0, 2.0]), (math.inf, "1 of 2 elements differ")),
        (torch.tensor([-0.0, 1.0]), torch.tensor([0.0, 1.0]), (0.0, "the sign of zero differs at 1 of 2")),
        (torch.tensor([1.0, 2.5]), torch.tensor([1.0, 2.0]), (0.5, "1 of 2 elements differ, by up to 0.5")),
        (torch.tensor([3, 1]), torch.tensor([1, 1]), (2.0, "1 of 2 elements differ")),
        (torch.zeros(2), torch.zeros(3), (math.inf, "Tensor[2] float32 instead of Tensor[3] float32")),
        (torch.zeros(2), torch.zeros(2, dtype=torch.float64), (math.inf, "Tensor[2] float32 instead of")),
        (2.0, 2.0, None),
        (-0.0, 0.0, (math.inf, "-0.0 instead of 0.0")),
        (float("nan"), float("nan"), None),
        (3, 4, (math.inf, "3 instead of 4")),
    ],
)
def test_difference_is_bit_exact(actual, expected, differs):
    found = audit.difference(actual, expected)
    if differs is None:
        assert found is None
    else:
        assert found[0] == differs[0] and found[1].startswith(differs[1]), found


def test_a_tolerance_applies_only_to_its_pass():
    close = (torch.tensor([1.0 + 1e-6]), torch.tensor([1.0]))
    assert audit.difference(*close, audit.Tolerance(1e-5, 0.0, "test")) is None
    assert audit.difference(*close) is not None


def real_value(gm, node):
    if node.op == "get_attr":  # torch 2.4 and older: Dynamo keeps parameters as attributes of the graph module
        return operator.attrgetter(node.target)(gm).item()
    return node.meta["grapharg"].example.item()


def test_item_folding_with_the_real_parameter_value_is_correct():
    model, x = ScaledByItem(), torch.randn(2, 3)
    assert judged_in_backend(fold_items(real_value), model, x, scalars=True) == []
    (finding,) = judged_in_backend(fold_items(lambda gm, node: 1.0), model, x, scalars=True)
    assert finding.what == "output 0" and finding.difference > 0 and finding.inputs == audit.REAL


def test_folding_a_graph_input_item_is_caught_by_the_generated_inputs():
    class ScaledByInput(torch.nn.Module):
        def forward(self, x, s):
            return x * s.item()

    # The first call's value is right for the first call only: the real inputs agree, the generated ones do not.
    fold = fold_items(real_value)
    (finding,) = judged_in_backend(fold, ScaledByInput(), torch.randn(2, 3), torch.tensor(2.0), scalars=True)
    assert finding.inputs in (audit.SPECIAL, audit.FINITE) and finding.what == "output 0"


def test_the_audit_never_writes_the_model_or_the_inputs():
    class Counting(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.register_buffer("count", torch.zeros(()))
            self.norm = torch.nn.BatchNorm1d(3)  # training mode: updates its running statistics

        def forward(self, x):
            self.count.add_(1)
            x.mul_(2)
            return self.norm(x) * self.count

    model, x = Counting(), torch.randn(4, 3)
    state = {name: value.clone() for name, value in model.state_dict().items()}
    seen = x.clone()

    def act(gm, example_inputs):
        found = judged(clone_inputs, gm, example_inputs)
        assert torch.equal(x, seen)
        assert all(torch.equal(value, state[name]) for name, value in model.state_dict().items())
        return found

    findings = in_backend(act, model, x)
    assert findings and findings[0].what.startswith("final contents of input")


def test_the_graph_runs_as_in_eager_with_parameters_that_require_grad():
    class LinearOnTransposed(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.linear = torch.nn.Linear(7, 7)

        def forward(self, x):
            # matmul folds the batch dimensions into one mm only when no operand requires grad (even under no_grad):
            # the last bits of the result depend on the weight's requires_grad.
            return self.linear(x.transpose(2, 3).contiguous().transpose(2, 3))

    torch.manual_seed(0)
    model, x = LinearOnTransposed(), torch.randn(1, 3, 12, 7)
    with torch.no_grad():
        expected = model(x)

    def act(gm, example_inputs):
        slots = audit._slots(gm, ())
        return audit._run_graph(gm, [slot.real for slot in slots]).outputs[0]

    assert audit.difference(in_backend(act, model, x), expected) is None


def test_a_dynamic_size_input_is_run_with_its_number_not_its_symbol():
    class ScaleByBatch(torch.nn.Module):
        def forward(self, x):
            return x.reshape(x.shape[0], -1) * x.shape[0]

    x = torch.randn(2, 3, 4)
    torch._dynamo.mark_dynamic(x, 0)

    def real_values(gm, example_inputs):
        return [slot.real for slot in audit._slots(gm, ())]

    # Dynamo passes the batch size as a SymInt input; running the graph with the symbol would add guards to the
    # compile's shape environment and specialize the dimension (on torch 2.14 the compile then fails with a
    # ConstraintViolationError under the audit, and only under it).
    sizes = [value for value in in_backend(real_values, ScaleByBatch(), x) if not isinstance(value, torch.Tensor)]
    assert sizes == [2] and type(sizes[0]) is int
    assert judged_in_backend(lambda gm, *_: gm, ScaleByBatch(), x) == []
    assert judged_in_backend(lambda gm, *_: retarget(gm, operator.mul, operator.add), ScaleByBatch(), x)


def test_the_audit_keeps_no_model_alive():
    import gc
    import weakref

    model = ScaledByItem()
    parameter = weakref.ref(model.scale)
    assert judged_in_backend(lambda gm, *_: gm, model, torch.randn(2, 3), scalars=True, name="nothing") == []
    del model
    gc.collect()
    assert parameter() is None, "the audit's cached input sets kept the model's parameter alive"


def test_random_ops_draw_the_same_numbers_before_and_after():
    class Noisy(torch.nn.Module):
        def forward(self, x):
            return x + torch.rand_like(x) * 2

    def act(gm, example_inputs):
        state = torch.random.get_rng_state()
        found = judged(
            lambda gm, *_: retarget(gm, operator.mul, lambda a, b: b * a), gm, example_inputs, name="commute"
        )
        assert torch.equal(torch.random.get_rng_state(), state), "the program's random numbers were disturbed"
        return found

    assert in_backend(act, Noisy(), torch.randn(2, 3)) == []


def test_aot_tracing_renames_inputs_and_is_matched_by_position():
    def trace(gm, sample_inputs):
        return torch.fx.experimental.proxy_tensor.make_fx(gm)(*sample_inputs)

    assert judged_in_backend(trace, CloneThenScale(), torch.randn(2, 3), phase=audit.AOT, name=audit.AOT_TRACER) == []

    def trace_wrongly(gm, sample_inputs):
        traced = torch.fx.experimental.proxy_tensor.make_fx(gm)(*sample_inputs)
        return retarget(traced, torch.ops.aten.add.Tensor, torch.ops.aten.sub.Tensor)

    (finding,) = judged_in_backend(
        trace_wrongly, CloneThenScale(), torch.randn(2, 3), phase=audit.AOT, name=audit.AOT_TRACER
    )
    assert finding.phase == "AOT tracing" and finding.pass_name == "aot_export_joint_simple"


def test_aot_tracing_may_round_within_its_documented_tolerance():
    def traced_with(factor):
        def trace(gm, sample_inputs):
            traced = torch.fx.experimental.proxy_tensor.make_fx(gm)(*sample_inputs)
            return retarget(traced, torch.ops.aten.add.Tensor, lambda a, b: torch.add(a, b) * factor)

        return trace

    x = torch.randn(2, 3)
    rounding = judged_in_backend(traced_with(1 + 1e-7), CloneThenScale(), x, phase=audit.AOT, name=audit.AOT_TRACER)
    assert rounding == []
    (finding,) = judged_in_backend(traced_with(1.001), CloneThenScale(), x, phase=audit.AOT, name=audit.AOT_TRACER)
    assert finding.pass_name == audit.AOT_TRACER and finding.inputs == audit.REAL
    # Other passes keep every bit: the same rounding there is a finding.
    (finding,) = judged_in_backend(traced_with(1 + 1e-7), CloneThenScale(), x, phase=audit.AOT, name="another_pass")
    assert finding.difference > 0


def test_an_exported_graph_is_judged_on_generated_inputs():
    gm = exported()  # torch.export: no reference to real tensors, only meta['val']
    found = judged(
        lambda gm, *_: retarget(gm, torch.ops.aten.mul.Tensor, torch.ops.aten.div.Tensor),
        gm,
        phase=audit.POST_LOWERING,
        name="divide",
    )
    (finding,) = found
    assert finding.inputs == audit.SPECIAL and finding.what == "output 1" and finding.phase == "post-lowering"


def test_a_graph_that_cannot_run_is_not_judged(caplog):
    gm = exported()
    for node in gm.graph.nodes:
        if node.op == "placeholder":
            node.meta["val"] = torch.empty(5, 5)  # 25 elements cannot be viewed as (6, 4)
    caplog.set_level(logging.DEBUG, logger="trt_compat")
    assert (
        judged(
            lambda gm, *_: retarget(gm, torch.ops.aten.mul.Tensor, torch.ops.aten.div.Tensor),
            gm,
            phase=audit.POST_LOWERING,
            name="divide",
        )
        == []
    )
    assert "pass 'divide' not judged on" in caplog.text and "RuntimeError" in caplog.text


def test_passes_that_change_nothing_cost_no_extra_run(monkeypatch):
    runs = []
    real_run = audit._run_graph
    monkeypatch.setattr(audit, "_run_graph", lambda gm, values: runs.append(gm) or real_run(gm, values))

    def act(gm, example_inputs):
        return [judged(lambda gm, *_: gm, gm, example_inputs, name="nothing") for _ in range(3)]

    assert in_backend(act, CloneThenScale(), torch.randn(2, 3)) == [[], [], []]
    # One run per input set (real, special, finite) before the first pass; the graph never changed.
    assert len(runs) == 3


def test_the_graph_after_aot_tracing_is_not_run_again_by_the_next_pass(monkeypatch):
    runs = []
    real_run = audit._run_graph
    monkeypatch.setattr(audit, "_run_graph", lambda gm, values: runs.append(gm) or real_run(gm, values))

    def act(gm, example_inputs):
        traced = []

        def trace(gm, sample_inputs):
            traced.append(torch.fx.experimental.proxy_tensor.make_fx(gm, tracing_mode="fake")(*sample_inputs))
            return traced[0]

        judged(trace, gm, example_inputs, phase=audit.AOT, name=audit.AOT_TRACER)
        return judged(lambda gm, *_: gm, traced[0], phase=audit.POST_LOWERING, name="first_post_lowering_pass")

    assert in_backend(act, CloneThenScale(), torch.randn(2, 3)) == []
    assert len(runs) == 6, "three runs before AOT tracing, three after it, none for the next pass"


def test_strict_mode_raises_a_value_finding_from_the_pass(monkeypatch):
    monkeypatch.setenv("TRT_COMPAT_STRICT", "1")
    with pytest.raises(audit.AuditError, match=r"pre-AOT pass 'strip_identity_ops' .* output 0 \(node 'add'"):
        judged_in_backend(strip_identity_ops, CloneThenScale(), torch.randn(2, 3))


def test_the_value_audit_failing_never_fails_the_pass(monkeypatch, caplog):
    def audit_bug(*_):
        raise RuntimeError("a bug in the audit")

    monkeypatch.setattr(audit, "_draws", audit_bug)
    wrapper = audit._values_wrapper("strip_identity_ops", audit.PRE_AOT)
    assert in_backend(
        lambda gm, inputs: wrapper(strip_identity_ops, None, (gm, inputs), {}) is gm,
        CloneThenScale(),
        torch.randn(2, 3),
    )
    assert "could not run the graph before pass 'strip_identity_ops': RuntimeError: a bug in the audit" in caplog.text
    assert audit.findings() == []


# A stand-in for torch_tensorrt.dynamo.backend.backends: _pretraced_backend calls its passes by module global name.
BACKEND_SOURCE = textwrap.dedent("""
    def fold_get_attr_item_calls(gm, sample_inputs=None):
        return STRIP(gm)

    def repair_input_aliasing(gm, settings=None):
        return gm

    def get_decompositions(enable_experimental_decompositions=False):
        return {}

    def post_lowering(gm, settings=None):
        return gm

    def remove_sym_nodes(gm, sample_inputs=None, settings=None):
        return gm

    def aot_export_joint_simple(gm, args, trace_joint=False, decompositions=None):
        return gm

    def _strip_trt_sdpa_kwargs(gm):
        return None

    def _pretraced_backend(gm, sample_inputs, settings=None):
        original = gm
        try:
            gm = fold_get_attr_item_calls(gm, sample_inputs)
            repair_input_aliasing(gm, settings)
            gm = aot_export_joint_simple(gm, sample_inputs, decompositions=get_decompositions())
            remove_sym_nodes(gm, sample_inputs, settings)
            gm = post_lowering(gm, settings)
            _strip_trt_sdpa_kwargs(gm)
            return gm
        except (AssertionError, RuntimeError, TypeError):  # as upstream: run the graph in PyTorch instead
            return original
""")


@pytest.fixture
def stub_backends():
    backends = types.ModuleType(audit.BACKENDS_MODULE)
    backends.STRIP = strip_identity_ops
    exec(compile(BACKEND_SOURCE, "backends.py", "exec"), backends.__dict__)
    for name in (
        "fold_get_attr_item_calls",
        "repair_input_aliasing",
        "get_decompositions",
        "post_lowering",
        "remove_sym_nodes",
    ):
        getattr(backends, name).__module__ = "torch_tensorrt.dynamo.lowering.passes"
    backends.aot_export_joint_simple.__module__ = "torch._functorch.aot_autograd"
    with (
        testing.stub_modules({audit.BACKENDS_MODULE: backends}),
        testing.stub_post_lowering([swap_view_vals]) as manager,
    ):
        yield backends, manager
    audit.disable()


def test_the_backend_passes_are_read_from_the_backend_code(stub_backends):
    backends, _ = stub_backends
    # get_decompositions takes no graph, post_lowering runs the (separately wrapped) pass list, _strip_trt_sdpa_kwargs
    # runs after partitioning, aot_export_joint_simple is torch's: judged as the AOT tracing step instead.
    assert audit.backend_passes(backends) == [
        ("fold_get_attr_item_calls", audit.PRE_AOT),
        ("repair_input_aliasing", audit.PRE_AOT),
        ("remove_sym_nodes", audit.POST_AOT),
    ]


def test_values_on_wraps_by_name_and_off_restores_the_same_objects(stub_backends):
    backends, manager = stub_backends
    originals = {
        name: getattr(backends, name)
        for name in (
            "fold_get_attr_item_calls",
            "repair_input_aliasing",
            "aot_export_joint_simple",
            "remove_sym_nodes",
            "post_lowering",
        )
    }
    pretraced = backends._pretraced_backend
    passes = list(manager.passes)
    audit.enable("values")
    for name in ("fold_get_attr_item_calls", "repair_input_aliasing", "aot_export_joint_simple", "remove_sym_nodes"):
        assert getattr(backends, name) is not originals[name] and getattr(backends, name).__wrapped__ is originals[name]
    assert backends._pretraced_backend.__wrapped__ is pretraced
    assert backends.post_lowering is originals["post_lowering"]
    assert manager.passes[0].__wrapped__ is swap_view_vals
    in_backend(backends._pretraced_backend, CloneThenScale(), torch.randn(2, 3))
    assert [(f.pass_name, f.what) for f in audit.findings()] == [("fold_get_attr_item_calls", "output 0")]
    audit.disable()
    assert {name: getattr(backends, name) for name in originals} == originals
    assert backends._pretraced_backend is pretraced
    assert manager.passes == passes and manager.passes[0] is swap_view_vals


def test_metadata_alone_wraps_no_backend_function(stub_backends):
    backends, manager = stub_backends
    original = backends.fold_get_attr_item_calls
    with audit.auditing():
        assert backends.fold_get_attr_item_calls is original
        assert manager.passes[0].__wrapped__ is swap_view_vals


def test_every_tolerance_says_why():
    for name, tolerance in audit.TOLERANCES.items():
        assert tolerance.why.strip() and tolerance.atol >= 0 and tolerance.rtol >= 0, name


def test_cached_input_sets_are_not_reused_for_another_tensor_with_the_same_id(monkeypatch):
    """Input sets are cached by recipe, which names real tensors by id(); Python reuses the id of a freed tensor, so
    a cached set whose real tensors are gone (or are others) must be rebuilt, not judged as "no longer exists"."""
    monkeypatch.setattr(audit, "_recent_draws", {})
    first = torch.ones(2, 3)
    slots = [audit._Slot("x", first, real=first)]
    recipe = audit._recipe(slots)
    stale = audit._draws(slots, recipe)
    assert stale[0].kind == audit.REAL and stale[0].values[0] is first
    del first
    second = torch.zeros(2, 3)
    slots = [audit._Slot("x", second, real=second)]
    fresh = audit._draws(slots, recipe)  # the same recipe, as when `second` got the freed tensor's id
    assert fresh is not stale and fresh[0].kind == audit.REAL and fresh[0].values[0] is second
    assert audit._draws(slots, recipe) is fresh  # and the rebuilt sets are cached in turn


def test_a_strict_finding_is_never_swallowed_by_the_backends_fallback(stub_backends, monkeypatch):
    """The backend catches every RuntimeError of its passes and runs the graph in PyTorch instead: a strict finding
    (an AuditError is a RuntimeError) would silently cost every TensorRT block. It is raised again past that."""
    backends, _ = stub_backends
    monkeypatch.setenv("TRT_COMPAT_STRICT", "1")
    audit.enable("values")
    with pytest.raises(audit.AuditError, match="pre-AOT pass 'fold_get_attr_item_calls'"):
        in_backend(backends._pretraced_backend, CloneThenScale(), torch.randn(2, 3))
    monkeypatch.delenv("TRT_COMPAT_STRICT")
    assert in_backend(backends._pretraced_backend, CloneThenScale(), torch.randn(2, 3)) is not None


def test_writes_a_patch_keeps_outside_the_graph_are_judged_by_the_outputs():
    """keep_input_mutations marks the inputs whose writes it replays on the caller's tensors: a pass that stops the
    graph writing them (upstream's clones) changes nothing the user sees; a pass that changes an output still does."""
    from trt_compat.patching import WRITES_KEPT_OUTSIDE

    def marked_then_judged(kept):
        def act(gm, example_inputs):
            gm.meta[WRITES_KEPT_OUTSIDE] = kept
            return judged(clone_inputs, gm, example_inputs)

        return act

    (finding,) = in_backend(marked_then_judged(frozenset()), AddToInput(), torch.randn(2, 3))
    assert finding.what == "final contents of input 'l_x_' (no longer written)"
    assert in_backend(marked_then_judged(frozenset({"l_x_"})), AddToInput(), torch.randn(2, 3)) == []
