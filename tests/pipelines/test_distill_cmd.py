import json
import textwrap
from pathlib import Path

import torch

from distill.artifact import DistilledSet
from pipelines.cli import main

CONFIG = textwrap.dedent(
    """
    name: dtest
    data: {name: digits, val_fraction: 0.1}
    distill:
      method: dm
      ipc: 2
      iterations: 4
      batch_real: 16
      network: {name: convnet, options: {width: 8, depth: 2}}
    quality:
      nets: 2
      train: {epochs: 3, batch_size: 64, lr: 0.01}
    """
)


def test_distill_command_makes_evaluates_and_tracks_a_set(tmp_path, capsys):
    cfg = tmp_path / "d.yaml"
    cfg.write_text(CONFIG)
    out = tmp_path / "out"
    assert main(["distill", str(cfg), "--out", str(out), "--eval"]) == 0
    summary = json.loads((out / "distill_summary.json").read_text())
    ds = DistilledSet.load(summary["path"])
    assert len(ds) == 20 and torch.bincount(ds.y).tolist() == [2] * 10
    assert summary["quality"]["mean"] > 0.1 and len(summary["quality"]["accuracies"]) == 2
    assert Path(summary["picture"]).is_file() and summary["picture"].endswith(".png")
    assert summary["cost"]["sample_passes"] > 0
    # The same config again reuses the artifact.
    assert main(["distill", str(cfg), "--out", str(out)]) == 0
    assert "reused" in capsys.readouterr().out
    assert summary["quality"]["protocol"] == "plain" and summary["quality"]["augment"] == "none"
    # The papers' protocol: per-sample DSA on every batch (quality.train keeps this test's 3 epochs).
    assert main(["distill", str(cfg), "--out", str(out), "--eval", "--eval-protocol", "papers"]) == 0
    papers = json.loads((out / "distill_summary.json").read_text())["quality"]
    assert papers["protocol"] == "papers" and "draw='sample'" in papers["augment"]


def test_distill_command_rejects_bad_config_and_writes_nothing(tmp_path, capsys):
    cfg = tmp_path / "d.yaml"
    cfg.write_text(CONFIG.replace("method: dm", "method: dmm"))
    out = tmp_path / "out"
    assert main(["distill", str(cfg), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "distill.method" in err and "dmm" in err and not out.exists()
    cfg.write_text(CONFIG.replace("ipc: 2", "ipc: 0"))
    assert main(["distill", str(cfg), "--out", str(out)]) == 2
    assert "distill.ipc" in capsys.readouterr().err and not out.exists()


PLUGIN_DISTILLER = '''
from pydantic import BaseModel, Field

from distill.methods import build_distilled_set, class_indices, parse_options, register_distiller, run_identity


class FirstOptions(BaseModel):
    model_config = {"extra": "forbid"}
    offset: int = Field(0, ge=0)


@register_distiller("first_k", options=FirstOptions)
def first_k(real, cfg, progress, checkpoint_dir):
    """The first ipc examples of each class after ``offset``: a deterministic coreset."""
    import torch

    opts = parse_options(FirstOptions, cfg)
    idx = torch.cat([pool[opts.offset:opts.offset + cfg.ipc] for pool in class_indices(real)])
    ident = run_identity(cfg, real, None, options=opts.model_dump())
    y = real.train.y[idx]
    return build_distilled_set(real, real.train.x[idx], y, ident.recipe, ident.source, {"sample_passes": 0})
'''


def test_distill_command_runs_a_distiller_from_a_plugins_module(tmp_path):
    (tmp_path / "first_k_plugin.py").write_text(PLUGIN_DISTILLER)
    cfg = tmp_path / "d.yaml"
    cfg.write_text("plugins: [first_k_plugin]\ndata: {name: digits}\n"
                   "distill: {method: first_k, ipc: 3, options: {offset: 2}}\n")
    out = tmp_path / "out"
    assert main(["distill", str(cfg), "--out", str(out)]) == 0
    ds = DistilledSet.load(json.loads((out / "distill_summary.json").read_text())["path"])
    assert len(ds) == 30 and torch.bincount(ds.y).tolist() == [3] * 10
