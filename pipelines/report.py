"""A sweep's report: the figures researchers judge a pruning sweep by, as PNG files, one self-contained
``report.html`` (images embedded: it opens offline and can be mailed) and ``report.md`` for terminals
and pull requests.

Everything is read back from what the sweep left in DIR (results.parquet, the stage store, the
config), so ``prunetune report DIR`` redraws a finished or interrupted sweep at any time.
"""
from __future__ import annotations

import base64
import html
import itertools
import json
import math
import shutil
import statistics
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from pruning.collapse import NEAR_COLLAPSE_FRACTION

from .results import finite

FIGURES_DIR = "figures"


@dataclass
class Figure:
    name: str  # file stem
    title: str
    caption: str
    path: Path | None = None


@dataclass
class SweepData:
    """What the report draws from: the rows, and readers for what lives in the store."""

    rows: list[dict[str, Any]]
    layer_density: Callable[[dict], dict[str, float] | None] = lambda row: None
    level_curve: Callable[[dict], list[dict] | None] = lambda row: None
    set_pictures: list[tuple[str, Path]] = field(default_factory=list)
    objectives: list[tuple[str, str]] = field(default_factory=list)  # the Optuna search's (metric, mode)
    pareto: list[dict[str, Any]] = field(default_factory=list)  # DIR/pareto.parquet's rows

    @property
    def ok(self) -> list[dict[str, Any]]:
        return [r for r in self.rows if r.get("status") == "ok"]

    @property
    def styles(self) -> dict[str, tuple[str, str]]:
        return method_styles(self.rows)


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110, bbox_inches="tight")  # "tight": legends placed beside the axes are kept
    _plt().close(fig)
    return path


# ------------------------------------------------------------------------------------------ styles, axes
DENSE_STYLE = ("#000000", "s")
_MARKERS = "oD^vsP*Xph<>"


def method_styles(rows: list[dict[str, Any]]) -> dict[str, tuple[str, str]]:
    """Method -> (colour, marker), the same in every figure of a report: from the sorted method names of
    every trial (failed ones too, so a method that failed everywhere does not shift the others)."""
    from matplotlib import colormaps

    methods = sorted({str(r["method"]) for r in rows if r.get("method")} - {"dense"})
    palette = colormaps["tab10" if len(methods) <= 10 else "tab20"].colors
    styles = {m: (_hex(palette[i % len(palette)]), _MARKERS[i % len(_MARKERS)]) for i, m in enumerate(methods)}
    return {**styles, "dense": DENSE_STYLE}


def _hex(rgb) -> str:
    return "#" + "".join(f"{round(c * 255):02x}" for c in rgb[:3])


def _plain(v: float) -> str:
    """A tick label without scientific notation: 0.05, 0.9, 300, 12k, 3.4M."""
    if v == 0:
        return "0"
    for scale, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(v) >= scale:
            return f"{v / scale:.3g}{suffix}"
    return f"{v:.3g}"


def _spread_ticks(values: list[float], max_ticks: int = 9) -> list[float]:
    """At most ``max_ticks`` of the values, far enough apart on a log axis for their labels to fit."""
    values = sorted({v for v in values if v > 0})
    if len(values) <= 1:
        return values
    gap = (math.log10(values[-1]) - math.log10(values[0])) / (max_ticks - 1)
    kept = [values[0]]
    for v in values[1:]:
        if math.log10(v) - math.log10(kept[-1]) >= gap * 0.999:
            kept.append(v)
    if kept[-1] != values[-1]:
        kept[-1] = values[-1]  # the extreme point (the sweep's highest sparsity) always labelled
    return kept


def _density_axis(ax, densities: list[float], xlabel: str, ylabel: str) -> None:
    """Density on a log axis, decreasing to the right (more pruning further along), as the papers plot
    it; ticks at the swept densities, in plain numbers."""
    from matplotlib.ticker import FixedLocator, FuncFormatter, NullLocator

    ax.set_xscale("log")
    ticks = _spread_ticks(densities)
    if ticks:
        ax.xaxis.set_major_locator(FixedLocator(ticks))
        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: _plain(v)))
        ax.xaxis.set_minor_locator(NullLocator())
        lo, hi = min(ticks), max(ticks)
        pad = 10 ** (0.06 * max(math.log10(hi / lo), 0.5))
        ax.set_xlim(hi * pad, lo / pad)  # decreasing: more pruning to the right
    else:
        ax.invert_xaxis()
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)


def _log_cost_axis(axis, values: list[float]) -> None:
    """A log axis with a few plain labels (12k, 3.4M), never the crowded minor labels of a short range."""
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    positive = [v for v in values if v > 0]
    decades = math.log10(max(positive) / min(positive)) if positive else 0.0
    subs = (1.0, 2.0, 5.0) if decades < 1.5 else (1.0, 3.0) if decades < 3 else (1.0,)
    axis.set_major_locator(LogLocator(base=10, subs=subs, numticks=12))
    axis.set_major_formatter(FuncFormatter(lambda v, _: _plain(v)))
    axis.set_minor_formatter(NullFormatter())


def _accuracy_limits(ax, values: list[float]) -> None:
    """From the data, so that the region where methods differ is not squashed into a corner."""
    values = [v for v in values if v is not None and math.isfinite(v)]
    if not values:
        return
    lo, hi = min(values), max(values)
    pad = max(0.05 * (hi - lo), 0.01)
    ax.set_ylim(max(0.0, lo - pad), min(1.0, hi + pad))


def _legend(ax) -> None:
    """Beside the axes (never over the data), in a readable size."""
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0.0, frameon=False)


def _density(r: dict) -> float | None:
    d = finite(r.get("density"))
    if d is None and finite(r.get("target_sparsity")) is not None:
        d = 1.0 - float(r["target_sparsity"])
    return d


def _dense_band(ax, data: "SweepData") -> list[float]:
    """The dense baseline: its mean test accuracy as a line and its std over seeds as a band."""
    dense = [a for a in (finite(r.get("test_accuracy")) for r in data.ok if r.get("method") == "dense")
             if a is not None]
    if not dense:
        return []
    mean = statistics.fmean(dense)
    std = statistics.stdev(dense) if len(dense) > 1 else 0.0
    ax.axhline(mean, color="black", linestyle="--", linewidth=1, label=f"dense (n={len(dense)})")
    if std:
        ax.axhspan(mean - std, mean + std, color="black", alpha=0.08, linewidth=0)
    return [mean - std, mean + std]


# ------------------------------------------------------------------------------------------ figures
def accuracy_vs_density(data: SweepData, path: Path) -> Path | None:
    """Mean and std over seeds per method and target density (grid), search trials as points, the
    dense baseline as a line with its spread: the pruning papers' main plot."""
    plt = _plt()
    grid: dict[str, dict[float, list[float]]] = defaultdict(lambda: defaultdict(list))
    search: dict[str, list[tuple[float, float]]] = defaultdict(list)
    for r in data.ok:
        acc, d = finite(r.get("test_accuracy")), _density(r)
        if acc is None or d is None or r.get("method") == "dense":
            continue
        if r.get("phase") == "grid":
            grid[r["method"]][round(1.0 - float(r["target_sparsity"]), 6)].append(acc)
        else:
            search[r["method"]].append((d, acc))
    if not grid and not search and not any(r.get("method") == "dense" for r in data.ok):
        return None
    fig, ax = plt.subplots(figsize=(7.5, 4.6))
    shown: list[float] = _dense_band(ax, data)
    for method in sorted(grid):
        colour, marker = data.styles[method]
        pts = sorted(grid[method].items(), reverse=True)
        xs = [d for d, _ in pts]
        means = [statistics.fmean(a) for _, a in pts]
        stds = [statistics.stdev(a) if len(a) > 1 else 0.0 for _, a in pts]
        ax.plot(xs, means, marker=marker, color=colour, label=f"{method} (n={max(len(a) for _, a in pts)})")
        ax.fill_between(xs, [m - s for m, s in zip(means, stds)], [m + s for m, s in zip(means, stds)],
                        color=colour, alpha=0.15, linewidth=0)
        shown += [m - s for m, s in zip(means, stds)] + [m + s for m, s in zip(means, stds)]
    for method in sorted(search):
        colour, _ = data.styles[method]
        xs, ys = zip(*search[method])
        ax.scatter(xs, ys, marker="x", s=40, color=colour, label=f"{method} (search)")
        shown += ys
    densities = [d for m in grid.values() for d in m] or [d for pts in search.values() for d, _ in pts]
    _density_axis(ax, densities, "density (fraction of prunable weights kept, log)", "test accuracy")
    _accuracy_limits(ax, shown)
    _legend(ax)
    return _save(fig, path)


def pareto_front(points: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """The (cost, accuracy) points no other point beats on both (lower cost, higher accuracy)."""
    front, best = [], -math.inf
    for cost, acc in sorted(points, key=lambda p: (p[0], -p[1])):
        if acc > best:
            front.append((cost, acc))
            best = acc
    return front


def accuracy_vs_cost(data: SweepData, path: Path) -> Path | None:
    """Accuracy against remaining parameters, FLOPs and (where measured) latency, with the front of
    the non-dominated trials."""
    plt = _plt()
    axes_of = [(c, label) for c, label in (("remaining_params", "remaining parameters"), ("flops", "FLOPs"),
                                           ("latency_ms", "latency (ms)"))
               if any(finite(r.get(c)) is not None for r in data.ok)]
    if not axes_of:
        return None
    fig, axes = plt.subplots(1, len(axes_of), figsize=(4.6 * len(axes_of), 4), squeeze=False)
    for ax, (col, label) in zip(axes[0], axes_of):
        by_method: dict[tuple[str, bool], list[tuple[float, float]]] = defaultdict(list)
        for r in data.ok:
            x, y = finite(r.get(col)), finite(r.get("test_accuracy"))
            if x is not None and y is not None:
                by_method[(r["method"], r.get("phase") != "grid")].append((x, y))
        for method, searched in sorted(by_method):
            colour, marker = data.styles[method]
            xs, ys = zip(*by_method[(method, searched)])
            ax.scatter(xs, ys, s=22, color=colour, marker="x" if searched else marker,
                       label=f"{method} (search)" if searched else method)
        points = [p for pts in by_method.values() for p in pts]
        front = pareto_front(points)
        if front:
            ax.step(*zip(*front), where="post", color="black", linewidth=1, label="Pareto front")
        ax.set_xscale("log")
        _log_cost_axis(ax.xaxis, [x for x, _ in points])
        _accuracy_limits(ax, [y for _, y in points])
        ax.set_xlabel(f"{label} (log)")
        ax.set_ylabel("test accuracy")
        ax.grid(alpha=0.3)
    _legend(axes[0][-1])
    return _save(fig, path)


def search_front(data: SweepData, path: Path) -> Path | None:
    """The Optuna search in its own objectives: every completed search trial, the non-dominated ones
    (``pareto.parquet``) highlighted and joined; one panel per pair of objectives."""
    if len(data.objectives) < 2:
        return None
    done = [r for r in data.ok if r.get("phase") == "optuna"]
    pairs = list(itertools.combinations(data.objectives, 2))
    if not done or not pairs:
        return None
    plt = _plt()
    fig, axes = plt.subplots(1, len(pairs), figsize=(5 * len(pairs), 4), squeeze=False)
    front_ids = {r.get("trial_id") for r in data.pareto}
    for ax, ((mx, dx), (my, dy)) in zip(axes[0], pairs):
        pts = [(finite(r.get(mx)), finite(r.get(my)), r.get("trial_id") in front_ids) for r in done]
        pts = [p for p in pts if p[0] is not None and p[1] is not None]
        if not pts:
            continue
        ax.scatter([p[0] for p in pts if not p[2]], [p[1] for p in pts if not p[2]], s=18, color="grey",
                   label="completed")
        front = sorted((p[0], p[1]) for p in pts if p[2])
        if front:
            ax.plot(*zip(*front), marker="o", color="tab:red", label="Pareto front")
        ax.set_xlabel(f"{mx} ({dx})")
        ax.set_ylabel(f"{my} ({dy})")
        ax.grid(alpha=0.3)
    _legend(axes[0][-1])
    return _save(fig, path)


def _ticket_costs(r: dict) -> tuple[float, float, float, float]:
    """(wall, passes) this trial cost the sweep (shared stages split among their users) and (wall,
    passes) of its ticket found alone (every stage it needs, a small set's whole distillation)."""
    def num(key: str) -> float:
        return finite(r.get(key)) or 0.0

    return (num("search_amortized_wall_time_s") + num("distill_amortized_wall_time_s"),
            num("search_amortized_sample_passes") + num("distill_amortized_sample_passes"),
            num("search_wall_time_s") + num("distill_wall_time_s"),
            num("search_sample_passes") + num("distill_sample_passes"))


def search_cost(data: SweepData, path: Path) -> Path | None:
    """Time-to-ticket: what finding each mask cost, in wall-clock and in sample passes: solid, the
    trial's share (a stage several trials used, such as the pre-training every at-init trial scores,
    split among them); dotted, the same ticket found alone; search trials as crosses."""
    plt = _plt()
    grid: dict[str, dict[float, list[tuple[float, float, float, float]]]] = defaultdict(lambda: defaultdict(list))
    search: dict[str, list[tuple[float, tuple[float, float, float, float]]]] = defaultdict(list)
    for r in data.ok:
        d = _point_density(r)
        if r.get("method") == "dense" or d is None:
            continue
        if r.get("phase") == "grid":
            grid[r["method"]][d].append(_ticket_costs(r))
        else:
            search[r["method"]].append((d, _ticket_costs(r)))
    if not grid and not search:
        return None
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(11, 4))
    methods = sorted(set(grid) | set(search))
    for i, method in enumerate(methods):
        colour, marker = data.styles[method]
        dodge = 1.0 + 0.06 * (i - (len(methods) - 1) / 2)  # equal values (0 passes) stay visible side by side
        by_d = grid.get(method, {})
        ds = sorted(by_d, reverse=True)
        for ax, share, alone in ((a1, 0, 2), (a2, 1, 3)):
            if ds:
                mean_share = [statistics.fmean(c[share] for c in by_d[d]) for d in ds]
                ax.plot([d * dodge for d in ds], mean_share, marker=marker, color=colour, label=method)
                full = [statistics.fmean(c[alone] for c in by_d[d]) for d in ds]
                if any(abs(f - m) > 1e-9 for f, m in zip(full, mean_share)):
                    ax.plot([d * dodge for d in ds], full, linestyle=":", color=colour)
            if search.get(method):
                ax.scatter([d for d, _ in search[method]], [c[share] for _, c in search[method]], marker="x",
                           s=40, color=colour, label=f"{method} (search)")
    densities = [d for by_d in grid.values() for d in by_d] or [d for pts in search.values() for d, _ in pts]
    costs = [c for by_d in grid.values() for cs in by_d.values() for c in cs] + \
        [c for pts in search.values() for _, c in pts]
    for ax, label, i in ((a1, "search wall-clock (s)", 0), (a2, "search sample passes", 1)):
        _density_axis(ax, densities, "density (log)", label)
        _zero_and_log_axis(ax, [c[j] for c in costs for j in (i, i + 2)])
    a2.plot([], [], color="grey", linestyle=":", label="found alone")
    _legend(a2)
    return _save(fig, path)


def _zero_and_log_axis(ax, values: list[float]) -> None:
    """Linear from 0 up to the smallest cost's decade, log above, ticks at 0 and each decade: zero-cost
    methods (random, magnitude at init) sit on the floor, the others spread over their decades."""
    from matplotlib.ticker import FixedLocator, FuncFormatter, NullLocator

    positive = [v for v in values if v > 0]
    floor = 10 ** math.floor(math.log10(min(positive))) if positive else 1.0
    top = max(positive) if positive else 1.0
    ax.set_yscale("symlog", linthresh=floor)
    decades = [floor * 10 ** k for k in range(int(math.log10(top / floor)) + 2)]
    ax.yaxis.set_major_locator(FixedLocator([0.0, *decades]))
    ax.yaxis.set_minor_locator(NullLocator())
    ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: _plain(v)))
    ax.set_ylim(0, top * 1.5)


def _point_density(r: dict) -> float | None:
    """A grid trial at its target (the swept point, where the ticks are), a search trial where it landed."""
    if r.get("phase") == "grid" and finite(r.get("target_sparsity")) is not None:
        return round(1.0 - float(r["target_sparsity"]), 6)
    d = _density(r)
    return round(d, 6) if d is not None else None


def chosen_sparsity(data: SweepData) -> float | None:
    """The highest target sparsity that the most methods reached on the grid."""
    methods_at: dict[float, set[str]] = defaultdict(set)
    for r in data.ok:
        if r.get("phase") == "grid" and r.get("method") != "dense":
            methods_at[round(float(r["target_sparsity"]), 6)].add(r["method"])
    if not methods_at:
        return None
    return max(methods_at, key=lambda s: (len(methods_at[s]), s))


def layer_density_heatmap(data: SweepData, path: Path, sparsity: float | None = None) -> Path | None:
    """Per-layer density of each method's mask at one sparsity: a collapsed layer (nothing kept) is
    boxed red, a near-collapsed one (under NEAR_COLLAPSE_FRACTION of the mask's density) orange."""
    from matplotlib.patches import Rectangle

    plt = _plt()
    sparsity = sparsity if sparsity is not None else chosen_sparsity(data)
    if sparsity is None:
        return None
    per_method: dict[str, tuple[dict[str, float], float]] = {}
    for r in data.ok:
        if r.get("phase") == "grid" and abs(float(r["target_sparsity"]) - sparsity) < 1e-6 \
                and r["method"] not in per_method:
            layers = data.layer_density(r)
            if layers:
                per_method[r["method"]] = (layers, _density(r) or 0.0)
    if not per_method:
        return None
    layers = list(next(iter(per_method.values()))[0])
    methods = sorted(per_method)
    values = [[per_method[m][0].get(layer, math.nan) for layer in layers] for m in methods]
    top = max(1e-9, max(v for row in values for v in row if math.isfinite(v)))
    fig, ax = plt.subplots(figsize=(max(6, 0.6 * len(layers) + 3), 0.45 * len(methods) + 2))
    im = ax.imshow(values, aspect="auto", cmap="viridis", vmin=0, vmax=top)
    ax.set_xticks(range(len(layers)), [layer.removesuffix(".weight") for layer in layers], rotation=60,
                  ha="right", fontsize=7)
    ax.set_yticks(range(len(methods)), methods, fontsize=8)
    for i, (method, row) in enumerate(zip(methods, values)):
        overall = per_method[method][1]
        for j, v in enumerate(row):
            ax.text(j, i, "0" if v == 0 else f"{v:.2g}", ha="center", va="center", fontsize=6,
                    color="white" if v < 0.5 * top else "black")
            edge = "red" if v == 0 else "orange" if v < NEAR_COLLAPSE_FRACTION * overall else None
            if edge:
                ax.add_patch(Rectangle((j - 0.5, i - 0.5), 1, 1, fill=False, edgecolor=edge, linewidth=2))
    ax.set_title(f"per-layer density at sparsity {sparsity:g} (red: collapsed, orange: under "
                 f"{NEAR_COLLAPSE_FRACTION:g} of the overall density)", fontsize=9)
    fig.colorbar(im, ax=ax, label="density")
    return _save(fig, path)


def deepest_level_curves(data: SweepData) -> dict[tuple[str, Any], list[dict]]:
    """(method, seed) -> the level curve of that method's deepest trial for that seed (the most levels:
    the target 0.5 trial's curve stops where the 0.95 one goes on)."""
    deepest: dict[tuple[str, Any], dict] = {}
    for r in data.ok:
        if not r.get("levels"):
            continue
        key = (r["method"], r.get("seed"))
        if key not in deepest or r["levels"] > deepest[key]["levels"]:
            deepest[key] = r
    curves = {key: data.level_curve(r) for key, r in deepest.items()}
    return {key: c for key, c in curves.items() if c}


def imp_levels(data: SweepData, path: Path) -> Path | None:
    """Accuracy of every trained IMP level (real or small-set search), by density, from each method's
    deepest trial per seed."""
    plt = _plt()
    curves = deepest_level_curves(data)
    if not curves:
        return None
    fig, ax = plt.subplots(figsize=(7.5, 4.2))
    seeds = sorted({seed for _, seed in curves}, key=str)
    shown, densities = [], []
    for method, seed in sorted(curves, key=lambda k: (k[0], str(k[1]))):
        pts = sorted(((lv["density"], lv["test_accuracy"]) for lv in curves[(method, seed)]
                      if finite(lv.get("density")) and finite(lv.get("test_accuracy")) is not None), reverse=True)
        if pts:
            colour, marker = data.styles[method]
            ax.plot(*zip(*pts), marker=marker, markersize=4, color=colour, label=f"{method} seed={seed}",
                    linestyle=["-", "--", "-.", ":"][seeds.index(seed) % 4])
            densities += [d for d, _ in pts]
            shown += [a for _, a in pts]
    _dense_band(ax, data)
    _density_axis(ax, densities, "level density (log)", "test accuracy of the level's net")
    _accuracy_limits(ax, shown + [finite(r.get("test_accuracy")) for r in data.ok if r.get("method") == "dense"])
    _legend(ax)
    return _save(fig, path)


FIGURES: list[tuple[str, str, str, Callable[[SweepData, Path], Path | None]]] = [
    ("accuracy_vs_density", "Accuracy vs density",
     "Mean and std (band) over seeds per method on the grid, n seeds in the legend; search trials as crosses; "
     "dense baseline dashed with its std shaded. Ticks at the swept densities.", accuracy_vs_density),
    ("accuracy_vs_cost", "Accuracy vs cost", "Every finished trial (search trials as crosses); the black step is "
     "the Pareto front.", accuracy_vs_cost),
    ("search_front", "Search: Pareto front",
     "The Optuna search in its objectives: grey, every completed trial (early-stopped ones never are); red, the "
     "non-dominated ones (pareto.parquet).", search_front),
    ("search_cost", "Time to ticket",
     "What finding each mask cost, mean over seeds. Solid: the trial's share, a stage several trials used (the "
     "pre-training every at-init trial scores, IMP levels shared by every target, a distilled set) split among "
     "them. Dotted: the same ticket found alone, every stage it needs counted whole (drawn where it differs). "
     "Search trials as crosses. Grid methods are offset slightly to the side so that equal values (0 passes) stay "
    "visible.", search_cost),
    ("layer_density", "Per-layer density",
     f"Each method's mask at one sparsity (the highest most methods reached). Red box: a collapsed layer (nothing "
     f"kept); orange: near collapse, under {NEAR_COLLAPSE_FRACTION:g} of the mask's overall density.",
     layer_density_heatmap),
    ("imp_levels", "IMP levels", "Test accuracy of each trained IMP level (IMP, distilled IMP, subsets), from each "
     "method's deepest trial per seed; dense dashed.", imp_levels),
]


def draw(data: SweepData, out: Path) -> list[Figure]:
    figures = []
    for name, title, caption, fn in FIGURES:
        path = fn(data, out / f"{name}.png")
        if path is not None:
            figures.append(Figure(name, title, caption, path))
    for i, (label, picture) in enumerate(data.set_pictures):  # copied beside the others: the store may be remote
        path = out / f"small_set_{i}.png"
        shutil.copyfile(picture, path)
        figures.append(Figure(path.stem, f"Small training set: {label}", "The set the search trained on.", path))
    return figures


# ------------------------------------------------------------------------------------------ documents
SUMMARY_CAPTION = ("One line per point of the sweep: n finished trials, mean ± std over them, the change "
                   "against dense in accuracy points (paired by seed), and layers that kept under "
                   f"{NEAR_COLLAPSE_FRACTION:g} of the overall density (near collapse).")


def _tables(rows: list[dict]) -> tuple[str, str]:
    from .results import render
    from .summary import render_summary, summarize

    return render_summary(summarize(rows)), render(rows)


def write_markdown(title: str, rows: list[dict], figures: list[Figure], path: Path) -> Path:
    failed = [r for r in rows if r.get("status") != "ok"]
    summary, trials = _tables(rows)
    lines = [f"# {title}", "", f"{len(rows)} trials, {len(rows) - len(failed)} ok, {len(failed)} failed.", "",
             "## Summary", "", SUMMARY_CAPTION, "", "```", summary, "```", "",
             "## Trials", "", "```", trials, "```", ""]
    for f in figures:
        lines += [f"## {f.title}", "", f.caption, "", f"![{f.title}]({f.path.relative_to(path.parent)})", ""]
    if failed:
        lines += ["## Failed trials", ""] + [f"- `{r.get('slot')}` {r.get('method')}: {r.get('error')}" for r in failed]
    path.write_text("\n".join(lines) + "\n")
    return path


def write_html(title: str, rows: list[dict], figures: list[Figure], path: Path, description: str = "") -> Path:
    """One file, no external references: images are data URIs, styles inline."""
    esc = html.escape
    failed = [r for r in rows if r.get("status") != "ok"]
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>{esc(title)}</title>",
             "<style>body{font-family:sans-serif;max-width:1100px;margin:2em auto;color:#222}"
             "pre{background:#f6f6f6;padding:1em;overflow-x:auto;font-size:12px}"
             "img{max-width:100%;border:1px solid #ddd}figure{margin:2em 0}figcaption{color:#555;font-size:14px}"
             "td,th{padding:2px 8px;text-align:left;font-size:13px}</style></head><body>",
             f"<h1>{esc(title)}</h1>"]
    if description:
        parts.append(f"<p>{esc(description)}</p>")
    parts.append(f"<p>{len(rows)} trials, {len(rows) - len(failed)} ok, {len(failed)} failed.</p>")
    summary, trials = _tables(rows)
    parts.append(f"<h2>Summary</h2><p>{esc(SUMMARY_CAPTION)}</p><pre id='summary'>{esc(summary)}</pre>")
    parts.append(f"<h2>Trials</h2><pre id='trials'>{esc(trials)}</pre>")
    for f in figures:
        data = base64.b64encode(f.path.read_bytes()).decode()
        parts.append(f"<figure id='{esc(f.name)}'><h2>{esc(f.title)}</h2>"
                     f"<img alt='{esc(f.title)}' src='data:image/png;base64,{data}'>"
                     f"<figcaption>{esc(f.caption)}</figcaption></figure>")
    if failed:
        parts.append("<h2>Failed trials</h2><table><tr><th>slot</th><th>method</th><th>reason</th></tr>")
        parts += [f"<tr><td>{esc(str(r.get('slot')))}</td><td>{esc(str(r.get('method')))}</td>"
                  f"<td>{esc(str(r.get('error')))}</td></tr>" for r in failed]
        parts.append("</table>")
    parts.append("</body></html>")
    path.write_text("".join(parts))
    return path


# ------------------------------------------------------------------------------------------ a sweep dir
def sweep_data(out_dir: Path, rows: list[dict]) -> SweepData:
    """The rows plus readers into the sweep's store (per-layer densities, IMP levels, small sets), found
    through each row's ``stage_refs``."""
    from training.stage import read_json
    from training.store import ArtifactStore

    from .config import read_yaml
    from .sweep_state import SweepState

    state = SweepState.load(out_dir)
    store = ArtifactStore(state.store_uri if state else out_dir / "store")
    raw = read_yaml(out_dir / "config.yaml") if (out_dir / "config.yaml").is_file() else None

    def entry(ref: str | None):
        return store.get(*ref.split("/", 1)) if ref else None

    def layer_density(row: dict) -> dict[str, float] | None:
        e = entry(_refs(row).get("evaluated"))
        return None if e is None else {n: v["density"] for n, v in read_json(e, "sparsity.json")["layers"].items()}

    def level_curve(row: dict) -> list[dict] | None:
        entries = [entry(ref) for ref in _refs(row).get("levels") or []]
        return [read_json(e, "record.json") for e in entries if e is not None and (e.path / "record.json").is_file()] or None

    pictures: dict[str, tuple[str, Path]] = {}
    for r in rows:
        ref = _refs(r).get("small_set") if r.get("status") == "ok" else None
        e = entry(ref)
        if e is not None and (e.path / "set.png").is_file():
            pictures.setdefault(ref, (f"{r.get('small_set_method')}, {r.get('small_set_size')} examples", e.path / "set.png"))
    objectives: list[tuple[str, str]] = []
    if raw is not None and (raw.get("sweep") or {}).get("optuna"):
        objectives = [(o.get("metric", "val_accuracy"), o.get("mode", "max"))
                      for o in raw["sweep"]["optuna"].get("objectives") or [{}]]
    pareto = []
    if (out_dir / "pareto.parquet").is_file():
        import pyarrow.parquet as pq

        pareto = pq.read_table(out_dir / "pareto.parquet").to_pylist()
    return SweepData(rows, layer_density, level_curve, list(pictures.values()), objectives, pareto)


def _refs(row: dict) -> dict:
    return json.loads(row["stage_refs"]) if row.get("stage_refs") else {}


def build_report(out_dir: Path, rows: list[dict] | None = None, title: str | None = None,
                 description: str = "") -> tuple[Path, Path, list[Figure]]:
    """Draw every figure into DIR/figures, then DIR/report.html and DIR/report.md."""
    import pyarrow.parquet as pq

    out_dir = Path(out_dir)
    if rows is None:
        rows = pq.read_table(out_dir / "results.parquet").to_pylist()
    figures = draw(sweep_data(out_dir, rows), out_dir / FIGURES_DIR)
    if title is None:
        from .sweep_state import SweepState

        state = SweepState.load(out_dir)
        title = f"Sweep {state.name if state is not None else out_dir.name}"
    return (write_html(title, rows, figures, out_dir / "report.html", description),
            write_markdown(title, rows, figures, out_dir / "report.md"), figures)
