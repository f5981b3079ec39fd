"""The reference rows of the conformance suite (:mod:`scanforge.testing.conformance`) as data: each op's named
variants (:mod:`scanforge.kernels.variants`) and the rows that only the suite checks (every direction of the
pooled scans, half-precision parameter mixes, transposed / offset / strided views), with their input sizes."""

from __future__ import annotations

from dataclasses import dataclass

from ..kernels.ir import DTYPES, GatherSpec, ScanSpec
from ..kernels.variants import DECODE_VARIANTS, GATHER_VARIANTS, MAMBA, SCAN_VARIANTS, SSD_VARIANTS
from .accuracy import DEFAULT_HALF
from .layouts import LAYOUTS


@dataclass(frozen=True)
class Row:
    """One reference row of the suite: a spec, the dtypes it is checked in, and how its inputs are stored
    (memory layout, :data:`scanforge.testing.layouts.LAYOUTS`; which parameters are in u's dtype beside
    half-precision u, :data:`scanforge.testing.accuracy.HALF_CAPABLE`)."""

    spec: ScanSpec | GatherSpec
    dtypes: tuple[str, ...] = DTYPES
    layout: str = "contiguous"
    half: tuple[str, ...] = DEFAULT_HALF


_S, _HALVES = ScanSpec, ("float16", "bfloat16")
#: Scan rows beyond the named variants: every direction of the strided and gated scans (a backend that
#: implements only some is "not implemented" for the rest), the half-precision parameter mixes mamba-ssm's
#: callers pass, and inputs that are transposed, offset or strided views.
EXTRA_SCAN_ROWS = {
    "strided k=3 reverse": Row(_S(direction="reverse", stride=3, has_D=True, has_initial_state=True,
                                  return_last_state=True)),
    "strided k=5 bidirectional": Row(_S(direction="bidirectional", stride=5, has_D=True, has_z=True)),
    "gated hard reverse": Row(_S(direction="reverse", gated=True, has_D=True, return_last_state=True)),
    "gated hard bidirectional": Row(_S(direction="bidirectional", gated=True, has_D=True)),
    "gated soft reverse": Row(_S(direction="reverse", gated=True, gate_mode="soft", has_D=True,
                                 has_initial_state=True)),
    "gated soft bidirectional": Row(_S(direction="bidirectional", gated=True, gate_mode="soft", has_z=True)),
    f"{MAMBA}, half A B C D bias": Row(SCAN_VARIANTS[MAMBA], _HALVES, half=("A", "B", "C", "D", "delta_bias")),
    f"{MAMBA}, half C, float32 B": Row(SCAN_VARIANTS[MAMBA], _HALVES, half=("C",)),
    **{f"causal+states, {layout} views": Row(SCAN_VARIANTS["causal+states"], ("float32",), layout)
       for layout in LAYOUTS[1:]},
}
EXTRA_DECODE_ROWS = {
    "decode gated hard, strided views": Row(DECODE_VARIANTS["decode gated hard"], ("float32",), "strided"),
    "decode, half A B C D state, offset views": Row(DECODE_VARIANTS["decode"], _HALVES, "offset",
                                                    half=("A", "B", "C", "D", "initial_state")),
}
EXTRA_GATHER_ROWS = {
    "l2norm+mean+sigmoid, strided views": Row(GATHER_VARIANTS["l2norm+mean+sigmoid"], ("float32",), "strided"),
    "scores+ranked+mean_dropped, transposed views": Row(GATHER_VARIANTS["scores+ranked+mean_dropped"],
                                                        ("float32",), "transposed"),
}

#: Input sizes of the reference rows: scan (batch, dim, L, N), gather (batch, T, d, k), decode (batch, dim, N).
SIZES = {"quick": dict(scan=(1, 6, 40, 4), gather=(2, 30, 16, 10), decode=(2, 6, 4)),
         "full": dict(scan=(2, 9, 130, 16), gather=(2, 196, 64, 64), decode=(2, 24, 16))}
#: Simulators are orders of magnitude slower than kernels: they get the quick sizes.
SLOW_BACKENDS = ("numba_cuda",)
#: Every reference row, by op and name.
OPS: dict[str, dict[str, Row]] = {
    "selective_scan": {**{name: Row(spec) for name, spec in SCAN_VARIANTS.items()}, **EXTRA_SCAN_ROWS},
    "selective_state_update": {**{name: Row(spec) for name, spec in DECODE_VARIANTS.items()}, **EXTRA_DECODE_ROWS},
    "topk_gather": {**{name: Row(spec) for name, spec in GATHER_VARIANTS.items()}, **EXTRA_GATHER_ROWS},
    "ssd_scan": {**{name: Row(spec) for name, spec in SSD_VARIANTS.items()},
                 "ssd, strided views": Row(SSD_VARIANTS["ssd+z+states"], ("float32",), "strided")},
}
