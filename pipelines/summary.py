"""The sweep at a glance: one row per point of the sweep (phase, method, target sparsity and every
other swept setting but the seed), with n, mean and std over its seeds, and the change against dense.

Two seeds of one point are one line here, not two lines a reader averages by eye. The change against
dense is computed per trial, against the dense trial with the same non-pruning settings and the same
seed where there is one (paired, so seed-to-seed noise shared by both cancels), else against the mean of
those dense trials, else against every dense trial of the sweep; its std is over the trials' changes.
"""
from __future__ import annotations

import json
import math
import statistics
from collections import defaultdict
from pathlib import Path
from typing import Any

from .results import SHOWN_AS, finite, swept_settings

# (column, label in the text table, shown as a percentage): mean and std over the point's ok trials.
SPREAD = [("test_accuracy", "test acc %", True), ("val_accuracy", "val acc %", True),
          ("delta_test_accuracy", "vs dense (pts)", True)]
# Means only: what the point achieved and cost.
MEANS = ["achieved_sparsity", "remaining_params", "flops", "search_wall_time_s", "search_sample_passes",
         "search_amortized_wall_time_s", "search_amortized_sample_passes", "retrain_wall_time_s",
         "retrain_sample_passes", "distill_amortized_wall_time_s", "wall_time_s"]
KEY = ["phase", "method", "target_sparsity"]
SUMMARY_FILE = "summary.parquet"
PRUNE_AXES = {"prune.method", "prune.sparsity"}


def _mean_std(values: list[float]) -> tuple[float | None, float | None]:
    if not values:
        return None, None
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else None)


def _settings(row: dict[str, Any]) -> dict[str, Any]:
    return json.loads(row["overrides"]) if row.get("overrides") else {}


def _dense_reference(rows: list[dict[str, Any]]):
    """For a trial, the dense test accuracy it is compared with (None without a dense trial)."""
    dense = [r for r in rows if r.get("method") == "dense" and r.get("status") == "ok"
             and finite(r.get("test_accuracy")) is not None]

    def context(row: dict) -> str:  # the settings other than pruning and seed: what dense must share
        return json.dumps({k: v for k, v in _settings(row).items() if k not in PRUNE_AXES | {"seed"}},
                          sort_keys=True, default=str)

    by_context: dict[str, list[dict]] = defaultdict(list)
    for r in dense:
        by_context[context(r)].append(r)

    def reference(row: dict) -> float | None:
        same = by_context.get(context(row)) or dense
        if not same:
            return None
        paired = [r["test_accuracy"] for r in same if r.get("seed") == row.get("seed")]
        return statistics.fmean(paired or [r["test_accuracy"] for r in same])

    return reference


def summarize(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per point; failed and early-stopped trials are counted but not averaged."""
    swept = {a: v for a, v in swept_settings(rows).items() if a not in SHOWN_AS}
    reference = _dense_reference(rows)
    groups: dict[tuple, list[dict]] = defaultdict(list)
    for i, r in enumerate(rows):
        key = (r.get("phase"), r.get("method"), finite(r.get("target_sparsity")),
               *(json.dumps(v[i], sort_keys=True, default=str) for v in swept.values()))
        groups[key].append({**r, **{a: v[i] for a, v in swept.items()}})
    out = []
    for key, members in groups.items():
        ok = [r for r in members if r.get("status") == "ok"]
        point: dict[str, Any] = {"phase": key[0], "method": key[1], "target_sparsity": key[2],
                                 **{a: members[0].get(a) for a in swept}, "n": len(ok),
                                 "failed": sum(r.get("status") == "error" for r in members),
                                 "stopped_early": sum(r.get("status") == "pruned" for r in members),
                                 "seeds": ",".join(str(s) for s in sorted({r.get("seed") for r in ok}, key=str))}
        for r in ok:
            dense = reference(r) if r.get("method") != "dense" else None
            acc = finite(r.get("test_accuracy"))
            r["delta_test_accuracy"] = acc - dense if dense is not None and acc is not None else None
        for column, _, _ in SPREAD:
            point[f"{column}_mean"], point[f"{column}_std"] = _mean_std(
                [v for v in (finite(r.get(column)) for r in ok) if v is not None])
        for column in MEANS:
            point[f"{column}_mean"] = _mean_std([v for v in (finite(r.get(column)) for r in ok) if v is not None])[0]
        point["collapsed_trials"] = sum(bool(r.get("collapsed")) for r in ok)
        point["near_collapsed_layers"] = ",".join(sorted({name for r in ok
                                                          for name in (r.get("near_collapsed_layers") or "").split(",")
                                                          if name}))
        out.append(point)
    out.sort(key=lambda p: (str(p["phase"]), p["method"] != "dense", str(p["method"]), p["target_sparsity"] or 0.0,
                            *(str(p.get(a)) for a in swept)))
    return out


def _fmt_spread(mean: float | None, std: float | None, percent: bool) -> str:
    if mean is None:
        return "-"
    scale = 100.0 if percent else 1.0
    return f"{mean * scale:.2f}" + (f" ± {std * scale:.2f}" if std is not None else "")


def render_summary(points: list[dict[str, Any]]) -> str:
    """The summary as a text table: accuracies in percent, the change against dense in points."""
    if not points:
        return "(no trials)"
    extra = [k for k in points[0] if k not in KEY and k not in ("n", "failed", "stopped_early", "seeds")
             and not k.endswith(("_mean", "_std")) and k not in ("collapsed_trials", "near_collapsed_layers")]
    header = ["phase", "method", "target", *extra, "n", *(label for _, label, _ in SPREAD), "achieved",
              "search s", "flags"]  # search s: the trial's share (stages several trials used are split)
    lines = [header]
    for p in points:
        flags = []
        if p["failed"]:
            flags.append(f"{p['failed']} failed")
        if p["stopped_early"]:
            flags.append(f"{p['stopped_early']} stopped early")
        if p["collapsed_trials"]:
            flags.append(f"collapsed in {p['collapsed_trials']}")
        if p["near_collapsed_layers"]:
            flags.append(f"near-collapsed: {p['near_collapsed_layers']}")
        target = p["target_sparsity"]
        cells = [str(p["phase"]), str(p["method"]), "-" if target is None else f"{target:.4g}",
                 *(_cell(p.get(k)) for k in extra), str(p["n"]),
                 *(_fmt_spread(p[f"{c}_mean"], p[f"{c}_std"], pct) for c, _, pct in SPREAD),
                 _cell(p["achieved_sparsity_mean"]), _cell(p["search_amortized_wall_time_s_mean"], 1),
                 "; ".join(flags)]
        if p["delta_test_accuracy_mean"] is not None and p["delta_test_accuracy_mean"] >= 0:
            i = header.index("vs dense (pts)")
            cells[i] = "+" + cells[i]
        lines.append(cells)
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    text = ["  ".join([*(c.rjust(w) for c, w in zip(line[:-1], widths)), line[-1]]).rstrip() for line in lines]
    text.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(text)


def _cell(v: Any, digits: int = 4) -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "-"
    if isinstance(v, float):
        return f"{v:.{digits}f}"
    text = str(v)
    return text if len(text) <= 30 else text[:27] + "..."


def write_summary(points: list[dict[str, Any]], path: Path) -> Path:
    """``summary.parquet``, atomically (the same writer as results.parquet)."""
    from .results import write_table

    return write_table(points, path)
