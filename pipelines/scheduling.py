"""Shared stages as Ray tasks with their own resources, before the trials that need them.

Distillation and dense pre-training are what a grid's trials share most (every method at every
sparsity of one seed needs the same pre-training; every distilled-pruning arm the same set). The
driver submits each such stage the grid needs once, as a Ray task placed by its own ``resources``
(a GPU for distillation on a cluster whose head has none), and waits for them before the trials
start, so no trial holds a CPU while it waits for a task that needs that CPU. Stages that only some
trials reach (IMP levels, Optuna trials' stages) are computed on demand under the store's lease.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Callable, Iterable

from training.stage import Stage, StageEnv, materialize
from training.store import ArtifactStore

PROGRESS_EVERY_S = 15.0


def shared_stages(stages: Iterable[Stage], done: Callable[[Stage], bool]) -> list[Stage]:
    """The distinct shared stages among ``stages`` that are not in the store yet."""
    picked: dict[str, Stage] = {}
    for s in stages:
        if s.worth_a_task() and s.key not in picked and not done(s):
            picked[s.key] = s
    return list(picked.values())


def _materialize_task(stage: Stage, store: ArtifactStore, threads: int, log: Callable[[str], None],
                      plugins: tuple[list[str], list[str]] = ([], [])) -> dict:
    import torch

    from training.plugins import load_plugins

    load_plugins(*plugins)  # a plugin's model, dataset or distiller must be registered in this worker too

    torch.set_num_threads(max(1, threads))
    t0 = time.perf_counter()
    entry = materialize(stage, StageEnv.on(store, log=log, requested_by="driver (shared stage)"))
    return {"stage": stage.describe(), "cached": entry.cached, "wall_time_s": time.perf_counter() - t0}


def run_shared_stages(stages: list[Stage], store: ArtifactStore, resources: Callable[[str], tuple[float, float]],
                      echo: Callable[[str], None], log_dir: Path,
                      plugins: tuple[list[str], list[str]] = ([], [])) -> list[str]:
    """Run the stages as Ray tasks, in waves by their ``shared_order`` (a pretrain on a small set must not make
    that set itself, on its own resources); returns error lines. Each stage logs to
    ``log_dir/<name>-<key>.log``; while they run, each one's latest line is echoed as it changes."""
    if not stages:
        return []
    echo(f"shared stages: {len(stages)} ({', '.join(sorted({s.name for s in stages}))}) as Ray tasks")
    errors: list[str] = []
    for order in sorted({s.shared_order for s in stages}):
        errors += _run_wave([s for s in stages if s.shared_order == order], store, resources, echo, log_dir, plugins)
    return errors


def _run_wave(stages: list[Stage], store: ArtifactStore, resources: Callable[[str], tuple[float, float]],
              echo: Callable[[str], None], log_dir: Path, plugins: tuple[list[str], list[str]]) -> list[str]:
    import ray

    from .live import FileLog, last_line, stage_log

    remote = ray.remote(_materialize_task)
    pending = {}
    for s in stages:
        cpu, gpu = resources(s.name)
        log = FileLog(stage_log(log_dir, s.name, s.key))
        ref = remote.options(num_cpus=cpu, num_gpus=gpu, max_retries=1, name=f"stage:{s.describe()}").remote(
            s, store, int(cpu), log, plugins)
        pending[ref] = s
    errors, done, shown = [], 0, {}
    while pending:
        ready, _ = ray.wait(list(pending), num_returns=1, timeout=PROGRESS_EVERY_S)
        if not ready:  # long stages (distillation, pre-training): their latest progress line
            for s in pending.values():
                line = last_line(stage_log(log_dir, s.name, s.key))
                if line and shown.get(s.key) != line:
                    shown[s.key] = line
                    echo(f"  [{s.describe()}] {line}")
            continue
        stage = pending.pop(ready[0])
        done += 1
        try:
            info = ray.get(ready[0])
            echo(f"[stage {done}/{len(stages)}] {stage.describe()}: "
                 f"{'reused' if info['cached'] else 'computed'} in {info['wall_time_s']:.1f}s")
        except Exception as exc:  # the trials that need it report it as their own error
            line = f"{stage.describe()}: {str(exc).strip().splitlines()[-1] if str(exc).strip() else exc!r}"
            errors.append(line)
            echo(f"[stage {done}/{len(stages)}] FAILED {line}")
    return errors
