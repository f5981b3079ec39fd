"""Model-level CPU benchmark: Mamba vs MS-Mamba vs AC-Mamba blocks, forward and forward+backward, on the
default kernels (``backend=None``: Numba CPU) and on the PyTorch reference path (``backend="reference"``),
all in one run so that the ratios compare like with like.

    python benchmarks/models.py [--shape BATCH L D_MODEL] [--stride 8] [--quick] [--no-reference] [--threads N]

AC-Mamba's gate is calibrated (its threshold tau set to a quantile of the gate logits) to fire on about
1/stride of the steps, the rate MS-Mamba's slow channel runs at; the realised rate is recorded.
Writes benchmarks/results/models.json.
"""

from __future__ import annotations

import argparse
import statistics
import time

import numba
import torch
from timing import write_results

import scanforge.nn as snn


def build(kind: str, d_model: int, stride: int, backend: str | None, x: torch.Tensor, **kwargs) -> torch.nn.Module:
    torch.manual_seed(0)
    if kind == "Mamba":
        return snn.Mamba(d_model, backend=backend)
    if kind.startswith("MSMamba"):
        return snn.MSMamba(d_model, stride=stride, backend=backend, **kwargs)
    model = snn.ACMamba(d_model, backend=backend, **kwargs)
    with torch.no_grad():  # calibrate tau: fire on ~1/stride of the steps
        xs, z = model._in(x)
        y_f = model._fast(xs, z)
        model.tau.zero_()
        logit = torch.logit(model.gate(y_f, xs).clamp(1e-6, 1 - 1e-6))
        model.tau.fill_(float(torch.quantile(logit.flatten().double(), 1 - 1 / stride)))
    return model


def round_robin_fn(model: torch.nn.Module, x: torch.Tensor, backward: bool):
    if backward:
        return lambda: model(x).sum().backward()
    return lambda: model(x)


def round_robin(fns: dict, warmup: int, repeats: int) -> dict:
    """Median seconds of each function, timed in turns (one run of each per round) so that a load change
    on a shared machine hits every model alike."""
    times: dict = {key: [] for key in fns}
    for r in range(warmup + repeats):
        for key, fn in fns.items():
            with torch.set_grad_enabled(key[1] == "fwd_bwd"):
                start = time.perf_counter()
                fn()
                if r >= warmup:
                    times[key].append(time.perf_counter() - start)
    return {key: statistics.median(t) for key, t in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--shape", type=int, nargs=3, default=[8, 512, 256], metavar=("BATCH", "L", "D_MODEL"))
    parser.add_argument("--stride", type=int, default=8)
    parser.add_argument("--quick", action="store_true", help="fewer repeats")
    parser.add_argument("--no-reference", action="store_true", help="skip the (slow) reference path")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch and numba threads (1 gives steadier ratios on a shared machine)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
        numba.set_num_threads(args.threads)
    batch, L, d_model = args.shape
    x = torch.randn(batch, L, d_model, generator=torch.Generator().manual_seed(0))
    reps = dict(warmup=1, repeats=3) if args.quick else dict(warmup=2, repeats=7)
    full = dict(slow_channels=2 * d_model)  # the slow channel as wide as the fast one
    kinds = {"Mamba": {}, "MSMamba": {}, "MSMamba slow_channels=d_inner/8": dict(slow_channels=d_model // 4),
             "MSMamba fuse=linear": dict(fuse="linear"), "MSMamba full-width": full,
             "ACMamba": {}, "ACMamba full-width": full}
    paths = [("kernels", None)] + ([] if args.no_reference else [("reference", "reference")])
    models = {(path, kind): build(kind, d_model, args.stride, backend, x, **kwargs)
              for path, backend in paths for kind, kwargs in kinds.items()
              if path == "kernels" or kind in ("Mamba", "MSMamba", "ACMamba")}
    xg = x.clone().requires_grad_(True)
    fwd = {key: round_robin_fn(model, x, False) for key, model in models.items()}
    fwd_bwd = {key: round_robin_fn(model, xg, True) for key, model in models.items()}
    times = {**{(k, "fwd"): f for k, f in fwd.items()}, **{(k, "fwd_bwd"): f for k, f in fwd_bwd.items()}}
    medians = round_robin(times, **reps)
    rows = []
    for (path, kind), model in models.items():
        row = {"path": path, "model": kind, "fwd_s": medians[(path, kind), "fwd"],
               "fwd_bwd_s": medians[(path, kind), "fwd_bwd"], "params": sum(p.numel() for p in model.parameters())}
        if isinstance(model, snn.ACMamba):
            row["update_rate"] = model.update_rate()
        elif isinstance(model, snn.MSMamba):
            row["slow_updates_per_seq"] = model.slow_updates(L)
        rows.append(row)
    base = {r["path"]: r for r in rows if r["model"] == "Mamba"}
    kern = {r["model"]: r for r in rows if r["path"] == "kernels"}
    for row in rows:
        row["fwd_vs_mamba"] = row["fwd_s"] / base[row["path"]]["fwd_s"]
        row["fwd_bwd_vs_mamba"] = row["fwd_bwd_s"] / base[row["path"]]["fwd_bwd_s"]
        if row["path"] == "reference":
            row["kernels_speedup_fwd"] = row["fwd_s"] / kern[row["model"]]["fwd_s"]
            row["kernels_speedup_fwd_bwd"] = row["fwd_bwd_s"] / kern[row["model"]]["fwd_bwd_s"]
    notes = (f"blocks at (batch, L, d_model) = {tuple(args.shape)}, expand 2, d_state 16, fp32, stride {args.stride}; "
             "kernels = backend None (Numba CPU scan; ops on CPU tensors); reference = scanforge's float64 PyTorch "
             "reference ops; fwd under no_grad; medians of repeated runs after warm-up, timed round-robin "
             "(each round runs every model once) so that load changes on a shared machine hit all alike")
    print(write_results("models", rows, notes))


if __name__ == "__main__":
    main()
