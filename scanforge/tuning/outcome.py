"""What tuning one task found, summed up from its study's trials."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field

import optuna

from . import fleet
from .storage import interrupted, unmeasured
from .trials import Task


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
    interrupted: int = 0  # trials stopped from outside (not measurements; their configs are measured again)
    remeasured: int = 0  # measurements of configs an earlier interruption had left unmeasured
    noisy: int = 0  # measured configs whose timing repeats disagreed by more than timing.NOISY
    measured_now: int = 0  # configs this run measured (the rest of `trials` came from earlier runs)
    stopped: str = ""  # why the search ended
    noise: float | None = None  # spread of the best-vs-default re-timing's ratios
    accepted: bool = False  # whether a tuned config beat the default and was stored
    note: str = ""  # why nothing was cached (or what to know about the winner)

    @property
    def speedup(self) -> float:
        if self.seconds and self.default_seconds:
            return self.default_seconds / self.seconds
        return math.nan


def finished(study: optuna.Study) -> list[optuna.trial.FrozenTrial]:
    done = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.FAIL, optuna.trial.TrialState.PRUNED)
    return study.get_trials(deepcopy=False, states=done)



_WHERE = re.compile(r" \([\w.]+:\d+\)$")  # the "(file.py:12)" of a reason: one row per kind of failure


def summarize(outcome: Outcome, study: optuna.Study, timeout: float | None) -> None:
    outcome.trials = len(fleet.measured(study, timeout))
    for t in finished(study):
        if t.state == optuna.trial.TrialState.PRUNED:
            outcome.pruned += not t.user_attrs.get("reason", "").startswith("budget:")  # none of the config's fault
        elif interrupted(t):
            outcome.interrupted += 1
        elif unmeasured(t, timeout):
            continue  # timed out under a shorter limit than this run's: measured again, counted there
        elif "duplicate_of" in t.user_attrs:
            outcome.repeated += 1
        else:
            outcome.remeasured += "remeasure" in t.user_attrs
            if t.state == optuna.trial.TrialState.COMPLETE:
                outcome.complete += 1
                outcome.noisy += bool(t.user_attrs.get("noisy"))
            else:
                outcome.failed += 1
                reason = _WHERE.sub("", t.user_attrs.get("reason") or "failed")[:300]
                outcome.failures[reason] = outcome.failures.get(reason, 0) + 1
