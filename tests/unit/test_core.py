"""The core's own mechanics: detection, configuration, the import hook, exact undo, and failure handling.

These run without Torch-TensorRT; the targets patched here are plain objects made by the tests, which is all
the core needs to prove (the real targets are exercised in tests/integration).
"""

import types

import pytest
import torch

from tests.helpers.processes import run_python
from trt_compat import _config, _detect, _discovery, _engine
from trt_compat.patching import Patch, PatchContext, TargetChanged, lowering_pass


def test_import_leaves_torch_and_torch_tensorrt_unimported():
    result = run_python("""
        import sys, trt_compat
        heavy = [m for m in ("torch", "torch_tensorrt", "wrapt", "packaging", "importlib.metadata") if m in sys.modules]
        print(",".join(heavy))
    """)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == ""


@pytest.mark.parametrize(
    "version, release",
    [
        ("2.4.0", (2, 4, 0)),
        ("2.6.0.dev20250101+cu124", (2, 6, 0)),
        ("2.7.0rc1", (2, 7, 0)),
        ("2.14", (2, 14, 0)),
        ("not a version", None),
        (None, None),
    ],
)
def test_release_of(version, release):
    assert _detect.release_of(version) == release


def test_versions_come_from_metadata():
    versions = _detect.installed_versions()
    assert versions["torch"] == torch.__version__.split("+")[0] or versions["torch"] == torch.__version__


VIEW_FIX = Patch("p", "t", "https://example.invalid/1", first_affected="2.2", fixed_in="2.6", why="")
OPEN_ENDED = Patch("q", "t", "https://example.invalid/2", first_affected="2.2", fixed_in=None, why="")


@pytest.mark.parametrize(
    "release, needed",
    [((2, 1, 9), False), ((2, 2, 0), True), ((2, 5, 1), True), ((2, 6, 0), False), ((3, 0, 0), False)],
)
def test_needed_on_bounded_range(release, needed):
    assert VIEW_FIX.needed_on(release) is needed
    assert VIEW_FIX.affects == ">=2.2, <2.6"


def test_open_ended_range_covers_future_releases():
    assert OPEN_ENDED.needed_on((9, 0, 0)) and OPEN_ENDED.affects == ">=2.2"


@pytest.mark.parametrize(
    "raw, all_, names",
    [("", False, set()), ("1", True, set()), ("*", True, set()), ("all", True, set()), (" a, b ,", False, {"a", "b"})],
)
def test_disable_parsing(monkeypatch, raw, all_, names):
    monkeypatch.setenv("TRT_COMPAT_DISABLE", raw)
    config = _config.read_config()
    assert config.disable_all is all_ and set(config.disabled) == names


def test_import_hook_fires_after_import_and_immediately_when_already_imported(tmp_path):
    (tmp_path / "hooked_target.py").write_text("VALUE = 41\n")
    result = run_python(f"""
        import sys
        sys.path.insert(0, {str(tmp_path)!r})
        from trt_compat._import_hook import when_imported
        seen = []
        when_imported("hooked_target", lambda m: seen.append(("first", m.VALUE)))
        assert seen == []
        import hooked_target
        when_imported("hooked_target", lambda m: seen.append(("late", m.VALUE)))
        print(seen)
    """)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[('first', 41), ('late', 41)]"


def original_function(x):
    return x + 1


def test_wrap_function_and_exact_revert():
    owner = types.SimpleNamespace(fn=original_function)
    ctx = PatchContext(VIEW_FIX, (2, 4, 0))
    ctx.wrap_function(owner, "fn", lambda wrapped, instance, args, kwargs: wrapped(*args, **kwargs) * 10)
    assert owner.fn(1) == 20 and owner.fn.__name__ == "original_function"
    assert ctx.undo_all() == []
    assert owner.fn is original_function


def test_revert_under_a_foreign_wrapper_leaves_a_pass_through():
    owner = types.SimpleNamespace(fn=original_function)
    ctx = PatchContext(VIEW_FIX, (2, 4, 0))
    ours = ctx.wrap_function(owner, "fn", lambda wrapped, instance, args, kwargs: -1)
    owner.fn = lambda x: ours(x) * 100  # someone else wrapped after us
    notes = ctx.undo_all()
    assert notes and "pass-through" in notes[0]
    assert owner.fn(1) == 200  # ours now forwards to the original


def test_pass_list_replace_insert_and_undo_by_identity():
    from torch.fx.passes.pass_manager import PassManager

    def a(gm):
        return gm

    def b(gm):
        return gm

    def ours(gm):
        return gm

    manager = PassManager([a, b])
    ctx = PatchContext(VIEW_FIX, (2, 4, 0))
    replacement = lowering_pass(ours)
    ctx.replace_pass(manager, a, replacement)
    extra = lowering_pass(ours)
    ctx.insert_pass(manager, extra, after=b)
    assert manager.passes == [replacement, b, extra]
    assert replacement.__name__ == "ours" and replacement("gm", "sample_inputs") == "gm"
    manager.passes = list(manager.passes)  # the manager rebuilding its list must not defeat the undo
    assert ctx.undo_all() == []
    assert manager.passes == [a, b]


def test_replacing_a_missing_pass_is_a_target_change():
    from torch.fx.passes.pass_manager import PassManager

    ctx = PatchContext(VIEW_FIX, (2, 4, 0))
    with pytest.raises(TargetChanged):
        ctx.replace_pass(PassManager([]), original_function, original_function)


def _patch_module(apply):
    return types.SimpleNamespace(PATCH=VIEW_FIX, apply=apply)


def test_failing_patch_is_rolled_back_and_recorded():
    owner = types.SimpleNamespace(fn=original_function)

    def apply(ctx):
        ctx.wrap_function(owner, "fn", lambda w, i, a, k: 0)
        raise KeyError("half-way")

    record = _engine._apply_one(VIEW_FIX, _patch_module(apply), (2, 4, 0), "2.4.0")
    assert record.state == _engine.FAILED and "half-way" in record.reason
    assert owner.fn is original_function


def test_changed_target_is_skipped_with_reason():
    def apply(ctx):
        ctx.require_attr(types.SimpleNamespace(), "construct_submodule_inputs")

    record = _engine._apply_one(VIEW_FIX, _patch_module(apply), (2, 4, 0), "2.4.0")
    assert record.state == _engine.SKIPPED and "construct_submodule_inputs" in record.reason


def test_out_of_range_and_disabled(monkeypatch):
    module = _patch_module(lambda ctx: pytest.fail("must not run"))
    assert _engine._apply_one(VIEW_FIX, module, (2, 6, 0), "2.6.0").state == _engine.NOT_NEEDED
    monkeypatch.setenv("TRT_COMPAT_DISABLE", "p")
    assert _engine._apply_one(VIEW_FIX, module, (2, 4, 0), "2.4.0").state == _engine.DISABLED


def test_strict_mode_raises_for_skipped_patches_and_default_mode_does_not(monkeypatch):
    from trt_compat import PatchError

    def apply(ctx):
        raise TargetChanged("construct_submodule_inputs moved")

    monkeypatch.setattr(_engine, "_records", {})
    monkeypatch.setattr(_discovery, "_found", [_discovery.Found("p", VIEW_FIX, _patch_module(apply))])
    monkeypatch.setattr(_detect, "target_version", lambda: ("2.4.0", "metadata"))
    report = _engine.apply_patches()
    assert [(p.name, p.state) for p in report.patches] == [("p", _engine.SKIPPED)]
    assert report.failed and "construct_submodule_inputs moved" in report.failed[0].reason

    monkeypatch.setattr(_engine, "_records", {})
    monkeypatch.setenv("TRT_COMPAT_STRICT", "1")
    with pytest.raises(
        PatchError, match="patch p could not be applied: skipped: target changed: construct_submodule_in"
    ):
        _engine.apply_patches()


@pytest.mark.parametrize("spelling", ["two_words", "two-words", "Two-Words", " TWO_WORDS "])
def test_is_applied_and_get_original_accept_every_spelling_disable_accepts(monkeypatch, spelling):
    import trt_compat

    target = types.ModuleType("fake_target")
    target.fn = original_function
    two_words = Patch("two_words", "t", None, first_affected="2.2", fixed_in=None, why="")

    def apply(ctx):
        ctx.wrap_function(target, "fn", lambda wrapped, instance, args, kwargs: wrapped(*args, **kwargs))

    monkeypatch.setattr(_engine, "_records", {})
    module = types.SimpleNamespace(PATCH=two_words, apply=apply)
    monkeypatch.setattr(_discovery, "_found", [_discovery.Found("two_words", two_words, module)])
    monkeypatch.setattr(_detect, "target_version", lambda: ("2.4.0", "metadata"))
    _engine.apply_patches()
    assert trt_compat.is_applied(spelling)
    assert trt_compat.get_original(spelling, "fake_target.fn") is original_function
    trt_compat.revert()
    assert not trt_compat.is_applied(spelling) and target.fn is original_function
