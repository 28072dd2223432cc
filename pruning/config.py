"""Typed pruning settings shared by the CLI, the sweep and the mask-search stage."""
from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

METHOD_NAMES = ("dense", "random", "magnitude", "imp")


class PruneConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    method: str = "imp"
    sparsity: float = Field(0.9, ge=0.0, lt=1.0, description="fraction of prunable weights removed")
    scope: Literal["global", "layerwise"] = "global"
    ignore: list[str] = Field(default_factory=list, description="prunable weight names kept dense")
    rewind_step: int = Field(0, ge=0, description="iteration k whose weights survivors reset to; 0 = init")
    prune_fraction: float = Field(0.2, gt=0.0, lt=1.0, description="IMP: share of remaining weights pruned per level")
    magnitude_at: Literal["init", "trained"] = Field(
        "init", description="magnitude: score the initial weights, or the weights after dense training (one-shot IMP)"
    )
    rounds: int | None = Field(None, ge=1, description="pruning-at-init rounds; default per method")
    schedule: Literal["exponential", "linear"] = "exponential"

    @field_validator("method")
    @classmethod
    def _known_method(cls, v: str) -> str:
        if v not in METHOD_NAMES:
            raise ValueError(f"unknown method {v!r}; allowed: {', '.join(METHOD_NAMES)}")
        return v

    @model_validator(mode="after")
    def _dense_is_dense(self) -> "PruneConfig":
        if self.method == "dense" and self.sparsity != 0.0:
            raise ValueError(f"method 'dense' needs sparsity 0.0, got {self.sparsity}")
        if self.method != "dense" and self.sparsity == 0.0:
            raise ValueError(f"method {self.method!r} needs sparsity > 0 (use method 'dense' for 0)")
        return self

    @property
    def density(self) -> float:
        return 1.0 - self.sparsity
