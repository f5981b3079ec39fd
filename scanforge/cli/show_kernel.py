"""``scanforge show-kernel``: print the generated source of a kernel (its default config)."""

from __future__ import annotations

from ..kernels.codegen import render
from ..kernels.ir import Direction, GateMode, GatherSpec, Phase, ScanSpec
from ..tuning.configs import default_config


def run(args) -> int:
    if args.op == "topk_gather":
        spec = GatherSpec(scores_given=args.scores, keep_order=not args.ranked, summary=args.summary,
                          weight=args.weight, dtype=args.dtype, phase=Phase(args.phase))
    else:
        spec = ScanSpec(direction=Direction(args.direction), stride=args.stride, gated=args.gated,
                        gate_mode=GateMode(args.gate_mode), has_D=args.D, has_z=args.z,
                        has_delta_bias=args.delta_bias, softplus=args.softplus, grouped=args.grouped,
                        dtype=args.dtype, has_initial_state=args.initial_state, return_last_state=args.last_state,
                        varlen=args.varlen, phase=Phase(args.phase))
    print(render(spec, args.backend, default_config(args.backend, spec), {"N": args.N}), end="")
    return 0
