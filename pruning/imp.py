"""Iterative magnitude pruning with rewinding (OpenLTH semantics).

Level 0 trains the dense net and keeps the full training state at iteration k. Each later level
prunes a fixed share of the remaining weights by |theta| of the previous level's trained net, resets
the survivors to theta_k (optimizer state and LR schedule resume at k) and retrains. Every finished
level is written to its own directory, so rerunning is a cache hit and a killed run resumes at the
last finished level.
"""
from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Iterable

from torch import nn

from training.trainer import Trainer, TrainState

from .mask import Mask, atomic_torch_save, atomic_write_text, load_artifact
from .select import Scope, select_topk


@dataclass
class LevelRecord:
    level: int
    density: float
    kept: int
    total: int
    test_accuracy: float
    val_accuracy: float | None
    wall_time_s: float
    sample_passes: int
    cached: bool = False


@dataclass
class ImpResult:
    """``sample_passes``/``wall_time_s`` are what finding this mask costs on its own: levels taken
    from the cache count at their recorded cost, so a trial's cost does not depend on which other
    trials ran first."""

    mask: Mask
    rewind: TrainState
    levels: list[LevelRecord]
    sample_passes: int
    wall_time_s: float


def level_densities(target_density: float, prune_fraction: float) -> list[float]:
    """Densities of levels 1..L: (1-f)^l, the last one clamped to the target."""
    if not 0 < target_density < 1:
        raise ValueError(f"IMP target density must be in (0, 1), got {target_density}")
    levels = max(1, math.ceil(math.log(target_density) / math.log(1 - prune_fraction) - 1e-9))
    out = [(1 - prune_fraction) ** l for l in range(1, levels)]
    return out + [target_density]


def _load(path: Path) -> dict:
    return load_artifact(path, "IMP level checkpoint",
                         hint=f"; delete its level directory {path.parent} to recompute that level")


class LevelStore:
    """One directory per level: trained weights, mask, metrics; written atomically."""

    def __init__(self, root: Path | None) -> None:
        self.root = root

    def _dir(self, level: int) -> Path:
        assert self.root is not None
        return self.root / f"level_{level}"

    def get(self, level: int) -> tuple[dict, Mask | None, LevelRecord, TrainState | None] | None:
        if self.root is None:
            return None
        d = self._dir(level)
        if not (d / "done.json").is_file():
            return None
        record = LevelRecord(**json.loads((d / "done.json").read_text()))
        record.cached = True
        mask = Mask.load(d / "mask.pt") if (d / "mask.pt").is_file() else None
        rewind = TrainState.from_dict(_load(d / "rewind.pt")) if (d / "rewind.pt").is_file() else None
        return _load(d / "trained.pt"), mask, record, rewind

    def put(self, level: int, trained: dict, mask: Mask | None, record: LevelRecord, rewind: TrainState | None) -> None:
        if self.root is None:
            return
        d = self._dir(level)
        atomic_torch_save(trained, d / "trained.pt")
        if mask is not None:
            mask.save(d / "mask.pt")
            mask.report().to_json(d / "sparsity.json")
        if rewind is not None:
            atomic_torch_save(rewind.to_dict(), d / "rewind.pt")
        atomic_write_text(d / "done.json", json.dumps(asdict(record)))  # written last: marks completion


def run_imp(
    model: nn.Module,
    trainer: Trainer,
    target_density: float,
    prune_fraction: float = 0.2,
    rewind_step: int = 0,
    scope: Scope = "global",
    ignore: Iterable[str] = (),
    store_dir: Path | None = None,
    on_level: Callable[[LevelRecord, Mask], None] | None = None,
) -> ImpResult:
    """Train levels 0..L-1 and return the level-L mask with theta_k; the caller trains level L.

    Leaving the last training to the caller keeps one retrain stage for every method.
    """
    store = LevelStore(store_dir)
    init_state = TrainState(0, {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}, {})
    densities = level_densities(target_density, prune_fraction)
    mask = Mask.ones(model, ignore)
    levels: list[LevelRecord] = []
    passes, wall = 0, 0.0

    cached = store.get(0)
    if cached is not None:
        trained, _, record, rewind = cached
        assert rewind is not None
    else:
        model.load_state_dict(init_state.model)
        result = trainer.fit(model, start=init_state, snapshot_at=rewind_step)
        trained, rewind = result.final_state.model, result.snapshot
        record = LevelRecord(
            0, 1.0, mask.kept, mask.total, result.test.accuracy,
            result.val.accuracy if result.val else None, result.wall_time_s, result.sample_passes,
        )
        store.put(0, trained, None, record, rewind)
    levels.append(record)
    passes += record.sample_passes
    wall += record.wall_time_s
    if on_level:
        on_level(record, mask)

    for level, density in enumerate(densities, start=1):
        magnitudes = {n: trained[n].abs() for n in mask}
        mask = select_topk(magnitudes, density, scope=scope, current=mask)
        if level == len(densities):
            break
        cached = store.get(level)
        if cached is not None:
            trained, _, record, _ = cached
        else:
            model.load_state_dict(rewind.model)
            result = trainer.fit(model, mask=mask, start=rewind)
            trained = result.final_state.model
            record = LevelRecord(
                level, mask.density, mask.kept, mask.total, result.test.accuracy,
                result.val.accuracy if result.val else None, result.wall_time_s, result.sample_passes,
            )
            store.put(level, trained, mask, record, None)
        levels.append(record)
        passes += record.sample_passes
        wall += record.wall_time_s
        if on_level:
            on_level(record, mask)
    return ImpResult(mask=mask, rewind=rewind, levels=levels, sample_passes=passes, wall_time_s=wall)
