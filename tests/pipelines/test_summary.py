"""The sweep at a glance: summary.parquet, the console's summary table, and the report's figures
(ticks at the swept points, no overlapping labels, one colour per method in every figure)."""
import json
import math
import os
import statistics
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from pipelines.cli import main
from pipelines.report import SweepData, deepest_level_curves, draw, method_styles
from pipelines.results import amortize_shared_costs
from pipelines.summary import render_summary, summarize
from tests import browser
from tests.figure_checks import capture, check_figures

ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"


def _row(method, sparsity, seed, acc, val=None, status="ok", lr=None, **more):
    overrides = {"prune.method": method, "prune.sparsity": sparsity, "seed": seed}
    if lr is not None:
        overrides["train.lr"] = lr
    return {"phase": "grid", "method": method, "target_sparsity": sparsity, "seed": seed, "status": status,
            "test_accuracy": acc if status == "ok" else None, "val_accuracy": val, "density": 1 - sparsity,
            "achieved_sparsity": sparsity, "overrides": json.dumps(overrides), **more}


def test_summary_is_mean_std_n_and_the_seed_paired_change_against_dense():
    rows = [_row("dense", 0.0, 0, 0.90), _row("dense", 0.0, 1, 0.94),
            _row("snip", 0.9, 0, 0.80, val=0.7), _row("snip", 0.9, 1, 0.86, val=0.9),
            _row("snip", 0.9, 2, None, status="error"),
            _row("synflow", 0.9, 0, 0.85, near_collapsed_layers="fc.weight")]
    points = {(p["method"], p["target_sparsity"]): p for p in summarize(rows)}
    snip = points[("snip", 0.9)]
    assert snip["n"] == 2 and snip["failed"] == 1 and snip["seeds"] == "0,1"
    assert snip["test_accuracy_mean"] == pytest.approx(0.83)
    assert snip["test_accuracy_std"] == pytest.approx(statistics.stdev([0.80, 0.86]))
    assert snip["val_accuracy_mean"] == pytest.approx(0.8)
    # paired by seed: 0.80 - 0.90 and 0.86 - 0.94
    assert snip["delta_test_accuracy_mean"] == pytest.approx(-0.09)
    assert snip["delta_test_accuracy_std"] == pytest.approx(statistics.stdev([-0.10, -0.08]))
    synflow = points[("synflow", 0.9)]
    assert synflow["n"] == 1 and synflow["test_accuracy_std"] is None
    assert synflow["delta_test_accuracy_mean"] == pytest.approx(0.85 - 0.90)
    assert synflow["near_collapsed_layers"] == "fc.weight"
    dense = points[("dense", 0.0)]
    assert dense["delta_test_accuracy_mean"] is None and dense["test_accuracy_mean"] == pytest.approx(0.92)

    text = render_summary(summarize(rows))
    line = next(li for li in text.splitlines() if " snip " in li)
    assert "83.00 ± 4.24" in line and "-9.00 ± 1.41" in line and "1 failed" in line
    assert "near-collapsed: fc.weight" in next(li for li in text.splitlines() if " synflow " in li)


def test_a_swept_training_setting_splits_points_and_picks_its_own_dense():
    rows = [_row("dense", 0.0, 0, 0.90, lr=0.1), _row("dense", 0.0, 0, 0.70, lr=0.01),
            _row("snip", 0.9, 0, 0.80, lr=0.1), _row("snip", 0.9, 0, 0.65, lr=0.01)]
    points = {(p["method"], p["train.lr"]): p for p in summarize(rows)}
    assert points[("snip", 0.1)]["delta_test_accuracy_mean"] == pytest.approx(-0.10)
    assert points[("snip", 0.01)]["delta_test_accuracy_mean"] == pytest.approx(-0.05)


def test_shared_stage_costs_are_split_among_the_trials_that_used_them():
    pretrain, score_a, score_b = "pretrain/k0", "score/ka", "score/kb"
    rows = [{"search_stage_costs": json.dumps({pretrain: [6.0, 0], score_a: [1.0, 100]})},
            {"search_stage_costs": json.dumps({pretrain: [6.0, 0], score_b: [2.0, 200]})}]
    amortize_shared_costs(rows)
    assert rows[0]["search_own_wall_time_s"] == 1.0 and rows[0]["search_amortized_wall_time_s"] == 4.0
    assert rows[1]["search_own_sample_passes"] == 200 and rows[1]["search_amortized_wall_time_s"] == 5.0


def _synthetic(methods=("imp", "magnitude", "snip", "synflow"), sparsities=(0.5, 0.8, 0.9, 0.95, 0.98)):
    rows = [_row("dense", 0.0, s, 0.93 + 0.01 * s, remaining_params=6000, flops=12000) for s in (0, 1)]
    for i, m in enumerate(methods):
        for sp in sparsities:
            for seed in (0, 1):
                d = 1 - sp
                rows.append(_row(m, sp, seed, 0.9 - (0.5 - 0.1 * i) * sp ** 8 + 0.01 * seed,
                                 remaining_params=6000 * d + 200, flops=12000 * d + 300,
                                 search_wall_time_s=3.0 + i, search_sample_passes=0 if m == "magnitude" else 1000 * i,
                                 search_amortized_wall_time_s=1.0 + i, search_amortized_sample_passes=500 * i,
                                 levels=int(math.log(d) / math.log(0.8)) if m == "imp" else None))
    return rows


def test_figures_have_ticks_at_the_swept_points_no_overlaps_and_one_colour_per_method(tmp_path, monkeypatch):
    rows = _synthetic()
    seen = capture(monkeypatch)
    data = SweepData(rows, layer_density=lambda r: {"a.weight": 0.0 if r["method"] == "snip" else 0.2,
                                                    "b.weight": 0.001, "c.weight": 0.3})
    figures = draw(data, tmp_path)
    assert {f.name for f in figures} >= {"accuracy_vs_density", "accuracy_vs_cost", "search_cost", "layer_density"}
    check_figures(seen)
    by_name = {d.name: d for d in seen}
    swept = ["0.02", "0.05", "0.1", "0.2", "0.5"]
    assert sorted(by_name["accuracy_vs_density"].tick_labels["0.x"], key=float) == swept
    assert sorted(by_name["search_cost"].tick_labels["0.x"], key=float) == swept
    styles = method_styles(rows)
    for d in seen:
        for method, colour in d.colours.items():
            if method in styles:
                assert colour == styles[method][0], (d.name, method)
    # y from the data: the pruned region is not squashed into [0, 1]
    assert by_name["accuracy_vs_density"].tick_labels["0.y"][0] != "0.0"


def test_collapsed_and_near_collapsed_cells_are_boxed(tmp_path, monkeypatch):
    import pipelines.report as report

    boxes = []
    original = report._save

    def save(fig, path):
        boxes.extend((round(p.get_x() + 0.5), round(p.get_y() + 0.5), p.get_edgecolor()[:3])
                     for ax in fig.axes for p in ax.patches)
        return original(fig, path)

    monkeypatch.setattr(report, "_save", save)
    rows = [_row("snip", 0.9, 0, 0.5), _row("synflow", 0.9, 0, 0.6)]
    layers = {"snip": {"a.weight": 0.0, "b.weight": 0.2}, "synflow": {"a.weight": 0.005, "b.weight": 0.2}}
    report.layer_density_heatmap(SweepData(rows, layer_density=lambda r: layers[r["method"]]), tmp_path / "h.png")
    # snip row 0, layer a collapsed (red); synflow row 1, layer a at 0.005 < 0.1 x 0.1 overall (orange)
    assert sorted(boxes) == [(0, 0, (1.0, 0.0, 0.0)), (0, 1, (1.0, 0.6470588235294118, 0.0))]


def test_imp_levels_come_from_each_seeds_deepest_trial():
    rows = [_row("imp", 0.5, 0, 0.9, levels=3), _row("imp", 0.95, 0, 0.8, levels=13), _row("imp", 0.8, 0, 0.85, levels=7)]
    curves = deepest_level_curves(SweepData(rows, level_curve=lambda r: [{"levels_of": r["levels"]}]))
    assert curves == {("imp", 0): [{"levels_of": 13}]}


CONFIG = """
name: three-by-three
data: {name: digits, val_fraction: 0.15, test_fraction: 0.25}
model: {name: mlp, options: {widths: [48, 24]}}
train: {epochs: 1, batch_size: 64, optimizer: sgd, lr: 0.05, momentum: 0.9}
prune: {method: magnitude, sparsity: 0.9, prune_fraction: 0.5}
resources: {cpu: 1, gpu: 0}
sweep:
  grid:
    - {prune.method: [dense], prune.sparsity: [0.0], seed: [0, 1]}
    - {prune.method: [magnitude, snip, synflow], prune.sparsity: [0.5, 0.9, 0.98], seed: [0, 1]}
    - {prune.method: [imp], prune.sparsity: [0.5, 0.9], seed: [0, 1]}
"""


@pytest.mark.slow
def test_a_three_method_sweep_summary_matches_a_hand_computation_and_its_report_renders(tmp_path, capsys,
                                                                                         monkeypatch):
    config, out = tmp_path / "sweep.yaml", tmp_path / "out"
    config.write_text(CONFIG)
    seen = capture(monkeypatch)
    assert main(["run", str(config), "--out", str(out), "--quiet"]) == 0
    printed = capsys.readouterr().out
    rows = pq.read_table(out / "results.parquet").to_pylist()
    summary = {(p["method"], p["target_sparsity"]): p for p in pq.read_table(out / "summary.parquet").to_pylist()}
    assert len(summary) == 1 + 9 + 2
    dense = {r["seed"]: r["test_accuracy"] for r in rows if r["method"] == "dense"}
    for (method, sparsity), point in summary.items():
        accs = {r["seed"]: r["test_accuracy"] for r in rows if (r["method"], r["target_sparsity"]) == (method, sparsity)}
        assert point["n"] == len(accs) == 2
        assert point["test_accuracy_mean"] == pytest.approx(statistics.fmean(accs.values()))
        assert point["test_accuracy_std"] == pytest.approx(statistics.stdev(accs.values()))
        if method != "dense":
            deltas = [accs[s] - dense[s] for s in accs]
            assert point["delta_test_accuracy_mean"] == pytest.approx(statistics.fmean(deltas))
            assert point["delta_test_accuracy_std"] == pytest.approx(statistics.stdev(deltas))
        line = next(li for li in printed.splitlines() if li.split()[1:3] == [method, f"{sparsity:g}"])
        assert f"{100 * statistics.fmean(accs.values()):.2f} ± {100 * statistics.stdev(accs.values()):.2f}" in line
    check_figures(seen)
    imp = next(d for d in seen if d.name == "imp_levels")
    assert min(imp.tick_labels["0.x"], key=float) == "0.125"  # the 0.9 trial's levels, not the 0.5 one's

    if not browser.available():
        if os.environ.get("CI"):
            pytest.fail("chromium is missing: .ci/run installs it (apt-get install chromium)")
        pytest.skip("chromium not installed (CI installs it)")
    _, found, shot = browser.visit((out / "report.html").as_uri(),
                                   "[document.getElementById('summary').innerText, "
                                   "Array.from(document.images).map(i => [i.complete, i.naturalWidth])]")
    text, images = found
    assert "± " in text and "vs dense" in text
    assert len(images) >= 5 and all(done and width > 0 for done, width in images), images
    ARTIFACTS.mkdir(exist_ok=True)
    (ARTIFACTS / "three-method-report.png").write_bytes(shot)
