"""Post-training pruning of a trained dense network from a small calibration set: Wanda and SparseGPT.

Both prune one layer at a time, in module order, each from the inputs that layer sees on the
calibration examples *after* the layers before it were pruned (the papers' sequential scheme). A layer
is a 2-D matrix W (out x in): a Linear's weight, or a convolution's weight flattened to
(out, in * kernel), whose inputs are the unfolded patches (every output position is a token).

* **Wanda** (Sun et al. 2024, "A Simple and Effective Pruning Approach for Large Language Models"):
  score S_ij = |W_ij| * ||X_j||_2 (the input feature's norm over all calibration tokens); each output
  row keeps its highest scores (per-output comparison groups; ``group: layer`` compares across the
  layer, the paper's ablation), or N of every M consecutive inputs.
  The surviving weights are not changed.
* **SparseGPT** (Frantar & Alistarh 2023, "SparseGPT: Massive Language Models Can Be Accurately Pruned
  in One-Shot"): with H = 2 X X^T / n (+ lambda I, lambda = damp * mean diag H), columns are visited
  left to right in blocks; a pruned weight's error (w_q / [H^-1]_qq, through the upper Cholesky factor
  U of H^-1) is spread over the columns not visited yet (the OBS update restricted to them), so the
  surviving weights change to keep W X close to the dense layer's output. Within a block, the weights
  to prune are the lowest w^2 / U_jj^2 over the whole block, all rows together (the paper's adaptive
  mask selection, as IST-DASLab/sparsegpt does; ``selection: row`` gives each row an equal share
  instead); for N:M they are chosen every M columns from the weights as updated so far.

Counts are exact: every layer keeps the same density (``exact_uniform_counts``: the total is exactly
the target). Wanda spreads it over its rows (they differ by at most one); SparseGPT over its column
blocks (each block prunes its column share of the layer's count; the reference prunes
int(block size * sparsity) + 1 per block, the entries at or below the threshold).
"""
from __future__ import annotations

import math
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from .config import PostTrainConfig
from .allocation import exact_uniform_counts
from .mask import Mask, prunable_parameters

METHODS = ("wanda", "sparsegpt")


# ------------------------------------------------------------------------------------------ layers
def _module_of(model: nn.Module, weight_name: str) -> nn.Module:
    return model.get_submodule(weight_name.rsplit(".", 1)[0]) if "." in weight_name else model


def as_matrix(module: nn.Module) -> torch.Tensor:
    """The layer's weight as (out, in * kernel), a view sharing storage."""
    return module.weight.data.reshape(module.weight.shape[0], -1)


def layer_tokens(module: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The layer's input as tokens x features (n * positions, in * kernel), matching ``as_matrix``."""
    if isinstance(module, nn.Linear):
        return x.reshape(-1, x.shape[-1])
    if isinstance(module, (nn.Conv1d, nn.Conv2d)):
        if module.groups != 1 or module.padding_mode != "zeros" or isinstance(module.padding, str):
            raise ValueError(f"post-training pruning supports plain convolutions (groups=1, zero padding given "
                             f"as numbers); {module} is not one")
        if isinstance(module, nn.Conv1d):
            x = x.unsqueeze(2)
            k, d, p, s = (1, module.kernel_size[0]), (1, module.dilation[0]), (0, module.padding[0]), (1, module.stride[0])
        else:
            k, d, p, s = module.kernel_size, module.dilation, module.padding, module.stride
        cols = F.unfold(x, k, dilation=d, padding=p, stride=s)  # (n, in * kernel, positions)
        return cols.transpose(1, 2).reshape(-1, cols.shape[1])
    raise ValueError(f"post-training pruning has no input unfolding for {type(module).__name__}")


def _capture_inputs(model: nn.Module, module: nn.Module, x: torch.Tensor, batch: int) -> torch.Tensor:
    """Tokens the layer sees on the calibration examples, in the model as it is now."""
    seen: list[torch.Tensor] = []

    def hook(mod, args):
        seen.append(layer_tokens(mod, args[0].detach()))

    handle = module.register_forward_pre_hook(hook)
    try:
        with torch.no_grad():
            for i in range(0, len(x), batch):
                model(x[i:i + batch])
    finally:
        handle.remove()
    if not seen:
        raise RuntimeError(f"{module} did not run on the calibration examples")
    return torch.cat(seen)


# ------------------------------------------------------------------------------------------ quotas
def row_quotas(rows: int, cols: int, kept: int) -> torch.Tensor:
    """Weights each row prunes so that the layer keeps exactly ``kept``."""
    prune = rows * cols - kept
    base, extra = divmod(prune, rows)
    return torch.tensor([base + (r < extra) for r in range(rows)])


def prune_lowest_per_row(scores: torch.Tensor, quota: torch.Tensor) -> torch.Tensor:
    """Pruned (True) = the ``quota[r]`` lowest scores of each row r (ties: the lower column index first)."""
    order = torch.argsort(scores, dim=1, stable=True)
    ranks = torch.empty_like(order)
    ranks.scatter_(1, order, torch.arange(scores.shape[1], device=scores.device).expand_as(order))
    return ranks < quota.to(scores.device).unsqueeze(1)


def prune_nm(scores: torch.Tensor, n: int, m: int) -> torch.Tensor:
    """Pruned (True) = in every row and every group of m consecutive columns, all but the n highest."""
    rows, cols = scores.shape
    if cols % m:
        raise ValueError(f"N:M {n}:{m} needs a layer input size divisible by {m}, got {cols}")
    grouped = scores.reshape(rows, cols // m, m)
    low = torch.topk(grouped, m - n, dim=2, largest=False).indices
    pruned = torch.zeros_like(grouped, dtype=torch.bool).scatter_(2, low, True)
    return pruned.reshape(rows, cols)


# ------------------------------------------------------------------------------------------ Wanda
def wanda_scores(w: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    """|W_ij| * ||X_j||_2 over the calibration tokens."""
    return w.abs() * tokens.to(w.dtype).norm(dim=0).unsqueeze(0)


def wanda_layer(w: torch.Tensor, tokens: torch.Tensor, kept: int, cfg: PostTrainConfig) -> torch.Tensor:
    """The layer's kept mask (True = kept); the weights are not changed."""
    scores = wanda_scores(w, tokens)
    if cfg.structure == "nm":
        return ~prune_nm(scores, cfg.n, cfg.m)
    if cfg.group == "layer":
        flat = scores.reshape(1, -1)
        return ~prune_lowest_per_row(flat, torch.tensor([w.numel() - kept])).reshape(w.shape)
    return ~prune_lowest_per_row(scores, row_quotas(*w.shape, kept))


# ------------------------------------------------------------------------------------------ SparseGPT
def hessian(tokens: torch.Tensor) -> torch.Tensor:
    x = tokens.to(torch.float64)
    return 2.0 * x.T @ x / len(x)


def sparsegpt_layer(w: torch.Tensor, h: torch.Tensor, kept: int | None, cfg: PostTrainConfig,
                    forced: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(updated weights, kept mask) of one layer. ``forced``: a pruned-mask to use instead of selecting
    one (for tests against the closed-form OBS update)."""
    rows, cols = w.shape
    W = w.detach().to(torch.float64).clone()
    H = h.to(torch.float64).clone()
    dead = torch.diag(H) == 0  # an input that is always 0: its weights do nothing
    H[dead, dead] = 1.0
    W[:, dead] = 0.0
    H += cfg.damp * torch.mean(torch.diag(H)) * torch.eye(cols, dtype=H.dtype, device=H.device)
    U = torch.linalg.cholesky(torch.cholesky_inverse(torch.linalg.cholesky(H)), upper=True)
    pruned = torch.zeros_like(W, dtype=torch.bool)
    unstructured = cfg.structure == "unstructured" and forced is None
    quota = row_quotas(rows, cols, kept) if unstructured and cfg.selection == "row" else None
    total = rows * cols - kept if unstructured else 0  # weights the layer prunes
    block = cfg.blocksize - cfg.blocksize % cfg.m if cfg.structure == "nm" else cfg.blocksize
    for i1 in range(0, cols, block):
        i2 = min(i1 + block, cols)
        W1, U1 = W[:, i1:i2].clone(), U[i1:i2, i1:i2]
        Q1, E1 = torch.zeros_like(W1), torch.zeros_like(W1)
        if forced is not None:
            p1 = forced[:, i1:i2].to(W.device)
        elif quota is not None:  # this block's share of each row's quota, exactly
            share = (quota * i2) // cols - (quota * i1) // cols
            p1 = prune_lowest_per_row(W1 ** 2 / torch.diag(U1).unsqueeze(0) ** 2, share)
        elif unstructured:  # the block's share of the layer's count, lowest over all its rows together
            share = (total * i2) // cols - (total * i1) // cols
            p1 = prune_lowest_per_row((W1 ** 2 / torch.diag(U1).unsqueeze(0) ** 2).reshape(1, -1),
                                      torch.tensor([share])).reshape(W1.shape)
        else:
            p1 = torch.zeros_like(W1, dtype=torch.bool)
        for i in range(i2 - i1):
            if forced is None and not unstructured and i % cfg.m == 0:  # N:M, from the weights as updated so far
                group = W1[:, i:i + cfg.m] ** 2 / torch.diag(U1)[i:i + cfg.m].unsqueeze(0) ** 2
                p1[:, i:i + cfg.m] = prune_nm(group, cfg.n, cfg.m)
            col = W1[:, i]
            q = torch.where(p1[:, i], torch.zeros_like(col), col)
            err = (col - q) / U1[i, i]
            W1[:, i:] -= err.unsqueeze(1) * U1[i, i:].unsqueeze(0)
            Q1[:, i], E1[:, i] = q, err
        W[:, i1:i2] = Q1
        W[:, i2:] -= E1 @ U[i1:i2, i2:]
        pruned[:, i1:i2] = p1
    W[pruned] = 0.0
    return W.to(w.dtype), ~pruned


# ------------------------------------------------------------------------------------------ a model
def prune_post_training(model: nn.Module, method: str, density: float, cfg: PostTrainConfig,
                        calibration: torch.Tensor, ignore=(), log: Callable[[str], None] = lambda m: None,
                        batch: int = 256) -> Mask:
    """Prune ``model`` in place, layer by layer; returns its mask. The model should be in eval mode."""
    if method not in METHODS:
        raise ValueError(f"unknown post-training method {method!r}; allowed: {', '.join(METHODS)}")
    if cfg.structure == "nm" and not math.isclose(density, cfg.n / cfg.m):
        raise ValueError(f"N:M {cfg.n}:{cfg.m} keeps density {cfg.n / cfg.m:g}, not {density:g}")
    params = prunable_parameters(model, ignore)
    counts = exact_uniform_counts(density, {n: p.shape for n, p in params.items()})
    masks: dict[str, torch.Tensor] = {}
    for name, weight in params.items():
        module = _module_of(model, name)
        tokens = _capture_inputs(model, module, calibration, batch)
        w = as_matrix(module)
        if method == "wanda":
            kept = wanda_layer(w, tokens, counts[name], cfg)
            new = w * kept
        else:
            new, kept = sparsegpt_layer(w, hessian(tokens), counts[name], cfg)
        with torch.no_grad():
            w.copy_(new)
        masks[name] = kept.reshape(weight.shape)
        log(f"{method}: {name} keeps {int(kept.sum())}/{kept.numel()} ({len(tokens)} calibration tokens)")
    return Mask(masks)
