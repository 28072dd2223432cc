"""Sweep search spaces: grid blocks expanded on the driver, Optuna ranges as typed objects.

Axes are dotted config paths (``prune.sparsity``), so every value a sweep can produce is checked
against the experiment schema before Ray starts.
"""
from __future__ import annotations

import itertools
from typing import Annotated, Any, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, model_validator


class FloatRange(BaseModel):
    model_config = ConfigDict(extra="forbid")
    type: Literal["float"] = Field(description="a float range")
    low: float = Field(description="lower end (inclusive)")
    high: float = Field(description="upper end")
    log: bool = Field(False, description="sample on a log scale (low > 0)")
    step: float | None = Field(None, description="sample on a grid of this step")

    @model_validator(mode="after")
    def _ordered(self) -> "FloatRange":
        if not self.low < self.high:
            raise ValueError(f"low ({self.low}) must be below high ({self.high})")
        if self.log and self.low <= 0:
            raise ValueError("a log range needs low > 0")
        if self.log and self.step is not None:
            raise ValueError("a log range cannot have a step (Optuna samples it continuously)")
        return self

    def endpoints(self) -> list[Any]:
        return [self.low, self.high]

    def to_optuna(self):
        import optuna

        return optuna.distributions.FloatDistribution(self.low, self.high, log=self.log, step=self.step)


class IntRange(BaseModel):
    model_config = ConfigDict(extra="forbid")
    type: Literal["int"] = Field(description="an integer range")
    low: int = Field(description="lower end (inclusive)")
    high: int = Field(description="upper end (inclusive)")
    log: bool = Field(False, description="sample on a log scale (low >= 1)")
    step: int = Field(1, description="spacing of the values")

    @model_validator(mode="after")
    def _ordered(self) -> "IntRange":
        if not self.low < self.high:
            raise ValueError(f"low ({self.low}) must be below high ({self.high})")
        if self.log and self.low < 1:
            raise ValueError(f"a log range needs low >= 1, got {self.low}")
        if self.log and self.step != 1:
            raise ValueError("a log range cannot have a step other than 1")
        return self

    def endpoints(self) -> list[Any]:
        return [self.low, self.high]

    def to_optuna(self):
        import optuna

        return optuna.distributions.IntDistribution(self.low, self.high, log=self.log, step=self.step)


class Categorical(BaseModel):
    model_config = ConfigDict(extra="forbid")
    type: Literal["categorical"] = Field(description="a choice among values")
    choices: list[Union[str, int, float, bool]] = Field(min_length=1, description="the values")

    def endpoints(self) -> list[Any]:
        return list(self.choices)

    def to_optuna(self):
        import optuna

        return optuna.distributions.CategoricalDistribution(self.choices)


Distribution = Annotated[Union[FloatRange, IntRange, Categorical], Field(discriminator="type")]


class Objective(BaseModel):
    model_config = ConfigDict(extra="forbid")
    metric: Literal["val_accuracy", "test_accuracy", "remaining_params", "density", "flops"] = Field("val_accuracy",
        description="a result column to optimise")
    mode: Literal["max", "min"] = Field("max", description="maximise or minimise it")


class OptunaConfig(BaseModel):
    """Optuna search through Ray Tune's OptunaSearch; select on validation accuracy by default."""

    model_config = ConfigDict(extra="forbid")
    num_samples: int = Field(8, ge=1,
        description="Optuna trials in the study (a resumed or re-run sweep continues it up to this many)")
    sampler: Literal["tpe", "random", "nsga2"] = Field("tpe",
        description="Optuna sampler: TPE, random, or NSGA-II (multi-objective)")
    seed: int = Field(0, description="sampler seed")
    objectives: list[Objective] = Field(default_factory=lambda: [Objective()], min_length=1,
        description="metric and direction of each objective; two or more make the search multi-objective")
    space: dict[str, Distribution] = Field(min_length=1,
        description="dotted config path -> range or choices (see Search spaces below)")
    fixed: dict[str, Any] = Field(default_factory=dict, description="dotted path -> value for every Optuna trial")


class SweepConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    grid: list[dict[str, list[Any]]] = Field(
        default_factory=list, description="blocks; each is the cartesian product of its axes"
    )
    optuna: OptunaConfig | None = Field(None, description="an Optuna search run after the grid, as its own phase")
    max_concurrent_trials: int | None = Field(None, ge=1,
        description="trials running at once (default: as many as the resources allow)")

    @model_validator(mode="before")
    @classmethod
    def _grid_as_list(cls, data: Any) -> Any:
        if isinstance(data, dict) and isinstance(data.get("grid"), dict):
            data = {**data, "grid": [data["grid"]]}
        return data

    @model_validator(mode="after")
    def _axes_non_empty(self) -> "SweepConfig":
        for i, block in enumerate(self.grid):
            for axis, values in block.items():
                if not values:
                    raise ValueError(f"grid[{i}].{axis} has no values")
        return self


def expand_grid(blocks: list[dict[str, list[Any]]]) -> list[dict[str, Any]]:
    """The union of each block's cartesian product, in a stable order, without duplicates."""
    out: list[dict[str, Any]] = []
    seen: set[str] = set()
    for block in blocks:
        axes = list(block)
        for combo in itertools.product(*(block[a] for a in axes)):
            point = dict(zip(axes, combo))
            key = repr(sorted(point.items()))
            if key not in seen:
                seen.add(key)
                out.append(point)
    return out
