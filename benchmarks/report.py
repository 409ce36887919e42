"""Print the Markdown tables of BENCHMARKS.md from benchmarks/results/*.json.

python3 -m benchmarks.report            # stdlib only
"""

from __future__ import annotations

import json
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"


def load(name):
    path = RESULTS / f"{name}.json"
    return json.loads(path.read_text()) if path.exists() else None


def ms(value, digits=1):
    return "–" if value is None else f"{value * 1e3:,.{digits}f}"


def ratio(a, b):
    return "–" if not a or not b else f"{a / b:.2f}"


def view_table(data):
    rows = data["view"]
    print(
        "| views | nodes | trt_compat wall ms | trt_compat CPU ms | of which graph work, CPU ms | recompile wall ms "
        "| recompiles (with / without views) | upstream wall ms | upstream CPU ms | speed-up wall | speed-up CPU |"
    )
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        if r.get("upstream_total_s"):
            up_wall, up_cpu = ms(r["upstream_total_s"], 0), ms(r.get("upstream_total_cpu_s"), 0)
            speed, speed_cpu = f"{r['speedup']}x", f"{r.get('speedup_cpu', '–')}x"
        elif r.get("upstream_timeout_s"):
            up_wall = f"> {r['upstream_timeout_s'] * 1e3:,.0f} (cap)"
            up_cpu, speed, speed_cpu = "–", "–", "–"
        else:
            up_wall = up_cpu = speed = speed_cpu = "–"
        print(
            f"| {r['views']:,} | {r['nodes']:,} | {ms(r['ours_total_s'])} | {ms(r.get('ours_total_cpu_s'))} "
            f"| {ms(r['ours_graph_work_cpu_s'], 2)} | {ms(r['ours_recompile_s'])} "
            f"| {r['ours_recompiles_per_call'][0]} / {r['ours_recompiles_without_views']} "
            f"| {up_wall} | {up_cpu} | {speed} | {speed_cpu} |"
        )
    print()
    print(
        "Graph work (CPU) when the graph doubles:",
        ", ".join(
            f"{a['views']:,}→{b['views']:,}: ×{ratio(b['ours_graph_work_cpu_s'], a['ours_graph_work_cpu_s'])}"
            for a, b in zip(rows, rows[1:])
            if b["views"] == 2 * a["views"]
        ),
    )
    print()


def per_node_table(rows, key, unit):
    print(
        f"| {key} | wall ms | per {unit}, wall µs | graph work CPU ms | per {unit}, CPU µs | recompile wall ms | runs |"
    )
    print("|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        cpu = r.get("graph_work_cpu_s")
        print(
            f"| {r[key]:,} | {ms(r['total_s'], 0)} | {r['total_s'] / r[key] * 1e6:,.0f} | {ms(cpu, 0)} "
            f"| {'–' if cpu is None else f'{cpu / r[key] * 1e6:,.0f}'} | {ms(r.get('recompile_s'), 0)} "
            f"| {r.get('repeats', '–')} |"
        )
    print()


def patch_cost_tables(data):
    """Per model: the compile, its fake-tensor dispatches and the paired whole-compile CPU; then per patch and model,
    the patch's own CPU work and its share of the compile."""
    rows = data["models"]
    print(
        "| model | Dynamo graph nodes | TensorRT blocks with trt_compat | fake dispatches without → with | ratio "
        "| compile CPU s, min without / with | ratio of minimums | paired CPU overhead, median (each pair) |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---|")
    for r in rows:
        pairs = ", ".join(f"{p:+.1f}" for p in r["paired_overhead_cpu_pct"])
        print(
            f"| {r['model']} | {sum(r['dynamo_graph_nodes']):,} | {r['blocks_on']} "
            f"| {r['dispatches_off']:,} → {r['dispatches_on']:,} | {r['dispatch_ratio']:.3f} "
            f"| {min(r['without_cpu_s_runs']):.2f} / {min(r['with_cpu_s_runs']):.2f} "
            f"| {r['cpu_ratio_of_minimums']:.3f} | {r['paired_overhead_cpu_pct_median']:+.1f} % ({pairs}) |"
        )
    print()
    patches = sorted({p for r in rows for p in r["own_work"]})
    print("Own CPU work per compile, ms (% of the compile's CPU), median of the instrumented compiles:\n")
    print("| model | " + " | ".join(f"`{p}`" for p in patches) + " |")
    print("|---|" + "---:|" * len(patches))
    for r in rows:
        cells = []
        for p in patches:
            own = r["own_work"].get(p)
            cells.append(
                "–" if own is None else f"{own['cpu_s_median'] * 1e3:.2f} ({own['pct_of_compile_median']:.3f} %)"
            )
        print(f"| {r['model']} | " + " | ".join(cells) + " |")
    print()
    inside = []
    for r in rows:
        own = {owner: n for owner, n in r["dispatches_by_owner"].items() if owner != "upstream"}
        if own:
            inside.append(f"{r['model']}: " + ", ".join(f"{owner} {n:,}" for owner, n in own.items()))
    print("Fake-tensor dispatches inside a patch's own work: " + ("; ".join(inside) or "none") + "\n")


def scaling_table(data):
    """Own CPU work per patch (median, ms) as the graph grows, and the growth per doubling of the graph."""
    rows = data["models"]
    patches = sorted({p for r in rows for p in r["own_work"]})
    nodes = [sum(r["dynamo_graph_nodes"]) for r in rows]
    print("| patch | " + " | ".join(f"{r['model']} ({n:,} nodes)" for r, n in zip(rows, nodes)) + " | last doubling |")
    print("|---|" + "---:|" * (len(rows) + 1))
    for p in patches:
        own = [r["own_work"].get(p, {}).get("cpu_s_median") for r in rows]
        growth = (
            "–" if not (own[-1] and own[-2]) else f"×{own[-1] / own[-2]:.2f} for ×{nodes[-1] / nodes[-2]:.2f} nodes"
        )
        print(f"| `{p}` | " + " | ".join(ms(t, 2) for t in own) + f" | {growth} |")
    print()


def blocks_table(datas):
    """TensorRT blocks without → with trt_compat, per case, release and min_block_size (block sizes in nodes)."""
    columns = [(d["release"], size) for d in datas for size in (1, 5)]
    print("| case | " + " | ".join(f"{release}, min_block_size={size}" for release, size in columns) + " |")
    print("|---|" + "---:|" * len(columns))
    by_release = {d["release"]: {c["model"]: c for c in d["cases"]} for d in datas}
    for name in by_release[datas[0]["release"]]:
        cells = []
        for release, size in columns:
            case = by_release[release].get(name)
            if case is None:
                cells.append("–")
                continue
            without, with_ = case[f"min_block_size_{size}_without"], case[f"min_block_size_{size}_with"]
            cell = f"{without['blocks']} → {with_['blocks']}"
            if with_["blocks"] > without["blocks"]:
                cell = f"**{cell}** ({'+'.join(map(str, with_['block_sizes']))} nodes)"
            cells.append(cell)
        what = by_release[datas[0]["release"]][name].get("what")
        print(f"| {f'`{what}`' if what else name} | " + " | ".join(cells) + " |")
    print()


def main():
    view = load("passes-view")
    if view and "view" in view:
        print("### view → reshape\n")
        view_table(view)
    work = load("passes-view-work")
    if work:
        rows = work["view_work"]
        print(
            "trt_compat's graph work alone (recompile stubbed out, "
            f"{rows[0]['repeats']} repeats, CPU ms, median / min): "
            + ", ".join(
                f"{r['views']:,}: {ms(r['graph_work_cpu_s'], 2)} / {ms(r['graph_work_cpu_min_s'], 2)}" for r in rows
            )
        )
        print(
            "Doubling:",
            ", ".join(
                f"{a['views']:,}→{b['views']:,}: ×{ratio(b['graph_work_cpu_s'], a['graph_work_cpu_s'])} (min "
                f"×{ratio(b['graph_work_cpu_min_s'], a['graph_work_cpu_min_s'])})"
                for a, b in zip(rows, rows[1:])
                if b["views"] == 2 * a["views"]
            ),
        )
        print()
    for title, section, key, unit, names in (
        ("pooling decomposition", "pooling", "pools", "pool", ("passes-pooling",)),
        ("partition-input repair", "partition", "boundaries", "boundary", ("passes-partition",)),
    ):
        for name in names:
            data = load(name)
            if data and section in data:
                print(f"### {title} (`results/{name}.json`)\n")
                per_node_table(data[section], key, unit)
    imp = load("import")
    if imp:
        print("### import\n")
        print(
            f"`-X importtime` cumulative for trt_compat: median {imp['importtime_ms_median']:.2f} ms "
            f"(min {imp['importtime_ms_min']:.2f}, max {imp['importtime_ms_max']:.2f}, {imp['runs']} runs); wall "
            f"`import trt_compat` − `pass`: median {imp['wall_delta_ms_median']:.1f} ms "
            f"({imp['wall_import_ms_median']:.1f} − {imp['wall_pass_ms_median']:.1f} ms); CPU time (rusage) "
            f"`import trt_compat` − `pass`: median {imp['cpu_delta_ms_median']:.2f} ms; thread CPU time of the "
            f"import statement: median {imp['in_process_cpu_ms_median']:.2f} ms; torch imported: "
            f"{imp['torch_imported']}\n"
        )
    for release in ("2.5.0", "2.14.0"):
        data = load(f"patch-cost-{release}")
        if data:
            print(f"### what each patch costs inside a compile, {release} (`results/patch-cost-{release}.json`)\n")
            patch_cost_tables(data)
    for release in ("2.5.0", "2.14.0"):
        data = load(f"patch-cost-scaling-{release}")
        if data:
            print(f"### own work as the graph grows, {release} (`results/patch-cost-scaling-{release}.json`)\n")
            scaling_table(data)
    datas = [d for d in (load("blocks-2.5.0"), load("blocks-2.14.0")) if d]
    if datas:
        print("### TensorRT blocks without → with trt_compat (`results/blocks-*.json`)\n")
        blocks_table(datas)


if __name__ == "__main__":
    main()
