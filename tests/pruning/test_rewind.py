"""What a rewind resets (``prune.rewind``) and what the optimizer restarts with (``prune.rewind_optimizer``),
seen where the stages hand the start state to the trainer."""
import pytest
import torch

from pruning.config import PruneConfig
from pruning.methods import TrialSettings, plan_method
from pruning.stages import Retrain
from training import trainer as trainer_module
from training.data import DataConfig
from training.models import ModelConfig
from training.stage import StageEnv, materialize
from training.store import ArtifactStore
from training.trainer import TrainConfig

DATA = DataConfig(name="digits", val_fraction=0.1)
MODEL = ModelConfig(name="convnet", options={"width": 8, "depth": 2, "norm": "batch"})
TRAIN = TrainConfig(epochs=2, batch_size=128, optimizer="sgd", lr=0.05, momentum=0.9)
NORM = ("features.1.weight", "features.1.bias", "features.1.running_mean")  # BatchNorm after the first conv
BIAS = "fc.bias"


@pytest.fixture
def starts(monkeypatch):
    """Every start state handed to Trainer.fit with a mask (IMP levels and the final retrain)."""
    seen = []
    fit = trainer_module.Trainer.fit

    def spy(self, model, mask=None, start=None, **kw):
        if mask is not None:
            seen.append(start)
        return fit(self, model, mask=mask, start=start, **kw)

    monkeypatch.setattr(trainer_module.Trainer, "fit", spy)
    return seen


def _env(root) -> StageEnv:
    return StageEnv.on(ArtifactStore(root), log=lambda m: None)


def _load(env, stage, name):
    return torch.load(env.store.get(stage.name, stage.key).file(name), weights_only=True)


def _plan(method="imp", rewind_step=0, **prune):
    cfg = PruneConfig(method=method, sparsity=1 - 0.8 ** 2, rewind_step=rewind_step, **prune)
    if method == "distilled_imp":
        cfg = cfg.model_copy(update={"distill": cfg.distill.model_copy(update={"method": "random", "ipc": 5}),
                                     "small_train": TRAIN})
    return plan_method(TrialSettings(seed=0, data=DATA, model=MODEL, train=TRAIN, prune=cfg))


@pytest.mark.parametrize("method", ["imp", "distilled_imp"])
def test_rewind_weights_keeps_trained_biases_and_norms_and_state_resets_them(tmp_path, starts, method):
    for rewind in ("weights", "state"):
        env = _env(tmp_path / rewind)
        plan = _plan(method, rewind=rewind)
        materialize(plan.mask, env)  # pretrain, then level 1 starts from the rewind
        theta0 = _load(env, plan.start, "rewind.pt")["model"]
        trained = _load(env, plan.levels[0], "model.pt")  # the dense net level 1 prunes
        start = starts[-1].model
        assert torch.equal(start["features.0.weight"], theta0["features.0.weight"])  # weights rewound either way
        assert torch.equal(start["fc.weight"], theta0["fc.weight"])
        expected = trained if rewind == "weights" else theta0
        for name in (BIAS, *NORM):
            assert not torch.equal(trained[name], theta0[name]), f"{name} did not train: the test sees nothing"
            assert torch.equal(start[name], expected[name]), (rewind, name)


def test_final_retrain_of_a_weights_rewind_keeps_the_last_levels_biases(tmp_path, starts):
    plan = _plan("distilled_imp")  # the authors' default: weights only
    assert PruneConfig(method="distilled_imp").rewind_mode == "weights"
    assert PruneConfig(method="imp").rewind_mode == "state"
    assert plan.keep_trained is plan.mask.source
    env = _env(tmp_path)
    retrain = Retrain(mask=plan.mask, start=plan.start, data=DATA, model=MODEL, train=TRAIN, seed=0,
                      start_mode=plan.start_mode, keep_trained=plan.keep_trained)
    materialize(retrain, env)
    last = _load(env, plan.mask.source, "model.pt")
    theta0 = _load(env, plan.start, "rewind.pt")["model"]
    start = starts[-1]
    assert start.step == 0 and start.optimizer == {}
    assert torch.equal(start.model[BIAS], last[BIAS]) and not torch.equal(last[BIAS], theta0[BIAS])
    assert torch.equal(start.model["fc.weight"], theta0["fc.weight"])
    plain = Retrain(mask=plan.mask, start=plan.start, data=DATA, model=MODEL, train=TRAIN, seed=0,
                    start_mode=plan.start_mode)
    assert plain.key != retrain.key  # a cached whole-state retrain is not reused for it


@pytest.mark.parametrize("mode", ["fresh", "resume"])
def test_imp_at_k_restarts_momentum_as_openlth(tmp_path, starts, mode):
    k = 5
    env = _env(tmp_path)
    plan = _plan("imp", rewind_step=k, rewind_optimizer=mode)
    materialize(plan.mask, env)
    saved = _load(env, plan.start, "rewind.pt")
    assert saved["step"] == k and saved["optimizer"]["state"]  # momentum exists at k
    level = starts[-1]
    assert level.step == k  # schedule and data order resume at k either way
    if mode == "fresh":
        assert level.optimizer == {}
        assert plan.start_mode == "weights"  # the final retrain: step k, fresh optimizer
    else:
        assert level.optimizer["state"]
        assert plan.start_mode == "resume"
    # The final retrain, as the trial builds it.
    retrain = Retrain(mask=plan.mask, start=plan.start, data=DATA, model=MODEL, train=TRAIN, seed=0,
                      start_mode=plan.start_mode)
    materialize(retrain, env)
    assert starts[-1].step == k and (starts[-1].optimizer == {}) == (mode == "fresh")


def test_rewind_options_only_change_keys_where_they_change_results():
    base = _plan("imp").levels[1].key
    assert _plan("imp", rewind_optimizer="resume").levels[1].key == base  # k = 0: nothing to restore
    assert _plan("imp", rewind="weights").levels[1].key != base
    at_k = {m: _plan("imp", rewind_step=5, rewind_optimizer=m).levels[1].key for m in ("fresh", "resume")}
    assert at_k["fresh"] != at_k["resume"]
