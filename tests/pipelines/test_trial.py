"""Every method runs through the trial's stages (without Ray) with exact sparsity."""
import json
import textwrap

import pytest
import torch
import yaml

from pipelines.config import ConfigError, trial_config
from pipelines.trial import run_trial as _run_trial
from pipelines.trial import trial_graph
from training.store import ArtifactStore


def run_trial(cfg, root, log=None):
    return _run_trial(cfg, ArtifactStore(root / "store"), log=log or (lambda m: None))


def stage_file(root, cfg, which, name):
    """A file of one of the trial's stages: 'mask', 'trained' or 'evaluate'."""
    graph = trial_graph(cfg)
    stage = {"mask": graph.plan.mask, "trained": graph.trained, "evaluate": graph.evaluate}[which]
    return ArtifactStore(root / "store").get(stage.name, stage.key).file(name)

def _test_accuracy(cfg, root) -> float:
    """The trained net's test accuracy, by hand: one forward pass over the test split."""
    from training.data import load_dataset
    from training.stage import fresh_model

    data = load_dataset(cfg.data)
    model = fresh_model(data, cfg.model, cfg.seed)
    model.load_state_dict(torch.load(stage_file(root, cfg, "trained", "model.pt"), weights_only=True))
    model.eval()
    with torch.no_grad():
        predicted = model(data.test.x).argmax(1)
    return int((predicted == data.test.y).sum()) / len(data.test.y)


RAW = yaml.safe_load(textwrap.dedent(
    """
    name: t
    data: {name: digits, val_fraction: 0.15}
    model: {name: mlp, options: {widths: [48, 24]}}
    train: {epochs: 2, batch_size: 128, lr: 0.05}
    prune: {method: imp, sparsity: 0.8}
    """
))


@pytest.mark.parametrize("method", ["random", "magnitude", "snip", "grasp", "synflow", "px", "imp", "pdp", "wanda",
                                    "sparsegpt", "iter_snip", "force", "prospr", "phew", "ntksap"])
def test_each_method_hits_the_target_sparsity(tmp_path, method):
    cfg = trial_config(RAW, {"prune.method": method, "prune.sparsity": 0.8})
    row = run_trial(cfg, tmp_path, log=lambda m: None)
    assert row["achieved_sparsity"] == pytest.approx(0.8, abs=1e-3)
    # the row's accuracy is the evaluated net's, re-measured here from the stored weights and mask
    assert row["test_accuracy"] == pytest.approx(_test_accuracy(cfg, tmp_path), abs=1e-9)
    report = json.loads(stage_file(tmp_path, cfg, "evaluate", "sparsity.json").read_text())
    assert report["kept"] == round(0.2 * report["total"])
    state = torch.load(stage_file(tmp_path, cfg, "trained", "model.pt"), weights_only=True)
    mask = torch.load(stage_file(tmp_path, cfg, "mask", "mask.pt"), weights_only=True)
    for name, m in mask.items():
        assert torch.count_nonzero(state[name][~m]) == 0


SMALL = {"prune.distill": {"method": "dm", "ipc": 3, "iterations": 3, "batch_real": 16,
                          "network": {"name": "convnet", "options": {"width": 8, "depth": 2}}},
         "prune.small_train": {"epochs": 20, "batch_size": 64, "lr": 0.01}}


def test_distilled_imp_and_its_subset_control(tmp_path):
    rows = {}
    for method in ("distilled_imp", "imp_subset"):
        cfg = trial_config(RAW, {"prune.method": method, "prune.sparsity": 0.8, **SMALL})
        rows[method] = run_trial(cfg, tmp_path, log=lambda m: None)
    for method, row in rows.items():
        assert row["achieved_sparsity"] == pytest.approx(0.8, abs=1e-3)
        assert row["small_set_size"] == 30
        assert row["distill_sample_passes"] >= 0 and row["search_sample_passes"] > 0
        # Level training ran on the small set: 20 epochs x 30 samples per level.
        assert row["search_sample_passes"] == row["levels"] * 20 * 30
    assert rows["distilled_imp"]["small_set_method"] == "dm"
    assert rows["imp_subset"]["small_set_method"] == "random"
    assert rows["distilled_imp"]["distill_sample_passes"] > 0
    # A second distilled trial reuses the stored set instead of distilling again.
    cfg = trial_config(RAW, {"prune.method": "distilled_imp", "prune.sparsity": 0.5, **SMALL})
    again = run_trial(cfg, tmp_path, log=lambda m: None)
    assert again["small_set_hash"] == rows["distilled_imp"]["small_set_hash"]
    distills = [r for r in ArtifactStore(tmp_path / "store").index() if r["stage"] == "distill"]
    assert len(distills) == 2  # the DM set and the random subset, each made once


def test_rerun_is_a_cache_hit(tmp_path):
    cfg = trial_config(RAW, {"prune.method": "magnitude"})
    first = run_trial(cfg, tmp_path, log=lambda m: None)
    second = run_trial(cfg, tmp_path, log=lambda m: None)
    assert second["cached"] and second["test_accuracy"] == first["test_accuracy"]


@pytest.mark.parametrize("ablation", ["shuffle", "reinit", "invert"])
def test_ablations_run_and_keep_the_density(tmp_path, ablation):
    cfg = trial_config(RAW, {"prune.method": "snip", "prune.ablation": ablation})
    row = run_trial(cfg, tmp_path, log=lambda m: None)
    assert row["achieved_sparsity"] == pytest.approx(0.8, abs=1e-3)


def test_layer_allocations(tmp_path):
    erk = run_trial(trial_config(RAW, {"prune.method": "synflow", "prune.allocation": "erk"}), tmp_path, log=lambda m: None)
    assert erk["achieved_sparsity"] == pytest.approx(0.8, abs=1e-3)
    explicit = {"prune.method": "magnitude", "prune.allocation": "explicit",
                "prune.layer_densities": {"layers.0.weight": 0.1, "layers.2.weight": 0.5, "fc.weight": 1.0}}
    row = run_trial(trial_config(RAW, explicit), tmp_path, log=lambda m: None)
    report = json.loads(stage_file(tmp_path, trial_config(RAW, explicit), "evaluate", "sparsity.json").read_text())
    assert report["layers"]["layers.0.weight"]["density"] == pytest.approx(0.1, abs=1e-3)
    assert report["layers"]["layers.2.weight"]["density"] == pytest.approx(0.5, abs=1e-3)
    assert report["layers"]["fc.weight"]["density"] == 1.0
    assert row["achieved_sparsity"] == pytest.approx(1 - report["kept"] / report["total"])  # the row is the mask's
    with pytest.raises(ValueError, match="not prunable|missing"):
        bad = trial_config(RAW, {**explicit, "prune.layer_densities": {"nope.weight": 0.5}})
        run_trial(bad, tmp_path, log=lambda m: None)


def test_pdp_nm_and_option_validation(tmp_path):
    cfg = trial_config(RAW, {"prune.method": "pdp", "prune.sparsity": 0.5, "prune.pdp.structure": "nm",
                             "prune.pdp.n": 2, "prune.pdp.m": 4, "prune.ignore": ["fc.weight"]})
    run_trial(cfg, tmp_path, log=lambda m: None)
    mask = torch.load(stage_file(tmp_path, cfg, "mask", "mask.pt"), weights_only=True)
    for name, m in mask.items():
        groups = m.reshape(m.shape[0], -1, 4).sum(-1)
        assert bool((groups == 2).all()), name
    with pytest.raises(ConfigError, match="fixes sparsity"):
        trial_config(RAW, {"prune.method": "pdp", "prune.pdp.structure": "nm", "prune.sparsity": 0.9})
    with pytest.raises(ConfigError, match="invert"):
        trial_config(RAW, {"prune.method": "imp", "prune.ablation": "invert"})
    with pytest.raises(ConfigError, match=r"prune\.options\.variant"):
        trial_config(RAW, {"prune.method": "px", "prune.options.variant": "offical"})


def test_small_set_augmentation_is_validated_and_used(tmp_path):
    with pytest.raises(ConfigError, match="small_augment"):
        trial_config(RAW, {"prune.method": "distilled_imp", "prune.small_augment": "flip_bogus"})
    from pruning.methods import small_set_augment

    aug = small_set_augment("default", (1, 8, 8))
    x = torch.randn(4, 1, 8, 8)
    assert torch.equal(aug(x, 3), aug(x, 3)) and not torch.equal(aug(x, 3), x)
    assert small_set_augment("none", (1, 8, 8)) is None


def test_imp_with_short_search_levels_keeps_the_final_budget(tmp_path):
    cfg = trial_config(RAW, {"prune.method": "imp", "prune.sparsity": 0.5, "train.epochs": 3, "prune.search_epochs": 1})
    row = run_trial(cfg, tmp_path, log=lambda m: None)
    store = ArtifactStore(tmp_path / "store")
    levels = [json.loads(store.get(s.name, s.key).file("record.json").read_text()) for s in trial_graph(cfg).plan.levels]
    per_level = {rec["sample_passes"] for rec in levels}
    assert len(per_level) == 1
    assert row["retrain_sample_passes"] == 3 * per_level.pop()  # final retrain: 3 epochs, levels: 1
    assert row["achieved_sparsity"] == pytest.approx(0.5, abs=1e-3)


def test_a_finished_trial_whose_upstream_entry_was_damaged_still_reads(tmp_path):
    cfg = trial_config(RAW, {"prune.method": "imp", "prune.sparsity": 0.5})
    first = run_trial(cfg, tmp_path)
    store = ArtifactStore(tmp_path / "store")
    level = trial_graph(cfg).plan.levels[1]
    store.get(level.name, level.key).file("mask.pt").write_bytes(b"truncated!")
    again = run_trial(cfg, tmp_path)
    assert again["cached"] and again["test_accuracy"] == first["test_accuracy"]
    assert store.get(level.name, level.key) is not None  # recomputed, verified


def test_small_set_levels_train_on_the_trials_device():
    cfg = trial_config(RAW, {"prune.method": "distilled_imp", "train.device": "cpu", **SMALL})
    assert trial_graph(cfg).plan.start.train.device == "cpu"


@pytest.mark.parametrize("method", ["wanda", "sparsegpt"])
def test_post_training_methods_are_one_shot_unless_asked_to_retrain(tmp_path, method):
    one_shot = run_trial(trial_config(RAW, {"prune.method": method, "prune.sparsity": 0.5}), tmp_path)
    assert one_shot["retrain_sample_passes"] == 0 and one_shot["search_sample_passes"] > 0
    retrained = run_trial(trial_config(RAW, {"prune.method": method, "prune.sparsity": 0.5, "prune.retrain": True}),
                          tmp_path)
    assert retrained["retrain_sample_passes"] > 0
    assert retrained["achieved_sparsity"] == pytest.approx(0.5, abs=1e-3)
    nm = trial_config(RAW, {"prune.method": method, "prune.sparsity": 0.5, "prune.post": {"structure": "nm"}})
    assert run_trial(nm, tmp_path)["achieved_sparsity"] == pytest.approx(0.5, abs=1e-9)
    with pytest.raises(ConfigError, match="fixes sparsity at 0.5"):
        trial_config(RAW, {"prune.method": method, "prune.sparsity": 0.7, "prune.post": {"structure": "nm"}})
    with pytest.raises(ConfigError, match="retrain applies to post-training methods"):
        trial_config(RAW, {"prune.method": "snip", "prune.retrain": False})


@pytest.mark.parametrize("model", [{"name": "vit", "options": {"patch_size": 2, "dim": 16, "heads": 4}},
                                   {"name": "convnet", "options": {"width": 8, "depth": 2}}], ids=["vit", "convnet"])
@pytest.mark.parametrize("method", ["wanda", "sparsegpt"])
def test_post_training_methods_prune_a_trained_vit_and_convnet(tmp_path, model, method):
    cfg = trial_config(RAW, {"model": model, "prune.method": method, "prune.sparsity": 0.6, "train.epochs": 2})
    row = run_trial(cfg, tmp_path)
    report = json.loads(stage_file(tmp_path, cfg, "evaluate", "sparsity.json").read_text())
    assert report["kept"] == round(0.4 * report["total"])
    assert row["test_accuracy"] == pytest.approx(_test_accuracy(cfg, tmp_path), abs=1e-9)


def test_px_refuses_the_vit_by_naming_its_activation(tmp_path):
    cfg = trial_config(RAW, {"model": {"name": "vit", "options": {"patch_size": 2, "dim": 16, "heads": 4}},
                             "prune.method": "px", "prune.rounds": 1})
    with pytest.raises(ValueError, match="applies GELU, which has no 0/1 path gate"):
        run_trial(cfg, tmp_path)
