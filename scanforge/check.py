"""``scanforge check``: every available backend, every op variant, every dtype, against the reference."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import torch

from . import backends
from .accuracy import check_scan, passes, random_scan_inputs
from .ir import DTYPES, Direction, GateMode, ScanSpec

#: The variants `check` exercises, by name: each names a distinct code path of the templates.
SCAN_VARIANTS: dict[str, ScanSpec] = {
    "causal": ScanSpec(),
    "causal+D+z+bias+softplus": ScanSpec(has_D=True, has_z=True, has_delta_bias=True, softplus=True),
    "causal+states": ScanSpec(has_D=True, has_initial_state=True, return_last_state=True),
    "reverse": ScanSpec(direction=Direction.REVERSE, has_D=True),
    "bidirectional": ScanSpec(direction=Direction.BIDIRECTIONAL, has_D=True, has_z=True),
    "strided k=4": ScanSpec(stride=4, has_D=True),
    "gated hard": ScanSpec(gated=True, has_D=True),
    "gated soft": ScanSpec(gated=True, gate_mode=GateMode.SOFT, has_D=True),
    "grouped B/C": ScanSpec(grouped=True, has_D=True),
}


@dataclass
class CheckRow:
    backend: str
    op: str
    variant: str
    dtype: str
    forward_error: float
    grad_error: float
    seconds: float
    status: str  # "pass", "FAIL", "not implemented: ...", "error: ..."


def _device_for(backend_name: str) -> torch.device:
    if backend_name in ("triton", "numba_cuda") and torch.cuda.is_available():
        return torch.device("cuda")
    return torch.device("cpu")


def run_checks(quick: bool = False, backend_names: list[str] | None = None) -> list[CheckRow]:
    """Check each (backend, variant, dtype); a failing kernel is a row, never an exception."""
    batch, dim, L, N = (1, 5, 40, 4) if quick else (2, 9, 130, 16)
    rows = []
    for backend in backends.available():
        if backend.name == "reference" or (backend_names and backend.name not in backend_names):
            continue
        device = _device_for(backend.name)
        for variant, base in SCAN_VARIANTS.items():
            reason = backend.unsupported_reason(base, device)
            if reason:
                rows.append(CheckRow(backend.name, "selective_scan", variant, "all", math.nan, math.nan, 0.0,
                                     "not implemented"))
                continue
            for dtype in DTYPES:
                spec = ScanSpec(**{**base.__dict__, "dtype": dtype})
                inputs = random_scan_inputs(spec, batch, dim, L, N, groups=3 if spec.grouped else 1, device=device)
                start = time.perf_counter()
                try:
                    errors = check_scan(backend, spec, inputs)
                except Exception as e:  # a broken kernel is a failed row, the check goes on
                    rows.append(CheckRow(backend.name, "selective_scan", variant, dtype, math.nan, math.nan,
                                         time.perf_counter() - start, f"error: {type(e).__name__}: {e}"[:200]))
                    continue
                fwd = max(v for k, v in errors.items() if not k.startswith("grad_"))
                grad = max((v for k, v in errors.items() if k.startswith("grad_")), default=math.nan)
                rows.append(CheckRow(backend.name, "selective_scan", variant, dtype, fwd, grad,
                                     time.perf_counter() - start, "pass" if passes(errors, dtype) else "FAIL"))
    return rows
