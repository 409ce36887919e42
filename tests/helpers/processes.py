"""Fresh interpreters for the tests whose subject is import order, reloads or the command line."""

import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Optional

REPO = Path(__file__).resolve().parents[2]


def clean_env(**env: str) -> dict:
    """The test process's environment without trt_compat's settings, plus ``env``; the checkout importable."""
    full = {k: v for k, v in os.environ.items() if not k.startswith("TRT_COMPAT_")}
    full["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH", "")) if p)
    full.update(env)
    return full


def run_python(
    code: str, *args: str, cwd: Optional[Path] = None, flags: tuple = (), **env: str
) -> subprocess.CompletedProcess:
    """``python [flags] -c code args...`` in a fresh interpreter (``code`` is dedented)."""
    return subprocess.run(
        [sys.executable, *flags, "-c", textwrap.dedent(code), *args],
        capture_output=True,
        text=True,
        env=clean_env(**env),
        cwd=cwd,
        timeout=300,
    )


def run_cli(*args: str, cwd: Optional[Path] = None, flags: tuple = (), **env: str) -> subprocess.CompletedProcess:
    """``python [flags] -m trt_compat args...``."""
    return subprocess.run(
        [sys.executable, *flags, "-m", "trt_compat", *args],
        capture_output=True,
        text=True,
        env=clean_env(**env),
        cwd=cwd,
        timeout=300,
    )


def output_of(code: str, **env: str) -> str:
    """stdout of ``run_python(code)``, which must succeed."""
    done = run_python(code, **env)
    assert done.returncode == 0, done.stderr[-4000:]
    return done.stdout.strip()
