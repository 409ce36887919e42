#!/usr/bin/env bash
# Every benchmark behind BENCHMARKS.md, then the chart and the tables. Needs the environments of tests/run.sh plus
# the Torch-TensorRT 2.5.0 one and a python with matplotlib:
#   python3 tests/harness/make_env.py 2.5.0 .venvs/tt-2.5.0
#   python3 -m venv .venvs/plot && .venvs/plot/bin/pip install matplotlib
# About 25 minutes on an idle 2-core machine (upstream's view_to_reshape at 20k views and the 20k pooling graph
# take most of it);
# the steps are independent, so any one can be re-run alone.
set -euo pipefail
cd "$(dirname "$0")/.."
TT25=.venvs/tt-2.5.0/bin/python

.venvs/unit/bin/python benchmarks/bench_import.py --runs 30
"$TT25" benchmarks/bench_passes.py --only view --repeats 7 --upstream-repeats 1 --upstream-timeout 150 --out passes-view
"$TT25" benchmarks/bench_passes.py --only view-work --repeats 17 --out passes-view-work   # 51 repeats
"$TT25" benchmarks/bench_passes.py --only pooling --repeats 2 --out passes-pooling
"$TT25" benchmarks/bench_passes.py --only partition --repeats 4 --out passes-partition
"$TT25" benchmarks/bench_compile.py --pairs 30
.venvs/tt-2.14.0/bin/python benchmarks/bench_compile.py --pairs 30
.venvs/plot/bin/python benchmarks/plot_scaling.py benchmarks/results/passes-{view,view-work,pooling,partition}.json
python3 benchmarks/report.py
