"""The contract every patch keeps, checked for each discovered patch on the real Torch-TensorRT installed here (the way
dd-trace-py's PatchTestCase runs the same permutations for every integration): apply twice (one layer), apply →
revert → apply, revert twice, revert before the import, and import order. What a patch changed is read from its own
undo log (``PatchContext.records``), never from a list of targets kept here, so a new patch is covered as it lands.
"""

from __future__ import annotations

import json

import pytest

from tests.harness import activate

_REASON = activate.unavailable_reason()
if _REASON:
    pytest.skip(_REASON, allow_module_level=True)

from tests.helpers.processes import REPO, run_python  # noqa: E402

# The patch modules by file name: importing trt_compat here would patch the imported torch_tensorrt at collection.
PATCHES = sorted(path.stem for path in (REPO / "patches").glob("*.py") if not path.stem.startswith("_"))


@pytest.fixture
def tc(monkeypatch):
    import trt_compat

    monkeypatch.delenv("TRT_COMPAT_STRICT", raising=False)
    monkeypatch.delenv("TRT_COMPAT_DISABLE", raising=False)
    trt_compat.revert()
    yield trt_compat
    trt_compat.revert()


def applied_context(tc, name):
    """The patch's context after trt_compat.apply(); skips where this release does not need the patch."""
    report = {p.name: p for p in tc.apply().patches}
    if report[name].state != "applied":
        pytest.skip(f"{name} is {report[name].state} on this release: {report[name].reason}")
    from trt_compat import _engine

    return _engine.context_of(name)


def snapshot(records):
    """What each recorded change put in place, and what was there before, by identity."""
    return [(change.kind, id(change.owner), change.name, change.original, change.installed) for change in records]


def _current(change):
    return change.owner[change.key] if change.kind == "item" else getattr(change.owner, change.name)


def assert_in_place_once(records):
    for change in records:
        if change.kind in ("attribute", "item"):
            current = _current(change)
            assert current is change.installed, f"{change.name} is not what the patch installed"
            assert current.__wrapped__ is change.original, f"{change.name} is wrapped more than once"
            assert not hasattr(change.original, "__trt_compat_patch__"), f"{change.name} wraps a wrapper of ours"
        else:
            assert sum(entry is change.installed for entry in change.owner.passes) == 1, change.name


def assert_restored(records):
    for change in records:
        if change.kind in ("attribute", "item"):
            assert _current(change) is change.original, f"{change.name} not restored"
        else:
            assert not any(entry is change.installed for entry in change.owner.passes), f"{change.name} left behind"
            if change.original is not None:
                assert any(entry is change.original for entry in change.owner.passes), f"{change.name} not restored"


@pytest.mark.parametrize("name", PATCHES)
def test_apply_twice_leaves_one_layer(tc, name):
    context = applied_context(tc, name)
    before = snapshot(context.records)
    assert before, f"{name} is applied but recorded no change"
    tc.apply()
    from trt_compat import _engine

    assert _engine.context_of(name) is context and snapshot(context.records) == before
    assert_in_place_once(context.records)


@pytest.mark.parametrize("name", PATCHES)
def test_apply_revert_apply_restores_and_reinstalls(tc, name):
    first = applied_context(tc, name)
    records = first.records
    tc.revert()
    assert_restored(records)
    assert not tc.is_applied(name)
    second = applied_context(tc, name)
    assert [(c.kind, c.name, c.original) for c in second.records] == [(c.kind, c.name, c.original) for c in records]
    assert_in_place_once(second.records)


@pytest.mark.parametrize("name", PATCHES)
def test_revert_twice_is_harmless(tc, name):
    records = applied_context(tc, name).records
    tc.revert()
    report = tc.revert()
    assert {p.name: p.state for p in report.patches}[name] == "reverted"
    assert_restored(records)


SCRIPT = """
    import json, sys
    sys.path.insert(0, {repo!r})
    from tests.harness import activate
    activate.prepare()
    order = sys.argv[1]
    if order == "trt_compat first":
        import trt_compat, torch_tensorrt
    elif order == "torch_tensorrt first":
        import torch_tensorrt, trt_compat
    else:  # a revert before torch_tensorrt is imported must not stop the hook from patching it
        import trt_compat
        trt_compat.revert()
        import torch_tensorrt
    print(json.dumps({{p["name"]: p["state"] for p in trt_compat.report_dict()["patches"]}}))
"""


def states_after(order):
    done = run_python(SCRIPT.format(repo=str(REPO)), order)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_import_order_and_an_early_revert_give_the_same_patches():
    first = states_after("trt_compat first")
    assert set(first) == set(PATCHES)
    assert states_after("torch_tensorrt first") == first
    assert states_after("revert before import") == first
