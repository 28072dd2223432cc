"""How long `prunetune run` takes to report a config error, measured as a user sees it (a fresh
process each time: interpreter start, imports, validation, message), and how long `--check` takes to
print the quickstart's plan (schema, pre-flight, trial graphs, store lookups; exit 0).

Three bad configs, each refused by the schema before torch or Ray is imported; and, for scale, one
refused only by the pre-flight (a rewind step beyond training), which needs the data and a model and
so imports torch. Arms are interleaved, REPEATS rounds; medians are reported.

    .venv/bin/python benchmarks/config_error_latency.py
writes benchmarks/results/config_error_latency.json and prints `name: value` lines.
"""
from __future__ import annotations

import json
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPEATS = 5
BASE = "name: t\ndata: {name: digits}\nmodel: {name: mlp, options: {widths: [16]}}\ntrain: {epochs: 1}\n"
ARMS = {
    "schema_unknown_model_s": BASE.replace("name: mlp", "name: mlpp") + "prune: {method: magnitude, sparsity: 0.5}\n",
    "schema_out_of_range_s": BASE + "prune: {method: magnitude, sparsity: 1.5}\n",
    "schema_typo_key_s": BASE + "prune: {method: magnitude, sparsty: 0.5}\n",
    "preflight_rewind_beyond_training_s": BASE + "prune: {method: imp, sparsity: 0.5, rewind_step: 9999}\n",
}
QUICKSTART = Path(__file__).resolve().parents[1] / "configs" / "quickstart.yaml"
EXPECTED = {**{name: 2 for name in ARMS}, "check_plan_quickstart_s": 0}


def _commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    except OSError:
        return "unknown"


def main() -> int:
    exe = Path(sys.executable).with_name("prunetune")
    times: dict[str, list[float]] = {k: [] for k in EXPECTED}
    with tempfile.TemporaryDirectory() as tmp:
        for _ in range(REPEATS):
            for name in EXPECTED:
                cfg = QUICKSTART if name not in ARMS else Path(tmp) / f"{name}.yaml"
                if name in ARMS:
                    cfg.write_text(ARMS[name])
                extra = ["--check"] if name not in ARMS else []
                t0 = time.perf_counter()
                proc = subprocess.run([str(exe), "run", str(cfg), "--out", str(Path(tmp) / "out"), *extra],
                                      capture_output=True, text=True)
                times[name].append(time.perf_counter() - t0)
                if proc.returncode != EXPECTED[name]:
                    raise SystemExit(f"{name}: expected exit {EXPECTED[name]}, got {proc.returncode}: "
                                     f"{proc.stderr[-500:]}")
    medians = {k: statistics.median(v) for k, v in times.items()}
    result = {"benchmark": "config_error_latency", "repeats": REPEATS, "median_s": medians, "all_s": times,
              "schema_errors_under_1s": all(v < 1.0 for k, v in medians.items() if k.startswith("schema")),
              "check_plan_under_10s": medians["check_plan_quickstart_s"] < 10.0,
              "machine": {"python": platform.python_version(), "platform": platform.platform(),
                          "processor": platform.machine()}, "commit": _commit(),
              "date": time.strftime("%Y-%m-%d")}
    out = Path(__file__).parent / "results" / "config_error_latency.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    for k, v in medians.items():
        print(f"{k}: {v:.3f}")
    print(f"schema_errors_under_1s: {result['schema_errors_under_1s']}")
    print(f"check_plan_under_10s: {result['check_plan_under_10s']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
