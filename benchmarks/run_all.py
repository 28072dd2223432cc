"""The benchmark suite in one command (``make bench``; ``make bench-quick`` for the --quick subset).

Runs each benchmark in its own process (a crash or a Ray session in one cannot skew the next), in an
order that puts the noisy, long ones last, then renders the README's Performance section from the
JSON they wrote. Full suite: under 30 minutes on 2 cores; --quick: under 5.

    .venv/bin/python benchmarks/run_all.py [--quick] [--only NAME ...]
"""
from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
SUITE = ["config_error_latency", "trainer_overhead", "scorer_cost", "stage_reuse", "sweep_overhead",
         "scale_simulation", "time_to_ticket"]
NO_QUICK = {"config_error_latency"}  # already a few seconds; it has no --quick


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="the small subset (under 5 minutes)")
    ap.add_argument("--only", nargs="+", choices=SUITE, help="run just these")
    args = ap.parse_args(argv)
    failed = []
    t_suite = time.perf_counter()
    for name in args.only or SUITE:
        if args.quick and name in NO_QUICK:
            continue
        cmd = [sys.executable, str(HERE / f"{name}.py")] + (["--quick"] if args.quick else [])
        print(f"== {name}", flush=True)
        t0 = time.perf_counter()
        rc = subprocess.run(cmd, cwd=HERE.parent).returncode
        print(f"== {name}: {'ok' if rc == 0 else f'FAILED ({rc})'} in {time.perf_counter() - t0:.0f}s", flush=True)
        if rc != 0:
            failed.append(name)
    print(f"suite: {time.perf_counter() - t_suite:.0f}s")
    if not args.quick:
        subprocess.run([sys.executable, str(HERE / "render_performance.py"), "--write"], cwd=HERE.parent, check=False)
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
