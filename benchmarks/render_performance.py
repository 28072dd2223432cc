"""The README's Performance section, rendered from the committed benchmark JSON (never typed in).

    .venv/bin/python benchmarks/render_performance.py           # print it
    .venv/bin/python benchmarks/render_performance.py --write   # replace it in README.md

The section sits between ``<!-- performance:start -->`` and ``<!-- performance:end -->``; a test checks
that it matches what this script renders from ``benchmarks/results/*.json``.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
README = HERE.parent / "README.md"
START, END = "<!-- performance:start -->", "<!-- performance:end -->"


def _load(name: str) -> dict | None:
    path = RESULTS / f"{name}.json"
    return json.loads(path.read_text()) if path.is_file() else None


def _fmt(v) -> str:
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, float):
        return f"{v:.3g}" if abs(v) < 1000 else f"{v:,.0f}"
    return str(v)


def _source(doc: dict) -> str:
    m = doc.get("machine", {})
    return f"{doc['benchmark']} ({m.get('device', 'cpu')}, {m.get('cpu_count', '?')} cores, {doc.get('commit')}, {doc.get('date')})"


def render() -> str:
    lines = [START, "", "Measured by `make bench` on the machine named in each row's source; every figure comes "
             "from `benchmarks/results/*.json` (rendered by `benchmarks/render_performance.py`).", ""]
    rows: list[tuple[str, str, str]] = []
    doc = _load("config_error_latency")
    if doc:
        for k, v in doc["median_s"].items():
            what = "plan printed (`run --check`, quickstart)" if k.startswith("check_") else \
                f"config error reported ({k.removesuffix('_s').replace('_', ' ')})"
            rows.append((what, f"{v:.2f} s", _source(doc)))
    doc = _load("trainer_overhead")
    if doc:
        f = doc["figures"]
        for case in sorted({k.split(".")[0] for k in f if "." in k}):
            rows.append((f"trainer vs bare PyTorch loop, {case} (target >= 0.95)", f"{f[case + '.trainer_vs_bare']:.3f}x",
                         _source(doc)))
            rows.append((f"masked (90% sparse) vs dense epoch time, {case} (target <= 1.05)",
                         f"{f[case + '.masked_vs_dense_time']:.3f}x", _source(doc)))
    doc = _load("sweep_overhead")
    if doc:
        f = doc["figures"]
        rows += [
            (f"{f['trials']} short trials: plain loop / sweep (1) / sweep (2 concurrent)",
             f"{f['plain_wall_s']:.1f} / {f['sweep1_wall_s']:.1f} / {f['sweep2_wall_s']:.1f} s", _source(doc)),
            ("speedup of 2 concurrent trials over the plain loop (limit 2.0)", f"{f['speedup_2_concurrent_vs_plain']:.2f}x", _source(doc)),
            ("sweep start-up before the first trial / tear-down after the last", f"{f['sweep_startup_s']:.1f} / {f['sweep_teardown_s']:.1f} s", _source(doc)),
            ("gap between trials (actor, MLflow, result collection)", f"{f['sweep_gap_per_trial_s']:.3f} s", _source(doc)),
        ]
        if "ray_floor_startup_s" in f:
            rows.append(("floor without prunetune: Ray started + one actor importing torch and MLflow / Ray stopped",
                         f"{f['ray_floor_startup_s']:.1f} / {f['ray_floor_shutdown_s']:.1f} s", _source(doc)))
        if "resume_finished_s" in f:
            rows.append(("`prunetune resume` of the finished sweep (target < 5 s)", f"{f['resume_finished_s']:.1f} s",
                         _source(doc)))
    doc = _load("stage_reuse")
    if doc:
        f = doc["figures"]
        rows.append((f"stage store shared vs fresh per trial ({f['trials']} trials): time ratio, stage runs",
                     f"{f['time_ratio_fresh_over_shared']:.2f}x, {f['stage_runs_shared']} vs {f['stage_runs_fresh']}", _source(doc)))
    doc = _load("scorer_cost")
    if doc:
        f = doc["figures"]
        for model in ("resnet20", "vgg16_bn"):
            cells = ", ".join(f"{k.split('.')[1].removesuffix('_s')} {v:.3g}" for k, v in sorted(f.items())
                              if k.startswith(model + "."))
            rows.append((f"seconds per scoring round, {model} (float64, CPU)", cells, _source(doc)))
        cells = ", ".join(f"{k.split('.')[1].removesuffix('_s')} {v:.3g} s" for k, v in sorted(f.items())
                          if k.startswith("convnet3"))
        rows.append(("distillation step cost, CIFAR-shaped ConvNet-3", cells, _source(doc)))
    doc = _load("scale_simulation")
    if doc:
        f = doc["figures"]
        rows += [
            (f"{f['trials']} trivial trials on {f['logical_nodes']} logical nodes sharing {f['shared_stages']} stages",
             f"{f['trials_per_s']:.0f} trials/s; each shared stage computed once: {_fmt(f['parents_computed_once'])}", _source(doc)),
            ("tasks that waited on a stage lease (per shared stage), median wait",
             f"{f['waits_per_shared_stage']:.1f}, {f['lease_wait_median_s']:.2f} s", _source(doc)),
            ("MLflow (SQLite) runs created concurrently", f"{f['mlflow_runs_per_s']:.1f} runs/s ({f['mlflow_writes_per_s']:.0f} writes/s)", _source(doc)),
        ]
    doc = _load("scale_objstore")
    if doc:
        f = doc["figures"]
        rows += [
            (f"{f['trials']} real trials through the driver, store on S3 (moto), MLflow server proxying artifacts, "
             f"{f['logical_nodes']} raylets", f"{f['trials_per_s']:.2f} trials/s; nothing missing or computed twice: "
             f"{_fmt(f['nothing_missing'] and f['stage_entries_computed_twice'] == 0)}", _source(doc)),
            ("store coordinator: lease acquire + release from the other node, median / p95",
             f"{f['lease_round_trip_median_ms']:.1f} / {f['lease_round_trip_p95_ms']:.1f} ms", _source(doc)),
        ]
    doc = _load("time_to_ticket")
    if doc:
        for a, cells in sorted(doc["versus_imp"].items()):
            if " " in a or a == "dense":
                continue
            within = [c for c in cells.values() if c["within_1_point"]]
            speed = [c["wall_speedup"] for c in within if c.get("wall_speedup")]
            gaps = [c["gap_points"] for c in cells.values()]
            value = f"within 1 point at {len(within)}/{len(cells)} densities (gap {max(gaps):+.1f} to {min(gaps):+.1f} points); "
            value += (f"{min(speed):.1f}x-{max(speed):.1f}x faster search where matched" if speed
                      else "no speedup at matched accuracy")
            rows.append((f"time to ticket, {a} vs IMP (MNIST-1D conv1d, densities 0.8^2..0.8^12)", value, _source(doc)))
    lines += ["| figure | value | source |", "|---|---|---|"]
    lines += [f"| {a} | {b} | {c} |" for a, b, c in rows]
    doc = _load("time_to_ticket")
    if doc and doc.get("findings"):
        lines += ["", "Distilled Pruning, measured (from `time_to_ticket.json`):", ""]
        lines += [f"- {s}" for s in doc["findings"]]
    lines += ["", END]
    return "\n".join(lines)


def replace_in(text: str, section: str) -> str:
    if START not in text or END not in text:
        raise ValueError(f"README.md has no {START} ... {END} section")
    head, rest = text.split(START, 1)
    _, tail = rest.split(END, 1)
    return head + section + tail


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--write", action="store_true", help="replace the section in README.md")
    args = ap.parse_args(argv)
    section = render()
    if args.write:
        README.write_text(replace_in(README.read_text(), section))
        print(f"wrote the Performance section of {README}")
    else:
        sys.stdout.write(section + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
