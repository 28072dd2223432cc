"""A sweep's report: the figures researchers judge a pruning sweep by, as PNG files, one self-contained
``report.html`` (images embedded: it opens offline and can be mailed) and ``report.md`` for terminals
and pull requests.

Everything is read back from what the sweep left in DIR (results.parquet, the stage store, the
config), so ``prunetune report DIR`` redraws a finished or interrupted sweep at any time.
"""
from __future__ import annotations

import base64
import html
import json
import itertools
import math
import shutil
import statistics
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

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


def _num(v: Any) -> float | None:
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) else None


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    _plt().close(fig)
    return path


def _density_axis(ax, xlabel: str, ylabel: str) -> None:
    """Density on a log axis, decreasing to the right (more pruning further along), as the papers plot it."""
    ax.set_xscale("log")
    ax.invert_xaxis()
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3, which="both")


def _density(r: dict) -> float | None:
    d = _num(r.get("density"))
    if d is None and _num(r.get("target_sparsity")) is not None:
        d = 1.0 - float(r["target_sparsity"])
    return d


# ------------------------------------------------------------------------------------------ figures
def accuracy_vs_density(data: SweepData, path: Path) -> Path | None:
    """Mean and std over seeds per method and target density (grid), search trials as points, the
    dense baseline as a line: the pruning papers' main plot."""
    plt = _plt()
    grid: dict[str, dict[float, list[float]]] = defaultdict(lambda: defaultdict(list))
    search: dict[str, list[tuple[float, float]]] = defaultdict(list)
    dense = []
    for r in data.ok:
        acc, d = _num(r.get("test_accuracy")), _density(r)
        if acc is None or d is None:
            continue
        if r.get("method") == "dense":
            dense.append(acc)
        elif r.get("phase") == "grid":
            grid[r["method"]][round(float(r["target_sparsity"]), 6)].append(acc)
        else:
            search[r["method"]].append((d, acc))
    if not grid and not search and not dense:
        return None
    fig, ax = plt.subplots(figsize=(7.5, 4.6))
    for method in sorted(grid):
        pts = sorted(grid[method].items(), reverse=True)
        xs = [1.0 - s for s, _ in pts]
        means = [statistics.fmean(a) for _, a in pts]
        stds = [statistics.stdev(a) if len(a) > 1 else 0.0 for _, a in pts]
        line, = ax.plot(xs, means, marker="o", label=f"{method} (grid, n={max(len(a) for _, a in pts)} seeds)")
        ax.fill_between(xs, [m - s for m, s in zip(means, stds)], [m + s for m, s in zip(means, stds)],
                        color=line.get_color(), alpha=0.15)
    for method in sorted(search):
        xs, ys = zip(*search[method])
        ax.scatter(xs, ys, marker="x", s=40, label=f"{method} (search)")
    if dense:
        ax.axhline(statistics.fmean(dense), color="black", linestyle="--", label="dense")
    _density_axis(ax, "density (fraction of prunable weights kept, log)", "test accuracy")
    ax.legend(fontsize=7)
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
               if any(_num(r.get(c)) is not None for r in data.ok)]
    if not axes_of:
        return None
    fig, axes = plt.subplots(1, len(axes_of), figsize=(5 * len(axes_of), 4), squeeze=False)
    for ax, (col, label) in zip(axes[0], axes_of):
        by_method: dict[str, list[tuple[float, float]]] = defaultdict(list)
        for r in data.ok:
            x, y = _num(r.get(col)), _num(r.get("test_accuracy"))
            if x is not None and y is not None:
                by_method[f"{r['method']} ({r.get('phase')})"].append((x, y))
        for name in sorted(by_method):
            xs, ys = zip(*by_method[name])
            ax.scatter(xs, ys, s=18, label=name, marker="x" if name.endswith("(optuna)") else "o")
        front = pareto_front([p for pts in by_method.values() for p in pts])
        if front:
            ax.step(*zip(*front), where="post", color="black", linewidth=1, label="Pareto front")
        ax.set_xscale("log")
        ax.set_xlabel(f"{label} (log)")
        ax.set_ylabel("test accuracy")
        ax.grid(alpha=0.3, which="both")
    axes[0][0].legend(fontsize=6)
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
        pts = [(_num(r.get(mx)), _num(r.get(my)), r.get("trial_id") in front_ids) for r in done]
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
    axes[0][0].legend(fontsize=7)
    return _save(fig, path)


def search_cost(data: SweepData, path: Path) -> Path | None:
    """Time-to-ticket: what finding each mask cost (search wall-clock and sample passes; a distilled
    set's cost alone and amortised over the trials that shared it)."""
    plt = _plt()
    series: dict[str, list[tuple[float, float, float, float]]] = defaultdict(list)
    for r in data.ok:
        d = _density(r)
        if r.get("method") == "dense" or d is None:
            continue
        wall = (_num(r.get("search_wall_time_s")) or 0.0) + (_num(r.get("distill_amortized_wall_time_s")) or 0.0)
        passes = (_num(r.get("search_sample_passes")) or 0.0) + (_num(r.get("distill_amortized_sample_passes")) or 0.0)
        alone = _num(r.get("distill_wall_time_s")) or 0.0
        series[r["method"]].append((d, wall, passes, alone))
    if not series:
        return None
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(11, 4))
    for method in sorted(series):
        by_d: dict[float, list] = defaultdict(list)
        for d, wall, passes, alone in series[method]:
            by_d[round(d, 6)].append((wall, passes, alone))
        ds = sorted(by_d, reverse=True)
        line, = a1.plot(ds, [statistics.fmean(w for w, _, _ in by_d[d]) for d in ds], marker="o", label=method)
        a2.plot(ds, [statistics.fmean(p for _, p, _ in by_d[d]) for d in ds], marker="o", label=method,
                color=line.get_color())
        alone = [statistics.fmean(a for _, _, a in by_d[d]) for d in ds]
        if any(alone):
            a1.plot(ds, alone, linestyle=":", color=line.get_color(), label=f"{method}: distillation alone")
    for ax, label in ((a1, "search wall-clock (s, distillation amortised)"), (a2, "search sample passes")):
        _density_axis(ax, "density (log)", label)
        ax.set_yscale("symlog", linthresh=1.0)
        ax.set_ylim(bottom=0)
    a1.legend(fontsize=7)
    return _save(fig, path)


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
    """Per-layer density of each method's mask at one sparsity: layer collapse is a column of zeros."""
    plt = _plt()
    sparsity = sparsity if sparsity is not None else chosen_sparsity(data)
    if sparsity is None:
        return None
    per_method: dict[str, dict[str, float]] = {}
    for r in data.ok:
        if r.get("phase") == "grid" and abs(float(r["target_sparsity"]) - sparsity) < 1e-6 \
                and r["method"] not in per_method:
            layers = data.layer_density(r)
            if layers:
                per_method[r["method"]] = layers
    if not per_method:
        return None
    layers = list(next(iter(per_method.values())))
    methods = sorted(per_method)
    values = [[per_method[m].get(layer, math.nan) for layer in layers] for m in methods]
    fig, ax = plt.subplots(figsize=(max(6, 0.5 * len(layers) + 3), 0.45 * len(methods) + 2))
    im = ax.imshow(values, aspect="auto", cmap="viridis", vmin=0, vmax=max(1e-9, max(max(v) for v in values)))
    ax.set_xticks(range(len(layers)), [layer.removesuffix(".weight") for layer in layers], rotation=60,
                  ha="right", fontsize=7)
    ax.set_yticks(range(len(methods)), methods, fontsize=8)
    for i, row in enumerate(values):
        for j, v in enumerate(row):
            ax.text(j, i, "0" if v == 0 else f"{v:.2g}", ha="center", va="center", fontsize=6,
                    color="white" if v < 0.5 * max(max(r) for r in values) else "black")
    ax.set_title(f"per-layer density at sparsity {sparsity:g}", fontsize=9)
    fig.colorbar(im, ax=ax, label="density")
    return _save(fig, path)


def imp_levels(data: SweepData, path: Path) -> Path | None:
    """Accuracy of every trained IMP level (real or small-set search), by density."""
    plt = _plt()
    curves: dict[str, list[dict]] = {}
    for r in data.ok:
        name = f"{r['method']} seed={r.get('seed')}"
        if name in curves:
            continue
        levels = data.level_curve(r)
        if levels:
            curves[name] = levels
    if not curves:
        return None
    fig, ax = plt.subplots(figsize=(7, 4))
    for name in sorted(curves):
        pts = sorted(((lv["density"], lv["test_accuracy"]) for lv in curves[name]
                      if _num(lv.get("density")) and _num(lv.get("test_accuracy")) is not None), reverse=True)
        if pts:
            ax.plot(*zip(*pts), marker=".", label=name)
    _density_axis(ax, "level density (log)", "test accuracy of the level's net")
    ax.legend(fontsize=7)
    return _save(fig, path)


FIGURES: list[tuple[str, str, str, Callable[[SweepData, Path], Path | None]]] = [
    ("accuracy_vs_density", "Accuracy vs density",
     "Mean and std over seeds per method (grid); search trials as crosses; dense baseline dashed.",
     accuracy_vs_density),
    ("accuracy_vs_cost", "Accuracy vs cost", "Every finished trial; the black step is the Pareto front.",
     accuracy_vs_cost),
    ("search_front", "Search: Pareto front",
     "The Optuna search in its objectives: grey, every completed trial (early-stopped ones never are); red, the "
     "non-dominated ones (pareto.parquet).", search_front),
    ("search_cost", "Time to ticket",
     "What finding each mask cost: search wall-clock and sample passes (distillation amortised over the "
     "trials sharing a set; dotted: distillation alone).", search_cost),
    ("layer_density", "Per-layer density",
     "Each method's mask at one sparsity (the highest most methods reached); a zero column is layer collapse.",
     layer_density_heatmap),
    ("imp_levels", "IMP levels", "Test accuracy of each trained IMP level (IMP, distilled IMP, subsets).",
     imp_levels),
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
def _summary(rows: list[dict]) -> str:
    from .results import render

    return render(rows)


def write_markdown(title: str, rows: list[dict], figures: list[Figure], path: Path) -> Path:
    failed = [r for r in rows if r.get("status") != "ok"]
    lines = [f"# {title}", "", f"{len(rows)} trials, {len(rows) - len(failed)} ok, {len(failed)} failed.", "",
             "```", _summary(rows), "```", ""]
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
    parts.append(f"<h2>Results</h2><pre>{esc(_summary(rows))}</pre>")
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
    """The rows plus readers into the sweep's store (per-layer densities, IMP levels, small sets)."""
    from training.stage import read_json
    from training.store import ArtifactStore

    from .config import read_yaml, trial_config
    from .sweep_state import SweepState
    from .trial import trial_graph

    state = SweepState.load(out_dir)
    store = ArtifactStore(state.store_uri if state else out_dir / "store")
    raw = read_yaml(out_dir / "config.yaml") if (out_dir / "config.yaml").is_file() else None

    def layer_density(row: dict) -> dict[str, float] | None:
        entry = store.get("evaluate", row["trial_key"]) if row.get("trial_key") else None
        if entry is None:
            return None
        return {n: v["density"] for n, v in read_json(entry, "sparsity.json")["layers"].items()}

    def graph(row: dict):
        if raw is None:
            return None
        return trial_graph(trial_config(raw, json.loads(row.get("overrides") or "{}")))

    def level_curve(row: dict) -> list[dict] | None:
        g = graph(row) if row.get("levels") else None
        if g is None:
            return None
        entries = [store.get(s.name, s.key) for s in g.plan.levels]
        return [read_json(e, "record.json") for e in entries if e is not None and (e.path / "record.json").is_file()]

    pictures: dict[str, tuple[str, Path]] = {}
    for r in rows:
        g = graph(r) if r.get("small_set_hash") and r.get("status") == "ok" else None
        small = g.plan.small_set if g is not None else None
        entry = store.get(small.name, small.key) if small is not None else None
        if entry is not None and (entry.path / "set.png").is_file():
            pictures.setdefault(small.key, (f"{r.get('small_set_method')} {small.cfg.ipc}/class", entry.path / "set.png"))
    objectives: list[tuple[str, str]] = []
    if raw is not None and (raw.get("sweep") or {}).get("optuna"):
        objectives = [(o.get("metric", "val_accuracy"), o.get("mode", "max"))
                      for o in raw["sweep"]["optuna"].get("objectives") or [{}]]
    pareto = []
    if (out_dir / "pareto.parquet").is_file():
        import pyarrow.parquet as pq

        pareto = pq.read_table(out_dir / "pareto.parquet").to_pylist()
    return SweepData(rows, layer_density, level_curve, list(pictures.values()), objectives, pareto)


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
