"""Mamba-2's scan (state space duality, "SSD"): one scalar decay per head, through the selective-scan op.

The variant is a field of the IR (``ScanSpec(decay="head")``), so it runs through the same ``torch.library`` op,
autograd formula and fake implementation as :func:`scanforge.selective_scan`; this module only maps its public
shapes (per-head D, ``(batch, nheads, headdim, N)`` states) to that op's.
"""

from __future__ import annotations

import math

import torch

from . import backends
from .kernels.validate import check_ssd_args

__all__ = ["ssd_scan"]


def ssd_scan(x, dt, A, B, C, D=None, z=None, dt_bias=None, dt_softplus=False, *, dt_limit=(0.0, math.inf),
             direction="causal", initial_state=None, return_last_state=False, cu_seqlens=None, backend=None):
    """Mamba-2's selective scan with a scalar decay per head (:func:`scanforge.kernels.reference.ssd_scan_ref`).

    Per head h: ``S_t = exp(dt_t A_h) S_{t-1} + dt_t x_t B_tᵀ`` (a ``headdim x N`` state), ``y_t = S_t C_t + D x_t``,
    then ``y * silu(z)`` if z is given; ``dt = clamp(softplus(dt + dt_bias), *dt_limit)`` (no softplus unless
    ``dt_softplus``). One exponential per (head, step).

    Args:
        x, z: ``[batch, nheads * headdim, L]``, one floating dtype (float32, float16 or bfloat16).
        dt: ``[batch, nheads, L]`` in x's dtype. A, dt_bias: ``[nheads]`` (float32 or x's dtype; A < 0).
        B, C: ``[batch, ngroups, N, L]`` (ngroups divides nheads; heads ``g * nheads/ngroups ...`` share group g)
            or ``[batch, N, L]``, x's dtype or float32.
        D: ``[nheads]`` or ``[nheads * headdim]``.
        dt_limit: ``(low, high)``, dt is clamped to it after the softplus.
        direction: ``"causal"``, ``"reverse"`` or ``"bidirectional"`` (causal + reverse - D*x).
        initial_state: ``[batch, nheads, headdim, N]``. return_last_state: also return the final state
            (same shape, float32).
        cu_seqlens: ``[num_seqs + 1]`` int offsets of sequences packed along L in a batch of 1 (no states).
        backend: None (by device), ``"triton"``, ``"numba_cpu"`` or ``"reference"``.

    Returns:
        ``y [batch, nheads * headdim, L]`` in x's dtype, or ``(y, h_last)`` with ``return_last_state=True``.
    """
    spec = check_ssd_args(x, dt, A, B, C, D, z, dt_bias, initial_state, dt_softplus=dt_softplus, dt_limit=dt_limit,
                          direction=direction, return_last_state=return_last_state, cu_seqlens=cu_seqlens)
    batch, dim, _ = x.shape
    heads, N = A.shape[0], B.shape[-2]
    if D is not None and D.shape[0] != dim:
        D = D.repeat_interleave(dim // heads)  # per head to per channel; autograd sums it back
    h0 = None if initial_state is None else initial_state.reshape(batch, dim, N)
    name = backends.resolve(backend, spec, x.device)
    y, h_last = torch.ops.scanforge.selective_scan(
        x, dt, A, B, C, D, z, dt_bias, None, h0, cu_seqlens, dt_softplus, spec.direction.value, 1, 0.5, "hard",
        return_last_state, spec.decay.value, float(dt_limit[0]), float(dt_limit[1]), name)
    return (y, h_last.view(batch, heads, dim // heads, N)) if return_last_state else y
