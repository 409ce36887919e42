"""`trt-compat verify` on the real wheel: every defect this release has is present without trt_compat and fixed with
it, exactly as the compatibility matrix measures it, and trt_compat is left as it was found."""

from __future__ import annotations

import json

import pytest

from tests.harness import activate

_REASON = activate.unavailable_reason()
if _REASON:
    pytest.skip(_REASON, allow_module_level=True)

from tests.helpers.processes import REPO, run_python  # noqa: E402

SCRIPT = """
    import contextlib, io, json, sys
    sys.path.insert(0, {repo!r})
    from tests.harness import activate
    activate.prepare()
    import trt_compat
    from trt_compat.__main__ import main
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        status = main(["verify", "--json"])
    applied = [p.name for p in trt_compat.report().patches if p.state == "applied"]
    print(json.dumps({{"status": status, "result": json.loads(out.getvalue()), "applied_after": applied}}))
"""


@pytest.fixture(scope="module")
def verified():
    done = run_python(SCRIPT.format(repo=str(REPO)))
    assert done.returncode == 0, done.stderr[-4000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


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
