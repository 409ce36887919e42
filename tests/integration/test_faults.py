"""Fault injection on the real Torch-TensorRT: the user's program keeps running, the report says what happened,
and strict mode (TRT_COMPAT_STRICT=1) raises trt_compat.PatchError.

Faults are injected into the real, imported torch_tensorrt (attributes deleted or renamed under monkeypatch, the
pass list swapped for a tuple), or come from the real install itself (imported without the harness, its import
fails), from threads, and from importlib.reload. In-process cases restore everything through monkeypatch and
trt_compat.revert(); the rest run in a fresh interpreter.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tests.harness import activate

_REASON = activate.unavailable_reason()
if _REASON:
    pytest.skip(_REASON, allow_module_level=True)

from torch_tensorrt.dynamo import partitioning  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
CONSTRUCT = "torch_tensorrt.dynamo.partitioning.construct_submodule_inputs"


def pristine():
    """What trt_compat may change, by identity."""
    # 2.2.0 has no construct_submodule_inputs (and tuple_partition_inputs is not needed there).
    return (
        list(activate.post_lowering_manager().passes),
        getattr(partitioning, "construct_submodule_inputs", None),
        partitioning.fast_partition,
        partitioning.global_partition,
    )


def same(a, b):
    return (
        all(x is y for x, y in zip(a[0], b[0])) and len(a[0]) == len(b[0]) and all(x is y for x, y in zip(a[1:], b[1:]))
    )


@pytest.fixture
def tc(monkeypatch):
    """trt_compat on the session's pristine torch_tensorrt; everything reverted and checked afterwards."""
    import trt_compat

    monkeypatch.delenv("TRT_COMPAT_STRICT", raising=False)
    monkeypatch.delenv("TRT_COMPAT_DISABLE", raising=False)
    trt_compat.revert()  # the session's first `import trt_compat` patches the imported torch_tensorrt at once
    before = pristine()
    yield trt_compat
    monkeypatch.undo()  # restore the injected fault first, so the revert runs on the real objects
    trt_compat.revert()
    assert same(pristine(), before), "trt_compat left something changed behind"


def states(trt_compat):
    return {p["name"]: (p["state"], p["reason"]) for p in trt_compat.report_dict()["patches"]}


def view_needed(release):
    return release < (2, 6, 0)


def skip_without_partition_target(release):
    if release < (2, 3, 0):
        pytest.skip("2.2.0 has no construct_submodule_inputs: tuple_partition_inputs is not needed there")


# ------------------------------------------------------------------------------------- missing / renamed targets


def test_missing_partition_target(tc, monkeypatch, release):
    skip_without_partition_target(release)
    monkeypatch.delattr(partitioning, "construct_submodule_inputs")
    tc.apply()
    found = states(tc)
    assert found["tuple_partition_inputs"][0] == "skipped"
    assert "construct_submodule_inputs is missing" in found["tuple_partition_inputs"][1]
    assert found["tuple_pooling"][0] == "applied"
    # Rolled back: fast_partition was not left wrapped by the skipped patch.
    assert tc.get_original("tuple_partition_inputs", "torch_tensorrt.dynamo.partitioning.fast_partition") is None


def test_renamed_lowering_pass(tc, monkeypatch, release):
    upstream = next((p for p in activate.post_lowering_manager().passes if p.__name__ == "view_to_reshape"), None)
    if upstream is None:
        pytest.skip("this release has no view_to_reshape pass to rename")
    monkeypatch.setattr(upstream, "__name__", "view_to_reshape_v2")
    tc.apply()
    state, reason = states(tc)["view_to_reshape_metadata"]
    if not view_needed(release):
        # 2.6.x still has the pass, fixed: the version range rules the patch out before any lookup.
        assert state == "not_needed"
        return
    assert (state, reason) == ("skipped", "target changed: the post-lowering pass list has no view_to_reshape pass")
    assert upstream in activate.post_lowering_manager().passes


def test_pass_list_of_unexpected_type(tc, monkeypatch, release):
    manager = activate.post_lowering_manager()
    monkeypatch.setattr(manager, "passes", tuple(manager.passes))
    tc.apply()
    found = states(tc)
    assert found["tuple_pooling"][0] == "skipped"
    assert "has no post-lowering pass manager with a list of passes" in found["tuple_pooling"][1]
    assert found["view_to_reshape_metadata"][0] == ("skipped" if view_needed(release) else "not_needed")
    # Independent of the pass list, so unaffected by it.
    assert found["tuple_partition_inputs"][0] == ("applied" if release >= (2, 3, 0) else "not_needed")


def test_lowering_module_that_cannot_be_imported(tc, monkeypatch):
    monkeypatch.setitem(sys.modules, "torch_tensorrt.dynamo.lowering.passes._aten_lowering_pass", None)
    tc.apply()
    state, reason = states(tc)["tuple_pooling"]
    assert state == "skipped" and "cannot be imported" in reason


@pytest.mark.parametrize("fault", ["missing_target", "tuple_pass_list"])
def test_strict_mode_raises(tc, monkeypatch, fault, release):
    if fault == "missing_target":
        skip_without_partition_target(release)
        monkeypatch.delattr(partitioning, "construct_submodule_inputs")
    else:
        manager = activate.post_lowering_manager()
        monkeypatch.setattr(manager, "passes", tuple(manager.passes))
    monkeypatch.setenv("TRT_COMPAT_STRICT", "1")
    with pytest.raises(tc.PatchError, match=r"trt_compat \(strict mode\): .*skipped"):
        tc.apply()


# ------------------------------------------------------------------------------------------------- cycles, threads


def test_apply_revert_cycles_restore_the_same_objects(tc):
    before = pristine()
    originals = None
    witness = "tuple_partition_inputs" if before[1] is not None else "tuple_pooling"
    for _ in range(25):
        tc.apply()
        assert tc.is_applied(witness)
        current = tc.get_original("tuple_partition_inputs", CONSTRUCT)
        assert current is before[1]
        originals = originals or current
        tc.revert()
        assert same(pristine(), before)
    assert originals is before[1]


def test_concurrent_apply_and_revert(tc):
    import threading

    before = pristine()
    errors = []

    def churn():
        try:
            for _ in range(15):
                tc.apply()
                tc.report()
                tc.revert()
        except Exception as exc:  # collected: an exception in a thread would otherwise pass unnoticed
            errors.append(exc)

    threads = [threading.Thread(target=churn) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert not any(t.is_alive() for t in threads) and errors == []
    tc.apply()
    ours = [p for p in activate.post_lowering_manager().passes if p.__module__.startswith("trt_compat")]
    assert len({p.__name__ for p in ours}) == len(ours), "a pass was inserted twice"
    tc.revert()
    assert same(pristine(), before)


# ------------------------------------------------------------------------------------------ fresh interpreters

PRELUDE = textwrap.dedent("""
    import importlib, json, sys, threading
    sys.path.insert(0, {repo!r})
    import trt_compat
    from tests.harness import activate
""")


def run(body, **env):
    full = {k: v for k, v in os.environ.items() if not k.startswith("TRT_COMPAT_")}
    full.update(env)
    code = PRELUDE.format(repo=str(REPO)) + textwrap.dedent(body)
    done = subprocess.run([sys.executable, "-c", code], env=full, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-4000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_install_whose_import_raises():
    """Without the harness the real torch_tensorrt cannot import here (no TensorRT): the program goes on."""
    result = run("""
        try:
            import torch_tensorrt
            user_import = "ok"
        except Exception as exc:
            user_import = type(exc).__name__
        report = trt_compat.apply()
        try:
            import os; os.environ["TRT_COMPAT_STRICT"] = "1"
            trt_compat.apply()
            strict = "no error"
        except trt_compat.PatchError as exc:
            strict = str(exc)
        print(json.dumps({"user_import": user_import, "states": [p.state for p in report.patches],
                          "reasons": [p.reason for p in report.patches], "strict": strict}))
    """)
    assert result["user_import"] != "ok"
    assert set(result["states"]) <= {"pending", "not_needed"} and "pending" in result["states"], result
    assert any(r.startswith("import torch_tensorrt failed: ") for r in result["reasons"]), result
    assert result["strict"].startswith("trt_compat (strict mode): import torch_tensorrt failed: "), result


def test_threads_importing_and_applying_at_once():
    """Two threads import torch_tensorrt while two call trt_compat.apply() in a loop (once a deadlock, and a
    half-imported torch_tensorrt patched from the wrong thread)."""
    result = run("""
        activate.prepare()
        errors = []
        def importer():
            try:
                import torch_tensorrt
            except Exception as exc:
                errors.append(repr(exc))
        def applier():
            for _ in range(100):
                try:
                    trt_compat.apply()
                except Exception as exc:
                    errors.append(repr(exc))
        threads = [threading.Thread(target=f) for f in (importer, applier, importer, applier)]
        for t in threads: t.start()
        for t in threads: t.join(120)
        print(json.dumps({"alive": sum(t.is_alive() for t in threads), "errors": errors,
                          "passes": [p.__name__ for p in activate.post_lowering_manager().passes],
                          "states": [p.state for p in trt_compat.report().patches]}))
    """)
    assert result["alive"] == 0 and result["errors"] == [], result
    assert len(result["passes"]) == len(set(result["passes"])), result
    assert "failed" not in result["states"] and "applied" in result["states"], result


def test_reloads():
    """importlib.reload of torch_tensorrt and of trt_compat's modules: patches stay applied once, and revert()
    still restores the originals (reloading the engine once lost them)."""
    result = run("""
        activate.prepare()
        import torch_tensorrt
        from torch_tensorrt.dynamo import partitioning
        applied = [p.name for p in trt_compat.report().patches if p.state == "applied"]
        originals = {n: trt_compat.get_original("tuple_partition_inputs", "torch_tensorrt.dynamo.partitioning." + n)
                     for n in ("construct_submodule_inputs", "fast_partition")}
        originals = {n: o for n, o in originals.items() if o is not None}  # none on 2.2.0: not needed there
        importlib.reload(torch_tensorrt)
        for name in ("trt_compat._import_hook", "trt_compat._engine", "trt_compat.audit", "trt_compat"):
            importlib.reload(sys.modules[name])
        trt_compat.apply()
        still = [p.name for p in trt_compat.report().patches if p.state == "applied"]
        names = [p.__name__ for p in activate.post_lowering_manager().passes]
        trt_compat.revert()
        restored = all(getattr(partitioning, n) is o for n, o in originals.items())
        print(json.dumps({"applied": applied, "still": still, "duplicates": len(names) - len(set(names)),
                          "restored": restored,
                          "ours_left": [p.__module__ for p in activate.post_lowering_manager().passes
                                        if p.__module__.startswith("trt_compat")]}))
    """)
    assert result["applied"] and result["still"] == result["applied"], result
    assert result["duplicates"] == 0 and result["restored"] and result["ours_left"] == [], result


@pytest.mark.parametrize("strict", ["", "1"])
def test_broken_trt_compat_install_never_fails_the_import(strict):
    """trt_compat's own engine cannot be loaded (a damaged install): torch_tensorrt still imports."""
    result = run(
        """
        sys.modules["trt_compat._engine"] = None  # what a missing or unreadable _engine.py looks like to import
        activate.prepare()
        try:
            import torch_tensorrt
            outcome = "imported"
        except trt_compat.PatchError as exc:
            outcome = str(exc)
        print(json.dumps({"outcome": outcome, "loaded": "torch_tensorrt" in sys.modules}))
    """,
        TRT_COMPAT_STRICT=strict,
    )
    if strict:
        assert result["outcome"] == "trt_compat (strict mode): cannot load its engine; nothing patched", result
    else:
        assert result == {"outcome": "imported", "loaded": True}


# ---------------------------------------------------------------------------------- edits during a compile in flight


def test_revert_during_post_lowering_neither_skips_nor_repeats_a_pass(tc, release_row):
    """A revert() from another thread while post_lowering iterates the pass list (done here from a pass) once
    deleted from that very list: the next pass was skipped (on 2.5.0, 3 views left unconverted)."""
    import torch
    from torch_tensorrt.dynamo.lowering.passes import _aten_lowering_pass as registry
    from trt_compat.patches.tuple_pooling import PoolIndicesViews, is_tuple_pooling_node

    from tests.helpers.upstream import export_and_lower

    ran = []

    def revert_midway(gm, *_):
        ran.append("revert")
        tc.revert()
        return gm

    tc.apply()
    registry._aten_lowering_pass(revert_midway, index=0)
    try:
        gm = export_and_lower(PoolIndicesViews().eval(), torch.randn(1, 3, 16, 16), release_row)
    finally:
        manager = activate.post_lowering_manager()
        registry._remove_lowering_pass(index=next(i for i, p in enumerate(manager.passes) if p is revert_midway))
    assert ran == ["revert"] and not tc.is_applied("tuple_pooling")
    # The compile in flight still ran trt_compat's passes: the list it iterates is the one it started with.
    assert not [n for n in gm.graph.nodes if is_tuple_pooling_node(n)], gm.graph
    assert not [n for n in gm.graph.nodes if n.op == "call_function" and n.target == torch.ops.aten.view.default]
