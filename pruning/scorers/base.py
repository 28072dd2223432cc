"""What a scorer reads (``ScoringBatches``) and the at-init view of the method registry (``SCORERS``).

Torch-free at import, like every scorer module: a config naming a built-in method is validated without
torch (each scorer imports torch inside the functions that compute)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Iterator

from ..registry import METHODS, MethodOptions, Scorer, register_method  # noqa: F401 (re-exported)

if TYPE_CHECKING:
    import torch


@dataclass
class ScoringBatches:
    """Labelled examples a data-driven scorer may read (e.g. 10 per class, class-balanced).

    Kept as tensors already on the scoring device; ``input_shape`` lets data-free scorers build
    their all-ones input without touching data.
    """

    x: "torch.Tensor | None"
    y: "torch.Tensor | None"
    input_shape: tuple[int, ...]
    num_classes: int
    batch_size: int = 256

    def __iter__(self) -> Iterator[tuple["torch.Tensor", "torch.Tensor"]]:
        if self.x is None or self.y is None:
            raise ValueError("this scorer needs data, but no scoring examples were provided")
        for i in range(0, len(self.x), self.batch_size):
            yield self.x[i : i + self.batch_size], self.y[i : i + self.batch_size]


class _Scorers:
    """The registered pruning-at-init methods' scorer classes, by method name."""

    def get(self, name: str) -> type[Scorer]:
        spec = METHODS.get(name)
        if spec.scorer is None:
            raise KeyError(f"pruning method {name!r} is not a pruning-at-init scorer; scorers: {', '.join(self.names())}")
        return spec.scorer

    def names(self) -> list[str]:
        return [n for n in METHODS.names() if METHODS.get(n).scorer is not None]

    def __contains__(self, name: object) -> bool:
        return name in METHODS and METHODS.get(name).scorer is not None


SCORERS = _Scorers()
