"""Define-by-run (conditional) search spaces: a method's own options are asked only when it is drawn."""
import optuna
import pytest
import yaml

from pipelines.config import ConfigError, load_experiment
from search.space import OptunaConfig
from search.study import StudySearcher

BASE = {
    "num_samples": 30,
    "sampler": "random",
    "space": {"prune.method": {"type": "categorical", "choices": ["snip", "pdp", "synflow"]},
              "prune.sparsity": {"type": "float", "low": 0.5, "high": 0.9}},
    "conditional": {"prune.method": {
        "pdp": {"prune.pdp.tau": {"type": "float", "low": 1e-5, "high": 1e-3, "log": True}},
        "synflow": {"prune.rounds": {"type": "int", "low": 10, "high": 100}}}},
}


def _searcher(opt: OptunaConfig) -> StudySearcher:
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    space = {k: d.to_optuna() for k, d in opt.space.items()}
    conditional = {a: {c: {k: d.to_optuna() for k, d in sub.items()} for c, sub in b.items()}
                   for a, b in opt.conditional.items()}
    return StudySearcher(study, space, ["val_accuracy"], opt.num_samples, conditional=conditional)


def test_each_trial_gets_only_its_methods_options():
    searcher = _searcher(OptunaConfig.model_validate(BASE))
    seen = set()
    for i in range(24):
        overrides = searcher.suggest(f"t{i}")["overrides"]
        method = overrides["prune.method"]
        seen.add(method)
        assert ("prune.pdp.tau" in overrides) == (method == "pdp")
        assert ("prune.rounds" in overrides) == (method == "synflow")
        if method == "pdp":
            assert 1e-5 <= overrides["prune.pdp.tau"] <= 1e-3
        if method == "synflow":
            assert isinstance(overrides["prune.rounds"], int) and 10 <= overrides["prune.rounds"] <= 100
    assert seen == {"snip", "pdp", "synflow"}
    # the study records the conditional parameter only on the trials that drew it
    params = [t.params for t in searcher.study.trials]
    assert all(("prune.pdp.tau" in p) == (p["prune.method"] == "pdp") for p in params)


@pytest.mark.parametrize("change, fragment", [
    ({"conditional": {"prune.sparsity": {"0.5": {"prune.rounds": {"type": "int", "low": 1, "high": 3}}}}},
     "categorical axis"),
    ({"conditional": {"prune.method": {"grasp": {"prune.rounds": {"type": "int", "low": 1, "high": 3}}}}},
     "not one of its choices"),
    ({"sampler": "grid"}, "define-by-run"),
])
def test_bad_conditional_spaces_are_refused(change, fragment):
    with pytest.raises(ValueError, match=fragment):
        OptunaConfig.model_validate({**BASE, **change})


def test_conditional_endpoints_are_validated_with_their_choice(tmp_path):
    raw = {"name": "c", "data": {"name": "digits", "val_fraction": 0.2}, "model": {"name": "mlp"},
           "sweep": {"optuna": {**BASE, "conditional": {"prune.method": {
               "pdp": {"prune.pdp.tau": {"type": "float", "low": -1.0, "high": 1e-3}}}}}}}
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(raw))
    with pytest.raises(ConfigError, match=r"conditional.prune.method.pdp.prune.pdp.tau=-1.0"):
        load_experiment(tmp_path / "c.yaml")


def test_the_same_metric_twice_is_not_two_objectives():
    import pytest
    from pydantic import ValidationError

    from search.space import OptunaConfig

    space = {"prune.sparsity": {"type": "float", "low": 0.5, "high": 0.9}}
    with pytest.raises(ValidationError, match=r"\['val_accuracy'\] appear more than once"):
        OptunaConfig(space=space, objectives=[{"metric": "val_accuracy", "mode": "max"},
                                              {"metric": "val_accuracy", "mode": "min"}])
    OptunaConfig(space=space, objectives=[{"metric": "val_accuracy", "mode": "max"},
                                          {"metric": "density", "mode": "min"}])
