"""The compatibility matrix: trt_compat's integration tests against every released Torch-TensorRT.

    python3 -m pip install nox
    nox -t matrix                                  # every release, one after another
    nox -s "release(tt='2.9.0')"                   # one release
    TRT_COMPAT_FREE_DISK=1 nox -t matrix           # delete the venvs the sessions built (~7 GB peak; others kept)
    TRT_COMPAT_MATRIX_SUITES=integration nox -t matrix   # skip the unit tests on each torch (~2 min per release)
    TRT_COMPAT_MATRIX_CAMPAIGN=0 nox -t matrix     # no differential campaign (see compat/DIFFERENTIAL.md for its times)
    TRT_COMPAT_MATRIX_CAMPAIGN_MODELS=smoke,reproducers,probes,generated \
    TRT_COMPAT_MATRIX_CAMPAIGN_ARGS="--paths compile --shapes static" nox -t matrix   # a narrower campaign
    nox -s table                                   # compat/results/*.json -> compat/TABLE.md (no venv needed)
    nox -s differential                            # compat/differential/*.json -> compat/DIFFERENTIAL.md

One session per release in tests/harness/releases.py, each with the torch that wheel pins, under the
offline harness (tests/harness/README.md). nox only orchestrates: the sessions use no nox-managed
virtualenv (venv_backend="none"); each builds its own with tests/harness/make_env.py (idempotent) in
TRT_COMPAT_MATRIX_VENVS (default .venvs-matrix/tt-<release>), then runs the unit tests and
tests/integration with that venv's python and writes compat/results/<release>.json
(tests/integration/test_matrix.py), then installs the campaign's model libraries pinned for that torch
(compat/model_libraries.py: timm and transformers with --no-deps, torch unchanged) and runs the differential campaign
(compat/campaign.py) in the same venv, on both paths (torch.compile; torch.export -> dynamo.compile, saved and
reloaded) with static and dynamic shapes: transformers, smoke models, reproducers, probes, generated graphs and timm
on every release, torchvision's models on CAMPAIGN_TORCHVISION, into compat/differential/<release>.json. The `table`
and `differential` sessions, which `-t matrix` runs last, render compat/TABLE.md and compat/DIFFERENTIAL.md.

CI does not run this: `bash tests/run.sh` (unit tests + 2.4.0 + 2.14.0) stays the fast suite.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import nox

from tests.harness import releases  # stdlib only (nox puts this file's folder on sys.path)
from tests.harness.make_env import MARKER

REPO = Path(__file__).resolve().parent

RESULTS = REPO / "compat" / "results"
VENVS = Path(os.environ.get("TRT_COMPAT_MATRIX_VENVS", REPO / ".venvs-matrix"))
FREE_DISK = os.environ.get("TRT_COMPAT_FREE_DISK", "0") == "1"
SUITES = os.environ.get("TRT_COMPAT_MATRIX_SUITES", "unit integration").split()
CAMPAIGN = os.environ.get("TRT_COMPAT_MATRIX_CAMPAIGN", "1") == "1"
# torchvision's zoo costs 2-6 min per release on two cores: the releases that span the torch versions and the
# passes that changed (2.4: torch 2.4 keeps buffers as get_attr; 2.5; 2.9; 2.12: fold_get_attr_item_calls; newest).
CAMPAIGN_TORCHVISION = ("2.4.0", "2.5.0", "2.9.0", "2.12.1", "2.14.0")
# Cheap families first: a session stopped half-way keeps whole models (each through both paths and both shapes).
CAMPAIGN_FAMILIES = "transformers,smoke,reproducers,probes,generated,timm"
# The other paths and shapes take the first 30 generated graphs; the torch.compile path with static shapes all 200.
CAMPAIGN_GENERATED_VARIANTS = "30"
# A narrower campaign when time is short (families and compat.campaign arguments); records not measured again keep
# their own commit, which compat/DIFFERENTIAL.md shows per release.
CAMPAIGN_MODELS = os.environ.get("TRT_COMPAT_MATRIX_CAMPAIGN_MODELS")
CAMPAIGN_ARGS = os.environ.get("TRT_COMPAT_MATRIX_CAMPAIGN_ARGS", "").split()
# The newest release first would fail fastest on a changed upstream, but the table reads in release order.
RELEASES = [r.wheels[0] for r in sorted(releases.RELEASES.values(), key=lambda r: r.version_tuple)]


def _disk_free_gib(path: Path) -> float:
    path.mkdir(parents=True, exist_ok=True)
    return shutil.disk_usage(path).free / 2**30


@nox.session(venv_backend="none", tags=["matrix"])
@nox.parametrize("tt", RELEASES)
def release(session: nox.Session, tt: str) -> None:
    """Build (or reuse) the release's venv, run the unit and integration tests, record the results."""
    venv = VENVS / f"tt-{tt}"
    session.log(f"{_disk_free_gib(VENVS):.1f} GiB free under {VENVS}; a release's venv takes 5-7 GiB")
    built_here = not (venv / MARKER).is_file()
    started = time.monotonic()
    session.run(sys.executable, "-m", "tests.harness.make_env", tt, str(venv), external=True)
    built = round(time.monotonic() - started, 1)
    python = str(venv / "bin" / "python")
    env = {**os.environ, "TRT_COMPAT_RESULTS_DIR": str(RESULTS)}
    outcome = {}
    try:
        # Both suites run even when the first fails: the integration run is what writes the results.
        for suite in SUITES:
            session.log(f"pytest tests/{suite} with {python}")
            done = subprocess.run([python, "-m", "pytest", f"tests/{suite}", "-q"], cwd=REPO, env=env)
            outcome[suite] = "passed" if done.returncode == 0 else f"failed (exit {done.returncode})"
        if CAMPAIGN:
            families = CAMPAIGN_MODELS or CAMPAIGN_FAMILIES + (",torchvision" if tt in CAMPAIGN_TORCHVISION else "")
            if {"timm", "transformers"} & set(families.split(",")):
                # timm and transformers pinned for this torch (compat/model_libraries.py), torch itself untouched.
                done = subprocess.run([python, "-m", "compat.model_libraries", "install"], cwd=REPO, env=env)
                outcome["model libraries"] = "passed" if done.returncode == 0 else f"failed (exit {done.returncode})"
            session.log(f"differential campaign ({families}; both paths, static and dynamic shapes) with {python}")
            command = [python, "-m", "compat.campaign", "--models", families]
            command += ["--generated-variants", CAMPAIGN_GENERATED_VARIANTS, *CAMPAIGN_ARGS]
            done = subprocess.run(command, cwd=REPO, env={**env, "HF_HUB_OFFLINE": "1"})
            outcome["campaign"] = "ran" if done.returncode == 0 else f"failed (exit {done.returncode})"
    finally:
        _stamp(tt, venv, built, outcome)
        if FREE_DISK and built_here:
            session.log(f"TRT_COMPAT_FREE_DISK=1: deleting {venv}, which this session built")
            shutil.rmtree(venv, ignore_errors=True)
    failed = {k: v for k, v in outcome.items() if v not in ("passed", "ran")}
    if failed:
        session.error(f"torch-tensorrt {tt}: {failed}")


def _stamp(tt: str, venv: Path, build_seconds: float, outcome: dict) -> None:
    """Add what only the orchestrator knows (suite outcomes, build cost) to the release's results file."""
    path = RESULTS / f"{releases.lookup(tt).line}.json"
    if not path.is_file():
        return  # the integration run never got as far as writing results; nothing to stamp
    data = json.loads(path.read_text())
    marker_path = venv / MARKER
    marker = json.loads(marker_path.read_text()) if marker_path.is_file() else {}
    data["suites"] = outcome
    data["build"] = {
        "session_build_seconds": build_seconds,  # ~0 when the venv was already built
        "build_seconds": marker.get("total_seconds"),
        "venv_gib": round(marker["bytes"] / 2**30, 2) if "bytes" in marker else None,
        "moved_aside": marker.get("moved_aside"),
    }
    path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")


@nox.session(venv_backend="none", tags=["matrix"])
def table(session: nox.Session) -> None:
    """compat/results/*.json -> compat/TABLE.md."""
    session.run(sys.executable, "-m", "compat.make_table", external=True)


@nox.session(venv_backend="none", tags=["matrix"])
def differential(session: nox.Session) -> None:
    """compat/differential/*.json -> compat/DIFFERENTIAL.md (fails while a mismatch is untriaged or a defect open)."""
    session.run(sys.executable, "-m", "compat.make_differential", external=True)
