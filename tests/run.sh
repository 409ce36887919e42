#!/usr/bin/env bash
# The project's test command (the README's quick start and .ci/run both run exactly this).
#
# 0. Lint and format check (ruff, pinned in pyproject.toml's dev extra).
# 1. Unit tests on the CPU build of torch 2.13.0: the core, every graph transformation and the generated docs,
#    no Torch-TensorRT.
# 2. For each release in TRT_COMPAT_RELEASES (default: 2.4.0 2.14.0): a virtual environment with the real
#    torch-tensorrt wheel and the torch it pins, under the offline harness (tests/harness/README.md); the unit
#    tests again on that torch, then the integration tests against the real upstream compiler.
#
# Environments are kept in .venvs/ (TRT_COMPAT_VENVS=DIR: in DIR) and reused; TRT_COMPAT_FREE_DISK=1 deletes each
# release's environment after its tests (each takes 5-6 GB).
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
VENVS=${TRT_COMPAT_VENVS:-.venvs}
RELEASES=${TRT_COMPAT_RELEASES:-2.4.0 2.14.0}
mkdir -p "$VENVS"

if [ ! -x "$VENVS/unit/bin/python" ]; then
    "$PYTHON" -m venv "$VENVS/unit"
fi
"$VENVS/unit/bin/python" -m pip install -q torch==2.13.0 -e ".[dev]"
echo "== lint (ruff check, ruff format --check)"
"$VENVS/unit/bin/python" -m ruff check .
"$VENVS/unit/bin/python" -m ruff format --check .
echo "== unit tests, torch 2.13.0 (CPU)"
"$VENVS/unit/bin/python" -m pytest tests/unit -q

for release in $RELEASES; do
    venv="$VENVS/tt-$release"
    "$PYTHON" -m tests.harness.make_env "$release" "$venv"
    echo "== unit tests, torch of torch-tensorrt $release"
    "$venv/bin/python" -m pytest tests/unit -q
    echo "== integration tests, torch-tensorrt $release (offline harness)"
    "$venv/bin/python" -m pytest tests/integration -q
    if [ "${TRT_COMPAT_FREE_DISK:-0}" = "1" ]; then
        rm -rf "$venv"
    fi
done
