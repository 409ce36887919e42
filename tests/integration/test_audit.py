"""The audits on the real Torch-TensorRT passes.

Metadata: with the audit on, upstream's view_to_reshape (2.2-2.5, #3221) is caught by name the moment it hands a
reshape node another node's shape (or none), and 2.2-2.4's replace_max_pool_with_indices the moment it
leaves a tuple val (2.4) or none (2.2, 2.3) on a single-tensor node (#3185). With trt_compat's fixes in
place the same lowering is silent.

Values: on the torch.compile backend, the value audit names fold_get_attr_item_calls (2.12+) for a clone changed in
place and repair_input_aliasing (every release) for an in-place update of an input; it is silent where every pass
keeps the graph's values, finds each release's pre-AOT passes in its code, and wraps and unwraps them exactly, with
and without trt_compat's patches in place.
"""

from __future__ import annotations

import inspect
import json
import os
import subprocess
import sys
import textwrap

import pytest

from tests.harness import activate

_REASON = activate.unavailable_reason()
if _REASON:
    pytest.skip(_REASON, allow_module_level=True)

import torch  # noqa: E402
from trt_compat.patches.tuple_partition_inputs import ConvCeilPool  # noqa: E402
from trt_compat.patches.view_to_reshape_metadata import ThreeViews  # noqa: E402

# The reproducers of the defects the audit has to catch (the patches' own), and what upstream does with them on
# each release: the audit must find exactly what that table measured.
from tests.helpers.upstream import REPO, UPSTREAM, export_and_lower  # noqa: E402

# The fused max_pool2d's val as the audit describes it, by test_defects' pool_meta_after_lowering; a
# correct "tensor" gives no finding.
POOL_RECORDED = {"tuple": "(Tensor[1, 8, 8, 8] float32, Tensor[1, 8, 8, 8] int64)", "missing": "missing"}


@pytest.fixture
def expected(release_row):
    """(view_to_reshape findings on ThreeViews, recorded val of the pool finding or None)."""
    assert release_row.line in UPSTREAM, f"add a row for torch-tensorrt {release_row.line} to UPSTREAM"
    upstream = UPSTREAM[release_row.line]
    return upstream.view_mismatches, POOL_RECORDED.get(upstream.pool_meta_after_lowering)


@pytest.fixture(autouse=True)
def audit():
    """trt_compat.audit, on a pristine torch_tensorrt; afterwards off, with the very same passes back."""
    import trt_compat
    from trt_compat import audit

    # The first `import trt_compat` of the session patches the already imported torch_tensorrt at once.
    trt_compat.revert()
    passes = list(activate.post_lowering_manager().passes)
    audit.clear()
    yield audit
    audit.disable()
    audit.clear()
    # Exact undo: the very same pass objects, in the same order.
    after = activate.post_lowering_manager().passes
    assert len(after) == len(passes) and all(a is b for a, b in zip(after, passes))


def lower_views(release_row):
    return export_and_lower(ThreeViews().eval(), torch.randn(2, 3, 4), release_row)


def lower_pool(release_row):
    torch.manual_seed(0)
    return export_and_lower(ConvCeilPool().eval(), torch.randn(1, 3, 16, 16), release_row)


def test_audit_names_upstream_view_to_reshape(audit, upstream, expected, release_row):
    view_findings, _ = expected
    with audit.auditing() as found:
        lower_views(release_row)
    assert len(found) == view_findings, [str(f) for f in found]
    for finding in found:
        assert finding.pass_name == "view_to_reshape" and finding.op == "aten.reshape.default"
        assert finding.recorded != finding.propagated
    assert audit.findings() == found


def test_audit_names_upstream_pool_fusion(audit, upstream, expected, release_row):
    _, pool_recorded = expected
    with audit.auditing() as found:
        lower_pool(release_row)
    if pool_recorded is None:
        assert found == []
        return
    (finding,) = found
    assert finding.pass_name == "replace_max_pool_with_indices" and finding.op == "aten.max_pool2d.default"
    assert finding.recorded.startswith(pool_recorded)
    assert finding.propagated == "Tensor[1, 8, 8, 8] float32"


def test_audit_is_silent_with_trt_compat(audit, shim, release_row):
    with audit.auditing() as found:
        lower_views(release_row)
        lower_pool(release_row)
    assert found == []


def test_audit_catches_view_defect_with_only_fix_1_disabled(audit, monkeypatch, expected, release_row):
    import trt_compat

    monkeypatch.setenv("TRT_COMPAT_DISABLE", "view_to_reshape_metadata")
    trt_compat.apply()
    try:
        with audit.auditing() as found:
            lower_views(release_row)
            lower_pool(release_row)
    finally:
        trt_compat.revert()
    assert [f.pass_name for f in found] == ["view_to_reshape"] * expected[0]


def test_strict_audit_raises_from_the_pass(audit, upstream, expected, monkeypatch, release_row):
    import trt_compat

    if expected[0] == 0:
        pytest.skip("this release has no view_to_reshape defect to catch")
    monkeypatch.setenv("TRT_COMPAT_STRICT", "1")
    with audit.auditing():
        with pytest.raises(trt_compat.PatchError, match=r"lowering pass 'view_to_reshape' broke meta\['val'\]"):
            lower_views(release_row)


def test_audit_off_wraps_nothing(audit, upstream, monkeypatch):
    import trt_compat

    monkeypatch.delenv("TRT_COMPAT_AUDIT", raising=False)
    before = list(activate.post_lowering_manager().passes)
    audit.enable()
    wrapped = list(activate.post_lowering_manager().passes)
    assert all(w.__wrapped__ is b for w, b in zip(wrapped, before))
    audit.disable()
    trt_compat.apply()  # the engine re-syncs the audit after applying: off stays off
    trt_compat.revert()
    after = activate.post_lowering_manager().passes
    assert audit.is_enabled() is False
    assert len(after) == len(before) and all(a is b for a, b in zip(after, before))


AUDIT_SCRIPT = textwrap.dedent("""
    import json, logging, sys
    sys.path.insert(0, {repo!r})
    logging.basicConfig(level=logging.WARNING, format="%(name)s %(levelname)s %(message)s")
    import trt_compat
    from tests.harness import activate
    info = activate.prepare()
    import torch, torch_tensorrt
    from trt_compat import audit
    from tests.helpers.upstream import export_and_lower
    from trt_compat.patches.view_to_reshape_metadata import ThreeViews
    export_and_lower(ThreeViews().eval(), torch.randn(2, 3, 4), info["row"])
    print(json.dumps({{"states": {{p["name"]: p["state"] for p in trt_compat.report_dict()["patches"]}},
                      "findings": [str(f) for f in audit.findings()]}}))
""")


def run_with_env(**env):
    full = {k: v for k, v in os.environ.items() if not k.startswith("TRT_COMPAT_")}
    full.update(env)
    done = subprocess.run(
        [sys.executable, "-c", AUDIT_SCRIPT.format(repo=str(REPO))],
        env=full,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    return json.loads(done.stdout.strip().splitlines()[-1]), done.stderr


def test_env_var_audit_on_the_real_activation_path(expected):
    """TRT_COMPAT_AUDIT=1 alone turns it on: `import trt_compat`, then torch_tensorrt, then compile."""
    result, log = run_with_env(TRT_COMPAT_AUDIT="1", TRT_COMPAT_DISABLE="view_to_reshape_metadata")
    assert len(result["findings"]) == expected[0], result
    if expected[0]:
        assert result["states"]["view_to_reshape_metadata"] == "disabled"
        assert all(
            f.startswith("lowering pass 'view_to_reshape' broke meta['val'] of node 'reshape_default")
            for f in result["findings"]
        ), result
        assert "trt_compat WARNING trt_compat audit: lowering pass 'view_to_reshape'" in log
    print("\n".join(["TRT_COMPAT_AUDIT=1 TRT_COMPAT_DISABLE=view_to_reshape_metadata:"] + result["findings"]))


# -- the value audit on the real torch.compile backend -----------------------------------------------------------------
# The pass the value audit names first, per release: for a clone changed in place (2.12.0 added
# fold_get_attr_item_calls, which strips every clone; older releases keep it, and the graph is computed right) and for
# an in-place update of a graph input (repair_input_aliasing clones every input on every release).
CLONE_FIRST_PASS = {
    **{line: None for line in ("2.2.0", "2.3.0", "2.4.0", "2.5.0", "2.6.0", "2.6.1", "2.7.0", "2.8.0", "2.9.0")},
    **{line: None for line in ("2.10.0", "2.11.0")},
    **{line: "fold_get_attr_item_calls" for line in ("2.12.0", "2.12.1", "2.13.0", "2.14.0")},
}


class CloneThenScale(torch.nn.Module):
    def forward(self, x):
        y = x.clone()
        y.mul_(2)
        return x + y


class AddToInput(torch.nn.Module):
    def forward(self, x):
        x.add_(1)
        return x * 2


@pytest.fixture
def probe(fresh_dynamo):
    from trt_compat.probing import Probe

    probe = Probe()
    if not probe.has_dryrun:
        pytest.skip(f"torch-tensorrt {'.'.join(map(str, probe.release))} has no dryrun option")
    return probe


def value_findings(found):
    return [f for f in found if isinstance(f, sys.modules["trt_compat.audit"].ValueFinding)]


def backend_functions():
    from torch_tensorrt.dynamo.backend import backends

    return {name: getattr(backends, name) for name in dir(backends) if callable(getattr(backends, name))}


def test_value_audit_names_the_pass_that_strips_a_mutated_clone(audit, upstream, probe, release_row):
    assert release_row.line in CLONE_FIRST_PASS, f"add a row for torch-tensorrt {release_row.line} to CLONE_FIRST_PASS"
    expected = CLONE_FIRST_PASS[release_row.line]
    x = torch.randn(2, 3)
    with audit.auditing("values") as found:
        compiled = probe.compile(CloneThenScale().eval(), x)
    found = value_findings(found)
    difference = probe.same(compiled.output, CloneThenScale()(x))
    if expected is None:
        assert found == [] and difference is None, [str(f) for f in found]
        return
    first = found[0]
    assert (first.pass_name, first.phase, first.what, first.node) == (expected, "pre-AOT", "output 0", "add")
    assert first.inputs == audit.REAL and first.release == release_row.wheels[0] and difference is not None
    print(f"\n{first}")


def test_value_audit_names_the_pass_that_drops_an_input_update(audit, upstream, probe):
    with audit.auditing("values") as found:
        probe.compile(AddToInput().eval(), torch.randn(2, 3))
    first = value_findings(found)[0]
    assert first.pass_name == "repair_input_aliasing" and first.phase == "pre-AOT"
    assert first.what == "final contents of input 'l_x_' (no longer written)"


def test_value_audit_is_silent_on_a_graph_every_pass_keeps(audit, upstream, probe):
    torch.manual_seed(0)
    with audit.auditing("values") as found:
        probe.compile(ThreeViews().eval(), torch.randn(2, 3, 4))
    assert value_findings(found) == []


def test_the_backend_passes_are_found_in_each_release(audit, release):
    from torch_tensorrt.dynamo.backend import backends

    phases = dict(audit.backend_passes(backends))
    assert phases["repair_input_aliasing"] == audit.PRE_AOT, phases
    # remove_detach came with 2.3.0.
    assert phases.get("remove_detach") == (audit.PRE_AOT if release >= (2, 3, 0) else None), phases
    assert ("fold_get_attr_item_calls" in phases) == (release >= (2, 12, 0)), phases
    # SymInt inputs are removed (from 2.3.0) before AOT tracing up to 2.11, after it from 2.12 on.
    removal = audit.POST_AOT if release >= (2, 12, 0) else audit.PRE_AOT if release >= (2, 3, 0) else None
    assert phases.get("remove_sym_nodes") == removal, phases
    assert not set(phases) & set(audit.NOT_JUDGED)


def test_values_on_wraps_by_name_and_off_restores_the_same_objects(audit, upstream):
    from torch_tensorrt.dynamo.backend import backends

    before = backend_functions()
    audit.enable("values")
    wrapped = {name for name, value in backend_functions().items() if value is not before[name]}
    assert wrapped == {name for name, _ in audit.backend_passes(backends)} | {audit.AOT_TRACER, audit.BACKEND_ENTRY}
    assert all(getattr(backends, name).__wrapped__ is before[name] for name in wrapped)
    audit.disable()
    assert backend_functions() == before


def test_values_audit_wraps_what_trt_compat_applied_and_undoes_exactly(audit, probe):
    from torch_tensorrt.dynamo.backend import backends

    import trt_compat

    upstream_functions = backend_functions()
    with audit.auditing("values"):
        trt_compat.apply()
        # The audit sits on top of whatever trt_compat put in place, which in turn calls upstream's function.
        for name in [name for name, _ in audit.backend_passes(backends)] + [audit.AOT_TRACER]:
            assert getattr(backends, name) is not upstream_functions[name]
            assert inspect.unwrap(getattr(backends, name)) is inspect.unwrap(upstream_functions[name])
        probe.compile(ThreeViews().eval(), torch.randn(2, 3, 4))
        trt_compat.revert()
    assert backend_functions() == upstream_functions


def test_strict_value_audit_raises_from_the_pass(audit, upstream, probe, monkeypatch):
    monkeypatch.setenv("TRT_COMPAT_STRICT", "1")
    with audit.auditing("values"):
        with pytest.raises(audit.AuditError, match=r"pre-AOT pass 'repair_input_aliasing' \(torch-tensorrt "):
            probe.compile(AddToInput().eval(), torch.randn(2, 3))


def test_a_strict_finding_never_becomes_a_silent_fallback(audit, upstream, probe, monkeypatch):
    """Without pass_through_build_failures the backend catches every RuntimeError of its passes (an AuditError is
    one) and runs the graph in PyTorch: the finding is raised again past that fallback."""
    monkeypatch.setenv("TRT_COMPAT_STRICT", "1")
    with audit.auditing("values"):
        with pytest.raises(audit.AuditError, match=r"pre-AOT pass 'repair_input_aliasing'"):
            probe.compile(AddToInput().eval(), torch.randn(2, 3), pass_through_build_failures=False)


def test_value_audit_does_not_blame_a_pass_whose_effect_trt_compat_repairs(audit, shim, probe, monkeypatch):
    """keep_input_mutations replays the update on the caller's tensor: repair_input_aliasing's clones change nothing
    the user sees, so neither the audit nor strict mode throws the correct graph out of TensorRT."""
    monkeypatch.setenv("TRT_COMPAT_STRICT", "1")
    x = torch.randn(2, 3)
    expected = x + 1
    with audit.auditing("values") as found:
        compiled = probe.compile(AddToInput().eval(), x)
    assert value_findings(found) == [] and compiled.blocks, [str(f) for f in found]
    assert probe.same(x, expected) is None


VALUES_SCRIPT = textwrap.dedent("""
    import json, logging, sys
    sys.path.insert(0, {repo!r})
    logging.basicConfig(level=logging.WARNING, format="%(name)s %(levelname)s %(message)s")
    import trt_compat
    from tests.harness import activate
    activate.prepare()
    import torch, torch_tensorrt
    from trt_compat import audit
    from trt_compat.probing import Probe

    class CloneThenScale(torch.nn.Module):
        def forward(self, x):
            y = x.clone()
            y.mul_(2)
            return x + y

    probe = Probe()
    if probe.has_dryrun:
        probe.compile(CloneThenScale().eval(), torch.randn(2, 3))
    print(json.dumps({{"findings": [str(f) for f in audit.findings()], "mode": trt_compat.report_dict()["settings"]}}))
""")


def test_env_var_value_audit_on_the_real_activation_path(release_row):
    """TRT_COMPAT_AUDIT=values alone: `import trt_compat`, then torch_tensorrt, then torch.compile; the defect's own
    patch disabled (where this checkout has it), so the audit sees upstream's pass."""
    full = {k: v for k, v in os.environ.items() if not k.startswith("TRT_COMPAT_")}
    full.update(TRT_COMPAT_AUDIT="values", TRT_COMPAT_DISABLE="keep_identity_ops")
    done = subprocess.run(
        [sys.executable, "-c", VALUES_SCRIPT.format(repo=str(REPO))],
        env=full,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    expected = CLONE_FIRST_PASS.get(release_row.line, "missing row")
    if release_row.dryrun == "absent" or expected is None:
        assert result["findings"] == [], result
        return
    assert result["findings"][0].startswith(f"pre-AOT pass '{expected}' (torch-tensorrt "), result
    assert "trt_compat WARNING trt_compat audit: pre-AOT pass 'fold_get_attr_item_calls'" in done.stderr
    print("\n".join(["TRT_COMPAT_AUDIT=values TRT_COMPAT_DISABLE=keep_identity_ops:"] + result["findings"]))
