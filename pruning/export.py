"""Physically smaller networks from channel- and head-pruned masks, for any registered model.

A mask that leaves whole output channels (rows) of a layer at zero saves nothing on dense hardware
until those channels are removed, together with everything that depends on them: the norm slice after
them, the next layers' input channels, and -- in residual nets -- every other layer tied to the same
channel through a skip addition. Torch-Pruning's dependency graph (``torch_pruning``) finds those
coupled groups for arbitrary models (ResNets, VGGs, torchvision networks); this module decides which
groups may be removed *without changing a single output* and does the arithmetic that keeps it so.

What "the same outputs" means: the reference is **the masked model in eval mode**, the model whose
accuracy the pipeline reports (pruned weights zero, biases and norm parameters untouched). A removed
channel is not silent there: its pre-activation is its bias, and eval-mode BatchNorm, activations,
pools and additions of other such channels keep it a constant. The next layers therefore read a
constant on that input channel, and the export **folds** it in instead of computing it:

* a Linear consumer (after a flatten, over every feature of the channel): ``W[:, removed] @ const``
  added to its bias;
* a convolution without zero padding: the summed kernel times the constant, added to its bias;
* a convolution with zero padding: border positions see padded zeros, so the contribution is not
  uniform; the layer becomes a ``ConstantInputConv1d/2d`` holding the exact border-aware term.

A group of channels is removed only when that is provably exact: every layer that produces it has the
channels' rows all-zero in the mask, every parametric layer in the group is a Conv/Linear (groups 1)
or a channel-wise norm (BatchNorm, instance norm), the group has a consumer (the network's output
layer keeps every logit), and the consumers really see constants on a probe batch. Anything else (a
LayerNorm mixing channels, an attention projection, a partly-zero row) stays, with its zeros. Vision
transformer heads are handled separately (``_remove_dead_heads``): a head whose value rows are all
zero outputs the constant value bias whatever its attention pattern, so its q/k/v rows and projection
columns go and the constant folds into the projection bias. As a last line of defence the export runs
the probe batch through both networks and refuses to return one that disagrees.
"""
from __future__ import annotations

import copy
import warnings
from collections import defaultdict
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import prune

from .mask import PRUNABLE_TYPES, Mask
from .structure import is_attention

__all__ = ["export_channel_pruned", "channel_counts", "ExportMismatchError", "ConstantInputConv1d", "ConstantInputConv2d"]

_CHANNELWISE_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.InstanceNorm1d, nn.InstanceNorm2d)
_CONVS = (nn.Conv1d, nn.Conv2d)


class ExportMismatchError(RuntimeError):
    """The exported network's outputs differ from the masked network's (a bug or an unsupported op)."""


class _ConstantInputMixin:
    """Adds ``conv(ones, const_kernel)``: the exact contribution of removed constant input channels.

    That map depends only on the input's spatial size, so it is computed once per size and reused (a
    forward then costs one addition, not an extra convolution); the cache key includes the buffer's
    version, so changing ``const_kernel`` in place recomputes it.
    """

    const_kernel: torch.Tensor
    _nd: int

    def _init_const(self) -> None:
        shape = (self.out_channels, 1, *self.kernel_size)  # type: ignore[attr-defined]
        w = self.weight  # type: ignore[attr-defined]
        self.register_buffer("const_kernel", torch.zeros(shape, device=w.device, dtype=w.dtype))  # type: ignore[attr-defined]
        self._const_maps: dict[tuple, torch.Tensor] = {}

    def const_map(self, size: tuple[int, ...], device: torch.device, dtype: torch.dtype) -> torch.Tensor:
        key = (size, device, dtype, self.const_kernel._version, self.const_kernel.data_ptr())
        if key not in self._const_maps:
            conv = F.conv1d if self._nd == 1 else F.conv2d
            with torch.no_grad():
                ones = torch.ones((1, 1, *size), device=device, dtype=dtype)
                kernel = self.const_kernel.to(device, dtype)
                self._const_maps = {key: conv(ones, kernel, None, self.stride, self.padding, self.dilation)}  # type: ignore[attr-defined]
        return self._const_maps[key]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = super().forward(x)  # type: ignore[misc]
        extra = self.const_map(tuple(x.shape[-self._nd:]), x.device, x.dtype)
        return out + (extra.squeeze(0) if x.dim() == self._nd + 1 else extra)


class ConstantInputConv1d(_ConstantInputMixin, nn.Conv1d):
    """``nn.Conv1d`` plus a constant-input term; see the module docstring (zero-padded folding)."""

    _nd = 1

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._init_const()


class ConstantInputConv2d(_ConstantInputMixin, nn.Conv2d):
    """``nn.Conv2d`` plus a constant-input term; see the module docstring (zero-padded folding)."""

    _nd = 2

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._init_const()



def _is_channelwise(module: nn.Module) -> bool:
    if isinstance(module, _CHANNELWISE_NORMS):
        return True
    return isinstance(module, nn.GroupNorm) and module.num_groups == module.num_channels


def _prunable_ok(module: nn.Module) -> bool:
    return type(module) in PRUNABLE_TYPES and (not isinstance(module, _CONVS) or module.groups == 1)


def _check_mask(model: nn.Module, mask: Mask) -> None:
    names = {f"{n}.weight" for n, m in model.named_modules() if isinstance(m, PRUNABLE_TYPES)}
    unknown = sorted(set(mask) - names)
    if unknown:
        raise ValueError(f"mask entries {unknown} are not prunable layers of the model; prunable: {sorted(names)}")
    for key, m in mask.items():
        weight = model.get_submodule(key.removesuffix(".weight")).weight
        if tuple(m.shape) != tuple(weight.shape):
            raise ValueError(f"mask {key!r} has shape {tuple(m.shape)}, weight has {tuple(weight.shape)}")


def _dead_rows(mask: Mask) -> dict[str, list[int]]:
    out = {}
    for key, m in mask.items():
        rows = (~m.flatten(1).any(dim=1)).nonzero().flatten().tolist()
        if rows:
            out[key.removesuffix(".weight")] = rows
    return out


def _capture_inputs(model: nn.Module, names: Sequence[str], probe: torch.Tensor) -> dict[str, torch.Tensor]:
    """The input each named module receives on ``probe`` (eval mode)."""
    seen: dict[str, torch.Tensor] = {}
    hooks = []
    for name in names:
        def hook(_m, args, _name=name):
            seen.setdefault(_name, args[0].detach())
        hooks.append(model.get_submodule(name).register_forward_pre_hook(hook))
    try:
        with torch.no_grad():
            model(probe)
    finally:
        for h in hooks:
            h.remove()
    return seen


def _constants(x: torch.Tensor, idxs: list[int], channel_dim: int) -> torch.Tensor | None:
    """Per-channel constant of ``x`` on ``idxs`` (float64), or None when some channel varies."""
    picked = x.index_select(channel_dim, torch.tensor(idxs, device=x.device)).double()
    values = picked.movedim(channel_dim, 0).reshape(len(idxs), -1)
    c = values[:, 0]
    spread = (values - c[:, None]).abs().amax(dim=1)
    if bool((spread > 1e-6 * (1 + c.abs())).any()):
        return None
    return c


class _Plan:
    """Removable groups (root module, its channel indices) and the constant each consumer must absorb."""

    def __init__(self) -> None:
        self.roots: list[tuple[nn.Module, object, list[int]]] = []
        self.folds: list[tuple[nn.Module, list[int]]] = []
        self.removed_out: dict[nn.Module, set[int]] = defaultdict(set)


def _out_handler(module: nn.Module):
    import torch_pruning as tp

    return tp.prune_linear_out_channels if isinstance(module, nn.Linear) else tp.prune_conv_out_channels


def _split_group(group, attention_parts: set[nn.Module]):
    """(exact?, consumers, producers) of a Torch-Pruning group: which layers read / write its channels."""
    ok, ins, outs = True, [], []
    for dep, idxs in group:
        module, kind = dep.target.module, dep.handler.__name__
        idxs = [int(i) for i in idxs]
        if not isinstance(module, nn.Module):  # an unwrapped parameter (ViT's class token, positions)
            ok = False
        elif module in attention_parts:
            ok = False
        elif type(module) in PRUNABLE_TYPES:
            ok = ok and _prunable_ok(module)
            (outs if kind == "prune_out_channels" else ins).append((module, idxs))
        elif any(True for _ in module.parameters(recurse=False)) and not _is_channelwise(module):
            ok = False  # LayerNorm, multi-group GroupNorm, embeddings...: removing a channel is not exact
    return ok, ins, outs


def _plan_groups(graph, work: nn.Module, mask: Mask, attention_parts: set[nn.Module],
                 refused: set[nn.Module]) -> _Plan:
    plan = _Plan()
    dead = {work.get_submodule(n): set(rows) for n, rows in _dead_rows(mask).items()}
    decided: set[tuple[int, int]] = set()  # (id(module), out index) already judged in some group
    for root, rows in dead.items():
        if root in attention_parts or not _prunable_ok(root):
            continue
        handler = _out_handler(root)
        removable: list[int] = []
        for r in sorted(rows):
            if (id(root), r) in decided:
                continue
            ok, ins, outs = _split_group(graph.get_pruning_group(root, handler, idxs=[r]), attention_parts)
            decided.update((id(m), i) for m, idxs in outs for i in idxs)
            exact = ok and ins and all(set(idxs) <= dead.get(m, set()) for m, idxs in outs)
            if exact and not any(m in refused for m, _ in ins):
                removable.append(r)
        while removable:
            _, ins, outs = _split_group(graph.get_pruning_group(root, handler, idxs=removable), attention_parts)
            if all(len(set(idxs)) < m.weight.shape[0] for m, idxs in outs):
                break
            removable = removable[1:]  # never empty a layer: keep one (zero) channel
        if not removable:
            continue
        plan.roots.append((root, handler, removable))
        plan.folds += ins
        for module, idxs in outs:
            plan.removed_out[module].update(idxs)
    return plan


def _fold(work: nn.Module, masked: nn.Module, plan: _Plan, probe: torch.Tensor) -> tuple[dict[nn.Module, torch.Tensor], list[str]]:
    """Add removed channels' constants to consumer biases; returns border-aware kernels and refusals."""
    names = {m: n for n, m in work.named_modules()}
    per_consumer: dict[nn.Module, list[int]] = defaultdict(list)
    for module, idxs in plan.folds:
        per_consumer[module] += idxs
    inputs = _capture_inputs(masked, [names[m] for m in per_consumer], probe)
    kernels: dict[nn.Module, torch.Tensor] = {}
    varying: list[str] = []
    for module, idxs in per_consumer.items():
        idxs = sorted(set(idxs))
        is_conv = isinstance(module, _CONVS)
        x = inputs[names[module]]
        c = _constants(x, idxs, 1 if is_conv else x.dim() - 1)
        if c is None:
            varying.append(names[module])
            continue
        if not bool(c.abs().sum() > 0):
            continue
        w = module.weight.detach()[:, idxs].double()
        if is_conv:
            k = torch.einsum("oc...,c->o...", w, c.to(w.device))
            zero_pad = module.padding_mode == "zeros" and module.padding != "valid" and (
                isinstance(module.padding, str) or any(p != 0 for p in module.padding))
            if zero_pad:
                kernels[module] = k.unsqueeze(1)
                continue
            extra = k.flatten(1).sum(dim=1)
        else:
            extra = w @ c.to(w.device)
        with torch.no_grad():
            if module.bias is None:
                module.bias = nn.Parameter(torch.zeros(module.weight.shape[0], dtype=module.weight.dtype,
                                                       device=module.weight.device))
            module.bias.add_(extra.to(module.bias.dtype))
    return kernels, varying


def _to_constant_input(module: nn.Module, kernel: torch.Tensor) -> nn.Module:
    cls = ConstantInputConv1d if isinstance(module, nn.Conv1d) else ConstantInputConv2d
    new = cls(module.in_channels, module.out_channels, module.kernel_size, stride=module.stride,
              padding=module.padding, dilation=module.dilation, bias=module.bias is not None,
              padding_mode=module.padding_mode, device=module.weight.device, dtype=module.weight.dtype)
    with torch.no_grad():
        new.weight.copy_(module.weight)
        if module.bias is not None:
            new.bias.copy_(module.bias)
        new.const_kernel.copy_(kernel.to(new.const_kernel.dtype))
    new.train(module.training)
    return new


def _remove_dead_heads(work: nn.Module, mask: Mask) -> None:
    """Drop attention heads whose value rows are all zero; fold their constant output into ``proj``."""
    for name, attn in list(work.named_modules()):
        if not is_attention(attn):
            continue
        v_key = f"{name}.v.weight" if name else "v.weight"
        if v_key not in mask:
            continue
        dh = attn.head_dim
        v_rows = mask[v_key].flatten(1).any(dim=1).reshape(attn.heads, dh).any(dim=1)
        keep = v_rows.nonzero().flatten().tolist() or [0]
        if len(keep) == attn.heads:
            continue
        rows = torch.tensor([h * dh + i for h in keep for i in range(dh)])
        gone = torch.tensor([h * dh + i for h in range(attn.heads) if h not in keep for i in range(dh)])
        with torch.no_grad():
            const = attn.v.bias.detach()[gone] if attn.v.bias is not None else None
            proj = attn.proj
            if const is not None:
                proj.bias.add_(proj.weight.detach()[:, gone] @ const)
            for part in ("q", "k", "v"):
                old = getattr(attn, part)
                new = nn.Linear(old.in_features, len(rows), bias=old.bias is not None,
                                device=old.weight.device, dtype=old.weight.dtype)
                new.weight.copy_(old.weight[rows])
                if old.bias is not None:
                    new.bias.copy_(old.bias[rows])
                setattr(attn, part, new)
            new_proj = nn.Linear(len(rows), proj.out_features, bias=proj.bias is not None,
                                 device=proj.weight.device, dtype=proj.weight.dtype)
            new_proj.weight.copy_(proj.weight[:, rows])
            if proj.bias is not None:
                new_proj.bias.copy_(proj.bias)
            attn.proj = new_proj
        attn.heads = len(keep)


def export_channel_pruned(model: nn.Module, mask: Mask, example_input: torch.Tensor, *,
                          rtol: float = 1e-4, atol: float = 1e-5) -> nn.Module:
    """A physically smaller dense copy of ``model`` whose eval-mode outputs equal the masked model's.

    ``example_input`` is a batch of the model's input (its values only serve as a probe; two or more
    examples make the final check meaningful). The result keeps ``model``'s class and module names;
    ``model`` is not changed. Channels that cannot be removed exactly stay, with their zeros. Raises
    ``ValueError`` for a mask that does not fit and ``ExportMismatchError`` if the smaller network's
    outputs on the probe differ from the masked network's beyond ``rtol``/``atol``.
    """
    if prune.is_pruned(model):
        raise ValueError("the model is in torch.nn.utils.prune form; call from_torch_prune(model, remove=True) first")
    _check_mask(model, mask)
    masked = copy.deepcopy(model).eval()
    mask.apply_(masked)
    ref = next(model.parameters())
    probe = example_input.to(ref.device, ref.dtype)
    refused: set[str] = set()
    for _ in range(4):  # each retry refuses folding into the consumers that saw a varying value
        work, varying = _attempt(masked, mask, probe, refused)
        if not varying:
            _verify(work, masked, probe, rtol, atol)
            return work
        refused |= varying
    raise ExportMismatchError(f"removed channels keep feeding non-constant values into {sorted(refused)}")


def _attempt(masked: nn.Module, mask: Mask, probe: torch.Tensor, refused: set[str]) -> tuple[nn.Module, set[str]]:
    import torch_pruning as tp

    work = copy.deepcopy(masked)
    _remove_dead_heads(work, mask)
    attention_parts = {m for a in work.modules() if is_attention(a) for m in (a.q, a.k, a.v, a.proj)}
    with warnings.catch_warnings():  # groups on unwrapped parameters (ViT's cls/pos) are refused anyway
        warnings.simplefilter("ignore", UserWarning)
        graph = tp.DependencyGraph().build_dependency(work, example_inputs=probe[:1])
    plan = _plan_groups(graph, work, mask, attention_parts, {work.get_submodule(n) for n in refused})
    kernels, varying = _fold(work, masked, plan, probe)
    if varying:
        return work, set(varying)
    instance_norms = [m for m in work.modules() if isinstance(m, nn.GroupNorm) and _is_channelwise(m)]
    for root, handler, idxs in plan.roots:
        graph.get_pruning_group(root, handler, idxs=idxs).prune()
    for m in instance_norms:  # Torch-Pruning slices the affine; one channel per group must stay true
        m.num_channels = m.num_groups = m.weight.shape[0] if m.affine else m.num_channels
    _finish(work, kernels, plan)
    with torch.no_grad():
        work(probe[:1])  # computes each constant-input map for the probe's size once, here
    return work, set()


def _finish(work: nn.Module, kernels: dict[nn.Module, torch.Tensor], plan: _Plan) -> None:
    names = {m: n for n, m in work.named_modules()}
    for module, kernel in kernels.items():
        gone = plan.removed_out.get(module, set())
        rows = [i for i in range(kernel.shape[0]) if i not in gone]
        new = _to_constant_input(module, kernel[rows])
        parent, _, attr = names[module].rpartition(".")
        setattr(work.get_submodule(parent) if parent else work, attr, new)


def _verify(work: nn.Module, masked: nn.Module, probe: torch.Tensor, rtol: float, atol: float) -> None:
    work.eval()
    with torch.no_grad():
        want, got = masked(probe), work(probe)
    if want.shape != got.shape or not torch.allclose(got, want, rtol=rtol, atol=atol):
        diff = (got - want).abs().max().item() if want.shape == got.shape else float("nan")
        raise ExportMismatchError(
            f"the exported network differs from the masked one on the probe batch (max abs diff {diff:.3g}); "
            "please report the model: some operation in it is not channel-wise"
        )


def channel_counts(model: nn.Module) -> dict[str, int]:
    """Output channels (features) of each prunable layer: a quick way to see what an export removed."""
    return {n: m.weight.shape[0] for n, m in model.named_modules() if isinstance(m, PRUNABLE_TYPES)}
