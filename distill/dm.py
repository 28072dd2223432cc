"""DM: dataset condensation with distribution matching (Zhao & Bilen, WACV 2023).

Per iteration:

1. draw a fresh randomly initialised network (``cfg.network``; ConvNet-3 for images) from a seed that is a
   pure function of (``cfg.seed``, iteration). It is never trained and is frozen (``requires_grad_(False)``).
   It runs in **train mode**, as DM's reference code does: with the default instance norm (GroupNorm with
   one channel per group) there are no running statistics, so train and eval mode compute the same thing;
   a batch-norm network would normalise with batch statistics, and its forwards are then run per class;
2. per class c: a real batch of ``batch_real`` samples of c and the class's synthetic samples go through
   the **same** DSA augmentation (one seed per (iteration, class), Siamese), then through ``net.embed``;
   loss_c = ||mean(embed(real)) - mean(embed(syn))||^2, the real side without a graph;
3. one SGD step on the synthetic inputs (lr ``cfg.lr_images`` = 1, momentum 0.5) on sum_c loss_c.

Synthetic inputs start from random real samples of each class (``init: real``) or N(0, 1) noise, in the
data's normalised space. Because every random draw is a function of (seed, iteration, class), a run
resumed from a checkpoint reproduces the uninterrupted run exactly.

``cost.sample_passes`` counts per iteration the real samples forwarded (no backward) plus the synthetic
samples forwarded and back-propagated; ``cost`` also keeps the two terms apart.

Options (``cfg.options``): ``batched`` (default True) sends all classes through the network in one forward
when it has no batch norm (same result as per-class forwards, fewer kernel launches).
"""
from __future__ import annotations

import time
from pathlib import Path

import torch
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

__all__ = ["DMOptions", "dm_loss", "distill_dm"]


class DMOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    batched: bool = Field(True,
        description="all classes through the network in one forward (same result without BatchNorm; faster)")


def dm_loss(
    net: nn.Module,
    real_per_class: list[torch.Tensor],
    syn_per_class: list[torch.Tensor],
    augment,
    seeds: list[int],
    batched: bool = True,
) -> tuple[torch.Tensor, list[float]]:
    """Sum over classes of the squared distance between mean embeddings of augmented real and synthetic
    samples (same augmentation seed per class). Returns (loss with a graph to the synthetic side,
    per-class losses as floats)."""
    real_aug = [augment(r, s) for r, s in zip(real_per_class, seeds)]
    syn_aug = [augment(x, s) for x, s in zip(syn_per_class, seeds)]
    if batched and not has_batchnorm(net):
        with torch.no_grad():
            real_emb = net.embed(torch.cat(real_aug)).split([len(r) for r in real_aug])
        syn_emb = net.embed(torch.cat(syn_aug)).split([len(x) for x in syn_aug])
    else:
        with torch.no_grad():
            real_emb = [net.embed(r) for r in real_aug]
        syn_emb = [net.embed(x) for x in syn_aug]
    per_class = [(r.mean(0) - x.mean(0)).pow(2).sum() for r, x in zip(real_emb, syn_emb)]
    loss = torch.stack(per_class).sum()
    return loss, [float(v.detach()) for v in per_class]


def _iteration_batches(real: DataBundle, cfg: DistillConfig, pools: list[torch.Tensor], syn: torch.Tensor,
                       it: int) -> tuple[list[torch.Tensor], list[torch.Tensor], list[int]]:
    """Iteration ``it``'s real batch per class (seeded by the iteration, so a resume redraws them), the
    synthetic examples of each class, and each class's augmentation seed (shared by real and synthetic)."""
    gen = torch.Generator().manual_seed(derive_seed(cfg.seed, "dm-batch", it))
    real_batches = [real.train.x[sample_real(pool, cfg.batch_real, gen)].to(syn.device) for pool in pools]
    syn_batches = [syn[c * cfg.ipc: (c + 1) * cfg.ipc] for c in range(real.num_classes)]
    seeds = [derive_seed(cfg.seed, "dm-aug", it, c) for c in range(real.num_classes)]
    return real_batches, syn_batches, seeds


@register_distiller("dm")
def distill_dm(
    real: DataBundle,
    cfg: DistillConfig,
    progress: Progress | None = None,
    checkpoint_dir: Path | None = None,
) -> DistilledSet:
    t0 = time.perf_counter()
    opts = parse_options(DMOptions, cfg)
    device = resolve_device(cfg.device)
    run = run_identity(cfg, real, checkpoint_dir, options=opts.model_dump(mode="json"))
    recipe, source, rhash, ckpt = run.recipe, run.source, run.hash, run.checkpoint

    x0, y = init_synthetic(real, cfg, torch.Generator().manual_seed(derive_seed(cfg.seed, "dm-init")))
    syn = x0.to(device).requires_grad_(True)
    optimizer = torch.optim.SGD([syn], lr=cfg.lr_images, momentum=cfg.momentum)
    start, real_passes, syn_passes, wall_before = 0, 0, 0, 0.0
    state = resume_images(ckpt, rhash, syn, optimizer)
    if state is not None:
        start = int(state["iteration"])
        real_passes, syn_passes = int(state["real_passes"]), int(state["syn_passes"])
        wall_before = float(state["wall_time_s"])

    pools = class_indices(real)
    net_cfg = network_for(cfg, real)
    augment = make_augment(cfg, tuple(real.input_shape))

    def save(iteration: int) -> None:
        save_checkpoint(ckpt, rhash, {
            "iteration": iteration,
            "x": syn.detach().cpu().clone(),
            "optimizer": optimizer.state_dict(),
            "real_passes": real_passes,
            "syn_passes": syn_passes,
            "wall_time_s": wall_before + time.perf_counter() - t0,
        })

    for it in range(start, cfg.iterations):
        net = sample_network(net_cfg, real, derive_seed(cfg.seed, "dm-net", it), device)
        net.requires_grad_(False)
        net.train()
        real_batches, syn_batches, seeds = _iteration_batches(real, cfg, pools, syn, it)
        loss, per_class = dm_loss(net, real_batches, syn_batches, augment, seeds, batched=opts.batched)
        if not torch.isfinite(loss):
            raise FloatingPointError(f"DM loss is {float(loss.detach())} at iteration {it}; lower lr_images")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        real_passes += sum(len(b) for b in real_batches)
        syn_passes += len(syn)
        done = it + 1
        if progress is not None and (done % cfg.progress_every == 0 or done == cfg.iterations):
            progress(done, {"loss": float(loss.detach()), "loss_per_class_mean": sum(per_class) / len(per_class)})
        if ckpt is not None and cfg.checkpoint_every and done % cfg.checkpoint_every == 0 and done < cfg.iterations:
            save(done)

    if ckpt is not None and cfg.iterations > start:
        save(cfg.iterations)  # a finished run re-asked for is then free
    cost = {
        "wall_time_s": wall_before + time.perf_counter() - t0,
        "sample_passes": real_passes + syn_passes,
        "real_forward": real_passes,
        "synthetic_forward_backward": syn_passes,
    }
    return build_distilled_set(real, syn, y, recipe, source, cost)
