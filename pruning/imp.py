"""Iterative magnitude pruning with rewinding (OpenLTH semantics): the level schedule.

Level 0 trains the dense net and keeps the full training state at iteration k. Each later level
prunes a fixed share of the remaining weights by |theta| of the previous level's trained net, resets
the survivors to theta_k and retrains from iteration k: the LR schedule and data order resume at k and,
by default (``prune.rewind_optimizer: fresh``), the optimizer restarts with zero momentum, as OpenLTH's
``train`` does (it rebuilds the optimizer and only fast-forwards the LR schedule); ``resume`` restores the
optimizer state saved at k instead. For k = 0 the two are the same. ``prune.rewind`` says what is reset:
the whole state (``state``, OpenLTH) or only the Conv/Linear weights (``weights``, Distilled Pruning). The levels are
stages (``pruning.stages.ImpLevel``), so every target of a sweep shares them and a killed run resumes
at the last finished level.
"""
from __future__ import annotations

import math
from typing import Iterable


def level_densities(target_density: float, prune_fraction: float) -> list[float]:
    """Densities of levels 1..L: (1-f)^l, the last one clamped to the target."""
    if not 0 < target_density < 1:
        raise ValueError(f"IMP target density must be in (0, 1), got {target_density}")
    levels = max(1, math.ceil(math.log(target_density) / math.log(1 - prune_fraction) - 1e-9))
    out = [(1 - prune_fraction) ** l for l in range(1, levels)]
    return out + [target_density]


def rewind_state(theta_k: dict, trained: dict, weight_names: Iterable[str], mode: str) -> dict:
    """The state a pruned net restarts from.

    ``state`` (OpenLTH): everything at step k, biases, norm parameters and running statistics included.
    ``weights`` (Distilled Pruning's code, which copies theta_0 into ``weight_orig`` only): the Conv/Linear
    weights at step k, every other entry as the previous level left it trained. The two differ only where
    a net has biases or normalisation layers; the authors' CIFAR-10 AlexNet has biases and no norms.
    """
    if mode == "state":
        return dict(theta_k)
    if mode != "weights":
        raise ValueError(f"rewind must be 'weights' or 'state', got {mode!r}")
    names = set(weight_names)
    missing = names - set(theta_k)
    if missing:
        raise KeyError(f"rewind point lacks weights {sorted(missing)}")
    return {n: (theta_k[n] if n in names else v) for n, v in trained.items()}
