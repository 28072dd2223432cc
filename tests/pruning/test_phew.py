"""PHEW: walks keep exactly the budget, every kept weight lies on an input-output path (but the last
walk's), the walks prefer large weights and never step on a zero one, and non-chains are refused."""
from __future__ import annotations

import pytest
import torch

from pruning.at_init import prune_at_init
from pruning.mask import Mask
from pruning.scorers import SCORERS, ScoringBatches
from training.models import create_model

BATCHES = ScoringBatches(None, None, (1, 8, 8), 10)


def _mlp(seed=0):
    torch.manual_seed(seed)
    return create_model("mlp", (1, 8, 8), 10, widths=[64, 32])


def _off_path(mask: Mask, names: list[str]) -> int:
    """Kept weights not on any complete input-output path of kept weights (an MLP chain)."""
    ms = [mask[n] for n in names]
    fwd = [torch.ones(ms[0].shape[1], dtype=torch.bool)]  # units reachable from the input
    for m in ms:
        fwd.append((m & fwd[-1][None, :]).any(1))
    bwd = [torch.ones(ms[-1].shape[0], dtype=torch.bool)]  # units that reach the output
    for m in reversed(ms):
        bwd.insert(0, (m & bwd[0][:, None]).any(0))
    return sum(int((m & ~(fwd[i][None, :] & bwd[i + 1][:, None])).sum()) for i, m in enumerate(ms))


def test_exact_budget_and_every_kept_weight_on_a_path():
    model = _mlp()
    names = ["layers.0.weight", "layers.2.weight", "fc.weight"]
    mask = prune_at_init(model, SCORERS.get("phew")(seed=0), 0.05, BATCHES)
    total = sum(m.numel() for m in mask.values())
    assert mask.kept == round(0.05 * total)
    assert _off_path(mask, names) <= len(names) - 1  # only the last, cut walk may dangle
    random = prune_at_init(model, SCORERS.get("random")(seed=0), 0.05, BATCHES)
    assert _off_path(random, names) > 100  # what PHEW avoids


def test_walks_prefer_large_weights_and_never_take_a_zero_one():
    model = _mlp(1)
    with torch.no_grad():
        model.layers[0].weight[:, :16] = 0.0  # the first 16 inputs have no way in
    mask = prune_at_init(model, SCORERS.get("phew")(seed=1), 0.03, BATCHES)
    first = mask["layers.0.weight"]
    assert not bool(first[:, :16].any())
    w = model.layers[2].weight.detach().abs()
    kept = mask["layers.2.weight"]
    assert w[kept].mean() > 1.3 * w.mean()


def test_conv_chain_with_flatten_and_seeded_determinism():
    torch.manual_seed(0)
    model = create_model("conv1d", (1, 40), 10, width=8)
    batches = ScoringBatches(None, None, (1, 40), 10)
    a = prune_at_init(model, SCORERS.get("phew")(seed=2), 0.1, batches)
    b = prune_at_init(model, SCORERS.get("phew")(seed=2), 0.1, batches)
    assert all(torch.equal(a[n], b[n]) for n in a)
    assert a.kept == round(0.1 * sum(m.numel() for m in a.values()))


def test_residual_nets_and_per_layer_allocations_are_refused():
    torch.manual_seed(0)
    resnet = create_model("resnet20", (3, 16, 16), 10, width=4)
    with pytest.raises(ValueError, match="shortcut"):
        SCORERS.get("phew").check_model(resnet, (3, 16, 16))
    with pytest.raises(ValueError, match="global"):
        prune_at_init(_mlp(), SCORERS.get("phew")(seed=0), {"layers.0.weight": 0.1, "layers.2.weight": 0.1,
                                                            "fc.weight": 0.5}, BATCHES)
