"""Offline validation of ``ray_cluster.yaml``.

Ray exposes no public validator; ``prepare_config`` + ``validate_config`` are private, so they are
wrapped here, in one place, against the pinned Ray version.
"""
from __future__ import annotations

from pathlib import Path

import yaml


def validate_cluster_file(path: str | Path) -> dict:
    from ray.autoscaler._private.util import prepare_config, validate_config

    raw = yaml.safe_load(Path(path).read_text())
    if not isinstance(raw, dict):
        raise ValueError(f"{path}: expected a mapping")
    prepared = prepare_config(raw)
    validate_config(prepared)
    return prepared
