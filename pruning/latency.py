"""Latency of dense vs pruned networks: zeros are not speedups until a kernel or a smaller network
turns them into one, so the pipeline measures instead of assuming.

Median wall-clock time of repeated forward passes after warm-up, in inference mode. The networks are
timed interleaved (A, B, A, B, ... with the order alternating each repeat), so a noisy neighbour or a
frequency change slows both arms alike; on CUDA each pass is bracketed by device synchronisations.
"""
from __future__ import annotations

import copy
import statistics
import time
from typing import Mapping

import torch
from torch import nn

from .mask import Mask

__all__ = ["time_forward", "semi_structured_latency", "two_four_layers"]


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_forward(models: Mapping[str, nn.Module], x: torch.Tensor, warmup: int = 3, repeats: int = 15) -> dict[str, float]:
    """Median milliseconds of one forward pass of each model on ``x`` (every model on x's device)."""
    names = list(models)
    for m in models.values():
        m.eval()
    samples: dict[str, list[float]] = {n: [] for n in names}
    with torch.inference_mode():
        for _ in range(warmup):
            for n in names:
                models[n](x)
        _sync(x.device)
        for r in range(repeats):
            for n in names if r % 2 == 0 else reversed(names):
                t0 = time.perf_counter()
                models[n](x)
                _sync(x.device)
                samples[n].append((time.perf_counter() - t0) * 1e3)
    return {n: statistics.median(v) for n, v in samples.items()}


def two_four_layers(model: nn.Module, mask: Mask) -> list[str]:
    """Linear layers whose mask keeps exactly 2 of every 4 consecutive inputs of each output."""
    out = []
    for name, m in mask.items():
        module = model.get_submodule(name.removesuffix(".weight"))
        if type(module) is nn.Linear and m.shape[1] % 4 == 0:
            if bool((m.reshape(m.shape[0], -1, 4).sum(dim=-1) == 2).all()):
                out.append(name)
    return out


def semi_structured_latency(model: nn.Module, mask: Mask, x: torch.Tensor, warmup: int, repeats: int
                            ) -> tuple[dict[str, float] | None, str | None]:
    """(``{"dense": ms, "sparse24": ms}``, None) with the 2:4 Linear layers on
    ``torch.sparse.to_sparse_semi_structured`` (fp16), or (None, why it was not measured)."""
    device = x.device
    if device.type != "cuda":
        return None, "2:4 sparse kernels need a CUDA device"
    cap = torch.cuda.get_device_capability(device)
    if cap < (8, 0):
        return None, f"2:4 sparse kernels need compute capability >= 8.0, this GPU has {cap[0]}.{cap[1]}"
    layers = two_four_layers(model, mask)
    if not layers:
        return None, "no Linear layer has a 2:4 mask (prune.structure nm with n=2, m=4)"
    from torch.sparse import to_sparse_semi_structured

    dense = copy.deepcopy(model).to(device).half().eval()
    mask.apply_(dense)
    sparse = copy.deepcopy(dense)
    try:
        for name in layers:
            module = sparse.get_submodule(name.removesuffix(".weight"))
            module.weight = nn.Parameter(to_sparse_semi_structured(module.weight.detach()), requires_grad=False)
        times = time_forward({"dense": dense, "sparse24": sparse}, x.half(), warmup, repeats)
    except (RuntimeError, ValueError) as exc:  # shapes the kernel does not take (e.g. not multiples of 64)
        return None, f"2:4 kernel refused {len(layers)} layers: {str(exc).splitlines()[0][:200]}"
    return times, None
