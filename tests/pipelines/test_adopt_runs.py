"""A driver stopped after a trial created its MLflow run but before the run id reached the driver's
record: the resume adopts that run for the slot, so the trial re-attaches instead of making a second
child run (found under load by the SIGKILL resume test: two runs for one slot, one left KILLED)."""
from pipelines.runner import adopt_unrecorded_runs
from pipelines.sweep_state import TrialRecords
from pipelines.tracking import RunLogger, default_tracking_uri, start_parent


def _trial(target, slot: str) -> str:
    return RunLogger.child(target, slot, {"slot": slot, "phase": slot.split("-")[0]}).run_id


def test_a_run_no_record_names_is_adopted_by_its_slot_once(tmp_path):
    target = start_parent(default_tracking_uri(tmp_path), "adopt", tmp_path / "mlartifacts", "sweep", {})
    records = TrialRecords(tmp_path)
    recorded = _trial(target, "grid-1")
    records.update("grid-1", mlflow_run_id=recorded, row={"status": "ok"})
    lost = _trial(target, "grid-3")  # created, then the driver died before the record was written
    other = _trial(target, "optuna-0")
    records.update("optuna-0", mlflow_run_id="an-earlier-run")  # a record that names a run keeps it

    assert adopt_unrecorded_runs(target, records) == 1
    assert records.get("grid-3") == {"mlflow_run_id": lost}
    assert records.get("grid-1")["mlflow_run_id"] == recorded
    assert records.get("optuna-0")["mlflow_run_id"] == "an-earlier-run" != other
    assert adopt_unrecorded_runs(target, records) == 0  # nothing left to adopt
