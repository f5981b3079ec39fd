"""Scan variants side by side: forward and forward+backward time of each variant, and its ratio to
the causal scan in the same run.

    python benchmarks/scan_variants.py [--shape B D L N] [--dtype bfloat16] [--backend triton|numba_cpu]

Triton (the default): on a GPU the kernels are timed (CUDA events, median). Without one, the Triton
interpreter runs instead: a smoke test that every variant runs end to end, never a performance
number (the JSON says so). Writes benchmarks/results/scan_variants-<device>.json.

``--backend numba_cpu`` times the Numba CPU kernels (default shape (2, 512, 2048, 16), float32) and
adds a gated run whose gate never fires: it does everything but update the state (read inputs, pool
windows, write y = C.h), so ``t - t_never`` is a variant's state-update part, and
``fwd_update_part_vs_causal`` = (t_causal - t_never) / (t_variant - t_never) says how much cheaper
the state work of a strided or gated scan is than the causal scan's. Being a difference of two
times, it uses the forwards' minimum process CPU time over interleaved rounds (all threads'
CPU seconds: what other processes on a busy machine disturb least). Writes
benchmarks/results/scan_variants-numba_cpu.json.
"""

from __future__ import annotations

import argparse
import math
import time

import torch
from timing import cpu_model, median_seconds, write_results

import scanforge as sf

VARIANTS = {
    "causal": {},
    "reverse": {"direction": "reverse"},
    "bidirectional": {"direction": "bidirectional"},
    "strided k=8": {"stride": 8},
    "gated (~1/8 fire)": {"gate": 0.875},
    "gated soft": {"gate": 0.875, "gate_mode": "soft"},
}
NEVER_FIRES = {"gated (never fires)": {"gate": 1.0}}  # gate values lie in [0, 1): none exceeds 1.0


def inputs(batch, dim, L, N, dtype, device):
    g = torch.Generator(device="cpu").manual_seed(0)
    rand = lambda *s: torch.randn(*s, generator=g).to(device, dtype)  # noqa: E731
    return dict(u=rand(batch, dim, L), delta=rand(batch, dim, L), A=-torch.rand(dim, N, generator=g).to(device),
                B=rand(batch, N, L), C=rand(batch, N, L), D=torch.rand(dim, generator=g).to(device),
                z=rand(batch, dim, L), delta_bias=torch.rand(dim, generator=g).to(device))


def interleaved_minimum(fns, rounds: int = 9) -> list[tuple[float, float]]:
    """(min wall s, min process CPU s) of each fn, timed round-robin so that a busy spell of a
    shared machine hits every variant alike; the minimum is the run least disturbed."""
    best = [(math.inf, math.inf)] * len(fns)
    for _ in range(rounds):
        for i, fn in enumerate(fns):
            wall, cpu = time.perf_counter(), time.process_time()
            fn()
            wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
            best[i] = (min(best[i][0], wall), min(best[i][1], cpu))
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--shape", type=int, nargs=4, metavar=("B", "D", "L", "N"))
    parser.add_argument("--dtype", choices=["float32", "float16", "bfloat16"],
                        help="default: bfloat16 for triton, float32 for numba_cpu")
    parser.add_argument("--backend", default="triton", choices=["triton", "numba_cpu"])
    args = parser.parse_args()
    cpu_kernels = args.backend == "numba_cpu"
    device = torch.device("cuda" if torch.cuda.is_available() and not cpu_kernels else "cpu")
    interpreted = device.type == "cpu" and not cpu_kernels
    default_shape = (1, 16, 256, 16) if interpreted else ((2, 512, 2048, 16) if cpu_kernels else (8, 2048, 2048, 16))
    batch, dim, L, N = args.shape or default_shape
    dtype = getattr(torch, args.dtype or ("float32" if cpu_kernels else "bfloat16"))
    x = inputs(batch, dim, L, N, dtype, device)
    repeats = dict(warmup=1, repeats=3) if interpreted else dict(warmup=2 if cpu_kernels else 5,
                                                                 repeats=7 if cpu_kernels else 20)
    rows = []
    forwards = {}
    for name, variant in {**VARIANTS, **(NEVER_FIRES if cpu_kernels else {})}.items():
        kwargs = dict(variant)
        if "gate" in kwargs:
            threshold = kwargs.pop("gate")
            kwargs["gate"] = torch.rand(batch, L, generator=torch.Generator().manual_seed(1)).to(device)
            kwargs["gate_threshold"] = threshold
        leaves = {k: v.clone().requires_grad_(v.dtype.is_floating_point) for k, v in x.items()}

        def forward(leaves=leaves, kwargs=kwargs):  # bound now: forwards[] is called after the loop
            return sf.selective_scan(**leaves, delta_softplus=True, backend=args.backend, **kwargs)

        def forward_backward(forward=forward):
            forward().float().sum().backward()

        row = {"variant": name, "fwd_s": median_seconds(forward, **repeats),
               "fwd_bwd_s": median_seconds(forward_backward, **repeats)}
        forwards[name] = forward
        if "gate" in kwargs and kwargs.get("gate_mode", "hard") == "hard":
            row["fire_rate"] = float((kwargs["gate"] > kwargs["gate_threshold"]).float().mean())
        rows.append(row)
    if cpu_kernels:
        for row, best in zip(rows, interleaved_minimum(list(forwards.values()))):
            row["fwd_min_wall_s"], row["fwd_min_cpu_s"] = best
    never = rows[-1] if cpu_kernels else None
    for row in rows:
        row["fwd_vs_causal"] = row["fwd_s"] / rows[0]["fwd_s"]
        row["fwd_bwd_vs_causal"] = row["fwd_bwd_s"] / rows[0]["fwd_bwd_s"]
        if never is not None and row is not never:
            row["fwd_update_part_cpu_s"] = row["fwd_min_cpu_s"] - never["fwd_min_cpu_s"]
            row["fwd_update_part_vs_causal"] = ((rows[0]["fwd_min_cpu_s"] - never["fwd_min_cpu_s"])
                                                / row["fwd_update_part_cpu_s"])
        print(row)
    if cpu_kernels:
        import numba

        what = (f"Numba CPU kernels on {cpu_model()}, {numba.get_num_threads()} threads; "
                "fwd_update_part_vs_causal: how many times cheaper the state-update part is than causal's")
        name = "scan_variants-numba_cpu"
    else:
        what = ("Triton INTERPRETER on CPU: a smoke test that every variant runs, NOT a performance number."
                if interpreted else f"Triton on {torch.cuda.get_device_name()}.")
        name = f"scan_variants-{device.type}"
    notes = f"shape (B, D, L, N) = {(batch, dim, L, N)}, {dtype}, delta_softplus. " + what
    print(write_results(name, rows, notes), notes)


if __name__ == "__main__":
    main()
