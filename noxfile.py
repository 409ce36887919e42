"""The compatibility matrix: trt_compat's integration tests against every released Torch-TensorRT.

    python3 -m pip install nox
    nox -t matrix                                  # every release, one after another
    nox -s "release(tt='2.9.0')"                   # one release
    TRT_COMPAT_FREE_DISK=1 nox -t matrix           # delete each release's venv after its session (~7 GB peak)
    TRT_COMPAT_MATRIX_SUITES=integration nox -t matrix   # skip the unit tests on each torch (~2 min per release)
    nox -s table                                   # compat/results/*.json -> compat/TABLE.md (no venv needed)

One session per release in tests/harness/releases.py, each with the torch that wheel pins, under the
offline harness (tests/harness/README.md). nox only orchestrates: the sessions use no nox-managed
virtualenv (venv_backend="none"); each builds its own with tests/harness/make_env.py (idempotent) in
TRT_COMPAT_MATRIX_VENVS (default .venvs-matrix/tt-<release>), then runs the unit tests and
tests/integration with that venv's python and writes compat/results/<release>.json
(tests/integration/test_matrix.py). The `table` session, which `-t matrix` runs last, renders the table.

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

REPO = Path(__file__).resolve().parent

RESULTS = REPO / "compat" / "results"
VENVS = Path(os.environ.get("TRT_COMPAT_MATRIX_VENVS", REPO / ".venvs-matrix"))
FREE_DISK = os.environ.get("TRT_COMPAT_FREE_DISK", "0") == "1"
SUITES = os.environ.get("TRT_COMPAT_MATRIX_SUITES", "unit integration").split()
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
    finally:
        _stamp(tt, venv, built, outcome)
        if FREE_DISK:
            session.log(f"TRT_COMPAT_FREE_DISK=1: deleting {venv}")
            shutil.rmtree(venv, ignore_errors=True)
    failed = {k: v for k, v in outcome.items() if v != "passed"}
    if failed:
        session.error(f"torch-tensorrt {tt}: {failed}")


def _stamp(tt: str, venv: Path, build_seconds: float, outcome: dict) -> None:
    """Add what only the orchestrator knows (suite outcomes, build cost) to the release's results file."""
    path = RESULTS / f"{releases.lookup(tt).line}.json"
    if not path.is_file():
        return  # the integration run never got as far as writing results; nothing to stamp
    data = json.loads(path.read_text())
    marker_path = venv / ".trt-compat-harness.json"
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
