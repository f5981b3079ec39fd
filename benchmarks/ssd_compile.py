"""Compile the Triton kernels of Mamba-2's scan (``ssd_scan``) offline for sm_80 and sm_90 and print, per kernel,
registers / spill bytes (stack) / static MUFU.EX2 count. No GPU needed: the launches are recorded on ``meta``
tensors (the backend's launch recorder) and compiled by :func:`scanforge.tuning.aot.compile_launch`.

Shape: Mamba-2 2.7B-like, batch 2, 80 heads of headdim 64, N 128, 1 group, L 2048 (varlen: 2 sequences of 2048 packed).

    python benchmarks/ssd_compile.py                       # the table: D, z, dt_bias, softplus; default configs
    python benchmarks/ssd_compile.py --variants all        # also plain / h0+last / varlen / reverse variants
    python benchmarks/ssd_compile.py --kernels bwd         # only some launches: dt, fwd, bwd:dt, bwd:rerun, bwd
    python benchmarks/ssd_compile.py --fwd '{"CHUNK": 32, "BLOCK_P": 64, "BLOCK_N": 32, "num_warps": 4,
                                             "num_stages": 1}'
"""

from __future__ import annotations

import argparse
import json
import math
import os

os.environ.setdefault("TRITON_INTERPRET", "0")

import torch  # noqa: E402

from scanforge import backends  # noqa: E402
from scanforge.backends.base import ScanInputs  # noqa: E402
from scanforge.kernels.ir import ScanSpec  # noqa: E402
from scanforge.tuning.aot import compile_launch  # noqa: E402
from scanforge.tuning.configs import default_config  # noqa: E402
from scanforge.tuning.targets import target  # noqa: E402

BATCH, HEADS, P, N, L = 2, 80, 64, 128, 2048
DTYPES = {"bf16": torch.bfloat16, "fp32": torch.float32}
FULL = dict(has_D=True, has_z=True, has_delta_bias=True, softplus=True)
VARIANTS = {  # name -> (spec flags, varlen)
    "full": (FULL, False),
    "plain": ({}, False),
    "h0+last": (dict(FULL, has_initial_state=True, return_last_state=True), False),
    "varlen": (FULL, True),
}


def _inputs(spec: ScanSpec, dtype, varlen: bool) -> ScanInputs:
    m = dict(device="meta")
    dim = HEADS * P
    batch = 1 if varlen else BATCH
    length = BATCH * L if varlen else L

    def t(*shape, dt=dtype):
        return torch.empty(*shape, dtype=dt, **m)

    return ScanInputs(u=t(batch, dim, length), delta=t(batch, HEADS, length), A=t(HEADS, dt=torch.float32),
                      B=t(batch, 1, N, length), C=t(batch, 1, N, length),
                      D=t(dim, dt=torch.float32) if spec.has_D else None,
                      z=t(batch, dim, length) if spec.has_z else None,
                      delta_bias=t(HEADS, dt=torch.float32) if spec.has_delta_bias else None, gate=None,
                      initial_state=t(batch, dim, N, dt=torch.float32) if spec.has_initial_state else None,
                      gate_threshold=0.5, dt_limit=(0.0, math.inf),
                      cu_seqlens=torch.tensor([0, L, 2 * L]) if varlen else None)


def launches(spec: ScanSpec, inputs: ScanInputs, fwd: dict, bwd: dict):
    """(tag, launch) for the forward's launches, then the backward's: its prologue, forward rerun and backward
    kernel. Tags: dt, fwd, bwd:dt, bwd:rerun, bwd, with the pass index appended for a bidirectional scan."""
    be = backends.get("triton")
    fwd_rec, bwd_rec = [], []
    with be.recording_launches(fwd_rec):
        be.scan_forward(spec, inputs, fwd)
    with be.recording_launches(bwd_rec):
        dy = torch.empty(inputs.u.shape, dtype=inputs.u.dtype, device="meta")
        dh = torch.empty(inputs.u.shape[0], inputs.u.shape[1], N, device="meta") if spec.return_last_state else None
        try:
            be.scan_backward(spec, inputs, dy, dh, bwd)
        except Exception:  # the host's sums of the partials after the launches: not needed here
            pass
    kinds = {"ssd_dt_kernel": "dt", "ssd_fwd_kernel": "fwd", "ssd_bwd_kernel": "bwd"}
    two_pass = len(spec.passes) == 2
    for prefix, recorded in (("", fwd_rec), ("bwd:", bwd_rec)):
        seen: dict[str, int] = {}
        for launch in recorded:
            kind = kinds[launch.name]
            tag = "bwd" if kind == "bwd" else prefix + ("rerun" if prefix and kind == "fwd" else kind)
            index = seen[tag] = seen.get(tag, -1) + 1
            yield (f"{tag}{index}" if two_pass else tag), launch


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--fwd", type=json.loads, default=None, help="forward config (default: the space's default)")
    p.add_argument("--bwd", type=json.loads, default=None, help="backward config")
    p.add_argument("--targets", default="sm_80,sm_90")
    p.add_argument("--dtypes", default="bf16,fp32")
    p.add_argument("--directions", default="causal,bidirectional")
    p.add_argument("--variants", default="full", help="comma list of " + ", ".join(VARIANTS) + "; or all")
    p.add_argument("--kernels", default="dt,fwd,bwd:dt,bwd:rerun,bwd")
    args = p.parse_args()
    variants = list(VARIANTS) if args.variants == "all" else args.variants.split(",")
    directions = ["causal", "reverse", "bidirectional"] if args.variants == "all" else args.directions.split(",")
    print("| variant | dtype | direction | kernel | config | " + " | ".join(args.targets.split(",")) + " |")
    print("|---|---|---|---|---|" + "---|" * len(args.targets.split(",")))
    worst = 0
    for name in variants:
        flags, varlen = VARIANTS[name]
        for dt_name in args.dtypes.split(","):
            for direction in directions:
                if direction == "bidirectional" and flags.get("has_initial_state"):
                    continue
                spec = ScanSpec(decay="head", grouped=True, dtype=str(DTYPES[dt_name]).removeprefix("torch."),
                                direction=direction, varlen=varlen, **flags)
                fwd = args.fwd or default_config("triton", spec)
                bwd = args.bwd or default_config("triton", spec.adjoint())
                for kernel, launch in launches(spec, _inputs(spec, DTYPES[dt_name], varlen), fwd, bwd):
                    if kernel.rstrip("01") not in args.kernels.split(","):
                        continue
                    cfg = bwd if kernel.startswith("bwd") else fwd  # the rerun is the backward module's forward
                    cells = []
                    for tname in args.targets.split(","):
                        r = compile_launch(launch, target(tname))
                        worst = max(worst, r.spill)
                        cells.append(f"error: {r.error[:80]}" if r.error else
                                     f"{r.registers} / {r.spill} B / {r.mufu_ex2}")
                    short = " ".join(f"{k}={v}" for k, v in cfg.items())
                    print(f"| {name} | {dt_name} | {direction} | {kernel} | {short} | " + " | ".join(cells) + " |",
                          flush=True)
    print(f"\nlargest spill: {worst} B")


if __name__ == "__main__":
    main()
