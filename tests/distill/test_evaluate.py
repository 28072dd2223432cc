import pytest

from distill.evaluate import evaluate_distilled, protocol_train_config
from distill.methods import DistillConfig, distill_dataset


def test_protocol_defaults():
    cfg = protocol_train_config()
    assert (cfg.epochs, cfg.lr, cfg.momentum, cfg.weight_decay, cfg.optimizer) == (300, 0.01, 0.9, 5e-4, "sgd")
    assert cfg.augment == "none" and cfg.schedule == "multistep" and cfg.milestones == [150]
    assert protocol_train_config(40, device="cpu").milestones == [20]


def test_evaluate_distilled_trains_fresh_nets_and_tests_on_real(digits):
    ds = distill_dataset(digits, DistillConfig(method="random", ipc=5))
    assert "network" not in ds.recipe  # a random subset involves no network: pass the evaluation net
    small = {"name": "convnet", "options": {"width": 16}}
    out = evaluate_distilled(ds, digits, protocol_train_config(100, device="cpu", lr=0.05), nets=2, model_cfg=small)
    assert len(out["accuracies"]) == 2 and out["accuracies"][0] != out["accuracies"][1]
    assert 0.4 < out["mean"] <= 1.0 and out["std"] >= 0
    assert out["network"]["options"]["width"] == 16
    assert out["sample_passes"] == 2 * 100 * 50
    with pytest.raises(ValueError):
        evaluate_distilled(ds, digits, nets=0)


def test_papers_protocol_trains_with_per_sample_dsa_at_the_learned_lr(digits):
    from distill.evaluate import papers_protocol

    ds = distill_dataset(digits, DistillConfig(method="random", ipc=3))
    cfg, aug = papers_protocol(ds)
    assert (cfg.epochs, cfg.lr, cfg.milestones, cfg.batch_size) == (1000, 0.01, [500], 256)
    assert aug.draw == "sample" and aug.kind == "image"
    ds.cost["learned_lr"] = 0.0123  # what an MTT set carries
    assert papers_protocol(ds, epochs=4)[0].lr == 0.0123

    calls = []

    def counting(x, seed):
        calls.append(len(x))
        return aug(x, seed)

    small = {"name": "convnet", "options": {"width": 8, "depth": 2}}
    train = protocol_train_config(3, device="cpu")
    plain = evaluate_distilled(ds, digits, train, nets=1, model_cfg=small)
    augmented = evaluate_distilled(ds, digits, train, nets=1, model_cfg=small, augment=counting)
    assert calls == [30, 30, 30]  # every batch of every epoch went through it
    assert augmented["augment"] != "none" and plain["augment"] == "none"
