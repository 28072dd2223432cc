"""What a sweep directory remembers so that it can be resumed: ``sweep.json`` and one record per trial.

``sweep.json`` names the config (and its hash), the MLflow parent run, the store and the study, and
whether the sweep finished. ``trials/<slot>.json`` holds, per trial slot (grid point ``grid-<i>``, or
Optuna trial ``optuna-<number>``), its MLflow run id and, once it ended, its result row: a resumed
sweep re-attaches to that run instead of creating a second one, and skips slots that ended.
"""
from __future__ import annotations

import errno
import json
import os
import re
import socket
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from training.identity import content_hash
from training.io import atomic_write_text
from training.processes import pid_alive

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
    directory: str = ""  # where it was saved last: found anywhere else, the sweep was moved or copied
    retries: list[dict[str, Any]] = field(default_factory=list)  # resume --retry: which slots, with what --set

    def moved_from(self, out_dir: Path) -> Path | None:
        """The directory this sweep was saved in, if it is not ``out_dir`` (a copy or a move)."""
        if self.directory and Path(self.directory) != Path(out_dir).resolve():
            return Path(self.directory)
        return None

    def require_files(self, out_dir: Path) -> None:
        missing = self.missing_files()
        if missing:
            raise ValueError(f"{out_dir} is a sweep whose recorded files are gone: {'; '.join(missing)}. Copy the "
                             "whole directory (cp -a), or start afresh with prunetune run and another --out")

    def missing_files(self) -> list[str]:
        """Recorded files of the sweep's own that are gone (a partial copy): a resume must not create
        new empty ones in their place and lose the link to the runs and trials they held."""
        missing = []
        if self.tracking_uri.startswith(SQLITE) and not Path(self.tracking_uri.removeprefix(SQLITE)).is_file():
            missing.append(f"{self.tracking_uri.removeprefix(SQLITE)} (the MLflow runs)")
        return missing

    def claim(self) -> None:
        """This process drives the sweep now (a second driver on the same directory is refused)."""
        self.driver_host, self.driver_pid = socket.gethostname(), os.getpid()

    def live_driver(self) -> str | None:
        """'host pid N' of a driver that is still running this sweep, if one is."""
        if self.status != "running" or not self.driver_pid or self.driver_pid == os.getpid():
            return None
        if self.driver_host != socket.gethostname():
            return f"host {self.driver_host} pid {self.driver_pid} (cannot be checked from here)"
        return f"pid {self.driver_pid}" if pid_alive(self.driver_pid) else None

    def save(self, out_dir: Path) -> None:
        """Paths inside ``out_dir`` are written relative to it, so a copied or moved sweep directory
        reads its own files, never the original's; outside paths (a shared store, a server) as given."""
        out_dir = Path(out_dir).resolve()
        self.directory = str(out_dir)
        record = asdict(self)
        for name in LOCAL_FIELDS:
            record[name] = _relative(record[name], out_dir)
        text = json.dumps(record, indent=2)
        try:
            atomic_write_text(out_dir / SWEEP_FILE, text)
        except OSError as exc:
            if exc.errno != errno.ENOSPC or not (out_dir / SWEEP_FILE).is_file():
                raise
            # A full disk has no room for a second copy; the record rewritten in place needs no new
            # block (a few hundred bytes, as long as before), so the sweep is not left "running".
            with open(out_dir / SWEEP_FILE, "r+", encoding="utf-8") as f:
                f.write(text)
                f.truncate()

    @classmethod
    def load(cls, out_dir: Path) -> "SweepState | None":
        path = out_dir / SWEEP_FILE
        if not path.is_file():
            return None
        try:
            state = cls(**json.loads(path.read_text(encoding="utf-8")))
        except (ValueError, TypeError) as exc:  # not UTF-8, not JSON, not the record's fields
            raise ValueError(f"{path} is not a sweep record ({type(exc).__name__}: {_first_line(exc)}); restore it "
                             f"from a backup, or start afresh elsewhere, reusing its finished stages: prunetune run "
                             f"{out_dir / 'config.yaml'} --out NEW_DIR --set store.uri={out_dir / 'store'}") from None
        for name in LOCAL_FIELDS:
            setattr(state, name, _absolute(getattr(state, name), Path(out_dir).resolve()))
        return state


SQLITE = "sqlite:///"
LOCAL_FIELDS = ("tracking_uri", "store_uri", "study_path")
_HERE = "./"


def _relative(value: str, out_dir: Path) -> str:
    """``./x`` (or ``sqlite:///./x``) for a path inside ``out_dir``; anything else unchanged."""
    scheme = SQLITE if value.startswith(SQLITE) else ""
    path = value.removeprefix(scheme)
    if "://" in path or not path.startswith("/"):
        return value
    try:
        return scheme + _HERE + str(Path(path).resolve().relative_to(out_dir))
    except ValueError:
        return value


def _absolute(value: str, out_dir: Path) -> str:
    scheme = SQLITE if value.startswith(SQLITE) else ""
    path = value.removeprefix(scheme)
    return scheme + str(out_dir / path.removeprefix(_HERE)) if path.startswith(_HERE) else value


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

    def retry(self, slot: str, overrides: dict[str, Any]) -> None:
        """Forget the slot's result (it runs again), keep its MLflow run id (the run is re-attached)."""
        record = {k: v for k, v in self.get(slot).items() if k != "row"}
        atomic_write_text(self._path(slot), json.dumps({**record, "retry_overrides": overrides}, indent=2,
                                                       default=str))

    def all(self) -> dict[str, dict[str, Any]]:
        if not self.root.is_dir():
            return {}
        return {p.stem: self.get(p.stem) for p in sorted(self.root.glob("*.json"))}
