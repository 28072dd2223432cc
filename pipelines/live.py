"""The console during a sweep: one line per finished trial with where the sweep stands, progress of
long shared stages, and nothing else; every trial's and stage's own log goes to a file under DIR.

Plain lines only (no cursor movement or colour), so the same output reads well in a terminal, in CI
and under ``ray job submit``. ``quiet`` prints nothing until the final table; ``verbose`` also lets
Ray forward every worker's output, as before this view existed.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from .results import finite

Verbosity = Literal["quiet", "normal", "verbose"]


def trial_log(out_dir: Path, slot: str) -> Path:
    """A trial's log, named by its slot (the ``slot`` column of results.parquet)."""
    return Path(out_dir) / "logs" / f"{slot}.log"


def stages_log_dir(out_dir: Path) -> Path:
    return Path(out_dir) / "logs" / "stages"


def stage_log(log_dir: Path, stage_name: str, key: str) -> Path:
    """A shared stage's log: its name and key, as ``prunetune store DIR`` lists them."""
    return Path(log_dir) / f"{stage_name}-{key}.log"


class FileLog:
    """Appends timestamped lines to a file (and echoes them when asked); picklable for Ray."""

    def __init__(self, path: Path, echo: bool = False, prefix: str = "") -> None:
        self.path, self.echo, self.prefix = Path(path), echo, prefix

    def __call__(self, message: str) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a") as f:
            f.write(f"{time.strftime('%H:%M:%S')} {message}\n")
        if self.echo:
            print(f"{self.prefix}{message}", flush=True)


def last_line(path: Path) -> str | None:
    try:
        with path.open("rb") as f:
            f.seek(0, 2)
            f.seek(max(0, f.tell() - 4096))
            lines = f.read().decode(errors="replace").strip().splitlines()
    except OSError:
        return None
    return lines[-1] if lines else None


def _clock(seconds: float) -> str:
    seconds = int(max(0, seconds))
    h, rest = divmod(seconds, 3600)
    return f"{h}:{rest // 60:02d}:{rest % 60:02d}" if h else f"{rest // 60}:{rest % 60:02d}"


@dataclass
class PhaseProgress:
    """Counts and bests of one phase, and the line printed when a trial ends."""

    phase: str
    total: int
    objectives: list[tuple[str, str]]  # (metric, "max"|"min")
    started: float = field(default_factory=time.monotonic)
    running: int = 0
    done: int = 0
    failed: int = 0
    pruned: int = 0
    cached: int = 0
    best: dict[str, tuple[float, str]] = field(default_factory=dict)

    def trial_started(self) -> None:
        self.running += 1

    def trial_ended(self, row: dict[str, Any]) -> str:
        self.running = max(0, self.running - 1)
        self.done += 1
        ok = row.get("status") == "ok"
        self.failed += row.get("status") == "error"
        self.pruned += row.get("status") == "pruned"
        self.cached += bool(row.get("cached"))
        label = f"{row.get('method')} s={_fmt(row.get('target_sparsity'))} seed={row.get('seed')}"
        for metric, mode in self.objectives:
            v = finite(row.get(metric)) if ok else None
            current = self.best.get(metric)
            if v is not None and (current is None or (v > current[0] if mode == "max" else v < current[0])):
                self.best[metric] = (v, label)
        elapsed = time.monotonic() - self.started
        eta = elapsed / self.done * (self.total - self.done) if self.done and self.total else None
        outcome = (f"test_acc {_fmt(row.get('test_accuracy'))}" + (" (cached)" if row.get("cached") else "")
                   if ok else "stopped early" if row.get("status") == "pruned"
                   else f"FAILED: {str(row.get('error') or '')[:120]}")
        best = "  ".join(f"best {m} {_fmt(v)} ({who})" for m, (v, who) in self.best.items())
        counts = f"{self.running} running" + (f", {self.failed} failed" if self.failed else "") + (
            f", {self.pruned} stopped early" if self.pruned else "") + (
            f", {self.cached} cached" if self.cached else "")
        return (f"[{self.phase} {self.done}/{self.total} | {counts} | {_clock(elapsed)}"
                + (f" ETA {_clock(eta)}" if eta is not None and self.done < self.total else "") + "] "
                + f"{label} ({row.get('slot')}): {outcome}" + (f" | {best}" if best else ""))


def _fmt(v: Any) -> str:
    n = finite(v)
    if n is None:
        return "-"
    return f"{n:.4g}"


def tune_callback(progress: PhaseProgress, say):
    """A Ray Tune callback that turns trial events into ``progress`` lines."""
    from ray.tune import Callback

    class LiveCallback(Callback):
        def on_trial_start(self, iteration, trials, trial, **info):
            progress.trial_started()

        def on_trial_result(self, iteration, trials, trial, result, **info):
            if "status" in result:  # the row; per-epoch reports carry no status
                say(progress.trial_ended(result))

        def on_trial_complete(self, iteration, trials, trial, **info):
            last = trial.last_result or {}
            if "status" not in last and last.get("slot"):  # stopped by the scheduler before its row
                say(progress.trial_ended({**last, "status": "pruned", "error": "stopped early by the scheduler"}))

    return LiveCallback()


def print_line(line: str) -> None:
    """``print``, looked up when called: Tune pickles the view with its callbacks, and a ``print`` captured
    at import stops pickling once anything replaces ``builtins.print`` (Ray's tqdm support does)."""
    print(line)


@dataclass
class SweepView:
    """How much of a sweep reaches the console, and where it goes."""

    verbosity: Verbosity = "normal"
    echo: Any = print_line

    def say(self, line: str) -> None:
        if self.verbosity != "quiet":
            self.echo(line)

    @staticmethod
    def objectives(cfg, phase: str) -> list[tuple[str, str]]:
        """The bests a phase line shows: the search's objectives, or validation accuracy on the grid."""
        if phase == "optuna" and cfg.sweep.optuna is not None:
            return [(o.metric, o.mode) for o in cfg.sweep.optuna.objectives]
        return [("val_accuracy", "max")] if cfg.data.val_fraction > 0 else [("test_accuracy", "max")]
