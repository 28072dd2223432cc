"""Name-keyed binary masks over the prunable weights of a model, and their sparsity report.

A mask is a plain mapping from parameter name (``features.0.weight``) to a bool tensor, as in OpenLTH:
it needs no special layer classes, so any model (torchvision included) can be pruned, and the saved
file is portable between runs and tools.
"""
from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Iterable, Mapping

import torch
from torch import nn

from training.io import CorruptArtifactError, atomic_torch_save, atomic_write_text, load_artifact

__all__ = ["CorruptArtifactError", "Mask", "SparsityReport", "LayerSparsity", "prunable_parameters",
           "atomic_torch_save", "atomic_write_text", "load_artifact"]

PRUNABLE_TYPES = (nn.Conv1d, nn.Conv2d, nn.Linear)


def prunable_parameters(model: nn.Module, ignore: Iterable[str] = ()) -> dict[str, nn.Parameter]:
    """The ``weight`` of every Conv1d/Conv2d/Linear, minus names listed in ``ignore``.

    Biases and normalisation layers are never prunable (SPEC); ``ignore`` entries that match no
    prunable weight are an error, because a typo there would silently prune a layer the user wanted
    to keep dense.
    """
    ignore = set(ignore)
    params: dict[str, nn.Parameter] = {}
    for mod_name, module in model.named_modules():
        if isinstance(module, PRUNABLE_TYPES) and module.weight is not None:
            name = f"{mod_name}.weight" if mod_name else "weight"
            if name not in ignore:
                params[name] = module.weight
    all_names = set(params) | (ignore & _all_prunable_names(model))
    unknown = ignore - all_names
    if unknown:
        raise ValueError(
            f"prune.ignore names {sorted(unknown)} are not prunable weights of this model; "
            f"prunable weights: {sorted(all_names)}"
        )
    if not params:
        raise ValueError("the model has no prunable (Conv1d/Conv2d/Linear) weights left to prune")
    return params


def _all_prunable_names(model: nn.Module) -> set[str]:
    return {
        f"{n}.weight" if n else "weight"
        for n, m in model.named_modules()
        if isinstance(m, PRUNABLE_TYPES) and m.weight is not None
    }


@dataclass
class LayerSparsity:
    kept: int
    total: int

    @property
    def density(self) -> float:
        return self.kept / self.total if self.total else 0.0


@dataclass
class SparsityReport:
    """Global and per-layer counts; ``collapsed`` names layers with zero kept weights."""

    kept: int
    total: int
    layers: dict[str, LayerSparsity] = field(default_factory=dict)

    @property
    def density(self) -> float:
        return self.kept / self.total

    @property
    def sparsity(self) -> float:
        return 1.0 - self.density

    @property
    def compression(self) -> float:
        return float("inf") if self.kept == 0 else self.total / self.kept

    @property
    def collapsed(self) -> list[str]:
        return [name for name, layer in self.layers.items() if layer.kept == 0]

    def to_dict(self) -> dict:
        return {
            "kept": self.kept,
            "total": self.total,
            "density": self.density,
            "sparsity": self.sparsity,
            "compression": self.compression if self.kept else None,
            "collapsed": self.collapsed,
            "layers": {
                n: {**asdict(layer), "density": layer.density} for n, layer in self.layers.items()
            },
        }

    def to_json(self, path: str | os.PathLike) -> None:
        atomic_write_text(path, json.dumps(self.to_dict(), indent=2))


class Mask(dict):
    """Prunable weight name -> bool tensor (True = kept)."""

    @classmethod
    def ones(cls, model: nn.Module, ignore: Iterable[str] = ()) -> "Mask":
        return cls(
            {n: torch.ones_like(p, dtype=torch.bool) for n, p in prunable_parameters(model, ignore).items()}
        )

    @classmethod
    def from_tensors(cls, tensors: Mapping[str, torch.Tensor]) -> "Mask":
        return cls({n: t.detach().to(torch.bool) for n, t in tensors.items()})

    def report(self) -> SparsityReport:
        layers = {n: LayerSparsity(int(m.sum()), m.numel()) for n, m in self.items()}
        return SparsityReport(
            kept=sum(layer.kept for layer in layers.values()),
            total=sum(layer.total for layer in layers.values()),
            layers=layers,
        )

    @property
    def kept(self) -> int:
        return sum(int(m.sum()) for m in self.values())

    @property
    def total(self) -> int:
        return sum(m.numel() for m in self.values())

    @property
    def density(self) -> float:
        return self.kept / self.total

    def to(self, device: torch.device | str) -> "Mask":
        return Mask({n: m.to(device) for n, m in self.items()})

    def cpu(self) -> "Mask":
        return self.to("cpu")

    @torch.no_grad()
    def apply_(self, model: nn.Module) -> None:
        """Zero the pruned weights of ``model`` in place."""
        params = dict(model.named_parameters())
        for name, m in self.items():
            if name not in params:
                raise KeyError(f"mask entry {name!r} is not a parameter of the model")
            p = params[name]
            if p.shape != m.shape:
                raise ValueError(f"mask {name!r} has shape {tuple(m.shape)}, weight has {tuple(p.shape)}")
            p.mul_(m.to(p.device, p.dtype))

    def check_compatible(self, model: nn.Module) -> None:
        params = dict(model.named_parameters())
        for name, m in self.items():
            if name not in params or params[name].shape != m.shape:
                raise CorruptArtifactError(
                    f"mask entry {name!r} (shape {tuple(m.shape)}) does not match the model"
                )

    def save(self, path: str | os.PathLike) -> None:
        atomic_torch_save({n: m.cpu() for n, m in self.items()}, path)

    @classmethod
    def load(cls, path: str | os.PathLike) -> "Mask":
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"mask file {path} does not exist")
        data = load_artifact(path, "mask file")
        if not isinstance(data, dict) or not all(
            isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in data.items()
        ):
            raise CorruptArtifactError(f"mask file {path} does not hold a name -> tensor mapping")
        return cls.from_tensors(data)
