"""Faults in the core, without Torch-TensorRT: targets of an unexpected type, patches that raise, reloads of
trt_compat's own modules, apply/undo cycles, threads. The targets are plain objects made here (the real
torch_tensorrt cases are in tests/integration/test_faults.py).
"""

import threading
import types

import pytest
from torch.fx.passes.pass_manager import PassManager

from tests.helpers.processes import output_of
from trt_compat import _discovery, _engine
from trt_compat.patching import Patch, PatchContext, TargetChanged, lowering_pass

PATCH = Patch("p", "t", "https://example.invalid/1", first_affected="2.2", fixed_in=None, why="")


def upstream_pass(gm, *_):
    return gm


def our_pass(gm):
    return gm


def original_function(x):
    return x


def module_applying(apply):
    return types.SimpleNamespace(PATCH=PATCH, apply=apply)


@pytest.mark.parametrize("passes", [(upstream_pass,), None, "not a list", {upstream_pass: 1}])
def test_pass_list_of_unexpected_type_is_a_target_change(passes):
    manager = types.SimpleNamespace(passes=passes)

    def apply(ctx):
        found = ctx.find_pass(manager, "upstream_pass")
        ctx.replace_pass(manager, found, lowering_pass(our_pass))

    record = _engine._apply_one(PATCH, module_applying(apply), (2, 4, 0), "2.4.0")
    assert record.state == _engine.SKIPPED and "has no list of passes" in record.reason
    assert manager.passes is passes


def test_patch_raising_half_way_is_rolled_back_exactly():
    owner = types.SimpleNamespace(fn=original_function)
    manager = PassManager([upstream_pass])

    def apply(ctx):
        ctx.wrap_function(owner, "fn", lambda w, i, a, k: w(*a, **k))
        ctx.replace_pass(manager, upstream_pass, lowering_pass(our_pass))
        ctx.insert_pass(manager, lowering_pass(our_pass))
        raise RuntimeError("upstream changed in a way nobody foresaw")

    record = _engine._apply_one(PATCH, module_applying(apply), (2, 4, 0), "2.4.0")
    assert record.state == _engine.FAILED and "nobody foresaw" in record.reason
    assert owner.fn is original_function and manager.passes == [upstream_pass]


def test_keyboard_interrupt_in_a_patch_is_not_swallowed():
    """KeyboardInterrupt / SystemExit are the user's: they are not swallowed as a failed patch."""

    def apply(ctx):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        _engine._apply_one(PATCH, module_applying(apply), (2, 4, 0), "2.4.0")


def test_undo_cycles_restore_the_same_objects():
    owner = types.SimpleNamespace(fn=original_function)
    manager = PassManager([upstream_pass])
    for _ in range(100):
        ctx = PatchContext(PATCH, (2, 4, 0))
        ctx.wrap_function(owner, "fn", lambda w, i, a, k: w(*a, **k))
        ctx.replace_pass(manager, upstream_pass, lowering_pass(our_pass))
        ctx.insert_pass(manager, lowering_pass(our_pass), after=None)
        assert ctx.originals["pass:upstream_pass"] is upstream_pass
        assert ctx.undo_all() == []
        assert owner.fn is original_function and manager.passes == [upstream_pass]
        assert manager.passes[0] is upstream_pass


def test_undo_after_the_pass_list_was_rebuilt_and_shuffled():
    manager = PassManager([upstream_pass])
    ctx = PatchContext(PATCH, (2, 4, 0))
    ours = lowering_pass(our_pass)
    ctx.replace_pass(manager, upstream_pass, ours)
    manager.passes = [original_function, ours]  # someone rebuilt the list and put a pass in front
    assert ctx.undo_all() == []
    assert manager.passes == [original_function, upstream_pass]


def test_undo_when_our_pass_was_removed_by_someone_else_reports_it():
    manager = PassManager([upstream_pass])
    ctx = PatchContext(PATCH, (2, 4, 0))
    ctx.replace_pass(manager, upstream_pass, lowering_pass(our_pass))
    manager.passes = []
    notes = ctx.undo_all()
    assert notes == ["'our_pass' is no longer in the lowering pass list"]


def test_undo_from_many_threads_at_once():
    """Independent contexts on independent targets, applied and undone concurrently, end exactly restored."""
    owners = [types.SimpleNamespace(fn=original_function) for _ in range(8)]
    errors = []

    def cycle(owner):
        try:
            for _ in range(50):
                ctx = PatchContext(PATCH, (2, 4, 0))
                ctx.wrap_function(owner, "fn", lambda w, i, a, k: w(*a, **k))
                assert owner.fn(3) == 3
                assert ctx.undo_all() == []
        except Exception as exc:  # collected: an exception in a thread would otherwise pass unnoticed
            errors.append(exc)

    threads = [threading.Thread(target=cycle, args=(owner,)) for owner in owners]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert errors == [] and all(owner.fn is original_function for owner in owners)


def test_reloaded_import_hook_keeps_its_hooks(tmp_path):
    """A reload of the hook module once dropped every registered hook: torch_tensorrt imported later was silently
    left unpatched."""
    (tmp_path / "hooked_target.py").write_text("VALUE = 7\n")
    out = output_of(f"""
        import importlib, sys
        sys.path.insert(0, {str(tmp_path)!r})
        from trt_compat import _import_hook
        seen = []
        _import_hook.when_imported("hooked_target", lambda m: seen.append(m.VALUE))
        importlib.reload(_import_hook)
        import hooked_target
        finders = sum(type(f).__name__ == "_PostImportFinder" for f in sys.meta_path)
        print(seen, finders)
    """)
    assert out == "[7] 1"


def test_reloaded_engine_still_reverts_what_it_applied():
    """A reload of the engine once forgot the applied patches: revert() left the replacements in place."""
    out = output_of("""
        import importlib, types
        from trt_compat import _engine
        from trt_compat.patching import Patch, PatchContext

        def original(x):
            return x

        owner = types.SimpleNamespace(fn=original)
        patch = Patch("p", "t", None, "2.2", None, "")
        ctx = PatchContext(patch, (2, 4, 0))
        ctx.wrap_function(owner, "fn", lambda w, i, a, k: -1)
        _engine._records["p"] = _engine._Record("p", _engine.APPLIED, "", ctx)
        importlib.reload(_engine)
        _engine.revert_patches()
        print(owner.fn is original, _engine._records["p"].state)
    """)
    assert out == "True reverted"


def test_reloaded_package_stays_light_and_working():
    out = output_of("""
        import importlib, sys, trt_compat
        for name in ("trt_compat._import_hook", "trt_compat._config", "trt_compat.audit", "trt_compat"):
            importlib.reload(sys.modules.get(name) or importlib.import_module(name))
        heavy = [m for m in ("torch", "torch_tensorrt") if m in sys.modules]
        print(heavy, trt_compat.report().patches and "ok")
    """)
    assert out == "[] ok"


def test_report_when_patches_cannot_be_loaded(monkeypatch):
    def broken():
        raise SyntaxError("a patch file was corrupted")

    monkeypatch.setattr(_discovery, "discover", broken)
    report = _engine.build_report()
    assert [p.state for p in report.patches] == [_engine.FAILED] and "corrupted" in report.patches[0].reason
    monkeypatch.setenv("TRT_COMPAT_STRICT", "1")
    with pytest.raises(_engine.PatchError, match="loading patches: SyntaxError"):
        _engine.apply_patches()


def test_a_broken_hook_never_breaks_the_import(monkeypatch, caplog):
    def boom():
        raise MemoryError("simulated")

    monkeypatch.setattr(_engine, "apply_patches", boom)
    _engine.on_torch_tensorrt_imported(types.ModuleType("torch_tensorrt"))
    assert "unexpected error while patching torch_tensorrt" in caplog.text


def test_target_changed_is_not_a_failure():
    record = _engine._apply_one(
        PATCH, module_applying(lambda ctx: (_ for _ in ()).throw(TargetChanged("moved"))), (2, 4, 0), "2.4.0"
    )
    assert record.state == _engine.SKIPPED and record.reason == "target changed: moved"
