"""Physical export of channel- and head-pruned networks (Torch-Pruning groups plus exact constant folding)."""
from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from pruning.export import (
    ConstantInputConv1d,
    ConstantInputConv2d,
    ExportMismatchError,
    channel_counts,
    export_channel_pruned,
)
from pruning.mask import Mask, prunable_parameters
from training.cost import count_flops, masked_flops
from training.models import create_model


def _masked(model: nn.Module, mask: Mask) -> nn.Module:
    ref = copy.deepcopy(model)
    mask.apply_(ref)
    return ref


def _params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def _channel_mask(model: nn.Module, seed: int, drop: float = 0.5) -> Mask:
    """Drop random whole output channels of every prunable layer but the last (the classifier)."""
    gen = torch.Generator().manual_seed(seed)
    mask = Mask()
    for name, p in list(prunable_parameters(model).items())[:-1]:
        rows = torch.rand(p.shape[0], generator=gen) >= drop
        rows[torch.randint(p.shape[0], (1,), generator=gen)] = True
        mask[name] = rows.view(-1, *([1] * (p.dim() - 1))).expand(p.shape).clone()
    return mask


def _perturb(model: nn.Module, seed: int, biases: bool = True) -> nn.Module:
    """Non-trivial norm statistics/affines (and biases), so dropped channels carry non-zero constants."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d, nn.GroupNorm)) and m.affine:
                m.weight.uniform_(0.5, 1.5, generator=gen)
                m.bias.normal_(0.0, 0.3, generator=gen)
            if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)) and m.running_mean is not None:
                m.running_mean.normal_(0.0, 0.3, generator=gen)
                m.running_var.uniform_(0.5, 2.0, generator=gen)
            if biases and isinstance(m, (nn.Conv1d, nn.Conv2d, nn.Linear)) and m.bias is not None:
                m.bias.normal_(0.0, 0.3, generator=gen)
    return model


EXPORT_CASES = [
    # name, input shape, options, randomise biases, chain (every all-zero row is removable)
    ("mlp", (1, 8, 8), {"widths": [32, 16]}, True, True),
    ("conv1d", (1, 40), {"width": 12}, True, True),
    ("convnet", (3, 32, 32), {"width": 16, "depth": 3, "norm": "instance"}, False, True),
    ("convnet", (3, 16, 16), {"width": 12, "depth": 2, "norm": "batch"}, True, True),
    ("vgg11_bn", (3, 32, 32), {"width": 8}, True, True),
    ("resnet20", (3, 16, 16), {"width": 8}, True, False),
    ("tv:resnet18", (3, 32, 32), {}, True, False),
]


@pytest.mark.parametrize("name, shape, options, biases, chain", EXPORT_CASES,
                         ids=[f"{c[0]}-{c[2].get('norm', '')}" for c in EXPORT_CASES])
def test_channel_export_matches_masked_model(name, shape, options, biases, chain):
    torch.manual_seed(0)
    model = _perturb(create_model(name, shape, 10, **options), seed=1, biases=biases).eval()
    mask = _channel_mask(model, seed=2)
    x = torch.randn(4, *shape, generator=torch.Generator().manual_seed(3))
    before = {k: v.clone() for k, v in model.state_dict().items()}

    exported = export_channel_pruned(model, mask, x).eval()
    assert type(exported) is type(model)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # input untouched
    # float32, the dtype the pipeline evaluates in; fresh inputs, not the probe
    x2 = torch.randn(3, *shape, generator=torch.Generator().manual_seed(4))
    torch.testing.assert_close(exported(x2), _masked(model, mask)(x2), rtol=1e-5, atol=1e-5)
    if _params(model) < 1_000_000:  # float64: the export is exact, the float32 difference is rounding
        model64 = copy.deepcopy(model).double()
        exported64 = export_channel_pruned(model64, mask, x.double()).eval()
        torch.testing.assert_close(exported64(x2.double()), _masked(model64, mask)(x2.double()), rtol=0, atol=1e-10)

    assert _params(exported) < _params(model)
    counts = channel_counts(exported)
    for layer, m in mask.items():
        kept = int(m.flatten(1).any(1).sum())
        if chain:
            assert counts[layer.removesuffix(".weight")] == kept
        else:  # a channel tied by a skip addition to a live producer stays (with its zeros)
            assert kept <= counts[layer.removesuffix(".weight")] <= m.shape[0]
    assert counts["fc"] == 10  # the classifier keeps every output
    # the state_dict keys of the export are the original's (plus constant kernels and new folded biases)
    extra = set(exported.state_dict()) - set(model.state_dict())
    assert all(k.endswith(("const_kernel", ".bias")) for k in extra)


def test_resnet_internal_channels_give_the_closed_form_size_and_flops():
    """Dropping k channels of each block's conv1 removes exactly those rows, conv2's matching input
    channels and two BN entries each: parameters and FLOPs by hand, FLOPs also via masked_flops."""
    torch.manual_seed(0)
    shape = (3, 16, 16)
    model = _perturb(create_model("resnet20", shape, 10, width=8), seed=1).eval()
    mask = Mask.ones(model)
    column_mask = Mask.ones(model)  # the same cut seen from the consumer side, for masked_flops
    expected_params = _params(model)
    for b, block in enumerate(model.blocks):
        drop = [0, 2, 5][: 1 + b % 3]
        mask[f"blocks.{b}.conv1.weight"][drop] = False
        column_mask[f"blocks.{b}.conv1.weight"][drop] = False
        column_mask[f"blocks.{b}.conv2.weight"][:, drop] = False
        cin, cout = block.conv1.in_channels, block.conv1.out_channels
        expected_params -= len(drop) * (cin * 9 + 2 + cout * 9)
    x = torch.randn(4, *shape)
    exported = export_channel_pruned(model, mask, x)
    assert _params(exported) == expected_params
    assert count_flops(exported, shape) == masked_flops(model, column_mask, shape) < count_flops(model, shape)
    torch.testing.assert_close(exported(x), _masked(model, mask)(x), rtol=1e-5, atol=1e-5)


def test_resnet_stream_channel_goes_only_when_every_producer_is_dead():
    torch.manual_seed(0)
    shape = (3, 16, 16)
    model = _perturb(create_model("resnet20", shape, 10, width=8), seed=1).eval()
    x = torch.randn(4, *shape)
    producers = ["conv.weight"] + [f"blocks.{b}.conv2.weight" for b in range(3)]  # stage 1 adds
    one = Mask.ones(model)
    one["blocks.1.conv2.weight"][3] = False  # the skip path still carries channel 3
    assert channel_counts(export_channel_pruned(model, one, x))["blocks.1.conv2"] == 8
    every = Mask.ones(model)
    for name in producers:
        every[name][3] = False
    exported = export_channel_pruned(model, every, x)
    counts = channel_counts(exported)
    assert all(counts[p.removesuffix(".weight")] == 7 for p in producers)
    assert exported.blocks[3].conv1.in_channels == 7 and exported.blocks[3].shortcut[0].in_channels == 7
    torch.testing.assert_close(exported(x), _masked(model, every)(x), rtol=1e-5, atol=1e-5)


def test_vit_heads_and_mlp_channels_are_removed_exactly():
    torch.manual_seed(0)
    shape = (1, 8, 8)
    model = _perturb(create_model("vit", shape, 10, dim=32, heads=4, depth=2, patch_size=2), seed=1).eval()
    mask = Mask.ones(model)
    dh = 8
    mask["blocks.0.attn.v.weight"][1 * dh: 2 * dh] = False  # head 1 of block 0 outputs its value bias only
    for part in ("q", "k"):
        mask[f"blocks.0.attn.{part}.weight"][1 * dh: 2 * dh] = False
    mask["blocks.1.attn.v.weight"][0] = False  # one value row of a head: the head stays
    mask["blocks.1.mlp.0.weight"][[0, 5, 9]] = False  # MLP hidden channels
    x = torch.randn(4, *shape)
    exported = export_channel_pruned(model, mask, x)
    assert exported.blocks[0].attn.heads == 3 and exported.blocks[0].attn.q.out_features == 24
    assert exported.blocks[0].attn.proj.in_features == 24
    assert exported.blocks[1].attn.heads == 4
    assert exported.blocks[1].mlp[0].out_features == 64 - 3 and exported.blocks[1].mlp[2].in_features == 64 - 3
    x2 = torch.randn(3, *shape)
    torch.testing.assert_close(exported(x2), _masked(model, mask)(x2), rtol=1e-5, atol=1e-5)


def test_channel_mixing_op_is_caught_not_returned():
    """A parameter-free op that mixes channels (mean over channels) makes a removed channel matter;
    the export refuses rather than return a network that computes something else."""

    class Mixer(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv1, self.conv2 = nn.Conv2d(3, 6, 3, padding=1), nn.Conv2d(6, 4, 3, padding=1)
            self.fc = nn.Linear(4, 2)

        def forward(self, x):
            h = torch.relu(self.conv1(x))
            h = h - h.mean(dim=1, keepdim=True)
            return self.fc(self.conv2(h).mean(dim=(2, 3)))

    torch.manual_seed(0)
    model = _perturb(Mixer(), seed=1).eval()
    mask = Mask.ones(model)
    mask["conv1.weight"][[1, 4]] = False
    x = torch.randn(4, 3, 8, 8)
    try:
        exported = export_channel_pruned(model, mask, x)
    except ExportMismatchError as e:
        assert "differs" in str(e) or "non-constant" in str(e)
    else:  # if the channels were kept, the result must still be exact
        torch.testing.assert_close(exported(x), _masked(model, mask)(x), rtol=1e-5, atol=1e-5)


def test_instance_norm_export_with_large_constants_is_exact_in_float64():
    """Instance norm maps a constant channel to beta exactly; the float32 reference only approximates
    that (mean/variance of a constant field carry rounding that 1/sqrt(eps) amplifies), so with large
    biases the float32 comparison needs a looser tolerance, while float64 stays exact."""
    torch.manual_seed(4)
    model = _perturb(create_model("convnet", (3, 16, 16), 10, width=12, depth=2), seed=5, biases=True).eval()
    mask = _channel_mask(model, seed=6)
    x = torch.randn(3, 3, 16, 16, generator=torch.Generator().manual_seed(7))
    torch.testing.assert_close(export_channel_pruned(model, mask, x)(x), _masked(model, mask)(x), rtol=1e-4, atol=1e-4)
    model64 = model.double()
    out = export_channel_pruned(model64, mask, x.double())(x.double())
    torch.testing.assert_close(out, _masked(model64, mask)(x.double()), rtol=0, atol=1e-10)


def test_dropped_channel_constants_are_folded_not_lost():
    """conv bias -> BN -> ReLU keeps a dropped channel alive as a constant; the export must carry it."""
    torch.manual_seed(0)
    model = _perturb(create_model("vgg11_bn", (3, 32, 32), 10, width=8), seed=1).eval()
    mask = _channel_mask(model, seed=2)
    x = torch.randn(2, 3, 32, 32)
    exported = export_channel_pruned(model, mask, x).eval()
    folded = [m for m in exported.modules() if isinstance(m, ConstantInputConv2d)]
    assert folded and any(bool(m.const_kernel.abs().sum() > 0) for m in folded)

    # Dropping the constants (zeroing them) changes the output: they are part of the masked model.
    naive = copy.deepcopy(exported)
    for m in naive.modules():
        if isinstance(m, ConstantInputConv2d):
            m.const_kernel.zero_()
    reference = _masked(model, mask)(x)
    assert (naive(x) - reference).abs().max() > 1e-3
    torch.testing.assert_close(exported(x), reference, rtol=1e-5, atol=1e-5)


def test_sequential_export_folds_into_bias_without_zero_padding():
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(8, 6, 3, padding=1, padding_mode="replicate"), nn.ReLU(),
        nn.Conv2d(6, 5, 2), nn.ReLU(), nn.Flatten(), nn.Linear(5 * 2 * 2, 4),
    )
    _perturb(model, seed=1).eval()
    mask = _channel_mask(model, seed=3)
    mask["9.weight"] = torch.rand(4, 20, generator=torch.Generator().manual_seed(4)) < 0.5  # unstructured fc
    x = torch.randn(3, 3, 8, 8)
    exported = export_channel_pruned(model, mask, x).eval()
    assert not any(isinstance(m, (ConstantInputConv1d, ConstantInputConv2d)) for m in exported.modules())
    torch.testing.assert_close(exported(x), _masked(model, mask)(x), rtol=1e-5, atol=1e-5)
    assert exported[9].weight.shape[0] == 4


def test_fully_dropped_layer_keeps_one_zero_channel():
    torch.manual_seed(0)
    model = _perturb(create_model("mlp", (1, 4, 4), 3, widths=[6, 5]), seed=1).eval()
    mask = Mask.ones(model)
    mask["layers.0.weight"][:] = False
    x = torch.randn(4, 1, 4, 4)
    exported = export_channel_pruned(model, mask, x)
    assert channel_counts(exported)["layers.0"] == 1
    torch.testing.assert_close(exported(x), _masked(model, mask)(x), rtol=1e-5, atol=1e-5)


def test_bad_masks_are_refused():
    model = create_model("mlp", (1, 4, 4), 3, widths=[6])
    x = torch.randn(2, 1, 4, 4)
    with pytest.raises(ValueError, match="nope.weight"):
        export_channel_pruned(model, Mask({"nope.weight": torch.ones(1, dtype=torch.bool)}), x)
    with pytest.raises(ValueError, match="fc.weight"):
        export_channel_pruned(model, Mask({"fc.weight": torch.ones(2, 2, dtype=torch.bool)}), x)
