"""Timing a kernel call: median of repeats after a warm-up, on the clock the device needs.

CPU: ``time.perf_counter`` around each call. GPU: CUDA events, with the L2 cache flushed before
each call (a 256 MiB write) so that a config is not rewarded for data a previous call left hot.
The caller passes a function that takes fresh inputs each call (clones of in-place arguments).
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

import torch

#: Warm-up calls, minimum and maximum repeats, and the time after which repeating stops.
WARMUP, MIN_REPEATS, MAX_REPEATS, MIN_SECONDS = 1, 3, 25, 0.3


def time_cpu(fn: Callable[[], object], repeats: int | None = None) -> float:
    """Median seconds of ``fn()`` on the CPU."""
    for _ in range(WARMUP):
        fn()
    samples: list[float] = []
    spent = 0.0
    while len(samples) < (repeats or MAX_REPEATS) and (repeats or len(samples) < MIN_REPEATS or spent < MIN_SECONDS):
        start = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - start)
        spent += samples[-1]
    return statistics.median(samples)


_flush: torch.Tensor | None = None


def time_cuda(fn: Callable[[], object], repeats: int | None = None) -> float:
    """Median seconds of ``fn()`` on the current CUDA stream (events), L2 flushed before each call."""
    global _flush
    if _flush is None:
        _flush = torch.empty(256 * 2**20 // 4, dtype=torch.int32, device="cuda")
    for _ in range(WARMUP):
        fn()
    torch.cuda.synchronize()
    samples: list[float] = []
    spent = 0.0
    while len(samples) < (repeats or MAX_REPEATS) and (repeats or len(samples) < MIN_REPEATS or spent < MIN_SECONDS):
        _flush.zero_()
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        samples.append(start.elapsed_time(end) / 1e3)
        spent += samples[-1]
    return statistics.median(samples)


def timer_for(device: torch.device) -> Callable[[Callable[[], object]], float]:
    return time_cuda if device.type == "cuda" else time_cpu
