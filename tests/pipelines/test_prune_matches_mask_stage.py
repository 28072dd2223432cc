"""``prunetune prune`` and a sweep's ``mask`` stage build a mask through the same function: for every
built-in pruning-at-init method, unstructured, by channel and by head, and under each mask ablation,
the two give identical masks for the same model, data, seed and options."""
from __future__ import annotations

import pytest

from pipelines.cli import main
from pipelines.config import trial_config
from pipelines.trial import trial_graph
from pruning.mask import Mask
from pruning.registry import METHODS
from training.stage import StageEnv, materialize
from training.store import ArtifactStore

AT_INIT = [m for m in METHODS.names() if METHODS.get(m).at_init and METHODS.origin(m) == "built-in"]
MLP = {"name": "mlp", "options": {"widths": [24, 16]}}
VIT = {"name": "vit", "options": {"patch_size": 4, "dim": 16, "depth": 1, "heads": 4, "mlp_ratio": 1.0}}
CASES = []
for m in AT_INIT:
    CASES.append((m, "unstructured", MLP, {"sparsity": 0.8}))
    for ablation in sorted(METHODS.get(m).ablations - {"reinit"}):
        CASES.append((m, ablation, MLP, {"sparsity": 0.8, "ablation": ablation}))
    if "channel" in METHODS.get(m).structured:
        CASES.append((m, "channel", MLP, {"sparsity": 0.5, "channel_keep": {"layers.0.weight": 0.5,
                                                                             "layers.2.weight": 0.25}}))
    if "head" in METHODS.get(m).structured and m != "px":  # PX refuses GELU networks by design
        CASES.append((m, "head", VIT, {"sparsity": 0.5, "head_keep": 0.5}))


def _stage_mask(tmp_path, method, model, prune):
    raw = {"data": {"name": "digits"}, "model": model, "train": {"epochs": 1},
           "prune": {"method": method, "rounds": 3, "examples_per_class": 4, **prune}}
    stage = trial_graph(trial_config(raw, {})).plan.mask
    entry = materialize(stage, StageEnv.on(ArtifactStore(str(tmp_path / "store")), log=lambda *_: None))
    return Mask.load(entry.file("mask.pt"))


def _cli_mask(tmp_path, method, model, prune):
    import json

    args = ["prune", "--model", model["name"], "--model-options", json.dumps(model["options"]), "--dataset", "digits",
            "--method", method, "--sparsity", str(prune["sparsity"]), "--rounds", "3", "--examples-per-class", "4",
            "--device", "cpu", "--out", str(tmp_path / "cli")]
    for name, f in prune.get("channel_keep", {}).items():
        args += ["--channel-keep", f"{name}={f}"]
    if "head_keep" in prune:
        args += ["--head-keep", str(prune["head_keep"])]
    if "ablation" in prune:
        args += ["--ablation", prune["ablation"]]
    assert main(args) == 0
    return Mask.load(tmp_path / "cli" / "mask.pt")


@pytest.mark.parametrize("method,mode,model,prune", CASES, ids=[f"{c[0]}-{c[1]}" for c in CASES])
def test_prune_command_and_mask_stage_agree(tmp_path, method, mode, model, prune):
    stage, cli = _stage_mask(tmp_path, method, model, prune), _cli_mask(tmp_path, method, model, prune)
    assert set(stage) == set(cli)
    for name in stage:
        assert bool((stage[name] == cli[name]).all()), f"{method} {mode}: {name} differs"
    if mode == "channel":  # whole rows, at the asked fraction
        assert int(stage["layers.0.weight"].any(dim=1).sum()) == 12


def test_every_at_init_method_and_mode_is_covered():
    assert {c[0] for c in CASES} == set(AT_INIT) and len(AT_INIT) >= 11
    assert {c[1] for c in CASES} >= {"unstructured", "channel", "head", "invert", "shuffle"}
