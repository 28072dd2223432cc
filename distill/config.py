"""Distillation settings, importing no torch (see ``training.settings``): the method names, the
augmentation ops a strategy may name, and one run's settings."""
from __future__ import annotations

from typing import Any, ClassVar, Literal

import pydantic
from pydantic import BaseModel, ConfigDict, Field, field_validator

from training.registry import Registry
from training.settings import ModelConfig

DISTILL_METHODS = ("random", "herding", "kmeans", "dm", "dc", "dsa", "mtt")
# name -> its options model as "module:Class" (built-ins: loaded only by the docs and ``prunetune list``) or
# the class itself (plugins, through ``distill.methods.register_distiller`` or entry points
# ``prunetune.distillers``).
DISTILLER_DECLS: Registry[Any] = Registry("distillation method", entry_points="prunetune.distillers")
for _name, _opts in {"random": "coresets:CoresetOptions", "herding": "coresets:CoresetOptions",
                     "kmeans": "coresets:CoresetOptions", "dm": "dm:DMOptions", "dc": "dc:DCOptions",
                     "dsa": "dc:DCOptions", "mtt": "mtt:MTTOptions"}.items():
    DISTILLER_DECLS.register(_name, origin="built-in")(f"distill.{_opts}")
# DSA ops by input kind; ``distill.augment`` implements exactly these.
AUGMENT_OPS = {"image": ("color", "crop", "cutout", "flip", "scale", "rotate"),
               "signal": ("shift", "stretch", "scale", "noise")}


def check_augment_strategy(v: str) -> str:
    """'default', 'none', or ops joined by '_'."""
    if v not in ("default", "none"):
        known = set(AUGMENT_OPS["image"]) | set(AUGMENT_OPS["signal"])
        unknown = [op for op in v.split("_") if op not in known]
        if unknown:
            raise ValueError(f"unknown augmentation op(s) {unknown}; allowed: 'default', 'none', or ops joined "
                             f"by '_' from {sorted(known)}")
    return v


# DM (Zhao & Bilen 2023): 1; DC/DSA (Zhao et al. 2021): 0.1; MTT (Cazenavette et al. 2022): 100-1000.
DEFAULT_LR_IMAGES = {"dm": 1.0, "dc": 0.1, "dsa": 0.1, "mtt": 100.0}


class DistillConfig(BaseModel):
    """One distillation run. Fields a method does not use are ignored by it (coresets ignore the lrs).

    ``network`` defaults to the input kind's network: ``convnet`` (ConvNet-3, instance norm, width 128)
    for (C, H, W) images and ``conv1d`` for (C, L) signals. ``augment`` is a DSA strategy string
    (``distill.augment``), ``"default"`` for the input kind's default, or ``"none"``.
    """

    model_config = ConfigDict(extra="forbid")
    NON_RESULT: ClassVar[frozenset[str]] = frozenset({"device", "checkpoint_every", "progress_every"})

    method: str = Field(description="which distillation method or coreset (see Names below)")
    ipc: int = Field(10, ge=1, description="synthetic samples per class")
    iterations: int = Field(1000, ge=0, description="optimisation steps of the synthetic set (coresets: ignored)")
    lr_images: float | None = Field(
        None, gt=0, description="SGD lr on the synthetic inputs; default per method (dm 1, dc/dsa 0.1, mtt 100)"
    )
    momentum: float = Field(0.5, ge=0, lt=1, description="SGD momentum on the synthetic inputs")
    batch_real: int = Field(256, ge=1, description="real samples per class per matching step")
    network: ModelConfig | None = Field(None,
        description="the network matched during distillation; default: convnet for images, conv1d for signals")
    init: Literal["real", "noise"] = Field("real",
        description="synthetic set starts from random real samples or from N(0, 1) noise")
    augment: str = Field("default",
        description="DSA strategy while matching: 'default' for the input kind, 'none', or ops joined by '_'")
    augment_mode: Literal["single", "all"] = Field("single",
        description="apply one op group drawn per call (single, DSA's 'S') or every op in order (all)")
    seed: int = Field(0, ge=0, description="seed of the distillation (init, sampling, augmentation)")
    device: Literal["auto", "cpu", "cuda"] = Field("auto",
        description="where distillation runs (auto: a CUDA device when visible)")
    checkpoint_every: int = Field(100, ge=0, description="iterations between checkpoints; 0 = never")
    progress_every: int = Field(50, ge=1, description="iterations between progress lines")
    options: dict[str, Any] = Field(default_factory=dict, description="method-specific, validated by the method")

    @field_validator("method")
    @classmethod
    def _known_method(cls, name: str) -> str:
        return DISTILLER_DECLS.require(name)

    _augment = field_validator("augment")(classmethod(lambda cls, v: check_augment_strategy(v)))

    @pydantic.model_validator(mode="after")
    def _method_lr(self) -> "DistillConfig":
        """The papers' pixel learning rates differ by three orders of magnitude; one default for all
        would make DC diverge or MTT crawl."""
        if self.lr_images is None:
            self.lr_images = DEFAULT_LR_IMAGES.get(self.method, 1.0)
        return self


