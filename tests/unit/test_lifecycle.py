"""How trt_compat lives in a process: import hooks, reloads, blocked imports, optimised interpreters, a shadowing
folder, a vendored copy, saved programs, and in-flight compiles. Fresh interpreters where the order of imports is the
subject; no Torch-TensorRT (its stand-ins are plain modules made here).
"""

import json
import shutil
import sys
import types

import pytest
import torch

from tests.helpers.processes import REPO, output_of, run_cli, run_python
from trt_compat import _engine, testing
from trt_compat.patching import Patch, PatchContext, lowering_pass


def test_a_blocked_torch_tensorrt_is_not_an_imported_one():
    """``sys.modules["torch_tensorrt"] = None`` (how programs block an optional dependency) once made
    ``import trt_compat`` raise in strict mode and log three "target changed" warnings otherwise."""
    done = run_python(
        """
        import logging, sys
        logging.basicConfig(level=logging.WARNING)
        sys.modules["torch_tensorrt"] = None
        import trt_compat
        print("imported", [p.state for p in trt_compat.report().patches].count("applied"))
    """,
        TRT_COMPAT_STRICT="1",
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "imported 0"
    assert "target changed" not in done.stderr and "WARNING" not in done.stderr, done.stderr


@pytest.mark.parametrize("args", [("--json",), ("demo",), ("--help",), ("--version",)])
def test_the_command_line_works_under_python_OO(args):
    done = run_cli(*args, flags=("-OO",))
    assert done.returncode == 0, done.stderr[-3000:]


def test_an_empty_trt_compat_folder_in_the_working_directory_is_named(tmp_path):
    (tmp_path / "trt_compat").mkdir()
    # The installed trt_compat only: a checkout on PYTHONPATH would win over the folder as any package does.
    done = run_cli("--json", cwd=tmp_path, PYTHONPATH="")
    assert done.returncode == 2
    assert f"finds the folder {tmp_path / 'trt_compat'}" in done.stderr and "shadows" in done.stderr


def test_a_vendored_copy_never_imports_another_projects_patches_folder(tmp_path):
    """An application vendoring trt_compat/ next to its own patches/ package: those modules are not ours."""
    shutil.copytree(REPO / "trt_compat", tmp_path / "trt_compat", ignore=shutil.ignore_patterns("__pycache__"))
    (tmp_path / "patches").mkdir()
    (tmp_path / "patches" / "__init__.py").write_text('"""Database migrations."""\n')
    (tmp_path / "patches" / "migrate.py").write_text(f"open({str(tmp_path / 'RAN')!r}, 'w').write('x')\n")
    done = run_python(
        """
        import sys
        sys.path.insert(0, sys.argv[1])
        import trt_compat
        assert trt_compat.__file__.startswith(sys.argv[1]), trt_compat.__file__
        print([(p.name, p.state) for p in trt_compat.report().patches])
    """,
        str(tmp_path),
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr
    assert not (tmp_path / "RAN").exists(), "trt_compat imported another project's patches/ module"
    assert "('migrate'," not in done.stdout, done.stdout


def test_this_checkout_is_still_recognised_from_its_root():
    out = output_of("import trt_compat.patches as p; print(p.__file__)")
    assert out == str(REPO / "patches" / "__init__.py")


def test_reloading_trt_compat_does_not_add_hooks(tmp_path):
    (tmp_path / "torch_tensorrt.py").write_text("__version__ = '2.5.0'\n")
    out = output_of(f"""
        import importlib, sys
        sys.path.insert(0, {str(tmp_path)!r})
        import trt_compat
        from trt_compat import _engine, _import_hook
        calls = []
        _engine.on_torch_tensorrt_imported = lambda module: calls.append(module.__name__)
        for _ in range(3):
            importlib.reload(trt_compat)
        _engine.on_torch_tensorrt_imported = lambda module: calls.append(module.__name__)
        import torch_tensorrt
        importlib.reload(torch_tensorrt)
        importlib.reload(torch_tensorrt)
        print(len(_import_hook._hooks["torch_tensorrt"]), calls)
    """)
    assert out == "1 ['torch_tensorrt', 'torch_tensorrt', 'torch_tensorrt']", out


def test_saved_programs_with_trt_compat_ops_load_after_a_plain_import(tmp_path):
    """Graphs trt_compat rewrote may call trt_compat::max_pool_indices; loading one saved earlier needs only
    `import trt_compat` (which itself imports no torch)."""
    saved = tmp_path / "program.pt2"
    output_of(f"""
        import torch
        from trt_compat.patches import tuple_pooling

        class Indices(torch.nn.Module):
            def forward(self, x):
                return tuple_pooling.MAX_POOL_INDICES(x, [2, 2], [2, 2], [0, 0], [1, 1], False)

        torch.export.save(torch.export.export(Indices(), (torch.randn(1, 2, 4, 4),)), {str(saved)!r})
    """)
    out = output_of(f"""
        import sys
        import trt_compat
        light = "torch" not in sys.modules
        import torch
        program = torch.export.load({str(saved)!r})
        x = torch.randn(1, 2, 4, 4)
        print(light, torch.equal(program.module()(x), torch.ops.aten.max_pool2d_with_indices(x, [2, 2])[1]))
    """)
    assert out == "True True", out


# -- pass lists edited while a compile iterates them ------------------------------------------------------------


class _Ours:
    """A toy patch module replacing the upstream pass "upstream_pass" of the stub pass manager."""

    PATCH = Patch("ours", "t", None, "2.2.0", None, "")

    @staticmethod
    def apply(ctx: PatchContext) -> None:
        from trt_compat.patching import post_lowering_passes

        manager = post_lowering_passes(ctx)
        ctx.replace_pass(
            manager, ctx.find_pass(manager, "upstream_pass") or manager.passes[1], lowering_pass(_ours_pass)
        )


ran = []


def _ours_pass(gm):
    ran.append("ours")
    return gm


def test_a_revert_during_a_compile_neither_skips_nor_repeats_a_pass():
    """Upstream iterates `for p in self.passes`: a revert from another thread once deleted from that same list,
    and the pass after the one running was skipped (3 views left unconverted on 2.5.0)."""
    del ran[:]

    def first(gm, *_):
        ran.append("first")
        context.undo_all()  # what trt_compat.revert() in another thread does, right now
        return gm

    def upstream_pass(gm, *_):
        ran.append("upstream")
        return gm

    def last(gm, *_):
        ran.append("last")
        return gm

    with testing.stub_post_lowering([first, upstream_pass, last]) as manager:
        context = PatchContext(_Ours.PATCH, (2, 5, 0))
        _Ours.apply(context)
        manager("gm")
        assert ran == ["first", "ours", "last"]  # the compile in flight ran the list it started with
        assert manager.passes == [first, upstream_pass, last]  # and the next compile gets upstream's
        del ran[:]
        manager("gm")
        assert ran == ["first", "upstream", "last"]


def test_an_apply_during_a_compile_does_not_run_a_pass_twice():
    del ran[:]

    def first(gm, *_):
        ran.append("first")
        _Ours.apply(context)
        return gm

    def upstream_pass(gm, *_):
        ran.append("upstream")
        return gm

    with testing.stub_post_lowering([first, upstream_pass]) as manager:
        context = PatchContext(_Ours.PATCH, (2, 5, 0))
        manager("gm")
        assert ran == ["first", "upstream"]
        context.undo_all()


def test_testing_applied_undoes_exactly_and_reports_what_changed():
    target = types.SimpleNamespace(fn=lambda: "original")
    original = target.fn
    module = types.SimpleNamespace(
        PATCH=Patch("toy", "t", None, "2.2.0", None, ""),
        apply=lambda ctx: ctx.wrap_function(target, "fn", lambda wrapped, instance, args, kwargs: "patched"),
    )
    with testing.applied(module, release="2.4.0") as ctx:
        assert target.fn() == "patched"
        (change,) = ctx.records
        assert (change.kind, change.name, change.original) == ("attribute", "fn", original)
        assert ctx.changes == ["wrapped SimpleNamespace.fn"]
    assert target.fn is original


def test_strict_mode_turns_an_unexpected_error_in_the_hook_into_patch_error(monkeypatch):
    """Errors outside a patch's own apply (once: `packaging` missing) were swallowed by the hook even in strict
    mode."""
    import trt_compat

    def boom():
        raise MemoryError("simulated")

    monkeypatch.setattr(_engine, "apply_patches", boom)
    monkeypatch.setenv("TRT_COMPAT_STRICT", "1")
    with pytest.raises(trt_compat.PatchError, match="unexpected error while patching torch_tensorrt: MemoryError"):
        _engine.on_torch_tensorrt_imported(types.ModuleType("torch_tensorrt"))


def test_no_third_party_package_is_needed_to_decide_and_report():
    """Without packaging and wrapt (once runtime dependencies) everything still works."""
    out = output_of("""
        import sys
        sys.modules["packaging"] = None
        sys.modules["wrapt"] = None
        import trt_compat
        from trt_compat import _detect
        print(_detect.release_of("2.6.0.dev20250101+cu124"), trt_compat.report().release_status)
    """)
    assert out.startswith("(2, 6, 0) "), out


def test_json_report_carries_version_settings_and_notes():
    done = run_cli("--json")
    report = json.loads(done.stdout)
    assert {"trt_compat", "settings", "notes", "patches", "versions", "strict", "release_status"} <= set(report)
    assert sys.modules["trt_compat"].__version__ == report["trt_compat"]
    assert torch.__version__.startswith(report["versions"]["torch"].split("+")[0])


def test_stub_modules_leaves_an_imported_package_as_it_was():
    """A stand-in for a submodule of a package already imported is that package's attribute inside the block (``from
    package import child`` reads it there) and not after it. It once stayed: with the real Torch-TensorRT imported in
    the same process, the stand-in ``backends`` module of one unit test replaced the real one for every later test."""
    import email
    import email.charset

    real = email.charset
    stand_in = types.ModuleType("email.charset")
    with testing.stub_modules({"email.charset": stand_in, "email.trt_compat_stand_in": stand_in}):
        from email import charset

        assert charset is stand_in and sys.modules["email.charset"] is stand_in
        assert email.trt_compat_stand_in is stand_in
    from email import charset

    assert charset is real and email.charset is real and sys.modules["email.charset"] is real
    assert not hasattr(email, "trt_compat_stand_in") and "email.trt_compat_stand_in" not in sys.modules
