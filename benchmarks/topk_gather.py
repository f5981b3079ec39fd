"""Fused top-k gather vs the unfused PyTorch chain (norm -> topk -> sort -> gather -> cat(mean)).

    python benchmarks/topk_gather.py [--quick]

Times every backend that runs compiled on this machine's device (Triton on a GPU; the Numba CPU
backend on a CPU once it exists); interpreted backends are never timed. Writes
benchmarks/results/topk_gather-<device>.json.
"""

from __future__ import annotations

import argparse

import torch
from timing import median_seconds, write_results

import scanforge as sf
from scanforge import backends
from scanforge.kernels.ir import GatherSpec

SHAPES = [(64, 576, 1024), (64, 196, 768)]
KS = [64, 128, 144]


def pytorch_chain(x: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """What users write today: five launches and several passes over x."""
    scores = x.norm(dim=-1)
    idx = scores.topk(k, dim=1).indices
    idx = idx.sort(dim=1).values
    kept = x.gather(1, idx.unsqueeze(-1).expand(-1, -1, x.shape[-1]))
    return torch.cat([kept, x.mean(dim=1, keepdim=True)], dim=1), idx


def compiled_backends(device: torch.device) -> list[str]:
    spec = GatherSpec(summary="mean")
    names = []
    for backend in backends.available():
        if backend.name == "reference" or backend.unsupported_reason(spec, device):
            continue
        if backend.name == "triton" and device.type != "cuda":
            continue  # the interpreter is for correctness, never for timings
        names.append(backend.name)
    return names


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="one shape, one k, few repeats")
    args = parser.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    shapes, ks = (SHAPES[1:], KS[:1]) if args.quick else (SHAPES, KS)
    fused = compiled_backends(device)
    rows = []
    for batch, T, d in shapes:
        x = torch.randn(batch, T, d, device=device)
        for k in ks:
            row = {"batch": batch, "T": T, "d": d, "k": k, "compression": round(T / k, 2),
                   "pytorch_chain_s": median_seconds(lambda: pytorch_chain(x, k))}  # noqa: B023
            for name in fused:
                t = median_seconds(lambda: sf.topk_gather(x, k, summary="mean", backend=name))  # noqa: B023
                row[f"{name}_s"] = t
                row[f"{name}_speedup"] = row["pytorch_chain_s"] / t
            rows.append(row)
            print(row)
    notes = ("no compiled fused backend on this device yet: only the PyTorch chain is timed" if not fused
             else f"fused backends: {fused}")
    print(write_results(f"topk_gather-{device.type}", rows, notes), notes)


if __name__ == "__main__":
    main()
