"""Structured (channel) pruning at init through a trial, exported and timed by the ``export`` stage."""
import copy

import pytest
import torch

import yaml

from pipelines.config import ConfigError, load_experiment, trial_config
from pipelines.preflight import preflight
from pipelines.trial import run_trial, trial_graph
from pruning.export import export_channel_pruned
from pruning.mask import Mask
from search.space import CHANNEL_PARAM, overrides_from_params
from training.cost import count_flops
from training.data import load_dataset
from training.stage import fresh_model
from training.store import ArtifactStore

RAW = {
    "name": "t",
    "data": {"name": "digits", "val_fraction": 0.15},
    "model": {"name": "mlp", "options": {"widths": [48, 24]}},
    "train": {"epochs": 2, "batch_size": 128, "lr": 0.05},
    "prune": {"method": "magnitude", "sparsity": 0.5,
              "channel_keep": {"layers.0.weight": 0.25, "layers.2.weight": 0.5}},
    "export": {"enabled": True, "repeats": 3, "warmup": 1, "throughput_batch": 16},
}


def test_channel_keep_export_row_matches_an_independent_export(tmp_path):
    cfg = trial_config(RAW, {})
    store = ArtifactStore(tmp_path / "store")
    row = run_trial(cfg, store, log=lambda m: None)
    graph = trial_graph(cfg)
    mask = Mask.load(store.get(graph.plan.mask.name, graph.plan.mask.key).file("mask.pt"))
    # Whole rows: 12 of 48 and 12 of 24 channels kept, the classifier untouched.
    rows_kept = {n: int(m.flatten(1).any(1).sum()) for n, m in mask.items()}
    assert rows_kept == {"layers.0.weight": 12, "layers.2.weight": 12, "fc.weight": 10}
    assert all(bool(m[m.flatten(1).any(1)].all()) for m in mask.values())

    # The row's size and FLOPs are the exported network's, computed here independently.
    data = load_dataset(cfg.data)
    model = fresh_model(data, cfg.model, cfg.seed)
    trained = store.get(graph.trained.name, graph.trained.key).file("model.pt")
    model.load_state_dict(torch.load(trained, weights_only=True))
    exported = export_channel_pruned(model, mask, data.train.x[:8])
    assert row["export_params"] == sum(p.numel() for p in exported.parameters())
    assert row["export_params"] == 64 * 12 + 12 + 12 * 12 + 12 + 12 * 10 + 10  # by hand: 64 inputs
    assert row["export_flops"] == count_flops(exported, data.input_shape) == 2 * (64 * 12 + 12 * 12 + 12 * 10)
    assert row["export_params"] < row["remaining_params"] < row["dense_params"]
    for col in ("latency_ms", "dense_latency_ms", "batch_latency_ms", "dense_batch_latency_ms"):
        assert row[col] > 0, col
    assert row["latency_speedup"] == pytest.approx(row["dense_latency_ms"] / row["latency_ms"])
    assert row["latency_device"].startswith("cpu")
    assert row["sparse24_latency_ms"] is None and "CUDA" in row["sparse24_note"]


def test_channel_keep_selects_the_highest_l1_rows():
    cfg = trial_config({**RAW, "export": {"enabled": False}}, {"prune.channel_keep": {"layers.0.weight": 0.5}})
    model = fresh_model(load_dataset(cfg.data), cfg.model, cfg.seed)
    from pruning.at_init import prune_at_init
    from pruning.methods import build_scorer
    from pruning.scorers import ScoringBatches

    mask = prune_at_init(model, build_scorer("magnitude", cfg.prune, 0), 1.0,
                         ScoringBatches(None, None, (1, 8, 8), 10), channel_keep={"layers.0.weight": 0.5})
    l1 = model.layers[0].weight.detach().abs().sum(1)
    assert set(mask["layers.0.weight"].any(1).nonzero().flatten().tolist()) == set(l1.topk(24).indices.tolist())
    assert bool(mask["layers.2.weight"].all()) and bool(mask["fc.weight"].all())


def test_export_metrics_need_export_enabled_and_channel_names_are_checked(tmp_path):
    text = """
name: s
data: {name: digits, val_fraction: 0.15}
model: {name: mlp, options: {widths: [16]}}
prune: {method: magnitude, sparsity: 0.5}
sweep:
  optuna:
    num_samples: 2
    objectives: [{metric: val_accuracy}, {metric: latency_ms, mode: min}]
    channel_keep: {type: float, low: 0.2, high: 1.0}
    space: {train.lr: {type: float, low: 0.01, high: 0.1}}
"""
    (tmp_path / "s.yaml").write_text(text)
    with pytest.raises(ConfigError, match="export.enabled"):
        load_experiment(tmp_path / "s.yaml")
    with pytest.raises(ConfigError, match="channel_keep"):
        trial_config({**RAW, "prune": {**RAW["prune"], "channel_keep": {"layers.0.weight": 1.5}}}, {})
    assert overrides_from_params({f"{CHANNEL_PARAM}layers.0.weight": 0.3, "train.lr": 0.1}) == {
        "train.lr": 0.1, "prune.channel_keep": {"layers.0.weight": 0.3}}
    bad = copy.deepcopy(RAW)
    bad["prune"]["channel_keep"] = {"layers.9.weight": 0.5}
    (tmp_path / "bad.yaml").write_text(yaml.safe_dump(bad))
    with pytest.raises(ConfigError, match="layers.9.weight"):
        preflight(*load_experiment(tmp_path / "bad.yaml"), tmp_path / "out")


def test_vit_heads_and_mlp_channels_pruned_at_init_and_exported(tmp_path):
    """head_keep drops whole heads (their q, k, v rows), channel_keep MLP channels; the export stage
    turns them into a ViT with fewer heads and a narrower MLP, and its row reports that network."""
    raw = {**RAW, "model": {"name": "vit", "options": {"dim": 32, "heads": 4, "depth": 2, "patch_size": 4}},
           "prune": {"method": "magnitude", "sparsity": 0.5, "head_keep": 0.5,
                     "channel_keep": {"blocks.0.mlp.0.weight": 0.25, "blocks.1.mlp.0.weight": 0.5}}}
    cfg = trial_config(raw, {})
    store = ArtifactStore(tmp_path / "store")
    row = run_trial(cfg, store, log=lambda m: None)
    graph = trial_graph(cfg)
    mask = Mask.load(store.get(graph.plan.mask.name, graph.plan.mask.key).file("mask.pt"))
    for b in range(2):
        heads_alive = mask[f"blocks.{b}.attn.v.weight"].any(1).reshape(4, 8).any(1)
        assert int(heads_alive.sum()) == 2
        for part in ("q", "k"):  # q and k drop the same heads as v
            assert torch.equal(mask[f"blocks.{b}.attn.{part}.weight"].any(1).reshape(4, 8).any(1), heads_alive)
    data = load_dataset(cfg.data)
    model = fresh_model(data, cfg.model, cfg.seed)
    trained = store.get(graph.trained.name, graph.trained.key).file("model.pt")
    model.load_state_dict(torch.load(trained, weights_only=True))
    exported = export_channel_pruned(model, mask, data.train.x[:8])
    assert [blk.attn.heads for blk in exported.blocks] == [2, 2]
    assert [blk.mlp[0].out_features for blk in exported.blocks] == [16, 32]
    assert row["export_params"] == sum(p.numel() for p in exported.parameters())
    with pytest.raises(ConfigError, match="head_keep"):
        trial_config({**RAW, "prune": {**RAW["prune"], "head_keep": 0.0}}, {})
