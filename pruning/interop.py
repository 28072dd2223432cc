"""Masks in another form: ``torch.nn.utils.prune``'s reparametrisation.

``to_torch_prune`` / ``from_torch_prune`` translate between a ``Mask`` (name -> bool tensor) and
PyTorch's own pruning reparametrisation (``weight_orig`` parameter + ``weight_mask`` buffer + a forward
pre-hook per module), so masks found here can be handed to tools that expect that form and back.

Physically smaller channel-pruned models are made by ``pruning.export``.
"""
from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils import prune

from .mask import PRUNABLE_TYPES, Mask

__all__ = ["to_torch_prune", "from_torch_prune"]


# --------------------------------------------------------------------------------------------- torch prune
def _module_of(model: nn.Module, name: str) -> nn.Module:
    if name != "weight" and not name.endswith(".weight"):
        raise KeyError(f"mask entry {name!r} is not a '<module>.weight' name")
    mod_name = name[: -len(".weight")] if name != "weight" else ""
    try:
        module = model.get_submodule(mod_name)
    except AttributeError:
        raise KeyError(f"mask entry {name!r} names no module of the model") from None
    if not isinstance(module, PRUNABLE_TYPES):
        raise KeyError(f"mask entry {name!r} names a {type(module).__name__}, not a Conv1d/Conv2d/Linear")
    return module


def to_torch_prune(model: nn.Module, mask: Mask) -> nn.Module:
    """Put ``mask`` on ``model`` in ``torch.nn.utils.prune`` form, in place; returns ``model``.

    Each masked module gets ``weight_orig`` (the parameter, values untouched), a ``weight_mask`` buffer
    (float, 1 = kept) and the pruning forward pre-hook, exactly as ``prune.custom_from_mask`` makes them;
    ``prune.is_pruned(model)`` is then True and the forward equals that of the masked model. Every entry
    is checked before any module is changed, so a bad mask leaves the model as it was. A module that is
    already in that form is an error (combining masks silently would change the experiment).
    """
    targets = []
    for name, m in mask.items():
        module = _module_of(model, name)
        if hasattr(module, "weight_orig") or hasattr(module, "weight_mask"):
            raise ValueError(
                f"{name} is already pruned in torch.nn.utils.prune form; "
                "call from_torch_prune(model, remove=True) first"
            )
        if tuple(m.shape) != tuple(module.weight.shape):
            raise ValueError(f"mask {name!r} has shape {tuple(m.shape)}, weight has {tuple(module.weight.shape)}")
        targets.append((module, m))
    for module, m in targets:
        prune.custom_from_mask(module, "weight", mask=m.to(device=module.weight.device, dtype=module.weight.dtype))
    return model


def from_torch_prune(model: nn.Module, remove: bool = False) -> Mask:
    """Read the ``weight_mask`` buffers of a ``torch.nn.utils.prune``-pruned model into a ``Mask``.

    Names follow the ``Mask`` convention (``layer.weight``), in module order; tensors are bool, on the
    CPU. With ``remove=True`` the pruning is made permanent (``prune.remove``): ``weight`` becomes a
    plain parameter holding ``weight_orig * weight_mask`` and the hook, ``weight_orig`` and
    ``weight_mask`` are gone. Only ``weight`` masks are read (the ``Mask`` convention has no biases).
    """
    out = Mask()
    for mod_name, module in model.named_modules():
        buffers = dict(module.named_buffers(recurse=False))
        if "weight_mask" not in buffers or "weight_orig" not in dict(module.named_parameters(recurse=False)):
            continue
        name = f"{mod_name}.weight" if mod_name else "weight"
        out[name] = buffers["weight_mask"].detach().to(torch.bool).cpu()
        if remove:
            prune.remove(module, "weight")
    if not out:
        raise ValueError("the model has no torch.nn.utils.prune weight masks (no 'weight_mask' buffers)")
    return out
