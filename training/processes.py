"""Whether a process recorded earlier (a lease holder, a sweep's driver) still exists on this machine.

One check for every place that records a pid and later asks about it, so a pid reused by a later
process is told apart the same way everywhere.
"""
from __future__ import annotations

import os


def process_started(pid: int) -> str | None:
    """When the process started (Linux: /proc/<pid>/stat field 22), to tell it from a later one that got
    its pid; None where that cannot be read."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def pid_alive(pid: int, started: str | None = None) -> bool:
    """The process exists (owned by anyone) and, given ``started``, is the one that started then."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by another user
        pass
    return started is None or process_started(pid) in (None, started)
