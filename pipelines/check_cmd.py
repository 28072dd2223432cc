"""``prunetune run CONFIG --check``: what a sweep would do, without doing it.

Schema and pre-flight as ``run`` does them, then per phase the trials, the distinct stages they need
(a stage several trials share is counted once, as the store computes it once), which of those the
store already holds, and an estimate of the work left in sample passes. It starts no Ray, opens no
tracking store and writes nothing, so it answers in seconds and can be run on a login node.
"""
from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .config import ExperimentConfig, grid_points, trial_config


@dataclass
class StageCount:
    needed: int = 0
    cached: int = 0
    passes: int = 0  # to compute, estimated
    unknown: int = 0  # stages to compute whose cost cannot be told beforehand


@dataclass
class PhasePlan:
    name: str
    trials: int
    done: int = 0  # finished trials recorded in DIR/trials
    stages: dict[str, StageCount] = field(default_factory=lambda: defaultdict(StageCount))
    note: str = ""

    @property
    def passes(self) -> int:
        return sum(c.passes for c in self.stages.values())


def plan_sweep(cfg: ExperimentConfig, raw: dict, out_dir: Path) -> list[PhasePlan]:
    from training.stage import StageEnv
    from training.store import ArtifactStore

    from .sweep_state import TrialRecords
    from .trial import trial_graph

    store_root = cfg.store.uri or str(out_dir / "store")
    store = ArtifactStore(store_root) if "://" in store_root or Path(store_root).is_dir() else None
    env = StageEnv(store=None)
    done = {slot for slot, record in TrialRecords(out_dir).all().items() if "row" in record}
    points = grid_points(cfg)
    phases = []
    if points:
        grid = PhasePlan("grid", len(points), done=sum(f"grid-{i}" in done for i in range(len(points))))
        seen: set[str] = set()
        for point in points:
            for stage in trial_graph(trial_config(raw, point)).stages():
                if stage.key in seen:
                    continue
                seen.add(stage.key)
                count = grid.stages[stage.name]
                count.needed += 1
                if store is not None and store.is_done(stage.name, stage.key):
                    count.cached += 1
                    continue
                passes = stage.planned_passes(env)
                if passes is None:
                    count.unknown += 1
                else:
                    count.passes += passes
        phases.append(grid)
    opt = cfg.sweep.optuna
    if opt is not None:
        objectives = ", ".join(f"{o.mode} {o.metric}" for o in opt.objectives)
        phases.append(PhasePlan(
            "optuna", opt.num_samples, done=sum(s.startswith("optuna-") for s in done),
            note=f"{opt.sampler} sampler, {objectives}, over {', '.join(opt.space) or 'no space'}: the stages "
                 "depend on the values drawn (stages shared with the grid are reused)"))
    return phases


def render_plan(phases: list[PhasePlan]) -> str:
    lines = []
    for phase in phases:
        head = f"{phase.name}: {phase.trials} trials" + (f" ({phase.done} already run)" if phase.done else "")
        lines.append(head)
        if phase.note:
            lines.append(f"  {phase.note}")
        if not phase.stages:
            continue
        rows = [("stage", "needed", "in store", "to compute", "est. sample passes")]
        for name, c in phase.stages.items():
            todo = c.needed - c.cached
            passes = "-" if not todo else f"{c.passes:,}" + (f" + {c.unknown} unknown" if c.unknown else "")
            rows.append((name, str(c.needed), str(c.cached), str(todo), passes))
        widths = [max(len(r[i]) for r in rows) for i in range(5)]
        lines += ["  " + "  ".join(cell.ljust(w) if i == 0 else cell.rjust(w) for i, (cell, w) in enumerate(zip(r, widths)))
                  for r in rows]
        todo = sum(c.needed - c.cached for c in phase.stages.values())
        lines.append(f"  {sum(c.needed for c in phase.stages.values())} distinct stages, {todo} to compute"
                     + (f", about {phase.passes:,} sample passes" if todo else ": every stage is in the store"))
    return "\n".join(lines)


def check(cfg: ExperimentConfig, raw: dict[str, Any], out_dir: Path) -> str:
    return render_plan(plan_sweep(cfg, raw, out_dir))
