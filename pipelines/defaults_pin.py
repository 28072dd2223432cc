"""Defaults pinned to the versions of what reads them.

Stage keys leave out every setting at its default (``training.keys``), so a changed default would
silently reuse store entries computed with the old value. This module fingerprints the defaults of every
built-in settings model, method, model, dataset and distiller, next to the version of each thing that
salts the keys built from it (the stages that read a settings model; a method's, model's or dataset's
own registration version). ``tests/defaults_pin.json`` holds the fingerprint;
``tests/pipelines/test_defaults_pin.py`` fails when a default moved and nothing that reads it was bumped.

    .venv/bin/python -m pipelines.defaults_pin --write     # after bumping the versions it asks for
"""
from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from pydantic import BaseModel
from pydantic_core import PydanticUndefined

PIN = Path(__file__).resolve().parents[1] / "tests" / "defaults_pin.json"


def defaults(model: type[BaseModel]) -> dict[str, Any]:
    """Every field's default as JSON (nested models dumped whole; required fields marked)."""
    from .config_reference import field_default

    out: dict[str, Any] = {}
    for name, info in model.model_fields.items():
        value = field_default(info)
        if value is PydanticUndefined:
            value = "<required>"
        if isinstance(value, BaseModel):
            value = value.model_dump(mode="json")
        out[name] = json.loads(json.dumps(value, default=str))
    return out


def _stage_versions(section: str, field: str | None = None) -> dict[str, int]:
    """The stages reading a whole section, or (with ``field``) that field of it, with their versions."""
    from .trial import stage_names

    wanted = {section} | ({f"{section}.{field}"} if field else set())
    return {n: cls.version for n, cls in stage_names().items() if wanted & set(cls.reads)}


def fingerprint() -> dict[str, dict[str, Any]]:
    """entry -> {"defaults": ..., "versions": {what salts its keys: version}} for every built-in."""
    from distill.config import DISTILL_METHODS, DISTILLER_DECLS, DistillConfig
    from pruning.config import ExportConfig, PruneConfig
    from pruning.registry import METHODS
    from training.registry import load_attr
    from training.settings import (
        DATASET_DECLS,
        DATASET_NAMES,
        MODEL_DECLS,
        MODEL_OPTIONS,
        DataConfig,
        TrainConfig,
    )

    out: dict[str, dict[str, Any]] = {}
    for section, model in (("data", DataConfig), ("train", TrainConfig), ("prune", PruneConfig),
                           ("distill", DistillConfig), ("export", ExportConfig)):
        for field, value in defaults(model).items():  # one entry per field: only its readers need a bump
            out[f"settings:{section}.{field}"] = {"defaults": {field: value},
                                                  "versions": _stage_versions(section, field)}
    for name in METHODS.names():
        spec = METHODS.get(name)
        if spec.origin == "built-in":
            out[f"method:{name}"] = {"defaults": defaults(spec.options), "versions": {"method": spec.version}}
    for name in MODEL_OPTIONS:
        decl = MODEL_DECLS.get(name)
        out[f"model:{name}"] = {"defaults": defaults(decl.options), "versions": {"model": decl.version}}
    for name in DATASET_NAMES:
        decl = DATASET_DECLS.get(name)
        out[f"dataset:{name}"] = {"defaults": defaults(decl.options), "versions": {"dataset": decl.version}}
    for name in DISTILL_METHODS:
        out[f"distiller:{name}"] = {"defaults": defaults(load_attr(DISTILLER_DECLS.get(name))),
                                    "versions": _stage_versions("distill")}
    return out


def _changes(old: dict[str, Any], new: dict[str, Any]) -> str:
    keys = sorted(set(old) | set(new))
    return ", ".join(f"{k}: {old.get(k, '<absent>')!r} -> {new.get(k, '<absent>')!r}"
                     for k in keys if old.get(k, "<absent>") != new.get(k, "<absent>"))


def _how_to_bump(entry: str) -> str:
    kind = entry.split(":")[0]
    return {"settings": "bump the `version` of these stages",
            "method": "bump its register_method(..., version=N) (it salts the stage that makes its mask)",
            "model": "bump its version (register_model / training.settings.Declared)",
            "dataset": "bump its version (register_dataset / training.settings.Declared)",
            "distiller": "bump the `version` of these stages"}[kind]


def problems(pinned: dict[str, dict[str, Any]], current: dict[str, dict[str, Any]]) -> list[str]:
    """What is wrong between the pin and the code; empty when they agree."""
    repin = "then re-pin: python -m pipelines.defaults_pin --write"
    out: list[str] = []
    for entry in sorted(set(pinned) | set(current)):
        if entry not in current:
            out.append(f"{entry} is pinned but no longer exists; {repin}")
            continue
        if entry not in pinned:
            out.append(f"{entry} is new and not pinned; {repin}")
            continue
        old, new = pinned[entry], current[entry]
        if old["defaults"] != new["defaults"]:
            # every reader must move: one stage left at its version would reuse entries made with the old value
            kept = {k: v for k, v in new["versions"].items() if old["versions"].get(k) == v}
            if kept:
                readers = ", ".join(f"{k} {v}" for k, v in kept.items())
                out.append(f"defaults of {entry} changed ({_changes(old['defaults'], new['defaults'])}) but what reads "
                           f"them keeps its version ({readers}): {_how_to_bump(entry)}, so store entries computed "
                           f"with the old defaults are not reused; {repin}")
            elif not new["versions"]:
                out.append(f"defaults of {entry} changed; no stage declares that it reads them, so no key depends on "
                           f"them; {repin}")
            else:
                out.append(f"defaults of {entry} changed and every reader's version was bumped; {repin}")
        elif old["versions"] != new["versions"]:
            out.append(f"versions of {entry} changed ({_changes(old['versions'], new['versions'])}); {repin}")
    return out


def load_pin(path: Path = PIN) -> dict[str, dict[str, Any]]:
    return json.loads(path.read_text())


def write_pin(path: Path = PIN) -> None:
    path.write_text(json.dumps(fingerprint(), indent=1, sort_keys=True) + "\n")


if __name__ == "__main__":
    if sys.argv[1:] == ["--write"]:
        write_pin()
        print(f"wrote {PIN}")
    else:
        found = problems(load_pin(), fingerprint())
        print("\n".join(found) or "defaults match the pin")
        sys.exit(1 if found else 0)
