"""Bad inputs outside the config file (issue 19, item 7): a store path that cannot be written, garbage where
a sweep's records or a store's index should be, a read-only ``prune --out``, a YAML key read as a boolean.
Each is refused in-process with exit 2, the field or path named, no traceback, nothing written and no Ray
started; an unreadable store index file is skipped with a warning naming it. Each case builds its input in
``tmp_path`` and returns the command line, what stderr must name, and the exit code."""
from __future__ import annotations

import os
from pathlib import Path

import pytest
import ray

from pipelines.cli import main
from pipelines.sweep_state import STUDY_FILE, SWEEP_FILE, SweepState
from tests.pipelines.tiny_config import TINY

GARBAGE = bytes(range(256))[::-1] * 8  # not UTF-8, not JSON, not SQLite, not Parquet
BASE = TINY
OPTUNA = ("sweep: {optuna: {num_samples: 2, sampler: random, "
          "space: {prune.sparsity: {type: float, low: 0.3, high: 0.6}}}}\n")
PRUNE = ["prune", "--model", "mlp", "--method", "random", "--sparsity", "0.5", "--input-shape", "1,8",
         "--num-classes", "3"]


def _config(tmp_path: Path, text: str) -> str:
    (tmp_path / "c.yaml").write_text(text)
    return str(tmp_path / "c.yaml")


def _run_with(tmp_path: Path, extra: str) -> list[str]:
    return ["run", _config(tmp_path, BASE + extra), "--out", str(tmp_path / "out")]


def _a_file(tmp_path: Path) -> Path:
    (tmp_path / "a-file").write_text("in the way")
    return tmp_path / "a-file"


def _sweep_dir(tmp_path: Path, config: str) -> Path:
    """An interrupted sweep's directory: its config and sweep.json, whose driver is gone."""
    out = tmp_path / "out"
    out.mkdir()
    (out / "config.yaml").write_text(config)
    SweepState(name="t", config_hash="h", tracking_uri=f"sqlite:///{out}/mlflow.db", experiment_id="1",
               parent_run_id="p", store_uri=str(out / "store"), study_path=str(out / STUDY_FILE),
               study_name="t", status="interrupted").save(out)
    (out / "mlflow.db").touch()  # present, as in a real sweep (a missing one is refused first)
    return out


def _garbage_sweep_json(tmp_path: Path) -> Path:
    out = tmp_path / "out"
    out.mkdir()
    (out / SWEEP_FILE).write_bytes(GARBAGE)
    return out


def _garbage_index(tmp_path: Path) -> tuple[Path, Path]:
    """A store with one real stage run and one garbage file among its index files."""
    from training.store import ArtifactStore

    root = tmp_path / "store"
    ArtifactStore(root).get_or_compute("pretrain", "k1", lambda out: (out / "w.bin").write_bytes(b"w") and None)
    bad = root / "index" / "0-garbage.parquet"
    bad.write_bytes(GARBAGE)
    return root, bad


def _store_uri_case(make):
    def case(tmp_path):
        uri, named = make(tmp_path)
        return _run_with(tmp_path, f"store: {{uri: '{uri}'}}\n"), [f"store.uri {uri}", named], 2
    return case


def _sweep_json_case(command):
    def case(tmp_path):
        out = _garbage_sweep_json(tmp_path)
        argv = _run_with(tmp_path, "")[:2] + ["--out", str(out)] if command == "run" else [command, str(out)]
        return argv, [f"{out / SWEEP_FILE} is not a sweep record", "--out NEW_DIR"], 2
    return case


def _garbage_study(command):
    def case(tmp_path):
        out = _sweep_dir(tmp_path, BASE + OPTUNA)
        (out / STUDY_FILE).write_bytes(GARBAGE)
        argv = ["resume", str(out)] if command == "resume" else ["run", str(out / "config.yaml"), "--out", str(out)]
        return argv, [f"{out / STUDY_FILE} is not a readable Optuna study", "file is not a database"], 2
    return case


def _garbage_results(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "results.parquet").write_bytes(GARBAGE)
    return ["report", str(out)], [f"{out / 'results.parquet'} is not a readable results table"], 2


def _garbage_index_case(tmp_path):
    root, bad = _garbage_index(tmp_path)
    return ["store", str(root)], ["prunetune: warning:", f"skipping the unreadable index file {bad}"], 0


def _checkpoint_case(make, what):
    def case(tmp_path):
        return PRUNE + ["--checkpoint", str(make(tmp_path)), "--out", str(tmp_path / "out")], ["--checkpoint", what], 2
    return case


CASES = {
    "store.uri is a file": _store_uri_case(lambda t: (_a_file(t), "exists and is not a directory")),
    "store.uri file:// under a file": _store_uri_case(
        lambda t: (f"file://{_a_file(t)}/store", f"{t / 'a-file'} is not a directory")),
    "store.uri read-only (/proc)": _store_uri_case(
        lambda t: ("file:///proc/prunetune-store", "cannot write in /proc")),
    "store.uri read-only path (/proc)": _store_uri_case(lambda t: ("/proc/prunetune-store", "cannot write in /proc")),
    **{f"garbage sweep.json: {c}": _sweep_json_case(c) for c in ("run", "resume", "store", "ui")},
    "garbage sweep.json: report": lambda t: (["report", str(_garbage_sweep_json(t))], ["has no results.parquet"], 2),
    **{f"garbage optuna.db: {c}": _garbage_study(c) for c in ("resume", "run")},
    "garbage results.parquet: report": _garbage_results,
    "a garbage directory: report": lambda t: (["report", str(t)], [f"{t} has no results.parquet"], 2),
    "garbage store index file: skipped, named": _garbage_index_case,
    "prune --out read-only (/proc)": lambda t: (
        PRUNE + ["--out", "/proc/x"], ["--out /proc/x: cannot write in /proc"], 2),
    "prune --out under a file": lambda t: (
        PRUNE + ["--out", f"{_a_file(t)}/out"], [f"--out {t / 'a-file'}/out: {t / 'a-file'} is not a directory"], 2),
    "prune --checkpoint a directory": _checkpoint_case(lambda t: t, "is a directory"),
    "prune --checkpoint /dev/zero": _checkpoint_case(lambda t: "/dev/zero", "/dev/zero is not a regular file"),
    "YAML true: key": lambda t: (
        _run_with(t, OPTUNA.replace("}}}}", "}, train.nesterov: {type: categorical, choices: [true, false]}}, "
                                    "conditional: {train.nesterov: {true: {train.momentum: "
                                    "{type: float, low: 0.5, high: 0.9}}}}}}")),
        ["sweep.optuna.conditional.train.nesterov.true: this key must be text", "quote it"], 2),
}


def _tree(root: Path) -> dict[str, tuple[int, int] | None]:
    """Every file with its size and time, every directory by name (a write probe touches its time only)."""
    return {str(p.relative_to(root)): None if p.is_dir() else (p.stat().st_size, p.stat().st_mtime_ns)
            for p in root.rglob("*")}


@pytest.mark.parametrize("label", list(CASES))
def test_a_bad_input_is_named_without_a_traceback_and_nothing_is_written(tmp_path, capsys, label):
    argv, named, code = CASES[label](tmp_path)
    capsys.readouterr()
    before = _tree(tmp_path)
    assert main(argv) == code
    out, err = capsys.readouterr()
    for fragment in named:
        assert fragment in err, err
    assert "Traceback" not in out + err
    if code:
        assert err.startswith("prunetune: error:"), err
    assert _tree(tmp_path) == before
    assert not ray.is_initialized()


def test_the_rest_of_a_store_index_is_listed_past_a_garbage_file(tmp_path, capsys):
    root, bad = _garbage_index(tmp_path)
    assert main(["store", str(root)]) == 0
    out, err = capsys.readouterr()
    assert "pretrain" in out and "1 stage runs: 1 done" in out
    assert err.count("skipping") == 1 and str(bad) in err


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes in a chmod 0o555 directory (the /proc cases stand in)")
def test_a_read_only_store_directory_is_refused(tmp_path, capsys):
    store = tmp_path / "ro"
    store.mkdir()
    store.chmod(0o555)
    try:
        assert main(_run_with(tmp_path, f"store: {{uri: '{store}/s'}}\n")) == 2
        assert f"store.uri {store}/s: cannot write in {store}" in capsys.readouterr().err
    finally:
        store.chmod(0o755)
