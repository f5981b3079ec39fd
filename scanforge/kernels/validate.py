"""Argument checks of the public ops: every rule raises before any kernel runs, naming the argument.

Shapes and dtypes follow mamba-ssm (see :func:`scanforge.selective_scan`).
"""

from __future__ import annotations

import math
import numbers

import torch

from .ir import GatherSpec, Phase, ScanSpec, Summary, Weight
from .tensor_facts import describe, memory_range, overlaps_itself

_INPUT_DTYPES = (torch.float32, torch.float16, torch.bfloat16)
_DTYPE_NAME = {torch.float32: "float32", torch.float16: "float16", torch.bfloat16: "bfloat16"}


def as_int(value):
    """``value`` as a Python int when it is integer-like (a :class:`numbers.Integral` such as ``np.int64(4)``,
    or a 0-d integer tensor such as ``torch.tensor(3)``); anything else unchanged, for the checks to refuse.
    A bool is not an int here."""
    if isinstance(value, bool):
        return value
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, torch.Tensor) and value.dim() == 0 and not value.dtype.is_floating_point \
            and not value.dtype.is_complex and value.dtype != torch.bool:
        return int(value.item())
    return value


def _check_threshold(gate_threshold) -> None:
    if isinstance(gate_threshold, bool) or not isinstance(gate_threshold, numbers.Real):
        raise TypeError(f"gate_threshold: expected a float, got {gate_threshold!r}")
    if not -math.inf < gate_threshold < math.inf:  # comparisons, not math.isfinite: torch.compile traces them
        raise ValueError(f"gate_threshold: expected a finite float (a gate fires where gate > gate_threshold), "
                         f"got {gate_threshold!r}")


def _tensor(name: str, t, optional: bool = False) -> None:
    if t is None and optional:
        return
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{name}: expected a torch.Tensor{' or None' if optional else ''}, got {type(t).__name__}")


def _shape(name: str, t: torch.Tensor, expected: tuple, meaning: str) -> None:
    if tuple(t.shape) != tuple(expected):
        raise ValueError(f"{name}: expected shape {meaning} = {tuple(expected)}, got {describe(t)}")


def _dtype(name: str, t: torch.Tensor, allowed: tuple, why: str) -> None:
    if t.dtype not in allowed:
        names = [str(d) for d in dict.fromkeys(allowed)]
        names = names[0] if len(names) == 1 else f"{', '.join(names[:-1])} or {names[-1]}"
        raise TypeError(f"{name}: expected dtype {names} ({why}), got {describe(t)}")


def _same_as(name: str, t: torch.Tensor, ref: torch.Tensor, ref_name: str, meaning: str) -> None:
    _shape(name, t, ref.shape, f"{meaning} like {ref_name}")
    _dtype(name, t, (ref.dtype,), f"the dtype of {ref_name}")


def _check_A(A: torch.Tensor, dim: int, ref: torch.Tensor, ref_name: str) -> int:
    """A is (dim, N), float32 or the dtype of the sequence input; returns N."""
    if A.dim() != 2 or A.shape[0] != dim or A.shape[1] < 1:
        raise ValueError(f"A: expected shape (dim, N) with dim = {dim} and N >= 1, got {describe(A)}")
    _dtype("A", A, (torch.float32, ref.dtype), f"float32 or the dtype of {ref_name}; complex A is not supported")
    return A.shape[1]


def _check_per_channel(named, dim: int, ref: torch.Tensor, ref_name: str) -> None:
    for name, t in named:
        if t is not None:
            _shape(name, t, (dim,), "(dim,)")
            _dtype(name, t, (torch.float32, ref.dtype), f"float32 or the dtype of {ref_name}")


def _check_devices(named, ref: torch.Tensor, ref_name: str) -> None:
    for name, t in named:
        if t is not None and t.device != ref.device:
            raise ValueError(f"{name}: expected the device of {ref_name} ({ref.device}), got {describe(t)}")


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
        _tensor(name, t)
    for name, t in (("D", D), ("z", z), ("delta_bias", delta_bias), ("gate", gate),
                    ("initial_state", initial_state)):
        _tensor(name, t, optional=True)
    if u.dim() != 3:
        raise ValueError(f"u: expected a 3-d tensor (batch, dim, L), got {describe(u)}")
    _dtype("u", u, _INPUT_DTYPES, "the kernels' dtypes; u, delta and z share one")
    batch, dim, L = u.shape
    if min(batch, dim, L) < 1:
        raise ValueError(f"u: expected batch, dim and L >= 1, got {describe(u)}")
    _same_as("delta", delta, u, "u", "(batch, dim, L)")
    if z is not None:
        _same_as("z", z, u, "u", "(batch, dim, L)")
    N = _check_A(A, dim, u, "u")
    for name, t in (("B", B), ("C", C)):
        if t.dim() == 3:
            _shape(name, t, (batch, N, L), "(batch, N, L)")
        elif t.dim() == 4:
            G = t.shape[1]
            if G < 1 or dim % G:
                raise ValueError(f"{name}: grouped (batch, G, N, L) needs dim = {dim} divisible by G, "
                                 f"got {describe(t)}")
            _shape(name, t, (batch, G, N, L), "(batch, G, N, L)")
        else:
            raise ValueError(f"{name}: expected (batch, N, L) or grouped (batch, G, N, L), got {describe(t)}")
        _dtype(name, t, (u.dtype, torch.float32), "the dtype of u or float32")
    if C.dim() != B.dim() or C.shape != B.shape:
        raise ValueError(f"C: expected the layout of B {tuple(B.shape)}, got {describe(C)}")
    _check_per_channel((("D", D), ("delta_bias", delta_bias)), dim, u, "u")
    if gate is not None:
        _shape("gate", gate, (batch, L), "(batch, L)")
        _dtype("gate", gate, (torch.float32, u.dtype), "float32 or the dtype of u")
        _check_unit_interval("gate", gate)
    if initial_state is not None:
        _shape("initial_state", initial_state, (batch, dim, N), "(batch, dim, N)")
        _dtype("initial_state", initial_state, _INPUT_DTYPES, "the kernels' dtypes; the state is kept in float32")
    _check_devices((("delta", delta), ("A", A), ("B", B), ("C", C), ("D", D), ("z", z), ("delta_bias", delta_bias),
                    ("gate", gate), ("initial_state", initial_state)), u, "u")
    stride = as_int(stride)
    if not isinstance(delta_softplus, bool):
        raise TypeError(f"delta_softplus: expected a bool, got {delta_softplus!r}")
    if not isinstance(return_last_state, bool):
        raise TypeError(f"return_last_state: expected a bool, got {return_last_state!r}")
    _check_threshold(gate_threshold)
    if cu_seqlens is not None:
        _check_cu_seqlens(cu_seqlens, u)
    return scan_spec_for(u, B, D, z, delta_bias, gate, initial_state, delta_softplus, direction, stride,
                         gate_mode, return_last_state, cu_seqlens)


def _check_cu_seqlens(cu_seqlens, u) -> None:
    _tensor("cu_seqlens", cu_seqlens)
    if cu_seqlens.dim() != 1 or cu_seqlens.numel() < 2 or cu_seqlens.dtype not in (torch.int32, torch.int64):
        raise ValueError(f"cu_seqlens: expected a 1-d int32/int64 tensor (num_seqs + 1,), got {describe(cu_seqlens)}")
    _check_devices((("cu_seqlens", cu_seqlens),), u, "u")
    if u.shape[0] != 1:
        raise ValueError(f"u: packed sequences (cu_seqlens) need batch 1, got {describe(u)}")
    if torch.compiler.is_compiling():
        return  # the values are data: checked eagerly only
    bounds = cu_seqlens.tolist()
    if bounds[0] != 0 or bounds[-1] != u.shape[2] or any(a >= b for a, b in zip(bounds[:-1], bounds[1:])):
        raise ValueError(f"cu_seqlens: expected strictly increasing offsets from 0 to L = {u.shape[2]}, "
                         f"got {bounds if len(bounds) <= 12 else bounds[:6] + ['...'] + bounds[-6:]}")


def scan_spec_for(u, B, D, z, delta_bias, gate, initial_state, delta_softplus, direction, stride, gate_mode,
                  return_last_state, cu_seqlens=None) -> ScanSpec:
    """The kernel spec of (already validated) selective-scan arguments."""
    return ScanSpec(direction=direction, stride=stride, gated=gate is not None,
                    gate_mode=gate_mode, has_D=D is not None, has_z=z is not None,
                    has_delta_bias=delta_bias is not None, softplus=delta_softplus, grouped=B.dim() == 4,
                    dtype=_DTYPE_NAME[u.dtype], has_initial_state=initial_state is not None,
                    return_last_state=return_last_state, varlen=cu_seqlens is not None)


def check_gather_args(x, k, scores, *, keep_order, summary, weight) -> GatherSpec:
    """Validate the arguments of :func:`scanforge.topk_gather` and return the kernel spec."""
    _tensor("x", x)
    _tensor("scores", scores, optional=True)
    if x.dim() != 3:
        raise ValueError(f"x: expected a 3-d tensor (batch, T, d), got {describe(x)}")
    _dtype("x", x, _INPUT_DTYPES, "the kernels' dtypes")
    batch, T, d = x.shape
    if min(batch, T, d) < 1:
        raise ValueError(f"x: expected batch, T and d >= 1, got {describe(x)}")
    k = as_int(k)
    if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= T:
        raise ValueError(f"k: expected an int with 1 <= k <= T = {T}, got {k!r}")
    if scores is not None:
        _shape("scores", scores, (batch, T), "(batch, T)")
        _dtype("scores", scores, (torch.float32, x.dtype), "float32 or the dtype of x")
        _check_devices((("scores", scores),), x, "x")
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
                      weight=weight or "none", dtype=_DTYPE_NAME[x.dtype])


def check_decode_args(state, x, dt, A, B, C, D, z, dt_bias, *, dt_softplus, stride, gate, gate_threshold,
                      gate_mode, window) -> ScanSpec:
    """Validate the arguments of :func:`scanforge.selective_state_update` and return the kernel spec."""
    for name, t in (("state", state), ("x", x), ("dt", dt), ("A", A), ("B", B), ("C", C)):
        _tensor(name, t)
    for name, t in (("D", D), ("z", z), ("dt_bias", dt_bias), ("gate", gate)):
        _tensor(name, t, optional=True)
    if x.dim() != 2:
        raise ValueError(f"x: expected a 2-d tensor (batch, dim), got {describe(x)}")
    _dtype("x", x, _INPUT_DTYPES, "the kernels' dtypes; x, dt and z share one")
    batch, dim = x.shape
    _same_as("dt", dt, x, "x", "(batch, dim)")
    if z is not None:
        _same_as("z", z, x, "x", "(batch, dim)")
    N = _check_A(A, dim, x, "x")
    _shape("state", state, (batch, dim, N), "(batch, dim, N)")
    _dtype("state", state, _INPUT_DTYPES, "the kernels' dtypes; updated in place, computed in float32")
    for name, t in (("B", B), ("C", C)):
        if t.dim() == 2:
            _shape(name, t, (batch, N), "(batch, N)")
        elif t.dim() == 3 and t.shape[1] >= 1 and dim % t.shape[1] == 0:
            _shape(name, t, (batch, t.shape[1], N), "(batch, G, N)")
        else:
            raise ValueError(f"{name}: expected (batch, N) or grouped (batch, G, N) with dim = {dim} divisible "
                             f"by G, got {describe(t)}")
        _dtype(name, t, (x.dtype, torch.float32), "the dtype of x or float32")
    if C.shape != B.shape:
        raise ValueError(f"C: expected the layout of B {tuple(B.shape)}, got {describe(C)}")
    _check_per_channel((("D", D), ("dt_bias", dt_bias)), dim, x, "x")
    if gate is not None:
        _shape("gate", gate, (batch,), "(batch,): one gate value per row for this token")
        _dtype("gate", gate, (torch.float32, x.dtype), "float32 or the dtype of x")
        _check_unit_interval("gate", gate)
    stride = as_int(stride)
    _check_threshold(gate_threshold)
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
            _tensor(name, t)
            _shape(name, t, shape, "matching x, A and B")
            _dtype(name, t, (torch.float32,), "window sums are float32")
    _check_devices((("state", state), ("dt", dt), ("A", A), ("B", B), ("C", C), ("D", D), ("z", z),
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
                    grouped=B.dim() == 3, dtype=_DTYPE_NAME[x.dtype], phase=Phase.DECODE)
