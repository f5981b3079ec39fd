"""The objective of a study: suggest a config, skip what is infeasible or already measured, run the rest."""

from __future__ import annotations

from collections.abc import Callable

import optuna

from .. import backends
from . import aot, fleet
from .spaces import SearchSpace, config_key
from .storage import grace_seconds
from .targets import GPU_BACKENDS, device_target
from .trials import Interrupted, Task, TrialResult


class TrialFailed(Exception):
    """A config that did not compile, was wrong, or timed out (Optuna records the trial as FAIL)."""


def wait_seconds(runner) -> float:
    """How long a worker may wait for another's trial: a trial's timeout, twice, and the heartbeat's grace."""
    timeouts = [getattr(r, "timeout", None) or 0 for r in getattr(runner, "runners", [runner])]
    return 2 * max(timeouts + [300.0]) + grace_seconds()



def _first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return text[0][:200] if text else ""


class Objective:
    """Suggest a config, skip what is infeasible or already measured, run the rest."""

    def __init__(self, task: Task, space: SearchSpace, runner, on_trial: Callable | None, budget: int):
        self.task, self.space, self.runner, self.on_trial, self.budget = task, space, runner, on_trial, budget
        self.timeout = getattr(runner, "timeout", None)
        self.feasible = {config_key(c) for c in space.grid(task.shape)}
        self.measured_now = 0
        # On a GPU the compiler decides what fits: a config that fails to compile, spills or is
        # under the warps floor for this device is pruned before it is timed.
        self.target = device_target() if task.backend in GPU_BACKENDS and \
            backends.get(task.backend).runs_on_gpu() else None
        self.wait_seconds = wait_seconds(runner)

    @staticmethod
    def _mark_interrupted(trial: optuna.Trial, why: str) -> None:
        try:  # the storage itself may be what failed
            trial.set_user_attr("interrupted", why)
            trial.set_user_attr("reason", f"interrupted: {why}")
        except Exception:  # noqa: BLE001 - the heartbeat then fails the trial without a reason: interrupted too
            pass

    def __call__(self, trial: optuna.Trial) -> float:
        config = {name: trial.suggest_categorical(name, list(choices)) for name, choices in self.space.params.items()}
        trial.set_user_attr("config", config)
        trial.set_user_attr("worker", fleet.WORKER)
        broken = self.space.violated(config, self.task.shape)
        if broken:
            trial.set_user_attr("reason", f"constraint: {broken}")
            raise optuna.TrialPruned(f"violates {broken}")
        why = self.target and aot.infeasible(self.task.backend, self.task.spec, self.task.shape, config, self.target)
        if why:
            self.feasible.discard(config_key(config))
            trial.set_user_attr("reason", f"compile: {why}")
            raise optuna.TrialPruned(f"compile: {why}")
        if len(fleet.measured(trial.study, self.timeout)) >= self.budget:
            # Another worker reached the budget while this one was between trials, and may already have
            # judged the study's best: a config measured now could beat it, and the hosts disagree.
            trial.study.stop()
            trial.set_user_attr("reason", f"budget: {self.budget} configs measured (--trials)")
            raise optuna.TrialPruned(trial.user_attrs["reason"])
        earlier = fleet.claim(trial, self.wait_seconds, self.timeout)  # None: this trial measures the config
        if earlier is not None:
            trial.set_user_attr("duplicate_of", earlier.number)
            if earlier.state == optuna.trial.TrialState.FAIL:
                trial.set_user_attr("reason", earlier.user_attrs.get("reason", "failed"))
                raise TrialFailed(trial.user_attrs["reason"])
            return earlier.value
        try:
            result: TrialResult = self.runner.run(self.task, config)
        except (KeyboardInterrupt, Interrupted) as e:
            self._mark_interrupted(trial, _first_line(e) or "stopped by the user (Ctrl-C)")
            raise
        except BaseException as e:  # the tuning process failed mid-trial: not the config's fault
            self._mark_interrupted(trial, f"the tuning process failed ({type(e).__name__}: {_first_line(e)})")
            raise
        self.measured_now += 1
        trial.set_user_attr("wall_seconds", round(result.wall_seconds, 3))
        if self.on_trial:
            self.on_trial(trial.number, config, result)
        if not result.ok:
            if result.timed_out_after is not None:
                trial.set_user_attr("timed_out_after", result.timed_out_after)
            trial.set_user_attr("reason", result.reason)
            raise TrialFailed(result.reason)
        trial.set_user_attr("errors", {k: v for k, v in result.errors.items() if v == v})
        trial.set_user_attr("spread", round(result.spread, 4))
        if result.noisy:
            trial.set_user_attr("noisy", True)
        return result.seconds

    def exhausted(self, study: optuna.Study) -> bool:
        return self.feasible <= fleet.tried(study, self.timeout)  # measured, or being measured by another worker
