"""``docs/config.md``, generated from the pydantic schema so it cannot drift from what is validated.

    .venv/bin/python -m pipelines.config_reference > docs/config.md

``tests/pipelines/test_config_reference.py`` fails when the committed file is stale.
"""
from __future__ import annotations

import types
import typing
from typing import Any, Literal, Union

from pydantic import BaseModel
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

HEADER = """# Config reference

Generated from the schema by `python -m pipelines.config_reference` (a test fails when this file is
stale). Every field of an experiment YAML file, with its type, default, what is allowed and why it
exists. Paths are the dotted keys that `--set`, `sweep.grid` axes and `sweep.optuna.space` use.
Unknown keys are errors at every level.
"""


def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin is Literal:
        return "one of " + ", ".join(f"`{a!r}`" if not isinstance(a, str) else f"`{a}`" for a in args)
    if origin in (Union, types.UnionType):
        return " or ".join(_type_name(a) for a in args)
    if origin is typing.Annotated:
        return _type_name(args[0])
    if origin in (list, tuple):
        return f"list of {_type_name(args[0])}" if args else "list"
    if origin is dict:
        return f"mapping {_type_name(args[0])} -> {_type_name(args[1])}" if args else "mapping"
    if tp is type(None):
        return "null"
    if isinstance(tp, type) and issubclass(tp, BaseModel):
        return "section"
    return getattr(tp, "__name__", str(tp)).replace("typing.", "")


def _constraints(info: FieldInfo) -> str:
    words = []
    for m in info.metadata:
        for attr, sym in (("gt", ">"), ("ge", ">="), ("lt", "<"), ("le", "<="), ("min_length", "length >="),
                          ("pattern", "matches")):
            value = getattr(m, attr, None)
            if value is not None:
                words.append(f"{sym} `{value}`")
    return ", ".join(words)


def field_default(info: FieldInfo) -> Any:
    """A field's default (its factory called), or ``PydanticUndefined`` for a required field."""
    if info.default_factory is not None:
        try:
            return info.default_factory()
        except TypeError:
            return PydanticUndefined
    return info.default


def _default(info: FieldInfo, inherited: Any = PydanticUndefined) -> str:
    """The field's default, or the one its section's own default gives it (``prune.small_train``)."""
    value = inherited if inherited is not PydanticUndefined else field_default(info)
    if inherited is PydanticUndefined and info.is_required():
        return "**required**"
    if value is PydanticUndefined:
        return ""
    if isinstance(value, BaseModel):
        return "(see below)"
    if isinstance(value, list) and value and isinstance(value[0], BaseModel):
        return f"`{[v.model_dump(mode='json') for v in value]}`"
    return f"`{value!r}`"


def _models_in(tp: Any) -> list[type[BaseModel]]:
    if isinstance(tp, type) and issubclass(tp, BaseModel):
        return [tp]
    return [m for a in typing.get_args(tp) for m in _models_in(a)]


def _rows(model: type[BaseModel], prefix: str, defaults: BaseModel | None = None) -> list[str]:
    rows = []
    for name, info in model.model_fields.items():
        path = f"{prefix}{name}"
        doc = (info.description or "").replace("|", "\\|").replace("\n", " ")
        inherited = getattr(defaults, name) if defaults is not None else PydanticUndefined
        rows.append(f"| `{path}` | {_type_name(info.annotation)} | {_default(info, inherited)} | "
                    f"{_constraints(info)} | {doc} |")
        value = inherited if inherited is not PydanticUndefined else field_default(info)
        for sub in _models_in(info.annotation):
            if sub is not model and typing.get_origin(info.annotation) not in (dict, list):
                rows += _rows(sub, f"{path}.", value if isinstance(value, sub) else None)
    return rows


def _table(model: type[BaseModel], prefix: str = "") -> str:
    head = "| path | type | default | constraint | description |\n|---|---|---|---|---|"
    return head + "\n" + "\n".join(_rows(model, prefix))


def _section(title: str, model: type[BaseModel], prefix: str, intro: str = "") -> str:
    doc = (model.__doc__ or "").strip().split("\n\n")[0].replace("\n", " ")
    text = f"## {title}\n\n" + (f"{intro}\n\n" if intro else "") + (f"{doc}\n\n" if doc and not intro else "")
    return text + _table(model, prefix) + "\n"


def render() -> str:
    from distill.config import AUGMENT_OPS, DISTILL_METHODS
    from pruning.registry import METHODS
    from search.space import Categorical, FloatRange, IntRange, Objective, OptunaConfig
    from training.settings import (
        DATASET_NAMES,
        MODEL_OPTIONS,
        TV_PREFIX,
        TorchvisionOptions,
    )

    from .config import ExperimentConfig

    parts = [HEADER, _section("Experiment", ExperimentConfig, "", "The whole file; every section below is a field.")]
    parts.append("## Names\n\n"
                 f"- `data.name`: {', '.join(f'`{n}`' for n in DATASET_NAMES)}\n"
                 f"- `model.name`: {', '.join(f'`{n}`' for n in MODEL_OPTIONS)}, or `{TV_PREFIX}<name>` for any "
                 "torchvision classification model\n"
                 f"- `prune.method` (and the sanity-check ablations each accepts): "
                 + ", ".join(f"`{m}` ({', '.join(sorted(METHODS.get(m).ablations)) or 'none'})" for m in _methods())
                 + "\n"
                 f"- `prune.distill.method`: {', '.join(f'`{n}`' for n in DISTILL_METHODS)}\n"
                 f"- augmentation ops (`prune.small_augment`, `prune.distill.augment`, joined by `_`): images "
                 f"{', '.join(f'`{o}`' for o in AUGMENT_OPS['image'])}; signals "
                 f"{', '.join(f'`{o}`' for o in AUGMENT_OPS['signal'])}\n")
    seen: dict[type, list[str]] = {}
    for name, cls in MODEL_OPTIONS.items():
        seen.setdefault(cls, []).append(name)
    seen.setdefault(TorchvisionOptions, []).append(f"{TV_PREFIX}<name>")
    for cls, names in seen.items():
        parts.append(_section(f"`model.options` for {', '.join(f'`{n}`' for n in names)}", cls, "model.options."))
    for method in _methods():
        opts = METHODS.get(method).options
        if opts.model_fields:
            parts.append(_section(f"`prune.options` for `{method}`", opts, "prune.options."))
    for method, cls in _distill_options().items():
        parts.append(_section(f"`prune.distill.options` for `{method}`", cls, "prune.distill.options."))
    parts.append("## Search spaces (`sweep.optuna.space.<dotted path>`)\n\n"
                 "Each entry is one of these, chosen by `type`.\n")
    for cls in (FloatRange, IntRange, Categorical):
        parts.append(_table(cls, "") + "\n")
    parts.append(_section("Objectives (`sweep.optuna.objectives[]`)", Objective, ""))
    parts.append(_section("Optuna (`sweep.optuna`)", OptunaConfig, "sweep.optuna."))
    return "\n".join(parts)


def _methods() -> list[str]:
    """The built-in methods (plugins document themselves: ``prunetune list``)."""
    from pruning.registry import METHODS

    return [m for m in METHODS.names() if METHODS.origin(m) == "built-in"]


def _distill_options() -> dict[str, type[BaseModel]]:
    """Each built-in distillation method's own options, from its declaration (those modules import torch:
    only the reference and ``prunetune list`` load them); methods sharing a model share a table."""
    from distill.config import DISTILL_METHODS, DISTILLER_DECLS
    from training.registry import load_attr

    by_model: dict[type[BaseModel], list[str]] = {}
    for name in DISTILL_METHODS:
        by_model.setdefault(load_attr(DISTILLER_DECLS.get(name)), []).append(name)
    return {", ".join(names): cls for cls, names in by_model.items()}


if __name__ == "__main__":
    print(render(), end="")
