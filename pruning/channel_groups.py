"""Which layers' output channels are one channel: Torch-Pruning's dependency groups, for selection.

In a residual net the last convolution of every block of a stage writes into the same sum as the
shortcut, so channel ``c`` of all of them is one channel of the network: the export
(``pruning.export``) can remove it only when every one of those layers has row ``c`` empty. Selecting
rows layer by layer empties different rows in each, which saves nothing and costs accuracy. Selecting
by group keeps the same rows in every coupled layer, so what a structured mask empties is what the
export removes.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass

import torch
from torch import nn

from .mask import PRUNABLE_TYPES


@dataclass
class ChannelGroup:
    """Layers whose output rows are coupled: ``rows[name][i]`` is that layer's row for the group's channel i."""

    rows: dict[str, torch.Tensor]

    @property
    def channels(self) -> int:
        return len(next(iter(self.rows.values())))


def channel_groups(model: nn.Module, layers: list[str], input_shape: tuple[int, ...],
                   skip: set[str] = frozenset()) -> list[ChannelGroup]:
    """The dependency groups of ``layers`` (prunable weight names), each layer in exactly one group (a
    layer coupled to no other is a group of one). ``skip`` names weights never grouped (attention
    projections, whose rows are heads). Only producers with one row per group channel join a group."""
    import torch_pruning as tp

    param = next(model.parameters())
    probe = torch.ones(1, *input_shape, dtype=param.dtype, device=param.device)
    try:
        with warnings.catch_warnings():  # groups through unwrapped parameters (ViT's cls/pos) are not used here
            warnings.simplefilter("ignore", UserWarning)
            graph = tp.DependencyGraph().build_dependency(model, example_inputs=probe)
    except Exception as exc:  # a model Torch-Pruning cannot trace: per-layer selection, said out loud
        warnings.warn(f"channel groups: Torch-Pruning could not trace {type(model).__name__} ({exc}); "
                      "selecting channels layer by layer, so coupled channels may not be removable", stacklevel=2)
        return []
    weight_of = {m: f"{n}.weight" if n else "weight" for n, m in model.named_modules() if isinstance(m, PRUNABLE_TYPES)}
    wanted = [n for n in layers if n not in skip]
    placed: set[str] = set()
    groups = []
    for name in wanted:
        if name in placed:
            continue
        root = model.get_submodule(name.removesuffix(".weight").removesuffix("weight").rstrip("."))
        count = root.weight.shape[0]
        handler = tp.prune_linear_out_channels if isinstance(root, nn.Linear) else tp.prune_conv_out_channels
        rows = {name: torch.arange(count)}
        for dep, idxs in graph.get_pruning_group(root, handler, idxs=list(range(count))):
            member = weight_of.get(dep.target.module)
            if (member is None or member in rows or member in skip or member not in layers
                    or dep.handler.__name__ != "prune_out_channels" or len(idxs) != count):
                continue
            rows[member] = torch.as_tensor([int(i) for i in idxs])
        placed |= set(rows)
        groups.append(ChannelGroup(rows))
    return groups
