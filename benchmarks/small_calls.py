"""Latency of small Numba CPU calls, alone and beside a process running parallel Numba kernels.

    python benchmarks/small_calls.py            # before/after table: every call parallel vs the threshold
    python benchmarks/small_calls.py --sweep    # one thread vs all threads over call sizes (picks the threshold)

"before" runs every call parallel (``numba_cpu.SERIAL_WORK = 0``, what the backend did before the
threshold); "after" runs it with the shipped threshold (a call smaller than ``SERIAL_WORK`` runs on one
thread). The two alternate in blocks within one run, so load changes hit both. "beside load" starts a
second process that runs a parallel Numba kernel on every core for the whole measurement, as a second
job or ``scanforge tune --workers 2`` would. Writes benchmarks/results/small_calls.json (or
small_calls_sweep.json): median and 90th percentile per case, with the load average.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from contextlib import contextmanager

import torch
from timing import write_results

import scanforge as sf
from scanforge.backends import numba_cpu

LOADER = """
import sys, time
import numpy as np
from numba import njit, prange

@njit(parallel=True)
def work(a, out):
    for i in prange(out.size):
        acc = 0.0
        for j in range(a.shape[1]):
            acc += np.sin(a[i, j])
        out[i] = acc

a, out = np.random.rand(64, 20000), np.empty(64)
work(a, out)
print("ready", flush=True)
end = time.time() + float(sys.argv[1])
while time.time() < end:
    work(a, out)
"""


@contextmanager
def loaded(on: bool, seconds: float = 900):
    """A process running a parallel Numba kernel on every core while the block runs."""
    if not on:
        yield
        return
    proc = subprocess.Popen([sys.executable, "-c", LOADER, str(seconds)], stdout=subprocess.PIPE, text=True)
    proc.stdout.readline()  # compiled and running
    time.sleep(1.0)
    try:
        yield
    finally:
        proc.kill()
        proc.wait()


def scan_call(batch, dim, L, N, backward=False):
    g = torch.Generator().manual_seed(0)
    u, delta = torch.randn(batch, dim, L, generator=g), torch.rand(batch, dim, L, generator=g)
    A, B, C = -torch.rand(dim, N, generator=g), torch.randn(batch, N, L, generator=g), \
        torch.randn(batch, N, L, generator=g)
    if not backward:
        return lambda: sf.selective_scan(u, delta, A, B, C, backend="numba_cpu")
    u.requires_grad_()
    return lambda: sf.selective_scan(u, delta, A, B, C, backend="numba_cpu").sum().backward()


def topk_call(batch, T, d, k):
    x = torch.randn(batch, T, d, generator=torch.Generator().manual_seed(0))
    return lambda: sf.topk_gather(x, k, backend="numba_cpu")


def samples(fn, n: int) -> list[float]:
    out = []
    for _ in range(n):
        start = time.perf_counter()
        fn()
        out.append(time.perf_counter() - start)
    return out


def summary(times: list[float]) -> dict:
    times = sorted(times)
    return {"median_ms": round(statistics.median(times) * 1e3, 4),
            "p90_ms": round(times[min(len(times) - 1, int(0.9 * len(times)))] * 1e3, 4), "n": len(times)}


def interleaved(fn, settings: dict[str, float], n: int, blocks: int) -> dict[str, dict]:
    """``n`` calls per setting of ``SERIAL_WORK``, in ``blocks`` alternating blocks."""
    times: dict[str, list[float]] = {name: [] for name in settings}
    for value in settings.values():  # warm-up: compile, first-touch
        numba_cpu.SERIAL_WORK = value
        fn()
        fn()
    for _ in range(blocks):
        for name, value in settings.items():
            numba_cpu.SERIAL_WORK = value
            times[name] += samples(fn, n // blocks)
    numba_cpu.SERIAL_WORK = SHIPPED
    return {name: summary(t) for name, t in times.items()}


SHIPPED = numba_cpu.SERIAL_WORK
CASES = {"selective_scan fwd (1, 64, 256, 16)": lambda: scan_call(1, 64, 256, 16),
         "topk_gather (1, 196, 768), k=64": lambda: topk_call(1, 196, 768, 64),
         "topk_gather (4, 196, 768), k=64": lambda: topk_call(4, 196, 768, 64)}
SWEEP = [("scan fwd", (2, 64, 64, 16)), ("scan fwd", (2, 64, 256, 16)), ("scan fwd", (2, 64, 1024, 16)),
         ("scan fwd", (2, 128, 1024, 16)), ("scan fwd", (4, 128, 1024, 16)), ("scan fwd", (4, 128, 2048, 16)),
         ("scan fwd+bwd", (2, 64, 64, 16)), ("scan fwd+bwd", (2, 64, 256, 16)), ("scan fwd+bwd", (2, 64, 1024, 16)),
         ("topk", (2, 196, 768, 64)), ("topk", (8, 196, 768, 64)), ("topk", (32, 196, 768, 64))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sweep", action="store_true", help="one thread vs all threads over call sizes")
    parser.add_argument("--calls", type=int, default=400, help="calls per setting and case (default 400)")
    args = parser.parse_args()
    torch.set_num_threads(1)  # the Numba kernels are what is measured; torch's own pool stays out of the way
    rows = []
    if args.sweep:
        for load in (False, True):
            for kind, shape in SWEEP:
                fn = topk_call(*shape) if kind == "topk" else scan_call(*shape, backward=kind != "scan fwd")
                work = shape[0] * shape[1] * shape[2] * (1 if kind == "topk" else shape[3])
                n = max(20, min(args.calls, int(4e8 // work)))
                with loaded(load):
                    before = os.getloadavg()[0]
                    result = interleaved(fn, {"one thread": 1e30, "all threads": 0}, n, blocks=4)
                    rows.append({"case": f"{kind} {shape}", "work": work, "beside load": load,
                                 "loadavg_1min": [round(before, 2), round(os.getloadavg()[0], 2)], **result})
                print(rows[-1], flush=True)
        path = write_results("small_calls_sweep", rows, notes="'one thread': every call on one thread; 'all "
                             "threads': every call parallel. work: scan batch*dim*L*N, topk batch*T*d.")
    else:
        for load in (False, True):
            for case, make in CASES.items():
                fn = make()
                with loaded(load):
                    before = os.getloadavg()[0]
                    result = interleaved(fn, {"before (every call parallel)": 0, "after (threshold)": SHIPPED},
                                         args.calls, blocks=4)
                    rows.append({"case": case, "beside load": load,
                                 "loadavg_1min": [round(before, 2), round(os.getloadavg()[0], 2)], **result})
                print(rows[-1], flush=True)
        path = write_results("small_calls", rows, notes=f"SERIAL_WORK = {SHIPPED:g}; before = SERIAL_WORK 0 "
                             "(every call parallel, the backend before the threshold), interleaved in 4 blocks")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
