"""Every built-in default is pinned next to the version of what reads it: a default changed without a
version bump (which would silently reuse stale store entries) fails here, saying what to bump."""
from __future__ import annotations

from pipelines import defaults_pin
from pruning.registry import METHODS
from pruning.stages import Pretrain, Retrain
from training.settings import TrainConfig


def test_the_defaults_match_the_pin():
    found = defaults_pin.problems(defaults_pin.load_pin(), defaults_pin.fingerprint())
    assert not found, "\n".join(found)


def test_a_changed_default_without_a_version_bump_fails_and_says_what_to_bump(monkeypatch):
    pin = defaults_pin.load_pin()
    monkeypatch.setattr(TrainConfig.model_fields["epochs"], "default", 30)
    found = defaults_pin.problems(pin, defaults_pin.fingerprint())
    assert len(found) == 1, found
    assert "defaults of settings:train.epochs changed (epochs: 20 -> 30)" in found[0]
    assert "pretrain 1" in found[0] and "retrain 1" in found[0] and "bump the `version` of these stages" in found[0]
    for stage in ("pdp", "pretrain", "retrain"):  # every stage that reads train must be bumped
        assert stage in found[0]
    assert "imp_level" not in found[0] and "evaluate" not in found[0]  # not those that do not read it
    # bumping only some of the readers is not enough: the others would reuse stale entries
    monkeypatch.setattr(Pretrain, "version", 2)
    found = defaults_pin.problems(pin, defaults_pin.fingerprint())
    assert any("keeps its version" in f and "retrain 1" in f and "pretrain" not in f.split("keeps its version")[1]
               for f in found), found
    # bumping every reader turns it into a plain re-pin
    monkeypatch.setattr(Retrain, "version", 2)
    from pruning.stages import PdpMask

    monkeypatch.setattr(PdpMask, "version", 2)
    found = defaults_pin.problems(pin, defaults_pin.fingerprint())
    assert found and all("re-pin" in f and "keeps its version" not in f for f in found), found


def test_a_method_option_default_changed_needs_the_methods_version(monkeypatch):
    pin = defaults_pin.load_pin()
    opts = METHODS.get("grasp").options
    monkeypatch.setattr(opts.model_fields["temperature"], "default", 100.0)
    found = defaults_pin.problems(pin, defaults_pin.fingerprint())
    assert len(found) == 1 and "method:grasp" in found[0] and "temperature: 200.0 -> 100.0" in found[0]
    assert "register_method(..., version=N)" in found[0]


def test_a_prune_field_default_names_only_the_stages_reading_that_field(monkeypatch):
    from pruning.config import PruneConfig

    pin = defaults_pin.load_pin()
    monkeypatch.setattr(PruneConfig.model_fields["prune_fraction"], "default", 0.5)
    found = defaults_pin.problems(pin, defaults_pin.fingerprint())
    assert len(found) == 1 and "settings:prune.prune_fraction" in found[0] and "imp_level 1" in found[0]
    assert "mask 1" not in found[0] and "posttrain" not in found[0]
