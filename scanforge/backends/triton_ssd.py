"""Host side of the Triton kernels of Mamba-2's scan (a per-head decay spec, ``spec.kind == "ssd"``).

The kernels (``templates/triton/ssd_*.j2``) are the chunked "state space duality" form: one program per
(sequence, head, block of a head's channels). This module allocates their outputs and adds up the backward's
partial gradients: dt, A, B and C gradients are sums over a head's channels (and B's and C's over the heads
of a group), which each program writes as its own partial; the host sums them in a fixed order, so the
gradients are deterministic (no atomics). The cost is memory: B's and C's partials are (batch, nheads *
channel blocks, N, L) fp32 each.
"""

from __future__ import annotations

import math
from types import ModuleType

import torch

from ..kernels.ir import ScanSpec
from .base import ScanInputs, new_output
from .host import empty_last_state, group_count, no_last_state_cotangent, sequence_rows

#: Offsets inside one row of a tensor are int32 in the SSD kernels (no ``WIDE`` variant yet, unlike the scans'):
#: a call whose row would reach 2**31 elements is refused before any kernel runs.
ROW_LIMIT = 2**31
#: The sequence inputs a kernel reads with their own strides: one whose stride is neither 0, 1 nor a multiple of 16
#: (a view users rarely make) is copied first, since Triton compiles another kernel for it that spills.
_SEQUENCES = ("u", "delta", "B", "C", "z")


def _plain(t: torch.Tensor | None) -> torch.Tensor | None:
    """``t``, or a contiguous copy when one of its strides is odd (not 0, 1 or a multiple of 16)."""
    odd = t is not None and any(s not in (0, 1) and s % 16 for s in t.stride())
    return t.contiguous() if odd else t


def _aligned(inputs: ScanInputs) -> ScanInputs:
    return inputs._replace(**{n: _plain(getattr(inputs, n)) for n in _SEQUENCES})


def _check_rows(shapes: dict[str, tuple[int, ...]]) -> None:
    """Refuse a call where a tensor's batch row (every dimension but the first) reaches :data:`ROW_LIMIT`."""
    for name, shape in shapes.items():
        row = math.prod(shape[1:])
        if row >= ROW_LIMIT:
            raise ValueError(f"ssd_scan: {name} would hold {row} elements per batch row ({tuple(shape)}), past the "
                             f"Triton kernels' 32-bit offsets (2**31); split the sequence and chain the calls with "
                             f"initial_state / return_last_state")


def ssd_shape(inputs: ScanInputs) -> tuple[int, ...]:
    """The shape a config is chosen for: (batch, dim, L, N), as for the other scans."""
    return (*inputs.u.shape, inputs.B.shape[-2])


def _state_size(inputs: ScanInputs) -> int:
    return inputs.B.shape[-2]


def _through_softplus_and_clamp(spec: ScanSpec, inputs: ScanInputs, d_dt: torch.Tensor) -> torch.Tensor:
    """The epilogue of the backward: d(delta + dt_bias) from the summed d(dt) of the clamped step. The kernels
    read dt from the prologue (ssd_dt.j2), so the derivative of its bias, softplus and clamp is applied here,
    once per (sequence, head, step): the gradient passes where lo <= softplus(raw) <= hi (as torch.clamp),
    times softplus'(raw) = sigmoid(raw)."""
    raw = inputs.delta.to(torch.float32)
    if spec.has_delta_bias:
        raw = raw + inputs.delta_bias.to(torch.float32)[:, None]
    dt_in = torch.nn.functional.softplus(raw) if spec.softplus else raw
    lo, hi = inputs.dt_limit
    d_dt = d_dt * ((dt_in >= lo) & (dt_in <= hi))
    return d_dt * torch.sigmoid(raw) if spec.softplus else d_dt


def forward(spec: ScanSpec, inputs: ScanInputs, module: ModuleType) -> tuple[torch.Tensor, torch.Tensor]:
    """``(y, h_last)``: y like x (contiguous, x's dtype), h_last (batch, dim, N) fp32 or empty."""
    inputs = _aligned(inputs)
    _check_rows({"x": tuple(inputs.u.shape), "B": tuple(inputs.B.shape)})
    x = inputs.u
    batch, dim, L = x.shape
    y = new_output((batch, dim, L), x.dtype, x.device)
    h_last = (new_output((batch, dim, _state_size(inputs)), torch.float32, x.device) if spec.return_last_state
              else empty_last_state(x))
    module.launch_forward(x, inputs.delta, inputs.A, inputs.B, inputs.C, inputs.D, inputs.z, inputs.delta_bias,
                          inputs.initial_state, inputs.dt_limit, y, h_last, cu_seqlens=inputs.cu_seqlens)
    return y, h_last


def backward(spec: ScanSpec, inputs: ScanInputs, dy: torch.Tensor, dh_last: torch.Tensor | None,
             module: ModuleType) -> dict[str, torch.Tensor]:
    """Gradients by input name, each shaped like its input and in its dtype."""
    inputs, dy = _aligned(inputs), _plain(dy)
    x, A = inputs.u, inputs.A
    batch, dim, L = x.shape
    heads, N = A.shape[0], _state_size(inputs)
    rows = sequence_rows(inputs)
    parts = heads * module.p_blocks(dim // heads)
    f32 = dict(dtype=torch.float32, device=x.device)
    two_pass = len(spec.passes) == 2  # its passes add into dx: keep fp32
    _check_rows({"x": (batch, dim, L), "B's and C's partial gradients": (batch, parts, N, L)})
    grads = {
        "u": new_output((batch, dim, L), torch.float32 if two_pass else x.dtype, x.device),
        "dt_parts": new_output((batch, parts, L), **f32),
        "A_parts": new_output((rows, parts), **f32),
        "B_parts": new_output((batch, parts, N, L), **f32),
        "C_parts": new_output((batch, parts, N, L), **f32),
    }
    if spec.has_D:
        grads["D_parts"] = new_output((rows, dim), **f32)
    if spec.has_z:
        grads["z"] = new_output((batch, dim, L), x.dtype, x.device)
    if spec.has_initial_state:
        grads["initial_state"] = new_output((batch, dim, N), **f32)
    dh = None
    if spec.return_last_state and not no_last_state_cotangent(dh_last):
        dh = dh_last.to(torch.float32).contiguous()
    module.launch_backward(x, inputs.delta, A, inputs.B, inputs.C, inputs.D, inputs.z, inputs.delta_bias,
                           inputs.initial_state, inputs.dt_limit, dy, dh, grads, cu_seqlens=inputs.cu_seqlens)
    d_raw = _through_softplus_and_clamp(spec, inputs, grads["dt_parts"].view(batch, heads, -1, L).sum(2))
    result = {"u": grads["u"], "delta": d_raw, "A": grads["A_parts"].view(rows, heads, -1).sum((0, 2))}
    groups = group_count(inputs.B)
    for name in ("B", "C"):
        per_group = grads[f"{name}_parts"].view(batch, groups, -1, N, L).sum(2)
        result[name] = per_group if inputs.B.dim() == 4 else per_group[:, 0]
    if spec.has_D:
        result["D"] = grads["D_parts"].sum(0)
    if spec.has_z:
        result["z"] = grads["z"]
    if spec.has_delta_bias:
        result["delta_bias"] = d_raw.sum((0, 2))
    if spec.has_initial_state:
        result["initial_state"] = grads["initial_state"]
    return {name: g.to(getattr(inputs, name).dtype) for name, g in result.items()}
