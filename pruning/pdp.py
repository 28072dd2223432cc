"""PDP: parameter-free differentiable pruning (Cho, Adya, Naik; NeurIPS 2023), trained in one run.

Per prunable layer and current target sparsity r, the threshold is the midpoint between the smallest
kept and the largest pruned magnitude, ``t = (min kept |w| + max pruned |w|) / 2``, taken *detached*.
The soft keep-mask is ``m(w) = sigmoid((w^2 - t^2) / tau)`` and the layer computes with ``w * m(w)``;
no parameter is added, and every weight gets gradient ``m + 2 w^2 m (1 - m) / tau``, boosted near the
threshold, so weights can cross it in both directions.

Mechanism: each pruned module gets a ``torch.nn.utils.parametrize`` parametrization on its ``weight``
for the duration of the run (per module; nothing global is patched). The original ``Parameter``
object stays the one the optimizer updates. At the end the parametrizations are removed with
``leave_parametrized=False``, so the model has plain ``weight`` parameters holding the raw trained
weights, and the hard mask is multiplied in.

Schedule (SPEC "Train-time pruning: PDP"):

* epochs ``0 .. s-1`` are dense, ``s = round(warmup_fraction * epochs)`` (clamped to ``epochs - 1``);
* at the first step of epoch ``s`` the per-layer budgets are fixed from **one global sort** (of
  ``|w|`` for unstructured, of RMS channel norms for ``channel``; N:M needs none);
* in epoch ``e >= s`` each layer prunes ``round(rho_e * P_l)`` of its ``P_l`` final pruned units, with
  ``rho_e = min(1, eps_eff * (e - s + 1))`` -- i.e. ``r_e = rho_e * r_l`` as in the paper, counted in
  whole units so that ``rho = 1`` is *exactly* the budget;
* **ramp end.** The paper's ``eps = 0.015`` needs ~67 epochs after warm-up to reach the target; with
  short runs that would never happen. We therefore use ``eps_eff = max(eps, 1 / ramp_epochs)`` with
  ``ramp_epochs = max(1, round(ramp_end_fraction * epochs) - s)``: the ramp reaches the full target no
  later than epoch ``round(ramp_end_fraction * epochs) - 1`` (default 80 % of the run), and the
  remaining epochs train at the final target. For long runs (``1/eps`` epochs fit) the paper's eps is
  used unchanged;
* after the last step the mask hardens to ``1[|w| > t]`` for the final target. It is selected by exact
  top-k on the final magnitudes (``pruning.select``), which is the same set when magnitudes are
  distinct and keeps exactly ``round((1 - r_l) N_l)`` per layer under ties; the global count is then
  exactly ``round((1 - target) N)``. The net is evaluated with the hard mask. Fine-tuning with the mask
  fixed is the caller's business: ``trainer.fit(model, mask=result.mask)``.

Temperature: ``tau`` is in units of ``w^2`` (``tau_mode="absolute"``, paper/third-party default 1e-4),
or relative to the layer's threshold, ``tau_eff = tau * t^2`` (``tau_mode="relative"``), which makes
the mask's sharpness independent of the weight scale.

Variants (``structure``):

* ``unstructured`` -- as above.
* ``nm`` -- groups of ``M`` consecutive weights along the flattened input dimension of each output unit
  (``in_features`` for Linear, ``in_channels * prod(kernel)`` for conv, PyTorch's memory order). Each
  group has its own ``t``, the midpoint of its ``N``-th and ``(N+1)``-th largest ``|w|``; the hard mask
  keeps exactly ``N`` of every ``M``. The sparsity of an eligible layer is ``1 - N/M``, so no global
  budget is needed. **Ramp:** the kept count per group steps down from ``M`` to ``N`` with the same
  ``rho_e`` (``keep_e = M - round(rho_e * (M - N))``), i.e. 2:4 goes dense -> 3:4 -> 2:4. Layers whose
  input dimension is not divisible by ``M`` are **kept dense** and listed in ``PDPResult.skipped``
  (their mask entry is all True); pass ``ignore`` to exclude others (e.g. the classifier).
* ``channel`` -- the same rule on output channels, scored by the RMS of each filter,
  ``||W_j||_2 / sqrt(fan_in)`` (the L2 norm normalised by the filter size: within a layer the order is
  the L2 order, across layers the scores are comparable, and ``tau`` keeps the units of ``w^2``). The
  soft mask ``sigmoid((ms_j - t^2)/tau)`` with ``ms_j`` the filter's mean square scales the whole filter;
  the hard mask drops whole output channels. **Budgets:** ``target_sparsity`` is a fraction of
  *weights* (SPEC convention); channels of all layers are sorted once by score and the lowest are
  pruned while that brings the pruned weight count closer to ``round(target * N)`` (greedy prefix of the
  global order, stopping at the closest count). The achieved sparsity is then exact to within one
  filter and is what the mask reports; per layer, the kept channel count is exact. Dropping rows of
  the classifier removes classes, so pass ``ignore=("fc.weight",)`` for channel pruning.
* ``head`` -- ``channel`` for every layer except the ``q``, ``k`` and ``v`` projections of attention
  modules (``pruning.structure``), which are pruned by whole heads: a head's unit is its rows in all
  three, scored by their RMS, and its soft mask ``sigmoid((ms_h - t^2)/tau)`` (``ms_h`` the mean square
  over those rows) scales the head's rows in each of the three layers alike. Each layer's gradient flows
  through its own share of ``ms_h`` (the other two layers' rows enter detached). Budgets: heads and
  channels of all layers in one global sort, a head weighing its ``3 * head_dim * fan_in`` weights. The
  hard mask drops whole heads (the same ones in q, k and v), which ``pruning.export`` then removes.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable, Iterable

import torch
from torch import nn
from torch.nn.utils import parametrize

from training.trainer import Trainer

from .config import PDPConfig, Structure  # noqa: F401 (re-exported)
from .mask import PRUNABLE_TYPES, Mask, SparsityReport, prunable_parameters
from .select import kept_count, select_topk
from .structure import attention_heads

__all__ = [
    "PDPConfig",
    "PDPResult",
    "PDPMask",
    "run_pdp",
    "magnitude_threshold",
    "group_thresholds",
    "warmup_epochs",
    "ramp_fraction",
]

_MIN_TAU = 1e-30


@dataclass
class PDPResult:
    mask: Mask
    trained_state: dict[str, torch.Tensor]
    test_accuracy: float
    val_accuracy: float | None
    history: list[dict]
    sample_passes: int
    wall_time_s: float
    soft_test_accuracy: float = float("nan")
    skipped: list[str] = field(default_factory=list)
    kept_units: dict[str, int] = field(default_factory=dict)
    report: SparsityReport | None = None

    @property
    def collapsed(self) -> bool:
        return bool(self.report and self.report.collapsed)


# --------------------------------------------------------------------------------------------- schedule
def warmup_epochs(cfg: PDPConfig, epochs: int) -> int:
    return min(int(round(cfg.warmup_fraction * epochs)), epochs - 1)


def ramp_fraction(cfg: PDPConfig, epochs: int, epoch: int) -> float:
    """rho_e in [0, 1]: share of the final budget pruned during ``epoch`` (0 during warm-up)."""
    s = warmup_epochs(cfg, epochs)
    if epoch < s:
        return 0.0
    ramp_epochs = max(1, int(round(cfg.ramp_end_fraction * epochs)) - s)
    eps = max(cfg.epsilon, 1.0 / ramp_epochs)
    return min(1.0, eps * (epoch - s + 1))


# --------------------------------------------------------------------------------------------- thresholds
@torch.no_grad()
def magnitude_threshold(values: torch.Tensor, keep: int) -> torch.Tensor:
    """t = (smallest kept + largest pruned) / 2 for non-negative ``values`` keeping the top ``keep``.

    ``keep == numel`` has no pruned entry (callers skip the mask); ``keep == 0`` gives the largest value.
    """
    flat = values.detach().flatten()
    n = flat.numel()
    if not 0 <= keep <= n:
        raise ValueError(f"keep={keep} outside [0, {n}]")
    if keep == n:
        return flat.new_tensor(0.0)
    largest_pruned = torch.kthvalue(flat, n - keep).values
    if keep == 0:
        return largest_pruned
    smallest_kept = torch.kthvalue(flat, n - keep + 1).values
    return 0.5 * (smallest_kept + largest_pruned)


@torch.no_grad()
def group_thresholds(groups: torch.Tensor, keep: int) -> torch.Tensor:
    """Per row of ``groups`` (G, M) of magnitudes: midpoint of the keep-th and (keep+1)-th largest."""
    top = torch.topk(groups.detach(), keep + 1, dim=1, sorted=True).values
    return 0.5 * (top[:, keep - 1] + top[:, keep])


# --------------------------------------------------------------------------------------------- soft mask
class PDPMask(nn.Module):
    """The parametrization ``w -> w * m(w)`` of one layer's weight; inactive (identity) while ``keep`` is None.

    ``keep`` counts units of the layer's structure: weights (unstructured), output channels (channel),
    or kept weights per group of ``m`` (nm). The threshold is recomputed from the current weight on
    every forward, so it always matches the weights the optimizer just produced.
    """

    def __init__(self, structure: Structure, tau: float, tau_mode: str, units: int, m: int = 4,
                 partners: tuple[nn.Parameter, ...] = ()) -> None:
        super().__init__()
        self.structure = structure
        self.partners = partners  # head structure: the same heads' weights in the other projections
        self.tau = float(tau)
        self.tau_mode = tau_mode
        self.units = int(units)  # weights, output channels, or M: keep == units means dense
        self.m = int(m)
        self.keep: int | None = None

    def _temperature(self, t2: torch.Tensor) -> torch.Tensor | float:
        if self.tau_mode == "relative":
            return (self.tau * t2).clamp_min(_MIN_TAU)
        return self.tau

    def soft_mask(self, w: torch.Tensor) -> torch.Tensor:
        """m(w) broadcastable to ``w`` (gradient flows through w, never through t)."""
        assert self.keep is not None
        if self.structure == "unstructured":
            t = magnitude_threshold(w.detach().abs(), self.keep)
            t2 = t * t
            return torch.sigmoid((w * w - t2) / self._temperature(t2))
        if self.structure == "head":
            ms = head_mean_square(w, [p.detach() for p in self.partners], self.units)
            t = magnitude_threshold(ms.detach().sqrt(), self.keep)
            t2 = t * t
            rows = torch.sigmoid((ms - t2) / self._temperature(t2)).repeat_interleave(w.shape[0] // self.units)
            return rows.view((-1,) + (1,) * (w.dim() - 1))
        if self.structure == "channel":
            ms = (w * w).flatten(1).mean(1)  # mean square per output filter
            t = magnitude_threshold(ms.detach().sqrt(), self.keep)
            t2 = t * t
            shape = (-1,) + (1,) * (w.dim() - 1)
            return torch.sigmoid((ms - t2) / self._temperature(t2)).view(shape)
        # nm: groups of m consecutive weights along the flattened input dimension
        g = w.reshape(-1, self.m)
        t = group_thresholds(g.detach().abs(), self.keep).unsqueeze(1)
        t2 = t * t
        return torch.sigmoid((g * g - t2) / self._temperature(t2)).view_as(w)

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        if self.keep is None or self.keep >= self.units:  # dense: no pruned entry, no threshold
            return w
        return w * self.soft_mask(w)


def head_mean_square(w: torch.Tensor, partners: list[torch.Tensor], heads: int) -> torch.Tensor:
    """Mean square of each head's rows over ``w`` and its partner projections (q, k, v)."""
    total = sum((x * x).reshape(heads, -1).sum(1) for x in [w, *partners])
    return total / (w.numel() // heads * (1 + len(partners)))


# --------------------------------------------------------------------------------------------- controller
@dataclass
class _Layer:
    name: str
    module: nn.Module
    param: nn.Parameter
    pmask: PDPMask
    units: int  # weights / channels / group size M / heads
    final_keep: int = -1  # decided at epoch s
    group: tuple[str, ...] = ()  # head structure: the q, k, v weight names this layer's heads span


def _modules_by_weight_name(model: nn.Module) -> dict[str, nn.Module]:
    return {
        (f"{n}.weight" if n else "weight"): mod
        for n, mod in model.named_modules()
        if isinstance(mod, PRUNABLE_TYPES) and mod.weight is not None
    }


def _channel_scores(w: torch.Tensor) -> torch.Tensor:
    return w.detach().double().pow(2).flatten(1).mean(1).sqrt()


def _channel_budgets(layers: list[_Layer], target_sparsity: float) -> dict[str, int]:
    """Kept units per layer from one global sort of RMS scores (see module docstring): a channel weighs
    its filter, a head (``group``: every layer of it) its rows in all the group's layers."""
    scores, owner, sizes = [], [], []
    owners: list[tuple[str, ...]] = []
    by_name = {l.name: l for l in layers}
    for layer in layers:
        if layer.group and layer.group[0] != layer.name:
            continue  # a head group is scored once, by its first layer
        if layer.group:
            members = [by_name[n].param.detach().double() for n in layer.group]
            s = head_mean_square(members[0], members[1:], layer.units).sqrt()
            size = sum(m[0].numel() for m in members) * (members[0].shape[0] // layer.units)
        else:
            s = _channel_scores(layer.param)
            size = layer.param[0].numel()
        owners.append(layer.group or (layer.name,))
        scores.append(s)
        owner.append(torch.full_like(s, len(owners) - 1, dtype=torch.long))
        sizes.append(torch.full_like(s, size, dtype=torch.long))
    cat, own, size = torch.cat(scores).cpu(), torch.cat(owner).cpu(), torch.cat(sizes).cpu()
    total = int(size.sum())
    goal = kept_count(target_sparsity, total)  # pruned weights wanted
    order = torch.argsort(cat, stable=True)
    cum = torch.cumsum(size[order], 0)
    # number of lowest units to prune: the prefix length whose pruned count is closest to goal
    cand = torch.cat([torch.zeros(1, dtype=torch.long), cum])
    n_prune = int(torch.argmin((cand - goal).abs()))
    pruned = torch.bincount(own[order[:n_prune]], minlength=len(owners))
    return {name: by_name[name].units - int(pruned[i]) for i, names in enumerate(owners) for name in names}


def _unstructured_budgets(layers: list[_Layer], target_sparsity: float) -> dict[str, int]:
    mask = select_topk({l.name: l.param.detach().abs() for l in layers}, 1.0 - target_sparsity, "global")
    return {name: int(m.sum()) for name, m in mask.items()}


@torch.no_grad()
def _hard_mask(layer: _Layer, structure: Structure, keep: int, m: int) -> torch.Tensor:
    w = layer.param.detach()
    if layer.group:  # whole heads, ranked by their rows in q, k and v together, summed in the group's order
        others = iter(layer.pmask.partners)  # so every member ranks the heads identically
        members = [w.double() if n == layer.name else next(others).detach().double() for n in layer.group]
        scores = head_mean_square(members[0], members[1:], layer.units)
        keep_heads = torch.zeros(layer.units, dtype=torch.bool)
        keep_heads[torch.topk(scores.cpu(), keep, sorted=False).indices] = True
        rows = keep_heads.repeat_interleave(w.shape[0] // layer.units).to(w.device)
        return rows.view((-1,) + (1,) * (w.dim() - 1)).expand_as(w).clone()
    if structure == "unstructured":
        sel = select_topk({layer.name: w.abs()}, {layer.name: keep / w.numel()}, "layerwise")
        mask = sel[layer.name]
        assert int(mask.sum()) == keep
        return mask
    if structure in ("channel", "head"):
        scores = _channel_scores(w)
        sel = select_topk({layer.name: scores}, {layer.name: keep / scores.numel()}, "layerwise")
        keep_rows = sel[layer.name]
        assert int(keep_rows.sum()) == keep
        return keep_rows.view((-1,) + (1,) * (w.dim() - 1)).expand_as(w).clone()
    g = w.abs().double().reshape(-1, m)
    idx = torch.topk(g, keep, dim=1).indices
    mask = torch.zeros_like(g, dtype=torch.bool).scatter_(1, idx, True)
    assert bool((mask.sum(1) == keep).all())
    return mask.view_as(w)


def run_pdp(
    model: nn.Module,
    trainer: Trainer,
    target_sparsity: float | None,
    cfg: PDPConfig | None = None,
    ignore: Iterable[str] = (),
    on_epoch: Callable[[dict], None] | None = None,
) -> PDPResult:
    """Train ``model`` with PDP soft masks, harden, evaluate with the hard mask.

    ``target_sparsity`` is the global fraction of prunable weights removed (unstructured, channel);
    for ``nm`` it is implied (1 - N/M on every eligible layer) and may be None or must equal it.
    The model is modified in place: afterwards it holds the hard-masked trained weights in plain
    ``weight`` parameters. ``on_epoch`` receives each epoch's record, with PDP fields added.
    """
    cfg = cfg or PDPConfig()
    t0 = time.perf_counter()
    _check_target(cfg, target_sparsity)
    params = prunable_parameters(model, ignore)
    layers, skipped = _pdp_layers(model, params, cfg)
    ramp = _Ramp(cfg, layers, params, skipped, target_sparsity, trainer.cfg.epochs, trainer.steps_per_epoch, on_epoch)
    registered: list[_Layer] = []
    try:
        for l in layers:
            parametrize.register_parametrization(l.module, "weight", l.pmask)
            registered.append(l)
        result = trainer.fit(model, on_step=ramp.step_hook, on_epoch=ramp.epoch_hook)
        if not ramp.budgets_set:  # cannot happen with s <= epochs - 1, but keep the hard mask defined
            ramp.set_budgets()
        for l in layers:  # the soft net at the final target, for comparison with the hard one
            l.pmask.keep = l.final_keep
        soft_test = trainer.evaluate(model, trainer.data.test).accuracy
    finally:
        for l in registered:
            parametrize.remove_parametrizations(l.module, "weight", leave_parametrized=False)
            l.pmask.keep = None

    mask, kept_units = _hard_masks(params, layers, cfg)
    mask.apply_(model)
    if cfg.structure == "unstructured":
        want = kept_count(1.0 - target_sparsity, mask.total)
        assert mask.kept == want, f"PDP hard mask keeps {mask.kept}, wanted {want}"

    test = trainer.evaluate(model, trainer.data.test)
    val = trainer.evaluate(model, trainer.data.val) if len(trainer.data.val) else None
    return PDPResult(
        mask=mask,
        trained_state={k: v.detach().cpu().clone() for k, v in model.state_dict().items()},
        test_accuracy=test.accuracy,
        val_accuracy=val.accuracy if val is not None else None,
        history=result.history,
        sample_passes=result.sample_passes,
        wall_time_s=time.perf_counter() - t0,
        soft_test_accuracy=soft_test,
        skipped=skipped,
        kept_units=kept_units,
        report=mask.report(),
    )


def _check_target(cfg: PDPConfig, target_sparsity: float | None) -> None:
    if cfg.structure == "nm":
        implied = 1.0 - cfg.n / cfg.m
        if target_sparsity is not None and abs(target_sparsity - implied) > 1e-9:
            raise ValueError(
                f"N:M {cfg.n}:{cfg.m} fixes the sparsity of every pruned layer at {implied:g}; "
                f"got target_sparsity={target_sparsity} (pass None)"
            )
    elif target_sparsity is None or not 0.0 <= target_sparsity < 1.0:
        raise ValueError(f"target_sparsity must be in [0, 1), got {target_sparsity}")


def _pdp_layers(model: nn.Module, params: dict[str, nn.Parameter], cfg: PDPConfig) -> tuple[list[_Layer], list[str]]:
    """One soft mask per prunable layer in the structure's units (weights, N:M blocks, rows, heads), and
    the layers N:M must skip (fan-in not a multiple of M)."""
    structure = cfg.structure
    modules = _modules_by_weight_name(model)
    layers: list[_Layer] = []
    skipped: list[str] = []
    groups = {n: g for g in attention_heads(model).values() for n in g.rows} if structure == "head" else {}
    if structure == "head" and not groups:
        raise ValueError("PDP structure 'head' needs attention modules (q, k, v, proj, heads, head_dim); "
                         "use 'channel' for this model")
    for name, p in params.items():
        group = groups.get(name)
        if group is not None:
            missing = [n for n in group.rows if n not in params]
            if missing:
                raise ValueError(f"PDP structure 'head': {missing} are in prune.ignore, but {name} is pruned; "
                                 "a head spans q, k and v")
            partners = tuple(params[n] for n in group.rows if n != name)
            pm = PDPMask("head", cfg.tau, cfg.tau_mode, group.heads, cfg.m, partners)
            layers.append(_Layer(name, modules[name], p, pm, group.heads, group=group.rows))
            continue
        if structure == "nm":
            if p[0].numel() % cfg.m != 0:
                skipped.append(name)
                continue
            units = cfg.m
        elif structure in ("channel", "head"):
            units = p.shape[0]
        else:
            units = p.numel()
        pm = PDPMask("channel" if structure == "head" else structure, cfg.tau, cfg.tau_mode, units, cfg.m)
        layers.append(_Layer(name, modules[name], p, pm, units))
    if structure == "nm" and not layers:
        raise ValueError(f"no prunable layer has an input dimension divisible by M={cfg.m}: {sorted(params)}")
    return layers, skipped


class _Ramp:
    """The budget schedule during training: dense until the warm-up ends, then each layer's kept units
    ramp from all to its final budget (``ramp_fraction``), set once per epoch from the step hook."""

    def __init__(self, cfg: PDPConfig, layers: list[_Layer], params: dict[str, nn.Parameter], skipped: list[str],
                 target_sparsity: float | None, epochs: int, steps_per_epoch: int,
                 on_epoch: Callable[[dict], None] | None) -> None:
        self.cfg, self.layers, self.params, self.skipped = cfg, layers, params, skipped
        self.target_sparsity, self.epochs, self.spe, self.on_epoch = target_sparsity, epochs, steps_per_epoch, on_epoch
        self.warmup = warmup_epochs(cfg, epochs)
        self.epoch, self.rho, self.budgets_set = -1, 0.0, False

    def set_budgets(self) -> None:
        structure = self.cfg.structure
        if structure == "unstructured":
            budgets = _unstructured_budgets(self.layers, self.target_sparsity)
        elif structure in ("channel", "head"):
            budgets = _channel_budgets(self.layers, self.target_sparsity)
        else:
            budgets = {l.name: self.cfg.n for l in self.layers}
        for l in self.layers:
            l.final_keep = budgets[l.name]
        self.budgets_set = True

    def unit_weights(self, l: _Layer, keep: int) -> int:
        structure = self.cfg.structure
        if structure == "unstructured":
            return keep
        if l.group:
            return keep * (l.param.shape[0] // l.units) * l.param[0].numel()
        if structure in ("channel", "head"):
            return keep * l.param[0].numel()
        return l.param.numel() // self.cfg.m * keep

    def keep_at(self, layer: _Layer, rho: float) -> int:
        return layer.units - int(round(rho * (layer.units - layer.final_keep)))

    def step_hook(self, step: int) -> None:
        epoch = step // self.spe
        if epoch == self.epoch:
            return
        self.epoch = epoch
        rho = ramp_fraction(self.cfg, self.epochs, epoch)
        if epoch >= self.warmup and not self.budgets_set:
            self.set_budgets()
        self.rho = rho
        for l in self.layers:
            l.pmask.keep = self.keep_at(l, rho) if self.budgets_set else None

    def epoch_hook(self, record: dict) -> None:
        record["pdp_ramp"] = self.rho
        if self.budgets_set:
            kept = sum(self.unit_weights(l, self.keep_at(l, self.rho)) for l in self.layers)
            kept += sum(self.params[n].numel() for n in self.skipped)
            total = sum(p.numel() for p in self.params.values())
            record["pdp_target_sparsity"] = 1.0 - kept / total
        else:
            record["pdp_target_sparsity"] = 0.0
        if self.on_epoch is not None:
            self.on_epoch(record)


def _hard_masks(params: dict[str, nn.Parameter], layers: list[_Layer], cfg: PDPConfig) -> tuple[Mask, dict[str, int]]:
    """Each layer's top units at its final budget (unpruned layers whole), and the units kept."""
    mask = Mask()
    kept_units: dict[str, int] = {}
    by_name = {l.name: l for l in layers}
    for name, p in params.items():
        layer = by_name.get(name)
        if layer is None:
            mask[name] = torch.ones_like(p, dtype=torch.bool, device="cpu")
            continue
        mask[name] = _hard_mask(layer, cfg.structure, layer.final_keep, cfg.m).cpu()
        kept_units[name] = layer.final_keep
    return mask, kept_units
