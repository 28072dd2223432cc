"""Distilled Pruning vs IMP vs the random-subset control, from a sweep's results.parquet.

Run the sweep first:
    prunetune run configs/distilled_pruning_mnist1d.yaml --out runs/distilled_pruning_mnist1d
then:
    python benchmarks/distilled_pruning_report.py runs/distilled_pruning_mnist1d/results.parquet [CONTROL]

CONTROL (optional) is the results.parquet of the cost-matched control: imp whose search levels train for
only a few epochs (``prune.search_epochs``), reported as ``imp_short``.

Per density: mean +- std test accuracy over seeds, the gap of distilled_imp (and imp_subset) to imp, and
the speedup of the mask search over imp's, in wall-clock and in sample passes, without the distillation
cost, with it amortised over the sweep's trials that share the set, and with it paid alone.
"""
from __future__ import annotations

import statistics
import sys
from collections import defaultdict

import pyarrow.parquet as pq


def mean_std(xs: list[float]) -> tuple[float, float]:
    return statistics.fmean(xs), (statistics.stdev(xs) if len(xs) > 1 else 0.0)


def main(path: str, control: str | None = None) -> None:
    rows = [r for r in pq.read_table(path).to_pylist() if r["status"] == "ok"]
    if control:
        rows += [{**r, "method": "imp_short"} for r in pq.read_table(control).to_pylist()
                 if r["status"] == "ok" and r["method"] == "imp"]
    by: dict[tuple[str, float], list[dict]] = defaultdict(list)
    for r in rows:
        by[(r["method"], round(1 - r["target_sparsity"], 6))].append(r)
    dense = [r["test_accuracy"] for r in rows if r["method"] == "dense"]
    if dense:
        m, s = mean_std(dense)
        print(f"dense: {100 * m:.2f} +- {100 * s:.2f} (n={len(dense)})")
    densities = sorted({d for (meth, d) in by if meth == "imp"}, reverse=True)
    print("density | imp | distilled_imp (gap) | imp_subset (gap) | search speedup of distilled_imp over imp:"
          " passes [no distill / amortised / alone], wall [no distill / amortised / alone]")
    for d in densities:
        cells = {}
        for meth in ("imp", "distilled_imp", "imp_subset"):
            accs = [r["test_accuracy"] for r in by.get((meth, d), [])]
            cells[meth] = mean_std(accs) if accs else None
        imp_rows, dist_rows = by.get(("imp", d), []), by.get(("distilled_imp", d), [])
        if not cells["imp"] or not dist_rows:
            continue

        def avg(rs, key):
            return statistics.fmean(float(r[key] or 0.0) for r in rs)

        imp_passes, imp_wall = avg(imp_rows, "search_sample_passes"), avg(imp_rows, "search_wall_time_s")
        sp, sw = avg(dist_rows, "search_sample_passes"), avg(dist_rows, "search_wall_time_s")
        dp_am, dw_am = avg(dist_rows, "distill_amortized_sample_passes"), avg(dist_rows, "distill_amortized_wall_time_s")
        dp, dw = avg(dist_rows, "distill_sample_passes"), avg(dist_rows, "distill_wall_time_s")

        def fmt(c):
            return f"{100 * c[0]:.2f}+-{100 * c[1]:.2f}"

        gap_d = 100 * (cells["distilled_imp"][0] - cells["imp"][0])
        gap_s = 100 * (cells["imp_subset"][0] - cells["imp"][0]) if cells["imp_subset"] else float("nan")
        print(
            f"{d:.4f} | {fmt(cells['imp'])} | {fmt(cells['distilled_imp'])} ({gap_d:+.2f}) | "
            f"{fmt(cells['imp_subset']) if cells['imp_subset'] else '-'} ({gap_s:+.2f}) | "
            f"passes {imp_passes / sp:.1f}x / {imp_passes / (sp + dp_am):.1f}x / {imp_passes / (sp + dp):.1f}x, "
            f"wall {imp_wall / sw:.1f}x / {imp_wall / (sw + dw_am):.1f}x / {imp_wall / (sw + dw):.1f}x"
        )
    if control:
        print("cost-matched control: imp with short search levels (imp_short) vs distilled_imp")
        print("density | imp_short | distilled_imp | gap (distilled - short) | search passes imp_short / distilled_imp (+amortised distill)")
        for d in densities:
            short, dist = by.get(("imp_short", d), []), by.get(("distilled_imp", d), [])
            if not short or not dist:
                continue
            ms, ss = mean_std([r["test_accuracy"] for r in short])
            md, sd = mean_std([r["test_accuracy"] for r in dist])
            sp = statistics.fmean(r["search_sample_passes"] for r in short)
            dp = statistics.fmean(r["search_sample_passes"] + (r["distill_amortized_sample_passes"] or 0) for r in dist)
            print(f"{d:.4f} | {100 * ms:.2f}+-{100 * ss:.2f} | {100 * md:.2f}+-{100 * sd:.2f} | "
                  f"{100 * (md - ms):+.2f} | {sp:.0f} / {dp:.0f}")
    shared = {r["small_set_hash"]: r for r in rows if r.get("small_set_hash")}
    for h, r in shared.items():
        print(f"small set {r['small_set_method']} {h}: {r['small_set_size']} samples, cost alone "
              f"{r['distill_wall_time_s']:.1f}s / {r['distill_sample_passes']} passes, shared by {r['distill_shared_by']} trials")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "runs/distilled_pruning_mnist1d/results.parquet",
         sys.argv[2] if len(sys.argv) > 2 else None)
