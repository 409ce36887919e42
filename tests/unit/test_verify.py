"""`trt-compat verify` and strict mode where nothing can be verified or patched, without Torch-TensorRT: an install is
stood in for by a real package (metadata and an importable `torch_tensorrt`) written to a temporary folder."""

import importlib.util
import json
import os

from tests.helpers.processes import REPO, run_cli, run_python


def fake_install(folder, init_code):
    """A `torch-tensorrt 2.5.0` distribution whose `torch_tensorrt/__init__.py` is ``init_code``; its folder for
    PYTHONPATH (with the checkout first, as clean_env puts it)."""
    package = folder / "torch_tensorrt"
    package.mkdir()
    (package / "__init__.py").write_text(init_code)
    info = folder / "torch_tensorrt-2.5.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: torch-tensorrt\nVersion: 2.5.0\n")
    return os.pathsep.join((str(REPO), str(folder)))


# The unit tests also run in the release venvs of tests/run.sh, where torch-tensorrt is installed but cannot be
# imported without the offline harness: there nothing can be verified for that reason instead.
NOTHING_VERIFIED = (
    "NOTHING VERIFIED: import torch_tensorrt failed: "
    if importlib.util.find_spec("torch_tensorrt") is not None
    else "NOTHING VERIFIED: torch-tensorrt is not installed: there is nothing to verify"
)


def test_verify_without_torch_tensorrt_says_nothing_was_verified_and_exits_1():
    result = run_cli("verify")
    assert result.returncode == 1, result.stderr
    assert result.stdout.strip().splitlines()[-1].startswith(NOTHING_VERIFIED)
    assert "NOT ALL DEFECTS FIXED" not in result.stdout


def test_verify_json_without_torch_tensorrt_is_not_ok_and_not_verified():
    result = run_cli("verify", "--json")
    assert result.returncode == 1, result.stderr
    report = json.loads(result.stdout)
    assert (report["ok"], report["verified"], report["defects"]) == (False, False, [])
    assert report["conclusion"].startswith(NOTHING_VERIFIED)


def test_verify_when_torch_tensorrt_cannot_be_imported_says_why_nothing_was_verified(tmp_path):
    path = fake_install(tmp_path, 'raise RuntimeError("libnvinfer.so.10: cannot open shared object file")\n')
    result = run_cli("verify", PYTHONPATH=path)
    assert result.returncode == 1, result.stderr
    assert result.stdout.strip().splitlines()[-1] == (
        "NOTHING VERIFIED: import torch_tensorrt failed: RuntimeError: libnvinfer.so.10: cannot open shared object file"
    )


def test_strict_refusal_after_a_successful_import_is_not_called_an_import_failure(tmp_path):
    """torch_tensorrt imports, but none of the code the patches change is there: strict mode refuses the skipped
    patches after the import, which stays done (it used to be reported as "import torch_tensorrt failed")."""
    path = fake_install(tmp_path, '__version__ = "2.5.0"\n')
    result = run_python(
        """
        import sys, trt_compat
        try:
            trt_compat.apply()
            print("no error")
        except trt_compat.PatchError as exc:
            print(exc)
        print("torch_tensorrt" in sys.modules)
        """,
        TRT_COMPAT_STRICT="1",
        PYTHONPATH=path,
    )
    assert result.returncode == 0, result.stderr
    error, imported = result.stdout.strip().splitlines()[-2:]
    assert error.startswith("trt_compat (strict mode): patch "), error
    assert "could not be applied: skipped: target changed: module torch_tensorrt." in error
    assert "import torch_tensorrt failed" not in error and imported == "True"


def test_strict_report_after_a_successful_import_exits_1_naming_the_patches(tmp_path):
    path = fake_install(tmp_path, '__version__ = "2.5.0"\n')
    result = run_cli("--json", TRT_COMPAT_STRICT="1", PYTHONPATH=path)
    assert result.returncode == 1
    assert "import torch_tensorrt failed" not in result.stderr
    error = [line for line in result.stderr.splitlines() if line.startswith("trt_compat (strict mode): ")]
    assert error and "patch tuple_pooling could not be applied: skipped: target changed: " in error[0], result.stderr
    states = {p["name"]: p["state"] for p in json.loads(result.stdout)["patches"]}
    assert states["tuple_pooling"] == "skipped"
