"""The autotuner: one Optuna study per task, over the task family's declarative search space.

A study is named by the device fingerprint, backend, spec key and shape bucket, and lives in real
Optuna storage (SQLite in the cache dir by default), so an interrupted ``scanforge tune`` resumes
where it stopped and several processes or machines given one ``--storage`` URL share a study.
Trials that break a constraint are pruned; configs already measured are not re-run; a config that
fails to compile, is wrong or hangs is a failed trial with its reason. The trial budget counts
measured configs only: in a space where most points break a constraint, pruned and repeated
suggestions would otherwise use it up before a handful of configs ran. The best config is then
timed alternately with the default (a noise guard) and written to the cache only if it wins.
"""

from __future__ import annotations

import math
import os
import re
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field

import optuna
import sqlalchemy

from .. import backends
from ..paths import cache_dir
from ..testing.conformance import verify_config
from . import aot, cache
from .configs import default_config
from .fingerprint import fingerprint, fingerprint_id
from .samplers import make_sampler
from .spaces import SearchSpace, config_key, space_for
from .trials import Task, TrialResult

#: A tuned config must beat the default by this fraction in the interleaved re-timing.
MIN_GAIN = 0.02
#: At most this many suggestions per config to measure (infeasible and repeated ones are not measured).
SUGGESTIONS_PER_TRIAL = 10


class TrialFailed(Exception):
    """A config that did not compile, was wrong, or timed out (Optuna records the trial as FAIL)."""


@dataclass
class Outcome:
    """What tuning one task found."""

    task: Task
    study_name: str
    config: dict  # the config now used for the task (the default if nothing beat it)
    default: dict
    seconds: float | None  # its median time, re-timed against the default
    default_seconds: float | None
    trials: int = 0  # configs measured (complete + failed)
    complete: int = 0
    failed: int = 0
    pruned: int = 0  # suggestions that broke a constraint
    repeated: int = 0  # suggestions of a config already measured (its result reused)
    failures: dict[str, int] = field(default_factory=dict)  # reason -> count
    accepted: bool = False  # whether a tuned config beat the default and was stored
    note: str = ""

    @property
    def speedup(self) -> float:
        if self.seconds and self.default_seconds:
            return self.default_seconds / self.seconds
        return math.nan


def default_storage() -> str:
    path = cache_dir() / "studies.db"
    path.parent.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{path}"


def open_storage(url: str | None) -> optuna.storages.BaseStorage:
    """Optuna RDB storage with heartbeats: a trial left running by a killed process is failed
    when the study resumes, instead of staying RUNNING forever; that is once its last heartbeat is
    ``$SCANFORGE_HEARTBEAT_GRACE_SECONDS`` old (default 20; heartbeats every 5 s, or more often
    under a shorter grace period)."""
    url = url or default_storage()
    grace = int(os.environ.get("SCANFORGE_HEARTBEAT_GRACE_SECONDS", "20"))
    interval = max(1, min(5, grace // 4))
    engine = {"connect_args": {"timeout": 60}} if url.startswith("sqlite") else {}
    for attempt in range(5):  # processes creating one fresh database race on its schema: the loser retries
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                return optuna.storages.RDBStorage(url, engine_kwargs=engine, heartbeat_interval=interval,
                                                  grace_period=grace)
        except sqlalchemy.exc.SQLAlchemyError:
            if attempt == 4:
                raise
            time.sleep(0.5 * (attempt + 1))
    raise AssertionError("unreachable")


def study_name(task: Task) -> str:
    shape = "x".join(map(str, cache.bucket(task.shape)))
    return f"{fingerprint_id(fingerprint(task.backend))}|{task.spec.key()}|{shape}"


def _finished(study: optuna.Study) -> list[optuna.trial.FrozenTrial]:
    done = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.FAIL, optuna.trial.TrialState.PRUNED)
    return study.get_trials(deepcopy=False, states=done)


def _measured(study: optuna.Study) -> list[optuna.trial.FrozenTrial]:
    """The finished trials that ran a config: not pruned, not a repeat of an earlier one."""
    return [t for t in _finished(study)
            if t.state != optuna.trial.TrialState.PRUNED and "duplicate_of" not in t.user_attrs]


class _Objective:
    """Suggest a config, skip what is infeasible or already measured, run the rest."""

    def __init__(self, task: Task, space: SearchSpace, runner, on_trial: Callable | None):
        self.task, self.space, self.runner, self.on_trial = task, space, runner, on_trial
        self.feasible = {config_key(c) for c in space.grid(task.shape)}
        # On a GPU the compiler decides what fits: a config that fails to compile, spills or is
        # under the warps floor for this device is pruned before it is timed.
        self.target = aot.device_target() if task.backend in aot.GPU_BACKENDS and \
            backends.get(task.backend).runs_on_gpu() else None

    def __call__(self, trial: optuna.Trial) -> float:
        config = {name: trial.suggest_categorical(name, list(choices)) for name, choices in self.space.params.items()}
        trial.set_user_attr("config", config)
        broken = self.space.violated(config, self.task.shape)
        if broken:
            trial.set_user_attr("reason", f"constraint: {broken}")
            raise optuna.TrialPruned(f"violates {broken}")
        why = self.target and aot.infeasible(self.task.backend, self.task.spec, self.task.shape, config, self.target)
        if why:
            self.feasible.discard(config_key(config))
            trial.set_user_attr("reason", f"compile: {why}")
            raise optuna.TrialPruned(f"compile: {why}")
        for earlier in _finished(trial.study):
            if earlier.params == trial.params and earlier.state != optuna.trial.TrialState.PRUNED:
                trial.set_user_attr("duplicate_of", earlier.number)
                if earlier.state == optuna.trial.TrialState.FAIL:
                    trial.set_user_attr("reason", earlier.user_attrs.get("reason", "failed"))
                    raise TrialFailed(trial.user_attrs["reason"])
                return earlier.value
        result: TrialResult = self.runner.run(self.task, config)
        trial.set_user_attr("wall_seconds", round(result.wall_seconds, 3))
        if self.on_trial:
            self.on_trial(trial.number, config, result)
        if not result.ok:
            trial.set_user_attr("reason", result.reason)
            raise TrialFailed(result.reason)
        trial.set_user_attr("errors", {k: v for k, v in result.errors.items() if v == v})
        return result.seconds

    def exhausted(self, study: optuna.Study) -> bool:
        tried = {config_key(t.user_attrs.get("config", {})) for t in _finished(study)}
        return self.feasible <= tried


_WHERE = re.compile(r" \([\w.]+:\d+\)$")  # the "(file.py:12)" of a reason: one row per kind of failure


def _summarize(outcome: Outcome, study: optuna.Study) -> None:
    outcome.trials = len(_measured(study))
    for t in _finished(study):
        if t.state == optuna.trial.TrialState.PRUNED:
            outcome.pruned += 1
        elif "duplicate_of" in t.user_attrs:
            outcome.repeated += 1
        elif t.state == optuna.trial.TrialState.COMPLETE:
            outcome.complete += 1
        else:
            outcome.failed += 1
            reason = _WHERE.sub("", t.user_attrs.get("reason") or "failed")[:100]
            outcome.failures[reason] = outcome.failures.get(reason, 0) + 1


def tune(task: Task, runner, *, trials: int = 20, budget_seconds: float | None = None, sampler: str = "local",
         seed: int = 0, storage: str | optuna.storages.BaseStorage | None = None, space_file=None,
         on_trial: Callable | None = None, write_cache: bool = True, retime_rounds: int = 5,
         accept: bool = True) -> Outcome:
    """Tune ``task`` until its study has measured ``trials`` configs (counting earlier runs), the
    space is exhausted, or ``budget_seconds`` pass; then accept the winner if it beats the default
    (``accept=False``: search only; nothing is re-timed, verified or cached)."""
    space = space_for(task.backend, task.family, space_file)
    default = dict(space.default) if space_file else default_config(task.backend, task.spec)
    name = study_name(task)
    store = storage if isinstance(storage, optuna.storages.BaseStorage) else open_storage(storage)
    study = optuna.create_study(study_name=name, storage=store, direction="minimize", load_if_exists=True,
                                sampler=make_sampler(sampler, space, seed, task.shape))
    study.set_user_attr("task", task.describe())
    outcome = Outcome(task, name, default, default, None, None)
    if not space.params:
        outcome.note = "nothing to tune: the family has no parameters"
        return outcome
    objective = _Objective(task, space, runner, on_trial)
    if not study.trials and sampler != "grid":
        study.enqueue_trial(default)  # the baseline, measured like any other config, first
    remaining = trials - len(_measured(study))
    deadline = None if budget_seconds is None else time.monotonic() + budget_seconds

    def stop_when_done(study: optuna.Study, _trial) -> None:
        if len(_measured(study)) >= trials or objective.exhausted(study) or (
                deadline is not None and time.monotonic() > deadline):
            study.stop()

    if remaining > 0 and not objective.exhausted(study):
        # Pruned and repeated suggestions cost no measurement: allow many, bounded all the same.
        study.optimize(objective, n_trials=SUGGESTIONS_PER_TRIAL * remaining + space.size, catch=(TrialFailed,),
                       callbacks=[stop_when_done], n_jobs=getattr(runner, "size", 1), gc_after_trial=False,
                       show_progress_bar=False)
    _summarize(outcome, study)
    if accept:
        _accept(outcome, study, runner, retime_rounds, write_cache)
    return outcome


def _accept(outcome: Outcome, study: optuna.Study, runner, rounds: int, write_cache: bool) -> None:
    """Re-time the best config alternately with the default; store it only if it wins clearly."""
    complete = [t for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))]
    if not complete:
        outcome.note = "no config passed the correctness check"
        return
    best = min(complete, key=lambda t: t.value)
    best_config = best.user_attrs["config"]
    task, default = outcome.task, outcome.default
    default_ok = any(t.user_attrs.get("config") == default for t in complete)
    if best_config == default:
        outcome.seconds = outcome.default_seconds = best.value
        outcome.note = "the default is the best config found"
        return
    if not default_ok:
        default_ok = runner.run(task, default).ok  # a grid search or a study started elsewhere
    if default_ok:
        outcome.seconds, outcome.default_seconds = runner.compare(task, best_config, default, rounds)
        wins = outcome.seconds < outcome.default_seconds * (1 - MIN_GAIN)
    else:  # the default itself is wrong or broken here: any correct config beats it
        outcome.seconds, wins = best.value, True
    if not wins:
        outcome.note = (f"best config {best_config} ({outcome.seconds * 1e3:.3f} ms) did not beat the default "
                        f"when re-timed; default kept")
        outcome.seconds = outcome.default_seconds  # what runs from now on
        return
    # The same suite as `scanforge check`, with this config forced.
    failures = verify_config(task.backend, task.spec, best_config, task.shape)
    if failures:
        outcome.note = f"best config {best_config} failed the conformance suite; not cached: " + " | ".join(failures)
        return
    outcome.config, outcome.accepted = dict(best_config), True
    if write_cache:
        cache.store(task.backend, task.spec, task.shape, best_config, seconds=outcome.seconds,
                    default_seconds=outcome.default_seconds, trials=outcome.trials, study=outcome.study_name,
                    tuned_at=time.strftime("%Y-%m-%dT%H:%M:%S%z"))
