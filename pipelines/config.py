"""Experiment files: YAML -> typed, validated objects, with ``--set a.b=value`` overrides.

Everything that can be wrong with a config (a typo'd key, a sparsity of 1.5, an unknown model, a
grid value that breaks the schema) is found here, before Ray starts or anything is written.
"""
from __future__ import annotations

import copy
import math
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from pruning.columns import export_objective_names
from pruning.config import ExportConfig, PruneConfig
from search.space import SweepConfig, expand_grid
from training.settings import DataConfig, ModelConfig, TrainConfig


class ConfigError(ValueError):
    """A config problem, already phrased for the user (field path, bad value, what is allowed)."""


class StageResources(BaseModel):
    model_config = ConfigDict(extra="forbid")
    cpu: float = Field(1.0, gt=0, description="CPUs the stage's Ray task asks for")
    gpu: float = Field(0.0, ge=0, description="GPUs the stage's Ray task asks for (fractions share a device)")


class Resources(BaseModel):
    """Per trial, and per shared stage run as its own Ray task (``stages.distill``, ``stages.pretrain``;
    a stage without an entry gets the trial's resources)."""

    model_config = ConfigDict(extra="forbid")
    cpu: float = Field(1.0, gt=0, description="CPUs each trial asks Ray for (fractions allowed)")
    gpu: float = Field(0.0, ge=0, description="GPUs each trial asks Ray for (fractions share a device)")
    stages: dict[str, StageResources] = Field(default_factory=dict,
        description="per shared stage (experts, distill, pretrain): its own resources as a Ray task")

    @field_validator("stages")
    @classmethod
    def _known_stages(cls, v: dict) -> dict:
        if v:  # the stages declare themselves shared; importing them costs torch, so only when asked
            import pruning.stages  # noqa: F401 (registers the stages, the shared ones among them)
            from training.stage import shared_stage_names

            unknown = sorted(set(v) - set(shared_stage_names()))
            if unknown:
                raise ValueError(f"no shared stage named {unknown}; allowed: {', '.join(shared_stage_names())}")
        return v

    def for_stage(self, name: str) -> tuple[float, float]:
        r = self.stages.get(name)
        return (r.cpu, r.gpu) if r is not None else (self.cpu, self.gpu)

    @property
    def max_gpu(self) -> float:
        return max([self.gpu, *(r.gpu for r in self.stages.values())])


class StoreConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    uri: str | None = Field(
        None, description="where stage outputs live (default <out>/store); a path, file:///nfs/..., or an object "
        "store (s3://bucket/prefix, gs://..., any pyarrow.fs URI; options such as ?endpoint_override=host:port&"
        "scheme=http in the URI) shared by sweeps and nodes")
    lease_timeout_s: float = Field(120.0, gt=0, description="a stage whose computing process shows no sign of "
                                   "life for this long is taken over by another")

    @field_validator("uri")
    @classmethod
    def _known_scheme(cls, v: str | None) -> str | None:
        if v is not None and "://" in v and v.split("://", 1)[0] not in STORE_SCHEMES:
            raise ValueError(f"unknown scheme {v.split('://', 1)[0]!r}; allowed: a plain path or "
                             + ", ".join(f"{x}://" for x in STORE_SCHEMES))
        return v


class FailureConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    max_retries: int = Field(1, ge=0, description="reruns of a trial whose process died (not of one that raised)")


class RayConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    address: str | None = Field(None, description="None starts a local Ray; 'auto' or host:port joins a cluster")
    num_cpus: int | None = Field(None, ge=1, description="CPUs a local Ray may use (default: all)")
    num_gpus: int | None = Field(None, ge=0,
        description="GPUs a local Ray declares (logical GPUs on a CPU machine test GPU scheduling)")
    resource_wait_s: float = Field(0.0, ge=0, description="on an autoscaling cluster: how long to wait for nodes "
                                   "that can meet resources (trial or stage) before failing; 0 fails at once")


RESULTS_SCHEMES = ("file", "s3", "gs", "gcs", "hdfs", "viewfs", "abfs", "abfss")
STORE_SCHEMES = RESULTS_SCHEMES


class TrackingConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    experiment_name: str | None = Field(None, description="MLflow experiment (default: the sweep's name)")
    tracking_uri: str | None = Field(None, description="default sqlite:///<out>/mlflow.db")
    results_uri: str | None = Field(
        None, description="also copy results.parquet here through pyarrow.fs (s3://bucket/x.parquet, file:///nfs/...)"
    )

    @field_validator("tracking_uri")
    @classmethod
    def _not_a_file_store(cls, v: str | None) -> str | None:
        if v is not None and (v.startswith("file:") or "://" not in v):
            raise ValueError("MLflow 3.17 refuses its file store; use sqlite:///<absolute path>/mlflow.db "
                             "or an http(s):// tracking server")
        return v

    @field_validator("results_uri")
    @classmethod
    def _known_scheme(cls, v: str | None) -> str | None:
        if v is not None and "://" in v and v.split("://", 1)[0] not in RESULTS_SCHEMES:
            raise ValueError(f"unknown scheme {v.split('://', 1)[0]!r}; allowed: a plain path or "
                             + ", ".join(f"{x}://" for x in RESULTS_SCHEMES))
        return v


class ExperimentConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    plugins: list[str] = Field(default_factory=list,
        description="modules imported before the rest is validated, in the driver and every Ray worker: your own "
        "methods, models, datasets, distillers (looked up on PYTHONPATH, then in plugin_paths; shipped to the "
        "cluster's nodes by Ray's runtime_env when not installed)")
    plugin_paths: list[str] = Field(default_factory=list,
        description="directories searched first for plugins, relative to the config file; default: its directory")

    name: str = Field("experiment", pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$",
        description="letters, digits, '.', '_', '-': it names directories and the MLflow experiment")
    seed: int = Field(0, ge=0,
        description="seed of the trial (initialisation, data order, scorers); a grid axis for repeats")
    data: DataConfig = Field(description="the dataset and its splits")
    model: ModelConfig = Field(description="the architecture")
    train: TrainConfig = Field(default_factory=TrainConfig,
        description="how every training run trains (pre-training, IMP levels, retraining)")
    prune: PruneConfig = Field(default_factory=PruneConfig,
        description="the pruning method, its target and its options")
    export: ExportConfig = Field(default_factory=ExportConfig,
        description="physically smaller networks from channel/head masks, and their measured latency")
    sweep: SweepConfig = Field(default_factory=SweepConfig,
        description="what varies: grid blocks and an Optuna search")
    resources: Resources = Field(default_factory=Resources,
        description="what a trial and each shared stage ask Ray for")
    ray: RayConfig = Field(default_factory=RayConfig, description="where the sweep runs: a local Ray or a cluster")
    tracking: TrackingConfig = Field(default_factory=TrackingConfig,
        description="MLflow and where the results table is copied")
    store: StoreConfig = Field(default_factory=StoreConfig, description="where stage outputs live and are shared")
    failure: FailureConfig = Field(default_factory=FailureConfig,
        description="what happens when a trial's process dies")
    variants: dict[str, dict[str, Any]] = Field(
        default_factory=dict, description="named sets of dotted-path overrides (like --set), chosen with "
        "`prunetune run --variant NAME`: e.g. a cpu-smoke variant of a paper-scale config")

    def result_settings(self) -> dict:
        """Exactly the settings that change a trial's result (not sweep, resources, tracking)."""
        fields = {"seed", "data", "model", "train", "prune"} | ({"export"} if self.export.enabled else set())
        return self.model_dump(mode="json", include=fields)


_KEY_MARK = "[key]"  # pydantic's last loc part when a mapping's key, not its value, is wrong


def format_validation_error(err: ValidationError, prefix: str = "") -> str:
    lines = []
    for e in err.errors():
        bad_key = e["loc"][-1:] == (_KEY_MARK,)
        parts = _loc_parts(e["loc"], e.get("input") if bad_key else None)
        sub = (e.get("ctx") or {}).get("sub_loc")  # an error found inside a section's own options model
        loc = ".".join(parts + ([sub] if sub else []))
        where = f"{prefix}{loc}" if loc else (prefix.rstrip(".") or "config")
        msg = e["msg"].removeprefix("Value error, ")
        if e["type"] == "extra_forbidden":
            msg = "unknown key (check the spelling; see the documented fields)"
        if bad_key:
            msg = ("this key must be text: YAML reads an unquoted true/false, yes/no or on/off as a boolean and "
                   "digits as a number; quote it")
        bad = e.get("input")
        shown = "" if e["type"] in ("missing", "extra_forbidden") or isinstance(bad, (dict, BaseModel)) or sub \
            or bad_key else f" (got {bad!r})"
        lines.append(f"  {where}: {msg}{shown}")
    return "\n".join(lines)


def _loc_parts(loc: tuple, bad_key: Any = None) -> list[str]:
    """An error's location as the user's file spells it. A wrong key is reported by pydantic as the key
    (a YAML ``true:`` already turned into ``1``) then ``[key]``: the key is shown as YAML writes it."""
    parts = [str(p) for p in loc if not str(p).startswith("function-")]
    if parts[-1:] == [_KEY_MARK]:
        parts[-2:] = [_yaml_scalar(bad_key)]
    return parts


def _yaml_scalar(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return "null" if value is None else str(value)


def parse_override(text: str) -> tuple[str, Any]:
    """``a.b=value``; the value is read as YAML (numbers, booleans, lists), never evaluated."""
    if "=" not in text:
        raise ConfigError(f"--set {text!r}: expected KEY=VALUE, e.g. --set prune.sparsity=0.9")
    key, _, raw = text.partition("=")
    key = key.strip()
    if not key or any(not part for part in key.split(".")):
        raise ConfigError(f"--set {text!r}: empty key segment")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError as exc:
        raise ConfigError(f"--set {text!r}: value is not valid YAML: {exc}") from None
    return key, value


def apply_override(raw: dict, path: str, value: Any) -> dict:
    """Set a dotted path in a nested dict (creating levels), returning a new dict."""
    out = copy.deepcopy(raw)
    node = out
    parts = path.split(".")
    for i, part in enumerate(parts[:-1]):
        nxt = node.get(part)
        if nxt is None:
            nxt = node[part] = {}
        if not isinstance(nxt, dict):
            raise ConfigError(f"{'.'.join(parts[: i + 1])} is a value, not a section; cannot set {path}")
        node = nxt
    node[parts[-1]] = value
    return out


def apply_overrides(raw: dict, overrides: dict[str, Any]) -> dict:
    for path, value in overrides.items():
        raw = apply_override(raw, path, value)
    return raw


def _non_finite(node: Any, path: str = "", seen: set[int] | None = None) -> str | None:
    """The first non-finite number in a raw config (``.inf``/``.nan`` pass pydantic's bounds).

    Containers are visited once each, so YAML aliases repeating one node (an "anchor bomb") cost
    nothing extra."""
    if isinstance(node, float) and not math.isfinite(node):
        return path or "config"
    if not isinstance(node, (dict, list)):
        return None
    seen = set() if seen is None else seen
    if id(node) in seen:
        return None
    seen.add(id(node))
    items = node.items() if isinstance(node, dict) else enumerate(node)
    for k, v in items:
        found = _non_finite(v, f"{path}.{k}" if path and isinstance(k, str) else f"{path}[{k}]" if path else str(k), seen)
        if found:
            return found
    return None


def validate(raw: dict, context: str = "") -> ExperimentConfig:
    bad = _non_finite(raw)
    if bad:
        raise ConfigError(f"invalid config{context}:\n  {bad}: must be a finite number")
    import_plugins(raw, context)
    try:
        return ExperimentConfig.model_validate(raw)
    except ValidationError as err:
        head = f"invalid config{context}:\n"
        raise ConfigError(head + format_validation_error(err)) from None


def import_plugins(raw: dict, context: str = "") -> list[str]:
    """The config's ``plugins`` imported (their registrations are what the rest is validated against)."""
    from training.plugins import PluginError, load_plugins

    paths = raw.get("plugin_paths") or []
    if not isinstance(paths, list) or not all(isinstance(p, str) for p in paths):
        raise ConfigError(f"invalid config{context}:\n  plugin_paths: expected a list of directories, got {paths!r}")
    try:
        return load_plugins(raw.get("plugins"), paths)
    except PluginError as exc:
        raise ConfigError(f"invalid config{context}:\n  {exc}") from None


def absolute_plugin_paths(raw: dict, config_path: str | Path) -> dict:
    """``plugin_paths`` made absolute against the config's directory (the default when unset): resumes and
    workers read a copy of the config, elsewhere."""
    if raw.get("plugins"):
        here = Path(config_path).resolve().parent
        given = raw.get("plugin_paths", [str(here)])
        if isinstance(given, list):
            raw["plugin_paths"] = [str((here / p).resolve()) if isinstance(p, str) else p for p in given]
    return raw


MAX_CONFIG_BYTES = 1 << 20
MAX_CONFIG_DEPTH = 32


class _UniqueKeyLoader(yaml.SafeLoader):
    """Safe YAML that refuses a key given twice in one mapping (PyYAML silently keeps the last)."""

    def construct_mapping(self, node, deep=False):
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise ConfigError(f"duplicate key {key!r} at line {key_node.start_mark.line + 1} "
                                  f"(first at line {seen[key]})")
            seen[key] = key_node.start_mark.line + 1
        return super().construct_mapping(node, deep=deep)


def _depth(node: Any, limit: int, level: int = 0, seen: dict[int, int] | None = None) -> int:
    """Nesting depth, each container visited once (at its shallowest level is enough for a limit)."""
    if level > limit or not isinstance(node, (dict, list)):
        return level
    seen = {} if seen is None else seen
    if seen.get(id(node), limit + 1) <= level:
        return level
    seen[id(node)] = level
    children = node.values() if isinstance(node, dict) else node
    return max([level, *(_depth(c, limit, level + 1, seen) for c in children)])


def read_yaml(path: str | Path) -> dict:
    path = Path(path)
    if path.is_dir():
        raise ConfigError(f"config file {path} is a directory; give the path of a .yaml file")
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist")
    data = path.read_bytes()
    if len(data) > MAX_CONFIG_BYTES:
        raise ConfigError(f"config file {path} is {len(data)} bytes; a config is at most {MAX_CONFIG_BYTES}")
    if b"\0" in data:
        raise ConfigError(f"config file {path} is binary (it holds NUL bytes), not YAML text")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"config file {path} is not UTF-8 text (byte {exc.start}: {data[exc.start:exc.start + 1]!r})") from None
    try:
        raw = yaml.load(text, Loader=_UniqueKeyLoader)  # noqa: S506 (a SafeLoader subclass)
    except ConfigError as exc:
        raise ConfigError(f"config file {path}: {exc}") from None
    except RecursionError:
        raise ConfigError(f"config file {path} is nested too deeply (at most {MAX_CONFIG_DEPTH} levels)") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"config file {path} is not valid YAML: {exc}") from None
    if _depth(raw, MAX_CONFIG_DEPTH) > MAX_CONFIG_DEPTH:
        raise ConfigError(f"config file {path} is nested too deeply (at most {MAX_CONFIG_DEPTH} levels)")
    if not isinstance(raw, dict):
        raise ConfigError(f"config file {path} must hold a mapping of sections (data, model, ...)")
    return raw


def load_experiment(path: str | Path, sets: list[str] = (), variant: str | None = None
                    ) -> tuple[ExperimentConfig, dict]:
    """Read, apply a variant and ``--set`` overrides, validate; also validate every trial the sweep can
    produce, and every other variant of the file (schema only), so a typo there surfaces too.

    Returns the validated config and the raw (overridden) dict that trials are built from; ``variants``
    is dropped from it, since the sweep runs exactly one of them (or none).
    """
    raw = absolute_plugin_paths(read_yaml(path), path)
    variants = raw.get("variants") or {}
    if variant is not None:
        if not isinstance(variants, dict) or variant not in variants:
            allowed = ", ".join(sorted(variants)) if isinstance(variants, dict) and variants else "none in this file"
            raise ConfigError(f"--variant {variant!r}: no such variant in {path}; allowed: {allowed}")
        raw = _apply_variant(raw, variant)
    for text in sets:
        key, value = parse_override(text)
        raw = apply_override(raw, key, value)
    cfg = validate(raw)
    for name in cfg.variants:
        if name != variant:
            validate(_apply_variant(raw, name), context=f" in variants.{name}")
    raw = {k: v for k, v in raw.items() if k != "variants"}
    base = _without_sweep(raw)
    for where, point in sweep_points(cfg):
        trial = validate(apply_overrides(base, point), context=f" in {where}")
        _check_objectives(cfg, trial, where)
    return cfg, raw


def _apply_variant(raw: dict, name: str) -> dict:
    overrides = raw["variants"][name]
    if not isinstance(overrides, dict):
        raise ConfigError(f"variants.{name}: expected a mapping of dotted paths to values")
    return apply_overrides(raw, overrides)


def grid_points(cfg: ExperimentConfig) -> list[dict[str, Any]]:
    """The grid's trials, one point each; a config with neither a grid nor a search is its one trial."""
    return expand_grid(cfg.sweep.grid) or ([{}] if cfg.sweep.optuna is None else [])


def sweep_points(cfg: ExperimentConfig) -> list[tuple[str, dict[str, Any]]]:
    """Every grid point, Optuna's fixed settings, and each search axis at each end of its range (with
    the fixed settings): the trials that bound what a sweep can produce, each with where it comes from.
    A config without a sweep section is its own single point."""
    points = [(f"sweep.grid point {i} {point}", point) for i, point in enumerate(expand_grid(cfg.sweep.grid))]
    opt = cfg.sweep.optuna
    if opt is not None:
        points.append((f"sweep.optuna.fixed {opt.fixed}", dict(opt.fixed)))
        for axis, dist in opt.space.items():
            points += [(f"sweep.optuna.space.{axis}={value!r}", {**opt.fixed, axis: value})
                       for value in dist.endpoints()]
        points += opt.conditional_points()
    return points or [("config", {})]


def _check_objectives(cfg: ExperimentConfig, trial: ExperimentConfig, where: str) -> None:
    """An objective must be measurable in every trial the search can run."""
    if cfg.sweep.optuna is None or where.startswith("sweep.grid"):
        return
    metrics = [o.metric for o in cfg.sweep.optuna.objectives]
    if cfg.sweep.optuna.scheduler is not None and trial.data.val_fraction == 0:
        raise ConfigError(f"invalid config in {where}:\n  sweep.optuna.scheduler: early stopping watches validation "
                          "accuracy, but data.val_fraction is 0; raise data.val_fraction")
    used = metrics + [c.metric for c in cfg.sweep.optuna.parsed_constraints()]
    needs_export = sorted(set(used) & set(export_objective_names()))
    if needs_export and not trial.export.enabled:
        raise ConfigError(f"invalid config in {where}:\n  sweep.optuna: {', '.join(needs_export)} are measured on "
                          "the exported network; set export.enabled: true")
    if "val_accuracy" in metrics and trial.data.val_fraction == 0:
        raise ConfigError(f"invalid config in {where}:\n  sweep.optuna.objectives: val_accuracy needs a validation "
                          "split, but data.val_fraction is 0; raise data.val_fraction or optimise test_accuracy "
                          "(which then selects on the test set)")


def _without_sweep(raw: dict) -> dict:
    return {k: v for k, v in raw.items() if k != "sweep"}


def trial_config(raw: dict, overrides: dict[str, Any]) -> ExperimentConfig:
    return validate(apply_overrides(_without_sweep(raw), overrides))
