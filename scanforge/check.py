"""``scanforge check``: every available backend, every op variant, every dtype, against the reference."""

from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import dataclass
from functools import partial

import torch

from . import backends
from .accuracy import check_gather, check_scan, passes, random_gather_inputs, random_scan_inputs
from .ir import DTYPES
from .variants import GATHER_VARIANTS, SCAN_VARIANTS


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


def _row(backend, op, variant, dtype, run) -> CheckRow:
    """Run one check; a failing kernel is a row, never an exception."""
    start = time.perf_counter()
    try:
        errors = run()
    except Exception as e:  # noqa: BLE001 - reported in the table
        return CheckRow(backend, op, variant, dtype, math.nan, math.nan, time.perf_counter() - start,
                        f"error: {type(e).__name__}: {e}"[:200])
    fwd = max(v for k, v in errors.items() if not k.startswith("grad_"))
    grad = max((v for k, v in errors.items() if k.startswith("grad_")), default=math.nan)
    return CheckRow(backend, op, variant, dtype, fwd, grad, time.perf_counter() - start,
                    "pass" if passes(errors, dtype) else "FAIL")


def run_checks(quick: bool = False, backend_names: list[str] | None = None) -> list[CheckRow]:
    """Check each (backend, op, variant, dtype) against the float64 reference."""
    batch, dim, L, N = (1, 6, 40, 4) if quick else (2, 9, 130, 16)
    T, d, k = (30, 16, 10) if quick else (196, 64, 64)
    rows = []
    for backend in backends.available():
        if backend.name == "reference" or (backend_names and backend.name not in backend_names):
            continue
        device = _device_for(backend.name)
        for op, variants in (("selective_scan", SCAN_VARIANTS), ("topk_gather", GATHER_VARIANTS)):
            for variant, base in variants.items():
                if backend.unsupported_reason(base, device):
                    rows.append(CheckRow(backend.name, op, variant, "all", math.nan, math.nan, 0.0,
                                         "not implemented"))
                    continue
                for dtype in DTYPES:
                    spec = dataclasses.replace(base, dtype=dtype)
                    if op == "selective_scan":
                        x = random_scan_inputs(spec, batch, dim, L, N, groups=3 if spec.grouped else 1,
                                               device=device)
                        rows.append(_row(backend.name, op, variant, dtype, partial(check_scan, backend, spec, x)))
                    else:
                        x, s = random_gather_inputs(spec, batch, T, d, device=device)
                        run = partial(check_gather, backend, spec, x, k, s)
                        rows.append(_row(backend.name, op, variant, dtype, run))
    return rows
