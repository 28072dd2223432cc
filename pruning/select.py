"""Turn scores into a mask that keeps exactly round(d*N) weights (or the count a method's reference code
keeps: ``pruning.counts``).

``topk`` on float64 scores with already-pruned entries at -inf, never ``score > kthvalue``: ties at
the threshold would overshoot the target (Synaptic-Flow issue #12), and pruned weights must not be
revived by an iterative scorer.
"""
from __future__ import annotations

from typing import Literal, Mapping, Sequence

import torch

from .channel_groups import ChannelGroup
from .counts import COUNT_RULES, kept_count  # noqa: F401 (re-exported)
from .mask import Mask
from .structure import HeadGroup

Scope = Literal["global", "layerwise"]


def _masked_scores(scores: Mapping[str, torch.Tensor], current: Mask | None) -> dict[str, torch.Tensor]:
    out = {}
    for name, s in scores.items():
        s = s.detach().to(torch.float64).flatten().clone()
        if torch.isnan(s).any():
            raise ValueError(f"scores for {name!r} contain NaN")
        if current is not None:
            s[~current[name].flatten().to(s.device)] = float("-inf")
        out[name] = s
    return out


def _keep_topk(flat: torch.Tensor, k: int) -> torch.Tensor:
    """Exactly k entries; when k is most of them, drop the N-k lowest instead (topk is slow for k ~ N)."""
    n = flat.numel()
    if k <= n // 2:
        keep = torch.zeros_like(flat, dtype=torch.bool)
        if k > 0:
            keep[torch.topk(flat, k, sorted=False).indices] = True
        return keep
    keep = torch.ones_like(flat, dtype=torch.bool)
    if k < n:
        keep[torch.topk(flat, n - k, largest=False, sorted=False).indices] = False
    return keep


def select_topk(
    scores: Mapping[str, torch.Tensor],
    density: float | Mapping[str, float],
    scope: Scope = "global",
    current: Mask | None = None,
    rule: str = "round",
) -> Mask:
    """Keep the highest-scoring weights (``rule``: how many, ``COUNT_RULES``).

    ``density`` is one float (global or uniform layerwise) or a per-layer mapping (explicit
    allocation, always layerwise). With ``current`` given, entries it already prunes can only be
    kept once every unpruned entry is (they score -inf).
    """
    flat = _masked_scores(scores, current)
    shapes = {n: s.shape for n, s in scores.items()}
    if isinstance(density, Mapping) or scope == "layerwise":
        per_layer = density if isinstance(density, Mapping) else {n: density for n in flat}
        mask = Mask()
        for name, s in flat.items():
            k = kept_count(per_layer[name], s.numel(), rule)
            mask[name] = _keep_topk(s, k).view(shapes[name])
            assert int(mask[name].sum()) == k, f"{name}: kept {int(mask[name].sum())}, wanted {k}"
        return mask
    if scope != "global":
        raise ValueError(f"unknown scope {scope!r}; allowed: global, layerwise")
    names = list(flat)
    cat = torch.cat([flat[n] for n in names])
    k = kept_count(density, cat.numel(), rule)
    keep = _keep_topk(cat, k)
    mask = Mask()
    offset = 0
    for name in names:
        n = flat[name].numel()
        mask[name] = keep[offset : offset + n].view(shapes[name])
        offset += n
    assert mask.kept == k, f"kept {mask.kept}, wanted {k}"
    return mask


def select_channels(
    scores: Mapping[str, torch.Tensor],
    keep_fraction: Mapping[str, float],
    current: Mask | None = None,
    heads: Mapping[str, HeadGroup] | None = None,
    head_keep: float | None = None,
    groups: Sequence[ChannelGroup] = (),
) -> Mask:
    """Keep whole output channels (rows): in each named layer the ``max(1, round(f * rows))`` rows with
    the highest summed score; layers not named keep every row. Layers of one ``groups`` entry (output
    channels coupled through a residual sum, ``pruning.channel_groups``) keep the same channels, ranked by
    the score summed over the group, as many as the least-pruned member asks for (a member not named
    keeps every channel, so its whole group does). With ``heads`` and ``head_keep``, each
    attention module keeps ``max(1, round(head_keep * heads))`` whole heads (their q, k and v rows),
    ranked by the summed score of those rows. Rows ``current`` already prunes are the last to be kept,
    as in ``select_topk``."""
    mask = _select_rows(scores, keep_fraction, current, groups)
    for group in (heads or {}).values() if head_keep is not None else ():
        per_head = torch.zeros(group.heads, dtype=torch.float64)
        for name in group.rows:
            s = scores[name].detach().to(torch.float64).cpu().reshape(group.heads, -1).sum(dim=1)
            per_head += s
        if current is not None:
            alive = current[group.rows[2]].cpu().reshape(group.heads, -1).any(dim=1)
            per_head[~alive] = float("-inf")
        keep = _keep_topk(per_head, max(1, int(round(head_keep * group.heads))))
        for name in group.rows:
            rows = keep.repeat_interleave(group.head_dim).to(mask[name].device)
            mask[name] = mask[name] & rows.view(-1, *([1] * (mask[name].dim() - 1)))
    return mask


def _select_rows(scores: Mapping[str, torch.Tensor], keep_fraction: Mapping[str, float],
                 current: Mask | None, groups: Sequence[ChannelGroup] = ()) -> Mask:
    units = [ChannelGroup(rows) for g in groups if (rows := {n: r for n, r in g.rows.items() if n in scores})]
    grouped = {n for g in units for n in g.rows}
    units += [ChannelGroup({n: torch.arange(s.shape[0])}) for n, s in scores.items() if n not in grouped]
    mask = Mask()
    for group in units:
        named = [n for n in group.rows if n in keep_fraction]
        if not named:
            for n in group.rows:
                mask[n] = torch.ones_like(scores[n], dtype=torch.bool) if current is None else current[n].clone()
            continue
        score = torch.zeros(group.channels, dtype=torch.float64)
        for n, rows in group.rows.items():
            s = scores[n].detach().to(torch.float64).cpu()
            row_score = s.reshape(s.shape[0], -1).sum(dim=1)
            if torch.isnan(row_score).any():
                raise ValueError(f"scores for {n!r} contain NaN")
            score += row_score[rows]
            if current is not None:
                score[~current[n].cpu().reshape(s.shape[0], -1).any(dim=1)[rows]] = float("-inf")
        fraction = max(keep_fraction.get(n, 1.0) for n in group.rows)
        keep = _keep_topk(score, max(1, int(round(fraction * group.channels))))
        for n, rows in group.rows.items():
            s = scores[n]
            kept_rows = torch.zeros(s.shape[0], dtype=torch.bool)
            kept_rows[rows[keep]] = True
            mask[n] = kept_rows.to(s.device).view(-1, *([1] * (s.dim() - 1))).expand(s.shape).clone()
    return Mask({n: mask[n] for n in scores})


def density_schedule(final_density: float, rounds: int, kind: str = "exponential") -> list[float]:
    """Densities of rounds e = 1..E: d^(e/E) (exponential) or 1 - (1-d) e/E (linear)."""
    if rounds < 1:
        raise ValueError("rounds must be >= 1")
    if kind == "exponential":
        return [final_density ** (e / rounds) for e in range(1, rounds + 1)]
    if kind == "linear":
        return [1 - (1 - final_density) * e / rounds for e in range(1, rounds + 1)]
    raise ValueError(f"unknown schedule {kind!r}; allowed: exponential, linear")
