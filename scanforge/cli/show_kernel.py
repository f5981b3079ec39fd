"""``scanforge show-kernel``: print the generated source of a kernel (its default config)."""

from __future__ import annotations

from ..kernels.codegen import render, templates_dir
from ..kernels.ir import Direction, GateMode, GatherSpec, Phase, ScanSpec
from ..tuning.configs import default_config
from ..tuning.spaces import backend_spaces
from .common import machine_backend

GENERATED = ("triton", "numba_cpu", "numba_cuda")


def run(args) -> int:
    backend = machine_backend(args.backend)
    if not templates_dir(backend).is_dir():
        raise ValueError(f"show-kernel --backend {backend}: this backend has no generated kernels (the reference "
                         f"runs scanforge/kernels/reference.py); choose one of {', '.join(GENERATED)}")
    if args.op == "ssd_scan" and args.phase == Phase.DECODE.value:
        raise ValueError("show-kernel --op ssd_scan: Mamba-2's decode step is selective_state_update's kernel "
                         "(--op selective_scan --phase decode); choose --phase fwd or --phase bwd")
    if args.op == "topk_gather":
        if args.phase == Phase.DECODE.value:
            raise ValueError("show-kernel --op topk_gather: a top-k gather has no decode phase; "
                             "choose --phase fwd or --phase bwd")
        spec = GatherSpec(scores_given=args.scores, keep_order=not args.ranked, summary=args.summary,
                          weight=args.weight, dtype=args.dtype, phase=Phase(args.phase))
    else:
        spec = ScanSpec(direction=Direction(args.direction), stride=args.stride, gated=args.gated,
                        gate_mode=GateMode(args.gate_mode), has_D=args.D, has_z=args.z,
                        has_delta_bias=args.delta_bias, softplus=args.softplus, grouped=args.grouped,
                        dtype=args.dtype, has_initial_state=args.initial_state, return_last_state=args.last_state,
                        varlen=args.varlen, decay="head" if args.op == "ssd_scan" else "channel",
                        phase=Phase(args.phase))
    try:
        backend_spaces(backend)
    except ValueError as e:
        raise ValueError(f"show-kernel --backend {backend}: it declares no search space, so it has no default "
                         f"config to render with ({e})") from None
    print(render(spec, backend, default_config(backend, spec), {"N": args.N}), end="")
    return 0
