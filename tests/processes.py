"""Which processes a test started: everything in a session it created with ``start_new_session``."""
import os
import signal
from pathlib import Path
from typing import Iterator


def _live() -> Iterator[tuple[int, list[str]]]:
    """(pid, the /proc stat fields after the name: state, ppid, pgrp, session, ...) of live processes."""
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if fields[0] != "Z":
            yield int(stat.parent.name), fields


def session_pids(sid: int) -> set[int]:
    """Live processes in session ``sid``: its leader and whatever it spawned, unless they left the session."""
    return {pid for pid, fields in _live() if int(fields[3]) == sid}


def children(pid: int) -> set[int]:
    """Live direct children of ``pid``."""
    return {child for child, fields in _live() if int(fields[1]) == pid}


def kill_groups(*pgids: int) -> None:
    """SIGKILL every process group a test started (a group already gone is fine)."""
    for pgid in pgids:
        try:
            os.killpg(pgid, signal.SIGKILL)
        except ProcessLookupError:
            pass
