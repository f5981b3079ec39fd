"""CPU selective scan: the Numba CPU kernel vs the PyTorch baselines CPU users run today.

    python benchmarks/cpu_scan.py [--shape B D L N] [--quick]

Baselines, written here: (1) the sequential loop over L in float32 as mamba-ssm's
``selective_scan_ref`` writes it (all exp(dt*A) at once, then one step per token); (2) a log-space
parallel scan (the mamba.py approach: cumulative sums of dt*A, no Python loop over L, O(L*N) memory
per channel). Forward and forward+backward, fp32, plain causal scan with D and z; plus the strided
(k = 8) and gated variants of the Numba kernel. Writes benchmarks/results/cpu_scan.json.
"""

from __future__ import annotations

import argparse
import time

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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--shape", type=int, nargs=4, default=[2, 512, 2048, 16], metavar=("B", "D", "L", "N"))
    parser.add_argument("--quick", action="store_true", help="fewer repeats")
    args = parser.parse_args()
    batch, dim, L, N = args.shape
    g = torch.Generator().manual_seed(0)
    x = dict(u=torch.randn(batch, dim, L, generator=g), delta=torch.rand(batch, dim, L, generator=g) * 0.02 + 0.001,
             A=-torch.rand(dim, N, generator=g) - 0.5, B=torch.randn(batch, N, L, generator=g),
             C=torch.randn(batch, N, L, generator=g), D=torch.randn(dim, generator=g),
             z=torch.randn(batch, dim, L, generator=g))
    reps = dict(warmup=1, repeats=3) if args.quick else dict(warmup=2, repeats=7)

    def timed(fn, backward):
        leaves = {k: v.clone().requires_grad_(backward) for k, v in x.items()}
        run = (lambda: fn(**leaves).sum().backward()) if backward else (lambda: fn(**leaves))
        with torch.set_grad_enabled(backward):
            return median_seconds(run, **reps)

    numba = {"causal": lambda **k: sf.selective_scan(**k, backend="numba_cpu"),
             "strided k=8": lambda **k: sf.selective_scan(**k, stride=8, backend="numba_cpu")}
    gate = (torch.rand(batch, L, generator=g) > 0.875).float()
    numba["gated ~1/8"] = lambda **k: sf.selective_scan(**k, gate=gate, backend="numba_cpu")
    start = time.perf_counter()
    sf.selective_scan(**{k: v[..., :8] if v.dim() == 3 else v for k, v in x.items()}, backend="numba_cpu")
    first_call_s = time.perf_counter() - start
    y_ref = pytorch_loop(**x)
    check = {"logspace_rel_err": float((pytorch_logspace(**x) - y_ref).norm() / y_ref.norm()),
             "numba_rel_err": float((numba["causal"](**x) - y_ref).norm() / y_ref.norm())}
    rows = []
    for name, fn in [("pytorch loop", pytorch_loop), ("pytorch log-space", pytorch_logspace)] + list(numba.items()):
        row = {"impl": name if name.startswith("pytorch") else f"numba_cpu {name}",
               "fwd_s": timed(fn, False), "fwd_bwd_s": timed(fn, True)}
        rows.append(row)
    for row in rows:
        row["fwd_speedup_vs_loop"] = rows[0]["fwd_s"] / row["fwd_s"]
        row["fwd_bwd_speedup_vs_loop"] = rows[0]["fwd_bwd_s"] / row["fwd_bwd_s"]
        print(row)
    exps = batch * dim * L * N
    notes = (f"shape (B, D, L, N) = {tuple(args.shape)} fp32, D and z; first numba call in this process "
             f"(compile or disk-cache load) {first_call_s:.1f} s; {exps / 1e6:.0f} M exponentials per forward; "
             f"accuracy vs the loop: {check}")
    print(write_results("cpu_scan", rows, notes), notes)


if __name__ == "__main__":
    main()
