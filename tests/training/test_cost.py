"""FLOPs and parameter counts against hand-computed values."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from pruning.mask import Mask
from training.cost import count_flops, layer_flops, masked_flops, param_counts
from training.models import create_model


def _linear_net() -> nn.Module:
    return nn.Sequential(nn.Flatten(), nn.Linear(12, 7), nn.ReLU(), nn.Linear(7, 3))


def _conv_net() -> nn.Module:
    # input (3, 8, 8): conv a keeps 8x8 (padding 1), conv b (stride 2, no padding) gives 3x3
    return nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(),
        nn.Conv2d(4, 6, 3, stride=2), nn.ReLU(), nn.AvgPool2d(3),
        nn.Flatten(), nn.Linear(6, 5),
    )


CONV_A = 2 * 3 * 3 * 3 * 4 * 8 * 8
CONV_B = 2 * 4 * 3 * 3 * 6 * 3 * 3
FC = 2 * 6 * 5


def test_linear_flops_are_two_in_out_per_layer():
    assert count_flops(_linear_net(), (3, 2, 2)) == 2 * 12 * 7 + 2 * 7 * 3
    assert layer_flops(_linear_net(), (12,)) == {"1.weight": 2 * 12 * 7, "3.weight": 2 * 7 * 3}


def test_conv_flops_match_the_formula_and_norms_pools_count_zero():
    net = _conv_net().train()
    assert count_flops(net, (3, 8, 8)) == CONV_A + CONV_B + FC
    assert layer_flops(net, (3, 8, 8)) == {"0.weight": CONV_A, "3.weight": CONV_B, "7.weight": FC}
    assert all(m.training for m in net.modules())  # counted in eval mode, training mode restored

    conv1d = nn.Sequential(nn.Conv1d(2, 5, 3), nn.Flatten(), nn.Linear(5 * 8, 4))
    assert count_flops(conv1d, (2, 10)) == 2 * 2 * 3 * 5 * 8 + 2 * 40 * 4


def test_masked_flops_scale_each_layer_by_its_density():
    net = _conv_net()
    mask = Mask.ones(net)
    quarter = torch.zeros(6 * 4 * 3 * 3, dtype=torch.bool)
    quarter[: quarter.numel() // 4] = True
    mask["3.weight"] = quarter.view(6, 4, 3, 3)
    assert masked_flops(net, mask, (3, 8, 8)) == CONV_A + CONV_B // 4 + FC
    # layers the mask does not name (prune.ignore) stay dense
    only_fc = Mask({"7.weight": torch.tensor([True, False] * 15).view(5, 6)})
    assert masked_flops(net, only_fc, (3, 8, 8)) == CONV_A + CONV_B + FC // 2
    assert masked_flops(net, Mask.ones(net), (3, 8, 8)) == count_flops(net, (3, 8, 8))
    with pytest.raises(KeyError, match="1.weight"):
        masked_flops(net, Mask({"1.weight": torch.ones(4, dtype=torch.bool)}), (3, 8, 8))


def test_param_counts_cover_every_parameter():
    net = _conv_net()
    dense = (3 * 9 * 4 + 4) + (4 + 4) + (4 * 9 * 6 + 6) + (6 * 5 + 5)
    mask = Mask.ones(net)
    mask["0.weight"][:2] = False  # 2 output filters of 27 weights
    assert param_counts(net, mask) == {"dense_params": dense, "remaining_params": dense - 54}
    assert param_counts(net) == {"dense_params": dense, "remaining_params": dense}


def test_registry_model():
    model = create_model("mlp", (1, 8, 8), 10, widths=[30, 20])
    assert count_flops(model, (1, 8, 8)) == 2 * (64 * 30 + 30 * 20 + 20 * 10)
