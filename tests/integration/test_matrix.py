"""The per-release compatibility matrix: every defect measured without and with trt_compat, the patch states
the real activation path reports, and a smoke test of three models, on whichever release is installed.

`noxfile.py` runs this (with the rest of tests/integration) once per released Torch-TensorRT. With
TRT_COMPAT_RESULTS_DIR set, the measurements are written to `<dir>/<release>.json` at the end of the
session; `compat/make_table.py` turns those files into compat/TABLE.md and the README's tables.

The defects are whatever the patches declare (``PATCH.defects``): each one's own reproducer, the same code
`trt-compat verify` runs. What is asserted, and what is only recorded:
- *with* trt_compat every defect is absent (or n/a), every smoke model goes through partitioning with Inputs that
  match the tensors that really flow, and through dryrun compilation where the release has it;
- *without* trt_compat a defect present on this release must be one its patch is applied for here (its range and
  feature check), and no reproducer may fail to run; the per-release facts are asserted by test_defects
  (UPSTREAM) and by each patch's own tests;
- the patch states of `import trt_compat; import torch_tensorrt` must match each patch's stated range;
- smoke runs *without* trt_compat are findings: recorded (model, level, error), not asserted.
"""

from __future__ import annotations

import datetime
import json
import logging
import os
import platform
import subprocess
import traceback
from pathlib import Path

import pytest

from tests.harness import activate

_REASON = activate.unavailable_reason()
if _REASON:
    pytest.skip(_REASON, allow_module_level=True)

import torch  # noqa: E402

from tests.helpers.models import SMOKE_MODELS, smoke_model  # noqa: E402
from tests.helpers.upstream import (  # noqa: E402
    acc_blocks,
    describe_tensors,
    dryrun_compile,
    expected_patch_states,
    export_and_lower,
    fast_partition,
    run_activation,
    states,
    tensors_flowing_into_blocks,
)
from trt_compat import _discovery  # noqa: E402
from trt_compat.probing import Probe  # noqa: E402
from trt_compat.verify import NOT_APPLICABLE, PRESENT, _run  # noqa: E402

RESULTS_ENV = "TRT_COMPAT_RESULTS_DIR"


def _declared_defects():
    """(patch, defect) for every defect a usable patch declares, in the patches' order."""
    return [(entry.patch, defect) for entry in _discovery.discover() if entry.usable for defect in entry.patch.defects]


RESULTS = {
    "defects": {defect.key: {"title": defect.title, "patch": patch.name} for patch, defect in _declared_defects()},
    "patches": {
        entry.name: {
            "title": entry.patch.title,
            "issue": entry.patch.issue,
            "affects": entry.patch.affects,
            "why": entry.patch.why,
        }
        for entry in _discovery.discover()
        if entry.usable
    },
    "smoke": {},
    "patch_states": {},
}


@pytest.fixture(scope="module", autouse=True)
def write_results(harness_info):
    """Write RESULTS for this release when the matrix asked for them, whatever the tests' outcomes."""
    yield
    folder = os.environ.get(RESULTS_ENV)
    if not folder:
        return
    import trt_compat

    RESULTS.update(
        release=harness_info["release"],
        date=datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d"),
        versions={
            "torch_tensorrt": harness_info["wheel"],
            "torch": torch.__version__,
            "tensorrt_standin": harness_info["tensorrt"],
            "trt_compat": trt_compat.__version__,
            "trt_compat_commit": _source_commit(),
            "python": platform.python_version(),
        },
        harness={"standin_extras": harness_info["standin_extras"], "dryrun": harness_info["row"].dryrun},
    )
    Path(folder).mkdir(parents=True, exist_ok=True)
    path = Path(folder) / f"{harness_info['release']}.json"
    path.write_text(json.dumps(RESULTS, indent=2, sort_keys=True) + "\n")


def _source_commit() -> str:
    """The checkout's commit the row was measured from, "+dirty" when the code under test (trt_compat,
    patches, tests, setup.py) differs from it, or "unknown". Results and benchmark files do not count: the
    matrix itself rewrites compat/results while it runs."""
    repo = str(Path(__file__).resolve().parents[2])

    def git(*args):
        return subprocess.run(["git", "-C", repo, *args], capture_output=True, text=True, timeout=30)

    try:
        head = git("rev-parse", "--short=12", "HEAD")
        changed = git(
            "status", "--porcelain", "--untracked-files=no", "--", "trt_compat", "patches", "tests", "setup.py"
        )
    except OSError:
        return "unknown"
    if head.returncode != 0 or changed.returncode != 0:
        return "unknown"
    return head.stdout.strip() + ("+dirty" if changed.stdout.strip() else "")


def _error(exc: BaseException) -> str:
    """One line naming the exception the upstream code raised (looking through torch.compile's wrapper)."""
    inner = getattr(exc, "inner_exception", None) or exc
    first = (str(inner).strip().splitlines() or [""])[0]
    return f"{type(inner).__name__}: {first[:300]}"


# ----------------------------------------------------------------------------------- defect measurements


def _measure(side):
    """Run every declared defect's reproducer; record and return {key: Outcome}."""
    probe = Probe()
    outcomes = {}
    for _patch, defect in _declared_defects():
        torch._dynamo.reset()
        outcome = _run(defect.check, probe)
        entry = RESULTS["defects"][defect.key]
        entry[side] = "not_applicable" if outcome.status == NOT_APPLICABLE else outcome.status
        if outcome.detail:
            entry[f"{side}_detail"] = outcome.detail
        outcomes[defect.key] = outcome
    return outcomes


def test_defects_without_trt_compat(upstream, release):
    """A defect this release has must be one its patch is applied for here; every reproducer must run."""
    outcomes = _measure("without")
    errors = {key: o.detail for key, o in outcomes.items() if o.status == "error"}
    assert not errors, f"reproducers that could not run on pristine upstream: {errors}"
    owner = {defect.key: patch for patch, defect in _declared_defects()}
    uncovered = [
        f"{key} (patch {owner[key].name}, {owner[key].affects})"
        for key, o in outcomes.items()
        if o.status == PRESENT and not owner[key].needed_on(release)
    ]
    assert not uncovered, f"defects present on {release} outside their patch's range: {uncovered}"


def test_defects_with_trt_compat(shim):
    outcomes = _measure("with")
    left = {key: f"{o.status}: {o.detail}" for key, o in outcomes.items() if o.status not in ("absent", NOT_APPLICABLE)}
    assert not left, f"defects not fixed with trt_compat: {left}"


# ------------------------------------------------------------------------------ the real activation path


def test_activation_path_records_patch_states_and_release_status(release, release_row, stated_ranges):
    """What a deployment's report says on this release (test_defects checks the states; this records them)."""
    report = run_activation()
    found = states(report)
    RESULTS["patch_states"] = found
    RESULTS["expected_patch_states"] = expected_patch_states(stated_ranges, release)
    RESULTS["release_status"] = report.get("release_status")
    assert found == expected_patch_states(stated_ranges, release), report
    # A release passes the matrix before it is listed as tested (trt_compat/_tested.py, verified rows).
    assert report["release_status"] == ("tested" if release_row.verified else "untested"), report


# ------------------------------------------------------------------------------------------ smoke models


def partition_level(model, x, release_row):
    """export -> decompose -> lower -> partition -> construct_submodule_inputs, checked against real tensors."""
    gm = export_and_lower(model, x, release_row)
    partitioned = fast_partition(gm, min_block_size=1)
    blocks = acc_blocks(partitioned)
    assert blocks, "nothing was accelerated"
    built = {name: Probe().block_inputs(partitioned, block, x) for name, block in blocks}
    flowing = tensors_flowing_into_blocks(partitioned, x)
    assert set(flowing) == set(built)
    for name in built:
        assert built[name] == describe_tensors(flowing[name]), (
            f"{name}: Inputs {built[name]}, flowing {describe_tensors(flowing[name])}"
        )
    with torch.no_grad():
        torch.testing.assert_close(partitioned(x), model(x))
    return len(blocks)


class _DynamoWarnings(logging.Handler):
    """Dynamo answers some backend errors (fake tensor exceptions) with a graph break and a warning only."""

    def __init__(self):
        super().__init__(logging.WARNING)
        self.messages = []

    def emit(self, record):
        self.messages.append(" ".join(record.getMessage().split())[:300])


def dryrun_level(model, x, monkeypatch):
    warnings = _DynamoWarnings()
    logger = logging.getLogger("torch._dynamo")
    logger.addHandler(warnings)
    try:
        out, partitioned = dryrun_compile(model, x, monkeypatch)
    except AssertionError as exc:
        raise AssertionError(f"{exc}; dynamo said: {warnings.messages[:1] or 'nothing'}") from None
    finally:
        logger.removeHandler(warnings)
    assert acc_blocks(partitioned), "nothing was accelerated"
    with torch.no_grad():
        torch.testing.assert_close(out, model(x))
    return len(acc_blocks(partitioned))


def run_smoke(level, name, side, release_row, monkeypatch):
    model, x = smoke_model(name)
    entry = {"status": "ok"}
    try:
        if level == "partition":
            entry["acc_blocks"] = partition_level(model, x, release_row)
        else:
            torch._dynamo.reset()
            try:
                entry["acc_blocks"] = dryrun_level(model, x, monkeypatch)
            finally:
                torch._dynamo.reset()
    except Exception as exc:
        frames = traceback.extract_tb(exc.__traceback__)
        entry = {"status": "fail", "error": _error(exc), "where": frames[-1].name}
    RESULTS["smoke"].setdefault(name, {})[f"{level}/{side}"] = entry
    return entry


LEVELS = ("partition", "dryrun")


def _skip_absent_dryrun(level, release_row):
    if level == "dryrun" and release_row.dryrun == "absent":
        pytest.skip(f"torch-tensorrt {release_row.line} has no dryrun option: partition level only")


@pytest.mark.parametrize("level", LEVELS)
@pytest.mark.parametrize("name", list(SMOKE_MODELS))
def test_smoke_without_trt_compat(name, level, upstream, release_row, request, constants_on_cpu):
    """A finding, not an assertion: whether upstream alone gets the model through (runs before the "with" tests,
    which compare against it)."""
    _skip_absent_dryrun(level, release_row)
    if level == "dryrun":
        request.getfixturevalue("dryrun_on_cpu")
    entry = run_smoke(level, name, "without", release_row, constants_on_cpu)
    print(f"{name} {level} without trt_compat: {entry}")


@pytest.mark.parametrize("level", LEVELS)
@pytest.mark.parametrize("name", list(SMOKE_MODELS))
def test_smoke_with_trt_compat(name, level, shim, release_row, request, constants_on_cpu):
    _skip_absent_dryrun(level, release_row)
    if level == "dryrun":
        request.getfixturevalue("dryrun_on_cpu")
    entry = run_smoke(level, name, "with", release_row, constants_on_cpu)
    if entry["status"] == "fail":
        without = RESULTS["smoke"].get(name, {}).get(f"{level}/without", {})
        if without.get("error") == entry["error"]:
            # The same upstream failure with and without trt_compat: a defect it does not claim to fix.
            entry["status"] = "upstream_fail"
            pytest.xfail(f"upstream fails the same way without trt_compat: {entry['error']}")
    assert entry["status"] == "ok", entry


# --------------------------------------------------------------------------------------- a real model: GoogLeNet


def googlenet_blocks():
    """TensorRT blocks of torchvision's GoogLeNet (random weights, 64x64) in a dryrun torch.compile, and whether its
    output equals eager bit for bit; or the error (first line)."""
    import torchvision

    from trt_compat.probing import NotApplicable

    torch.manual_seed(0)
    model = torchvision.models.googlenet(weights=None, aux_logits=False, init_weights=False).eval()
    x = torch.randn(1, 3, 64, 64)
    probe = Probe()
    try:
        compiled = probe.compile(model, x)
    except NotApplicable as exc:
        return {"status": "n/a", "error": str(exc)}
    except Exception as exc:
        return {"status": "fail", "error": _error(exc)}
    with torch.no_grad():
        difference = probe.same(compiled.output, model(x))
    return {"status": "ok" if difference is None else "wrong", "blocks": len(compiled.blocks), "error": difference}


@pytest.mark.parametrize("side", ["without", "with"])
def test_googlenet_blocks(side, request, constants_on_cpu):
    """Recorded for the table; with trt_compat GoogLeNet is one TensorRT block wherever upstream's dryrun runs."""
    pytest.importorskip("torchvision", reason="torchvision is not installed in this environment")
    request.getfixturevalue("shim" if side == "with" else "upstream")
    entry = googlenet_blocks()
    RESULTS.setdefault("googlenet", {})[side] = entry
    print(f"googlenet {side} trt_compat: {entry}")
    if side == "without" or entry["status"] == "n/a":
        return
    without = RESULTS["googlenet"].get("without", {})
    if entry["status"] == "fail" and without.get("error") == entry["error"]:
        pytest.xfail(f"upstream dryrun fails the same way without trt_compat: {entry['error']}")
    assert entry["status"] == "ok" and entry["blocks"] == 1, entry


# ----------------------------------------------------------------------------------------------- GPU tier


def test_gpu_tier_recognises_the_harness_standin():
    """tests/gpu must skip under this harness even though `import tensorrt` succeeds here."""
    from tests.gpu import gpu_env

    assert "stand-in" in (gpu_env.tensorrt_problem() or ""), gpu_env.tensorrt_problem()
    assert "stand-in" in (gpu_env.unavailable_reason() or "")
