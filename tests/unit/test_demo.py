"""``trt-compat demo``: every patch's demonstration on this torch, the list of patches without one, and the verdict.

The demonstrations run in this process (torch only); the whole command, which also applies what the environment
needs, runs in a fresh interpreter in tests/unit/test_cli.py.
"""

import functools
import json
import types
from typing import Dict, List, Tuple

import pytest

from trt_compat import _discovery, demo
from trt_compat._discovery import Found
from trt_compat._report import APPLIED, DISABLED, NOT_INSTALLED, NOT_NEEDED, PENDING, SKIPPED, PatchStatus, Report
from trt_compat.demo import WITH, WITHOUT, Check
from trt_compat.patching import Patch

DEMONSTRATED = [f.name for f in _discovery.discover() if f.usable and callable(getattr(f.module, "demonstrate", None))]


@functools.cache
def demonstration(name: str) -> Tuple[Tuple[str, ...], Tuple[Check, ...]]:
    """What patch ``name``'s demonstration says, and its checks (run once per test session)."""
    module = next(f.module for f in _discovery.discover() if f.name == name)
    lines: List[str] = []
    checks = module.demonstrate(lines.append)
    return tuple(lines), tuple(checks)


def test_the_demonstrations_the_readme_and_changelog_describe_are_there():
    described = {
        "keep_input_mutations",
        "keep_empty_strided_dtype",
        "keep_module_state_at_compile",
        "fold_only_constants",
        "convertible_pools",
        "tuple_pooling",
        "view_to_reshape_metadata",
    }
    assert described <= set(DEMONSTRATED)


@pytest.mark.parametrize("name", DEMONSTRATED)
def test_each_fix_is_exact_on_this_torch(name):
    lines, checks = demonstration(name)
    assert lines and all(isinstance(check, Check) and check.patch == name for check in checks), checks
    mine = [check for check in checks if check.side == WITH]
    assert mine, f"{name}: no check of trt_compat's own result"
    assert all(check.ok for check in mine), [check for check in mine if not check.ok]
    assert any("eager" in check.check for check in mine), f"{name}: nothing compared with eager"


@pytest.mark.parametrize("name", DEMONSTRATED)
def test_each_stand_in_shows_the_defect(name):
    """Each demonstration's "without" half must differ from eager (or show the defect's symptom) on this torch:
    were a change of torch to make a stand-in correct, its demonstration would pass without proving anything."""
    _, checks = demonstration(name)
    upstream = [check for check in checks if check.side == WITHOUT]
    assert upstream, f"{name}: no check that its stand-in for upstream shows the defect"
    assert all(check.ok for check in upstream), [check for check in upstream if not check.ok]


# ---------------------------------------------------------------------------------------------------------------
# The core: discovery, patches without a demonstration, a demonstration that fails or raises


def toy(name: str, **functions) -> Found:
    module = types.ModuleType(f"trt_compat.patches.{name}")
    module.PATCH = Patch(name, f"{name}'s fix", None, "2.2.0", None, "test")
    module.apply = lambda ctx: None
    for attribute, function in functions.items():
        setattr(module, attribute, function)
    return Found(name, module.PATCH, module)


def shown(name: str, ok: bool = True):
    def demonstrate(say):
        say(f"upstream: {name} goes wrong")
        return [Check(name, WITHOUT, "defect shown", True), Check(name, WITH, "bit-identical to eager", ok)]

    return demonstrate


def raises(say):
    raise RuntimeError("a broken demonstration")


@pytest.fixture
def toys(monkeypatch):
    """Discovery finds only the toy patches given."""

    def install(*found: Found) -> None:
        monkeypatch.setattr(_discovery, "discover", lambda: list(found))

    return install


def test_a_patch_without_demonstrate_is_listed_as_needing_torch_tensorrt(toys):
    toys(toy("toy_shown", demonstrate=shown("toy_shown")), toy("toy_silent"), toy("toy_typo", demonstrat=shown("x")))
    lines: List[str] = []
    checks, missing = demo.run_demonstrations(lines.append)
    assert [c.patch for c in checks] == ["toy_shown", "toy_shown"]
    assert lines[0] == "1. toy_shown: toy_shown's fix" and lines[1] == "   upstream: toy_shown goes wrong"
    assert {m.patch: m.reason for m in missing} == {
        "toy_silent": "needs Torch-TensorRT: run `trt-compat verify`",
        "toy_typo": "needs Torch-TensorRT: run `trt-compat verify` (found 'demonstrat': a misspelling?)",
    }


def test_a_demonstration_that_raises_is_a_failed_check_and_the_others_still_run(toys):
    toys(toy("toy_broken", demonstrate=raises), toy("toy_shown", demonstrate=shown("toy_shown")))
    checks, _ = demo.run_demonstrations(lambda line: None)
    assert [(c.patch, c.ok) for c in checks] == [("toy_broken", False), ("toy_shown", True), ("toy_shown", True)]
    assert checks[0].detail == "RuntimeError: a broken demonstration"


def test_long_lines_are_wrapped_under_their_heading(toys):
    def talkative(say):
        say("word " * 60)
        return []

    toys(toy("toy_long", demonstrate=talkative))
    lines: List[str] = []
    demo.run_demonstrations(lines.append)
    assert max(map(len, lines)) <= demo.WIDTH and len(lines) > 3
    assert lines[1].startswith("   word") and all(line.startswith("     word") for line in lines[2:-1])


NOT_INSTALLED_REPORT = Report(
    {"torch_tensorrt": None, "torch": "2.13.0", "tensorrt": None},
    [PatchStatus("toy_shown", "", None, ">=2.2.0", NOT_INSTALLED, "torch-tensorrt is not installed")],
)


def test_a_failed_check_exits_1_and_the_json_carries_checks_and_verdict(toys, monkeypatch, capsys):
    toys(toy("toy_wrong", demonstrate=shown("toy_wrong", ok=False)), toy("toy_silent"))
    monkeypatch.setattr(demo, "_applied_report", lambda: (NOT_INSTALLED_REPORT, ""))
    assert demo.run_demo(as_json=True) == 1
    document = json.loads(capsys.readouterr().out)
    assert document["ok"] is False
    assert [(c["patch"], c["side"], c["ok"]) for c in document["checks"]] == [
        ("toy_wrong", "without", True),
        ("toy_wrong", "with", False),
    ]
    assert document["not_demonstrated"] == [{"patch": "toy_silent", "reason": demo.NEEDS_TORCH_TENSORRT}]
    assert document["verdict"].startswith("verdict: FAILED: trt_compat's fix differs from eager on torch 2.13.0")
    assert "TRT_COMPAT_DISABLE=toy_wrong" in document["verdict"]
    assert document["report"]["patches"][0]["state"] == NOT_INSTALLED


def test_the_text_ends_with_the_verdict(toys, monkeypatch, capsys):
    toys(toy("toy_shown", demonstrate=shown("toy_shown")))
    monkeypatch.setattr(demo, "_applied_report", lambda: (NOT_INSTALLED_REPORT, ""))
    assert demo.run_demo() == 0
    lines = capsys.readouterr().out.splitlines()
    assert "all 2 checks passed" in lines and "== this environment (trt-compat report)" in lines
    assert lines[-1].startswith("verdict: every transformation checked here is exact (2 checks of 1 patch)")


# ---------------------------------------------------------------------------------------------------------------
# The verdict


PASSED = [Check("a", WITHOUT, "defect shown", True), Check("a", WITH, "bit-identical to eager", True)]


def installed(states: Dict[str, str], version: str = "2.4.0", release_status: str = "tested") -> Report:
    reasons = {PENDING: "import torch_tensorrt failed: FileNotFoundError: Could not find libnvinfer.so.10"}
    return Report(
        {"torch_tensorrt": version, "torch": "2.4.1", "tensorrt": None},
        [PatchStatus(name, "", None, "", state, reasons.get(state, "")) for name, state in states.items()],
        release_status=release_status,
        newest_tested="2.14.0",
    )


def test_verdict_without_torch_tensorrt():
    assert demo.verdict(PASSED, NOT_INSTALLED_REPORT, needed=[]) == (
        "verdict: every transformation checked here is exact (2 checks of 1 patch); torch-tensorrt is not "
        "installed: install it next to trt_compat and run `trt-compat verify`, which reproduces each defect on that "
        "release without and with trt_compat"
    )


def test_verdict_with_every_needed_patch_applied():
    report = installed({"a": APPLIED, "b": APPLIED, "c": NOT_NEEDED})
    assert demo.verdict(PASSED, report, needed=["a", "b"]) == (
        "verdict: every transformation checked here is exact (2 checks of 1 patch); torch-tensorrt 2.4.0 needs 2 of "
        "the 3 patches, all applied: run `trt-compat verify` to reproduce each of its defects without and with them"
    )
    assert "needs none of trt_compat's patches" in demo.verdict(PASSED, installed({"c": NOT_NEEDED}), needed=[])
    untested = demo.verdict(PASSED, installed({"a": APPLIED}, "2.15.0", "untested"), needed=["a"])
    assert "torch-tensorrt 2.15.0 (newer than the tested releases, up to 2.14.0) needs 1 of the 1 patches" in untested


@pytest.mark.parametrize(
    "states, expected",
    [
        (
            {"a": PENDING, "b": PENDING},
            "NOTHING PATCHED: torch-tensorrt 2.4.0 needs 2 of the 2 patches, but import torch_tensorrt failed: "
            "FileNotFoundError: Could not find libnvinfer.so.10; every transformation checked here is exact",
        ),
        (
            {"a": SKIPPED, "b": DISABLED},
            "NOT IN PLACE: torch-tensorrt 2.4.0 needs 2 of the 2 patches, and these are not in place: a skipped, b "
            "disabled by TRT_COMPAT_DISABLE (their defects are still there); every transformation checked here",
        ),
    ],
    ids=["import_failed", "skipped_and_disabled"],
)
def test_verdict_says_a_needed_patch_not_in_place_first(states, expected):
    said = demo.verdict(PASSED, installed(states), needed=["a", "b"])
    assert said.startswith("verdict: " + expected), said
    assert said.endswith("run `trt-compat verify`"), said


def test_verdict_says_failed_checks_first():
    wrong = [Check("a", WITHOUT, "defect shown", True), Check("a", WITH, "bit-identical to eager", False)]
    said = demo.verdict(wrong, installed({"a": APPLIED}), needed=["a"])
    assert said.startswith("verdict: FAILED: trt_compat's fix differs from eager on torch 2.4.1 (a): set ")
    assert "every transformation" not in said and said.endswith("without and with them")
    unshown = [Check("a", WITHOUT, "defect shown", False), Check("a", WITH, "bit-identical to eager", True)]
    said = demo.verdict(unshown, NOT_INSTALLED_REPORT, needed=[])
    assert said.startswith("verdict: NOT SHOWN: the stand-in for upstream no longer shows the defect on torch 2.13.0")


def test_verdict_carries_strict_modes_refusal():
    refusal = "trt_compat (strict mode): patch a could not be applied: skipped: target changed: gone"
    said = demo.verdict(PASSED, installed({"a": SKIPPED}), needed=["a"], refusal=refusal)
    assert said.startswith(f"verdict: {refusal}; NOT IN PLACE: ")
