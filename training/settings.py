"""The settings every stage reads (data, model, training), as pydantic models that import no torch.

A config is validated against these before anything heavy is imported, so a typo is reported in a
fraction of a second. The names a config may use are declared here with their options
(``DATASET_DECLS``, ``MODEL_DECLS``: the built-ins, then whatever ``training.data.register_dataset`` /
``training.models.register_model`` or an installed plugin's entry point adds); the loaders and builders
themselves live in ``training.data`` and ``training.models``.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Annotated, Any, ClassVar, Literal

import pydantic
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from .registry import Registry

# ------------------------------------------------------------------------------------------- data
DATASET_NAMES = ("digits", "mnist1d", "fake", "cifar10", "cifar100", "mnist", "fashion_mnist", "svhn")


class DatasetOptions(BaseModel):
    """Base of a dataset's own options (``data.options``); the built-in datasets have none."""

    model_config = ConfigDict(extra="forbid", frozen=True)


@dataclass(frozen=True)
class Declared:
    """What validation knows of a model or dataset without importing it: its options and version (a
    version above 1 salts every key built from it: bump it when a default or the builder changes)."""

    options: type[BaseModel]
    version: int = 1


# name -> Declared; the built-ins here, plugins through ``training.data.register_dataset`` /
# ``training.models.register_model`` (or the entry points ``prunetune.datasets`` / ``prunetune.models``).
DATASET_DECLS: Registry[Declared] = Registry("dataset", entry_points="prunetune.datasets")
for _name in DATASET_NAMES:
    DATASET_DECLS.register(_name, origin="built-in")(Declared(DatasetOptions))


def _parse(kind: str, decl: Declared, name: str, options: dict[str, Any]) -> BaseModel:
    try:
        return decl.options.model_validate(options)
    except pydantic.ValidationError as err:
        problems = "; ".join(f"options.{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in err.errors())
        raise ValueError(f"invalid options for {kind} {name!r}: {problems}") from None


class DataConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    NON_RESULT: ClassVar[frozenset[str]] = frozenset({"root", "download"})  # where, not what

    name: str = Field(description="which dataset (see Names below)")
    root: str = Field("data",
        description="directory holding the dataset's files in their official format; made absolute for the trials")
    download: bool = Field(False,
        description="let torchvision download into root (needs internet: never here, in CI or on the GPU machine)")
    val_fraction: float = Field(0.1, ge=0.0, lt=0.5,
        description="share of the training split held out for validation (selection, Optuna); 0 = none")
    test_fraction: float = Field(0.2, gt=0.0, lt=0.5,
        description="share held out for testing where the dataset has no test split of its own")
    num_samples: int | None = Field(None, gt=0,
        description="samples to generate (mnist1d, fake); the dataset's own size when unset")
    max_train_samples: int | None = Field(None, gt=0,
        description="keep at most this many training examples (after the validation hold-out)")
    split_seed: int = Field(0,
        description="seed of the validation/test split (and of generated data); kept apart from the trial seed")
    options: dict[str, Any] = Field(default_factory=dict,
        description="the dataset's own options (a plugin's; the built-ins take none)")

    @field_validator("name")
    @classmethod
    def _known_dataset(cls, name: str) -> str:
        return DATASET_DECLS.require(name)

    @model_validator(mode="after")
    def _dataset_options(self) -> "DataConfig":
        """Only the options set away from their defaults are kept, so a key moves only when one is."""
        parsed = _parse("dataset", DATASET_DECLS.get(self.name), self.name, self.options)
        self.options = parsed.model_dump(mode="json", exclude_defaults=True)
        return self

    def parsed_options(self) -> BaseModel:
        return _parse("dataset", DATASET_DECLS.get(self.name), self.name, self.options)

    def key_extra(self) -> dict[str, Any]:
        v = DATASET_DECLS.get(self.name).version
        return {"dataset_version": v} if v > 1 else {}



# ------------------------------------------------------------------------------------------ model
TV_PREFIX = "tv:"


class ModelOptions(BaseModel):
    """Base for per-model options: unknown keys are errors, so a typo in a sweep config fails fast."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class MLPOptions(ModelOptions):
    widths: list[Annotated[int, Field(ge=1)]] = Field(default_factory=lambda: [300, 100],
        description="hidden layer widths (LeNet-300-100 by default)")


class Conv1dOptions(ModelOptions):
    width: int = Field(32, ge=1, description="channels of every conv layer")
    depth: int = Field(3, ge=1, description="conv layers")
    kernel_size: int = Field(5, ge=1, description="kernel size of every conv layer")


class ConvNetOptions(ModelOptions):
    depth: int = Field(3, ge=1, description="conv blocks (ConvNet-D)")
    width: int = Field(128, ge=1, description="channels of every block")
    norm: Literal["instance", "batch", "none"] = Field("instance",
        description="normalisation after each conv (instance norm as in the distillation literature)")


class ViTOptions(ModelOptions):
    patch_size: int = Field(4, ge=1, description="square patches; must divide the image's height and width")
    dim: int = Field(64, ge=1, description="token width (a multiple of heads)")
    depth: int = Field(2, ge=1, description="transformer blocks")
    heads: int = Field(4, ge=1, description="attention heads per block")
    mlp_ratio: float = Field(2.0, gt=0, description="MLP hidden width = mlp_ratio * dim")

    @model_validator(mode="after")
    def _heads_divide_dim(self) -> "ViTOptions":
        if self.dim % self.heads:
            raise ValueError(f"dim ({self.dim}) must be a multiple of heads ({self.heads})")
        return self


class ResNetOptions(ModelOptions):
    width: int = Field(16, ge=1, description="stage-1 width; stages use width, 2*width, 4*width")


class VGGOptions(ModelOptions):
    width: int = Field(64, ge=1, description="first-layer width; the plan's widths scale by width/64")


_FORBIDDEN_TV_KWARGS = frozenset({"weights", "weights_backbone", "num_classes", "progress"})


class TorchvisionOptions(ModelOptions):
    """Extra keyword arguments for ``torchvision.models.get_model`` (e.g. ``image_size`` for ViT)."""

    kwargs: dict[str, Any] = Field(default_factory=dict,
        description="extra keyword arguments of torchvision.models.get_model")

    @model_validator(mode="after")
    def _no_weights(self) -> "TorchvisionOptions":
        bad = sorted(_FORBIDDEN_TV_KWARGS & set(self.kwargs))
        if bad:
            raise ValueError(f"kwargs may not set {bad}: models start untrained, num_classes comes from data")
        return self



MODEL_OPTIONS: dict[str, type[ModelOptions]] = {
    "mlp": MLPOptions, "conv1d": Conv1dOptions, "convnet": ConvNetOptions,
    "resnet20": ResNetOptions, "resnet56": ResNetOptions, "vgg11_bn": VGGOptions, "vgg16_bn": VGGOptions,
    "vit": ViTOptions,
}
MODEL_DECLS: Registry[Declared] = Registry("model", entry_points="prunetune.models")
for _name, _cls in MODEL_OPTIONS.items():
    MODEL_DECLS.register(_name, origin="built-in")(Declared(_cls))


@functools.lru_cache(maxsize=1)
def torchvision_names() -> tuple[str, ...]:
    import torchvision  # heavy: paid only by configs that ask for a tv: model

    return tuple(sorted(torchvision.models.list_models(module=torchvision.models)))


def options_class(name: str) -> type[ModelOptions]:
    """The options of a declared model, or of any torchvision classifier (``tv:<name>``)."""
    if name.startswith(TV_PREFIX):
        tv_name = name[len(TV_PREFIX):]
        if tv_name not in torchvision_names():
            raise ValueError(f"unknown torchvision classification model {tv_name!r} in {name!r}; "
                             f"allowed after '{TV_PREFIX}': {', '.join(torchvision_names())}")
        return TorchvisionOptions
    MODEL_DECLS.require(name, f", or '{TV_PREFIX}<name>' for a torchvision classification model")
    return MODEL_DECLS.get(name).options


def parse_options(name: str, options: dict[str, Any]) -> ModelOptions:
    try:
        return options_class(name).model_validate(options)
    except pydantic.ValidationError as err:
        problems = "; ".join(
            f"options.{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in err.errors()
        )
        raise ValueError(f"invalid options for model {name!r}: {problems}") from None


class ModelConfig(BaseModel):
    """Which architecture to build; ``options`` is checked against that model's own Options class.

    After validation ``options`` holds the full option set with defaults filled in, so two configs that
    build the same network compare (and hash, once dumped) equal.
    """

    model_config = ConfigDict(extra="forbid")

    name: str = Field(description="which architecture (see Names below)")
    options: dict[str, Any] = Field(default_factory=dict,
        description="that architecture's own options (tables below); checked against them, defaults filled in")

    @model_validator(mode="after")
    def _validate_options(self) -> "ModelConfig":
        self.options = parse_options(self.name, self.options).model_dump(mode="json")
        return self

    def key_settings(self) -> dict[str, Any]:
        """The name and the options that differ from that model's defaults (see ``training.keys``)."""
        from .keys import canonical

        opts = canonical(self.parsed_options())
        version = 1 if self.name.startswith(TV_PREFIX) else MODEL_DECLS.get(self.name).version
        return {"name": self.name, **({"options": opts} if opts else {}), **({"version": version} if version > 1 else {})}

    def parsed_options(self) -> ModelOptions:
        return parse_options(self.name, self.options)


# --------------------------------------------------------------------------------------- training
class TrainConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    NON_RESULT: ClassVar[frozenset[str]] = frozenset({"eval_batch_size", "device"})

    epochs: int = Field(20, ge=1,
        description="training epochs (dense pre-training, IMP levels and the final retrain alike)")
    batch_size: int = Field(64, ge=1, description="examples per step; a rewind step counts these steps")
    optimizer: Literal["sgd", "adam"] = Field("sgd", description="SGD (momentum, nesterov) or Adam")
    lr: float = Field(0.05, gt=0, description="peak learning rate")
    momentum: float = Field(0.9, ge=0, lt=1, description="SGD momentum (Adam: beta1 stays at its default)")
    nesterov: bool = Field(False, description="Nesterov momentum (SGD with momentum > 0 only)")
    weight_decay: float = Field(5e-4, ge=0, description="L2 weight decay in the optimizer")
    schedule: Literal["constant", "multistep", "cosine"] = Field("cosine",
        description="learning-rate schedule over the whole run, a pure function of the step (resumable anywhere)")
    milestones: list[float] = Field(default_factory=list, description="epochs at which multistep decays")
    gamma: float = Field(0.1, gt=0, le=1, description="multistep: factor applied at each milestone")
    warmup_iterations: int = Field(0, ge=0, description="linear warm-up steps from lr/n to lr")
    augment: Literal["none", "flip_crop"] = Field("none",
        description="training-time augmentation of real images (random flip and 4-pixel crop)")
    eval_batch_size: int = Field(1024, ge=1, description="batch size for evaluation only (no effect on results)")
    device: Literal["auto", "cpu", "cuda"] = Field("auto",
        description="auto: the CUDA device Ray gave the trial, else the CPU")
    amp: bool = Field(False, description="bfloat16 autocast on CUDA; ignored on CPU")

    @model_validator(mode="after")
    def _milestones_in_range(self) -> "TrainConfig":
        for m in self.milestones:
            if not 0 < m < self.epochs:
                raise ValueError(f"milestones must lie strictly between 0 and epochs={self.epochs}, got {m}")
        if self.nesterov and (self.optimizer != "sgd" or self.momentum == 0):
            raise ValueError("nesterov requires optimizer 'sgd' with momentum > 0")
        return self


