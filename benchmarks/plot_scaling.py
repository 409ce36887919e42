"""Draw benchmarks/scaling.png from the results of bench_passes.py.

    .venvs/plot/bin/python benchmarks/plot_scaling.py [RESULTS.json ...]   # default results/passes.json

Any python with matplotlib; no torch needed.

Left: view -> reshape, trt_compat against upstream 2.5.0, total time on log-log axes (a line of slope 1 is
linear scaling). Right: time per node of each trt_compat pass; flat means linear.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

HERE = Path(__file__).resolve().parent


def main(argv=None):
    sources = [Path(a) for a in (argv if argv is not None else sys.argv[1:])] or [HERE / "results" / "passes.json"]
    target = HERE / "scaling.png"
    # bench_passes.py can write its sections to separate files; later files add to (or replace) earlier ones.
    data = {}
    for source in sources:
        data.update(json.loads(source.read_text()))
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.8))

    view = data["view"]
    n = [r["views"] for r in view]
    left.plot(n, [r["ours_total_s"] for r in view], "o-", color="tab:blue", label="trt_compat: total")
    left.plot(n, [r["ours_graph_work_s"] for r in view], "o--", color="tab:blue", alpha=0.6,
              label="trt_compat: graph work (without recompile)")
    up = [(r["views"], r["upstream_total_s"]) for r in view if r.get("upstream_total_s")]
    if up:
        label = f"upstream {data['versions'].get('torch-tensorrt')} view_to_reshape"
        left.plot(*zip(*up), "s-", color="tab:red", label=label)
    capped = [r for r in view if not r.get("upstream_total_s") and r.get("upstream_timeout_s")]
    if capped:
        cap = capped[0]["upstream_timeout_s"]
        left.plot([r["views"] for r in capped], [cap] * len(capped), "x", color="tab:red", markersize=10,
                  label=f"upstream: over {cap:g} s (not run to the end)")
    left.set_xscale("log")
    left.set_yscale("log")
    left.set_xlabel("aten.view nodes in the graph")
    left.set_ylabel("seconds per pass (median)")
    left.set_title("view -> reshape: trt_compat vs upstream, same process")
    left.grid(True, which="both", alpha=0.3)
    left.legend(fontsize=8)

    series = [
        ("view -> reshape (per view)", view, "views", "ours_total_s", "tab:blue"),
        ("pooling decomposition (per pool)", data.get("pooling", []), "pools", "total_s", "tab:green"),
        ("partition-input repair (per boundary)", data.get("partition", []), "boundaries", "total_s", "tab:purple"),
    ]
    for label, rows, key, value, color in series:
        if rows:
            right.plot([r[key] for r in rows], [r[value] / r[key] * 1e6 for r in rows], "o-", color=color,
                       label=label)
    right.set_xscale("log")
    right.set_yscale("log")
    right.set_xlabel("graph size (views / pools / boundaries)")
    right.set_ylabel("microseconds per node (median)")
    right.set_title("trt_compat passes: time per node (flat = linear)")
    right.grid(True, which="both", alpha=0.3)
    right.legend(fontsize=8)

    machine = data.get("machine", {})
    fig.suptitle(f"{machine.get('cpu', '')}, {machine.get('cpus')} CPUs (shared); torch "
                 f"{data['versions'].get('torch')}; load average {machine.get('loadavg_at_start')}", fontsize=9)
    fig.tight_layout()
    fig.savefig(target, dpi=110)
    print(f"wrote {target}")


if __name__ == "__main__":
    main()
