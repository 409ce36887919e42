#!/usr/bin/env bash
# Every benchmark behind BENCHMARKS.md, then the chart. Needs the environments of tests/run.sh plus the
# Torch-TensorRT 2.5.0 one and a python with matplotlib:
#   python3 tests/harness/make_env.py 2.5.0 .venvs/tt-2.5.0
#   python3 -m venv .venvs/plot && .venvs/plot/bin/pip install matplotlib
# About 45 minutes on a shared 2-core machine, most of it upstream's view_to_reshape and the compiles.
set -euo pipefail
cd "$(dirname "$0")/.."

.venvs/unit/bin/python benchmarks/bench_import.py
.venvs/tt-2.5.0/bin/python benchmarks/bench_passes.py --only view --out passes-view
.venvs/tt-2.5.0/bin/python benchmarks/bench_passes.py --only pooling,partition --out passes
.venvs/tt-2.5.0/bin/python benchmarks/bench_compile.py
.venvs/tt-2.14.0/bin/python benchmarks/bench_compile.py
.venvs/plot/bin/python benchmarks/plot_scaling.py benchmarks/results/passes-view.json benchmarks/results/passes.json
