"""The Optuna phase's study: persistent in DIR (SQLite), driven through a Ray Tune searcher.

Ray's own ``OptunaSearch`` keeps its trial bookkeeping in memory, so a killed driver loses which
study trials were running, and a restarted search asks for new ones: the study then holds killed
trials as RUNNING forever and counts configurations twice. This searcher keeps nothing that the
study does not: on (re)start it first re-runs the trials an earlier attempt left RUNNING, under their
own numbers and parameters, then asks for new ones until the study holds ``num_samples`` trials.
A trial that fails, or ends without every objective (e.g. stopped early by a scheduler), is told to
Optuna as FAIL or PRUNED, never as COMPLETE with partial values.
"""
from __future__ import annotations

import math
from typing import Any

import optuna
from ray.tune.search import Searcher

optuna.logging.set_verbosity(optuna.logging.WARNING)

SAMPLERS = {
    "tpe": lambda seed: optuna.samplers.TPESampler(seed=seed),
    "random": lambda seed: optuna.samplers.RandomSampler(seed=seed),
    "nsga2": lambda seed: optuna.samplers.NSGAIISampler(seed=seed),
}


def study_storage(path: str) -> optuna.storages.RDBStorage:
    return optuna.storages.RDBStorage(f"sqlite:///{path}", engine_kwargs={"connect_args": {"timeout": 30}})


def open_study(path: str, name: str, modes: list[str], sampler: str, seed: int | None) -> optuna.Study:
    """Create the study or continue it; its directions are part of its identity."""
    directions = ["maximize" if m == "max" else "minimize" for m in modes]
    study = optuna.create_study(storage=study_storage(path), study_name=name, directions=directions,
                                sampler=SAMPLERS[sampler](seed), load_if_exists=True)
    if [d.name.lower() for d in study.directions] != directions:
        raise ValueError(f"the study {name!r} in {path} has directions "
                         f"{[d.name.lower() for d in study.directions]}, this sweep asks for {directions}")
    return study


def remaining_trials(study: optuna.Study, num_samples: int) -> int:
    """How many Tune trials the next attempt runs: unfinished ones of earlier attempts plus new ones."""
    states = [t.state for t in study.get_trials(deepcopy=False)]
    finished = sum(s in (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED,
                         optuna.trial.TrialState.FAIL) for s in states)
    return max(0, num_samples - finished)


def tell(study: optuna.Study, number: int, result: dict | None, metrics: list[str], error: bool = False) -> None:
    """COMPLETE with every objective, FAIL for an error, PRUNED for a trial without its objectives."""
    state = optuna.trial.TrialState
    if error or result is None or result.get("status") == "error":
        study.tell(number, state=state.FAIL)
        return
    values = [result.get(m) for m in metrics]
    if result.get("status") != "ok" or any(not isinstance(v, (int, float)) or not math.isfinite(v) for v in values):
        study.tell(number, state=state.PRUNED)
        return
    study.tell(number, values if len(values) > 1 else values[0])


def settle_ended(study: optuna.Study, rows: dict[int, dict], metrics: list[str]) -> int:
    """Tell the study the trials that ended but were never told (the driver died in between)."""
    settled = 0
    for trial in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
        if trial.number in rows:
            tell(study, trial.number, rows[trial.number], metrics)
            settled += 1
    return settled


class StudySearcher(Searcher):
    def __init__(self, study: optuna.Study, space: dict[str, Any], metrics: list[str], num_samples: int) -> None:
        super().__init__(metric=None, mode=None)
        self.study = study
        self.space = space
        self.metrics = metrics
        self.num_samples = num_samples
        self._live: dict[str, int] = {}  # Tune trial id -> study trial number
        self._stale = [t.number for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,))]

    def set_search_properties(self, metric, mode, config, **spec) -> bool:
        return True  # objectives come from the sweep config, not from Tune

    def suggest(self, trial_id: str) -> dict | str | None:
        if self._stale:
            number = self._stale.pop(0)
            params = self.study.trials[number].params
        else:
            if len(self.study.get_trials(deepcopy=False)) >= self.num_samples:
                return Searcher.FINISHED
            trial = self.study.ask(fixed_distributions=self.space)
            number, params = trial.number, trial.params
        self._live[trial_id] = number
        return {"overrides": dict(params), "optuna_number": number}

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        number = self._live.pop(trial_id, None)
        if number is not None:
            tell(self.study, number, result, self.metrics, error)

    def save(self, checkpoint_path: str) -> None:
        """Nothing to save: the study in SQLite is the whole state."""

    def restore(self, checkpoint_path: str) -> None:
        """Nothing to restore: see ``save``."""
