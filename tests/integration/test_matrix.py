"""The per-release compatibility matrix: every defect measured without and with trt_compat, the patch states
the real activation path reports, and a smoke test of three models, on whichever release is installed.

`noxfile.py` runs this (with the rest of tests/integration) once per released Torch-TensorRT. With
TRT_COMPAT_RESULTS_DIR set, the measurements are written to `<dir>/<release>.json` at the end of the
session; `compat/make_table.py` turns those files into compat/TABLE.md.

What is asserted, and what is only recorded:
- *with* trt_compat every defect is absent, every smoke model goes through partitioning with Inputs that
  match the tensors that really flow, and through dryrun compilation where the release has it;
- *without* trt_compat the measured facts must equal this release's row in test_defects.UPSTREAM when
  there is one (a release without a row fails here: measure it, then add the row);
- the patch states of `import trt_compat; import torch_tensorrt` must match each patch's documented range;
- smoke runs *without* trt_compat are findings: recorded (model, level, error), not asserted.
"""
from __future__ import annotations

import datetime
import json
import logging
import os
import platform
import re
import subprocess
import sys
import traceback
from pathlib import Path

import pytest

import activate  # tests/harness, put on sys.path by conftest

_REASON = activate.unavailable_reason()
if _REASON:
    pytest.skip(_REASON, allow_module_level=True)

import torch  # noqa: E402
from torch_tensorrt.dynamo import partitioning  # noqa: E402

import test_defects as td  # noqa: E402  (same directory; the shared models and helpers)
from smoke_models import SMOKE_MODELS, smoke_model  # noqa: E402  (same directory; also used by tests/gpu)

RESULTS_ENV = "TRT_COMPAT_RESULTS_DIR"

# The defects of the table: key -> (title, the patch that fixes it).
DEFECTS = {
    "view_metadata": ("#3221 view_to_reshape puts view metadata on the wrong node (or drops it)",
                      "view_to_reshape_metadata"),
    "ceil_pool_boundary": ("#3185 fused max_pool2d after a ceil_mode pool carries a tuple (or no) val into "
                           "construct_submodule_inputs", "tuple_partition_inputs + tuple_pooling"),
    "stale_pass_meta": ("#3185 a stale tuple val left by a registered lowering pass reaches "
                        "construct_submodule_inputs", "tuple_partition_inputs"),
    "indices_tuple_node": ("#3185 a max pool whose indices are used reaches partitioning as a tuple-returning "
                           "node", "tuple_pooling"),
}

RESULTS = {"defects": {key: {"title": title, "patch": patch} for key, (title, patch) in DEFECTS.items()},
           "smoke": {}, "upstream": {}, "patch_states": {}}


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
        harness={"standin_extras": harness_info["standin_extras"],
                 "dryrun": harness_info["row"].dryrun},
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
        changed = git("status", "--porcelain", "--untracked-files=no", "--", "trt_compat", "patches", "tests",
                      "setup.py")
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


def measure_view_metadata(release_row):
    """'present' / 'absent' / 'not_applicable' (the release has no view_to_reshape pass), plus the mismatches.

    Applicability comes from the release row, not from the pass list, which trt_compat changes.
    """
    if not release_row.has_view_to_reshape:
        return "not_applicable", []
    gm = td.export_and_lower(td.make_model(td.ThreeViews), td.view_input(), release_row)
    bad = td.view_mismatches(gm)
    return ("present" if bad else "absent"), bad


def lowered_ceil_pool(release_row):
    return td.export_and_lower(td.make_model(td.ConvCeilPool), td.image_input(), release_row)


def pool_meta_kind(gm):
    (pool,) = td.max_pool_nodes(gm)
    val = pool.meta.get("val")
    return "missing" if val is None else "tuple" if isinstance(val, tuple) else "tensor"


def block_inputs(partitioned, block, x):
    """(shape, dtype) of each Input the release builds for an accelerated block, the way its compiler does."""
    if hasattr(partitioning, "construct_submodule_inputs"):
        return td.describe_inputs(partitioning.construct_submodule_inputs(block))
    # 2.2.0 runs the parent module on the sample inputs with a hook on the block (here on the CPU).
    import torch_tensorrt

    inputs = partitioning.get_submod_inputs(partitioned, block, torch_tensorrt.Input.from_tensors([x]), "cpu")
    return [(tuple(i.shape), i.torch_dtype) for i in inputs]


def boundary_inputs_error(gm, x):
    """None when every accelerated block's Inputs match the tensors that flow into it, else the problem."""
    partitioned = td.partition(gm)
    try:
        built = {name: block_inputs(partitioned, block, x) for name, block in td.acc_blocks(partitioned)}
    except Exception as exc:  # the defect: upstream raises here
        return _error(exc)
    flowing = td.tensors_flowing_into_blocks(partitioned, x)
    for name, inputs in built.items():
        if inputs != td.describe_tensors(flowing.get(name, [])):
            return f"{name}: Inputs {inputs} but {td.describe_tensors(flowing.get(name, []))} flow"
    return None


def measure_ceil_pool_boundary(release_row):
    return boundary_inputs_error(lowered_ceil_pool(release_row), td.image_input())


def measure_stale_pass(release_row):
    """Register a lowering pass that leaves the pre-fix tuple val; (val kept?, boundary error)."""
    td.aten_passes._aten_lowering_pass(td.make_pool_meta_stale)
    try:
        gm = lowered_ceil_pool(release_row)
    finally:
        passes = activate.post_lowering_manager().passes
        td.aten_passes._remove_lowering_pass(index=next(i for i, p in enumerate(passes) if p is td.make_pool_meta_stale))
    kept = pool_meta_kind(gm) == "tuple"
    return kept, boundary_inputs_error(gm, td.image_input())


TUPLE_POOL_OPS = {getattr(torch.ops.aten, name).default for name in (
    "max_pool1d_with_indices", "max_pool2d_with_indices", "max_pool3d_with_indices",
    "adaptive_max_pool1d", "adaptive_max_pool2d", "adaptive_max_pool3d") if hasattr(torch.ops.aten, name)}


def tuple_pool_nodes(gm):
    return [n.name for n in gm.graph.nodes if n.op == "call_function" and n.target in TUPLE_POOL_OPS]


def measure_indices_tuple_node(release_row):
    gm = td.export_and_lower(td.make_model(td.PoolIndicesViews), td.image_input(), release_row)
    return tuple_pool_nodes(gm)


def record_defect(key, side, status, detail=None):
    entry = RESULTS["defects"][key]
    entry[side] = status
    if detail:
        entry[f"{side}_detail"] = detail


def test_defects_without_trt_compat(upstream, release_row, dryrun_facts):
    """Measure every UPSTREAM fact and defect on pristine upstream; compare with the release's row."""
    view_status, view_bad = measure_view_metadata(release_row)
    record_defect("view_metadata", "without", view_status, view_bad)

    ceil_error = measure_ceil_pool_boundary(release_row)
    record_defect("ceil_pool_boundary", "without", "present" if ceil_error else "absent", ceil_error)

    stale_kept, stale_error = measure_stale_pass(release_row)
    record_defect("stale_pass_meta", "without", "present" if stale_error else "absent", stale_error)

    tuple_nodes = measure_indices_tuple_node(release_row)
    record_defect("indices_tuple_node", "without", "present" if tuple_nodes else "absent", tuple_nodes)

    measured = {
        "view_pass": "view_to_reshape" in td.post_lowering_pass_names(),
        "view_mismatches": len(view_bad),
        "pool_meta_after_lowering": pool_meta_kind(lowered_ceil_pool(release_row)),
        "registered_stale_pass_survives": stale_kept,
        "ceil_pool_partition_error": ceil_error,
        **dryrun_facts,
    }
    RESULTS["upstream"] = measured
    row = td.UPSTREAM.get(release_row.line)
    assert row is not None, (f"no UPSTREAM row for torch-tensorrt {release_row.line} in test_defects.py; "
                             f"measured: {measured}")
    assert measured["view_pass"] == row.view_pass == release_row.has_view_to_reshape
    assert measured["view_mismatches"] == row.view_mismatches, view_bad
    assert measured["pool_meta_after_lowering"] == row.pool_meta_after_lowering
    assert measured["registered_stale_pass_survives"] == row.registered_stale_pass_survives
    if row.boundary_error is None:
        assert ceil_error is None, ceil_error
    else:
        assert ceil_error and re.search(row.boundary_error, ceil_error), ceil_error
    if "dryrun_ceil_pool_error" in dryrun_facts:
        error = dryrun_facts["dryrun_ceil_pool_error"]
        if row.dryrun_ceil_pool_error is None:
            assert error is None, error
        else:
            assert error and re.search(row.dryrun_ceil_pool_error, error), error
        assert dryrun_facts["dryrun_indices_ok"] == row.dryrun_indices_ok


@pytest.fixture
def dryrun_facts(request, release_row, upstream):
    """The two dryrun facts of UPSTREAM, measured on pristine upstream (empty where dryrun is absent)."""
    if release_row.dryrun == "absent":
        return {}
    request.getfixturevalue("dryrun_on_cpu")
    monkeypatch = request.getfixturevalue("monkeypatch")
    facts = {}
    for key, cls in (("dryrun_ceil_pool_error", td.ConvCeilPool), ("dryrun_indices_ok", td.PoolIndicesViews)):
        torch._dynamo.reset()
        model, x = td.make_model(cls), td.image_input()
        try:
            out, _ = td.dryrun_compile(model, x, monkeypatch)
            torch.testing.assert_close(out, model(x))
            error = None
        except Exception as exc:
            error = _error(exc)
        finally:
            torch._dynamo.reset()
        facts[key] = error if key == "dryrun_ceil_pool_error" else error is None
    return facts


def test_defects_with_trt_compat(shim, release_row):
    view_status, view_bad = measure_view_metadata(release_row)
    record_defect("view_metadata", "with", view_status, view_bad)
    ceil_error = measure_ceil_pool_boundary(release_row)
    record_defect("ceil_pool_boundary", "with", "present" if ceil_error else "absent", ceil_error)
    _, stale_error = measure_stale_pass(release_row)
    record_defect("stale_pass_meta", "with", "present" if stale_error else "absent", stale_error)
    tuple_nodes = measure_indices_tuple_node(release_row)
    record_defect("indices_tuple_node", "with", "present" if tuple_nodes else "absent", tuple_nodes)

    assert view_status != "present", view_bad
    assert ceil_error is None, ceil_error
    assert stale_error is None, stale_error
    assert tuple_nodes == []


# ------------------------------------------------------------------------------ the real activation path


def test_activation_path_records_patch_states_and_release_status(release, release_row):
    """What a deployment's report says on this release (test_defects checks the states; this records them)."""
    report = td.run_activation()
    found = td.states(report)
    RESULTS["patch_states"] = found
    RESULTS["expected_patch_states"] = td.expected_patch_states(release)
    RESULTS["release_status"] = report.get("release_status")
    assert found == td.expected_patch_states(release), report
    # A release passes the matrix before it is listed as tested (trt_compat/_tested.py, verified rows).
    assert report["release_status"] == ("tested" if release_row.verified else "untested"), report


# ------------------------------------------------------------------------------------------ smoke models


def partition_level(model, x, release_row):
    """export -> decompose -> lower -> partition -> construct_submodule_inputs, checked against real tensors."""
    gm = td.export_and_lower(model, x, release_row)
    partitioned = td.fast_partition(gm, min_block_size=1)
    blocks = td.acc_blocks(partitioned)
    assert blocks, "nothing was accelerated"
    built = {name: block_inputs(partitioned, block, x) for name, block in blocks}
    flowing = td.tensors_flowing_into_blocks(partitioned, x)
    assert set(flowing) == set(built)
    for name in built:
        assert built[name] == td.describe_tensors(flowing[name]), (
            f"{name}: Inputs {built[name]}, flowing {td.describe_tensors(flowing[name])}")
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
        out, partitioned = td.dryrun_compile(model, x, monkeypatch)
    except AssertionError as exc:
        raise AssertionError(f"{exc}; dynamo said: {warnings.messages[:1] or 'nothing'}") from None
    finally:
        logger.removeHandler(warnings)
    assert td.acc_blocks(partitioned), "nothing was accelerated"
    with torch.no_grad():
        torch.testing.assert_close(out, model(x))
    return len(td.acc_blocks(partitioned))


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
        if "NVIDIA driver" in str(exc) and any(f.filename.endswith("constant_folding.py") for f in frames):
            # 2.2-2.4's constant_fold pass moves every folded constant to CUDA (`constant.cuda()`): models
            # with foldable constants (any Linear: t(weight)) cannot be lowered on this GPU-less harness.
            entry["status"] = "needs_gpu"
    RESULTS["smoke"].setdefault(name, {})[f"{level}/{side}"] = entry
    if entry["status"] == "needs_gpu":
        pytest.skip(f"{name}: torch-tensorrt {release_row.line}'s constant folding moves constants to CUDA; "
                    "the GPU tier (tests/gpu) covers it")
    return entry


LEVELS = ("partition", "dryrun")


def _skip_absent_dryrun(level, release_row):
    if level == "dryrun" and release_row.dryrun == "absent":
        pytest.skip(f"torch-tensorrt {release_row.line} has no dryrun option: partition level only")


@pytest.mark.parametrize("level", LEVELS)
@pytest.mark.parametrize("name", list(SMOKE_MODELS))
def test_smoke_without_trt_compat(name, level, upstream, release_row, request, monkeypatch):
    """A finding, not an assertion: whether upstream alone gets the model through (runs before the "with" tests,
    which compare against it)."""
    _skip_absent_dryrun(level, release_row)
    if level == "dryrun":
        request.getfixturevalue("dryrun_on_cpu")
    entry = run_smoke(level, name, "without", release_row, monkeypatch)
    print(f"{name} {level} without trt_compat: {entry}")


@pytest.mark.parametrize("level", LEVELS)
@pytest.mark.parametrize("name", list(SMOKE_MODELS))
def test_smoke_with_trt_compat(name, level, shim, release_row, request, monkeypatch):
    _skip_absent_dryrun(level, release_row)
    if level == "dryrun":
        request.getfixturevalue("dryrun_on_cpu")
    entry = run_smoke(level, name, "with", release_row, monkeypatch)
    if entry["status"] == "fail":
        without = RESULTS["smoke"].get(name, {}).get(f"{level}/without", {})
        if without.get("error") == entry["error"]:
            # The same upstream failure with and without trt_compat: a defect it does not claim to fix.
            entry["status"] = "upstream_fail"
            pytest.xfail(f"upstream fails the same way without trt_compat: {entry['error']}")
    assert entry["status"] == "ok", entry


# ----------------------------------------------------------------------------------------------- GPU tier


def test_gpu_tier_recognises_the_harness_standin():
    """tests/gpu must skip under this harness even though `import tensorrt` succeeds here."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "gpu"))
    try:
        import gpu_env
    finally:
        sys.path.pop(0)
    assert "stand-in" in (gpu_env.tensorrt_problem() or ""), gpu_env.tensorrt_problem()
    assert "stand-in" in (gpu_env.unavailable_reason() or "")
