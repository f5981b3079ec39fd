"""Mamba-2's scan on the CPU: the Numba SSD kernels against the same computation as a Mamba-1 scan.

    python benchmarks/ssd_cpu.py [--shape BATCH HEADS HEADDIM N L] [--repeats R] [--threads T ...]

At a small Mamba-2 shape (default batch 1, 8 heads of headdim 32, N 64, L 1024, fp32, one B/C group, D, z,
dt_bias + softplus) it times, forward and forward+backward through autograd:
(a) ``sf.ssd_scan(..., backend="numba_cpu")``: one exp(dt*A) per (head, step);
(b) ``sf.selective_scan(..., backend="numba_cpu")`` with A expanded per channel and state (``A[h]`` repeated to
    ``(dim, N)``), dt and dt_bias repeated per channel: the same outputs, one exp per (channel, state, step).
The two alternate repeat by repeat (a shared machine's load hits both alike). Each row gives, per Numba thread
count of ``--threads`` (default: 1 and all), the median, quartiles and min/max of the wall time in milliseconds,
and the median CPU time of the process (all its threads; with one thread it is the kernels' own time, which a
busy machine's descheduling does not inflate: on cores that other work keeps busy the parallel rows are noisy).
The first (compiling) calls are not timed. Torch runs on one thread (it only converts and sums small tensors
here; its idle threads spinning beside Numba's cost more than they give). The outputs of (a) and (b) are compared
(relative error) so that the rows time the same computation. Writes benchmarks/results/ssd_cpu.json.
"""

from __future__ import annotations

import argparse
import statistics
import time

import numba
import torch
from timing import write_results

import scanforge as sf
from scanforge.testing.accuracy import rel_error


def inputs(batch: int, heads: int, headdim: int, N: int, L: int) -> tuple[dict, dict]:
    """(ssd_scan kwargs, selective_scan kwargs) of the same computation, leaves requiring grad."""
    g = torch.Generator().manual_seed(0)
    dim = heads * headdim
    x, z = torch.randn(batch, dim, L, generator=g), torch.randn(batch, dim, L, generator=g)
    dt = 0.5 * torch.randn(batch, heads, L, generator=g)
    A = -torch.rand(heads, generator=g) - 0.5
    B, C = torch.randn(batch, N, L, generator=g), torch.randn(batch, N, L, generator=g)
    D, bias = torch.randn(heads, generator=g), 0.5 * torch.randn(heads, generator=g) - 1.0
    ssd = dict(x=x, dt=dt, A=A, B=B, C=C, D=D, z=z, dt_bias=bias)
    mamba1 = dict(u=x, delta=dt.repeat_interleave(headdim, dim=1), A=A.repeat_interleave(headdim)[:, None]
                  .expand(dim, N).contiguous(), B=B, C=C, D=D.repeat_interleave(headdim), z=z,
                  delta_bias=bias.repeat_interleave(headdim))
    leaf = lambda d: {k: v.clone().requires_grad_() for k, v in d.items()}  # noqa: E731
    return leaf(ssd), leaf(mamba1)


def runners(ssd: dict, mamba1: dict, dy: torch.Tensor) -> dict:
    def ssd_fwd():
        with torch.no_grad():
            return sf.ssd_scan(**ssd, dt_softplus=True, backend="numba_cpu")

    def m1_fwd():
        with torch.no_grad():
            return sf.selective_scan(**mamba1, delta_softplus=True, backend="numba_cpu")

    def ssd_fwd_bwd():
        sf.ssd_scan(**ssd, dt_softplus=True, backend="numba_cpu").backward(dy)

    def m1_fwd_bwd():
        sf.selective_scan(**mamba1, delta_softplus=True, backend="numba_cpu").backward(dy)

    return {("forward", "ssd"): ssd_fwd, ("forward", "mamba1"): m1_fwd,
            ("forward+backward", "ssd"): ssd_fwd_bwd, ("forward+backward", "mamba1"): m1_fwd_bwd}


def spread(times: list[float]) -> dict:
    ms = sorted(t * 1e3 for t in times)
    q = statistics.quantiles(ms, n=4) if len(ms) > 1 else [ms[0]] * 3
    return {"median_ms": round(q[1], 3), "q1_ms": round(q[0], 3), "q3_ms": round(q[2], 3),
            "min_ms": round(ms[0], 3), "max_ms": round(ms[-1], 3), "repeats": len(ms)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", nargs=5, type=int, default=[1, 8, 32, 64, 1024],
                        metavar=("BATCH", "HEADS", "HEADDIM", "N", "L"))
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--threads", nargs="+", type=int, default=sorted({1, numba.get_num_threads()}))
    args = parser.parse_args()
    torch.set_num_threads(1)
    batch, heads, headdim, N, L = args.shape
    ssd, mamba1 = inputs(*args.shape)
    y_ssd = sf.ssd_scan(**{k: v.detach() for k, v in ssd.items()}, dt_softplus=True, backend="numba_cpu")
    y_m1 = sf.selective_scan(**{k: v.detach() for k, v in mamba1.items()}, delta_softplus=True, backend="numba_cpu")
    agreement = rel_error(y_ssd, y_m1.double())
    dy = torch.randn_like(y_ssd)
    fns = runners(ssd, mamba1, dy)
    for fn in fns.values():  # compile / warm up
        fn()
        fn()
    rows = []
    for threads in args.threads:
        numba.set_num_threads(threads)
        times: dict = {key: [] for key in fns}
        cpu: dict = {key: [] for key in fns}
        for _ in range(args.repeats):
            for key, fn in fns.items():
                t0, c0 = time.perf_counter(), time.process_time()
                fn()
                times[key].append(time.perf_counter() - t0)
                cpu[key].append(time.process_time() - c0)
        for phase in ("forward", "forward+backward"):
            a, b = spread(times[(phase, "ssd")]), spread(times[(phase, "mamba1")])
            for row, impl in ((a, "ssd"), (b, "mamba1")):
                row["cpu_median_ms"] = round(statistics.median(cpu[(phase, impl)]) * 1e3, 3)
            rows.append({"phase": phase, "numba_threads": threads, "ssd_scan_numba_cpu": a,
                         "selective_scan_numba_cpu_A_per_channel": b,
                         "speedup_median": round(b["median_ms"] / a["median_ms"], 2)})
            print(f"{threads} thr {phase:17s} ssd {a['median_ms']:8.2f} ms [{a['q1_ms']:.2f}, {a['q3_ms']:.2f}]  "
                  f"mamba-1 {b['median_ms']:8.2f} ms [{b['q1_ms']:.2f}, {b['q3_ms']:.2f}]  "
                  f"x{rows[-1]['speedup_median']}  (CPU time {a['cpu_median_ms']:.2f} vs {b['cpu_median_ms']:.2f} ms)")
    dim = heads * headdim
    exps = {"ssd_forward": batch * heads * L, "mamba1_forward": batch * dim * N * L,
            "ssd_per_element": 1 / (headdim * N), "mamba1_per_element": 1.0}
    path = write_results("ssd_cpu", rows, notes=(
        "element = (channel, state, step); ssd: one exp per (head, step) = 1/(headdim*N) of Mamba-1's per element "
        "(silu(z) and softplus exps aside, the same in both). Times in ms: median, quartiles, min/max of alternated "
        "repeats after two warm-up calls each."),
        shape={"batch": batch, "nheads": heads, "headdim": headdim, "N": N, "L": L, "dtype": "float32"},
        outputs_relative_difference=agreement, exponentials=exps)
    print(f"outputs agree to {agreement:.1e}; exps per element: ssd {exps['ssd_per_element']:.2e} vs 1; -> {path}")


if __name__ == "__main__":
    main()
