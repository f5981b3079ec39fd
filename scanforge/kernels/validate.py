"""Argument checks of the public ops: every rule raises before any kernel runs, naming the argument.

Shapes and dtypes follow mamba-ssm (see :func:`scanforge.selective_scan`).
"""

from __future__ import annotations

import numbers

import torch

from .arg_checks import (
    DTYPE_NAME,
    INPUT_DTYPES,
    as_int,
    check_A,
    check_cu_seqlens,
    check_devices,
    check_dtype,
    check_per_channel,
    check_same_as,
    check_shape,
    check_tensor,
    check_threshold,
)
from .ir import Decay, GatherSpec, Phase, ScanSpec, Summary, Weight
from .tensor_facts import describe, memory_range, overlaps_itself


def _check_unit_interval(name: str, t: torch.Tensor) -> None:
    """Gates live in [0, 1] (a soft gate mixes with them). Checked eagerly: one host sync per call."""
    if torch.compiler.is_compiling() or t.numel() == 0:
        return
    low, high = torch.aminmax(t.detach())
    if not (0.0 <= low.item() and high.item() <= 1.0):
        raise ValueError(f"{name}: expected values in [0, 1], got min {low.item():.4g}, max {high.item():.4g} "
                         f"({describe(t)})")


def check_in_place(written, read) -> None:
    """An op that writes ``written`` (name, tensor) in place refuses a tensor whose elements overlap (an
    expanded state would have every batch row write the same memory) and one that shares memory with
    another argument (a kernel would read what it already wrote). Checked before any kernel runs."""
    for name, t in written:
        if t.numel() > 1 and overlaps_itself(t):
            raise ValueError(f"{name}: expected a tensor whose elements do not overlap in memory (it is updated "
                             f"in place), got {describe(t)}, strides {tuple(t.stride())}; pass .clone() of it")
    if torch.compiler.is_compiling():
        return  # fake tensors have no memory; the self-overlap test above needs only strides
    ranges = [(name, t, memory_range(t)) for name, t in (*written, *read) if t is not None]
    for i, (name, t, (base, lo, hi)) in enumerate(ranges[: len(written)]):
        for other, _, (obase, olo, ohi) in ranges[:i] + ranges[i + 1:]:
            if base == obase and lo < ohi and olo < hi:
                raise ValueError(f"{name}: expected memory of its own (it is updated in place), got {describe(t)}"
                                 f" sharing memory with {other}; pass .clone() of one of them")


def check_scan_args(u, delta, A, B, C, D, z, delta_bias, gate, initial_state, *, delta_softplus, direction,
                    stride, gate_threshold, gate_mode, return_last_state, cu_seqlens=None) -> ScanSpec:
    """Validate the arguments of :func:`scanforge.selective_scan` and return the kernel spec."""
    for name, t in (("u", u), ("delta", delta), ("A", A), ("B", B), ("C", C)):
        check_tensor(name, t)
    for name, t in (("D", D), ("z", z), ("delta_bias", delta_bias), ("gate", gate),
                    ("initial_state", initial_state)):
        check_tensor(name, t, optional=True)
    if u.dim() != 3:
        raise ValueError(f"u: expected a 3-d tensor (batch, dim, L), got {describe(u)}")
    check_dtype("u", u, INPUT_DTYPES, "the kernels' dtypes; u, delta and z share one")
    batch, dim, L = u.shape
    if min(batch, dim, L) < 1:
        raise ValueError(f"u: expected batch, dim and L >= 1, got {describe(u)}")
    check_same_as("delta", delta, u, "u", "(batch, dim, L)")
    if z is not None:
        check_same_as("z", z, u, "u", "(batch, dim, L)")
    N = check_A(A, dim, u, "u")
    for name, t in (("B", B), ("C", C)):
        if t.dim() == 3:
            check_shape(name, t, (batch, N, L), "(batch, N, L)")
        elif t.dim() == 4:
            G = t.shape[1]
            if G < 1 or dim % G:
                raise ValueError(f"{name}: grouped (batch, G, N, L) needs dim = {dim} divisible by G, "
                                 f"got {describe(t)}")
            check_shape(name, t, (batch, G, N, L), "(batch, G, N, L)")
        else:
            raise ValueError(f"{name}: expected (batch, N, L) or grouped (batch, G, N, L), got {describe(t)}")
        check_dtype(name, t, (u.dtype, torch.float32), "the dtype of u or float32")
    if C.dim() != B.dim() or C.shape != B.shape:
        raise ValueError(f"C: expected the layout of B {tuple(B.shape)}, got {describe(C)}")
    check_per_channel((("D", D), ("delta_bias", delta_bias)), dim, u, "u")
    if gate is not None:
        check_shape("gate", gate, (batch, L), "(batch, L)")
        check_dtype("gate", gate, (torch.float32, u.dtype), "float32 or the dtype of u")
        _check_unit_interval("gate", gate)
    if initial_state is not None:
        check_shape("initial_state", initial_state, (batch, dim, N), "(batch, dim, N)")
        check_dtype("initial_state", initial_state, INPUT_DTYPES, "the kernels' dtypes; the state is kept in float32")
    check_devices((("delta", delta), ("A", A), ("B", B), ("C", C), ("D", D), ("z", z), ("delta_bias", delta_bias),
                    ("gate", gate), ("initial_state", initial_state)), u, "u")
    stride = as_int(stride)
    if not isinstance(delta_softplus, bool):
        raise TypeError(f"delta_softplus: expected a bool, got {delta_softplus!r}")
    if not isinstance(return_last_state, bool):
        raise TypeError(f"return_last_state: expected a bool, got {return_last_state!r}")
    check_threshold(gate_threshold)
    if cu_seqlens is not None:
        check_cu_seqlens(cu_seqlens, u)
    return scan_spec_for(u, B, D, z, delta_bias, gate, initial_state, delta_softplus, direction, stride,
                         gate_mode, return_last_state, cu_seqlens)


def scan_spec_for(u, B, D, z, delta_bias, gate, initial_state, delta_softplus, direction, stride, gate_mode,
                  return_last_state, cu_seqlens=None, decay=Decay.CHANNEL) -> ScanSpec:
    """The kernel spec of (already validated) selective-scan or SSD-scan arguments."""
    return ScanSpec(direction=direction, stride=stride, gated=gate is not None,
                    gate_mode=gate_mode, has_D=D is not None, has_z=z is not None,
                    has_delta_bias=delta_bias is not None, softplus=delta_softplus, grouped=B.dim() == 4,
                    dtype=DTYPE_NAME[u.dtype], has_initial_state=initial_state is not None,
                    return_last_state=return_last_state, varlen=cu_seqlens is not None, decay=decay)


def check_ssd_args(x, dt, A, B, C, D, z, dt_bias, initial_state, *, dt_softplus, dt_limit, direction,
                   return_last_state, cu_seqlens=None) -> ScanSpec:
    """Validate the arguments of :func:`scanforge.ssd_scan` (its shapes) and return the kernel spec."""
    for name, t in (("x", x), ("dt", dt), ("A", A), ("B", B), ("C", C)):
        check_tensor(name, t)
    for name, t in (("D", D), ("z", z), ("dt_bias", dt_bias), ("initial_state", initial_state)):
        check_tensor(name, t, optional=True)
    if x.dim() != 3 or min(x.shape) < 1:
        raise ValueError(f"x: expected a 3-d tensor (batch, nheads * headdim, L) with sizes >= 1, got {describe(x)}")
    check_dtype("x", x, INPUT_DTYPES, "the kernels' dtypes; x, dt and z share one")
    batch, dim, L = x.shape
    if A.dim() != 1 or A.shape[0] < 1:
        raise ValueError(f"A: expected shape (nheads,), one scalar decay per head, got {describe(A)}")
    heads = A.shape[0]
    if dim % heads:
        raise ValueError(f"A: nheads = {heads} (A's length) must divide x's channels (nheads * headdim = {dim}), "
                         f"got {describe(A)}")
    check_dtype("A", A, (torch.float32, x.dtype), "float32 or the dtype of x; complex A is not supported")
    check_shape("dt", dt, (batch, heads, L), "(batch, nheads, L)")
    check_dtype("dt", dt, (x.dtype,), "the dtype of x")
    if z is not None:
        check_same_as("z", z, x, "x", "(batch, nheads * headdim, L)")
    if B.dim() not in (3, 4) or B.shape[0] != batch or B.shape[-1] != L or B.shape[-2] < 1 or \
            (B.dim() == 4 and (B.shape[1] < 1 or heads % B.shape[1])):
        raise ValueError(f"B: expected (batch, ngroups, N, L) with ngroups dividing nheads = {heads} (or "
                         f"(batch, N, L)), batch = {batch}, L = {L}, got {describe(B)}")
    check_dtype("B", B, (x.dtype, torch.float32), "the dtype of x or float32")
    if C.shape != B.shape:
        raise ValueError(f"C: expected the layout of B {tuple(B.shape)}, got {describe(C)}")
    check_dtype("C", C, (x.dtype, torch.float32), "the dtype of x or float32")
    if D is not None and tuple(D.shape) not in ((heads,), (dim,)):
        raise ValueError(f"D: expected (nheads,) = ({heads},) or (nheads * headdim,) = ({dim},), got {describe(D)}")
    for name, t in (("D", D), ("dt_bias", dt_bias)):
        if t is not None:
            check_dtype(name, t, (torch.float32, x.dtype), "float32 or the dtype of x")
    if dt_bias is not None:
        check_shape("dt_bias", dt_bias, (heads,), "(nheads,)")
    if initial_state is not None:
        check_shape("initial_state", initial_state, (batch, heads, dim // heads, B.shape[-2]),
                    "(batch, nheads, headdim, N)")
        check_dtype("initial_state", initial_state, INPUT_DTYPES, "the kernels' dtypes; the state is kept in float32")
    check_devices((("dt", dt), ("A", A), ("B", B), ("C", C), ("D", D), ("z", z), ("dt_bias", dt_bias),
                   ("initial_state", initial_state)), x, "x")
    for name, flag in (("dt_softplus", dt_softplus), ("return_last_state", return_last_state)):
        if not isinstance(flag, bool):
            raise TypeError(f"{name}: expected a bool, got {flag!r}")
    check_dt_limit(dt_limit)
    if cu_seqlens is not None:
        check_cu_seqlens(cu_seqlens, x, "x")
    return scan_spec_for(x, B, D, z, dt_bias, None, initial_state, dt_softplus, direction, 1, "hard",
                         return_last_state, cu_seqlens, Decay.HEAD)


def check_dt_limit(dt_limit) -> None:
    """``dt_limit``: two numbers ``(low, high)``, ``low <= high``, that dt is clamped to."""
    ok = isinstance(dt_limit, (tuple, list)) and len(dt_limit) == 2 and all(
        isinstance(v, numbers.Real) and not isinstance(v, bool) for v in dt_limit)
    if not ok or not dt_limit[0] <= dt_limit[1]:  # also refuses NaN
        raise ValueError(f"dt_limit: expected (low, high) with low <= high, e.g. (0.0, float('inf')), got {dt_limit!r}")


def check_gather_args(x, k, scores, *, keep_order, summary, weight) -> GatherSpec:
    """Validate the arguments of :func:`scanforge.topk_gather` and return the kernel spec."""
    check_tensor("x", x)
    check_tensor("scores", scores, optional=True)
    if x.dim() != 3:
        raise ValueError(f"x: expected a 3-d tensor (batch, T, d), got {describe(x)}")
    check_dtype("x", x, INPUT_DTYPES, "the kernels' dtypes")
    batch, T, d = x.shape
    if min(batch, T, d) < 1:
        raise ValueError(f"x: expected batch, T and d >= 1, got {describe(x)}")
    k = as_int(k)
    if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= T:
        raise ValueError(f"k: expected an int with 1 <= k <= T = {T}, got {k!r}")
    if scores is not None:
        check_shape("scores", scores, (batch, T), "(batch, T)")
        check_dtype("scores", scores, (torch.float32, x.dtype), "float32 or the dtype of x")
        check_devices((("scores", scores),), x, "x")
    if not isinstance(keep_order, bool):
        raise TypeError(f"keep_order: expected a bool, got {keep_order!r}")
    summaries = [None] + [m.value for m in Summary if m is not Summary.NONE]
    if summary not in summaries:
        raise ValueError(f"summary: expected one of {summaries}, got {summary!r}")
    weights = [None] + [w.value for w in Weight if w is not Weight.NONE]
    if weight not in weights:
        raise ValueError(f"weight: expected one of {weights}, got {weight!r}")
    return gather_spec_for(x, scores, keep_order, summary, weight)


def gather_spec_for(x, scores, keep_order, summary, weight) -> GatherSpec:
    """The kernel spec of (already validated) top-k gather arguments."""
    return GatherSpec(scores_given=scores is not None, keep_order=keep_order, summary=summary or "none",
                      weight=weight or "none", dtype=DTYPE_NAME[x.dtype])


def check_decode_args(state, x, dt, A, B, C, D, z, dt_bias, *, dt_softplus, stride, gate, gate_threshold,
                      gate_mode, window) -> ScanSpec:
    """Validate the arguments of :func:`scanforge.selective_state_update` and return the kernel spec."""
    for name, t in (("state", state), ("x", x), ("dt", dt), ("A", A), ("B", B), ("C", C)):
        check_tensor(name, t)
    for name, t in (("D", D), ("z", z), ("dt_bias", dt_bias), ("gate", gate)):
        check_tensor(name, t, optional=True)
    if x.dim() != 2:
        raise ValueError(f"x: expected a 2-d tensor (batch, dim), got {describe(x)}")
    check_dtype("x", x, INPUT_DTYPES, "the kernels' dtypes; x, dt and z share one")
    batch, dim = x.shape
    check_same_as("dt", dt, x, "x", "(batch, dim)")
    if z is not None:
        check_same_as("z", z, x, "x", "(batch, dim)")
    N = check_A(A, dim, x, "x")
    check_shape("state", state, (batch, dim, N), "(batch, dim, N)")
    check_dtype("state", state, INPUT_DTYPES, "the kernels' dtypes; updated in place, computed in float32")
    for name, t in (("B", B), ("C", C)):
        if t.dim() == 2:
            check_shape(name, t, (batch, N), "(batch, N)")
        elif t.dim() == 3 and t.shape[1] >= 1 and dim % t.shape[1] == 0:
            check_shape(name, t, (batch, t.shape[1], N), "(batch, G, N)")
        else:
            raise ValueError(f"{name}: expected (batch, N) or grouped (batch, G, N) with dim = {dim} divisible "
                             f"by G, got {describe(t)}")
        check_dtype(name, t, (x.dtype, torch.float32), "the dtype of x or float32")
    if C.shape != B.shape:
        raise ValueError(f"C: expected the layout of B {tuple(B.shape)}, got {describe(C)}")
    check_per_channel((("D", D), ("dt_bias", dt_bias)), dim, x, "x")
    if gate is not None:
        check_shape("gate", gate, (batch,), "(batch,): one gate value per row for this token")
        check_dtype("gate", gate, (torch.float32, x.dtype), "float32 or the dtype of x")
        _check_unit_interval("gate", gate)
    stride = as_int(stride)
    check_threshold(gate_threshold)
    spec = decode_spec_for(x, B, D, z, dt_bias, gate, dt_softplus, stride, gate_mode)
    pooled = spec.pooled
    if pooled != (window is not None):
        raise ValueError("window: a strided or gated step needs the open window (scanforge.DecodeWindow.zeros"
                         "(...)); a plain step takes none" if pooled else
                         "window: only a strided or gated step takes a window")
    if window is not None:
        groups = B.shape[1] if B.dim() == 3 else 1
        for name, t, shape in (("window.acc_dt", window.acc_dt, (batch, dim)), ("window.acc_u", window.acc_u,
                               (batch, dim)), ("window.acc_B", window.acc_B, (batch, groups, N)),
                               ("window.count", window.count, (batch,))):
            check_tensor(name, t)
            check_shape(name, t, shape, "matching x, A and B")
            check_dtype(name, t, (torch.float32,), "window sums are float32")
    check_devices((("state", state), ("dt", dt), ("A", A), ("B", B), ("C", C), ("D", D), ("z", z),
                    ("dt_bias", dt_bias), ("gate", gate)), x, "x")
    written = [("state", state)]
    if window is not None:
        written += [("window.acc_dt", window.acc_dt), ("window.acc_u", window.acc_u), ("window.acc_B", window.acc_B),
                    ("window.count", window.count)]
    check_in_place(written, (("x", x), ("dt", dt), ("A", A), ("B", B), ("C", C), ("D", D), ("z", z),
                             ("dt_bias", dt_bias), ("gate", gate)))
    return spec


def decode_spec_for(x, B, D, z, dt_bias, gate, dt_softplus, stride, gate_mode) -> ScanSpec:
    """The kernel spec of (already validated) decode-step arguments."""
    return ScanSpec(stride=stride, gated=gate is not None, gate_mode=gate_mode, has_D=D is not None,
                    has_z=z is not None, has_delta_bias=dt_bias is not None, softplus=dt_softplus,
                    grouped=B.dim() == 3, dtype=DTYPE_NAME[x.dtype], phase=Phase.DECODE)
