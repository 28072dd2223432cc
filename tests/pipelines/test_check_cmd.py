"""`prunetune run CONFIG --check`: the plan of a sweep, written nowhere, in seconds; and every YAML
block of the README is a config the check accepts."""
import re
from pathlib import Path

from pipelines.cli import main

ROOT = Path(__file__).resolve().parents[2]


def _tree(path: Path) -> set[str]:
    return {str(p.relative_to(path)) for p in path.rglob("*")}


def test_check_on_the_quickstart_prints_the_plan_and_writes_nothing(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the default --out is runs/<name> under the working directory
    before = _tree(tmp_path)
    assert main(["run", str(ROOT / "configs/quickstart.yaml"), "--check"]) == 0
    out = capsys.readouterr().out
    assert _tree(tmp_path) == before, "--check wrote something"
    assert "grid: 13 trials" in out and "optuna: 6 trials" in out
    rows = {line.split()[0]: line.split()[1:] for line in out.splitlines() if line.startswith("  ") and
            line.split()[0] in ("pretrain", "retrain", "evaluate", "imp_level", "imp_mask", "mask")}
    # 13 grid trials: each one retrain and one evaluate; 2 pre-trainings (IMP's dense run to the end,
    # the at-init methods' theta_0); IMP's 4 targets share one chain of 13 levels (0.8^13 < 0.05)
    assert rows["retrain"][:3] == ["13", "0", "13"] and rows["evaluate"][:3] == ["13", "0", "13"]
    assert rows["pretrain"][:3] == ["2", "0", "2"] and rows["imp_level"][:3] == ["13", "0", "13"]
    # quickstart: digits, 15 epochs; the retrain estimate is 13 x 15 x the training split
    from pipelines.config import load_experiment
    from training.data import load_dataset

    cfg, _ = load_experiment(str(ROOT / "configs/quickstart.yaml"), [])
    n_train = len(load_dataset(cfg.data).train)
    assert rows["retrain"][3] == f"{13 * 15 * n_train:,}"
    assert "nothing was run or written" in out


def test_check_on_a_computed_sweep_reports_every_stage_in_the_store(tmp_path, capsys):
    """Every trial of the grid computed into DIR/store (as the sweep would, without Ray): nothing left."""
    from pipelines.config import load_experiment, trial_config
    from pipelines.trial import run_trial
    from search.space import expand_grid
    from training.store import ArtifactStore

    config = tmp_path / "tiny.yaml"
    config.write_text("""
name: tiny
data: {name: digits}
model: {name: mlp, options: {widths: [32]}}
train: {epochs: 1, batch_size: 64}
sweep:
  grid:
    - {prune.method: [magnitude, imp], prune.sparsity: [0.5, 0.8]}
""")
    out = tmp_path / "out"
    cfg, raw = load_experiment(config)
    for point in expand_grid(cfg.sweep.grid):
        run_trial(trial_config(raw, point), ArtifactStore(out / "store"), log=lambda _: None)
    before = {p: p.stat().st_mtime_ns for p in out.rglob("*")}
    assert main(["run", str(config), "--out", str(out), "--check"]) == 0
    printed = capsys.readouterr().out
    assert "grid: 4 trials" in printed and "0 to compute: every stage is in the store" in printed
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*")} == before


def test_check_refuses_a_bad_config_with_exit_2(tmp_path, capsys):
    config = tmp_path / "bad.yaml"
    config.write_text("name: bad\nprune: {method: snip, sparsity: 1.5}\n")
    assert main(["run", str(config), "--check", "--out", str(tmp_path / "o")]) == 2
    assert "prune.sparsity" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_every_yaml_block_of_the_readme_is_a_valid_sweep(tmp_path, capsys):
    blocks = re.findall(r"```yaml\n(.*?)```", (ROOT / "README.md").read_text(), flags=re.S)
    assert blocks
    for i, block in enumerate(blocks):
        config = tmp_path / f"readme-{i}.yaml"
        config.write_text(block)
        code = main(["run", str(config), "--check", "--out", str(tmp_path / f"out-{i}")])
        assert code == 0, f"README yaml block {i}:\n{block}\n{capsys.readouterr().err}"
