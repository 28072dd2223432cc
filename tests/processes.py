"""Which processes a test started: everything in a session it created with ``start_new_session``."""
from pathlib import Path


def session_pids(sid: int) -> set[int]:
    """Live processes in session ``sid``: its leader and whatever it spawned, unless they left the session."""
    pids = set()
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[3]) == sid and fields[0] != "Z":  # fields after the name: state, ppid, pgrp, session
            pids.add(int(stat.parent.name))
    return pids


def children(pid: int) -> set[int]:
    """Live direct children of ``pid``."""
    kids = set()
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[1]) == pid and fields[0] != "Z":
            kids.add(int(stat.parent.name))
    return kids
