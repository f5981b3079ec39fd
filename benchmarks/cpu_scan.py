"""CPU selective scan: the Numba CPU kernel vs the PyTorch baselines CPU users run today.

    python benchmarks/cpu_scan.py [--shape B D L N] [--quick] [--loop-bwd-repeats R] [--no-compile-check]

Baselines, written here: (1) the sequential loop over L in float32 as mamba-ssm's
``selective_scan_ref`` writes it (all exp(dt*A) at once, then one step per token); (2) a log-space
parallel scan (the mamba.py approach: cumulative sums of dt*A, no Python loop over L, O(L*N) memory
per channel). Forward and forward+backward, fp32, plain causal scan with D and z; plus the strided
(k = 8) and gated variants of the Numba kernel. The loop runs with whichever of 1 or all torch
threads is faster for its forward (its per-step ops are small: on a busy machine, threads that
spin-wait for each other can slow it down many times); its forward+backward takes minutes, so it is
timed ``--loop-bwd-repeats`` times (default 1) without warm-up.

Measured in the same run, so that the kernel's time can be read against the machine:
- memory bandwidth: a large array copy (NumPy on one thread; Numba over all threads), bytes read +
  written per second; the forward's bytes are u, delta, z read and y written once, B and C read once
  per block of channels;
- exp throughput: NumPy's vectorised float32 exp over an in-cache array on one thread, times the
  number of threads the kernel runs on; the forward needs one exp per (step, channel, state) and
  one per (step, channel) for silu(z);
- compile time: the first call (forward, then backward) in a fresh process with an empty kernel
  cache, then in a second fresh process that finds the kernels compiled on disk.
Writes benchmarks/results/cpu_scan.json (command, machine, load average, rows, bounds).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager

import numpy as np
import torch
import torch.nn.functional as F
from timing import median_seconds, write_results

import scanforge as sf


def pytorch_loop(u, delta, A, B, C, D, z):
    """mamba-ssm's reference recurrence: a Python loop over L."""
    dA = torch.exp(delta.unsqueeze(-1) * A[:, None, :])  # (b, d, L, N)
    dBu = (delta * u).unsqueeze(-1) * B.transpose(1, 2).unsqueeze(1)
    h = u.new_zeros(u.shape[0], u.shape[1], A.shape[1])
    ys = []
    for t in range(u.shape[2]):
        h = dA[:, :, t] * h + dBu[:, :, t]
        ys.append(torch.einsum("bdn,bn->bd", h, C[:, :, t]))
    return (torch.stack(ys, dim=2) + D[:, None] * u) * F.silu(z)


def pytorch_logspace(u, delta, A, B, C, D, z):
    """Parallel scan in log space: h_t = sum_s exp(S_t - S_s) dBu_s with S the cumulative dt*A.
    Stable only while exp(-S) does not overflow, which is why implementations chunk it; one chunk
    here (the benchmark's dt*A stays small)."""
    S = torch.cumsum(delta.unsqueeze(-1) * A[:, None, :], dim=2)  # (b, d, L, N), non-increasing
    dBu = (delta * u).unsqueeze(-1) * B.transpose(1, 2).unsqueeze(1)
    h = torch.exp(S) * torch.cumsum(dBu * torch.exp(-S), dim=2)
    y = torch.einsum("bdln,bnl->bdl", h, C)
    return (y + D[:, None] * u) * F.silu(z)


@contextmanager
def torch_threads(n: int):
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def memory_bandwidth() -> dict:
    """Bytes read + written per second by a 2 x 128 MiB copy: NumPy (one thread), Numba (all threads)."""
    from numba import njit, prange

    @njit(parallel=True)
    def parallel_copy(src, dst):
        for i in prange(src.shape[0]):
            dst[i] = src[i]

    src = np.random.default_rng(0).random(1 << 25, dtype=np.float32)  # 128 MiB
    dst = np.empty_like(src)
    parallel_copy(src, dst)
    moved = 2 * src.nbytes
    numpy_s = median_seconds(lambda: np.copyto(dst, src), warmup=1, repeats=5)
    numba_s = median_seconds(lambda: parallel_copy(src, dst), warmup=1, repeats=5)
    return {"numpy_copy_GBps": moved / numpy_s / 1e9, "numba_parallel_copy_GBps": moved / numba_s / 1e9}


def exp_rate(threads: int) -> dict:
    """float32 exponentials per second: NumPy's SIMD exp on one thread over a 256 KiB array (in
    cache, so compute-bound), and that rate times ``threads``."""
    x = -np.random.default_rng(1).random(1 << 16, dtype=np.float32) * 10
    out = np.empty_like(x)
    seconds = median_seconds(lambda: [np.exp(x, out=out) for _ in range(50)], warmup=1, repeats=5) / 50
    one = x.size / seconds
    return {"numpy_exp_per_s_1thread": one, "exp_per_s_all_threads": one * threads}


_FIRST_CALL = """
import time, torch, scanforge as sf
g = torch.Generator().manual_seed(0)
x = dict(u=torch.randn(2, 64, 32, generator=g), delta=torch.rand(2, 64, 32, generator=g) * 0.1,
         A=-torch.rand(64, 16, generator=g) - 0.5, B=torch.randn(2, 16, 32, generator=g),
         C=torch.randn(2, 16, 32, generator=g), D=torch.randn(64, generator=g), z=torch.randn(2, 64, 32, generator=g))
x = {k: v.requires_grad_() for k, v in x.items()}
t = time.perf_counter(); y = sf.selective_scan(**x, backend="numba_cpu"); fwd = time.perf_counter() - t
t = time.perf_counter(); y.sum().backward(); bwd = time.perf_counter() - t
print(fwd, bwd)
"""


def first_call_seconds() -> dict:
    """First forward and backward call in a fresh process with an empty kernel cache (compile), then
    in a second fresh process on the same cache (load from disk)."""
    result = {}
    with tempfile.TemporaryDirectory(prefix="scanforge-bench-cache-") as cache:
        env = {**os.environ, "SCANFORGE_CACHE_DIR": cache}
        for name in ("fresh_cache", "second_process"):
            out = subprocess.run([sys.executable, "-c", _FIRST_CALL], env=env, capture_output=True, text=True,
                                 check=True).stdout.split()
            result[name] = {"fwd_s": float(out[0]), "bwd_s": float(out[1])}
    return result


def bound_estimate(batch: int, dim: int, L: int, N: int, block_d: int, seconds: float, bandwidth: dict,
                   exps: dict, backward: bool = False) -> dict:
    """The causal scan's time against max(bytes / bandwidth, exponentials / exp rate). Forward: u,
    delta, z read and y written once, B and C read once per block of channels, one exp per (step,
    channel, state) and one for silu(z). Forward + backward adds the backward's own three passes
    over the states (checkpointing forward, chunk replay, adjoint: three exps per (step, channel,
    state), two more per (step, channel) for the sigmoids of z), u, delta, z, dy read twice, du,
    ddelta, dz written, and B, C read and dB, dC written once per block of channels."""
    seq = batch * dim * L
    blocks = -(-dim // block_d)
    bytes_moved = 4 * (4 * seq + 2 * batch * N * L * blocks + 2 * dim * N)
    n_exp = seq * N + seq
    if backward:
        bytes_moved += 4 * (11 * seq + 4 * batch * N * L * blocks + 2 * dim * N)
        n_exp += 3 * seq * N + 2 * seq
    bw = max(bandwidth.values()) * 1e9
    memory_s, exp_s = bytes_moved / bw, n_exp / exps["exp_per_s_all_threads"]
    return {"bytes_moved": bytes_moved, "exponentials": n_exp, "other_flops": 5 * seq * N,
            "memory_bound_s": memory_s, "exp_bound_s": exp_s, "bound_s": max(memory_s, exp_s),
            "achieved_s": seconds, "fraction_of_bound": max(memory_s, exp_s) / seconds,
            "achieved_GBps": bytes_moved / seconds / 1e9, "achieved_exp_per_s": n_exp / seconds}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shape", type=int, nargs=4, default=[2, 512, 2048, 16], metavar=("B", "D", "L", "N"))
    parser.add_argument("--quick", action="store_true", help="fewer repeats")
    parser.add_argument("--loop-bwd-repeats", type=int, default=1, help="timed runs of the loop's fwd+bwd")
    parser.add_argument("--no-compile-check", action="store_true", help="skip the fresh-process compile timing")
    args = parser.parse_args()
    import numba

    from scanforge.kernels.ir import ScanSpec
    from scanforge.tuning.configs import config_for

    batch, dim, L, N = args.shape
    g = torch.Generator().manual_seed(0)
    x = dict(u=torch.randn(batch, dim, L, generator=g), delta=torch.rand(batch, dim, L, generator=g) * 0.02 + 0.001,
             A=-torch.rand(dim, N, generator=g) - 0.5, B=torch.randn(batch, N, L, generator=g),
             C=torch.randn(batch, N, L, generator=g), D=torch.randn(dim, generator=g),
             z=torch.randn(batch, dim, L, generator=g))
    reps = dict(warmup=1, repeats=3) if args.quick else dict(warmup=2, repeats=7)

    def timed(fn, backward, **override):
        leaves = {k: v.clone().requires_grad_(backward) for k, v in x.items()}
        run = (lambda: fn(**leaves).sum().backward()) if backward else (lambda: fn(**leaves))
        with torch.set_grad_enabled(backward):
            return median_seconds(run, **{**reps, **override})

    numba_fns = {"causal": lambda **k: sf.selective_scan(**k, backend="numba_cpu"),
                 "strided k=8": lambda **k: sf.selective_scan(**k, stride=8, backend="numba_cpu")}
    gate = (torch.rand(batch, L, generator=g) > 0.875).float()
    numba_fns["gated ~1/8"] = lambda **k: sf.selective_scan(**k, gate=gate, backend="numba_cpu")
    compile_times = None if args.no_compile_check else first_call_seconds()
    start = time.perf_counter()
    sf.selective_scan(**{k: v[..., :8] if v.dim() == 3 else v for k, v in x.items()}, backend="numba_cpu")
    first_call_s = time.perf_counter() - start
    y_ref = pytorch_loop(**x)
    check = {"logspace_rel_err": float((pytorch_logspace(**x) - y_ref).norm() / y_ref.norm()),
             "numba_rel_err": float((numba_fns["causal"](**x) - y_ref).norm() / y_ref.norm())}
    loop_fwd = {}
    for n in sorted({1, torch.get_num_threads()}):  # small ops per step: one thread may beat several
        with torch_threads(n):
            loop_fwd[n] = timed(pytorch_loop, False)
    best = min(loop_fwd, key=loop_fwd.get)
    with torch_threads(best):
        loop_fwd_bwd = timed(pytorch_loop, True, warmup=0, repeats=args.loop_bwd_repeats)
    rows = [{"impl": "pytorch loop", "fwd_s": loop_fwd[best], "fwd_bwd_s": loop_fwd_bwd, "torch_threads": best,
             "fwd_s_by_threads": loop_fwd},
            {"impl": "pytorch log-space", "fwd_s": timed(pytorch_logspace, False),
             "fwd_bwd_s": timed(pytorch_logspace, True)}]
    for name, fn in numba_fns.items():
        rows.append({"impl": f"numba_cpu {name}", "fwd_s": timed(fn, False), "fwd_bwd_s": timed(fn, True)})
    for row in rows:
        row["fwd_speedup_vs_loop"] = rows[0]["fwd_s"] / row["fwd_s"]
        row["fwd_bwd_speedup_vs_loop"] = rows[0]["fwd_bwd_s"] / row["fwd_bwd_s"]
        print(row)
    threads = numba.get_num_threads()
    bandwidth, exps = memory_bandwidth(), exp_rate(threads)
    config = dict(config_for("numba_cpu", ScanSpec(has_D=True, has_z=True), tuple(args.shape)))
    bwd_config = dict(config_for("numba_cpu", ScanSpec(has_D=True, has_z=True, phase="bwd"), tuple(args.shape)))
    bounds = {"memory_bandwidth": bandwidth, "exp_rate": exps, "numba_forward_config": config,
              "causal_forward": bound_estimate(batch, dim, L, N, config.get("BLOCK_D", 1), rows[2]["fwd_s"],
                                               bandwidth, exps),
              "numba_backward_config": bwd_config,
              "causal_forward_backward": bound_estimate(batch, dim, L, N, bwd_config.get("BLOCK_D", 1),
                                                        rows[2]["fwd_bwd_s"], bandwidth, exps, backward=True)}
    notes = (f"shape (B, D, L, N) = {tuple(args.shape)} fp32, D and z; {threads} threads; first numba call in this "
             f"process (compile or disk-cache load) {first_call_s:.1f} s; accuracy vs the loop: {check}")
    print(json.dumps({"bounds": bounds, "first_call": compile_times}, indent=1))
    print(write_results("cpu_scan", rows, notes, bounds=bounds, first_call=compile_times), notes)


if __name__ == "__main__":
    main()
