"""``prunetune prune``: score without training, write mask.pt + sparsity.json, exit 2 on bad input."""
from __future__ import annotations

import json

import pytest
import torch

from pipelines import prune_cmd
from pipelines.cli import build_parser, main
from pruning.mask import Mask, prunable_parameters
from pruning.select import kept_count
from tests.clock import install
from training.models import create_model

SMALL = ["--model", "mlp", "--model-options", '{"widths": [32, 16]}']
SHAPE = ["--input-shape", "1,8,8", "--num-classes", "10"]
N_SMALL = 64 * 32 + 32 * 16 + 16 * 10


def _prune(out, *extra):
    return main(["prune", *SMALL, *extra, "--out", str(out)])


def _outputs(out):
    return Mask.load(out / "mask.pt"), json.loads((out / "sparsity.json").read_text())


def test_prune_is_a_cli_subcommand():
    args = build_parser().parse_args(["prune", "--model", "mlp", "--method", "magnitude", "--sparsity", "0.5", "--out", "x"])
    assert args.command == "prune" and callable(args.func)


def test_magnitude_mask_matches_the_initial_weights(tmp_path, capsys, monkeypatch):
    out = tmp_path / "mag"
    clock = install(monkeypatch, prune_cmd)
    assert _prune(out, *SHAPE, "--method", "magnitude", "--sparsity", "0.9", "--seed", "3") == 0
    measured = clock.span()  # before anything else reads the clock
    mask, info = _outputs(out)
    expected_kept = kept_count(0.1, N_SMALL)
    assert mask.kept == info["kept"] == expected_kept
    assert info["total"] == N_SMALL
    assert info["method"] == "magnitude" and info["model"] == "mlp" and info["rounds"] == 1
    assert info["density"] == pytest.approx(expected_kept / N_SMALL)
    assert info["sparsity"] == pytest.approx(1 - expected_kept / N_SMALL)
    assert info["compression"] == pytest.approx(N_SMALL / expected_kept)
    assert set(info["layers"]) == set(mask) and info["collapsed"] == []
    assert all(set(v) == {"kept", "total", "density"} for v in info["layers"].values())
    assert info["wall_time_s"] == measured > 0  # the scoring's time, on the command's clock

    # the same seed builds the same initial model: its top-|w| weights are the mask
    torch.manual_seed(3)
    model = create_model("mlp", (1, 8, 8), 10, widths=[32, 16])
    weights = torch.cat([p.detach().abs().flatten() for p in prunable_parameters(model).values()])
    flat = torch.cat([mask[n].flatten() for n in prunable_parameters(model)])
    assert weights[flat].min() >= weights[~flat].max()
    line = capsys.readouterr().out.strip()
    assert "\n" not in line and f"kept {expected_kept}/{N_SMALL}" in line


def test_synflow_layerwise_and_collapsed_layers_reported(tmp_path):
    out = tmp_path / "syn"
    assert _prune(out, *SHAPE, "--method", "synflow", "--sparsity", "0.8", "--rounds", "10", "--scope", "layerwise") == 0
    mask, info = _outputs(out)
    assert info["rounds"] == 10 and info["scope"] == "layerwise"
    for name, m in mask.items():  # layerwise: exact per layer
        assert int(m.sum()) == kept_count(0.2, m.numel()) == info["layers"][name]["kept"]

    out = tmp_path / "syn_global"
    assert _prune(out, *SHAPE, "--method", "synflow", "--sparsity", "0.99") == 0
    mask, info = _outputs(out)
    assert info["rounds"] == 100  # synflow's default
    assert mask.kept == kept_count(0.01, N_SMALL)
    assert info["collapsed"] == [n for n, m in mask.items() if not m.any()]


def test_snip_uses_the_dataset(tmp_path):
    out = tmp_path / "snip"
    code = _prune(out, "--dataset", "digits", "--method", "snip", "--sparsity", "0.5", "--examples-per-class", "4")
    assert code == 0
    mask, info = _outputs(out)
    assert mask.kept == kept_count(0.5, N_SMALL)
    assert info["dataset"] == "digits" and info["examples_per_class"] == 4 and info["input_shape"] == [1, 8, 8]


def test_checkpoint_is_scored_instead_of_the_init(tmp_path):
    torch.manual_seed(11)
    trained = create_model("mlp", (1, 8, 8), 10, widths=[32, 16])
    with torch.no_grad():
        trained.fc.weight.fill_(-10.0)  # fc now holds the largest magnitudes
    ckpt = tmp_path / "model.pt"
    torch.save(trained.state_dict(), ckpt)
    out = tmp_path / "ckpt"
    assert _prune(out, *SHAPE, "--method", "magnitude", "--sparsity", "0.9", "--checkpoint", str(ckpt)) == 0
    mask, info = _outputs(out)
    assert bool(mask["fc.weight"].all())
    assert info["checkpoint"] == str(ckpt)


@pytest.mark.parametrize(
    "extra, fragment",
    [
        ([*SHAPE, "--method", "magnitude", "--sparsity", "1.5"], "--sparsity"),
        ([*SHAPE, "--method", "snip", "--sparsity", "0.5"], "--dataset"),
        ([*SHAPE, "--method", "px", "--sparsity", "0.5"], "--dataset"),
        ([*SHAPE, "--method", "imp", "--sparsity", "0.5"], "training"),
        ([*SHAPE, "--method", "pdp", "--sparsity", "0.5"], "training"),
        ([*SHAPE, "--method", "magic", "--sparsity", "0.5"], "unknown pruning method"),
        ([*SHAPE, "--method", "magnitude", "--sparsity", "0.5", "--schedule", "cubic"], "--schedule"),
        ([*SHAPE, "--method", "magnitude", "--sparsity", "0.5", "--ignore", "nope.weight"], "nope.weight"),
        (["--method", "magnitude", "--sparsity", "0.5"], "--input-shape"),
        (["--input-shape", "1,8,8", "--method", "magnitude", "--sparsity", "0.5"], "--num-classes"),
        (["--input-shape", "1,x", "--num-classes", "3", "--method", "magnitude", "--sparsity", "0.5"], "--input-shape"),
        (["--dataset", "digitz", "--method", "magnitude", "--sparsity", "0.5"], "digitz"),
    ],
)
def test_bad_input_exits_2_and_writes_nothing(tmp_path, capsys, extra, fragment):
    out = tmp_path / "out"
    assert _prune(out, *extra) == 2
    assert fragment in capsys.readouterr().err
    assert not out.exists()


def test_bad_checkpoints_exit_2_naming_the_path(tmp_path, capsys):
    corrupt = tmp_path / "corrupt.pt"
    corrupt.write_bytes(b"definitely not a torch file")
    out = tmp_path / "out"
    assert _prune(out, *SHAPE, "--method", "magnitude", "--sparsity", "0.5", "--checkpoint", str(corrupt)) == 2
    assert str(corrupt) in capsys.readouterr().err
    assert not out.exists()

    mismatched = tmp_path / "other.pt"
    torch.save(create_model("mlp", (1, 8, 8), 10, widths=[8]).state_dict(), mismatched)
    assert _prune(out, *SHAPE, "--method", "magnitude", "--sparsity", "0.5", "--checkpoint", str(mismatched)) == 2
    err = capsys.readouterr().err
    assert str(mismatched) in err and "layers.0.weight" in err
    assert not out.exists()

    missing = tmp_path / "missing.pt"
    assert _prune(out, *SHAPE, "--method", "magnitude", "--sparsity", "0.5", "--checkpoint", str(missing)) == 2
    assert str(missing) in capsys.readouterr().err
    assert not out.exists()


def test_argument_errors_come_back_without_importing_torch(tmp_path):
    import subprocess
    import sys

    code = (
        "import sys\nfrom pipelines.cli import main\n"
        f"assert main(['prune', '--model', 'mlp', '--method', 'snip', '--sparsity', '0.5', '--input-shape', '1,8,8', "
        f"'--num-classes', '10', '--out', {str(tmp_path / 'o')!r}]) == 2\n"  # snip needs --dataset
        f"assert main(['prune', '--model', 'nope', '--method', 'random', '--sparsity', '0.5', '--dataset', 'digits', "
        f"'--out', {str(tmp_path / 'o')!r}]) == 2\n"
        f"assert main(['prune', '--model', 'mlp', '--method', 'random', '--sparsity', '0.5', '--dataset', 'digits', "
        f"'--checkpoint', {str(tmp_path)!r}, '--out', {str(tmp_path / 'o')!r}]) == 2\n"
        "assert 'torch' not in sys.modules, 'torch imported before the arguments were checked'\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "--checkpoint" in proc.stderr and "is a directory" in proc.stderr
    assert not (tmp_path / "o").exists()


def test_magnitude_after_training_is_one_shot_imp_and_not_a_prune_command(tmp_path, capsys):
    from pipelines.config import validate
    from pipelines.trial import trial_graph

    base = {"data": {"name": "digits"}, "model": {"name": "mlp"}}
    trained = trial_graph(validate({**base, "prune": {"method": "magnitude", "sparsity": 0.5,
                                                      "options": {"at": "trained"}}}))
    assert trained.plan.mask.name == "imp_mask" and trained.plan.start.until == "end"  # scores the trained net
    at_init = trial_graph(validate({**base, "prune": {"method": "magnitude", "sparsity": 0.5}}))
    assert at_init.plan.mask.name == "mask"
    assert _prune(tmp_path / "o", *SHAPE, "--method", "magnitude", "--option", "at=trained", "--sparsity", "0.5") == 2
    assert "trains before it prunes" in capsys.readouterr().err and not (tmp_path / "o").exists()
