"""DC and DSA: dataset condensation by gradient matching (Zhao, Mopuri & Bilen, ICLR 2021; Zhao & Bilen,
ICML 2021).

One iteration (``cfg.iterations`` of them; the papers run 1000):

1. draw a fresh randomly initialised network (``cfg.network``, ConvNet-3 for images) from a seed that is a
   pure function of (``cfg.seed``, iteration), in train mode, with its own SGD optimizer (``lr_net``
   0.01, no momentum);
2. repeat ``outer_loop`` times:

   a. if the network has batch norm: forward ``bn_size_pc`` real samples per class in train mode to set
      the running statistics, then put every batch-norm layer in eval mode for the matching (as the
      reference code does; the default instance-norm ConvNet has no running statistics);
   b. per class c: a real batch of ``cfg.batch_real`` samples of c and the class's synthetic samples;
      g_real = dCE/dtheta on the real batch (detached), g_syn = dCE/dtheta on the synthetic samples with
      ``create_graph=True`` (second order: the matching loss is differentiated through g_syn back to the
      pixels); loss += ``match_loss(g_real, g_syn)``;
   c. one SGD step on the synthetic inputs (lr ``cfg.lr_images``, momentum ``cfg.momentum``; the papers
      use 0.1 and 0.5) on the summed loss;
   d. except after the last outer step: train the network for ``inner_loop`` epochs on a frozen copy of
      the synthetic set (batch ``batch_train``), so the next matching happens further along a training
      trajectory.

Gradient distance (``layer_distance``): for every parameter whose gradient has at least two dimensions,
reshape it to (out, -1) and sum over output rows of 1 - cos(row_real, row_syn) (a 1e-6 guard in the
denominator, as the reference code). One-dimensional gradients (biases, norm affine parameters) contribute
nothing, exactly as the reference ``distance_wb`` returns 0 for them.

``dsa`` is the same loop with differentiable Siamese augmentation (``distill.augment``, strategy from
``cfg.augment``): the real and synthetic batch of a class go through the same transform (one seed per
(iteration, outer step, class)), and the inner-loop training batches are augmented too (DSA's ``epoch``
with ``aug=True``). ``dc`` never augments; ``cfg.augment`` is ignored by it.

Loop counts default to the reference code's ``get_loops`` table: ipc 1/10/20/30/40/50 -> outer
1/10/20/30/40/50, inner 1/50/25/20/15/10. Other ipc values take outer = min(ipc, 50) and the inner count
of the next tabulated ipc (e.g. ipc 2..9 -> inner 50). ``options.outer_loop`` / ``options.inner_loop``
override them; the resolved values are what the recipe records.

Every random draw (network, real batches, augmentation, inner-loop order) is a function of
(seed, iteration, ...), so a run resumed from a checkpoint reproduces the uninterrupted run.

``cost.sample_passes`` counts the real samples of the matching step (forward + backward), the synthetic
samples of the matching step (forward, backward with a graph, and the second-order backward), the
inner-loop training samples (forward + backward) and the batch-norm statistics forwards; ``cost`` keeps
the terms apart as well.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Sequence

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field
from torch import nn

from training.data import DataBundle
from training.trainer import resolve_device

from .artifact import DistilledSet, resume_images, save_checkpoint
from .methods import (
    register_distiller,
    DistillConfig,
    Progress,
    build_distilled_set,
    class_indices,
    derive_seed,
    has_batchnorm,
    init_synthetic,
    make_augment,
    network_for,
    parse_options,
    run_identity,
    sample_network,
    sample_real,
)

__all__ = ["DCOptions", "dc_loops", "distill_dc", "layer_distance", "match_loss", "resolve_dc_options"]

# Reference ``get_loops``: ipc -> (outer_loop, inner_loop).
_PAPER_LOOPS: dict[int, tuple[int, int]] = {
    1: (1, 1),
    10: (10, 50),
    20: (20, 25),
    30: (30, 20),
    40: (40, 15),
    50: (50, 10),
}
_EPS = 1e-6


class DCOptions(BaseModel):
    """Method options of ``dc`` / ``dsa`` (``cfg.options``); ``None`` loops follow ``dc_loops(ipc)``."""

    model_config = ConfigDict(extra="forbid")

    outer_loop: int | None = Field(None, ge=1, description="matching steps (image updates) per network")
    inner_loop: int | None = Field(None, ge=0, description="epochs on the synthetic set between matchings")
    lr_net: float = Field(0.01, gt=0, description="SGD lr of the network's inner-loop training")
    batch_train: int = Field(256, ge=1, description="batch size of the inner-loop training")
    bn_size_pc: int = Field(16, ge=1, description="real samples per class that set batch-norm statistics")


def dc_loops(ipc: int) -> tuple[int, int]:
    """(outer_loop, inner_loop) for ``ipc`` images per class (see the module docstring)."""
    if ipc < 1:
        raise ValueError(f"ipc must be >= 1, got {ipc}")
    if ipc in _PAPER_LOOPS:
        return _PAPER_LOOPS[ipc]
    outer = min(ipc, 50)
    larger = [k for k in sorted(_PAPER_LOOPS) if k >= ipc]
    inner = _PAPER_LOOPS[larger[0]][1] if larger else _PAPER_LOOPS[50][1]
    return outer, inner


def resolve_dc_options(opts: DCOptions, ipc: int) -> DCOptions:
    """``opts`` with the loop counts filled in, so the recipe (and hash) names what actually runs."""
    outer, inner = dc_loops(ipc)
    return opts.model_copy(update={
        "outer_loop": opts.outer_loop if opts.outer_loop is not None else outer,
        "inner_loop": opts.inner_loop if opts.inner_loop is not None else inner,
    })


# ------------------------------------------------------------------------------------------ distance
def layer_distance(g_real: torch.Tensor, g_syn: torch.Tensor, eps: float = _EPS) -> torch.Tensor:
    """Sum over output nodes of 1 - cosine similarity between the two gradients of one parameter, each
    reshaped to (out, -1). Zero for gradients with fewer than two dimensions (biases, norm parameters)."""
    if g_real.shape != g_syn.shape:
        raise ValueError(f"gradient shapes differ: {tuple(g_real.shape)} vs {tuple(g_syn.shape)}")
    if g_real.dim() < 2:
        return g_syn.new_zeros(())
    a = g_real.reshape(g_real.shape[0], -1)
    b = g_syn.reshape(g_syn.shape[0], -1)
    cos = (a * b).sum(dim=-1) / (a.norm(dim=-1) * b.norm(dim=-1) + eps)
    return (1.0 - cos).sum()


def match_loss(g_real: Sequence[torch.Tensor], g_syn: Sequence[torch.Tensor]) -> torch.Tensor:
    """DC's gradient-matching distance: ``layer_distance`` summed over the parameters."""
    if len(g_real) != len(g_syn):
        raise ValueError(f"{len(g_real)} real gradients but {len(g_syn)} synthetic ones")
    if not g_real:
        raise ValueError("no gradients to match")
    return torch.stack([layer_distance(r, s) for r, s in zip(g_real, g_syn)]).sum()


# ------------------------------------------------------------------------------------------ helpers
def _set_batchnorm_statistics(net: nn.Module, x: torch.Tensor) -> None:
    """Reference DC: one train-mode forward of real samples updates the running statistics, then every
    batch-norm layer is fixed in eval mode for the matching step."""
    net.train()
    with torch.no_grad():
        net(x)
    for m in net.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.eval()


def _train_on_synthetic(
    net: nn.Module,
    optimizer: torch.optim.Optimizer,
    x: torch.Tensor,
    y: torch.Tensor,
    epochs: int,
    batch_size: int,
    augment,
    seed_parts: tuple,
) -> int:
    """Inner loop: ``epochs`` epochs of SGD on a frozen copy of the synthetic set. Returns samples passed."""
    net.train()
    passes = 0
    for epoch in range(epochs):
        gen = torch.Generator().manual_seed(derive_seed(*seed_parts, "order", epoch))
        order = torch.randperm(len(x), generator=gen).to(x.device)
        for b, idx in enumerate(order.split(batch_size)):
            xb, yb = x[idx], y[idx]
            if augment is not None:
                xb = augment(xb, derive_seed(*seed_parts, "aug", epoch, b))
            optimizer.zero_grad(set_to_none=True)
            F.cross_entropy(net(xb), yb).backward()
            optimizer.step()
            passes += len(idx)
    return passes


def _resume(ckpt: Path | None, rhash: str, syn: torch.Tensor,
            optimizer: torch.optim.Optimizer) -> tuple[int, dict[str, int], float]:
    """(first iteration, pass counts, wall time so far): from the run's checkpoint when there is one."""
    state = resume_images(ckpt, rhash, syn, optimizer)
    if state is None:
        return 0, {"real": 0, "bn": 0, "syn": 0, "inner": 0}, 0.0
    return int(state["iteration"]), {k: int(v) for k, v in state["counts"].items()}, float(state["wall_time_s"])


def _gradient_match(net: nn.Module, params: list[torch.Tensor], syn: torch.Tensor, y: torch.Tensor,
                    pools: list[torch.Tensor], x_real: torch.Tensor, cfg: DistillConfig, augment,
                    gen: torch.Generator, at: tuple[int, int], counts: dict[str, int]) -> torch.Tensor:
    """The summed per-class distance between the network's gradients on real and synthetic examples,
    differentiable in the synthetic pixels. With DSA both sides of a class see the same augmentation."""
    ipc, device = cfg.ipc, syn.device
    loss = syn.new_zeros(())
    for c, pool in enumerate(pools):
        if len(pool) == 0:
            continue  # nothing real to match (possible only with init 'noise')
        x_r = x_real[sample_real(pool, cfg.batch_real, gen)].to(device)
        x_s = syn[c * ipc: (c + 1) * ipc]
        if augment is not None:
            seed = derive_seed(cfg.seed, "dc-aug", *at, c)
            x_r, x_s = augment(x_r, seed), augment(x_s, seed)
        y_r = torch.full((len(x_r),), c, dtype=torch.long, device=device)
        g_real = [g.detach() for g in torch.autograd.grad(F.cross_entropy(net(x_r), y_r), params)]
        g_syn = torch.autograd.grad(F.cross_entropy(net(x_s), y[c * ipc: (c + 1) * ipc]), params, create_graph=True)
        loss = loss + match_loss(g_real, g_syn)
        counts["real"] += len(x_r)
        counts["syn"] += len(x_s)
    return loss


# ------------------------------------------------------------------------------------------ method
@register_distiller("dsa")
@register_distiller("dc")
def distill_dc(
    real: DataBundle,
    cfg: DistillConfig,
    progress: Progress | None = None,
    checkpoint_dir: Path | None = None,
) -> DistilledSet:
    if cfg.method not in ("dc", "dsa"):
        raise ValueError(f"distill_dc runs methods 'dc' and 'dsa', not {cfg.method!r}")
    t0 = time.perf_counter()
    opts = resolve_dc_options(parse_options(DCOptions, cfg), cfg.ipc)
    outer_loop, inner_loop = int(opts.outer_loop), int(opts.inner_loop)
    device = resolve_device(cfg.device)
    run = run_identity(cfg, real, checkpoint_dir, options=opts.model_dump(mode="json"))
    recipe, source, rhash, ckpt = run.recipe, run.source, run.hash, run.checkpoint

    x0, y = init_synthetic(real, cfg, torch.Generator().manual_seed(derive_seed(cfg.seed, "dc-init")))
    syn = x0.to(device).requires_grad_(True)
    y = y.to(device)
    optimizer = torch.optim.SGD([syn], lr=cfg.lr_images, momentum=cfg.momentum)
    start, counts, wall_before = _resume(ckpt, rhash, syn, optimizer)

    pools = class_indices(real)
    x_real = real.train.x
    net_cfg = network_for(cfg, real)
    augment = make_augment(cfg, tuple(real.input_shape)) if cfg.method == "dsa" else None
    num_classes = real.num_classes

    def save(iteration: int) -> None:
        save_checkpoint(ckpt, rhash, {
            "iteration": iteration,
            "x": syn.detach().cpu().clone(),
            "optimizer": optimizer.state_dict(),
            "counts": dict(counts),
            "wall_time_s": wall_before + time.perf_counter() - t0,
        })

    for it in range(start, cfg.iterations):
        net = sample_network(net_cfg, real, derive_seed(cfg.seed, "dc-net", it), device)
        net.train()
        params = [p for p in net.parameters() if p.requires_grad]
        net_optimizer = torch.optim.SGD(params, lr=opts.lr_net)
        has_bn = has_batchnorm(net)
        loss_total = 0.0
        for ol in range(outer_loop):
            gen = torch.Generator().manual_seed(derive_seed(cfg.seed, "dc-batch", it, ol))
            if has_bn:
                bn_x = torch.cat([x_real[sample_real(pool, opts.bn_size_pc, gen)] for pool in pools]).to(device)
                _set_batchnorm_statistics(net, bn_x)
                counts["bn"] += len(bn_x)
            loss = _gradient_match(net, params, syn, y, pools, x_real, cfg, augment, gen, (it, ol), counts)
            optimizer.zero_grad(set_to_none=True)
            if loss.requires_grad:
                loss.backward(inputs=[syn])  # pixels only: the network's .grad stays untouched
                optimizer.step()
            loss_total += float(loss.detach())
            if ol == outer_loop - 1:
                break
            counts["inner"] += _train_on_synthetic(
                net, net_optimizer, syn.detach().clone(), y, inner_loop, opts.batch_train, augment,
                (cfg.seed, "dc-inner", it, ol),
            )
        if not torch.isfinite(syn.detach()).all():
            raise FloatingPointError(f"{cfg.method}: synthetic inputs became non-finite at iteration {it}; "
                                     "lower lr_images")
        done = it + 1
        if progress is not None and (done % cfg.progress_every == 0 or done == cfg.iterations):
            progress(done, {
                "loss": loss_total / outer_loop,
                "loss_per_class_mean": loss_total / (outer_loop * num_classes),
            })
        if ckpt is not None and cfg.checkpoint_every and done % cfg.checkpoint_every == 0 and done < cfg.iterations:
            save(done)

    if ckpt is not None and cfg.iterations > start:
        save(cfg.iterations)  # a finished run asked for again is then free
    cost = {
        "wall_time_s": wall_before + time.perf_counter() - t0,
        "sample_passes": sum(counts.values()),
        "real_forward_backward": counts["real"],
        "real_bn_forward": counts["bn"],
        "synthetic_match_second_order": counts["syn"],
        "synthetic_inner_train": counts["inner"],
    }
    return build_distilled_set(real, syn, y, recipe, source, cost)
