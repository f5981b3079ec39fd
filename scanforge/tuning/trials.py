"""One tuning trial: compile a config, prove it against the reference, time it.

A :class:`Task` is a kernel family at one spec and shape on one backend. The reference side of
the check (random inputs, cotangents, float64 outputs) is computed once per task and reused by
every trial; each trial runs the kernel with its config, compares with the per-dtype tolerances of
:mod:`scanforge.testing.accuracy` (the same gate as the tests and ``scanforge check``), and only a config
that is right is timed. Nothing here raises for a bad config: it becomes a failed
:class:`TrialResult` with the reason. What stops a trial from outside — the user's Ctrl-C, a
signal, the tuning process failing — is not the config's fault: it raises (:class:`Interrupted`
or ``KeyboardInterrupt``), and the tuner records the trial as interrupted, to be measured again.
"""

from __future__ import annotations

import statistics
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from .. import backends
from ..kernels.codegen import family
from ..kernels.ir import GatherSpec, ScanSpec
from ..testing.accuracy import FORWARD_TOLERANCE, GRAD_TOLERANCE, passes
from ..testing.opkinds import op_kind
from .timing import Timing, measure_for, spread


@dataclass(frozen=True)
class Task:
    """What one study tunes: ``spec`` (its phase picks the kernel family) at ``shape`` on ``backend``.

    Scan shapes are ``(batch, dim, L, N)``; gather shapes ``(batch, T, d, k)``; decode shapes are
    scan shapes whose L is ignored (one token).
    """

    backend: str
    spec: ScanSpec | GatherSpec
    shape: tuple[int, ...]
    label: str = ""

    @property
    def family(self) -> str:
        return family(self.spec)

    @property
    def device(self) -> torch.device:
        gpu = backends.get(self.backend).runs_on_gpu()
        return torch.device("cuda" if gpu else "cpu")

    def describe(self) -> str:
        return f"{self.backend} {self.family} {self.label or self.spec.key()} {self.spec.dtype} {self.shape}"


class Interrupted(Exception):
    """A trial stopped from outside (Ctrl-C, SIGTERM, the run stopping): no measurement of its config."""


@dataclass
class TrialResult:
    ok: bool
    seconds: float | None = None  # median kernel time, when ok
    reason: str | None = None  # why it failed
    errors: dict[str, float] = field(default_factory=dict)
    wall_seconds: float = 0.0  # compile + check + timing
    spread: float = 0.0  # interquartile range / median of the timed repeats
    noisy: bool = False  # the repeats disagreed by more than timing.NOISY
    timed_out_after: float | None = None  # the limit a hanging trial was stopped at


@dataclass(frozen=True)
class Comparison:
    """Two configs timed alternately: median seconds of each, and the noise of their ratio (the
    interquartile range over median of the per-round ratios a/b)."""

    seconds_a: float
    seconds_b: float
    noise: float
    rounds: int


class _Case:
    """The prepared inputs of a task: the call to time (given a config) and the errors of a run (its op kind's
    :meth:`~scanforge.testing.opkinds.OpKind.prove`, the reference computed once)."""

    def __init__(self, task: Task, seed: int):
        kind = op_kind(task.spec)
        inputs = kind.inputs(task.spec, task.shape, device=task.device, seed=seed)
        self.call, self.errors = kind.prove(backends.get(task.backend), task.spec, inputs, seed=seed + 1)


def _describe_failure(errors: dict[str, float], dtype: str) -> str:
    bad = []
    for name, e in errors.items():
        bound = 0.0 if name == "idx" else (GRAD_TOLERANCE if name.startswith("grad_") else FORWARD_TOLERANCE)[dtype]
        if not e <= bound:
            bad.append(f"{name} rel err {e:.2e} > {bound:.0e}")
    return "wrong result: " + ", ".join(bad)


class TrialRunner:
    """Runs trials in this process (see :class:`scanforge.tuning.worker.SubprocessRunner` for isolation).

    ``timer(fn, config) -> seconds`` replaces the device's timer (a test seam: timing noise is the
    one thing a test may stub).
    """

    def __init__(self, timer: Callable | None = None, seed: int = 0):
        self.timer, self.seed = timer, seed
        self._cases: dict[Task, _Case] = {}

    def _case(self, task: Task) -> _Case:
        if task not in self._cases:
            self._cases = {task: _Case(task, self.seed)}  # one task at a time: free the previous inputs
        return self._cases[task]

    def _time(self, task: Task, case: _Case, config: dict) -> Timing:
        if self.timer is not None:
            timed = self.timer(lambda: case.call(config), config)
            return timed if isinstance(timed, Timing) else Timing.exact(timed)
        return measure_for(task.device)(lambda: case.call(config))

    def run(self, task: Task, config: dict) -> TrialResult:
        """Compile, check and time ``config`` on ``task``; any failure is a result, not an exception."""
        start = time.perf_counter()
        try:
            case = self._case(task)
            errors = case.errors(case.call(config))
            if not passes(errors, task.spec.dtype):
                return TrialResult(False, None, _describe_failure(errors, task.spec.dtype), errors,
                                   time.perf_counter() - start)
            timing = self._time(task, case, config)
        except Exception as e:  # noqa: BLE001 - a broken config is a failed trial, never a crash
            frame = traceback.extract_tb(e.__traceback__)[-1]
            reason = f"{type(e).__name__}: {str(e).splitlines()[0][:300] if str(e) else ''} " \
                     f"({frame.filename.rsplit('/', 1)[-1]}:{frame.lineno})"
            return TrialResult(False, None, reason, {}, time.perf_counter() - start)
        return TrialResult(True, timing.median, None, errors, time.perf_counter() - start, spread=timing.spread,
                           noisy=timing.noisy)

    def compare(self, task: Task, a: dict, b: dict, rounds: int = 5) -> Comparison:
        """Configs ``a`` and ``b`` timed alternately (a, b, a, b, ...): drift of the machine hits both
        alike, so a winner must beat the default in the same conditions, by more than the spread of
        the rounds' ratios."""
        case = self._case(task)
        times_a, times_b = [], []
        for _ in range(rounds):
            times_a.append(self._time(task, case, a).median)
            times_b.append(self._time(task, case, b).median)
        ratios = [x / y for x, y in zip(times_a, times_b) if y > 0]
        return Comparison(statistics.median(times_a), statistics.median(times_b), spread(ratios), rounds)

    def close(self) -> None:
        self._cases.clear()
