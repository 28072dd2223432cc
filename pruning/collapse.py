"""Layer collapse and near-collapse, read from a sparsity report (torch-free: the driver's summary and
report read it from stored JSON).

A collapsed layer keeps no weight: the network computes a constant. A near-collapsed one keeps a few:
it still trains, but it is the bottleneck that explains a sudden accuracy drop (magnitude pruning at
95% kept 0.12% of an MLP's last layer and reached 13.6% on digits). "Near" is relative to the layer's
share: a uniform allocation would give every layer the mask's overall density.
"""
from __future__ import annotations

from typing import Any, Mapping

NEAR_COLLAPSE_FRACTION = 0.1  # a layer keeping less than this fraction of the overall density


def near_collapsed_layers(layers: Mapping[str, Mapping[str, Any]], density: float,
                          fraction: float = NEAR_COLLAPSE_FRACTION) -> list[str]:
    """Layers that keep some weights, but fewer than ``fraction`` of the mask's overall density."""
    return [name for name, layer in layers.items()
            if layer["kept"] > 0 and layer["kept"] / layer["total"] < fraction * density]
