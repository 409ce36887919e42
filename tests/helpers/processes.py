"""Fresh interpreters for the tests whose subject is import order, reloads or the command line."""

import json
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


HARNESS_CLI = """
    import contextlib, io, json, os, sys
    sys.path.insert(0, {repo!r})
    from tests.harness import activate
    activate.prepare()
    import trt_compat
    from trt_compat.__main__ import main
    {setup}
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        status = main({args!r})
    print(json.dumps({{"status": status, "result": json.loads(out.getvalue()),
                      "applied_after": [p.name for p in trt_compat.report().patches if p.state == "applied"],
                      "imported": "torch_tensorrt" in sys.modules}}))
"""


def cli_on_harness(*args: str, setup: str = "", **env: str) -> dict:
    """``trt-compat args`` (which must include ``--json``) in a fresh interpreter on the installed wheel under the
    offline harness, after ``setup`` (one line of Python): its exit status, its JSON ``result``, the patches applied
    afterwards, whether torch_tensorrt is imported afterwards, and its ``stderr``."""
    done = run_python(HARNESS_CLI.format(repo=str(REPO), setup=setup, args=list(args)), **env)
    assert done.returncode == 0, done.stderr[-4000:]
    return dict(json.loads(done.stdout.strip().splitlines()[-1]), stderr=done.stderr)
