"""What a sweep directory remembers so that it can be resumed: ``sweep.json`` and one record per trial.

``sweep.json`` names the config (and its hash), the MLflow parent run, the store and the study, and
whether the sweep finished. ``trials/<slot>.json`` holds, per trial slot (grid point ``grid-<i>``, or
Optuna trial ``optuna-<number>``), its MLflow run id and, once it ended, its result row: a resumed
sweep re-attaches to that run instead of creating a second one, and skips slots that ended.
"""
from __future__ import annotations

import json
import os
import re
import socket
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from training.identity import content_hash
from training.io import atomic_write_text

SWEEP_FILE = "sweep.json"
STUDY_FILE = "optuna.db"  # the Optuna phase's study, beside it


def config_hash(raw: dict) -> str:
    """Which config a sweep directory belongs to (``data.root`` already resolved)."""
    return content_hash(raw)


@dataclass
class SweepState:
    name: str
    config_hash: str
    tracking_uri: str
    experiment_id: str
    parent_run_id: str
    store_uri: str
    study_path: str
    study_name: str
    status: str = "running"  # running | interrupted | finished | failed
    attempts: int = 1
    driver_host: str = ""
    driver_pid: int = 0

    def claim(self) -> None:
        """This process drives the sweep now (a second driver on the same directory is refused)."""
        self.driver_host, self.driver_pid = socket.gethostname(), os.getpid()

    def live_driver(self) -> str | None:
        """'host pid N' of a driver that is still running this sweep, if one is."""
        if self.status != "running" or not self.driver_pid or self.driver_pid == os.getpid():
            return None
        if self.driver_host != socket.gethostname():
            return f"host {self.driver_host} pid {self.driver_pid} (cannot be checked from here)"
        try:
            os.kill(self.driver_pid, 0)
        except ProcessLookupError:
            return None
        except PermissionError:
            pass
        return f"pid {self.driver_pid}"

    def save(self, out_dir: Path) -> None:
        atomic_write_text(out_dir / SWEEP_FILE, json.dumps(asdict(self), indent=2))

    @classmethod
    def load(cls, out_dir: Path) -> "SweepState | None":
        path = out_dir / SWEEP_FILE
        if not path.is_file():
            return None
        try:
            return cls(**json.loads(path.read_text(encoding="utf-8")))
        except (ValueError, TypeError) as exc:  # not UTF-8, not JSON, not the record's fields
            raise ValueError(f"{path} is not a sweep record ({type(exc).__name__}: {_first_line(exc)}); restore it "
                             f"from a backup, or start afresh elsewhere, reusing its finished stages: prunetune run "
                             f"{out_dir / 'config.yaml'} --out NEW_DIR --set store.uri={out_dir / 'store'}") from None


def _first_line(exc: Exception) -> str:
    return (str(exc).splitlines() or [""])[0][:200]


_SLOT = re.compile(r"^(grid|optuna)-\d+$")


class TrialRecords:
    """One small JSON file per trial slot: no shared file, so concurrent trials never race."""

    def __init__(self, out_dir: Path) -> None:
        self.root = Path(out_dir) / "trials"

    def _path(self, slot: str) -> Path:
        if not _SLOT.match(slot):
            raise ValueError(f"bad trial slot {slot!r}")
        return self.root / f"{slot}.json"

    def get(self, slot: str) -> dict[str, Any]:
        path = self._path(slot)
        if not path.is_file():
            return {}
        try:
            return json.loads(path.read_text())
        except json.JSONDecodeError:
            return {}  # a torn record only loses the run id: the trial's stages are in the store

    def update(self, slot: str, **fields: Any) -> dict[str, Any]:
        record = {**self.get(slot), **fields}
        atomic_write_text(self._path(slot), json.dumps(record, indent=2, default=str))
        return record

    def all(self) -> dict[str, dict[str, Any]]:
        if not self.root.is_dir():
            return {}
        return {p.stem: self.get(p.stem) for p in sorted(self.root.glob("*.json"))}
