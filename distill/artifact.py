"""The distilled set as an artifact: inputs, labels, the normalisation they live in, recipe, hash, cost.

Synthetic inputs live in the **same normalised space** as the ``DataBundle`` they were distilled from, so
training on them and then on the real data needs no re-normalisation (SPEC: never mix spaces).

A saved artifact is one ``torch.save`` file holding tensors and plain JSON-able values only, so it loads with
``torch.load(weights_only=True)``. The same module holds the small atomic checkpoint helpers every
distillation method shares (a periodic snapshot of the synthetic tensor and optimizer state, keyed by the
recipe hash so a changed recipe never resumes from a stale file).
"""
from __future__ import annotations

import hashlib
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from training.io import atomic_torch_save, load_artifact
from training.data import DataBundle, Normalization, Split
from training.identity import content_hash

__all__ = [
    "ARTIFACT_FORMAT",
    "DistilledSet",
    "DistilledSetError",
    "checkpoint_path",
    "data_fingerprint",
    "load_checkpoint",
    "save_checkpoint",
    "save_picture",
]

ARTIFACT_FORMAT = "prunetune.distilled_set.v1"
CHECKPOINT_FORMAT = "prunetune.distill_checkpoint.v1"


class DistilledSetError(ValueError):
    """A distilled-set file that exists but cannot be read as one (truncated, foreign, wrong format)."""


def data_fingerprint(bundle: DataBundle) -> str:
    """Hash of the actual training tensors (the normalised values and labels), not of a config."""
    h = hashlib.sha256()
    for t in (bundle.train.x, bundle.train.y):
        t = t.detach().to("cpu").contiguous()
        h.update(str((tuple(t.shape), str(t.dtype))).encode())
        h.update(t.numpy().tobytes())
    return h.hexdigest()[:16]


def _jsonable(obj: Any, what: str) -> Any:
    """Round-trip through JSON: rejects tensors/objects early and turns tuples into lists."""
    try:
        return json.loads(json.dumps(obj, allow_nan=True))
    except TypeError as err:
        raise TypeError(f"{what} must be JSON-able: {err}") from None


@dataclass
class DistilledSet:
    x: torch.Tensor  # synthetic inputs, in the SAME normalised space as the DataBundle they came from
    y: torch.Tensor  # int64 labels
    normalization: Normalization
    input_shape: tuple[int, ...]
    num_classes: int
    recipe: dict  # method, ipc, iterations, lrs, network, seed, ... (JSON-able)
    source: dict  # dataset description + content hash of the source data
    content_hash: str = ""  # hash of recipe + source (the recipe carries the seed); filled if empty
    cost: dict = field(default_factory=lambda: {"wall_time_s": 0.0, "sample_passes": 0})

    def __post_init__(self) -> None:
        self.x = self.x.detach()
        self.y = self.y.detach().long()
        self.input_shape = tuple(int(s) for s in self.input_shape)
        self.num_classes = int(self.num_classes)
        if self.x.shape[0] != self.y.shape[0]:
            raise ValueError(f"distilled set has {self.x.shape[0]} inputs but {self.y.shape[0]} labels")
        if tuple(self.x.shape[1:]) != self.input_shape:
            raise ValueError(f"inputs have shape {tuple(self.x.shape[1:])}, expected {self.input_shape}")
        if len(self.y) and (int(self.y.min()) < 0 or int(self.y.max()) >= self.num_classes):
            raise ValueError(f"labels must lie in [0, {self.num_classes})")
        self.recipe = _jsonable(self.recipe, "recipe")
        self.source = _jsonable(self.source, "source")
        self.cost = _jsonable(self.cost, "cost")
        if not self.content_hash:
            self.content_hash = self.expected_hash()

    # --- identity -------------------------------------------------------------------------------
    def expected_hash(self) -> str:
        return content_hash({"recipe": self.recipe, "source": self.source, "seed": self.recipe.get("seed")})

    @property
    def ipc(self) -> dict[int, int]:
        """Images per class, as a {class: count} dict."""
        return {c: int((self.y == c).sum()) for c in range(self.num_classes)}

    def __len__(self) -> int:
        return int(self.y.shape[0])

    # --- persistence ----------------------------------------------------------------------------
    def to_dict(self) -> dict:
        return {
            "format": ARTIFACT_FORMAT,
            "x": self.x.to("cpu").contiguous(),
            "y": self.y.to("cpu").contiguous(),
            "normalization": {"mean": list(self.normalization.mean), "std": list(self.normalization.std)},
            "input_shape": list(self.input_shape),
            "num_classes": self.num_classes,
            "recipe": self.recipe,
            "source": self.source,
            "content_hash": self.content_hash,
            "cost": self.cost,
        }

    def save(self, path: str | os.PathLike) -> None:
        """One file, written atomically (temporary file + rename)."""
        atomic_torch_save(self.to_dict(), path)

    @classmethod
    def load(cls, path: str | os.PathLike) -> "DistilledSet":
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"distilled set not found: {path}")
        d = load_artifact(path, "distilled set", error=DistilledSetError)
        if not isinstance(d, dict) or d.get("format") != ARTIFACT_FORMAT:
            found = d.get("format") if isinstance(d, dict) else type(d).__name__
            raise DistilledSetError(f"{path} is not a distilled set (format {found!r}, expected {ARTIFACT_FORMAT!r})")
        try:
            ds = cls(
                x=d["x"],
                y=d["y"],
                normalization=Normalization(tuple(d["normalization"]["mean"]), tuple(d["normalization"]["std"])),
                input_shape=tuple(d["input_shape"]),
                num_classes=d["num_classes"],
                recipe=d["recipe"],
                source=d["source"],
                content_hash=d["content_hash"],
                cost=d["cost"],
            )
        except (KeyError, TypeError, ValueError) as err:
            raise DistilledSetError(f"distilled set {path} is malformed: {type(err).__name__}: {err}") from err
        return ds

    # --- use ------------------------------------------------------------------------------------
    def as_bundle(self, real: DataBundle) -> DataBundle:
        """Train split = the distilled set; val/test = the real ones. Refuses mismatched spaces."""
        if tuple(real.input_shape) != self.input_shape:
            raise ValueError(f"distilled inputs {self.input_shape} do not match the data's {real.input_shape}")
        if real.num_classes != self.num_classes:
            raise ValueError(f"distilled set has {self.num_classes} classes, the data {real.num_classes}")
        if not _same_normalization(real.normalization, self.normalization):
            raise ValueError(
                f"distilled set lives in normalisation {self.normalization}, the data in {real.normalization}; "
                "training phases must share one input normalisation"
            )
        return DataBundle(
            name=f"{real.name}:distilled:{self.content_hash}",
            train=Split(self.x, self.y),
            val=real.val,
            test=real.test,
            num_classes=real.num_classes,
            input_shape=tuple(real.input_shape),
            normalization=real.normalization,
        )

    def unnormalized(self) -> torch.Tensor:
        """Inputs mapped back to the raw data scale (e.g. [0, 1] pixels)."""
        shape = (1, len(self.normalization.mean)) + (1,) * (self.x.dim() - 2)
        mean = torch.tensor(self.normalization.mean, dtype=self.x.dtype).view(shape)
        std = torch.tensor(self.normalization.std, dtype=self.x.dtype).view(shape)
        return self.x.cpu() * std + mean


def _same_normalization(a: Normalization, b: Normalization, tol: float = 1e-6) -> bool:
    if len(a.mean) != len(b.mean) or len(a.std) != len(b.std):
        return False
    pairs = list(zip(a.mean, b.mean)) + list(zip(a.std, b.std))
    return all(math.isclose(p, q, rel_tol=tol, abs_tol=tol) for p, q in pairs)


# ------------------------------------------------------------------------------------------- picture
def save_picture(ds: DistilledSet, path: str | os.PathLike, max_per_class: int = 10) -> None:
    """PNG of the set, one row per class: images un-normalised to [0, 1] in a grid, or 1-D signals
    (raw scale) overlaid per class. At most ``max_per_class`` samples per class are drawn."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure  # no pyplot: no global backend or figure state is touched

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    raw = ds.unnormalized()
    per_class = [raw[ds.y.cpu() == c][:max_per_class] for c in range(ds.num_classes)]
    cols = max(1, max(len(p) for p in per_class))
    rows = ds.num_classes
    if len(ds.input_shape) == 3:
        fig = Figure(figsize=(0.9 * cols + 0.6, 0.9 * rows))
        for c, samples in enumerate(per_class):
            for j in range(cols):
                ax = fig.add_subplot(rows, cols, c * cols + j + 1)
                ax.set_xticks([])
                ax.set_yticks([])
                if j == 0:
                    ax.set_ylabel(str(c), rotation=0, labelpad=10)
                if j >= len(samples):
                    ax.axis("off")
                    continue
                img = samples[j].clamp(0, 1)
                if img.shape[0] == 1:
                    ax.imshow(img[0].numpy(), cmap="gray", vmin=0, vmax=1)
                else:
                    ax.imshow(img[:3].permute(1, 2, 0).numpy())
    elif len(ds.input_shape) == 2:
        fig = Figure(figsize=(6, 1.2 * rows))
        for c, samples in enumerate(per_class):
            ax = fig.add_subplot(rows, 1, c + 1)
            for s in samples:
                for ch in range(s.shape[0]):
                    ax.plot(s[ch].numpy(), linewidth=0.8, alpha=0.7)
            ax.set_ylabel(str(c), rotation=0, labelpad=10)
            ax.set_xticks([])
    else:
        raise ValueError(f"cannot draw inputs of shape {ds.input_shape}")
    recipe = ds.recipe
    fig.suptitle(f"{recipe.get('method', '?')} ipc={recipe.get('ipc', '?')} {ds.content_hash}", fontsize=9)
    tmp = path.with_name(f".{path.name}.tmp.png")
    FigureCanvasAgg(fig).print_png(str(tmp))
    os.replace(tmp, path)


# ---------------------------------------------------------------------------------------- checkpoints
def checkpoint_path(checkpoint_dir: str | os.PathLike, method: str, recipe_hash: str) -> Path:
    """Where a method keeps its resumable state for one recipe."""
    return Path(checkpoint_dir) / f"{method}-{recipe_hash}.ckpt.pt"


def save_checkpoint(path: str | os.PathLike, recipe_hash: str, state: dict) -> None:
    """Atomic. ``state`` must hold tensors / plain values only (e.g. ``iteration``, ``x``, ``optimizer``
    state dict, running ``cost``), so that ``load_checkpoint`` can use ``weights_only=True``."""
    atomic_torch_save({"format": CHECKPOINT_FORMAT, "recipe_hash": recipe_hash, "state": state}, path)


def load_checkpoint(path: str | os.PathLike, recipe_hash: str) -> dict | None:
    """The saved ``state``, or None when there is no file or it belongs to another recipe.
    An unreadable file raises, naming the path (delete it to restart)."""
    path = Path(path)
    if not path.is_file():
        return None
    d = load_artifact(path, "distillation checkpoint", error=DistilledSetError, hint="; delete it to restart")
    if not isinstance(d, dict) or d.get("format") != CHECKPOINT_FORMAT:
        raise DistilledSetError(f"{path} is not a distillation checkpoint; delete it to restart")
    if d.get("recipe_hash") != recipe_hash:
        return None
    return d["state"]


def resume_images(path: str | os.PathLike | None, recipe_hash: str, syn, optimizer) -> dict | None:
    """Restore the synthetic pixels and their optimizer from the run's checkpoint, in place; the saved
    state (iteration, pass counts, wall time) for the caller's own fields, or None to start afresh."""
    import torch

    state = load_checkpoint(path, recipe_hash) if path is not None else None
    if state is not None:
        with torch.no_grad():
            syn.copy_(state["x"].to(syn.device))
        optimizer.load_state_dict(state["optimizer"])
    return state
