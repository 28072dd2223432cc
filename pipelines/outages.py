"""Failures of the sweep's surroundings, not of a trial: the disk the sweep writes to is full, or the
tracking server is out of reach. A trial that meets one records no row (its slot stays unfinished, so
``resume`` runs it again) and asks Tune to stop the phase; the sweep then stops with one line naming
the path or URI, marked interrupted, instead of turning every remaining trial into an error row.
"""
from __future__ import annotations

import errno
from typing import Any

from .tracking_watch import describe_unreachable, is_unreachable

FATAL = "prunetune_fatal"  # the key a trial reports its outage under


class SweepInterrupted(Exception):
    """The sweep was stopped (Ctrl-C) before every trial ran; ``prunetune resume DIR`` finishes it."""


class TrackingLost(SweepInterrupted):
    """The tracking server stopped answering; the sweep stopped, resumable once it is back."""


class SweepOutage(SweepInterrupted):
    """A trial met a full disk or an unreachable server; the sweep stopped, resumable once fixed."""


_FULL_TEXT = ("No space left on device", "database or disk is full", "Disk quota exceeded", "[errno 28]")


def _chain(exc: BaseException | None):
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        yield exc
        exc = exc.__cause__ or exc.__context__


def out_of_space(exc: BaseException) -> str | None:
    """What ran out of space ("<path>: No space left on device"), if that is why ``exc`` was raised."""
    for e in _chain(exc):
        if isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT):
            return f"{e.filename}: {e.strerror}" if e.filename else (e.strerror or "No space left on device")
        text = str(e)
        if any(t in text for t in _FULL_TEXT):
            first = text.split("[SQL:")[0].split("(Background on this error")[0]
            return " ".join(first.split())[:300]
    return None


def outage(exc: BaseException) -> str | None:
    """Why the sweep, not this trial, cannot go on; None for an ordinary trial error."""
    full = out_of_space(exc)
    if full is not None:
        return f"out of disk space ({full})"
    if is_unreachable(exc):
        return f"the tracking server is out of reach ({describe_unreachable(exc)})"
    return None


def fatal_stopper():
    """A Tune stopper that ends the whole phase once a trial reported an outage (``FATAL``)."""
    from ray import tune

    class FatalStopper(tune.Stopper):
        def __init__(self) -> None:
            self.reason: str | None = None

        def __call__(self, trial_id: str, result: dict[str, Any]) -> bool:
            if result.get(FATAL):
                self.reason = self.reason or str(result[FATAL])
                return True
            return False

        def stop_all(self) -> bool:
            return self.reason is not None

    return FatalStopper()
