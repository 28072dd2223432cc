"""An MLP with BatchNorm after every hidden layer: a model registered from outside the project.

It keeps the invariants prunetune's scorers rely on: each ReLU is its own module, the prunable layers
are the Linear ones, and the classifier is the attribute ``fc`` (so ``ignore: [fc.weight]`` reads the
same as for the built-ins)."""
from __future__ import annotations

import math
from typing import Annotated

import torch
from pydantic import Field
from torch import nn

from training.models import register_model
from training.settings import ModelOptions


class MLPBNOptions(ModelOptions):
    widths: list[Annotated[int, Field(ge=1)]] = Field(default_factory=lambda: [64, 64], description="hidden widths")
    batchnorm: bool = Field(True, description="BatchNorm1d after each hidden Linear layer")


class MLPBN(nn.Module):
    def __init__(self, in_features: int, opts: MLPBNOptions, num_classes: int) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        prev = in_features
        for w in opts.widths:
            layers += [nn.Linear(prev, w)] + ([nn.BatchNorm1d(w)] if opts.batchnorm else []) + [nn.ReLU()]
            prev = w
        self.layers = nn.Sequential(*layers)
        self.fc = nn.Linear(prev, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.layers(x.flatten(1)))


@register_model("mlp_bn", options=MLPBNOptions)
def build(opts: MLPBNOptions, input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
    return MLPBN(math.prod(input_shape), opts, num_classes)
