"""Trial records reach the driver's ``DIR``, wherever the trial ran.

A trial on another node has no ``DIR`` of the driver's (a cluster without a shared filesystem), yet
its slot's record (MLflow run id, row) is what ``resume`` and the results read. So trials read and
write records through a small actor pinned to the driver's node (a Ray driver always runs on a
node), which writes them into the driver's ``DIR/trials`` as ``TrialRecords`` always has: one
process writes them all, in order, each before the trial's call returns. The actor is owned by the
driver and ends with it; a SIGKILLed driver loses nothing already recorded.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from .sweep_state import SWEEP_FILE, TrialRecords

CALL_TIMEOUT_S = 120.0


class _RecordsActor:
    def __init__(self, out_dir: str) -> None:
        # The driver wrote sweep.json before starting this: not seeing it means this is not the driver's
        # machine, and records written here would be lost; better every trial fails saying so.
        if not (Path(out_dir) / SWEEP_FILE).is_file():
            raise RuntimeError(f"the trial records actor, placed on the driver's Ray node, does not see "
                               f"{Path(out_dir) / SWEEP_FILE}: the driver is not on the node Ray reports for it")
        self.records = TrialRecords(Path(out_dir))

    def get(self, slot: str) -> dict[str, Any]:
        return self.records.get(slot)

    def update(self, slot: str, fields: dict[str, Any]) -> dict[str, Any]:
        return self.records.update(slot, **fields)


class DriverRecords:
    """``TrialRecords``' ``get``/``update`` for a trial, carried out on the driver's node."""

    def __init__(self, actor) -> None:
        self.actor = actor

    def get(self, slot: str) -> dict[str, Any]:
        import ray

        return ray.get(self.actor.get.remote(slot), timeout=CALL_TIMEOUT_S)

    def update(self, slot: str, **fields: Any) -> dict[str, Any]:
        import ray

        return ray.get(self.actor.update.remote(slot, fields), timeout=CALL_TIMEOUT_S)


def start_driver_records(out_dir: Path) -> DriverRecords:
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    here = NodeAffinitySchedulingStrategy(ray.get_runtime_context().get_node_id(), soft=False)
    actor = ray.remote(_RecordsActor).options(num_cpus=0, scheduling_strategy=here).remote(str(Path(out_dir).resolve()))
    return DriverRecords(actor)


def stop_driver_records(records: DriverRecords | None) -> None:
    if records is None:
        return
    import ray

    try:
        ray.kill(records.actor)
    except Exception:  # noqa: BLE001 (Ray already shut down: the actor went with it)
        pass
