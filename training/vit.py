"""A small Vision Transformer (Dosovitskiy et al. 2021) whose every projection is a prunable Linear.

Attention is written out (separate ``q``, ``k``, ``v`` and ``proj`` Linear layers per block, heads
split by reshaping) instead of ``nn.MultiheadAttention``, whose fused in-projection is one parameter
that no per-layer mask, post-training method or head-level structure could address. Pre-norm blocks,
a learned class token and positional embedding, GELU MLPs, the classifier ``fc`` on the class token.
Patches are embedded by a stride-``patch_size`` Conv2d (``patch``), itself prunable. Sized for CIFAR
(32x32, patch 4) and digits (8x8, patch 2 or 4) alike.
"""
from __future__ import annotations

import torch
from torch import nn

from .models import InputShape, _Classifier, _require_image, register_model
from .settings import ViTOptions


class Attention(nn.Module):
    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        # Both kept as attributes (not derived from ``dim``) so an export can drop whole heads.
        self.heads, self.head_dim = heads, dim // heads
        self.q, self.k, self.v = nn.Linear(dim, dim), nn.Linear(dim, dim), nn.Linear(dim, dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, t, _ = x.shape
        split = lambda z: z.reshape(n, t, self.heads, self.head_dim).transpose(1, 2)  # noqa: E731
        q, k, v = split(self.q(x)), split(self.k(x)), split(self.v(x))
        att = torch.softmax(q @ k.transpose(-2, -1) / self.head_dim ** 0.5, dim=-1)
        return self.proj((att @ v).transpose(1, 2).reshape(n, t, self.heads * self.head_dim))


class Block(nn.Module):
    def __init__(self, dim: int, heads: int, hidden: int) -> None:
        super().__init__()
        self.norm1, self.attn = nn.LayerNorm(dim), Attention(dim, heads)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class ViT(_Classifier):
    def __init__(self, channels: int, size: tuple[int, int], opts: ViTOptions, num_classes: int) -> None:
        super().__init__()
        h, w = size
        if h % opts.patch_size or w % opts.patch_size:
            raise ValueError(f"vit: patch_size {opts.patch_size} must divide the input size {h}x{w}")
        tokens = (h // opts.patch_size) * (w // opts.patch_size)
        self.patch = nn.Conv2d(channels, opts.dim, opts.patch_size, stride=opts.patch_size)
        self.cls = nn.Parameter(torch.zeros(1, 1, opts.dim))
        self.pos = nn.Parameter(torch.randn(1, tokens + 1, opts.dim) * 0.02)
        self.blocks = nn.Sequential(*(Block(opts.dim, opts.heads, int(opts.dim * opts.mlp_ratio))
                                      for _ in range(opts.depth)))
        self.norm = nn.LayerNorm(opts.dim)
        self.fc = nn.Linear(opts.dim, num_classes)
        for m in self.modules():  # ViT's init: truncated-normal-like small weights, zero biases
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                nn.init.zeros_(m.bias)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        x = self.patch(x).flatten(2).transpose(1, 2)
        x = torch.cat([self.cls.expand(len(x), -1, -1), x], dim=1) + self.pos
        return self.norm(self.blocks(x))[:, 0]


@register_model("vit")
def _build_vit(opts: ViTOptions, shape: InputShape, num_classes: int) -> nn.Module:
    c, h, w = _require_image("vit", shape)
    return ViT(c, (h, w), opts, num_classes)
