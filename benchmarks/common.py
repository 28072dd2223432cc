"""What every benchmark shares: where results go, what they record about the machine, how they print.

Each benchmark writes ``benchmarks/results/<name>.json`` holding its figures plus the machine, library
versions, commit and date, and prints ``name: value`` lines. Figures are computed by the run, never
typed in; ratios come from arms measured side by side (interleaved) in the same run.
"""
from __future__ import annotations

import json
import os
import platform
import statistics
import subprocess
import time
from pathlib import Path
from typing import Any, Callable

RESULTS = Path(__file__).resolve().parent / "results"


def commit() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                             cwd=Path(__file__).parent).stdout.strip()
        return out or "unknown"
    except OSError:
        return "unknown"


def machine() -> dict[str, Any]:
    import torch

    info = {"python": platform.python_version(), "platform": platform.platform(), "processor": platform.machine(),
            "cpu_count": os.cpu_count(), "torch": torch.__version__, "torch_threads": torch.get_num_threads(),
            "device": "cpu"}
    if torch.cuda.is_available():
        info["device"] = torch.cuda.get_device_name(0)
    return info


def write(name: str, figures: dict[str, Any], quick: bool, extra: dict[str, Any] | None = None) -> Path:
    """Save the JSON and print its flat figures as ``name: value`` lines."""
    RESULTS.mkdir(exist_ok=True)
    doc = {"benchmark": name, "quick": quick, "figures": figures, **(extra or {}), "machine": machine(),
           "commit": commit(), "date": time.strftime("%Y-%m-%d")}
    path = RESULTS / f"{name}{'_quick' if quick else ''}.json"
    path.write_text(json.dumps(doc, indent=2, default=float) + "\n")
    for key, value in figures.items():
        print(f"{name}.{key}: {value:.4g}" if isinstance(value, float) else f"{name}.{key}: {value}")
    return path


def interleaved(arms: dict[str, Callable[[], float | None]], repeats: int) -> dict[str, list[float]]:
    """Run each arm ``repeats`` times, alternating the order every round; an arm returns its own
    measurement (or None to be timed here, wall-clock)."""
    out: dict[str, list[float]] = {k: [] for k in arms}
    names = list(arms)
    for r in range(repeats):
        for name in names if r % 2 == 0 else reversed(names):
            t0 = time.perf_counter()
            got = arms[name]()
            out[name].append(got if got is not None else time.perf_counter() - t0)
    return out


def median(xs: list[float]) -> float:
    return float(statistics.median(xs))
