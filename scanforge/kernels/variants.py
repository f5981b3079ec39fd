"""The named op variants that ``scanforge check`` proves and ``scanforge tune`` tunes, and the
default tuning workload of each kind of device."""

from __future__ import annotations

import dataclasses

from .ir import Decay, Direction, GateMode, GatherSpec, Phase, ScanSpec

#: The variants `check` exercises, by name: each names a distinct code path of the templates.
SCAN_VARIANTS: dict[str, ScanSpec] = {
    "causal": ScanSpec(),
    "causal+D+z+bias+softplus": ScanSpec(has_D=True, has_z=True, has_delta_bias=True, softplus=True),
    "causal+states": ScanSpec(has_D=True, has_initial_state=True, return_last_state=True),
    "reverse": ScanSpec(direction=Direction.REVERSE, has_D=True),
    "bidirectional": ScanSpec(direction=Direction.BIDIRECTIONAL, has_D=True, has_z=True),
    "strided k=4": ScanSpec(stride=4, has_D=True),
    "strided k=8": ScanSpec(stride=8, has_D=True),
    "gated hard": ScanSpec(gated=True, has_D=True),
    "gated soft": ScanSpec(gated=True, gate_mode=GateMode.SOFT, has_D=True),
    "grouped B/C": ScanSpec(grouped=True, has_D=True),
}


#: Decode-step variants (one token, state updated in place): plain, strided, gated, grouped B/C.
DECODE_VARIANTS: dict[str, ScanSpec] = {
    "decode": ScanSpec(phase=Phase.DECODE, has_D=True, has_z=True, has_delta_bias=True, softplus=True),
    "decode strided k=4": ScanSpec(phase=Phase.DECODE, stride=4, has_D=True),
    "decode gated hard": ScanSpec(phase=Phase.DECODE, gated=True, has_D=True),
    "decode gated soft": ScanSpec(phase=Phase.DECODE, gated=True, gate_mode=GateMode.SOFT, has_D=True),
    "decode grouped B/C": ScanSpec(phase=Phase.DECODE, grouped=True, has_D=True),
}


#: Mamba-2's scan (one decay per head): the block's call, states, directions, grouped B/C.
SSD_VARIANTS: dict[str, ScanSpec] = {
    "ssd": ScanSpec(decay=Decay.HEAD, has_D=True, has_delta_bias=True, softplus=True, grouped=True),
    "ssd+z+states": ScanSpec(decay=Decay.HEAD, has_D=True, has_z=True, has_initial_state=True,
                             return_last_state=True),
    "ssd reverse": ScanSpec(decay=Decay.HEAD, direction=Direction.REVERSE, has_D=True),
    "ssd bidirectional": ScanSpec(decay=Decay.HEAD, direction=Direction.BIDIRECTIONAL, has_D=True, has_z=True),
}


#: Top-k gather variants: L2-norm vs learned scores, order, summary token, sigmoid weight.
GATHER_VARIANTS: dict[str, GatherSpec] = {
    "l2norm": GatherSpec(),
    "l2norm+mean+sigmoid": GatherSpec(summary="mean", weight="sigmoid"),
    "scores+ranked+mean_dropped": GatherSpec(scores_given=True, keep_order=False, summary="mean_dropped"),
    "scores+sigmoid": GatherSpec(scores_given=True, weight="sigmoid"),
}


#: The Mamba block's scan: what nn.Mamba and the drop-ins call.
MAMBA = "causal+D+z+bias+softplus"

#: ``scanforge tune`` with no ``--variant``: (op, variant, phases, shapes) per kind of device.
#: CPU: a few minutes on 2 cores. GPU: the Mamba widths users run (130M ... 2.8B) and LLaVA's tokens.
DEFAULT_WORKLOAD = {
    "cpu": [("selective_scan", MAMBA, ("fwd", "bwd"), [(2, 512, 1024, 16)]),
            ("selective_scan", "strided k=8", ("fwd",), [(2, 512, 1024, 16)]),
            ("topk_gather", "l2norm", ("fwd",), [(8, 576, 1024, 144)]),
            ("ssd_scan", "ssd", ("fwd",), [(1, 512, 1024, 64)])],
    "gpu": [("selective_scan", MAMBA, ("fwd", "bwd"),
             [(b, d, L, 16) for b in (1, 8) for d in (1536, 2048, 4096, 5120) for L in (512, 2048, 8192)]),
            ("selective_scan", "strided k=8", ("fwd", "bwd"), [(8, 2048, 2048, 16)]),
            ("selective_scan", "gated hard", ("fwd", "bwd"), [(8, 2048, 2048, 16)]),
            ("selective_scan", MAMBA, ("decode",), [(b, d, 1, 16) for b in (1, 8) for d in (2048, 5120)]),
            ("topk_gather", "l2norm", ("fwd", "bwd"), [(b, 576, 1024, k) for b in (1, 16) for k in (64, 144, 288)]),
            ("topk_gather", "scores+sigmoid", ("fwd", "bwd"), [(16, 576, 4096, 144)]),
            # Mamba-2 2.7B-like: d_inner 5120 = 80 heads of 64, N 128, one group
            ("ssd_scan", "ssd", ("fwd", "bwd"), [(b, 5120, L, 128) for b in (1, 8) for L in (2048, 8192)])],
}


#: The named variants of each op that ``scanforge tune`` and ``check`` name.
VARIANTS_OF = {"selective_scan": SCAN_VARIANTS, "topk_gather": GATHER_VARIANTS, "ssd_scan": SSD_VARIANTS}


def variant_spec(op: str, variant: str, phase: str, dtype: str) -> ScanSpec | GatherSpec:
    """The spec of a named variant in one phase and dtype (an error lists the known names)."""
    table = VARIANTS_OF[op]
    if variant not in table:
        raise ValueError(f"variant: expected one of {sorted(table)} for {op}, got {variant!r}")
    return dataclasses.replace(table[variant], dtype=dtype, phase=Phase(phase))
