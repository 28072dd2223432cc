"""Where the methods follow their authors' code: SparseGPT's block-wide adaptive mask, the BatchNorm
mode each data-driven method scores in, and each method's reference count rule (``count_rule``)."""
from __future__ import annotations

import copy
import math

import pytest
import torch
import torch.nn.functional as F

from pruning.at_init import mask_at_init, prune_at_init
from pruning.config import PostTrainConfig, PruneConfig
from pruning.mask import Mask, prunable_parameters
from pruning.posttrain import hessian, sparsegpt_layer
from pruning.registry import METHODS
from pruning.scorers import SCORERS, ScoringBatches
from pruning.select import COUNT_RULES, kept_count
from training.models import create_model


# ------------------------------------------------------------------------------- SparseGPT's mask
def _layer(seed=0, rows=6, cols=8):
    gen = torch.Generator().manual_seed(seed)
    w = torch.randn(rows, cols, generator=gen, dtype=torch.float64)
    w[0] *= 0.05  # one row of small weights: a per-row quota must still prune its share of the others
    x = torch.randn(64, cols, generator=gen, dtype=torch.float64)
    return w, hessian(x)


def _inverse_cholesky_diag(h, damp):
    h = h + damp * torch.mean(torch.diag(h)) * torch.eye(len(h), dtype=h.dtype)
    return torch.diag(torch.linalg.cholesky(torch.linalg.inv(h), upper=True))


def test_sparsegpt_prunes_the_lowest_saliency_over_the_whole_block_all_rows_together():
    w, h = _layer()
    kept = 20  # of 48: prune 28
    cfg = PostTrainConfig(blocksize=8)  # one block: the selection happens before any update
    _, keep = sparsegpt_layer(w, h, kept, cfg)
    saliency = w ** 2 / _inverse_cholesky_diag(h, cfg.damp).unsqueeze(0) ** 2  # the paper's w^2 / [H^-1]_jj^2
    order = torch.argsort(saliency.flatten(), stable=True)
    expected = torch.ones(48, dtype=torch.bool)
    expected[order[:28]] = False
    assert torch.equal(keep.flatten(), expected)
    assert int(keep[0].sum()) <= 1  # the small row is pruned almost whole, as the block-wide rule does
    _, per_row = sparsegpt_layer(w, h, kept, cfg.model_copy(update={"selection": "row"}))
    assert not torch.equal(per_row, keep) and int(per_row[0].sum()) >= 3  # an equal quota per row differs


@pytest.mark.parametrize("block", [3, 8, 128])
def test_sparsegpt_keeps_exactly_its_count_whatever_the_blocks(block):
    w, h = _layer(1, rows=5, cols=11)
    for kept in (1, 17, 40):
        new, keep = sparsegpt_layer(w, h, kept, PostTrainConfig(blocksize=block))
        assert int(keep.sum()) == kept and bool((new[~keep] == 0).all())


# ------------------------------------------------------------------------------- BatchNorm modes
def _bn_net():
    torch.manual_seed(2)
    model = create_model("convnet", (2, 6, 6), 3, width=4, depth=2, norm="batch").double()
    model.train()
    with torch.no_grad():  # running statistics far from any batch's: the two modes must disagree
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.fill_(3.0)
                m.running_var.fill_(9.0)
    return model


def _sensitivity_by_hand(model, batches, train):
    model = copy.deepcopy(model).train(train)
    model.zero_grad()
    for x, y in batches:
        F.cross_entropy(model(x.double()), y).backward()
    return {n: (p.detach() * p.grad).abs() for n, p in prunable_parameters(model).items()}


@pytest.mark.parametrize("method,mode", [("snip", "eval"), ("grasp", "eval"), ("iter_snip", "train"),
                                         ("force", "train"), ("prospr", "train")])
def test_each_method_scores_in_its_authors_batchnorm_mode(method, mode):
    assert METHODS.get(method).options().bn_mode == mode
    if method in ("grasp", "prospr"):
        return  # their formulas are checked elsewhere; the mode is what matters here
    model = _bn_net()
    gen = torch.Generator().manual_seed(0)
    batches = ScoringBatches(torch.randn(12, 2, 6, 6, generator=gen), torch.arange(12) % 3, (2, 6, 6), 3, 6)
    params = prunable_parameters(model)
    scores = SCORERS.get(method)().score(model, params, Mask.ones(model), batches)
    expected = _sensitivity_by_hand(model, batches, train=mode == "train")
    other = _sensitivity_by_hand(model, batches, train=mode != "train")
    for n in expected:
        torch.testing.assert_close(scores[n], expected[n])
    assert any(not torch.allclose(scores[n], other[n]) for n in other)


# ------------------------------------------------------------------------------- count rules
def test_each_count_rule_counts_as_its_reference_does():
    d, n = 0.37, 1003  # d * n = 371.11
    assert kept_count(d, n) == 371 and kept_count(d, n, "floor") == 371
    assert kept_count(d, n, "ceil") == 372
    assert kept_count(d, n, "complement_floor") == n - int((1 - d) * n) == 372
    # 0.29 * 100 = 28.999999999999996 in floating point: the references' rules inherit that
    assert kept_count(0.29, 100, "floor") == 28 and kept_count(0.29, 100, "ceil") == 29 == kept_count(0.29, 100)
    assert set(COUNT_RULES) == {"round", "floor", "ceil", "complement_floor"}


@pytest.mark.parametrize("method,rule", [("force", "floor"), ("iter_snip", "floor"), ("prospr", "ceil"),
                                         ("synflow", "complement_floor"), ("ntksap", "complement_floor"),
                                         ("snip", "complement_floor"), ("random", "complement_floor")])
def test_count_rule_reference_keeps_the_methods_published_count(method, rule):
    assert METHODS.get(method).count_rule == rule
    torch.manual_seed(0)
    model = create_model("mlp", (1, 8, 8), 10, widths=[20])  # 64*20 + 20*10 = 1480 prunable weights
    data = _digits_like()
    for sparsity in (0.6317, 0.9):
        prune = PruneConfig(method=method, sparsity=sparsity, rounds=2, count_rule="reference", examples_per_class=2)
        mask, _, _ = mask_at_init(model, prune, 0, data=data)
        assert mask.kept == kept_count(1 - sparsity, 1480, rule), (method, sparsity)
        exact, _, _ = mask_at_init(model, prune.model_copy(update={"count_rule": "exact"}), 0, data=data)
        assert exact.kept == round((1 - sparsity) * 1480)
    # where the rules differ, the masks do: 0.3683 * 1480 = 545.08
    prune = PruneConfig(method=method, sparsity=0.6317, rounds=1, examples_per_class=2)
    a = mask_at_init(model, prune.model_copy(update={"count_rule": "reference"}), 0, data=data)[0].kept
    b = mask_at_init(model, prune, 0, data=data)[0].kept
    assert (a != b) == (rule in ("ceil", "complement_floor"))


def _digits_like():
    from training.data import DataConfig, load_dataset

    return load_dataset(DataConfig(name="digits"))


def test_iterative_rounds_apply_the_rule_at_every_round():
    """FORCE's reference keeps int(d_e * N) in every round e: the final count is the last round's."""
    torch.manual_seed(0)
    model = create_model("mlp", (6,), 3, widths=[8, 5]).double()  # 103 weights
    gen = torch.Generator().manual_seed(0)
    batches = ScoringBatches(torch.randn(9, 6, generator=gen), torch.arange(9) % 3, (6,), 3)
    floor = prune_at_init(model, SCORERS.get("force")(), 0.1, batches, rounds=3, count_rule="floor")
    assert floor.kept == int(0.1 * 103) == 10
    assert prune_at_init(model, SCORERS.get("force")(), 0.1, batches, rounds=3).kept == 10
    ceil = prune_at_init(model, SCORERS.get("prospr")(steps=0), 0.1, batches, rounds=3, count_rule="ceil")
    assert ceil.kept == math.ceil(0.1 * 103) == 11


def test_the_mask_key_holds_the_rule_count_reference_resolves_to():
    from pipelines.config import validate
    from pipelines.trial import trial_graph

    def key(method, rule):
        cfg = validate({"data": {"name": "digits"}, "model": {"name": "mlp"},
                        "prune": {"method": method, "sparsity": 0.5, "count_rule": rule}})
        return trial_graph(cfg).plan.mask

    assert key("force", "reference").settings()["count_rule"] == "floor"
    assert key("force", "reference").key != key("force", "exact").key
    assert key("phew", "reference").key == key("phew", "exact").key  # phew's own rule is round: the same mask
