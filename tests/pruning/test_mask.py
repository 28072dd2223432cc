import torch
from torch import nn

import pytest

from pruning.mask import CorruptArtifactError, Mask, prunable_parameters
from pruning.select import density_schedule, select_topk
from pruning.at_init import prune_at_init
from pruning.scorers import SCORERS, ScoringBatches
from training.models import create_model


def _net():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 10), nn.ReLU(), nn.Linear(10, 3))


def test_prunable_parameters_are_conv_and_linear_weights_only():
    names = set(prunable_parameters(_net()))
    assert names == {"0.weight", "3.weight", "5.weight"}
    assert set(prunable_parameters(_net(), ignore=["5.weight"])) == {"0.weight", "3.weight"}
    with pytest.raises(ValueError, match="not prunable"):
        prunable_parameters(_net(), ignore=["5.bias"])


@pytest.mark.parametrize("density", [0.5, 0.2, 0.1, 0.05, 0.013, 0.001])
def test_global_selection_keeps_exactly_round_dN_even_with_ties(density):
    net = _net()
    # Heavy ties: scores take only 3 distinct values.
    scores = {n: torch.randint(0, 3, p.shape).double() for n, p in prunable_parameters(net).items()}
    mask = select_topk(scores, density, scope="global")
    total = sum(p.numel() for p in prunable_parameters(net).values())
    assert mask.kept == round(density * total)
    assert mask.report().density == pytest.approx(round(density * total) / total)


@pytest.mark.parametrize("density", [0.5, 0.1, 0.03])
def test_layerwise_selection_keeps_exactly_round_dNl_per_layer(density):
    net = _net()
    scores = {n: torch.zeros(p.shape, dtype=torch.float64) for n, p in prunable_parameters(net).items()}
    mask = select_topk(scores, density, scope="layerwise")
    for name, m in mask.items():
        assert int(m.sum()) == round(density * m.numel())


def test_selection_never_revives_pruned_weights():
    net = _net()
    params = prunable_parameters(net)
    first = select_topk({n: p.abs() for n, p in params.items()}, 0.5)
    # Give pruned entries huge scores: they must stay pruned at a lower density.
    scores = {n: torch.where(first[n], p.abs(), torch.full_like(p, 1e9)) for n, p in params.items()}
    second = select_topk(scores, 0.25, current=first)
    for n in first:
        assert not (second[n] & ~first[n]).any()
    assert second.kept == round(0.25 * first.total)


def test_global_selection_keeps_the_highest_scores():
    scores = {"a": torch.tensor([1.0, 5.0, 3.0]), "b": torch.tensor([[4.0, 0.5]])}
    mask = select_topk(scores, 0.4)
    assert mask["a"].tolist() == [False, True, False]
    assert mask["b"].tolist() == [[True, False]]


def test_report_names_collapsed_layers():
    mask = Mask({"a": torch.tensor([True, False]), "b": torch.zeros(3, dtype=torch.bool)})
    rep = mask.report()
    assert rep.collapsed == ["b"]
    assert rep.kept == 1 and rep.total == 5
    assert rep.to_dict()["layers"]["a"]["density"] == 0.5


def test_mask_roundtrip_and_corrupt_file(tmp_path):
    mask = select_topk({n: p.abs() for n, p in prunable_parameters(_net()).items()}, 0.3)
    mask.save(tmp_path / "mask.pt")
    loaded = Mask.load(tmp_path / "mask.pt")
    assert set(loaded) == set(mask) and all(torch.equal(loaded[n], mask[n]) for n in mask)
    (tmp_path / "bad.pt").write_bytes(b"not a torch file")
    with pytest.raises(CorruptArtifactError, match="bad.pt"):
        Mask.load(tmp_path / "bad.pt")
    with pytest.raises(FileNotFoundError, match="missing.pt"):
        Mask.load(tmp_path / "missing.pt")


def test_density_schedules():
    exp = density_schedule(0.01, 4, "exponential")
    assert exp[-1] == pytest.approx(0.01) and exp[1] == pytest.approx(0.1)
    lin = density_schedule(0.2, 4, "linear")
    assert lin == pytest.approx([0.8, 0.6, 0.4, 0.2])


@pytest.mark.parametrize("scope", ["global", "layerwise"])
def test_prune_at_init_iterative_is_exact_and_leaves_model_untouched(scope):
    model = create_model("mlp", (1, 8, 8), 10)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    batches = ScoringBatches(None, None, (1, 8, 8), 10)
    mask = prune_at_init(model, SCORERS.get("magnitude")(), 0.05, batches, rounds=5, scope=scope)
    total = sum(m.numel() for m in mask.values())
    if scope == "global":
        assert mask.kept == round(0.05 * total)
    else:
        assert all(int(m.sum()) == round(0.05 * m.numel()) for m in mask.values())
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
