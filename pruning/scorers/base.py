"""The scorer interface: one small class per method with one ``score`` method (Synaptic-Flow style)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Iterator

import torch
from torch import nn

from training.registry import Registry

from ..config import METHOD_ABLATIONS
from ..mask import Mask


@dataclass
class ScoringBatches:
    """Labelled examples a data-driven scorer may read (e.g. 10 per class, class-balanced).

    Kept as tensors already on the scoring device; ``input_shape`` lets data-free scorers build
    their all-ones input without touching data.
    """

    x: torch.Tensor | None
    y: torch.Tensor | None
    input_shape: tuple[int, ...]
    num_classes: int
    batch_size: int = 256

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        if self.x is None or self.y is None:
            raise ValueError("this scorer needs data, but no scoring examples were provided")
        for i in range(0, len(self.x), self.batch_size):
            yield self.x[i : i + self.batch_size], self.y[i : i + self.batch_size]


class Scorer:
    """Scores every prunable weight; higher means keep.

    ``score`` receives a float64 copy of the model with the current mask already applied and
    returns float64 tensors shaped like the weights. The caller does selection, so a scorer never
    has to know about sparsity targets, schedules or scopes.
    """

    needs_data: ClassVar[bool] = False
    default_rounds: ClassVar[int] = 1
    # Constructor argument -> the ``PruneConfig`` field it comes from. Building the scorer and its
    # stage key both read this, so an option the scorer does not take cannot change its masks' keys.
    prune_options: ClassVar[dict[str, str]] = {}
    # True: ``score`` gets the original (unmasked) weights and scores every weight at the current mask,
    # and selection may bring back a weight an earlier round pruned (FORCE). False: the weights come with
    # the mask applied and a pruned weight stays pruned.
    revives: ClassVar[bool] = False
    # True: the scorer builds its mask rather than ranking every weight (PHEW's random walks stop once
    # they have visited ``budget`` weights), so ``prune_at_init`` sets ``self.budget`` (weights this round
    # keeps, global allocation only) before each ``score``; the selection then keeps exactly those.
    needs_budget: ClassVar[bool] = False
    budget: int | None = None

    def __init__(self, seed: int = 0) -> None:
        self.seed = seed

    def score(
        self, model: nn.Module, params: dict[str, nn.Parameter], mask: Mask, batches: ScoringBatches
    ) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    @classmethod
    def check_model(cls, model: nn.Module, input_shape: tuple[int, ...]) -> None:
        """Raise ``ValueError`` if this scorer cannot score ``model`` (the sweep's pre-flight asks)."""


SCORERS: Registry[type[Scorer]] = Registry("pruning scorer", declared=METHOD_ABLATIONS)
