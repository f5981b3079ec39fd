"""The autotuner: one Optuna study per task, over the task family's declarative search space.

A study is named by the device fingerprint, backend, spec key and shape bucket, and lives in real
Optuna storage (SQLite in the cache dir by default), so an interrupted ``scanforge tune`` resumes
where it stopped and several processes or machines given one ``--storage`` URL share a study.
Trials that break a constraint are pruned; configs already measured are not re-run; a config that
fails to compile, is wrong or hangs is a failed trial with its reason. The trial budget counts
measured configs only: in a space where most points break a constraint, pruned and repeated
suggestions would otherwise use it up before a handful of configs ran.

A trial stopped from outside — Ctrl-C, a signal, the tuning process failing or being killed (then
Optuna's heartbeat fails the trial without a reason) — measured nothing: it is recorded as
interrupted with its reason, does not count against the budget, and its config is measured again
first by the next run. So is a config that timed out under a shorter ``--trial-timeout`` than the
current run's. The best config is then timed alternately with the default and written to the cache
only if it beats it by more than :data:`MIN_GAIN` and more than the noise of that re-timing.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import optuna

from ..testing.gate import verify_config
from . import cache, fleet
from .configs import default_config
from .fingerprint import fingerprint, fingerprint_id
from .objective import Objective, TrialFailed, wait_seconds
from .outcome import Outcome, finished, summarize
from .samplers import make_sampler
from .spaces import config_key, config_text, space_for
from .storage import (  # noqa: F401 - default_storage, interrupted and open_storage are public here too
    default_storage,
    interrupted,
    open_storage,
    unmeasured,
)
from .trials import Comparison, Task

#: A tuned config must beat the default by this fraction in the interleaved re-timing (and by more than
#: the re-timing's noise, the spread of its rounds' ratios).
MIN_GAIN = 0.02
#: At most this many suggestions per config to measure (infeasible and repeated ones are not measured).
SUGGESTIONS_PER_TRIAL = 10


def study_name(task: Task) -> str:
    shape = "x".join(map(str, cache.bucket(task.shape)))
    return f"{fingerprint_id(fingerprint(task.backend))}|{task.spec.key()}|{shape}"


def _measure_again_first(study: optuna.Study, timeout: float | None) -> None:
    """Enqueue the configs whose trials were interrupted (or timed out under a shorter limit) and that
    no later trial measured nor waits to measure: they were never measured, so they go first."""
    done = fleet.tried(study, timeout)  # measured, or being measured by another worker
    waiting = {config_key(t.system_attrs.get("fixed_params", {}))
               for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.WAITING,))}
    again: dict[tuple, dict] = {}
    for t in finished(study):
        key = config_key(t.params)
        if t.params and unmeasured(t, timeout) and key not in done and key not in waiting:
            again.setdefault(key, dict(t.params))
    for config in again.values():
        study.enqueue_trial(config, user_attrs={"remeasure": True})


def _optimize(study: optuna.Study, objective: Objective, suggestions: int, done: Callable[[], bool],
              workers: int) -> None:
    """Run the search until ``done()``. A worker that another took for dead (its heartbeat later than the
    grace period, on an overloaded machine) finds its trial failed when it reports the result: that trial
    stays failed without a reason (interrupted), and the search goes on with its config measured again."""

    def stop_when_done(study: optuna.Study, _trial) -> None:
        if done():
            study.stop()

    for _ in range(suggestions):  # each round ends at least one trial
        try:
            study.optimize(objective, n_trials=suggestions, catch=(TrialFailed,), callbacks=[stop_when_done],
                           n_jobs=workers, gc_after_trial=False, show_progress_bar=False)
            return
        except ValueError as e:
            if not str(e).startswith("Cannot tell a FAIL trial"):
                raise
            if done():
                return
            _measure_again_first(study, objective.timeout)


def tune(task: Task, runner, *, trials: int = 20, budget_seconds: float | None = None, sampler: str = "local",
         seed: int = 0, storage: str | optuna.storages.BaseStorage | None = None, space_file=None,
         on_trial: Callable | None = None, on_plan: Callable[[int], None] | None = None, write_cache: bool = True,
         retime_rounds: int = 5, accept: bool = True) -> Outcome:
    """Tune ``task`` until its study has measured ``trials`` configs (counting earlier runs), the
    space is exhausted, or ``budget_seconds`` pass; then accept the winner if it beats the default
    (``accept=False``: search only; nothing is re-timed, verified or cached). ``on_plan(n)`` is told
    how many configs this run means to measure, ``on_trial(number, config, result)`` each measurement.
    A ``KeyboardInterrupt`` (or :class:`~scanforge.tuning.trials.Interrupted`) during a trial marks it
    interrupted and propagates."""
    if trials < 1:
        raise ValueError(f"trials: expected an int >= 1, got {trials!r}")
    if budget_seconds is not None and not budget_seconds > 0:
        raise ValueError(f"budget_seconds: expected seconds > 0, got {budget_seconds!r}")
    space = space_for(task.backend, task.family, space_file)
    default = space.default_for(task.spec.dtype) if space_file else default_config(task.backend, task.spec)
    name = study_name(task)
    store = storage if isinstance(storage, optuna.storages.BaseStorage) else open_storage(storage)
    study = optuna.create_study(study_name=name, storage=store, direction="minimize", load_if_exists=True,
                                sampler=make_sampler(sampler, space, seed, task.shape))
    study.set_user_attr("task", task.describe())
    outcome = Outcome(task, name, default, default, None, None)
    if not space.params:
        outcome.note = "nothing to tune: the family has no parameters"
        return outcome
    objective = Objective(task, space, runner, on_trial, trials)
    timeout = objective.timeout
    if not study.trials and sampler != "grid":
        study.enqueue_trial(default, skip_if_exists=True)  # the baseline, measured like any other config, first
    fleet.settle(study, 0)  # fail the trials of workers that died since the study was last used
    _measure_again_first(study, timeout)
    remaining = trials - len(fleet.measured(study, timeout))
    deadline = None if budget_seconds is None else time.monotonic() + budget_seconds
    if on_plan:
        on_plan(max(0, min(remaining, len(objective.feasible - fleet.tried(study, timeout)))))

    def done() -> bool:
        return len(fleet.measured(study, timeout)) >= trials or objective.exhausted(study) or (
            deadline is not None and time.monotonic() > deadline)

    if remaining > 0 and not objective.exhausted(study):
        # Pruned and repeated suggestions cost no measurement: allow many, bounded all the same.
        _optimize(study, objective, SUGGESTIONS_PER_TRIAL * remaining + space.size, done, getattr(runner, "size", 1))
    left = fleet.settle(study, wait_seconds(runner)) if accept else []  # other workers' trials end first
    summarize(outcome, study, timeout)
    outcome.measured_now = objective.measured_now
    if outcome.trials >= trials:
        outcome.stopped = f"{trials} configs measured (--trials)"
    elif objective.exhausted(study):
        outcome.stopped = "every feasible config measured"
    elif deadline is not None and time.monotonic() > deadline:
        outcome.stopped = f"--budget-seconds {budget_seconds:g} reached"
    else:
        outcome.stopped = "the sampler suggested no new config"
    if accept:
        _accept(outcome, study, store, runner, retime_rounds, write_cache, left)
    return outcome


def _accept(outcome: Outcome, study: optuna.Study, storage, runner, rounds: int, write_cache: bool,
            left: list) -> None:
    """Take the study's verdict on its best config (made once, by one worker: see
    :mod:`scanforge.tuning.fleet`) and cache the config if it won. ``left``: trials still running."""
    complete = [t for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
                if "duplicate_of" not in t.user_attrs]
    if not complete:
        outcome.note = "no config passed the correctness check" if outcome.trials else "no config was measured"
        return
    best = min(complete, key=lambda t: (t.value, t.number))
    task, default = outcome.task, outcome.default
    if best.user_attrs["config"] == default:
        outcome.seconds = outcome.default_seconds = best.value
        outcome.note = "the default is the best config found"
        return
    verdict = fleet.verdict(study, storage, best.number, lambda: _judge(outcome, best, complete, runner, rounds))
    outcome.seconds, outcome.default_seconds = verdict["seconds"], verdict["default_seconds"]
    outcome.noise = verdict.get("noise")
    outcome.note = verdict["note"] + (f" ({len(left)} trial(s) of other workers still running)" if left else "")
    if verdict["accepted"]:
        entry = verdict["entry"]
        outcome.config, outcome.accepted = dict(entry["config"]), True
        if write_cache:
            cache.store(task.backend, task.spec, task.shape, entry["config"],
                        **{k: v for k, v in entry.items() if k not in ("spec", "bucket", "config")})


def _judge(outcome: Outcome, best: optuna.trial.FrozenTrial, complete: list, runner, rounds: int) -> dict:
    """Re-time the best config alternately with the default; accept it only if it beats it by more than
    :data:`MIN_GAIN` and the re-timing's noise, and passes the conformance suite. Returns the verdict
    (JSON) that every worker of the study adopts."""
    task, default, best_config = outcome.task, outcome.default, best.user_attrs["config"]
    verdict = {"accepted": False, "seconds": None, "default_seconds": None, "noise": None}
    default_ok = any(t.user_attrs.get("config") == default for t in complete)
    if not default_ok:
        default_ok = runner.run(task, default).ok  # a grid search or a study started elsewhere
    needed = MIN_GAIN
    if default_ok:
        timed: Comparison = runner.compare(task, best_config, default, rounds)
        verdict.update(seconds=timed.seconds_a, default_seconds=timed.seconds_b, noise=timed.noise)
        needed = max(MIN_GAIN, timed.noise)
        wins = timed.seconds_a < timed.seconds_b * (1 - needed)
    else:  # the default itself is wrong or broken here: any correct config beats it
        verdict["seconds"], wins = best.value, True
    if not wins:
        seconds, default_seconds = verdict["seconds"], verdict["default_seconds"]
        verdict["note"] = (f"best config {config_text(best_config)} ({seconds * 1e3:.3f} ms, "
                           f"{1 - seconds / default_seconds:+.1%}) did not beat the default "
                           f"({default_seconds * 1e3:.3f} ms) by more than {needed:.1%} "
                           f"({'the re-timing noise' if needed > MIN_GAIN else 'the minimum gain'}) when re-timed; "
                           f"default kept")
        verdict["seconds"] = default_seconds  # what runs from now on
        return verdict
    # The same suite as `scanforge check`, with this config forced.
    failures = verify_config(task.backend, task.spec, best_config, task.shape)
    if failures:
        verdict["note"] = (f"best config {config_text(best_config)} failed the conformance suite; not cached: "
                           + " | ".join(failures))
        return verdict
    b = cache.bucket(task.shape)
    entry = {"spec": task.spec.key(), "bucket": list(b), "config": dict(best_config), "seconds": verdict["seconds"],
             "default_seconds": verdict["default_seconds"], "trials": outcome.trials, "study": outcome.study_name,
             "tuned_at": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    verdict.update(accepted=True, note="", entry=entry, key=cache.entry_key(task.spec, b),
                   fingerprint=fingerprint(task.backend))
    return verdict



