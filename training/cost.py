"""What a (masked) model costs: FLOPs of one example and parameter counts.

FLOPs are counted by ``torch.utils.flop_counter.FlopCounterMode`` on one forward pass of one example
(batch 1) in eval mode, so they follow PyTorch's own conventions: a multiply-add is 2 FLOPs
(``2 * in * out`` per Linear, ``2 * Cin * kh * kw * Cout * Hout * Wout`` per Conv2d), only matrix
products and convolutions are counted (bias adds, norms, activations and pools count 0).

``masked_flops`` scales each prunable layer's own FLOPs by the density of its mask entry (the share
of its weights kept, i.e. the multiply-adds a sparse kernel would still do) and leaves everything else
unchanged. Per-layer FLOPs are taken inside the same counting pass: a hook before and after each
prunable module reads the counter's running total, so a module called twice counts twice and nothing
depends on how the counter names modules.
"""
from __future__ import annotations

import contextlib
from typing import Iterator, Mapping, Sequence

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

__all__ = ["count_flops", "layer_flops", "masked_flops", "param_counts"]

_PRUNABLE = (nn.Conv1d, nn.Conv2d, nn.Linear)


@contextlib.contextmanager
def _eval_mode(model: nn.Module) -> Iterator[None]:
    modes = {m: m.training for m in model.modules()}
    model.eval()
    try:
        yield
    finally:
        for m, training in modes.items():
            m.train(training)


def _example(model: nn.Module, input_shape: Sequence[int]) -> torch.Tensor:
    shape = tuple(int(s) for s in input_shape)
    if not shape or any(s < 1 for s in shape):
        raise ValueError(f"input_shape must be positive sizes without the batch dimension, got {shape}")
    ref = next((t for t in list(model.parameters()) + list(model.buffers()) if t.is_floating_point()), None)
    device = ref.device if ref is not None else torch.device("cpu")
    dtype = ref.dtype if ref is not None else torch.float32
    return torch.zeros((1, *shape), device=device, dtype=dtype)


def _count(model: nn.Module, input_shape: Sequence[int]) -> tuple[int, dict[str, int]]:
    """Total FLOPs and the FLOPs of each Conv1d/Conv2d/Linear (keyed ``<module>.weight``)."""
    x = _example(model, input_shape)
    counter = FlopCounterMode(display=False)
    per_layer: dict[str, int] = {}
    handles = []

    def attach(key: str, module: nn.Module) -> None:
        start: list[int] = []

        def before(_mod: nn.Module, _inp: object) -> None:
            start.append(counter.get_total_flops())

        def after(_mod: nn.Module, _inp: object, _out: object) -> None:
            per_layer[key] = per_layer.get(key, 0) + counter.get_total_flops() - start.pop()

        handles.append(module.register_forward_pre_hook(before))
        handles.append(module.register_forward_hook(after))

    for name, module in model.named_modules():
        if isinstance(module, _PRUNABLE):
            attach(f"{name}.weight" if name else "weight", module)
    try:
        with _eval_mode(model), torch.no_grad(), counter:
            model(x)
    finally:
        for h in handles:
            h.remove()
    return int(counter.get_total_flops()), per_layer


def count_flops(model: nn.Module, input_shape: Sequence[int]) -> int:
    """FLOPs of one forward pass on one example of ``input_shape`` (no batch dimension)."""
    return _count(model, input_shape)[0]


def layer_flops(model: nn.Module, input_shape: Sequence[int]) -> dict[str, int]:
    """FLOPs of each Conv1d/Conv2d/Linear on one example, keyed by its weight name (``fc.weight``)."""
    return _count(model, input_shape)[1]


def masked_flops(model: nn.Module, mask: Mapping[str, torch.Tensor], input_shape: Sequence[int]) -> int:
    """FLOPs of the masked model: each masked layer's FLOPs times its density, the rest unchanged.

    Rounded to the nearest integer. Mask entries must name Conv1d/Conv2d/Linear weights of ``model``.
    """
    total, per_layer = _count(model, input_shape)
    modules = {n: m for n, m in model.named_modules()}
    removed = 0.0
    for name, m in mask.items():
        mod_name = name[: -len(".weight")] if name.endswith(".weight") else None
        if name == "weight":
            mod_name = ""
        module = modules.get(mod_name) if mod_name is not None else None
        if not isinstance(module, _PRUNABLE):
            raise KeyError(f"mask entry {name!r} is not the weight of a Conv1d/Conv2d/Linear of the model")
        if tuple(m.shape) != tuple(module.weight.shape):
            raise ValueError(f"mask {name!r} has shape {tuple(m.shape)}, weight has {tuple(module.weight.shape)}")
        density = float(m.sum()) / m.numel()
        removed += per_layer.get(name, 0) * (1.0 - density)
    return int(round(total - removed))


def param_counts(model: nn.Module, mask: Mapping[str, torch.Tensor] | None = None) -> dict[str, int]:
    """``dense_params``: every parameter of the model (biases and norms included, shared ones once);
    ``remaining_params``: the same minus the weights the mask prunes."""
    params = dict(model.named_parameters())
    dense = sum(p.numel() for p in params.values())
    pruned = 0
    for name, m in (mask or {}).items():
        if name not in params:
            raise KeyError(f"mask entry {name!r} is not a parameter of the model")
        if tuple(m.shape) != tuple(params[name].shape):
            raise ValueError(f"mask {name!r} has shape {tuple(m.shape)}, weight has {tuple(params[name].shape)}")
        pruned += m.numel() - int(m.sum())
    return {"dense_params": dense, "remaining_params": dense - pruned}
