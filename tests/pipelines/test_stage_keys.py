"""Stage keys hash exactly what each stage reads: irrelevant settings, new defaulted fields and
non-result fields move no key; a version bump moves that stage's key and everything downstream."""
import textwrap

import pytest
import torch
import yaml
from pydantic import create_model

from pipelines.config import ConfigError, trial_config
from pipelines.trial import trial_graph
from pruning.methods import get_method, method_names
from pruning.stages import Pretrain
from training.keys import canonical
from training.stage import StageEnv, materialize
from training.store import ArtifactStore
from training.trainer import TrainConfig

RAW = yaml.safe_load(textwrap.dedent(
    """
    name: k
    data: {name: digits, val_fraction: 0.15}
    model: {name: mlp, options: {widths: [32]}}
    train: {epochs: 2, batch_size: 128, lr: 0.05}
    prune: {method: random, sparsity: 0.8, rewind_step: 3}
    """
))


def _keys(overrides):
    return {s.describe() for s in trial_graph(trial_config(RAW, overrides)).stages()}


IRRELEVANT_TO_RANDOM = {
    "prune.pdp.tau": 0.01, "prune.small_train.epochs": 7,
    "prune.distill": {"method": "dm", "progress_every": 3}, "data.root": "/elsewhere", "data.download": True,
    "train.device": "cpu", "train.eval_batch_size": 17,
    "prune.prune_fraction": 0.5, "prune.examples_per_class": 3,
    "prune.post": {"structure": "nm", "damp": 0.1},
}


@pytest.mark.parametrize("field,value", sorted(IRRELEVANT_TO_RANDOM.items()))
def test_a_setting_random_does_not_read_moves_none_of_its_keys(field, value):
    assert _keys({field: value}) == _keys({})


def test_a_setting_a_stage_reads_moves_its_key_and_downstream_only():
    base = {s.name: s.key for s in trial_graph(trial_config(RAW, {})).stages()}
    moved = {s.name: s.key for s in trial_graph(trial_config(RAW, {"prune.sparsity": 0.5})).stages()}
    assert moved["pretrain"] == base["pretrain"]  # theta_k does not depend on the target
    for name in ("mask", "retrain", "evaluate"):
        assert moved[name] != base[name], name
    grasp = {s.name: s.key for s in trial_graph(trial_config(RAW, {"prune.method": "grasp"})).stages()}
    warmer = {s.name: s.key for s in trial_graph(trial_config(
        RAW, {"prune.method": "grasp", "prune.options.temperature": 50.0})).stages()}
    assert grasp["mask"] != warmer["mask"] and grasp["pretrain"] == warmer["pretrain"]


def test_a_new_defaulted_field_changes_no_key():
    Extended = create_model("Extended", __base__=TrainConfig, label_smoothing=(float, 0.0))
    old = TrainConfig(epochs=3, lr=0.1)
    new = Extended(epochs=3, lr=0.1)
    assert canonical(new) == canonical(old) == {"epochs": 3, "lr": 0.1}
    cfg = trial_config(RAW, {})
    graph = trial_graph(cfg)
    pre = graph.plan.start
    twin = Pretrain(data=pre.data, model=pre.model, train=Extended(**pre.train.model_dump()), seed=pre.seed,
                    rewind_step=pre.rewind_step, until=pre.until)
    assert twin.key == pre.key
    assert Extended(epochs=3, lr=0.1, label_smoothing=0.1).model_dump() != new.model_dump()
    assert canonical(Extended(epochs=3, lr=0.1, label_smoothing=0.1)) != canonical(old)


def test_a_version_bump_moves_that_stage_and_everything_downstream(monkeypatch):
    before = {s.name: s.key for s in trial_graph(trial_config(RAW, {"prune.method": "imp"})).stages()
              if s.name != "imp_level"}
    monkeypatch.setattr(Pretrain, "version", Pretrain.version + 1)
    after = {s.name: s.key for s in trial_graph(trial_config(RAW, {"prune.method": "imp"})).stages()
             if s.name != "imp_level"}
    assert all(after[n] != before[n] for n in before), (before, after)


INVERTIBLE = [(m, {}) for m in method_names() if m != "dense" and "invert" in get_method(m).ablations] + [
    ("magnitude", {"prune.options.at": "trained"})]


@pytest.mark.parametrize("method,extra", INVERTIBLE, ids=lambda v: v if isinstance(v, str) else "")
def test_invert_changes_the_mask_of_every_method_that_accepts_it(tmp_path, method, extra):
    env = StageEnv.on(ArtifactStore(tmp_path), log=lambda m: None)
    masks = {}
    for ablation in ("none", "invert"):
        plan = trial_graph(trial_config(RAW, {"prune.method": method, "prune.ablation": ablation, **extra})).plan
        masks[ablation] = torch.load(materialize(plan.mask, env).file("mask.pt"), weights_only=True)
    kept = {a: sum(int(m.sum()) for m in ms.values()) for a, ms in masks.items()}
    assert kept["none"] == kept["invert"]  # same density, exactly
    overlap = sum(int((masks["none"][n] & masks["invert"][n]).sum()) for n in masks["none"])
    assert overlap < kept["none"], f"{method}: inverted mask equals the plain one"


@pytest.mark.parametrize("method", ["imp", "distilled_imp", "imp_subset", "pdp", "dense"])
def test_invert_is_refused_where_it_would_do_nothing(method):
    sparsity = 0.0 if method == "dense" else 0.8
    with pytest.raises(ConfigError, match="ablation 'invert' does not apply"):
        trial_config(RAW, {"prune.method": method, "prune.sparsity": sparsity, "prune.ablation": "invert"})


def test_reinit_trains_the_very_mask_of_its_baseline():
    for method in ("px", "imp"):
        base = trial_graph(trial_config(RAW, {"prune.method": method}))
        reinit = trial_graph(trial_config(RAW, {"prune.method": method, "prune.ablation": "reinit"}))
        assert reinit.plan.mask.key == base.plan.mask.key
        assert reinit.trained.key != base.trained.key
