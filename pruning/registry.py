"""The pruning-method registration API: one call declares a method's options, capabilities and its
scorer or plan. Built-in methods use exactly this; so does a user's own method (see README, "Add your
own method, model or dataset").

Importing this module imports no torch: validating a config needs only the declarations, and a
built-in scorer's module imports torch inside ``score`` (the declaration is what validation reads).

    from pruning.registry import MethodOptions, Scorer, register_method

    class MyOptions(MethodOptions):
        temperature: float = Field(1.0, gt=0, description="...")

    @register_method("mine", options=MyOptions)
    class MyScorer(Scorer):
        needs_data = True
        def score(self, model, params, mask, batches): ...   # self.temperature is the option

A method that is not a pruning-at-init scorer registers a ``plan`` instead (``pruning.methods`` shows
the built-in ones): a function of ``TrialSettings`` returning the stages that make its mask.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, ClassVar

from pydantic import BaseModel, ConfigDict

from training.registry import Registry, load_attr, origin_of

from .counts import COUNT_RULES

ALL_ABLATIONS = frozenset({"shuffle", "reinit", "invert"})
IMP_ABLATIONS = frozenset({"shuffle", "reinit"})  # no scores to invert in an iterative search
NO_ABLATIONS: frozenset[str] = frozenset()
STRUCTURED_MODES = frozenset({"channel", "head"})  # prune.channel_keep, prune.head_keep


class MethodOptions(BaseModel):
    """Base of every method's options (``prune.options``): unknown keys are errors, values frozen."""

    model_config = ConfigDict(extra="forbid", frozen=True)


@dataclass(frozen=True)
class MethodSpec:
    """What validation, stage keys, the pre-flight, ``prunetune prune``, ``prunetune list`` and the docs
    know of a method. ``version`` salts its mask's key: bump it when the method's code or an option's
    default changes what it computes (``pipelines.defaults_pin`` checks this)."""

    name: str
    options: type[MethodOptions]
    scorer: type | None = None  # pruning at init: a ``Scorer`` subclass
    plan: Callable | str | None = None  # otherwise: TrialSettings -> MethodPlan, or "module:function"
    ablations: frozenset[str] = ALL_ABLATIONS
    needs_data: bool = False  # scores or calibrates with training examples (prune.examples_per_class)
    trains: bool = False  # train-time pruning: its training is the final one
    small_set: bool = False  # searches on a distilled set or subset
    structured: frozenset[str] = NO_ABLATIONS  # which of prune.channel_keep / head_keep it supports
    version: int = 1
    origin: str = "built-in"
    was: tuple[tuple[str, str], ...] = ()  # (old flat prune field, its option name) for old configs
    description: str = ""  # what it computes, for the README's method table and `prunetune list`
    count_rule: str = "round"  # its reference code's rule for how many of N a density keeps (select.COUNT_RULES)

    @property
    def at_init(self) -> bool:
        return self.scorer is not None

    @property
    def summary(self) -> str:
        """``description``, else the first paragraph of the scorer's docstring."""
        doc = self.description or (self.scorer.__doc__ if self.scorer is not None else None) or ""
        return " ".join(doc.strip().split("\n\n")[0].split())

    def resolve_plan(self) -> Callable:
        return load_attr(self.plan)

    def parse_options(self, options: dict[str, Any]) -> MethodOptions:
        return self.options.model_validate(options)


METHODS: Registry[MethodSpec] = Registry("pruning method", entry_points="prunetune.methods",
                                         builtins="pruning.builtin_methods")


def register_method(name: str, *, options: type[MethodOptions] | None = None, plan: Callable | str | None = None,
                    ablations: frozenset[str] | set[str] | tuple[str, ...] | None = None,
                    needs_data: bool | None = None, trains: bool = False, small_set: bool = False,
                    structured: frozenset[str] | set[str] | tuple[str, ...] | None = None, version: int = 1,
                    was: dict[str, str] | None = None, description: str = "", count_rule: str = "round"):
    """Register a method. With ``plan``: registers at once and returns the spec. Without: a decorator
    for a ``Scorer`` subclass (pruning at init); its ``Options`` class attribute (or ``options``), its
    ``needs_data``, and by default every ablation and both structured modes (``needs_budget`` scorers
    build one global mask and support neither)."""
    ablations = frozenset(ablations) if ablations is not None else None
    bad = sorted((ablations or frozenset()) - ALL_ABLATIONS)
    if bad:
        raise ValueError(f"method {name!r}: unknown ablations {bad}; allowed: {', '.join(sorted(ALL_ABLATIONS))}")
    if count_rule not in COUNT_RULES:
        raise ValueError(f"method {name!r}: unknown count_rule {count_rule!r}; allowed: {', '.join(COUNT_RULES)}")
    if not isinstance(version, int) or version < 1:
        raise ValueError(f"method {name!r}: version must be an int >= 1, got {version!r}")

    def make(scorer: type | None, module: str | None) -> MethodSpec:
        opts = options or (getattr(scorer, "Options", None) if scorer is not None else None) or MethodOptions
        if not (isinstance(opts, type) and issubclass(opts, MethodOptions)):
            raise TypeError(f"method {name!r}: options must be a subclass of pruning.registry.MethodOptions")
        if scorer is not None:
            scorer.Options = opts
            modes = STRUCTURED_MODES if not getattr(scorer, "needs_budget", False) else frozenset()
        else:
            modes = frozenset()
        spec = MethodSpec(
            name=name, options=opts, scorer=scorer,
            plan=plan if plan is not None else (getattr(scorer, "plan", None) if scorer is not None else None),
            ablations=ablations if ablations is not None else (ALL_ABLATIONS if scorer is not None else NO_ABLATIONS),
            needs_data=bool(needs_data if needs_data is not None else getattr(scorer, "needs_data", False)),
            trains=trains, small_set=small_set,
            structured=frozenset(structured) if structured is not None else modes,
            version=version, origin=origin_of(module), was=tuple(sorted((was or {}).items())),
            description=description, count_rule=count_rule)
        for old, new in spec.was:
            if new not in opts.model_fields:
                raise ValueError(f"method {name!r}: was={{{old!r}: {new!r}}} names no option of {opts.__name__}")
        METHODS.register(name, origin=spec.origin)(spec)
        return spec

    if plan is not None:
        module = plan.split(":")[0] if isinstance(plan, str) else getattr(plan, "__module__", None)
        return make(None, module)

    def deco(scorer: type) -> type:
        make(scorer, scorer.__module__)
        return scorer

    return deco


def get_method(name: str) -> MethodSpec:
    return METHODS.get(name)


def method_names() -> list[str]:
    return METHODS.names()


def moved_fields() -> dict[str, list[tuple[str, str]]]:
    """Old flat ``prune.<field>`` -> [(method, its option)] from every registration's ``was``."""
    out: dict[str, list[tuple[str, str]]] = {}
    for name in METHODS.names():
        for old, new in METHODS.get(name).was:
            out.setdefault(old, []).append((name, new))
    return out


class Scorer:
    """Scores every prunable weight; higher means keep (one small class per method, Synaptic-Flow style).

    ``score(model, params, mask, batches)`` receives a float64 copy of the model with the current mask
    already applied (the original weights if ``revives``) and returns float64 tensors shaped like the
    weights. The caller does selection, so a scorer never has to know about sparsity targets, schedules
    or scopes. Options arrive validated by ``Options`` and are also attributes (``self.temperature``).
    """

    Options: ClassVar[type[MethodOptions]] = MethodOptions
    needs_data: ClassVar[bool] = False
    default_rounds: ClassVar[int] = 1
    # True: ``score`` gets the original (unmasked) weights and scores every weight at the current mask,
    # and selection may bring back a weight an earlier round pruned (FORCE). False: the weights come with
    # the mask applied and a pruned weight stays pruned.
    revives: ClassVar[bool] = False
    # True: the scorer builds its mask rather than ranking every weight (PHEW's random walks stop once
    # they have visited ``budget`` weights), so ``prune_at_init`` sets ``self.budget`` (weights this round
    # keeps, global allocation only) before each ``score``; the selection then keeps exactly those.
    needs_budget: ClassVar[bool] = False
    budget: int | None = None
    # A plan of stages other than "score theta_k, select" ("module:function"), e.g. magnitude's one-shot
    # IMP when its option ``at`` is 'trained'; None: the pruning-at-init plan.
    plan: ClassVar[str | None] = None

    def __init__(self, seed: int = 0, **options: Any) -> None:
        self.seed = seed
        self.options = self.Options.model_validate(options)
        for key in type(self.options).model_fields:
            setattr(self, key, getattr(self.options, key))

    def score(self, model, params, mask, batches) -> dict:
        raise NotImplementedError

    @classmethod
    def check_model(cls, model, input_shape: tuple[int, ...]) -> None:
        """Raise ``ValueError`` if this scorer cannot score ``model`` (the sweep's pre-flight asks)."""
