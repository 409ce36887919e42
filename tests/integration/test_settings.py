"""`trt-compat` on the real wheel with settings it cannot understand: strict mode exits 1 naming the variable, the
value and the accepted values (both were a log line and exit 0 on 2.14.0), after an import that succeeded; without
strict mode one warning and the fallback. Each run is a fresh interpreter: `trt-compat` imports torch_tensorrt itself.
"""

from __future__ import annotations

import pytest

from tests.harness import activate

_REASON = activate.unavailable_reason()
if _REASON:
    pytest.skip(_REASON, allow_module_level=True)

from tests.helpers.processes import cli_on_harness  # noqa: E402
from tests.helpers.settings import TYPOS  # noqa: E402


def report_with(**env):
    """(the CLI's status, its JSON report, whether torch_tensorrt is imported afterwards, its stderr)."""
    done = cli_on_harness("--json", **env)
    return done["status"], done["result"], done["imported"], done["stderr"]


def applied(report):
    return [p["name"] for p in report["patches"] if p["state"] == "applied"]


@pytest.mark.parametrize("variable", sorted(TYPOS))
def test_strict_mode_exits_1_naming_the_setting_after_a_successful_import(variable):
    value, said = TYPOS[variable]
    status, report, imported, stderr = report_with(TRT_COMPAT_STRICT="1", **{variable: value})
    assert status == 1
    error = [line for line in stderr.splitlines() if line.startswith("trt_compat (strict mode): ")]
    assert error and all(text in error[0] for text in said), stderr
    assert "import torch_tensorrt failed" not in stderr
    assert imported and applied(report), report


@pytest.mark.parametrize("variable", sorted(TYPOS))
def test_without_strict_mode_one_warning_a_note_and_the_fallback(variable):
    value, said = TYPOS[variable]
    status, report, _, stderr = report_with(**{variable: value})
    assert status == 0 and stderr.count(said[0]) == 1, stderr
    assert [note for note in report["notes"] if said[0] in note], report["notes"]
    settings = {s["name"]: s["value"] for s in report["settings"]}
    assert settings["audit"] == "off" and settings["pool_indices"] == "tensorrt"


def test_disable_0_in_strict_mode_disables_nothing():
    status, report, _, stderr = report_with(TRT_COMPAT_STRICT="1", TRT_COMPAT_DISABLE="0")
    assert status == 0, stderr
    assert "disabled" not in {p["state"] for p in report["patches"]} and report["notes"] == []
    assert applied(report)
