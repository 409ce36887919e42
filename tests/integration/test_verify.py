"""`trt-compat verify` on the real wheel: every defect this release has is present without trt_compat and fixed with
it, exactly as the compatibility matrix measures it, and trt_compat is left as it was found."""

from __future__ import annotations

import pytest

from tests.harness import activate

_REASON = activate.unavailable_reason()
if _REASON:
    pytest.skip(_REASON, allow_module_level=True)

from tests.helpers.processes import cli_on_harness  # noqa: E402


def run_verify(setup="", **env):
    """`trt-compat verify --json` in a fresh interpreter on the real wheel, after ``setup`` (one line of Python)."""
    return cli_on_harness("verify", "--json", setup=setup, **env)


@pytest.fixture(scope="module")
def verified():
    return run_verify()


def test_verify_finds_every_defect_fixed_and_exits_0(verified):
    result = verified["result"]
    assert verified["status"] == 0 and result["ok"] is True, result
    assert result["mode"].startswith("dryrun on the CPU")
    for defect in result["defects"]:
        assert defect["with_trt_compat"]["status"] in ("absent", "n/a"), defect
        assert defect["without"]["status"] in ("present", "absent", "n/a"), defect


def test_verify_leaves_trt_compat_applied(verified):
    from trt_compat import _discovery

    assert set(verified["applied_after"]) <= {entry.name for entry in _discovery.discover()}
    assert verified["applied_after"], "verify left nothing applied"


def test_verify_agrees_with_the_defects_this_release_is_known_to_have(verified, release):
    """Each patch's reproducer says "present" exactly where the patch's range says the release needs a fix for it,
    or where upstream is already fine and the patch only guards (absent), never outside the range."""
    from trt_compat import _discovery

    owners = {defect.key: entry.patch for entry in _discovery.discover() for defect in entry.patch.defects}
    for defect in verified["result"]["defects"]:
        if defect["without"]["status"] == "present":
            assert owners[defect["key"]].needed_on(release), defect


def test_a_defect_whose_patch_is_disabled_says_so_in_its_verdict():
    verified = run_verify(TRT_COMPAT_DISABLE="tuple_pooling")
    result = verified["result"]
    ours = [d for d in result["defects"] if d["patch"] == "tuple_pooling" and d["without"]["status"] == "present"]
    assert ours, result["defects"]  # every release in the matrix has indices_tuple_node
    for defect in ours:
        assert defect["patch_state"] == "disabled"
        assert defect["verdict"] == "NOT FIXED: patch disabled by TRT_COMPAT_DISABLE", defect
    assert verified["status"] == 1 and result["ok"] is False


def test_strict_mode_with_a_moved_target_says_the_import_succeeded_and_which_patch_failed(release):
    """torch_tensorrt imports; tuple_partition_inputs' target is gone. verify still runs every reproducer and says
    what happened (it once said "import torch_tensorrt failed: PatchError")."""
    if release < (2, 3, 0):
        pytest.skip("2.2.0 has no construct_submodule_inputs: tuple_partition_inputs is not needed there")
    verified = run_verify(
        "import torch_tensorrt; trt_compat.revert(); "
        "del torch_tensorrt.dynamo.partitioning.construct_submodule_inputs; os.environ['TRT_COMPAT_STRICT'] = '1'"
    )
    result = verified["result"]
    assert verified["status"] == 1 and result["verified"] is True and result["defects"], result
    assert result["problems"] == [
        "import torch_tensorrt succeeded, but trt_compat (strict mode): patch tuple_partition_inputs could not be "
        "applied: skipped: target changed: torch_tensorrt.dynamo.partitioning.construct_submodule_inputs is missing or "
        "has an unexpected shape"
    ], result["problems"]
    assert not any("import torch_tensorrt failed" in problem for problem in result["problems"])
