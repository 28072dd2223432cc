"""Stage keys (OpenLTH style): a hash of exactly the non-default settings that change a result.

A settings model marks the fields that never change what is computed (paths, download flags, the
device, evaluation batch size, log and checkpoint cadence) in its ``NON_RESULT`` class attribute.
Fields equal to their type's default are left out too, so adding a new defaulted field to any
settings model changes no existing key; a stage's ``version`` is the salt that changes when its
code changes what it computes.
"""
from __future__ import annotations

import hashlib
import json
from typing import Any, Iterable

from pydantic import BaseModel


def canonical(settings: BaseModel) -> dict[str, Any]:
    """The settings as JSON, without non-result fields and without fields at their defaults.

    Nested models are compared field by field against their own type's defaults, so a nested model
    whose every field is at its default disappears entirely.
    """
    hook = getattr(settings, "key_settings", None)
    if callable(hook):  # e.g. a model config whose options are a typed model of their own
        return hook()
    skip = set(getattr(type(settings), "NON_RESULT", ()))
    dumped = settings.model_dump(mode="json")
    out: dict[str, Any] = {}
    for name, field in type(settings).model_fields.items():
        if name in skip:
            continue
        value = getattr(settings, name)
        if isinstance(value, BaseModel):
            sub = canonical(value)
            if sub:
                out[name] = sub
            continue
        if not field.is_required() and _jsonable(field.get_default(call_default_factory=True)) == dumped[name]:
            continue
        out[name] = dumped[name]
    extra = getattr(settings, "key_extra", None)  # e.g. a plugin dataset's version
    if callable(extra):
        out.update(extra())
    return out


def _jsonable(value: Any) -> Any:
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    return json.loads(json.dumps(value, default=str))


def stage_key(name: str, version: int, settings: dict[str, Any], inputs: Iterable[str] = (), length: int = 16) -> str:
    """``hash(name, version, canonical settings, sorted input keys)``; floats keep their repr."""
    text = json.dumps(
        {"stage": name, "version": version, "settings": settings, "inputs": sorted(inputs)},
        sort_keys=True, separators=(",", ":"),
    )
    return hashlib.sha256(text.encode()).hexdigest()[:length]
