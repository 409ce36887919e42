"""``trt-compat demo``: every patch's demonstration on this torch, and the list of patches without one.

The demonstrations run in this process (torch only); the whole command runs in a fresh interpreter in
tests/unit/test_cli.py.
"""

import functools
import json
import types
from typing import List, Tuple

import pytest

from trt_compat import _discovery, demo
from trt_compat._discovery import Found
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


def test_a_failed_check_exits_1_and_the_json_carries_the_checks(toys, capsys):
    toys(toy("toy_wrong", demonstrate=shown("toy_wrong", ok=False)), toy("toy_silent"))
    assert demo.run_demo(as_json=True) == 1
    document = json.loads(capsys.readouterr().out)
    assert document["ok"] is False
    assert [(c["patch"], c["side"], c["ok"]) for c in document["checks"]] == [
        ("toy_wrong", "without", True),
        ("toy_wrong", "with", False),
    ]
    assert document["not_demonstrated"] == [{"patch": "toy_silent", "reason": demo.NEEDS_TORCH_TENSORRT}]
