"""Sanity-check ablations: shuffled masks, inverted scores, re-initialised weights."""
from __future__ import annotations

import pytest
import torch

from pruning.ablations import InvertedScorer, invert_scores, reinitialize, shuffle_mask
from pruning.at_init import prune_at_init
from pruning.mask import Mask, prunable_parameters
from pruning.scorers import SCORERS, ScoringBatches
from pruning.select import select_topk
from training.models import create_model


def _mlp(seed=0):
    torch.manual_seed(seed)
    return create_model("mlp", (12,), 4, widths=[20, 10])


def _magnitude_mask(model, density=0.3):
    scores = {n: p.detach().abs().double() for n, p in prunable_parameters(model).items()}
    return select_topk(scores, density, scope="layerwise")


def test_shuffle_keeps_layer_counts_and_moves_weights():
    mask = _magnitude_mask(_mlp())
    shuffled = shuffle_mask(mask, seed=1)
    assert list(shuffled) == list(mask)
    for n in mask:
        assert shuffled[n].shape == mask[n].shape and shuffled[n].dtype == torch.bool
        assert int(shuffled[n].sum()) == int(mask[n].sum())
        assert not torch.equal(shuffled[n], mask[n])
    again = shuffle_mask(mask, seed=1)
    other = shuffle_mask(mask, seed=2)
    assert all(torch.equal(again[n], shuffled[n]) for n in mask)
    assert not all(torch.equal(other[n], shuffled[n]) for n in mask)
    assert all(torch.equal(m, _magnitude_mask(_mlp())[n]) for n, m in mask.items())  # input untouched


def test_global_shuffle_keeps_total():
    mask = _magnitude_mask(_mlp())
    shuffled = shuffle_mask(mask, seed=0, scope="global")
    assert shuffled.kept == mask.kept and shuffled.total == mask.total
    assert {n: m.shape for n, m in shuffled.items()} == {n: m.shape for n, m in mask.items()}
    with pytest.raises(ValueError, match="scope"):
        shuffle_mask(mask, seed=0, scope="even")


def test_invert_magnitude_keeps_the_smallest_weights():
    model = _mlp()
    params = prunable_parameters(model)
    scores = SCORERS.get("magnitude")().score(model, params, Mask.ones(model), None)
    density = 0.25
    mask = select_topk(invert_scores(scores), density, scope="global")
    flat = torch.cat([p.detach().abs().flatten() for p in params.values()])
    k = round(density * flat.numel())
    kept = torch.cat([p.detach().abs().flatten()[mask[n].flatten()] for n, p in params.items()])
    assert kept.numel() == k
    assert kept.max() <= torch.sort(flat).values[k - 1]  # exactly the k smallest


def test_invert_keeps_pruned_entries_pruned():
    scores = {"w": torch.tensor([3.0, 0.0, float("-inf"), 1.0, 0.0], dtype=torch.float64)}
    current = Mask({"w": torch.tensor([True, False, False, True, True])})
    inv = invert_scores(scores, current)
    assert inv["w"].tolist() == [-3.0, float("-inf"), float("-inf"), -1.0, 0.0]
    assert invert_scores(scores)["w"][2] == float("-inf")  # -inf never becomes +inf
    mask = select_topk(inv, 0.4)  # keeps 2: the two lowest original scores among unpruned entries
    assert mask["w"].tolist() == [False, False, False, True, True]


def test_inverted_scorer_through_prune_at_init():
    model = _mlp()
    x = torch.randn(8, 12, generator=torch.Generator().manual_seed(0))
    batches = ScoringBatches(x, torch.arange(8) % 4, (12,), 4)
    inv_mag = prune_at_init(model, InvertedScorer(SCORERS.get("magnitude")()), 0.2, batches, scope="layerwise")
    mag = prune_at_init(model, SCORERS.get("magnitude")(), 0.8, batches, scope="layerwise")
    for n, p in prunable_parameters(model).items():
        assert not (inv_mag[n] & mag[n]).any()  # lowest 20% vs highest 80% per layer
        assert int(inv_mag[n].sum()) + int(mag[n].sum()) == p.numel()
    snip = InvertedScorer(SCORERS.get("snip")())
    assert snip.needs_data
    two_rounds = prune_at_init(model, snip, 0.3, batches, rounds=2)
    assert two_rounds.kept == round(0.3 * two_rounds.total)


def test_reinitialize_uses_the_models_own_init():
    factory = lambda: create_model("mlp", (12,), 4, widths=[20, 10])  # noqa: E731
    original = _mlp(seed=0)
    mask = _magnitude_mask(original)
    rng_before = torch.random.get_rng_state()
    fresh = reinitialize(factory, seed=5, mask=mask)
    assert torch.equal(torch.random.get_rng_state(), rng_before)  # caller's RNG untouched
    torch.manual_seed(5)
    expected = factory()
    mask.apply_(expected)
    for (k, v), (k2, v2) in zip(fresh.state_dict().items(), expected.state_dict().items()):
        assert k == k2 and torch.equal(v, v2)
    params = prunable_parameters(fresh)
    for n, p in prunable_parameters(original).items():
        assert not torch.equal(params[n], p)
        assert torch.all(params[n][~mask[n]] == 0)
        assert torch.any(params[n][mask[n]] != 0)
    assert torch.count_nonzero(fresh.fc.bias) == 0  # biases follow the init too (zero)
