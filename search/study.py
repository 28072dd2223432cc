"""The Optuna phase's study: persistent in DIR (SQLite), driven through a Ray Tune searcher.

Ray's own ``OptunaSearch`` keeps its trial bookkeeping in memory, so a killed driver loses which
study trials were running, and a restarted search asks for new ones: the study then holds killed
trials as RUNNING forever and counts configurations twice. This searcher keeps nothing that the
study does not: on (re)start it first re-runs the trials an earlier attempt left RUNNING, under their
own numbers and parameters, then asks for new ones until the study holds ``num_samples`` trials, from
a sampler seeded per attempt (``attempt_seed``) so that a resume does not replay earlier draws.
A trial that fails, or ends without every objective (e.g. stopped early by a scheduler), is told to
Optuna as FAIL or PRUNED, never as COMPLETE with partial values.
"""
from __future__ import annotations

import hashlib
import math
import warnings
from typing import Any

import optuna
from ray.tune.search import Searcher

from .space import overrides_from_params

optuna.logging.set_verbosity(optuna.logging.WARNING)

CONSTRAINTS_ATTR = "constraints"  # a trial's constraint violations (<= 0: met), as Optuna's samplers read them
# What a study trial records of its result row, so optuna-dashboard links it to its MLflow run and slot.
CURVE_ATTR = "val_accuracy_by_epoch"  # multi-objective studies: [step, value] pairs (no intermediate values)
ROW_ATTRS = ("slot", "mlflow_run_id", "status", "test_accuracy", "val_accuracy", "achieved_sparsity")


def _constraints_of(trial: optuna.trial.FrozenTrial) -> list[float]:
    return trial.user_attrs.get(CONSTRAINTS_ATTR, [])


def make_sampler(name: str, seed: int | None, space: dict[str, Any] | None = None, constrained: bool = False):
    """Optuna's sampler by name; the constrained ones get the trials' recorded constraint violations."""
    s = optuna.samplers
    steer = {"constraints_func": _constraints_of} if constrained else {}
    builders = {
        "tpe": lambda: s.TPESampler(seed=seed, **steer),
        "random": lambda: s.RandomSampler(seed=seed),
        "nsga2": lambda: s.NSGAIISampler(seed=seed, **steer),
        "nsga3": lambda: s.NSGAIIISampler(seed=seed, **steer),
        "gp": lambda: s.GPSampler(seed=seed, **steer),
        "qmc": lambda: s.QMCSampler(seed=seed),
        "grid": lambda: s.GridSampler({k: list(d.choices) for k, d in (space or {}).items()}, seed=seed),
        "bruteforce": lambda: s.BruteForceSampler(seed=seed),
    }
    return builders[name]()


def study_storage(path: str) -> optuna.storages.RDBStorage:
    return optuna.storages.RDBStorage(f"sqlite:///{path}", engine_kwargs={"connect_args": {"timeout": 30}})


def attempt_seed(seed: int | None, trials_so_far: int) -> int | None:
    """The sampler's seed for an attempt that finds ``trials_so_far`` trials in the study.

    A sampler keeps its random state in memory, so one rebuilt with the configured seed on a resume
    replays the first attempt's draws (trial #5 drew trial #0's parameters). A fresh study gets the
    configured seed itself (a new sweep is reproducible, and the same as before this rule); a study
    that already holds trials gets a seed derived from both, so every resume draws new points and
    resuming the same study twice still draws the same ones."""
    if seed is None or trials_so_far == 0:
        return seed
    digest = hashlib.sha256(f"{seed}:{trials_so_far}".encode()).digest()
    return int.from_bytes(digest[:4], "big")  # numpy's seeds stop at 2**32


def _trials_so_far(storage: optuna.storages.BaseStorage, name: str) -> int:
    try:
        return storage.get_n_trials(storage.get_study_id_from_name(name))
    except KeyError:  # no such study yet
        return 0


def open_study(path: str, name: str, modes: list[str], sampler: str, seed: int | None,
               space: dict[str, Any] | None = None, constrained: bool = False,
               metrics: list[str] | None = None) -> optuna.Study:
    """Create the study or continue it; its directions are part of its identity. ``metrics`` names the
    objectives (optuna-dashboard then says 'val_accuracy', not 'Objective 0')."""
    directions = ["maximize" if m == "max" else "minimize" for m in modes]
    storage = study_storage(path)
    seed = attempt_seed(seed, _trials_so_far(storage, name))
    study = optuna.create_study(storage=storage, study_name=name, directions=directions,
                                sampler=make_sampler(sampler, seed, space, constrained), load_if_exists=True)
    if [d.name.lower() for d in study.directions] != directions:
        raise ValueError(f"the study {name!r} in {path} has directions "
                         f"{[d.name.lower() for d in study.directions]}, this sweep asks for {directions}")
    if metrics is not None and study.metric_names != list(metrics):
        with warnings.catch_warnings():  # "experimental" since 3.2, stable in use; not the user's concern
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            study.set_metric_names(list(metrics))
    return study


def remaining_trials(study: optuna.Study, num_samples: int) -> int:
    """How many Tune trials the next attempt runs: unfinished ones of earlier attempts plus new ones."""
    states = [t.state for t in study.get_trials(deepcopy=False)]
    finished = sum(s in (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED,
                         optuna.trial.TrialState.FAIL) for s in states)
    return max(0, num_samples - finished)


def tell(study: optuna.Study, number: int, result: dict | None, metrics: list[str], error: bool = False,
         constraints: list = ()) -> None:
    """COMPLETE with every objective (and its constraint violations recorded), FAIL for an error, PRUNED
    for a trial without its objectives (e.g. stopped early by a scheduler)."""
    state = optuna.trial.TrialState
    if result:
        record_row(study, number, result)
    if error or result is None or result.get("status") == "error":
        study.tell(number, state=state.FAIL)
        return
    values = [result.get(m) for m in metrics]
    if result.get("status") != "ok" or any(not _finite(v) for v in values):
        study.tell(number, state=state.PRUNED)
        return
    if constraints:
        got = [result.get(c.metric) for c in constraints]
        violations = [c.violation(float(v)) if _finite(v) else math.inf for c, v in zip(constraints, got)]
        optuna.trial.Trial(study, study.trials[number]._trial_id).set_user_attr(CONSTRAINTS_ATTR, violations)
    study.tell(number, values if len(values) > 1 else values[0])


def record_row(study: optuna.Study, number: int, row: dict) -> None:
    """The row's slot, MLflow run id, status, accuracies and achieved sparsity as the trial's user attributes."""
    trial = optuna.trial.Trial(study, study.trials[number]._trial_id)
    for key in ROW_ATTRS:
        value = row.get(key)
        if isinstance(value, str) or _finite(value):
            trial.set_user_attr(key, value)


def _finite(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def pareto_trials(study: optuna.Study) -> list[optuna.trial.FrozenTrial]:
    """The non-dominated COMPLETE trials that meet every constraint (PRUNED and FAIL trials never count)."""
    done = [t for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
            if all(v <= 0 for v in _constraints_of(t))]
    signs = [1.0 if d == optuna.study.StudyDirection.MAXIMIZE else -1.0 for d in study.directions]

    def dominates(a, b) -> bool:
        pa = [s * v for s, v in zip(signs, a.values)]
        pb = [s * v for s, v in zip(signs, b.values)]
        return all(x >= y for x, y in zip(pa, pb)) and any(x > y for x, y in zip(pa, pb))

    return [t for t in done if not any(dominates(o, t) for o in done if o is not t)]


def settle_ended(study: optuna.Study, rows: dict[int, dict], metrics: list[str], constraints: list = ()) -> int:
    """Tell the study the trials that ended but were never told (the driver died in between)."""
    settled = 0
    for trial in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
        if trial.number in rows:
            tell(study, trial.number, rows[trial.number], metrics, constraints=constraints)
            settled += 1
    return settled


def suggest(trial: optuna.Trial, name: str, dist) -> Any:
    """A define-by-run suggestion from an Optuna distribution (through Trial's public methods)."""
    d = optuna.distributions
    if isinstance(dist, d.FloatDistribution):
        return trial.suggest_float(name, dist.low, dist.high, step=dist.step, log=dist.log)
    if isinstance(dist, d.IntDistribution):
        return trial.suggest_int(name, dist.low, dist.high, step=dist.step, log=dist.log)
    return trial.suggest_categorical(name, dist.choices)


class StudySearcher(Searcher):
    """``space``: path -> Optuna distribution for every trial; ``conditional``: categorical path -> its
    choice (as text) -> {path: distribution} asked only when that choice was drawn."""

    def __init__(self, study: optuna.Study, space: dict[str, Any], metrics: list[str], num_samples: int,
                 constraints: list = (), conditional: dict[str, dict[str, dict[str, Any]]] | None = None,
                 progress: tuple[str, str] | None = None) -> None:
        """``progress``: (step, value) keys of the per-epoch reports to record as intermediate values."""
        super().__init__(metric=None, mode=None)
        self.study = study
        self.space = space
        self.conditional = conditional or {}
        self.metrics = metrics
        self.num_samples = num_samples
        self.constraints = list(constraints)
        self._live: dict[str, int] = {}  # Tune trial id -> study trial number
        self.progress = progress
        self._reported: dict[int, int] = {}  # study trial number -> last step recorded
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
            for axis, branches in self.conditional.items():
                for path, dist in branches.get(str(trial.params[axis]), {}).items():
                    suggest(trial, path, dist)
            number, params = trial.number, trial.params
        self._live[trial_id] = number
        return {"overrides": overrides_from_params(dict(params)), "optuna_number": number}

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        """Each epoch's validation accuracy, as the trial's intermediate value at that step (the learning
        curve optuna-dashboard draws); each step once."""
        number = self._live.get(trial_id)
        if number is not None:
            self._record_progress(number, result)

    def _record_progress(self, number: int, result: dict) -> None:
        if self.progress is None:
            return
        step_key, value_key = self.progress
        step, value = result.get(step_key), result.get(value_key)
        if not (isinstance(step, int) and step > self._reported.get(number, 0) and _finite(value)):
            return
        trial = optuna.trial.Trial(self.study, self.study.trials[number]._trial_id)
        if len(self.study.directions) == 1:
            trial.report(float(value), step)
        else:  # Optuna keeps intermediate values for single-objective studies only: the curve as an attribute
            curve = self.study.trials[number].user_attrs.get(CURVE_ATTR, [])
            trial.set_user_attr(CURVE_ATTR, [*curve, [step, float(value)]])
        self._reported[number] = step

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        number = self._live.pop(trial_id, None)
        if number is not None:
            if result:  # a scheduler's stop arrives here, not through on_trial_result: its epoch counts too
                self._record_progress(number, result)
            tell(self.study, number, result, self.metrics, error, self.constraints)

    def save(self, checkpoint_path: str) -> None:
        """Nothing to save: the study in SQLite is the whole state."""

    def restore(self, checkpoint_path: str) -> None:
        """Nothing to restore: see ``save``."""
