"""Differentiable Siamese Augmentation (DSA, Zhao & Bilen 2021) for images and 1-D signals.

Every op is a differentiable function of the input tensor (affine_grid/grid_sample, masks, arithmetic),
so gradients reach synthetic pixels through it. Random parameters come from a local ``torch.Generator``
seeded by the ``seed`` argument, never from the global RNG, and by default **one parameter draw is shared
by the whole batch** (DSA's Siamese mode). Calling the same ``Augment`` with the same seed on a real batch and on
a synthetic batch of a class therefore applies exactly the same transform to both, whatever their sizes.

Image strategy (DSA's ``ParamDiffAug`` defaults), ops joined by ``_``:

* ``color``: brightness (add U(-0.5, 0.5)), saturation (scale the deviation from the channel mean by
  U(0, 2)), contrast (scale the deviation from the image mean by U(0.5, 1.5));
* ``crop``: integer translation by up to 12.5% of each side, zero fill;
* ``cutout``: zero a square of half the side at a random position;
* ``flip``: horizontal flip with probability 0.5;
* ``scale``: independent x/y zoom in [1/1.2, 1.2];
* ``rotate``: rotation by U(-15, 15) degrees.

Signal strategy for (C, L) inputs, default ``shift_stretch_scale_noise``:

* ``shift``: circular translation by an integer in [-12.5%, +12.5%] of L (MNIST-1D itself is built by
  circular translation, so this keeps samples in-distribution);
* ``stretch``: time stretch by a factor in [1/1.2, 1.2] about the centre, by linear interpolation
  (grid_sample), edges clamped;
* ``scale``: amplitude multiplied by U(0.8, 1.2);
* ``noise``: one seeded Gaussian pattern (std 0.1, in normalised units) added to every sample.

``mode="single"`` (DSA's default ``aug_mode='S'``) applies one op group drawn per call; ``mode="all"``
applies every op in order.

``draw="sample"`` is DSA's *training* mode (``ParamDiffAug.batchmode = False`` with seed -1): the op is
still chosen once per call, but every sample gets its own parameters (its own shift, crop, angle, noise
pattern...). Training a network on a few hundred samples for a thousand epochs relies on that variety;
a batch-shared draw shows the net only one view of the whole set per step. DM/DC matching keeps
``draw="batch"``: there the real and synthetic batches must see the same transform, which is the point.
MTT's reference augments per sample inside its unrolled student steps, and so does ``distill.mtt``.
"""
from __future__ import annotations

import math
from typing import Callable, Literal, Sequence

import torch
import torch.nn.functional as F

from .config import AUGMENT_OPS

__all__ = ["Augment", "DRAWS", "IMAGE_STRATEGY", "SIGNAL_STRATEGY", "default_augment"]

DRAWS = ("batch", "sample")

IMAGE_STRATEGY = "color_crop_cutout_flip_scale_rotate"
SIGNAL_STRATEGY = "shift_stretch_scale_noise"

# DSA ParamDiffAug defaults.
_BRIGHTNESS = 1.0
_SATURATION = 2.0
_CONTRAST = 0.5
_CROP = 0.125
_CUTOUT = 0.5
_FLIP = 0.5
_SCALE = 1.2
_ROTATE_DEG = 15.0
# Signal defaults (chosen for MNIST-1D-like inputs in normalised units).
_SHIFT = 0.125
_STRETCH = 1.2
_AMPLITUDE = 0.2
_NOISE_STD = 0.1

Op = Callable[[torch.Tensor, torch.Generator, int], torch.Tensor]


def _u(gen: torch.Generator, n: int, x: torch.Tensor, low: float = 0.0, high: float = 1.0) -> torch.Tensor:
    """n uniform draws from the local generator, on x's device and dtype (n = 1: one for the batch)."""
    return (low + (high - low) * torch.rand(n, generator=gen, dtype=torch.float64)).to(x.device, x.dtype)


def _randint(gen: torch.Generator, n: int, low: int, high: int) -> torch.Tensor:
    """n uniform integers in [low, high] inclusive (on the CPU: they index)."""
    return torch.randint(low, high + 1, (n,), generator=gen)


def _per(v: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Draws shaped to broadcast over x's non-batch dimensions."""
    return v.view(-1, *([1] * (x.dim() - 1)))


# --------------------------------------------------------------------------------------------- images
def _affine(x: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
    """theta: (n, 2, 3) with n = 1 (shared) or the batch size."""
    mat = theta.to(x.device, x.dtype).expand(x.shape[0], 2, 3)
    grid = F.affine_grid(mat, list(x.shape), align_corners=True)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=True)


def _brightness(x: torch.Tensor, gen: torch.Generator, n: int) -> torch.Tensor:
    return x + _per(_u(gen, n, x) - 0.5, x) * _BRIGHTNESS


def _saturation(x: torch.Tensor, gen: torch.Generator, n: int) -> torch.Tensor:
    mean = x.mean(dim=1, keepdim=True)
    return (x - mean) * _per(_u(gen, n, x) * _SATURATION, x) + mean


def _contrast(x: torch.Tensor, gen: torch.Generator, n: int) -> torch.Tensor:
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    return (x - mean) * _per(_u(gen, n, x) + _CONTRAST, x) + mean


def _color(x: torch.Tensor, gen: torch.Generator, n: int) -> torch.Tensor:
    return _contrast(_saturation(_brightness(x, gen, n), gen, n), gen, n)


def _crop(x: torch.Tensor, gen: torch.Generator, n: int) -> torch.Tensor:
    """Integer translation with zero fill, as DSA's pad-and-crop: pad, then slice (differentiable)."""
    h, w = x.shape[-2:]
    max_h, max_w = int(h * _CROP + 0.5), int(w * _CROP + 0.5)
    dy, dx = _randint(gen, n, -max_h, max_h), _randint(gen, n, -max_w, max_w)
    padded = F.pad(x, (max_w, max_w, max_h, max_h))
    top, left = max_h + dy, max_w + dx
    if n == 1:
        t, l = int(top), int(left)
        return padded[..., t: t + h, l: l + w]
    rows = (top[:, None] + torch.arange(h))[:, :, None].to(x.device)  # (N, h, 1)
    cols = (left[:, None] + torch.arange(w))[:, None, :].to(x.device)  # (N, 1, w)
    batch = torch.arange(x.shape[0], device=x.device)[:, None, None]
    return padded[batch, :, rows, cols].permute(0, 3, 1, 2)  # advanced indices first: (N, h, w, C)


def _cutout(x: torch.Tensor, gen: torch.Generator, n: int) -> torch.Tensor:
    h, w = x.shape[-2:]
    ch, cw = int(h * _CUTOUT + 0.5), int(w * _CUTOUT + 0.5)
    cy, cx = _randint(gen, n, 0, h - 1), _randint(gen, n, 0, w - 1)  # centre of the hole
    ys, xs = torch.arange(h)[None, :], torch.arange(w)[None, :]
    in_y = (ys >= (cy - ch // 2)[:, None]) & (ys < (cy - ch // 2 + ch)[:, None])  # (n, h)
    in_x = (xs >= (cx - cw // 2)[:, None]) & (xs < (cx - cw // 2 + cw)[:, None])  # (n, w)
    hole = in_y[:, :, None] & in_x[:, None, :]
    return x * (~hole).to(x.device, x.dtype)[:, None]


def _flip(x: torch.Tensor, gen: torch.Generator, n: int) -> torch.Tensor:
    flip = _u(gen, n, x) < _FLIP
    if n == 1:
        return x.flip(-1) if bool(flip) else x
    return torch.where(_per(flip, x), x.flip(-1), x)


def _scale(x: torch.Tensor, gen: torch.Generator, n: int) -> torch.Tensor:
    low = 1.0 / _SCALE
    sx, sy = _u(gen, n, x, low, _SCALE), _u(gen, n, x, low, _SCALE)
    zero = torch.zeros_like(sx)
    return _affine(x, torch.stack([torch.stack([sx, zero, zero], -1), torch.stack([zero, sy, zero], -1)], 1))


def _rotate(x: torch.Tensor, gen: torch.Generator, n: int) -> torch.Tensor:
    angle = torch.deg2rad(_u(gen, n, x, -_ROTATE_DEG, _ROTATE_DEG))
    c, s, zero = torch.cos(angle), torch.sin(angle), torch.zeros_like(angle)
    return _affine(x, torch.stack([torch.stack([c, -s, zero], -1), torch.stack([s, c, zero], -1)], 1))


IMAGE_OPS: dict[str, Op] = {
    "color": _color,
    "crop": _crop,
    "cutout": _cutout,
    "flip": _flip,
    "scale": _scale,
    "rotate": _rotate,
}


# --------------------------------------------------------------------------------------------- signals
def _shift(x: torch.Tensor, gen: torch.Generator, n: int) -> torch.Tensor:
    length = x.shape[-1]
    max_shift = max(1, int(length * _SHIFT + 0.5))
    shift = _randint(gen, n, -max_shift, max_shift)
    if n == 1:
        return torch.roll(x, int(shift), dims=-1)
    idx = (torch.arange(length)[None, :] - shift[:, None]) % length  # roll: out[i] = x[i - s]
    return x.gather(-1, idx.to(x.device)[:, None, :].expand_as(x))


def _stretch(x: torch.Tensor, gen: torch.Generator, n: int) -> torch.Tensor:
    # Sampling position u -> u / factor: factor > 1 stretches the signal out about the centre.
    factor = torch.exp(_u(gen, n, x, -math.log(_STRETCH), math.log(_STRETCH)))
    batch, c, length = x.shape
    pos = torch.linspace(-1.0, 1.0, length, dtype=x.dtype, device=x.device)[None, :] / factor[:, None]
    grid = torch.stack([pos, torch.zeros_like(pos)], dim=-1).view(n, 1, length, 2).expand(batch, 1, length, 2)
    out = F.grid_sample(x.unsqueeze(2), grid, mode="bilinear", padding_mode="border", align_corners=True)
    return out.squeeze(2)


def _amplitude(x: torch.Tensor, gen: torch.Generator, n: int) -> torch.Tensor:
    return x * _per(_u(gen, n, x, 1.0 - _AMPLITUDE, 1.0 + _AMPLITUDE), x)


def _noise(x: torch.Tensor, gen: torch.Generator, n: int) -> torch.Tensor:
    shape = tuple(x.shape[1:]) if n == 1 else tuple(x.shape)  # one pattern for all, or one per sample
    pattern = torch.randn(shape, generator=gen).to(device=x.device, dtype=x.dtype)
    return x + _NOISE_STD * pattern


SIGNAL_OPS: dict[str, Op] = {
    "shift": _shift,
    "stretch": _stretch,
    "scale": _amplitude,
    "noise": _noise,
}

if tuple(IMAGE_OPS) != AUGMENT_OPS["image"] or tuple(SIGNAL_OPS) != AUGMENT_OPS["signal"]:
    raise ImportError("distill.augment's ops differ from distill.config.AUGMENT_OPS: declare every op there")


# --------------------------------------------------------------------------------------------- public
class Augment:
    """Differentiable DSA augmentation; the same seed gives the same transform (siamese use).

    ``strategy`` names ops joined by ``_`` (see the module docstring); ``None`` picks the default of
    ``kind``. ``"none"`` or ``""`` is the identity. ``kind="image"`` expects (N, C, H, W) and
    ``kind="signal"`` expects (N, C, L).
    """

    def __init__(
        self,
        strategy: str | None = None,
        kind: Literal["image", "signal"] = "image",
        mode: Literal["single", "all"] = "single",
        draw: Literal["batch", "sample"] = "batch",
    ) -> None:
        if kind not in ("image", "signal"):
            raise ValueError(f"kind must be 'image' or 'signal', got {kind!r}")
        if mode not in ("single", "all"):
            raise ValueError(f"mode must be 'single' or 'all', got {mode!r}")
        if draw not in DRAWS:
            raise ValueError(f"draw must be one of {DRAWS}, got {draw!r}")
        table = IMAGE_OPS if kind == "image" else SIGNAL_OPS
        if strategy is None:
            strategy = IMAGE_STRATEGY if kind == "image" else SIGNAL_STRATEGY
        names = [] if strategy in ("", "none") else strategy.split("_")
        unknown = [n for n in names if n not in table]
        if unknown:
            raise ValueError(
                f"unknown {kind} augmentation op(s) {unknown} in strategy {strategy!r}; "
                f"allowed: {', '.join(table)}"
            )
        self.strategy = strategy
        self.kind = kind
        self.mode = mode
        self.draw = draw
        self.ops: list[tuple[str, Op]] = [(n, table[n]) for n in names]

    def __repr__(self) -> str:
        return f"Augment(strategy={self.strategy!r}, kind={self.kind!r}, mode={self.mode!r}, draw={self.draw!r})"

    def __call__(self, x: torch.Tensor, seed: int) -> torch.Tensor:
        want = 4 if self.kind == "image" else 3
        if x.dim() != want:
            raise ValueError(f"{self.kind} augmentation expects a {want}-D batch, got shape {tuple(x.shape)}")
        if not self.ops or x.shape[0] == 0:
            return x
        gen = torch.Generator().manual_seed(int(seed) & 0x7FFF_FFFF_FFFF_FFFF)
        n = 1 if self.draw == "batch" else x.shape[0]
        if self.mode == "single":
            _, op = self.ops[int(_randint(gen, 1, 0, len(self.ops) - 1))]
            return op(x, gen, n)
        for _, op in self.ops:
            x = op(x, gen, n)
        return x


def default_augment(input_shape: Sequence[int], draw: Literal["batch", "sample"] = "batch") -> Augment:
    """Image DSA for (C, H, W) inputs, signal augmentation for (C, L) inputs."""
    shape = tuple(input_shape)
    if len(shape) == 3:
        return Augment(IMAGE_STRATEGY, kind="image", draw=draw)
    if len(shape) == 2:
        return Augment(SIGNAL_STRATEGY, kind="signal", draw=draw)
    raise ValueError(f"no default augmentation for input_shape {shape}; expected (C, H, W) or (C, L)")
