#!/usr/bin/env bash
# Every benchmark behind BENCHMARKS.md, then the chart and the tables. Needs the environments of tests/run.sh plus
# the Torch-TensorRT 2.5.0 one and a python with matplotlib:
#   python3 -m tests.harness.make_env 2.5.0 .venvs/tt-2.5.0
#   python3 -m venv .venvs/plot && .venvs/plot/bin/pip install matplotlib
# About 25 minutes on an idle 2-core machine (upstream's view_to_reshape at 20k views and the 20k pooling graph
# take most of it), plus about an hour for the model zoo (bench_patch_cost, bench_blocks) at a load of 10;
# the steps are independent, so any one can be re-run alone.
set -euo pipefail
cd "$(dirname "$0")/.."
TT25=.venvs/tt-2.5.0/bin/python

.venvs/unit/bin/python -m benchmarks.bench_import --runs 30
"$TT25" -m benchmarks.bench_passes --only view --repeats 7 --upstream-repeats 1 --upstream-timeout 150 --out passes-view
"$TT25" -m benchmarks.bench_passes --only view-work --repeats 17 --out passes-view-work   # 51 repeats
"$TT25" -m benchmarks.bench_passes --only pooling --repeats 2 --out passes-pooling
"$TT25" -m benchmarks.bench_passes --only partition --repeats 4 --out passes-partition
for python in .venvs/tt-2.4.0/bin/python "$TT25" .venvs/tt-2.14.0/bin/python; do
  "$python" -m benchmarks.bench_cycle --cycles 200
done
for python in "$TT25" .venvs/tt-2.14.0/bin/python; do
  HF_HUB_OFFLINE=1 "$python" -m benchmarks.bench_patch_cost
  HF_HUB_OFFLINE=1 "$python" -m benchmarks.bench_patch_cost --scaling
  HF_HUB_OFFLINE=1 "$python" -m benchmarks.bench_blocks
done
.venvs/tt-2.14.0/bin/python -m benchmarks.bench_audit --processes 4 --compiles 2 --models resnet18
.venvs/plot/bin/python -m benchmarks.plot_scaling benchmarks/results/passes-{view,view-work,pooling,partition}.json
python3 -m benchmarks.report
