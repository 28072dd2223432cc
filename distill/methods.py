"""Distillation methods behind one registry, their shared config, and helpers every method uses.

A method is a function ``(real, cfg, progress, checkpoint_dir) -> DistilledSet`` registered with
``@register_distiller(name, options=...)``:

* ``real``: the ``DataBundle`` to distil (its train split; inputs already normalised);
* ``cfg``: a ``DistillConfig``; method-specific settings sit in ``cfg.options`` and each method validates
  them with its own pydantic model (``parse_options``), so unknown keys fail fast;
* ``progress(iteration, metrics)``: optional callback, called every ``cfg.progress_every`` iterations;
* ``checkpoint_dir``: optional folder for a resumable checkpoint (``checkpoint_file`` gives the path,
  keyed by the recipe hash), written atomically every ``cfg.checkpoint_every`` iterations.

Built in: ``random``, ``herding``, ``kmeans`` (``distill/coresets.py``) and ``dm`` (``distill/dm.py``).
``dc``/``dsa`` and ``mtt`` register themselves from ``distill/dc.py`` and ``distill/mtt.py`` when those
modules exist; they are imported at the bottom of this module. A module that exists but fails to import
does not break the others: asking for one of its methods re-raises the import error.
"""
from __future__ import annotations

import hashlib
import importlib
import importlib.util
import time
from dataclasses import dataclass
import warnings
from pathlib import Path
from typing import Any, Callable, Protocol, TypeVar

import pydantic
import torch
from pydantic import BaseModel
from torch import nn

from training.data import DataBundle
from training.models import ModelConfig, create_model
from training.registry import Registry

from .artifact import DistilledSet, checkpoint_path, data_fingerprint
from .config import DEFAULT_LR_IMAGES, DISTILL_METHODS, DistillConfig  # noqa: F401 (re-exported)
from .augment import IMAGE_STRATEGY, SIGNAL_STRATEGY, Augment

__all__ = [
    "DISTILLERS",
    "DistillConfig",
    "Distiller",
    "Progress",
    "build_distilled_set",
    "checkpoint_file",
    "class_indices",
    "default_network",
    "derive_seed",
    "has_batchnorm",
    "distill_dataset",
    "init_synthetic",
    "make_augment",
    "method_names",
    "network_for",
    "parse_options",
    "recipe_for",
    "recipe_hash",
    "run_identity",
    "RunIdentity",
    "sample_network",
    "sample_real",
    "source_for",
]

Progress = Callable[[int, dict], None]


class Distiller(Protocol):
    def __call__(
        self, real: DataBundle, cfg: "DistillConfig", progress: Progress | None, checkpoint_dir: Path | None
    ) -> DistilledSet: ...


DISTILLERS: Registry[Distiller] = Registry("distillation method")


def register_distiller(name: str, options: type[BaseModel] | None = None) -> Callable[[Distiller], Distiller]:
    """Register ``fn(real, cfg, progress, checkpoint_dir) -> DistilledSet`` (a user's the same way as the
    built-ins); ``options`` is the model its ``cfg.options`` are checked against (``parse_options``)."""
    from training.registry import origin_of

    from .config import DISTILLER_DECLS

    def deco(fn: Distiller) -> Distiller:
        if name not in DISTILL_METHODS:
            DISTILLER_DECLS.register(name, origin=origin_of(fn.__module__))(options)
        DISTILLERS.register(name)(fn)
        return fn

    return deco

# Optional method modules -> the method names they register; import failures are kept per module.
_OPTIONAL_MODULES: dict[str, tuple[str, ...]] = {"dc": ("dc", "dsa"), "mtt": ("mtt",)}
_IMPORT_ERRORS: dict[str, BaseException] = {}


def method_names() -> list[str]:
    return DISTILLERS.names()


def has_batchnorm(net: nn.Module) -> bool:
    """BatchNorm couples the examples of a forward: methods that batch classes together must not then."""
    return any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in net.modules())


def check_method_available(name: str) -> None:
    """A declared method whose module failed to import says why (the schema only knows the names)."""
    from .config import DISTILLER_DECLS

    DISTILLER_DECLS.get(name)  # an entry-point distiller registers itself on import
    if name in DISTILLERS:
        return
    for module, names in _OPTIONAL_MODULES.items():
        if name in names and module in _IMPORT_ERRORS:
            raise RuntimeError(
                f"distillation method {name!r} is unavailable: importing distill.{module} failed "
                f"({type(_IMPORT_ERRORS[module]).__name__}: {_IMPORT_ERRORS[module]})"
            ) from _IMPORT_ERRORS[module]
    raise ValueError(f"unknown distillation method {name!r}; allowed: {', '.join(method_names())}")


# ------------------------------------------------------------------------------------------ identity
# Fields that change how a run is executed or observed, never its result.
_NON_RECIPE_FIELDS = set(DistillConfig.NON_RESULT)


def default_network(input_shape: tuple[int, ...]) -> ModelConfig:
    if len(input_shape) == 3:
        return ModelConfig(name="convnet")
    if len(input_shape) == 2:
        return ModelConfig(name="conv1d")
    raise ValueError(f"no default distillation network for input_shape {tuple(input_shape)}")


def network_for(cfg: DistillConfig, real: DataBundle) -> ModelConfig:
    return cfg.network if cfg.network is not None else default_network(tuple(real.input_shape))


def recipe_for(cfg: DistillConfig, real: DataBundle, **extra: Any) -> dict:
    """Everything that determines the result: the config (network resolved) plus ``extra`` (e.g. a
    method's parsed options with defaults filled in)."""
    recipe = cfg.model_dump(mode="json", exclude=_NON_RECIPE_FIELDS)
    recipe["network"] = network_for(cfg, real).model_dump(mode="json")
    recipe.update(extra)
    return recipe


def source_for(real: DataBundle) -> dict:
    return {
        "dataset": real.name,
        "num_train": len(real.train),
        "input_shape": list(real.input_shape),
        "num_classes": real.num_classes,
        "normalization": {"mean": list(real.normalization.mean), "std": list(real.normalization.std)},
        "data_hash": data_fingerprint(real),
    }


def recipe_hash(recipe: dict, source: dict) -> str:
    """The hash a ``DistilledSet`` built from this recipe and source will carry."""
    from training.identity import content_hash

    return content_hash({"recipe": recipe, "source": source, "seed": recipe.get("seed")})


@dataclass(frozen=True)
class RunIdentity:
    """What an optimising method's run is: its recipe, source, content hash and checkpoint file.

    One place computes them, so the hash a set carries and the checkpoint it resumes from can never
    disagree between methods."""

    recipe: dict
    source: dict
    hash: str
    checkpoint: Path | None


def run_identity(cfg: "DistillConfig", real: DataBundle, checkpoint_dir: Path | str | None, **extra: Any) -> RunIdentity:
    recipe = recipe_for(cfg, real, **extra)
    source = source_for(real)
    return RunIdentity(recipe, source, recipe_hash(recipe, source), checkpoint_file(checkpoint_dir, recipe, source))


def checkpoint_file(checkpoint_dir: Path | str | None, recipe: dict, source: dict) -> Path | None:
    if checkpoint_dir is None:
        return None
    return checkpoint_path(checkpoint_dir, str(recipe.get("method")), recipe_hash(recipe, source))


def build_distilled_set(
    real: DataBundle, x: torch.Tensor, y: torch.Tensor, recipe: dict, source: dict, cost: dict
) -> DistilledSet:
    return DistilledSet(
        x=x.detach().to("cpu").float(),
        y=y.detach().to("cpu").long(),
        normalization=real.normalization,
        input_shape=tuple(real.input_shape),
        num_classes=real.num_classes,
        recipe=recipe,
        source=source,
        cost=cost,
    )


M = TypeVar("M", bound=BaseModel)


def parse_options(model: type[M], cfg: DistillConfig) -> M:
    """Validate ``cfg.options`` against a method's own pydantic model, with a message naming the method."""
    try:
        return model.model_validate(cfg.options)
    except pydantic.ValidationError as err:
        problems = "; ".join(f"options.{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in err.errors())
        raise ValueError(f"invalid options for distillation method {cfg.method!r}: {problems}") from None


# ------------------------------------------------------------------------------------------ randomness
def derive_seed(*parts: Any) -> int:
    """A 63-bit seed from any tuple of JSON-ish parts (e.g. (cfg.seed, "net", iteration)); stable across runs."""
    digest = hashlib.sha256(repr(parts).encode()).digest()
    return int.from_bytes(digest[:8], "little") & 0x7FFF_FFFF_FFFF_FFFF


def sample_network(model_cfg: ModelConfig, real: DataBundle, seed: int, device: torch.device | None = None) -> nn.Module:
    """A freshly initialised network drawn from ``seed`` without disturbing the global RNG."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        net = create_model(model_cfg, real.input_shape, real.num_classes)
    return net.to(device) if device is not None else net


def make_augment(cfg: DistillConfig, input_shape: tuple[int, ...], draw: str = "batch") -> Augment:
    """``draw='batch'`` for matching (siamese: real and synthetic alike); ``'sample'`` where a net trains
    on the augmented batch (MTT's unrolled student steps, DSA's training mode)."""
    kind = "image" if len(input_shape) == 3 else "signal"
    if cfg.augment == "default":
        strategy = IMAGE_STRATEGY if kind == "image" else SIGNAL_STRATEGY
    else:
        strategy = cfg.augment
    return Augment(strategy, kind=kind, mode=cfg.augment_mode, draw=draw)  # "none" gives the identity


# ------------------------------------------------------------------------------------------ data
def class_indices(real: DataBundle) -> list[torch.Tensor]:
    """Indices of the training samples of each class, in dataset order."""
    y = real.train.y
    return [torch.nonzero(y == c, as_tuple=False).flatten() for c in range(real.num_classes)]


def sample_real(pool: torch.Tensor, n: int, gen: torch.Generator) -> torch.Tensor:
    """``n`` distinct entries of ``pool`` (all of them, shuffled, when ``n`` >= its size)."""
    return pool[torch.randperm(len(pool), generator=gen)[:n]]


def init_synthetic(real: DataBundle, cfg: DistillConfig, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Class-sorted synthetic set of ``cfg.ipc`` per class: random real samples, or N(0, 1) noise
    (the normalised space's scale). Labels are ``repeat_interleave(arange(C), ipc)``."""
    per_class = []
    for c, pool in enumerate(class_indices(real)):
        if cfg.init == "noise":
            per_class.append(torch.randn((cfg.ipc, *real.input_shape), generator=gen))
            continue
        if len(pool) < cfg.ipc:
            raise ValueError(
                f"class {c} has {len(pool)} training samples, fewer than ipc={cfg.ipc}; lower ipc or use init 'noise'"
            )
        per_class.append(real.train.x[sample_real(pool, cfg.ipc, gen)].clone())
    x = torch.cat(per_class).float()
    y = torch.arange(real.num_classes).repeat_interleave(cfg.ipc)
    return x, y


# ------------------------------------------------------------------------------------------ dispatch
def distill_dataset(
    real: DataBundle,
    cfg: DistillConfig,
    progress: Progress | None = None,
    checkpoint_dir: Path | str | None = None,
) -> DistilledSet:
    """Run ``cfg.method`` on ``real``; the result's ``cost.wall_time_s`` covers this call when the method
    did not measure it itself."""
    check_method_available(cfg.method)
    t0 = time.perf_counter()
    ds = DISTILLERS.get(cfg.method)(real, cfg, progress, Path(checkpoint_dir) if checkpoint_dir else None)
    ds.cost.setdefault("wall_time_s", time.perf_counter() - t0)
    ds.cost.setdefault("sample_passes", 0)
    return ds


# Built-in methods, then the optional ones (imported last: they import names defined above).
from . import coresets, dm  # noqa: E402,F401

for _module in _OPTIONAL_MODULES:
    if importlib.util.find_spec(f"{__package__}.{_module}") is None:
        continue
    try:
        importlib.import_module(f"{__package__}.{_module}")
    except Exception as _err:  # keep the other methods usable; the error surfaces when the method is asked for
        _IMPORT_ERRORS[_module] = _err
        warnings.warn(f"distill.{_module} failed to import: {type(_err).__name__}: {_err}", stacklevel=1)
del _module
