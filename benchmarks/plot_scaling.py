"""Draw benchmarks/scaling.png from the results of bench_passes.py.

    .venvs/plot/bin/python -m benchmarks.plot_scaling [RESULTS.json ...]   # default results/passes.json

Any python with matplotlib; no torch needed.

Left: view -> reshape, trt_compat against upstream 2.5.0, time per pass on log-log axes (slope 1 is linear
scaling). Right: time per node of each trt_compat pass; flat means linear. CPU time wherever the results have it.
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

    # CPU time where recorded: on the shared machine the wall time is mostly waiting for a core.
    def pick(row, key):
        cpu = row.get(key.replace("_s", "_cpu_s"))
        return (cpu, "CPU") if cpu is not None else (row[key], "wall")

    view = data["view"]
    n = [r["views"] for r in view]
    for key, style, label in (
        ("ours_total_s", "o-", "trt_compat: total"),
        ("ours_graph_work_s", "o--", "trt_compat: graph work (without the recompile)"),
    ):
        values = [pick(r, key) for r in view]
        left.plot(
            n,
            [v for v, _ in values],
            style,
            color="tab:blue",
            alpha=1 if "-" == style[1] else 0.6,
            label=f"{label}, {values[0][1]}",
        )
    up = [(r["views"],) + pick(r, "upstream_total_s") for r in view if r.get("upstream_total_s")]
    if up:
        label = f"upstream {data['versions'].get('torch-tensorrt')} view_to_reshape: total, {up[0][2]}"
        left.plot([u[0] for u in up], [u[1] for u in up], "s-", color="tab:red", label=label)
    capped = [r for r in view if not r.get("upstream_total_s") and r.get("upstream_timeout_s")]
    if capped:
        cap = capped[0]["upstream_timeout_s"]
        left.plot(
            [r["views"] for r in capped],
            [cap] * len(capped),
            "x",
            color="tab:red",
            markersize=10,
            label=f"upstream: over the {cap:g} s wall cap (stopped)",
        )
    left.set_xscale("log")
    left.set_yscale("log")
    left.set_xlabel("aten.view nodes in the graph")
    left.set_ylabel("seconds per pass (median)")
    left.set_title("view -> reshape: trt_compat vs upstream, same process")
    left.grid(True, which="both", alpha=0.3)
    left.legend(fontsize=8)

    series = [
        ("view -> reshape: graph work per view", data.get("view", []), "views", "ours_graph_work_s", "tab:blue"),
        ("pooling decomposition: per pool", data.get("pooling", []), "pools", "total_s", "tab:green"),
        ("partition-input repair: per boundary", data.get("partition", []), "boundaries", "total_s", "tab:purple"),
    ]
    for label, rows, key, value, color in series:
        if rows:
            values = [pick(r, value) for r in rows]
            right.plot(
                [r[key] for r in rows],
                [v / r[key] * 1e6 for (v, _), r in zip(values, rows)],
                "o-",
                color=color,
                label=f"{label}, {values[0][1]}",
            )
    right.set_xscale("log")
    right.set_yscale("log")
    right.set_xlabel("graph size (views / pools / boundaries)")
    right.set_ylabel("microseconds per node (median)")
    right.set_title("trt_compat passes: time per node (flat = linear)")
    right.grid(True, which="both", alpha=0.3)
    right.legend(fontsize=8)

    machine = data.get("machine", {})
    fig.suptitle(
        f"{machine.get('cpu', '')}, {machine.get('cpus')} CPUs (shared); torch "
        f"{data['versions'].get('torch')}; load average {machine.get('loadavg_at_start')}",
        fontsize=9,
    )
    fig.tight_layout()
    fig.savefig(target, dpi=110)
    print(f"wrote {target}")


if __name__ == "__main__":
    main()
