#!/usr/bin/env python3
"""Build a venv in which a real Torch-TensorRT release's Python compiler runs on this GPU-less machine.

    python3 -m tests.harness.make_env RELEASE VENV_DIR        e.g.  2.4.0 .venvs/tt-2.4.0   (from the repository root)

Steps (each timed):
  1. create VENV_DIR with the python running this script;
  2. install the release's exact torch (the CUDA build: it imports without a GPU, and torch_tensorrt
     refuses CPU-only torch builds at several places), the wheel's other runtime deps, the torchvision
     built for that torch (--no-deps), the repo itself with its [test] extra (pytest, hypothesis);
  3. install torch-tensorrt==RELEASE with --no-deps: its TensorRT requirements are multi-GB native
     wheels that cannot load here; tests/harness/standin replaces the `tensorrt` module instead;
  4. move the release's native .so files into a sibling folder of the package
     (site-packages/torch_tensorrt.moved-aside/), so that it stays visible what was removed and why;
  5. import torch_tensorrt once through tests/harness/activate.py as a smoke test;
  6. write a marker file; a later run with the same recipe only checks the marker and returns.

Stdlib only: this runs before any venv exists.
"""

from __future__ import annotations

import argparse
import glob
import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from tests.harness import releases

HARNESS = Path(__file__).resolve().parent
REPO = HARNESS.parent.parent

MARKER = ".trt-compat-harness.json"
MOVED_DIR = "torch_tensorrt.moved-aside"
# Bump when the build steps change in a way that should rebuild existing venvs.
RECIPE_REVISION = 1


def log(msg: str) -> None:
    print(f"[make_env] {msg}", flush=True)


def run(cmd: list, **kw) -> subprocess.CompletedProcess:
    log("$ " + " ".join(str(c) for c in cmd))
    return subprocess.run([str(c) for c in cmd], check=True, **kw)


def requirements(release: releases.Release) -> list:
    # numpy appears both as a runtime dep and as the constraint; keep the constrained spelling only.
    deps = [d for d in release.runtime_deps if d.split("<")[0].split(">")[0].split("=")[0] != "numpy"]
    return [release.torch_requirement or f"torch=={release.torch}", release.numpy, *deps]


def recipe(release: releases.Release, wheel: str) -> dict:
    data = {
        "revision": RECIPE_REVISION,
        "release": release.line,
        "wheel": wheel,
        "requirements": requirements(release),
        "torchvision": release.torchvision,
        "move_aside": list(release.move_aside),
        "python": sys.version.split()[0],
    }
    data["hash"] = hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:16]
    return data


def disk_usage(path: Path) -> int:
    total = 0
    for root, _dirs, files in os.walk(path):
        for name in files:
            try:
                total += os.lstat(os.path.join(root, name)).st_size
            except OSError:
                pass
    return total


def up_to_date(venv: Path, want: dict) -> bool:
    marker = venv / MARKER
    if not marker.is_file() or not (venv / "bin" / "python").exists():
        return False
    try:
        have = json.loads(marker.read_text())
    except ValueError:
        return False
    if have.get("hash") != want["hash"]:
        log(f"recipe changed ({have.get('hash')} -> {want['hash']}): rebuilding")
        return False
    # A later `pip install torch-tensorrt` would silently bring the native files back.
    pkg = Path(have.get("package_dir", ""))
    if not pkg.is_dir() or any(glob.glob(str(pkg / pattern)) for pattern in want["move_aside"]):
        log("native files are back in the package (reinstalled?): repairing")
        return False
    return True


def package_dir(python: Path) -> Path:
    # find_spec locates the package without executing its __init__ (which would fail before step 4).
    out = subprocess.run(
        [
            str(python),
            "-c",
            "import importlib.util, os; print(os.path.dirname(importlib.util.find_spec('torch_tensorrt').origin))",
        ],
        check=True,
        capture_output=True,
        text=True,
    )
    return Path(out.stdout.strip())


def move_aside(pkg: Path, patterns) -> list:
    dest_root = pkg.parent / MOVED_DIR
    for pattern in patterns:
        for src in sorted(glob.glob(str(pkg / pattern))):
            rel = Path(src).relative_to(pkg)
            dest = dest_root / rel
            dest.parent.mkdir(parents=True, exist_ok=True)
            if dest.exists():
                dest.unlink()
            shutil.move(src, dest)
    dest_root.mkdir(exist_ok=True)
    (dest_root / "README.txt").write_text(
        "Moved here by tests/harness/make_env.py (trt_compat test harness).\n"
        "These native files link against TensorRT / CUDA libraries that are not installed on this\n"
        "GPU-less machine; torch_tensorrt only loads them when they exist, so with them out of the way\n"
        "its pure-Python compiler (lowering, partitioning, dryrun) can run on the CPU.\n"
        "Moving them back restores the wheel as shipped.\n"
    )
    # Report everything that is aside now, including files moved by an earlier, interrupted run.
    return sorted(str(p.relative_to(dest_root)) for p in dest_root.rglob("*") if p.is_file() and p.name != "README.txt")


def smoke_test(python: Path) -> str:
    code = (
        f"import sys; sys.path.insert(0, {str(REPO)!r})\n"
        "from tests.harness import activate; info = activate.prepare()\n"
        "import torch, torch_tensorrt\n"
        "print(torch_tensorrt.__version__, torch.__version__, info['tensorrt'])\n"
    )
    out = subprocess.run([str(python), "-c", code], check=True, capture_output=True, text=True)
    return out.stdout.strip().splitlines()[-1]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("release", help="torch-tensorrt version, e.g. 2.4.0 (see tests/harness/releases.py)")
    parser.add_argument("venv", type=Path, help="venv directory to create or update")
    args = parser.parse_args(argv)

    release = releases.lookup(args.release)
    wheel = releases.wheel_version(args.release)
    venv = args.venv.resolve()
    want = recipe(release, wheel)
    started = time.monotonic()
    timings = {}

    if up_to_date(venv, want):
        log(
            f"{venv} already built for torch-tensorrt {wheel} (recipe {want['hash']}): nothing to do "
            f"({time.monotonic() - started:.2f}s)"
        )
        return 0
    if not release.verified:
        log(f"note: {release.line} has not been verified on this harness; its extra needs:")
        for need in release.needs:
            log(f"  - {need}")

    def step(name, fn):
        t0 = time.monotonic()
        result = fn()
        timings[name] = round(time.monotonic() - t0, 1)
        log(f"{name}: {timings[name]}s")
        return result

    python = venv / "bin" / "python"
    (venv / MARKER).unlink(missing_ok=True)
    if not python.exists():
        step("venv", lambda: run([sys.executable, "-m", "venv", venv]))
    pip = [python, "-m", "pip", "install", "--quiet"]
    step("torch+deps", lambda: run(pip + requirements(release) + ["pytest", "hypothesis"]))
    # --no-deps: torchvision pins the exact torch it was built with, which is installed already.
    step("torchvision", lambda: run(pip + ["--no-deps", f"torchvision=={release.torchvision}", "pillow"]))
    step("trt_compat (editable)", lambda: run(pip + ["-e", f"{REPO}[test]"]))
    step("torch-tensorrt", lambda: run(pip + ["--no-deps", f"torch-tensorrt=={wheel}"]))
    pkg = package_dir(python)
    moved = step("move aside", lambda: move_aside(pkg, release.move_aside))
    log(f"moved into {pkg.parent / MOVED_DIR}: {', '.join(moved) or '(nothing)'}")
    smoke = step("smoke import", lambda: smoke_test(python))
    log(f"smoke import ok: torch_tensorrt, torch, stand-in tensorrt = {smoke}")

    size = disk_usage(venv)
    total = round(time.monotonic() - started, 1)
    marker = dict(
        want,
        package_dir=str(pkg),
        moved_aside=moved,
        built_at=time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        seconds=timings,
        total_seconds=total,
        bytes=size,
    )
    (venv / MARKER).write_text(json.dumps(marker, indent=2) + "\n")
    log(f"done in {total}s; venv size {size / 2**30:.2f} GiB; marker {venv / MARKER}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
