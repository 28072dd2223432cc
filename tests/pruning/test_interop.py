"""torch.nn.utils.prune round trips."""
from __future__ import annotations

import copy

import pytest
import torch
from torch import nn
from torch.nn.utils import prune

from pruning.interop import (
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
