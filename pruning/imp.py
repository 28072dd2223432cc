"""Iterative magnitude pruning with rewinding (OpenLTH semantics): the level schedule.

Level 0 trains the dense net and keeps the full training state at iteration k. Each later level
prunes a fixed share of the remaining weights by |theta| of the previous level's trained net, resets
the survivors to theta_k (optimizer state and LR schedule resume at k) and retrains. The levels are
stages (``pruning.stages.ImpLevel``), so every target of a sweep shares them and a killed run resumes
at the last finished level.
"""
from __future__ import annotations

import math


def level_densities(target_density: float, prune_fraction: float) -> list[float]:
    """Densities of levels 1..L: (1-f)^l, the last one clamped to the target."""
    if not 0 < target_density < 1:
        raise ValueError(f"IMP target density must be in (0, 1), got {target_density}")
    levels = max(1, math.ceil(math.log(target_density) / math.log(1 - prune_fraction) - 1e-9))
    out = [(1 - prune_fraction) ** l for l in range(1, levels)]
    return out + [target_density]
