"""Bring your own method, model and dataset: the example plugin (installed, found through entry points)
runs a whole sweep, a single-file module named in ``plugins:`` is imported before validation, and a
plugin that cannot be imported or a typo in its options is refused before Ray starts."""
from __future__ import annotations

import shutil
import subprocess
import sys
import textwrap
from importlib.metadata import entry_points
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import torch

from pipelines.cli import main
from pipelines.config import ConfigError, load_experiment
from pruning.mask import Mask, prunable_parameters
from pruning.scorers import ScoringBatches
from pruning.select import kept_count

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "plugin"

SWEEP = textwrap.dedent("""
    name: plugged
    data: {name: sklearn_tabular, options: {table: wine}, val_fraction: 0.15, test_fraction: 0.25}
    model: {name: mlp_bn, options: {widths: [32, 16]}}
    train: {epochs: 2, batch_size: 32, optimizer: adam, lr: 0.003, weight_decay: 0.0}
    prune: {method: fisher, sparsity: 0.8, examples_per_class: 5, options: {microbatch: 4}}
    resources: {cpu: 1}
    ray: {num_cpus: 2}
    sweep:
      max_concurrent_trials: 2
      grid:
        - {prune.sparsity: [0.8, 0.95]}
""")


def _installed() -> None:
    names = {ep.name for ep in entry_points(group="prunetune.methods")}
    assert "fisher" in names, "examples/plugin is not installed (make test installs it: pip install -e examples/plugin)"


@pytest.mark.slow
def test_the_installed_example_plugin_runs_a_sweep(tmp_path):
    _installed()
    cfg = tmp_path / "sweep.yaml"
    cfg.write_text(SWEEP)
    out = tmp_path / "out"
    done = subprocess.run([sys.executable, "-m", "pipelines.cli", "run", str(cfg), "--out", str(out)],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    rows = pq.read_table(out / "results.parquet").to_pylist()
    assert len(rows) == 2 and all(r["status"] == "ok" and r["method"] == "fisher" for r in rows)
    for r in rows:  # exact sparsity: round(d * N) weights kept
        assert r["kept_params"] == kept_count(1 - r["target_sparsity"], r["prunable_params"])
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{out}/mlflow.db")
    runs = client.search_runs([client.get_experiment_by_name("plugged").experiment_id], max_results=100)
    trials = [r for r in runs if r.data.tags.get("prunetune.role") == "trial"]
    assert len(trials) == 2
    assert all(r.data.params.get("prune.options.microbatch") == "4" for r in trials)
    assert all(r.data.params.get("model.name") == "mlp_bn" for r in trials)


def _write(tmp_path: Path, text: str) -> Path:
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(textwrap.dedent(text))
    return cfg


def test_a_typo_in_a_plugin_option_is_refused_before_ray(tmp_path, capsys):
    _installed()
    cfg = _write(tmp_path, SWEEP.replace("microbatch: 4", "microbtch: 4"))
    out = tmp_path / "out"
    assert main(["run", str(cfg), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "prune.options.microbtch: unknown key" in err and "[method fisher]" in err
    assert not out.exists()


def test_an_unknown_plugin_module_is_refused_before_ray(tmp_path, capsys):
    cfg = _write(tmp_path, """
        plugins: [no_such_plugin_module]
        data: {name: digits}
        model: {name: mlp}
    """)
    out = tmp_path / "out"
    assert main(["run", str(cfg), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "plugins[0]: no module named 'no_such_plugin_module'" in err and str(tmp_path) in err
    assert not out.exists()


def test_a_plugin_that_raises_on_import_is_named(tmp_path, capsys):
    (tmp_path / "broken_plugin.py").write_text("raise RuntimeError('half-written plugin')\n")
    cfg = _write(tmp_path, """
        plugins: [broken_plugin]
        data: {name: digits}
        model: {name: mlp}
    """)
    assert main(["run", str(cfg), "--out", str(tmp_path / "out")]) == 2
    assert "plugins[0] 'broken_plugin' failed to import: RuntimeError: half-written plugin" in capsys.readouterr().err


def test_a_single_file_plugin_next_to_the_config_registers_its_method(tmp_path):
    shutil.copy(EXAMPLE / "single_file" / "lamp.py", tmp_path / "lamp.py")
    cfg = _write(tmp_path, """
        plugins: [lamp]
        data: {name: digits}
        model: {name: mlp}
        prune: {method: lamp, sparsity: 0.9, options: {power: 1.0}}
    """)
    parsed, raw = load_experiment(cfg)
    assert parsed.prune.method == "lamp" and parsed.prune.options == {"power": 1.0}
    assert raw["plugin_paths"] == [str(tmp_path)]
    from pruning.registry import METHODS

    assert METHODS.origin("lamp") == "plugin lamp"
    with pytest.raises(ConfigError, match=r"prune\.options\.power: Input should be greater than 0"):
        load_experiment(cfg, ["prune.options.power=0"])


def _lamp_by_hand(w: torch.Tensor, p: float) -> torch.Tensor:
    """LAMP's score, one weight at a time: w_u^p over the sum of w_v^p for every |w_v| >= |w_u|."""
    a = w.abs().flatten().double() ** p
    out = torch.empty_like(a)
    for u in range(len(a)):
        out[u] = a[u] / a[a >= a[u]].sum()
    return out.reshape(w.shape)


def test_lamp_scores_match_the_papers_formula():
    sys.path.insert(0, str(EXAMPLE / "single_file"))
    try:
        import lamp  # noqa: F401 (registers 'lamp' unless an earlier test did)
        from pruning.scorers import SCORERS
    finally:
        sys.path.remove(str(EXAMPLE / "single_file"))
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(6, 5), torch.nn.ReLU(), torch.nn.Linear(5, 3))
    params = prunable_parameters(model)
    for p in (1.0, 2.0):
        got = SCORERS.get("lamp")(power=p).score(model, params, Mask.ones(model), None)
        for n, w in params.items():
            torch.testing.assert_close(got[n], _lamp_by_hand(w.detach(), p))
            assert got[n].max() == pytest.approx(1.0)  # every layer's largest weight scores 1


def test_fisher_scores_match_a_per_example_loop():
    _installed()
    from pruning.scorers import SCORERS

    torch.manual_seed(1)
    model = torch.nn.Sequential(torch.nn.Linear(4, 6), torch.nn.ReLU(), torch.nn.Linear(6, 3)).double()
    params = prunable_parameters(model)
    x, y = torch.randn(10, 4, dtype=torch.float64), torch.arange(10) % 3
    batches = ScoringBatches(x, y, (4,), 3, batch_size=5)
    for micro in (1, 2):
        got = SCORERS.get("fisher")(microbatch=micro).score(model, params, Mask.ones(model), batches)
        expected = {n: torch.zeros_like(p) for n, p in params.items()}
        groups = 0
        for start in range(0, 10, 5):  # the scorer sees batches of 5, split into microbatches
            for i in range(start, start + 5, micro):
                model.zero_grad()
                torch.nn.functional.cross_entropy(model(x[i:min(i + micro, start + 5)]),
                                                  y[i:min(i + micro, start + 5)]).backward()
                for n, p in params.items():
                    expected[n] += p.grad ** 2
                groups += 1
        for n, p in params.items():
            torch.testing.assert_close(got[n], p.detach() ** 2 * expected[n] / groups)


WORKER_ONLY_FAILURE = """
import ray._private.worker as w

if w.global_worker.mode == w.WORKER_MODE:  # imports on the driver, not on the cluster's workers
    raise ImportError("this node lacks the plugin's compiled extension")
"""


@pytest.mark.slow
def test_a_plugin_the_workers_cannot_import_fails_the_sweep_once_in_one_line(tmp_path):
    (tmp_path / "driver_only.py").write_text(WORKER_ONLY_FAILURE)
    cfg = _write(tmp_path, """
        plugins: [driver_only]
        data: {name: digits}
        model: {name: mlp, options: {widths: [16]}}
        train: {epochs: 1}
        prune: {method: random, sparsity: 0.5}
        ray: {num_cpus: 1}
        sweep: {grid: [{seed: [0, 1, 2]}]}
    """)
    out = tmp_path / "out"
    done = subprocess.run([sys.executable, "-m", "pipelines.cli", "run", str(cfg), "--out", str(out)],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 2, done.stderr[-3000:]
    err = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(err) == 1, done.stderr[-3000:]
    assert "a Ray worker cannot import the plugins" in err[0] and "compiled extension" in err[0]
    assert "\x1b[" not in done.stderr and "Traceback" not in done.stderr
    assert not (out / "sweep.json").exists() and not (out / "trials").exists()


def test_a_trial_whose_config_cannot_be_read_keeps_its_method_and_target():
    """The row of a trial whose worker cannot read its config (e.g. a plugin missing on that node)."""
    from pipelines.trainable import unvalidated_identity as _unvalidated_identity

    raw = {"prune": {"method": "fisher", "sparsity": 0.7}, "seed": 3, "sweep": {"grid": []}}
    assert _unvalidated_identity(raw, {"prune.sparsity": 0.9}) == {"method": "fisher", "target_sparsity": 0.9,
                                                                   "seed": 3}
    assert _unvalidated_identity({}, {}) == {"method": "imp", "target_sparsity": 0.9, "seed": 0}


def test_list_shows_every_kind_with_its_origin_and_options(capsys, monkeypatch):
    _installed()
    monkeypatch.chdir(EXAMPLE / "single_file")
    assert main(["list", "--plugin", "lamp"]) == 0
    out = capsys.readouterr().out
    for line in ("methods:", "models:", "datasets:", "distillers:", "grasp  [built-in]", "temperature = 200.0",
                 "fisher  [plugin prunetune_example.fisher]", "microbatch = 1", "mlp_bn  [plugin prunetune_example.mlp_bn]",
                 "sklearn_tabular  [plugin prunetune_example.tabular]", "table = 'wine'", "dm  [built-in]",
                 "power = 2.0"):
        assert line in out, line
    assert main(["list", "--plugin", "no_such_module_here"]) == 2
    assert "plugins[0]: no module named 'no_such_module_here'" in capsys.readouterr().err
