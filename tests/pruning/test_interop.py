"""torch.nn.utils.prune round trips, and physical export of channel-pruned chain models."""
from __future__ import annotations

import copy

import pytest
import torch
from torch import nn
from torch.nn.utils import prune

from pruning.interop import (
    ConstantInputConv1d,
    ConstantInputConv2d,
    channel_counts,
    export_channel_pruned,
    from_torch_prune,
    to_torch_prune,
)
from pruning.mask import Mask, prunable_parameters
from training.models import create_model


def _random_mask(model: nn.Module, density: float, seed: int) -> Mask:
    gen = torch.Generator().manual_seed(seed)
    return Mask({n: torch.rand(p.shape, generator=gen) < density for n, p in prunable_parameters(model).items()})


def _masked(model: nn.Module, mask: Mask) -> nn.Module:
    ref = copy.deepcopy(model)
    mask.apply_(ref)
    return ref


def _params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


# --------------------------------------------------------------------------------------------- torch prune
def test_round_trip_through_torch_prune():
    torch.manual_seed(0)
    model = create_model("convnet", (1, 8, 8), 10, width=8, depth=2).eval()
    mask = _random_mask(model, 0.3, seed=1)
    x = torch.randn(5, 1, 8, 8)
    expected = _masked(model, mask)(x)
    original = {n: p.detach().clone() for n, p in prunable_parameters(model).items()}

    assert to_torch_prune(model, mask) is model
    assert prune.is_pruned(model)
    for name in mask:
        module = model.get_submodule(name.removesuffix(".weight"))
        assert "weight_orig" in dict(module.named_parameters(recurse=False))
        assert "weight_mask" in dict(module.named_buffers(recurse=False))
        assert torch.equal(module.weight_orig.detach(), original[name])  # values untouched
    torch.testing.assert_close(model(x), expected, rtol=0, atol=0)

    back = from_torch_prune(model)
    assert list(back) == list(mask)
    assert all(back[n].dtype == torch.bool and torch.equal(back[n], mask[n]) for n in mask)
    assert prune.is_pruned(model)  # reading does not remove

    permanent = from_torch_prune(model, remove=True)
    assert all(torch.equal(permanent[n], mask[n]) for n in mask)
    assert not prune.is_pruned(model)
    params = dict(model.named_parameters())
    assert not any(n.endswith("weight_orig") for n in params)
    for name, m in mask.items():
        assert isinstance(params[name], nn.Parameter)
        assert bool((params[name].detach()[~m] == 0).all())
    torch.testing.assert_close(model(x), expected, rtol=0, atol=0)
    mask.apply_(model)  # the Mask convention works again on the plain model


def test_torch_prune_rejects_bad_masks_without_touching_the_model():
    torch.manual_seed(0)
    model = create_model("mlp", (1, 4, 4), 3, widths=[8])
    mask = Mask.ones(model)
    bad = Mask({**mask, "layers.9.weight": torch.ones(2, 2, dtype=torch.bool)})
    with pytest.raises(KeyError, match="layers.9.weight"):
        to_torch_prune(model, bad)
    assert not prune.is_pruned(model)
    wrong_shape = Mask({**mask, "fc.weight": torch.ones(2, 2, dtype=torch.bool)})
    with pytest.raises(ValueError, match="fc.weight"):
        to_torch_prune(model, wrong_shape)
    assert not prune.is_pruned(model)
    with pytest.raises(ValueError, match="no torch.nn.utils.prune"):
        from_torch_prune(model)
    to_torch_prune(model, mask)
    with pytest.raises(ValueError, match="already pruned"):
        to_torch_prune(model, mask)


# --------------------------------------------------------------------------------------------- export
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
    # name, input shape, options, randomise biases
    ("mlp", (1, 8, 8), {"widths": [32, 16]}, True),
    ("conv1d", (1, 40), {"width": 12}, True),
    ("convnet", (3, 32, 32), {"width": 16, "depth": 3, "norm": "instance"}, False),
    ("convnet", (3, 16, 16), {"width": 12, "depth": 2, "norm": "batch"}, True),
    ("vgg11_bn", (3, 32, 32), {"width": 8}, True),
]


@pytest.mark.parametrize("name, shape, options, biases", EXPORT_CASES, ids=[f"{c[0]}-{c[2].get('norm', '')}" for c in EXPORT_CASES])
def test_channel_export_matches_masked_model(name, shape, options, biases):
    torch.manual_seed(0)
    model = _perturb(create_model(name, shape, 10, **options), seed=1, biases=biases).eval()
    mask = _channel_mask(model, seed=2)
    x = torch.randn(4, *shape, generator=torch.Generator().manual_seed(3))
    before = {k: v.clone() for k, v in model.state_dict().items()}

    exported = export_channel_pruned(model, mask).eval()
    assert type(exported) is type(model)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # input untouched
    # float32, the dtype the pipeline evaluates in
    torch.testing.assert_close(exported(x), _masked(model, mask)(x), rtol=1e-5, atol=1e-5)
    # float64: the export is exact, the remaining float32 difference is rounding (see below)
    model64 = copy.deepcopy(model).double()
    exported64 = export_channel_pruned(model64, mask).eval()
    torch.testing.assert_close(exported64(x.double()), _masked(model64, mask)(x.double()), rtol=0, atol=1e-10)

    assert _params(exported) < _params(model)
    counts = channel_counts(exported)
    for layer, m in mask.items():
        assert counts[layer.removesuffix(".weight")] == int(m.flatten(1).any(1).sum())
    assert counts["fc"] == 10  # the classifier keeps every output
    # the state_dict keys of the export are the original's (plus constant kernels where folded)
    extra = set(exported.state_dict()) - set(model.state_dict())
    assert all(k.endswith("const_kernel") for k in extra)


def test_instance_norm_export_with_large_constants_is_exact_in_float64():
    """Instance norm maps a constant channel to beta exactly; the float32 reference only approximates
    that (mean/variance of a constant field carry rounding that 1/sqrt(eps) amplifies), so with large
    biases the float32 comparison needs a looser tolerance, while float64 stays exact."""
    torch.manual_seed(4)
    model = _perturb(create_model("convnet", (3, 16, 16), 10, width=12, depth=2), seed=5, biases=True).eval()
    mask = _channel_mask(model, seed=6)
    x = torch.randn(3, 3, 16, 16, generator=torch.Generator().manual_seed(7))
    torch.testing.assert_close(export_channel_pruned(model, mask)(x), _masked(model, mask)(x), rtol=1e-4, atol=1e-4)
    model64 = model.double()
    out = export_channel_pruned(model64, mask)(x.double())
    torch.testing.assert_close(out, _masked(model64, mask)(x.double()), rtol=0, atol=1e-10)


def test_dropped_channel_constants_are_folded_not_lost():
    """conv bias -> BN -> ReLU keeps a dropped channel alive as a constant; the export must carry it."""
    torch.manual_seed(0)
    model = _perturb(create_model("vgg11_bn", (3, 32, 32), 10, width=8), seed=1).eval()
    mask = _channel_mask(model, seed=2)
    exported = export_channel_pruned(model, mask).eval()
    folded = [m for m in exported.modules() if isinstance(m, ConstantInputConv2d)]
    assert folded and any(bool(m.const_kernel.abs().sum() > 0) for m in folded)

    # Dropping the constants (zeroing them) changes the output: they are part of the masked model.
    naive = copy.deepcopy(exported)
    for m in naive.modules():
        if isinstance(m, ConstantInputConv2d):
            m.const_kernel.zero_()
    x = torch.randn(2, 3, 32, 32)
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
    exported = export_channel_pruned(model, mask).eval()
    assert not any(isinstance(m, (ConstantInputConv1d, ConstantInputConv2d)) for m in exported.modules())
    x = torch.randn(3, 3, 8, 8)
    torch.testing.assert_close(exported(x), _masked(model, mask)(x), rtol=1e-5, atol=1e-5)
    assert exported[9].weight.shape[0] == 4


def test_fully_dropped_layer_keeps_one_zero_channel():
    torch.manual_seed(0)
    model = _perturb(create_model("mlp", (1, 4, 4), 3, widths=[6, 5]), seed=1).eval()
    mask = Mask.ones(model)
    mask["layers.0.weight"][:] = False
    exported = export_channel_pruned(model, mask)
    assert channel_counts(exported)["layers.0"] == 1
    x = torch.randn(4, 1, 4, 4)
    torch.testing.assert_close(exported(x), _masked(model, mask)(x), rtol=1e-5, atol=1e-5)


def test_residual_and_unknown_models_are_refused():
    torch.manual_seed(0)
    resnet = create_model("resnet20", (3, 16, 16), 10, width=4)
    with pytest.raises(NotImplementedError, match="CifarResNet.*residual"):
        export_channel_pruned(resnet, Mask.ones(resnet))

    class Custom(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(3, 2)

        def forward(self, x):
            return self.fc(x)

    custom = Custom()
    with pytest.raises(NotImplementedError, match="Custom"):
        export_channel_pruned(custom, Mask.ones(custom))
    model = create_model("mlp", (1, 4, 4), 3, widths=[6])
    with pytest.raises(ValueError, match="nope.weight"):
        export_channel_pruned(model, Mask({"nope.weight": torch.ones(1, dtype=torch.bool)}))
