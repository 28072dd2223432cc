"""Layer allocation: global, uniform, ERK (exact total) and explicit."""
from __future__ import annotations

import math

import pytest
import torch

from pruning.allocation import allocate, allocate_counts, erk_densities, layer_shapes
from pruning.at_init import prune_at_init
from pruning.scorers import SCORERS, ScoringBatches
from pruning.select import kept_count, select_topk
from training.models import create_model


def _model():
    torch.manual_seed(0)
    # conv 8x2x3x3 (144), conv 8x8x3x3 (576), fc 3x32 (96)
    return create_model("convnet", (2, 8, 8), 3, width=8, depth=2, norm="none")


def _numel(shapes):
    return {n: math.prod(s) for n, s in shapes.items()}


SHAPE_SETS = [
    {n: s for n, s in layer_shapes(_model()).items()},
    {"a": torch.Size([2, 2]), "b": torch.Size([10, 10]), "c": torch.Size([7, 3, 3, 3])},
    {"l0": torch.Size([300, 784]), "l1": torch.Size([100, 300]), "fc": torch.Size([10, 100])},
    {"x": torch.Size([5, 1, 3]), "y": torch.Size([17, 5, 3]), "z": torch.Size([3, 17])},
]


def test_layer_shapes_follow_prunable_parameters():
    shapes = layer_shapes(_model())
    assert list(shapes) == ["features.0.weight", "features.3.weight", "fc.weight"]
    assert shapes["fc.weight"] == torch.Size([3, 32])
    assert "fc.weight" not in layer_shapes(_model(), ignore=["fc.weight"])


def test_global_returns_the_density():
    assert allocate("global", 0.2, SHAPE_SETS[0]) == 0.2
    with pytest.raises(ValueError, match="global"):
        allocate_counts("global", 0.2, SHAPE_SETS[0])


@pytest.mark.parametrize("bad", [0.0, -0.1, 1.5])
def test_density_range(bad):
    for kind in ("global", "uniform", "erk"):
        with pytest.raises(ValueError, match="density"):
            allocate(kind, bad, SHAPE_SETS[0])


def test_unknown_kind():
    with pytest.raises(ValueError, match="allowed: global, uniform, erk, explicit"):
        allocate("even", 0.5, SHAPE_SETS[0])


def test_uniform_equal_densities():
    shapes = {"a": torch.Size([10, 10]), "b": torch.Size([20, 5, 2]), "c": torch.Size([50])}
    dens = allocate("uniform", 0.3, shapes)
    assert set(dens.values()) == {0.3}
    odd = SHAPE_SETS[0]
    counts = allocate_counts("uniform", 0.07, odd)
    assert counts == {n: round(0.07 * k) for n, k in _numel(odd).items()}


def test_erk_hand_computed():
    # raw: a = (2+2)/4 = 1, b = 20/100 = 0.2. d = 0.5 -> 52 of 104; eps = 52/24 makes a exceed 1,
    # so a is dense and b gets the remaining 48 (eps = 48/20 = 2.4, density 0.48).
    shapes = {"a": torch.Size([2, 2]), "b": torch.Size([10, 10])}
    assert erk_densities(0.5, shapes) == pytest.approx({"a": 1.0, "b": 0.48})
    assert allocate_counts("erk", 0.5, shapes) == {"a": 4, "b": 48}
    # low density: nobody is dense and d_l is proportional to (sum of dims)/(product of dims)
    real = erk_densities(0.1, shapes)
    assert real["a"] / real["b"] == pytest.approx(5.0)
    assert 4 * real["a"] + 100 * real["b"] == pytest.approx(10.4)


@pytest.mark.parametrize("shapes", SHAPE_SETS)
def test_erk_properties_and_exact_total(shapes):
    numel = _numel(shapes)
    total = sum(numel.values())
    raw = {n: sum(s) / numel[n] for n, s in shapes.items()}
    for density in [0.003, 0.01, 0.05, 0.1, 0.2, 0.37, 0.5, 0.8, 0.95, 0.999, 1.0]:
        real = erk_densities(density, shapes)
        assert sum(real[n] * numel[n] for n in shapes) == pytest.approx(density * total)
        assert all(0 < d <= 1.0 for d in real.values())
        free = [n for n in shapes if real[n] < 1.0]
        # non-dense layers share one eps; denser-by-shape layers never get a lower density
        ratios = {real[n] / raw[n] for n in free}
        assert max(ratios, default=1) == pytest.approx(min(ratios, default=1))
        for a in shapes:
            for b in shapes:
                if raw[a] > raw[b]:
                    assert real[a] >= real[b]
        counts = allocate_counts("erk", density, shapes)
        assert sum(counts.values()) == kept_count(density, total)  # exact
        assert all(0 <= counts[n] <= numel[n] for n in shapes)
        for n in shapes:  # within the documented rounding tolerance
            assert abs(counts[n] - real[n] * numel[n]) < 0.5 + len(shapes) / 2 + 1e-9
        dens = allocate("erk", density, shapes)
        assert all(dens[n] <= 1.0 for n in dens)
        assert {n: kept_count(dens[n], numel[n]) for n in shapes} == counts


def test_erk_small_layers_denser_on_a_model():
    shapes = layer_shapes(_model())
    dens = allocate("erk", 0.1, shapes)
    conv1, conv2, fc = dens["features.0.weight"], dens["features.3.weight"], dens["fc.weight"]
    assert fc > conv1 > conv2  # 96 and 144 weights vs 576
    assert max(dens.values()) <= 1.0


def test_erk_makes_overfull_layers_dense():
    shapes = {"tiny": torch.Size([3, 2]), "mid": torch.Size([20, 20]), "big": torch.Size([200, 100])}
    # raw (sum/prod): tiny 5/6, mid 0.1, big 0.015
    real = erk_densities(0.1, shapes)  # eps = 2040.6/345 puts tiny above 1; then eps = 2034.6/340
    assert real["tiny"] == 1.0
    assert real["mid"] == pytest.approx(0.1 * 2034.6 / 340) and real["big"] == pytest.approx(0.015 * 2034.6 / 340)
    counts = allocate_counts("erk", 0.1, shapes)
    assert counts["tiny"] == 6 and sum(counts.values()) == round(0.1 * 20406)
    # at 0.3 making tiny dense raises eps enough that mid must go dense too (the iterative step)
    real = erk_densities(0.3, shapes)
    assert real["tiny"] == 1.0 and real["mid"] == 1.0
    assert real["big"] == pytest.approx((0.3 * 20406 - 406) / 20000)
    counts = allocate_counts("erk", 0.3, shapes)
    assert counts["tiny"] == 6 and counts["mid"] == 400
    assert sum(counts.values()) == round(0.3 * 20406)


def test_counts_survive_select_topk_rounding():
    for n in [1, 7, 96, 144, 997, 30000]:
        for k in range(0, n + 1, max(1, n // 300)):
            assert kept_count(k / n, n) == k


@pytest.mark.parametrize("kind", ["erk", "uniform"])
def test_select_topk_keeps_exactly_the_allocation(kind):
    shapes = SHAPE_SETS[3]
    gen = torch.Generator().manual_seed(0)
    scores = {n: torch.rand(s, generator=gen, dtype=torch.float64) for n, s in shapes.items()}
    for density in [0.05, 0.33, 0.7]:
        counts = allocate_counts(kind, density, shapes)
        mask = select_topk(scores, allocate(kind, density, shapes), scope="layerwise")
        assert {n: int(m.sum()) for n, m in mask.items()} == counts


@pytest.mark.parametrize("name", ["snip", "grasp", "magnitude"])
def test_erk_through_prune_at_init(name):
    model = _model()
    shapes = layer_shapes(model)
    gen = torch.Generator().manual_seed(0)
    batches = ScoringBatches(torch.randn(6, 2, 8, 8, generator=gen), torch.arange(6) % 3, (2, 8, 8), 3)
    density = 0.11
    counts = allocate_counts("erk", density, shapes)
    mask = prune_at_init(model, SCORERS.get(name)(), allocate("erk", density, shapes), batches, rounds=2)
    assert {n: int(m.sum()) for n, m in mask.items()} == counts
    assert mask.kept == round(density * mask.total)


def test_explicit():
    shapes = SHAPE_SETS[1]
    dens = allocate("explicit", None, shapes, {"a": 0.5, "b": 1.0, "c": 0.1})
    assert dens["a"] == 0.5 and dens["b"] == 1.0
    assert allocate_counts("explicit", None, shapes, {"a": 0.5, "b": 1, "c": 0.1}) == {"a": 2, "b": 100, "c": 19}
    with pytest.raises(ValueError, match="not prunable"):
        allocate("explicit", None, shapes, {"a": 0.5, "b": 1.0, "c": 0.1, "d.weight": 0.2})
    with pytest.raises(ValueError, match=r"missing prunable layers \['c'\]"):
        allocate("explicit", None, shapes, {"a": 0.5, "b": 1.0})
    for bad in (0.0, 1.5, -1, "0.5", True, float("nan")):
        with pytest.raises(ValueError, match="'a'"):
            allocate("explicit", None, shapes, {"a": bad, "b": 1.0, "c": 0.1})
    with pytest.raises(ValueError, match="needs a mapping"):
        allocate("explicit", None, shapes)


def test_scaled_allocation_keeps_the_ratios_caps_at_dense_and_totals_exactly():
    import math

    from pruning.allocation import allocate_counts

    shapes = {"a": torch.Size([100, 10]), "b": torch.Size([50, 10]), "c": torch.Size([10, 10])}
    numel = {n: math.prod(s) for n, s in shapes.items()}
    counts = allocate_counts("scaled", 0.3, shapes, {"a": 0.1, "b": 0.2, "c": 1.0})
    assert sum(counts.values()) == round(0.3 * 1600)
    assert counts["c"] == numel["c"]  # c * 1.0 > 1: dense; a and b share the rest at ratio 1:2 by density
    da, db = counts["a"] / numel["a"], counts["b"] / numel["b"]
    assert abs(db / da - 2.0) < 0.01
    # The same relative densities scaled to another target: the same shape, a different total.
    assert sum(allocate_counts("scaled", 0.1, shapes, {"a": 0.1, "b": 0.2, "c": 1.0}).values()) == 160
    with pytest.raises(ValueError, match="missing prunable layers"):
        allocate_counts("scaled", 0.3, shapes, {"a": 0.1})


def test_per_layer_search_parameters_become_one_scaled_allocation():
    from search.space import overrides_from_params

    got = overrides_from_params({"train.lr": 0.1, "layer_density/layers.0.weight": 0.5, "layer_density/fc.weight": 0.2})
    assert got == {"train.lr": 0.1, "prune.allocation": "scaled",
                   "prune.layer_densities": {"layers.0.weight": 0.5, "fc.weight": 0.2}}
    assert overrides_from_params({"train.lr": 0.1}) == {"train.lr": 0.1}
