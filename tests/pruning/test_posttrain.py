"""Wanda and SparseGPT against independent computations on tiny layers, and through a trial."""
import pytest
import torch
from torch import nn

from pruning.config import PostTrainConfig
from pruning.posttrain import (
    as_matrix, hessian, layer_tokens, prune_lowest_per_row, prune_post_training, row_quotas, sparsegpt_layer,
    wanda_layer, wanda_scores,
)

F64 = torch.float64


def test_wanda_score_is_weight_magnitude_times_input_feature_norm_by_hand():
    torch.manual_seed(0)
    w, x = torch.randn(3, 4, dtype=F64), torch.randn(7, 4, dtype=F64)
    by_hand = torch.empty(3, 4, dtype=F64)
    for i in range(3):
        for j in range(4):
            by_hand[i, j] = abs(w[i, j]) * sum(float(x[t, j]) ** 2 for t in range(7)) ** 0.5
    torch.testing.assert_close(wanda_scores(w, x), by_hand)
    kept = wanda_layer(w, x, 6, PostTrainConfig())  # 12 weights, keep 6: each row keeps its 2 best
    assert kept.sum(1).tolist() == [2, 2, 2]
    for i in range(3):
        assert set(torch.nonzero(kept[i]).flatten().tolist()) == set(by_hand[i].topk(2).indices.tolist())


def test_nm_keeps_n_of_every_m_consecutive_inputs_of_each_row():
    torch.manual_seed(1)
    w, x = torch.randn(4, 8, dtype=F64), torch.randn(20, 8, dtype=F64)
    for cfg in (PostTrainConfig(structure="nm", n=2, m=4), PostTrainConfig(structure="nm", n=1, m=4)):
        kept = wanda_layer(w, x, 0, cfg)
        assert (kept.reshape(4, 2, 4).sum(-1) == cfg.n).all()
        _, kept = sparsegpt_layer(w, hessian(x), None, cfg)
        assert (kept.reshape(4, 2, 4).sum(-1) == cfg.n).all()


def test_sparsegpt_pruning_one_column_is_the_closed_form_obs_update():
    """Pruning w_q (q = the first column, so every other weight may move): w <- w - w_q / [H^-1]_qq H^-1[q, :]."""
    torch.manual_seed(2)
    w, x = torch.randn(2, 5, dtype=F64), torch.randn(40, 5, dtype=F64)
    cfg = PostTrainConfig(damp=0.01)
    forced = torch.zeros(2, 5, dtype=torch.bool)
    forced[:, 0] = True
    new, kept = sparsegpt_layer(w, hessian(x), None, cfg, forced=forced)
    h = hessian(x)
    h = h + 0.01 * torch.diag(h).mean() * torch.eye(5, dtype=F64)
    hinv = torch.linalg.inv(h)
    expected = w - (w[:, :1] / hinv[0, 0]) * hinv[0].unsqueeze(0)
    torch.testing.assert_close(new, expected)
    assert (new[:, 0] == 0).all() and not kept[:, 0].any() and kept[:, 1:].all()


@pytest.mark.parametrize("cols, block", [(16, 128), (16, 4)])
def test_sparsegpt_reconstructs_no_worse_than_magnitude_at_the_same_sparsity(cols, block):
    torch.manual_seed(3)
    w = torch.randn(8, cols, dtype=F64)
    x = torch.randn(200, cols, dtype=F64) @ torch.randn(cols, cols, dtype=F64)  # correlated inputs
    kept_n = w.numel() // 2
    new, kept = sparsegpt_layer(w, hessian(x), kept_n, PostTrainConfig(blocksize=block))
    assert int(kept.sum()) == kept_n and (new[~kept] == 0).all()
    magnitude = w * ~prune_lowest_per_row(w.abs(), row_quotas(8, cols, kept_n))
    err = lambda v: float(((w - v) @ x.T).pow(2).sum())  # noqa: E731
    assert err(new) < err(magnitude)
    wanda = w * wanda_layer(w, x, kept_n, PostTrainConfig())
    assert err(wanda) <= err(magnitude) * 1.5  # Wanda only re-ranks: no reconstruction, no worse by much


@pytest.mark.parametrize("conv", [nn.Conv2d(3, 4, 3, padding=1, stride=2), nn.Conv1d(2, 5, 5, padding=2)])
def test_a_convolution_is_its_matrix_times_the_unfolded_patches(conv):
    torch.manual_seed(4)
    x = torch.randn(2, conv.in_channels, *((9, 9) if isinstance(conv, nn.Conv2d) else (11,)))
    out = conv(x)
    tokens = layer_tokens(conv, x)
    flat = (tokens @ as_matrix(conv).T + conv.bias).reshape(2, -1, conv.out_channels).transpose(1, 2)
    torch.testing.assert_close(flat.reshape(out.shape), out, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("method", ["wanda", "sparsegpt"])
def test_a_model_is_pruned_in_place_with_exact_sparsity(method):
    torch.manual_seed(5)
    model = nn.Sequential(nn.Conv1d(1, 4, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 10, 3)).eval()
    calib = torch.randn(16, 1, 10)
    mask = prune_post_training(model, method, 0.3, PostTrainConfig(), calib)
    total = sum(m.numel() for m in mask.values())
    assert sum(int(m.sum()) for m in mask.values()) == round(0.3 * total)
    for name, m in mask.items():
        assert (dict(model.named_parameters())[name][~m] == 0).all()


def test_wanda_per_layer_group_keeps_the_layers_best_scores():
    torch.manual_seed(6)
    w, x = torch.randn(3, 4, dtype=F64), torch.randn(7, 4, dtype=F64) * torch.tensor([1, 1000, 1, 1], dtype=F64)
    kept = wanda_layer(w, x, 5, PostTrainConfig(group="layer"))
    assert set(torch.nonzero(kept.flatten()).flatten().tolist()) == set(wanda_scores(w, x).flatten().topk(5).indices.tolist())
    assert kept[:, 1].all()  # the loud input's weights survive wherever they are
