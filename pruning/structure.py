"""Structural groups of weights a mask can drop together: attention heads.

An attention module is recognised by what it has, not by its class (``q``, ``k``, ``v`` and ``proj``
Linear layers, ``heads`` and ``head_dim``: the project's ViT, and any user module written the same
way), so structured selection and export agree on what a head is.
"""
from __future__ import annotations

from dataclasses import dataclass

from torch import nn


def is_attention(module: nn.Module) -> bool:
    return all(hasattr(module, a) for a in ("q", "k", "v", "proj", "heads", "head_dim"))


@dataclass(frozen=True)
class HeadGroup:
    heads: int
    head_dim: int
    rows: tuple[str, str, str]  # the q, k, v weight names; head h owns rows h*head_dim .. (h+1)*head_dim - 1


def attention_heads(model: nn.Module) -> dict[str, HeadGroup]:
    """Attention module name -> its heads and the weights whose rows make them."""
    out = {}
    for name, module in model.named_modules():
        if is_attention(module):
            prefix = f"{name}." if name else ""
            out[name] = HeadGroup(module.heads, module.head_dim,
                                  tuple(f"{prefix}{p}.weight" for p in ("q", "k", "v")))  # type: ignore[arg-type]
    return out
