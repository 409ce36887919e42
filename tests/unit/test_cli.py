"""The two commands people run: the report and the demonstration."""

import importlib.util
import json
import subprocess
import sys

import pytest

from tests.helpers.processes import clean_env, run_cli
from tests.helpers.settings import TYPOS
from trt_compat import _discovery


def test_json_report_lists_every_patch_with_its_state():
    result = run_cli("--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["versions"]["torch"]
    names = {p["name"] for p in report["patches"]}
    assert names == {found.name for found in _discovery.discover()}
    for patch in report["patches"]:
        assert patch["issue"] is None or patch["issue"].startswith("https://github.com/pytorch/TensorRT/issues/")
        assert patch["state"] in {
            "applied",
            "not_needed",
            "disabled",
            "failed",
            "skipped",
            "pending",
            "reverted",
            "not_installed",
        }


def test_disabled_patches_are_reported_as_disabled():
    result = run_cli("--json", TRT_COMPAT_DISABLE="tuple_pooling")
    states = {p["name"]: p["state"] for p in json.loads(result.stdout)["patches"]}
    assert states["tuple_pooling"] == "disabled"
    assert states["view_to_reshape_metadata"] != "disabled"


# The unit tests also run in the release venvs of tests/run.sh, where torch-tensorrt is installed but cannot be
# imported without the offline harness: strict mode then fails on that import, whatever the settings say.
TORCH_TENSORRT_UNIMPORTABLE = importlib.util.find_spec("torch_tensorrt") is not None


def strict_errors(stderr: str) -> list:
    return [line for line in stderr.splitlines() if line.startswith("trt_compat (strict mode): ")]


def test_disable_0_disables_nothing_and_is_no_error_in_strict_mode():
    result = run_cli("--json", TRT_COMPAT_DISABLE="0", TRT_COMPAT_STRICT="1")
    report = json.loads(result.stdout)
    assert "disabled" not in {p["state"] for p in report["patches"]}
    assert "TRT_COMPAT_DISABLE" not in result.stderr and not [n for n in report["notes"] if "TRT_COMPAT_DISABLE" in n]
    if TORCH_TENSORRT_UNIMPORTABLE:
        assert result.returncode == 1 and all("import torch_tensorrt failed" in e for e in strict_errors(result.stderr))
    else:
        assert result.returncode == 0 and report["notes"] == [], result.stderr


@pytest.mark.parametrize("variable", sorted(TYPOS))
def test_strict_report_exits_1_naming_a_setting_it_cannot_understand(variable):
    value, said = TYPOS[variable]
    result = run_cli(TRT_COMPAT_STRICT="1", **{variable: value})
    assert result.returncode == 1, result.stderr
    # Where the import of torch_tensorrt fails first, that is strict mode's error, and the setting its warning.
    lines = result.stderr.splitlines() if TORCH_TENSORRT_UNIMPORTABLE else strict_errors(result.stderr)
    error = [line for line in lines if said[0] in line]
    assert error and all(text in error[0] for text in said), result.stderr


@pytest.mark.parametrize("variable", sorted(TYPOS))
def test_report_warns_once_notes_and_falls_back_on_a_setting_it_cannot_understand(variable):
    value, said = TYPOS[variable]
    result = run_cli("--json", **{variable: value})
    assert result.returncode == 0, result.stderr
    assert result.stderr.count(said[0]) == 1, result.stderr
    report = json.loads(result.stdout)
    assert [note for note in report["notes"] if said[0] in note], report["notes"]
    settings = {s["name"]: s["value"] for s in report["settings"]}
    assert settings["audit"] == "off" and settings["pool_indices"] == "tensorrt"


def closed_early(*args, read_lines=0):
    """Run ``python -m trt_compat args`` with its stdout a real pipe that this side closes after reading
    ``read_lines`` lines (0: before the command writes anything); its exit status and stderr."""
    process = subprocess.Popen(
        [sys.executable, "-m", "trt_compat", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=clean_env(),
    )
    for _ in range(read_lines):
        process.stdout.readline()
    process.stdout.close()
    return process.wait(timeout=300), process.stderr.read()


# The status each command has when its output is read to the end (verify: nothing verified without torch-tensorrt).
@pytest.mark.parametrize("args, status", [((), 0), (("--json",), 0), (("verify",), 1), (("--help",), 0)])
def test_a_reader_gone_before_the_output_gets_no_traceback_and_the_commands_own_status(args, status):
    for _ in range(2):  # the reader is gone before anything is written: every run meets the closed pipe
        closed_status, stderr = closed_early(*args)
        assert (closed_status, "BrokenPipeError" in stderr, "Traceback" in stderr) == (status, False, False), stderr


def test_head_1_gets_the_first_line_and_no_traceback():
    """`trt-compat | head -1` itself: whether the report is written before head exits varies from run to run."""
    for _ in range(3):
        closed_status, stderr = closed_early(read_lines=1)
        assert (closed_status, "BrokenPipeError" in stderr, "Traceback" in stderr) == (0, False, False), stderr
    done = subprocess.run(
        ["bash", "-c", f"set -o pipefail; {sys.executable} -m trt_compat | head -1"],
        capture_output=True,
        text=True,
        env=clean_env(),
        timeout=300,
    )
    assert done.returncode == 0 and done.stdout.startswith("torch-tensorrt "), done.stderr
    assert "Traceback" not in done.stderr


def test_strict_report_fails_when_torch_tensorrt_cannot_be_imported():
    import importlib.util

    if importlib.util.find_spec("torch_tensorrt") is None:
        pytest.skip("needs an installed torch_tensorrt whose import fails (the harness venvs without the harness)")
    result = run_cli("--json", TRT_COMPAT_STRICT="1")
    assert result.returncode == 1
    assert "import torch_tensorrt failed" in result.stderr


def test_a_source_checkout_finds_its_patches_without_an_install():
    # The README's quick start runs `python -m trt_compat demo` from the checkout's root after `pip install .`:
    # there the checkout's trt_compat/ shadows the installed one and must still find ../patches.
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    result = subprocess.run(
        [sys.executable, "-S", "-c", "import trt_compat.patches as p; print(p.__file__)"],
        cwd=root,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert Path(result.stdout.strip()) == root / "patches" / "__init__.py"


def test_gpu_tier_without_a_gpu_is_one_skipped_test_and_success():
    from tests.helpers.processes import REPO, clean_env

    done = subprocess.run(
        [sys.executable, "-m", "pytest", "tests/gpu", "-m", "gpu", "-q", "-rs"],
        cwd=REPO,
        capture_output=True,
        text=True,
        env=clean_env(),
        timeout=300,
    )
    assert done.returncode == 0, done.stdout[-2000:]
    assert "1 skipped" in done.stdout and "GPU tier not runnable here" in done.stdout, done.stdout[-2000:]


def test_console_script_help_names_itself_and_documents_every_variable_as_the_readme_does():
    from trt_compat import _environment

    done = run_cli("--help")
    assert done.returncode == 0
    for text in ("usage: python -m trt_compat", "verify", "demo"):
        assert text in done.stdout, text
    # The README's table is rendered from the same rows (tests/unit/test_docs.py checks it is current).
    shown = " ".join(done.stdout.split())
    for variable in _environment.VARIABLES:
        assert f" {variable.name} " in shown
        assert " ".join(variable.text.replace("`", "").split()) in shown, variable.name
    for spelling in ("metadata,values", "all", "1/true/yes/on", "0/false/no/off", "none"):
        assert spelling in shown, spelling
    from trt_compat.__main__ import _parser

    assert _parser("trt-compat").format_usage().startswith("usage: trt-compat")


def test_version():
    import trt_compat

    assert run_cli("--version").stdout.strip() == f"trt_compat {trt_compat.__version__}"


def test_demo_shows_every_demonstrated_patch_and_ends_with_the_verdict():
    """The whole command in a fresh interpreter: the demonstrations, then what this environment needs (it applies
    as `trt-compat` does: here torch_tensorrt is not installed, or its import fails without the offline harness)."""
    import importlib.util

    done = run_cli("demo")
    assert done.returncode == 0, done.stderr[-3000:]
    lines = done.stdout.splitlines()
    demonstrated = [f.name for f in _discovery.discover() if hasattr(f.module, "demonstrate")]
    headings = [line.split(":")[0] for line in lines if line[:1].isdigit()]
    assert headings == [f"{number}. {name}" for number, name in enumerate(demonstrated, 1)]
    assert "== this environment (trt-compat report)" in lines and lines[-1].startswith("verdict: ")
    if importlib.util.find_spec("torch_tensorrt") is None:
        assert lines[-1].startswith("verdict: every transformation checked here is exact (")
        assert lines[-1].endswith(
            "torch-tensorrt is not installed: install it next to trt_compat and run `trt-compat "
            "verify`, which reproduces each defect on that release without and with trt_compat"
        )
    else:  # a release's venv without the harness: its import fails for want of TensorRT's native library
        assert lines[-1].startswith("verdict: NOTHING PATCHED: torch-tensorrt "), lines[-1]


def test_demo_json_carries_the_checks_and_the_verdict():
    done = run_cli("demo", "--json")
    assert done.returncode == 0, done.stderr[-2000:]
    document = json.loads(done.stdout)
    assert document["ok"] is True and document["checks"] and all(check["ok"] for check in document["checks"])
    assert {check["side"] for check in document["checks"]} == {"without", "with"}
    assert document["verdict"].startswith("verdict: ") and document["report"]["patches"]
    assert document["not_demonstrated"] == [
        {"patch": f.name, "reason": "needs Torch-TensorRT: run `trt-compat verify`"}
        for f in _discovery.discover()
        if not hasattr(f.module, "demonstrate")
    ]
