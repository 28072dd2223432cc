"""Sweep search spaces: grid blocks expanded on the driver, Optuna ranges as typed objects.

Axes are dotted config paths (``prune.sparsity``), so every value a sweep can produce is checked
against the experiment schema before Ray starts.
"""
from __future__ import annotations

import itertools
import math
import re
from typing import Annotated, Any, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from pruning.columns import objective_names


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


Metric = Literal[objective_names()]  # the result columns declared objectives (some need export.enabled)
SAMPLER_NAMES = ("tpe", "random", "nsga2", "nsga3", "gp", "qmc", "grid", "bruteforce")
CONSTRAINED_SAMPLERS = ("tpe", "nsga2", "nsga3", "gp")  # Optuna samplers that steer by constraints
_CONSTRAINT = re.compile(r"^\s*([a-z_]+)\s*(<=|>=)\s*([-+0-9.eE]+)\s*$")


class Objective(BaseModel):
    model_config = ConfigDict(extra="forbid")
    metric: Metric = Field("val_accuracy", description="a result column to optimise")
    mode: Literal["max", "min"] = Field("max", description="maximise or minimise it")


class Constraint(BaseModel):
    """``metric <= bound`` or ``metric >= bound``, parsed (never evaluated) from text like "flops <= 2e6"."""

    metric: Metric
    op: Literal["<=", ">="]
    bound: float

    @classmethod
    def parse(cls, text: str) -> "Constraint":
        m = _CONSTRAINT.match(text)
        if not m:
            raise ValueError(f"constraint {text!r}: expected 'METRIC <= NUMBER' or 'METRIC >= NUMBER'")
        try:
            bound = float(m.group(3))
        except ValueError:
            raise ValueError(f"constraint {text!r}: {m.group(3)!r} is not a number") from None
        if not math.isfinite(bound):
            raise ValueError(f"constraint {text!r}: the bound must be finite")
        return cls(metric=m.group(1), op=m.group(2), bound=bound)

    def violation(self, value: float) -> float:
        """Optuna's convention: <= 0 is feasible, the amount above 0 how far from it."""
        return value - self.bound if self.op == "<=" else self.bound - value


class SchedulerConfig(BaseModel):
    """Early stopping on validation accuracy as trials train (Ray Tune's ASHA): a trial stopped early is
    PRUNED in the study, never COMPLETE with its early values, and never on the Pareto front."""

    model_config = ConfigDict(extra="forbid")
    type: Literal["asha", "hyperband"] = Field("asha", description="asha (one bracket) or hyperband (asynchronous, "
                                               "several brackets of different grace periods)")
    grace_period: int = Field(1, ge=1, description="training epochs (of retraining, PDP or IMP levels) a trial "
                              "always gets before it can be stopped")
    reduction_factor: float = Field(3.0, gt=1, description="keep the best 1/reduction_factor at each rung")
    max_t: int = Field(10_000, ge=1, description="epochs beyond which no rung is placed")


class OptunaConfig(BaseModel):
    """Optuna search through Ray Tune's OptunaSearch; select on validation accuracy by default."""

    model_config = ConfigDict(extra="forbid")
    num_samples: int = Field(8, ge=1,
        description="Optuna trials in the study (a resumed or re-run sweep continues it up to this many)")
    sampler: Literal[SAMPLER_NAMES] = Field(  # type: ignore[valid-type]
        "tpe", description="Optuna sampler by name: tpe, nsga2 / nsga3 (multi-objective), gp, qmc, random; grid and "
        "bruteforce enumerate a space of categorical choices only")
    seed: int = Field(0, description="sampler seed")
    objectives: list[Objective] = Field(default_factory=lambda: [Objective()], min_length=1,
        description="metric and direction of each objective; two or more make the search multi-objective")
    layer_densities: FloatRange | None = Field(None, description="also search one relative density per "
        "prunable layer in this range (type: float); trials use allocation 'scaled', so each keeps exactly the "
        "target density overall (pruning-at-init methods)")
    channel_keep: FloatRange | None = Field(None, description="also search one fraction of output channels kept "
        "per prunable layer but the classifier, in this range (type: float): structured pruning at init, an "
        "architecture search in effect (prune.channel_keep); pair with export.enabled to measure what it saves")
    scheduler: SchedulerConfig | None = Field(None, description="stop unpromising trials early (needs a "
        "validation split: data.val_fraction > 0)")
    constraints: list[str] = Field(default_factory=list, description="hard constraints on result columns, e.g. "
        "'flops <= 2e6': trials that break one are never on the Pareto front; tpe, nsga2, nsga3 and gp steer by them")
    space: dict[str, Distribution] = Field(min_length=1,
        description="dotted config path -> range or choices (see Search spaces below)")
    conditional: dict[str, dict[str, dict[str, Distribution]]] = Field(default_factory=dict, description=(
        "define-by-run spaces: categorical axis of `space` -> one of its choices -> {dotted path: range}, "
        "searched only in trials that chose it (e.g. PDP's tau only when prune.method is pdp)"))
    fixed: dict[str, Any] = Field(default_factory=dict, description="dotted path -> value for every Optuna trial")

    @field_validator("constraints")
    @classmethod
    def _parse_constraints(cls, v: list[str]) -> list[str]:
        for text in v:
            Constraint.parse(text)
        return v

    @field_validator("objectives")
    @classmethod
    def _distinct_objectives(cls, v: list[Objective]) -> list[Objective]:
        metrics = [o.metric for o in v]
        twice = sorted({m for m in metrics if metrics.count(m) > 1})
        if twice:
            raise ValueError(f"{twice} appear more than once: each metric is one objective (a study with the same "
                             "metric twice has a degenerate Pareto front)")
        return v

    @model_validator(mode="after")
    def _one_layer_space(self) -> "OptunaConfig":
        if self.channel_keep is not None and self.layer_densities is not None:
            raise ValueError("layer_densities and channel_keep exclude each other: search weights or channels per layer")
        return self

    @model_validator(mode="after")
    def _conditional_on_choices(self) -> "OptunaConfig":
        for axis, branches in self.conditional.items():
            parent = self.space.get(axis)
            if not isinstance(parent, Categorical):
                raise ValueError(f"conditional.{axis}: a conditional space hangs off a categorical axis of `space`; "
                                 f"categorical axes: {sorted(k for k, d in self.space.items() if isinstance(d, Categorical))}")
            names = {str(c): c for c in parent.choices}
            for choice, sub in branches.items():
                if str(choice) not in names:
                    raise ValueError(f"conditional.{axis}.{choice}: not one of its choices {parent.choices} "
                                     f"(as keys: {', '.join(repr(n) for n in names)})")
                clash = sorted(set(sub) & (set(self.space) | set(self.fixed)))
                if clash:
                    raise ValueError(f"conditional.{axis}.{choice}: {clash} are already in space or fixed")
        if self.conditional and self.sampler in ("grid", "bruteforce", "qmc"):
            raise ValueError(f"sampler {self.sampler!r} needs one fixed space; conditional spaces need a "
                             "define-by-run sampler (tpe, random, nsga2, nsga3, gp)")
        return self

    def conditional_points(self) -> list[tuple[str, dict[str, Any]]]:
        """Each conditional range at each end, with the choice that enables it (for validation)."""
        out = []
        for axis, branches in self.conditional.items():
            choices = {str(c): c for c in self.space[axis].choices}  # type: ignore[union-attr]
            for choice, sub in branches.items():
                for path, dist in sub.items():
                    out += [(f"sweep.optuna.conditional.{axis}.{choice}.{path}={v!r}",
                             {**self.fixed, axis: choices[str(choice)], path: v}) for v in dist.endpoints()]
        return out

    @model_validator(mode="after")
    def _enumerable_for_grid(self) -> "OptunaConfig":
        if self.sampler in ("grid", "bruteforce"):
            ranges = [k for k, d in self.space.items() if not isinstance(d, Categorical)]
            if ranges:
                raise ValueError(f"sampler {self.sampler!r} enumerates choices: make {ranges} categorical, or "
                                 "use tpe, random, qmc or gp")
        return self

    def parsed_constraints(self) -> list[Constraint]:
        return [Constraint.parse(t) for t in self.constraints]


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


LAYER_PARAM = "layer_density/"  # Optuna parameter prefix of a per-layer relative density
CHANNEL_PARAM = "channel_keep/"  # ... and of a per-layer fraction of channels kept


def layer_space(rng: FloatRange, layer_names: list[str], prefix: str = LAYER_PARAM) -> dict[str, FloatRange]:
    """One parameter per prunable layer (their names hold dots, so they are not config paths)."""
    return {f"{prefix}{name}": rng for name in layer_names}


def searched_space(opt: OptunaConfig, layer_names: list[str]) -> dict[str, Any]:
    """The configured ranges, plus one per prunable layer when per-layer densities or channel fractions
    are searched (``layer_names``: the prunable weights of the model the fixed settings build, in order;
    the last, the classifier, keeps every output, so it gets no channel fraction)."""
    if opt.layer_densities is not None:
        return {**opt.space, **layer_space(opt.layer_densities, layer_names)}
    if opt.channel_keep is not None:
        return {**opt.space, **layer_space(opt.channel_keep, layer_names[:-1], CHANNEL_PARAM)}
    return dict(opt.space)


def overrides_from_params(params: dict[str, Any]) -> dict[str, Any]:
    """A study trial's parameters as config overrides: the per-layer densities become one 'scaled'
    allocation, the per-layer channel fractions one ``prune.channel_keep``."""
    layers = {k[len(LAYER_PARAM):]: v for k, v in params.items() if k.startswith(LAYER_PARAM)}
    channels = {k[len(CHANNEL_PARAM):]: v for k, v in params.items() if k.startswith(CHANNEL_PARAM)}
    out = {k: v for k, v in params.items() if not k.startswith((LAYER_PARAM, CHANNEL_PARAM))}
    if layers:
        out |= {"prune.allocation": "scaled", "prune.layer_densities": layers}
    if channels:
        out |= {"prune.channel_keep": channels}
    return out
