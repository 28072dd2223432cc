"""Real-sample coresets: the controls (and cheap fallback) for distillation, as in DC-BENCH.

Every coreset returns ``ipc`` *real* training samples per class, class-sorted, unchanged:

* ``random``: a seeded random subset per class (``cfg.seed``).
* ``herding``: per class, greedy herding (Welling 2009, as iCaRL uses it): step k adds the sample that
  brings the mean of the k chosen features closest to the class mean.
* ``kmeans``: per class k-means with ``ipc`` clusters (``sklearn.cluster.KMeans``, ``random_state=cfg.seed``),
  then the real sample nearest each centroid (each sample used once).

Features for herding/k-means (``options.features``): ``"embedding"`` (default) is the penultimate
``embed`` of one randomly initialised, frozen ``cfg.network`` drawn from ``cfg.seed`` (train mode, the same
kind of feature map DM matches); ``"raw"`` is the flattened normalised input. ``cost.sample_passes``
counts the real samples sent through that network (forward only); raw features and random cost 0.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Literal

import torch
from pydantic import BaseModel, ConfigDict, Field

from training.data import DataBundle
from training.trainer import resolve_device

from .artifact import DistilledSet
from .methods import (
    register_distiller,
    DistillConfig,
    Progress,
    build_distilled_set,
    class_indices,
    derive_seed,
    network_for,
    parse_options,
    recipe_for,
    sample_network,
    sample_real,
    source_for,
)

__all__ = ["CoresetOptions", "herding_select", "kmeans_select"]


class CoresetOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    features: Literal["embedding", "raw"] = Field("embedding",
        description="herding/k-means on the network's penultimate embedding or on raw inputs")
    kmeans_n_init: int = Field(3, ge=1, description="k-means restarts (scikit-learn n_init)")
    embed_batch: int = Field(512, ge=1, description="batch size while embedding (no effect on results)")


def herding_select(features: torch.Tensor, k: int) -> torch.Tensor:
    """Indices (into ``features``) of ``k`` distinct rows chosen by greedy herding on the mean."""
    f = features.double()
    mu = f.mean(0)
    chosen: list[int] = []
    total = torch.zeros_like(mu)
    available = torch.ones(len(f), dtype=torch.bool)
    for step in range(1, min(k, len(f)) + 1):
        candidate_means = (total.unsqueeze(0) + f) / step
        dist = (candidate_means - mu).pow(2).sum(1)
        dist[~available] = float("inf")
        i = int(torch.argmin(dist))
        chosen.append(i)
        available[i] = False
        total += f[i]
    return torch.tensor(chosen, dtype=torch.long)


def kmeans_select(features: torch.Tensor, k: int, seed: int, n_init: int = 3) -> torch.Tensor:
    """Indices of the real rows nearest each of ``k`` k-means centroids; a row is never chosen twice."""
    from sklearn.cluster import KMeans

    f = features.double()
    k = min(k, len(f))
    km = KMeans(n_clusters=k, n_init=n_init, random_state=seed % (2**32)).fit(f.numpy())
    centres = torch.from_numpy(km.cluster_centers_)
    dist = torch.cdist(centres, f)  # (k, n)
    chosen: list[int] = []
    for c in range(k):
        order = torch.argsort(dist[c])
        i = next(int(j) for j in order if int(j) not in chosen)
        chosen.append(i)
    return torch.tensor(chosen, dtype=torch.long)


def _features(real: DataBundle, cfg: DistillConfig, opts: CoresetOptions) -> tuple[torch.Tensor, int]:
    x = real.train.x
    if opts.features == "raw":
        return x.flatten(1), 0
    device = resolve_device(cfg.device)
    net = sample_network(network_for(cfg, real), real, derive_seed(cfg.seed, "coreset-net"), device)
    net.requires_grad_(False)
    net.train()  # instance norm has no running stats; batch norm would use batch statistics (as in DM)
    out = []
    with torch.no_grad():
        for i in range(0, len(x), opts.embed_batch):
            out.append(net.embed(x[i: i + opts.embed_batch].to(device)).float().cpu())
    return torch.cat(out), len(x)


def _coreset(real: DataBundle, cfg: DistillConfig, progress: Progress | None) -> DistilledSet:
    t0 = time.perf_counter()
    opts = parse_options(CoresetOptions, cfg)
    pools = class_indices(real)
    for c, pool in enumerate(pools):
        if len(pool) < cfg.ipc:
            raise ValueError(f"class {c} has {len(pool)} training samples, fewer than ipc={cfg.ipc}")
    passes = 0
    chosen: list[torch.Tensor] = []
    if cfg.method == "random":
        gen = torch.Generator().manual_seed(derive_seed(cfg.seed, "random-coreset"))
        chosen = [sample_real(pool, cfg.ipc, gen) for pool in pools]
    else:
        feats, passes = _features(real, cfg, opts)
        for c, pool in enumerate(pools):
            f = feats[pool]
            if cfg.method == "herding":
                local = herding_select(f, cfg.ipc)
            else:
                local = kmeans_select(f, cfg.ipc, derive_seed(cfg.seed, "kmeans", c), opts.kmeans_n_init)
            chosen.append(pool[local])
            if progress is not None:
                progress(c + 1, {"class": c})
    index = torch.cat(chosen)
    extra = {"options": opts.model_dump(mode="json")} if cfg.method != "random" else {}
    recipe = recipe_for(cfg, real, **extra)
    # Only what shapes a coreset belongs in its identity: no optimisation settings.
    for key in ("iterations", "lr_images", "momentum", "batch_real", "init", "augment", "augment_mode"):
        recipe.pop(key, None)
    if cfg.method == "random" or opts.features == "raw":
        recipe.pop("network", None)
    recipe["indices"] = index.tolist()
    cost = {"wall_time_s": time.perf_counter() - t0, "sample_passes": passes}
    return build_distilled_set(real, real.train.x[index], real.train.y[index], recipe, source_for(real), cost)


def _register(name: str) -> None:
    @register_distiller(name)
    def run(real: DataBundle, cfg: DistillConfig, progress: Progress | None = None,
            checkpoint_dir: Path | None = None) -> DistilledSet:
        return _coreset(real, cfg, progress)


CORESETS = ("random", "herding", "kmeans")  # they select real samples: ipc per class must exist
for _name in CORESETS:
    _register(_name)
del _name
