"""Finding the patches: every discovered patch is validated, and a broken one is reported by its own name while every
other patch still applies. No Torch-TensorRT: a fake installed version, and a scratch folder of patch modules
(added to ``trt_compat.patches``) holding the broken ones next to a good toy patch.
"""

import sys
import textwrap
import types

import pytest

import trt_compat
from tests.helpers.processes import output_of
from trt_compat import _detect, _discovery, _engine
from trt_compat.patching import Defect, Option, Patch, PatchDefinitionError

GOOD_TOY = """
import types
from trt_compat.patching import Patch

TARGET = types.SimpleNamespace(fn=lambda: "original")
PATCH = Patch("toy_good", "a toy", None, "2.2.0", None, "test")


def apply(ctx):
    ctx.wrap_function(TARGET, "fn", lambda wrapped, instance, args, kwargs: "patched")
"""

BROKEN = {
    "toy_bad_import": "import a_module_nobody_has\n",
    "toy_bad_version": "from trt_compat.patching import Patch\n"
    'PATCH = Patch("toy_bad_version", "t", None, "2.5.x", None, "")\n'
    "def apply(ctx): pass\n",
    "toy_misspelled_apply": "from trt_compat.patching import Patch\n"
    'PATCH = Patch("toy_misspelled_apply", "t", None, "2.2.0", None, "")\n'
    "def aply(ctx): pass\n",
    "toy_misspelled_patch": "from trt_compat.patching import Patch\n"
    'PATHC = Patch("toy_misspelled_patch", "t", None, "2.2.0", None, "")\n'
    "def apply(ctx): pass\n",
    "toy_wrong_name": "from trt_compat.patching import Patch\n"
    'PATCH = Patch("something_else", "t", None, "2.2.0", None, "")\n'
    "def apply(ctx): pass\n",
}

REASONS = {
    "toy_bad_import": "ModuleNotFoundError: No module named 'a_module_nobody_has'",
    "toy_bad_version": "PatchDefinitionError: patch 'toy_bad_version': '2.5.x' is not a release like '2.5.0'",
    "toy_misspelled_apply": "defines no apply(ctx) function (found 'aply': a misspelling?)",
    "toy_misspelled_patch": "defines no PATCH = Patch(...) (found 'PATHC': a misspelling?)",
    "toy_wrong_name": "PATCH.name is 'something_else'; it must be the module's name 'toy_wrong_name'",
}


@pytest.fixture
def scratch_patches(tmp_path, monkeypatch):
    """The real patch folder plus a scratch one with the toy modules; a fake torch-tensorrt 2.5.0 installed."""
    import trt_compat.patches as package

    for name, source in {"toy_good": GOOD_TOY, **BROKEN}.items():
        (tmp_path / f"{name}.py").write_text(textwrap.dedent(source))
    monkeypatch.setattr(package, "__path__", [*package.__path__, str(tmp_path)])
    monkeypatch.setattr(_discovery, "_found", None)
    monkeypatch.setattr(_engine, "_records", {})
    versions = {
        "torch_tensorrt": "2.5.0",
        "torch_tensorrt_distribution": "torch-tensorrt",
        "torch": "2.5.1",
        "tensorrt": None,
    }
    monkeypatch.setattr(_detect, "installed_versions", lambda: dict(versions))
    # The real patches find no target, whatever this venv has installed (a release's venv has a torch_tensorrt
    # whose import, without the harness, fails for want of TensorRT's native library).
    for name in [m for m in sys.modules if m == "torch_tensorrt" or m.startswith("torch_tensorrt.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "torch_tensorrt", None)
    monkeypatch.delenv("TRT_COMPAT_STRICT", raising=False)
    monkeypatch.delenv("TRT_COMPAT_DISABLE", raising=False)
    yield
    _engine.revert_patches()


def test_each_broken_module_is_reported_by_name_and_the_others_still_apply(scratch_patches):
    from trt_compat.patches import toy_good

    report = _engine.apply_patches()
    found = {p.name: (p.state, p.reason) for p in report.patches}
    for name, reason in REASONS.items():
        assert found[name][0] == "failed", found[name]
        assert reason in found[name][1], found[name]
    assert found["toy_good"] == ("applied", "torch-tensorrt 2.5.0 is in >=2.2.0")
    assert toy_good.TARGET.fn() == "patched"
    # The real patches were tried too (and skipped: there is no torch_tensorrt to patch here).
    assert {found[name][0] for name in ("tuple_pooling", "view_to_reshape_metadata")} == {"skipped"}
    text = str(report)
    assert all(name in text for name in BROKEN)


def test_strict_mode_names_the_broken_modules(scratch_patches, monkeypatch):
    monkeypatch.setenv("TRT_COMPAT_STRICT", "1")
    with pytest.raises(trt_compat.PatchError) as raised:
        _engine.apply_patches()
    message = str(raised.value)
    assert all(f"patch {name} could not be applied: failed: " in message for name in BROKEN), message


def test_a_module_imported_before_a_reload_of_the_api_is_still_a_patch():
    """The engine recognises PATCH by shape: reloading trt_compat.patching (or _errors) before the first
    discovery once made every patch an instance of a stale class, and zero patches were found, silently."""
    out = output_of("""
        import importlib, json, trt_compat
        import trt_compat.patching, trt_compat._errors
        from trt_compat.patches import tuple_pooling  # holds a Patch of the class as it is now
        importlib.reload(trt_compat._errors)
        importlib.reload(trt_compat.patching)
        print(json.dumps([p.name for p in trt_compat.report().patches if p.state != "failed"]))
    """)
    assert "tuple_pooling" in out and "view_to_reshape_metadata" in out, out


@pytest.mark.parametrize(
    "fields, message",
    [
        ({"first_affected": "2.5.x"}, "'2.5.x' is not a release like '2.5.0'"),
        ({"first_affected": "2.5.0rc1"}, "is not a release"),
        ({"fixed_in": "2.4.0"}, "fixed_in 2.4.0 is not after first_affected 2.5.0"),
        ({"name": "Bad-Name"}, "must be lower_case_with_underscores"),
        ({"title": " "}, "needs a title"),
        ({"issue": "github.com/pytorch/TensorRT/issues/1"}, "issue must be an https:// URL or None"),
        ({"defects": [Defect("d", "t", lambda probe: None)]}, "defects must be a tuple of Defect"),
        ({"defects": (Defect("d", "t", print), Defect("d", "u", print))}, "defect keys repeat"),
        ({"options": ("x",)}, "options must be a tuple of Option"),
    ],
)
def test_patch_validates_its_fields_when_created(fields, message):
    values = dict(name="p", title="t", issue=None, first_affected="2.5.0", fixed_in=None, why="")
    values.update(fields)
    with pytest.raises(PatchDefinitionError, match=message.replace("(", r"\(").replace(")", r"\)")):
        Patch(**values)


def test_defect_and_option_validate_too():
    with pytest.raises(PatchDefinitionError, match="must be lower_case"):
        Defect("Key", "t", print)
    with pytest.raises(PatchDefinitionError, match="check must be callable"):
        Defect("key", "t", None)
    with pytest.raises(PatchDefinitionError, match="default 'c' is not one of"):
        Option("o", "TRT_COMPAT_O", ("a", "b"), "c", "")


def test_discovery_needs_no_torch_tensorrt_and_lists_every_patch_module():
    names = {entry.name for entry in _discovery.discover()}
    assert names == set(_discovery.module_names())
    assert all(entry.usable for entry in _discovery.discover())


def test_without_torch_the_report_lists_each_patch_as_not_installed(monkeypatch):
    monkeypatch.setattr(_discovery, "_found", None)
    monkeypatch.setattr(
        _discovery.importlib.util, "find_spec", lambda name, *a: None if name == "torch" else types.SimpleNamespace()
    )
    report = _engine.build_report()
    assert {p.name for p in report.patches} == set(_discovery.module_names())
    assert {(p.state, p.reason) for p in report.patches} == {("not_installed", "torch is not installed")}
    monkeypatch.setattr(_discovery, "_found", None)  # discovered again for the next test, with torch
