"""Timing a kernel call: median of repeats after a warm-up, on the clock the device needs, with its spread.

CPU: ``time.perf_counter`` around each call. GPU: CUDA events, with the L2 cache flushed before
each call (a 256 MiB write) so that a config is not rewarded for data a previous call left hot.
The caller passes a function that takes fresh inputs each call (clones of in-place arguments).

A timing on a shared machine can be noise: another process takes the cores and some repeats take
several scheduler steps. :class:`Timing` keeps the spread of the repeats (interquartile range over
the median); a timing whose repeats disagree by more than :data:`NOISY` keeps repeating (up to
:data:`MAX_REPEATS` or :data:`MAX_NOISY_SECONDS`) and, if it stays so, is flagged ``noisy``.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch

#: Warm-up calls, minimum and maximum repeats, and the time after which repeating stops.
WARMUP, MIN_REPEATS, MAX_REPEATS, MIN_SECONDS = 1, 3, 25, 0.3
#: A timing whose repeats' interquartile range exceeds this fraction of their median is noisy.
NOISY = 0.10
#: How long a noisy timing keeps repeating to settle its median.
MAX_NOISY_SECONDS = 2.0


def spread(samples: list[float]) -> float:
    """Interquartile range over median of ``samples`` (0 for fewer than 2)."""
    if len(samples) < 2:
        return 0.0
    q1, _, q3 = statistics.quantiles(samples, n=4, method="inclusive")
    median = statistics.median(samples)
    return (q3 - q1) / median if median > 0 else 0.0


@dataclass(frozen=True)
class Timing:
    """The repeats of one timed call: median seconds, 90th percentile and spread."""

    median: float
    p90: float
    spread: float  # interquartile range / median
    repeats: int

    @property
    def noisy(self) -> bool:
        return self.spread > NOISY

    @classmethod
    def of(cls, samples: list[float]) -> Timing:
        ordered = sorted(samples)
        return cls(statistics.median(ordered), ordered[min(len(ordered) - 1, int(0.9 * len(ordered)))],
                   spread(ordered), len(ordered))

    @classmethod
    def exact(cls, seconds: float) -> Timing:
        """A timing without repeats (a stubbed timer)."""
        return cls(seconds, seconds, 0.0, 1)


def _more(samples: list[float], spent: float, repeats: int | None) -> bool:
    if repeats:
        return len(samples) < repeats
    if len(samples) >= MAX_REPEATS:
        return False
    if len(samples) < MIN_REPEATS or spent < MIN_SECONDS:
        return True
    return spent < MAX_NOISY_SECONDS and spread(samples) > NOISY


def measure_cpu(fn: Callable[[], object], repeats: int | None = None) -> Timing:
    """The repeats of ``fn()`` on the CPU."""
    for _ in range(WARMUP):
        fn()
    samples: list[float] = []
    spent = 0.0
    while _more(samples, spent, repeats):
        start = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - start)
        spent += samples[-1]
    return Timing.of(samples)


_flush: torch.Tensor | None = None


def measure_cuda(fn: Callable[[], object], repeats: int | None = None) -> Timing:
    """The repeats of ``fn()`` on the current CUDA stream (events), L2 flushed before each call."""
    global _flush
    if _flush is None:
        _flush = torch.empty(256 * 2**20 // 4, dtype=torch.int32, device="cuda")
    for _ in range(WARMUP):
        fn()
    torch.cuda.synchronize()
    samples: list[float] = []
    spent = 0.0
    while _more(samples, spent, repeats):
        _flush.zero_()
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        samples.append(start.elapsed_time(end) / 1e3)
        spent += samples[-1]
    return Timing.of(samples)


def time_cpu(fn: Callable[[], object], repeats: int | None = None) -> float:
    """Median seconds of ``fn()`` on the CPU."""
    return measure_cpu(fn, repeats).median


def time_cuda(fn: Callable[[], object], repeats: int | None = None) -> float:
    """Median seconds of ``fn()`` on the current CUDA stream."""
    return measure_cuda(fn, repeats).median


def measure_for(device: torch.device) -> Callable[[Callable[[], object]], Timing]:
    return measure_cuda if device.type == "cuda" else measure_cpu


def timer_for(device: torch.device) -> Callable[[Callable[[], object]], float]:
    return time_cuda if device.type == "cuda" else time_cpu
