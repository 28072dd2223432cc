"""Typed pruning settings shared by the CLI, the sweep and the mask-search stage; no torch imported,
so a config is checked in a fraction of a second (see ``training.settings``)."""
from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic_core import PydanticCustomError

from distill.config import DistillConfig, check_augment_strategy
from training.settings import TrainConfig

from .registry import METHODS, get_method, method_names, moved_fields  # noqa: F401 (re-exported)


Structure = Literal["unstructured", "nm", "channel", "head"]


class NMPattern(BaseModel):
    """N:M sparsity: n kept in every group of m (used by PDP's and the post-training methods' nm mode)."""

    model_config = ConfigDict(extra="forbid")

    n: int = Field(2, ge=1, description="N of N:M (kept per group)")
    m: int = Field(4, ge=2, description="M of N:M (group size)")

    @model_validator(mode="after")
    def _check_nm(self) -> "NMPattern":
        if self.n >= self.m:
            raise ValueError(f"N:M needs n < m, got {self.n}:{self.m}")
        return self

    def check_sparsity(self, method: str, sparsity: float) -> None:
        """N:M fixes the sparsity; a different target is a contradiction, not a request."""
        implied = 1 - self.n / self.m
        if abs(sparsity - implied) > 1e-9:
            raise ValueError(f"{method} {self.n}:{self.m} fixes sparsity at {implied:g}; "
                             f"set prune.sparsity to {implied:g}")


class PDPConfig(NMPattern):
    model_config = ConfigDict(extra="forbid")

    tau: float = Field(1e-4, gt=0, description="soft-mask temperature (units of w^2, or of t^2 if relative)")
    tau_mode: Literal["absolute", "relative"] = Field("absolute",
        description="tau in units of w^2 (absolute) or relative to the threshold t^2")
    epsilon: float = Field(0.015, gt=0, le=1, description="ramp increment of the target per epoch")
    warmup_fraction: float = Field(0.16, ge=0, lt=1, description="dense epochs s = round(f * epochs)")
    ramp_end_fraction: float = Field(
        0.8, gt=0, le=1, description="the ramp reaches the full target by this fraction of the epochs"
    )
    structure: Structure = Field("unstructured",
        description="prune single weights, N:M groups, whole output channels, or whole attention heads "
        "(q, k, v rows together; every other layer by channel)")




def _small_set_training() -> TrainConfig:
    """Per-level training on a distilled set: the authors' ``DistilledPruning()`` trains every level with
    MTT's ``evaluate_synset`` (CIFAR-10, 50 per class): 1000 epochs, SGD lr 0.01, momentum 0.9, weight
    decay 5e-4, batch 512, LR x0.1 at half, DSA on every batch (``small_augment``, drawn per sample).
    Two small differences from that function: it runs E + 1 epochs and decays after epoch E/2 + 1 with a
    new optimizer (momentum dropped there); here E epochs, decay at E/2, momentum kept. A 500-example set
    is one step per epoch, so a level is 1000 steps."""
    return TrainConfig(epochs=1000, batch_size=512, optimizer="sgd", lr=0.01, momentum=0.9,
                       weight_decay=5e-4, schedule="multistep", milestones=[500], gamma=0.1)


class PostTrainConfig(NMPattern):
    """Wanda and SparseGPT (see ``pruning.posttrain``)."""

    model_config = ConfigDict(extra="forbid")

    structure: Literal["unstructured", "nm"] = Field("unstructured", description="prune single weights, or "
                                                     "keep n of every m consecutive inputs of each output (N:M)")
    group: Literal["row", "layer"] = Field("row", description="Wanda: compare scores within each output row "
                                           "(the paper's default for LLMs) or across the whole layer")
    damp: float = Field(0.01, gt=0, description="SparseGPT: dampening of H, as a fraction of its mean diagonal")
    blocksize: int = Field(128, ge=1, description="SparseGPT: columns per lazy-update block")
    selection: Literal["block", "row"] = Field("block", description="SparseGPT unstructured: prune the lowest "
        "w^2/[H^-1]_jj^2 over each whole column block, all rows together (the paper's and reference's adaptive "
        "mask), or an equal share of each row per block")


POST_TRAINING_PLAN = "pruning.methods:plan_post_training"  # wanda, sparsegpt: one-shot by default


class PruneConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    method: str = Field("imp", description="which pruning method (see Names below)")
    sparsity: float = Field(0.9, ge=0.0, lt=1.0, description="fraction of prunable weights removed")
    scope: Literal["global", "layerwise"] = Field("global",
        description="rank weights across all layers (global) or within each layer (layerwise)")
    ignore: list[str] = Field(default_factory=list, description="prunable weight names kept dense")
    rewind_step: int = Field(0, ge=0, description="iteration k whose weights survivors reset to; 0 = init "
                             "(epoch e: e x ceil(training examples / batch size))")
    rewind: Literal["weights", "state"] | None = Field(
        None, description="IMP and distilled IMP: what a rewind resets to theta_k: only the Conv/Linear weights, "
        "biases and norm parameters keeping their trained values (weights: Distilled Pruning's code), or the whole "
        "state (state: OpenLTH). Default: weights for the small-set methods (distilled_imp, imp_subset), state "
        "otherwise")
    rewind_optimizer: Literal["fresh", "resume"] = Field(
        "fresh", description="IMP at k > 0: the retrain starts at iteration k (LR schedule and data order) with a "
        "fresh optimizer, zero momentum (fresh: OpenLTH), or with the optimizer state saved at k (resume)")
    prune_fraction: float = Field(0.2, gt=0.0, lt=1.0,
        description="IMP: share of remaining weights pruned per level")
    rounds: int | None = Field(None, ge=1, description="pruning-at-init rounds; default per method")
    search_epochs: int | None = Field(
        None, ge=1, description="imp/magnitude(trained): epochs per search level (default: train.epochs); "
        "the final retrain keeps train.epochs"
    )
    schedule: Literal["exponential", "linear"] = Field("exponential",
        description="pruning at init over several rounds: density reached exponentially or linearly")
    allocation: Literal["global", "uniform", "erk", "explicit", "scaled"] | None = Field(
        None, description="pruning at init: how the density is shared by layers (default: from scope)"
    )
    layer_densities: dict[str, float] = Field(
        default_factory=dict, description="allocation 'explicit': prunable weight name -> density; 'scaled': "
        "relative densities, scaled so the total is exactly the target"
    )
    channel_keep: dict[str, float] = Field(
        default_factory=dict, description="pruning at init, structured: prunable weight name -> fraction of its "
        "output channels kept (whole rows, at least one; an architecture in effect). Layers not named keep every "
        "channel, and prune.sparsity and allocation are not used: the kept channels fix the density. Layers whose "
        "channels are coupled (a residual sum; Torch-Pruning's dependency groups) keep the same channels, as many "
        "as the least-pruned of them asks, so the export removes every channel the mask empties")
    head_keep: float | None = Field(None, gt=0.0, le=1.0, description="pruning at init, structured: fraction of "
        "the heads of every attention module kept (whole heads: their q, k and v rows, ranked by summed score); "
        "combine with channel_keep for the MLP channels")
    examples_per_class: int = Field(10, ge=1, description="data-driven scorers: class-balanced examples")
    count_rule: Literal["exact", "reference"] = Field("exact", description="pruning at init: keep exactly "
        "round(d*N) weights (exact), or as many as the method's reference code does (int, ceil, or N - int((1-d)N); "
        "the method table says which), to reproduce a published mask exactly")
    options: dict[str, Any] = Field(default_factory=dict,
        description="the method's own options, checked against its options model (tables below; `prunetune list` "
        "shows every method's); defaults filled in")
    ablation: Literal["none", "shuffle", "reinit", "invert"] = Field(
        "none", description="sanity checks (Frankle et al. 2021): permute each layer's mask, redraw weights, keep lowest scores"
    )
    post: PostTrainConfig = Field(default_factory=PostTrainConfig,
        description="wanda/sparsegpt: structure and SparseGPT's solver settings; calibration examples: "
        "examples_per_class")
    retrain: bool | None = Field(
        None, description="wanda/sparsegpt only: false (their default) evaluates the one-shot result, as their "
        "papers report; true retrains the mask from the rewind point like every other method")
    pdp: PDPConfig = Field(default_factory=PDPConfig, description="PDP's options (method pdp only)")
    distill: DistillConfig = Field(
        default_factory=lambda: DistillConfig(method="dm"),
        description="distilled_imp: how the small training set is made (imp_subset uses method 'random' with the same ipc)",
    )
    small_train: TrainConfig = Field(
        default_factory=_small_set_training, description="distilled_imp/imp_subset: per-level training on the small set"
    )
    small_augment: str = Field(
        "default",
        description="DSA augmentation while training on the small set (as Distilled Pruning does): "
        "'default' for the input kind's strategy, a strategy string, or 'none'",
    )
    small_augment_draw: Literal["sample", "batch"] = Field(
        "sample", description="small-set augmentation parameters drawn per sample (DSA's training mode, the "
        "authors') or once per batch (every sample of a step transformed alike)")

    @model_validator(mode="before")
    @classmethod
    def _moved_fields(cls, data: Any) -> Any:
        """A config written before per-method options gets the new path of each moved field."""
        if isinstance(data, dict):
            moved = moved_fields()
            for old in sorted(set(data) & set(moved)):
                where = ", ".join(f"prune.options.{new} (method {m})" for m, new in moved[old])
                raise PydanticCustomError("moved_field", "prune.{old} moved into the method's options: {where}",
                                          {"old": old, "where": where, "sub_loc": old})
        return data

    @field_validator("method")
    @classmethod
    def _known_method(cls, v: str) -> str:
        return METHODS.require(v, " (or register your own: see README, 'Add your own method, model or dataset')")

    @model_validator(mode="after")
    def _method_options(self) -> "PruneConfig":
        """Checked by the method's own options model; errors name prune.options.<field>."""
        try:
            self.options = get_method(self.method).parse_options(self.options).model_dump(mode="json")
        except ValidationError as err:
            e = err.errors()[0]
            loc = ".".join(str(p) for p in e["loc"])
            msg = "unknown key (check the spelling; `prunetune list` shows the options)" \
                if e["type"] == "extra_forbidden" else e["msg"].removeprefix("Value error, ")
            shown = "" if e["type"] in ("missing", "extra_forbidden") else f" (got {e.get('input')!r})"
            raise PydanticCustomError("method_option", "{msg}{shown} [method {method}]",
                                      {"msg": msg, "shown": shown, "method": self.method,
                                       "sub_loc": f"options.{loc}" if loc else "options"}) from None
        return self

    def method_options(self):
        """The options as the method's typed model."""
        return get_method(self.method).parse_options(self.options)

    _small_augment = field_validator("small_augment")(classmethod(lambda cls, v: check_augment_strategy(v)))

    @model_validator(mode="after")
    def _options_fit_method(self) -> "PruneConfig":
        if (self.allocation in ("explicit", "scaled")) != bool(self.layer_densities):
            raise ValueError("layer_densities is required by, and only used with, allocation 'explicit' or 'scaled'")
        for name, f in self.channel_keep.items():
            if not 0.0 < f <= 1.0:
                raise ValueError(f"channel_keep[{name!r}] = {f}: a fraction of channels kept must be in (0, 1]")
        if (self.channel_keep or self.head_keep is not None) and self.layer_densities:
            raise ValueError("channel_keep/head_keep (whole channels or heads) and layer_densities (weights per "
                             "layer) exclude each other")
        spec = get_method(self.method)
        for mode, used in (("channel", bool(self.channel_keep)), ("head", self.head_keep is not None)):
            if used and mode not in spec.structured:
                able = [n for n in method_names() if mode in get_method(n).structured]
                raise ValueError(f"{mode}_keep (structured pruning at init) does not apply to method "
                                 f"{self.method!r}; methods that support it: {', '.join(able)}")
        if self.ablation != "none":
            allowed = spec.ablations
            if self.ablation not in allowed:
                raise ValueError(
                    f"ablation {self.ablation!r} does not apply to method {self.method!r}; allowed for it: "
                    + (", ".join(sorted(allowed)) if allowed else "none")
                )
        post_training = [n for n in method_names() if get_method(n).plan == POST_TRAINING_PLAN]
        if self.retrain is not None and self.method not in post_training:
            raise ValueError(f"retrain applies to post-training methods ({', '.join(post_training)}); "
                             f"method {self.method!r} always retrains its mask")
        if self.method in post_training and self.post.structure == "nm":
            self.post.check_sparsity(self.method, self.sparsity)
        if self.method == "pdp" and self.pdp.structure == "nm":
            self.pdp.check_sparsity("pdp", self.sparsity)
        return self

    @property
    def effective_allocation(self) -> str:
        return self.allocation or ("global" if self.scope == "global" else "uniform")

    @model_validator(mode="after")
    def _dense_is_dense(self) -> "PruneConfig":
        if self.method == "dense" and self.sparsity != 0.0:
            raise ValueError(f"method 'dense' needs sparsity 0.0, got {self.sparsity}")
        if self.method != "dense" and self.sparsity == 0.0:
            raise ValueError(f"method {self.method!r} needs sparsity > 0 (use method 'dense' for 0)")
        return self

    @property
    def density(self) -> float:
        return 1.0 - self.sparsity

    @property
    def rewind_mode(self) -> str:
        """``rewind`` resolved: the small-set methods follow their authors (weights), IMP OpenLTH (state)."""
        if self.rewind is not None:
            return self.rewind
        return "weights" if get_method(self.method).small_set else "state"


class ExportConfig(BaseModel):
    """After evaluation: remove the channels (and ViT heads) a mask empties and time the smaller network
    (see ``pruning.export`` and ``pruning.latency``)."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool = Field(False, description="export each trial's network and add export_params, export_flops "
                          "and latency columns (needed to use them as objectives or constraints)")
    latency_batch: int = Field(1, ge=1, description="batch size of the latency_ms columns")
    throughput_batch: int = Field(64, ge=1, description="a typical batch: the batch_latency_ms columns")
    warmup: int = Field(3, ge=0, description="untimed forward passes before timing")
    repeats: int = Field(15, ge=1, description="timed forward passes per network (median reported); dense and "
                         "exported are interleaved so machine noise hits both alike")


