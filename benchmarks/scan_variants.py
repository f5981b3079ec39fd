"""Scan variants side by side: forward and forward+backward time of each variant, and its ratio to
the causal scan in the same run.

    python benchmarks/scan_variants.py [--shape B D L N] [--dtype bfloat16]

On a GPU the Triton kernels are timed (CUDA events, median). Without one, the Triton interpreter
runs instead: a smoke test that every variant runs end to end, never a performance number (the
JSON says so). Writes benchmarks/results/scan_variants-<device>.json.
"""

from __future__ import annotations

import argparse

import torch
from timing import median_seconds, write_results

import scanforge as sf

VARIANTS = {
    "causal": {},
    "reverse": {"direction": "reverse"},
    "bidirectional": {"direction": "bidirectional"},
    "strided k=8": {"stride": 8},
    "gated (~1/8 fire)": {"gate": 0.875},
    "gated soft": {"gate": 0.875, "gate_mode": "soft"},
}


def inputs(batch, dim, L, N, dtype, device):
    g = torch.Generator(device="cpu").manual_seed(0)
    rand = lambda *s: torch.randn(*s, generator=g).to(device, dtype)  # noqa: E731
    return dict(u=rand(batch, dim, L), delta=rand(batch, dim, L), A=-torch.rand(dim, N, generator=g).to(device),
                B=rand(batch, N, L), C=rand(batch, N, L), D=torch.rand(dim, generator=g).to(device),
                z=rand(batch, dim, L), delta_bias=torch.rand(dim, generator=g).to(device))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--shape", type=int, nargs=4, metavar=("B", "D", "L", "N"))
    parser.add_argument("--dtype", default="bfloat16", choices=["float32", "float16", "bfloat16"])
    args = parser.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    interpreted = device.type == "cpu"
    batch, dim, L, N = args.shape or ((1, 16, 256, 16) if interpreted else (8, 2048, 2048, 16))
    dtype = getattr(torch, args.dtype)
    x = inputs(batch, dim, L, N, dtype, device)
    repeats = dict(warmup=1, repeats=3) if interpreted else dict(warmup=5, repeats=20)
    rows = []
    for name, variant in VARIANTS.items():
        kwargs = dict(variant)
        if "gate" in kwargs:
            threshold = kwargs.pop("gate")
            kwargs["gate"] = torch.rand(batch, L, generator=torch.Generator().manual_seed(1)).to(device)
            kwargs["gate_threshold"] = threshold
        leaves = {k: v.clone().requires_grad_(v.dtype.is_floating_point) for k, v in x.items()}

        def forward():
            return sf.selective_scan(**leaves, delta_softplus=True, backend="triton", **kwargs)  # noqa: B023

        def forward_backward():
            forward().float().sum().backward()

        row = {"variant": name, "fwd_s": median_seconds(forward, **repeats),
               "fwd_bwd_s": median_seconds(forward_backward, **repeats)}
        rows.append(row)
    for row in rows:
        row["fwd_vs_causal"] = row["fwd_s"] / rows[0]["fwd_s"]
        row["fwd_bwd_vs_causal"] = row["fwd_bwd_s"] / rows[0]["fwd_bwd_s"]
        print(row)
    notes = (f"shape (B, D, L, N) = {(batch, dim, L, N)}, {args.dtype}. "
             + ("Triton INTERPRETER on CPU: a smoke test that every variant runs, NOT a performance number."
                if interpreted else f"Triton on {torch.cuda.get_device_name()}."))
    print(write_results(f"scan_variants-{device.type}", rows, notes), notes)


if __name__ == "__main__":
    main()
