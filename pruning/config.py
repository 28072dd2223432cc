"""Typed pruning settings shared by the CLI, the sweep and the mask-search stage."""
from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from distill.methods import DistillConfig
from training.trainer import TrainConfig

from .pdp import PDPConfig


def _small_set_training() -> TrainConfig:
    """Per-level training on a distilled set (Distilled Pruning's recipe, shortened: SGD 0.01,
    momentum 0.9, wd 5e-4, LR x0.1 at half)."""
    return TrainConfig(epochs=300, batch_size=256, optimizer="sgd", lr=0.01, momentum=0.9,
                       weight_decay=5e-4, schedule="multistep", milestones=[150], gamma=0.1)


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
    search_epochs: int | None = Field(
        None, ge=1, description="imp/magnitude(trained): epochs per search level (default: train.epochs); "
        "the final retrain keeps train.epochs"
    )
    schedule: Literal["exponential", "linear"] = "exponential"
    allocation: Literal["global", "uniform", "erk", "explicit"] | None = Field(
        None, description="pruning at init: how the density is shared by layers (default: from scope)"
    )
    layer_densities: dict[str, float] = Field(
        default_factory=dict, description="allocation 'explicit': prunable weight name -> density"
    )
    examples_per_class: int = Field(10, ge=1, description="data-driven scorers: class-balanced examples")
    bn_mode: Literal["eval", "train"] = Field("eval", description="SNIP/GraSP: BatchNorm mode while scoring")
    grasp_temperature: float = Field(200.0, gt=0)
    px_variant: Literal["clean", "official"] = "clean"
    ablation: Literal["none", "shuffle", "reinit", "invert"] = Field(
        "none", description="sanity checks (Frankle et al. 2021): permute each layer's mask, redraw weights, keep lowest scores"
    )
    pdp: PDPConfig = Field(default_factory=PDPConfig)
    distill: DistillConfig = Field(
        default_factory=lambda: DistillConfig(method="dm"),
        description="distilled_imp: how the small training set is made (imp_subset uses method 'random' with the same ipc)",
    )
    small_train: TrainConfig = Field(
        default_factory=_small_set_training, description="distilled_imp/imp_subset: per-level training on the small set"
    )
    small_augment: str = Field(
        "default",
        description="DSA augmentation while training on the small set (as Distilled Pruning does): "
        "'default' for the input kind's strategy, a strategy string, or 'none'",
    )

    @field_validator("method")
    @classmethod
    def _known_method(cls, v: str) -> str:
        from .methods import method_names  # late: the registry imports this module

        if v not in method_names():
            raise ValueError(f"unknown method {v!r}; allowed: {', '.join(method_names())}")
        return v

    @field_validator("small_augment")
    @classmethod
    def _known_ops(cls, v: str) -> str:
        from distill.augment import IMAGE_OPS, SIGNAL_OPS

        if v not in ("default", "none"):
            unknown = [op for op in v.split("_") if op not in IMAGE_OPS and op not in SIGNAL_OPS]
            if unknown:
                raise ValueError(
                    f"unknown augmentation op(s) {unknown}; allowed: 'default', 'none', or ops joined by '_' "
                    f"from {sorted(set(IMAGE_OPS) | set(SIGNAL_OPS))}"
                )
        return v

    @model_validator(mode="after")
    def _options_fit_method(self) -> "PruneConfig":
        if (self.allocation == "explicit") != bool(self.layer_densities):
            raise ValueError("layer_densities is required by, and only used with, allocation 'explicit'")
        if self.ablation != "none":
            from .methods import allowed_ablations  # late: the registry imports this module

            allowed = allowed_ablations(self)
            if self.ablation not in allowed:
                raise ValueError(
                    f"ablation {self.ablation!r} does not apply to method {self.method!r}; allowed for it: "
                    + (", ".join(sorted(allowed)) if allowed else "none")
                )
        if self.method == "pdp" and self.pdp.structure == "nm":
            implied = 1 - self.pdp.n / self.pdp.m
            if abs(self.sparsity - implied) > 1e-9:
                raise ValueError(
                    f"pdp {self.pdp.n}:{self.pdp.m} fixes sparsity at {implied:g}; set prune.sparsity to {implied:g}"
                )
        return self

    @property
    def effective_allocation(self) -> str:
        return self.allocation or ("global" if self.scope == "global" else "uniform")

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
