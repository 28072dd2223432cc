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


@pytest.mark.parametrize("objectives", [["val_accuracy"], ["val_accuracy", "density"]])
def test_the_study_names_its_metrics_and_records_rows_and_curves(tmp_path, objectives):
    """What optuna-dashboard shows: metric names, each trial's slot / MLflow run / accuracies, and its
    per-epoch validation accuracy (intermediate values; an attribute in a multi-objective study)."""
    from search.study import CURVE_ATTR, open_study

    study = open_study(str(tmp_path / "optuna.db"), "s", ["max"] * len(objectives), "random", 0, metrics=objectives)
    space = {"prune.sparsity": optuna.distributions.FloatDistribution(0.5, 0.9)}
    searcher = StudySearcher(study, space, objectives, 2, progress=("progress_step", "progress_val_accuracy"))
    searcher.suggest("a")
    for step, acc in ((1, 0.5), (1, 0.5), (2, 0.7)):  # a repeated step is recorded once
        searcher.on_trial_result("a", {"progress_step": step, "progress_val_accuracy": acc})
    row = {"status": "ok", "slot": "optuna-0", "mlflow_run_id": "abc", "test_accuracy": 0.71, "val_accuracy": 0.7,
           "achieved_sparsity": 0.6, "density": 0.4}
    searcher.on_trial_complete("a", row)
    loaded = optuna.load_study(study_name="s", storage=f"sqlite:///{tmp_path}/optuna.db")
    assert loaded.metric_names == objectives
    t = loaded.trials[0]
    assert t.state == optuna.trial.TrialState.COMPLETE
    assert {k: t.user_attrs[k] for k in ("slot", "mlflow_run_id", "test_accuracy", "achieved_sparsity")} == {
        "slot": "optuna-0", "mlflow_run_id": "abc", "test_accuracy": 0.71, "achieved_sparsity": 0.6}
    if len(objectives) == 1:
        assert t.intermediate_values == {1: 0.5, 2: 0.7}
    else:
        assert t.user_attrs[CURVE_ATTR] == [[1, 0.5], [2, 0.7]]


@pytest.mark.parametrize("sampler", ["random", "tpe"])
def test_a_resumed_study_draws_new_points(tmp_path, sampler):
    """Each attempt reopens the study as the runner does (same configured seed); a resume must not
    replay the first attempt's draws (issue 19: after two kills trial #5 drew trial #0's parameters)."""
    from search.study import open_study, remaining_trials, settle_ended

    path, space = str(tmp_path / "optuna.db"), {
        "prune.sparsity": optuna.distributions.FloatDistribution(0.5, 0.95),
        "train.lr": optuna.distributions.FloatDistribution(0.01, 0.2, log=True)}
    num_samples = 6

    def attempt(runs: int, finish: bool = True) -> None:
        study = open_study(path, "s", ["max"], sampler, 0, metrics=["val_accuracy"])
        settle_ended(study, {}, ["val_accuracy"])
        searcher = StudySearcher(study, space, ["val_accuracy"], num_samples)
        for i in range(min(runs, remaining_trials(study, num_samples))):
            searcher.suggest(f"t{i}")
            if finish:
                searcher.on_trial_complete(f"t{i}", {"status": "ok", "val_accuracy": 0.5 + i / 100})

    attempt(2)
    attempt(1, finish=False)  # killed with its trial running: the next attempt re-runs it
    attempt(num_samples)
    trials = optuna.load_study(study_name="s", storage=f"sqlite:///{path}").trials
    assert [t.number for t in trials] == list(range(num_samples))
    assert all(t.state == optuna.trial.TrialState.COMPLETE for t in trials)
    draws = [tuple(sorted(t.params.items())) for t in trials]
    assert len(set(draws)) == num_samples, draws


def test_a_fresh_study_keeps_the_configured_seed(tmp_path):
    """Two new sweeps with the same seed draw the same points (reproducible), as before per-attempt seeds."""
    from search.study import attempt_seed, open_study

    assert attempt_seed(7, 0) == 7 and attempt_seed(None, 3) is None
    assert attempt_seed(7, 2) == attempt_seed(7, 2) != attempt_seed(7, 3)
    space = {"x": optuna.distributions.FloatDistribution(0.0, 1.0)}
    firsts = [open_study(str(tmp_path / f"{i}.db"), "s", ["max"], "random", 0).ask(space).params for i in range(2)]
    assert firsts[0] == firsts[1]
