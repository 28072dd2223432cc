"""Generic artifact I/O every package shares: safe torch loading and atomic writes.

It sits at the bottom of the package stack (``training``) so that ``pruning`` and ``distill`` can both
use it without importing each other.
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path


class CorruptArtifactError(ValueError):
    """A saved mask or checkpoint that cannot be read back as what it claims to be."""


def load_artifact(
    path: str | os.PathLike, what: str, error: type[Exception] = CorruptArtifactError, hint: str = ""
) -> object:
    """``torch.load(weights_only=True)`` on CPU; an unreadable file raises ``error`` naming ``what``,
    the path and the useful line of torch's message (its weights_only errors carry a page of advice)."""
    import torch  # here, not at the top: the sweep's records and atomic writes must not cost a torch import

    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # truncated zip, foreign pickle, not a torch file: several types
        text = str(exc)
        if "WeightsUnpickler error:" in text:
            text = text.split("WeightsUnpickler error:", 1)[1]
        lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
        reason = lines[0] if lines else type(exc).__name__
        raise error(f"{what} {path} cannot be read ({reason}){hint}") from exc


def atomic_torch_save(obj: object, path: str | os.PathLike) -> None:
    """Write via a temporary file and rename, so a killed run never leaves a truncated artifact."""
    import torch

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    os.close(fd)
    try:
        torch.save(obj, tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
