"""A sweep directory refuses a second driver while the first is alive, and not after it died."""
import subprocess
import sys

from pipelines.sweep_state import SweepState


def _state(**kw):
    return SweepState(name="s", config_hash="h", tracking_uri="sqlite:///x", experiment_id="1",
                      parent_run_id="p", store_uri="/s", study_path="/o", study_name="s", **kw)


def test_a_live_driver_is_seen_and_a_dead_one_is_not(tmp_path):
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        state = _state()
        state.claim()
        state.driver_pid = proc.pid
        state.save(tmp_path)
        assert SweepState.load(tmp_path).live_driver() == f"pid {proc.pid}"
    finally:
        proc.kill()
        proc.wait()
    assert SweepState.load(tmp_path).live_driver() is None
    state.status = "finished"
    assert state.live_driver() is None
