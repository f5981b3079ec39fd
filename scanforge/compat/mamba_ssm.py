"""mamba-ssm's selective-scan entry points with mamba-ssm's signatures, backed by scanforge.

Replacing ``from mamba_ssm.ops.selective_scan_interface import selective_scan_fn`` by
``from scanforge.compat.mamba_ssm import selective_scan_fn`` (and likewise for
``selective_scan_ref``, and for ``selective_state_update`` / ``selective_state_update_ref`` from
``mamba_ssm.ops.triton.selective_state_update``) is the whole migration: same argument names and
order, same return conventions (``out`` or ``(out, last_state)``), the same dtype mixes (u, delta
and z share one dtype; A, D and delta_bias may be float32 while u is half; B and C in u's dtype or
float32), and the decode step's optional heads dimension and ``state_batch_indices``.

Not covered (a ``NotImplementedError`` that says so):
    * complex ``A`` (mamba-ssm's complex S4D path; Mamba and Mamba-2 use a real A);
    * constant (time-invariant) ``B`` or ``C`` of shape ``(dim, N)``;
    * ``cu_seqlens`` together with ``return_last_state=True``.

Differences that only widen what works: the backend is chosen by device (CPU tensors run the
Numba CPU kernels), ``last_state`` is differentiable (mamba-ssm ignores its gradient), and the flags
(``delta_softplus``, ``return_last_state``, ``dt_softplus``) take what mamba-ssm's callers pass for them:
``None`` as False (MambaVision calls ``return_last_state=None``), ints 0/1 — mamba-ssm tests them for truth,
where scanforge's public ops want a bool (:mod:`scanforge.compat.args`).
"""

from __future__ import annotations

import torch
from torch import Tensor

from .. import decode as _decode
from .. import ops as _ops
from ..kernels import reference as _reference
from .args import flag

__all__ = ["check_covered", "selective_scan_fn", "selective_scan_ref", "selective_state_update",
           "selective_state_update_ref"]

_WHERE = "scanforge.compat.mamba_ssm"


def check_covered(A, B=None, C=None, cu_seqlens=None, return_last_state=False) -> None:
    """Raise for the parts of mamba-ssm's API that scanforge does not implement (B, C: the scan's)."""
    if isinstance(A, Tensor) and A.is_complex():
        raise NotImplementedError(
            f"A: complex A (dtype {A.dtype}, mamba-ssm's complex S4D path) is not supported by {_WHERE}: "
            "scanforge's scan is real-valued; expected a real A (float32 or u's dtype), as Mamba and Mamba-2 use")
    for name, t in (("B", B), ("C", C)):
        if isinstance(t, Tensor) and t.dim() == 2:
            raise NotImplementedError(
                f"{name}: a constant (time-invariant) {name} of shape (dim, N) = {tuple(t.shape)} is not supported by "
                f"{_WHERE}; expected an input-dependent {name} (batch, N, L) or grouped (batch, G, N, L). "
                f"Equivalent: {name}[None, :, :, None].expand(batch, dim, N, L), grouped with G = dim")
    if cu_seqlens is not None and return_last_state:
        raise NotImplementedError(f"cu_seqlens: packed sequences with return_last_state=True are not supported by "
                                  f"{_WHERE}; call once per sequence to get its last state")


def selective_scan_fn(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False,
                      return_last_state=False, cu_seqlens=None):
    """mamba-ssm's ``selective_scan_fn``: the fused selective scan (scanforge's tuned kernel for the device).

    Shapes: ``u, delta, z: (batch, dim, L)``; ``A: (dim, N)``; ``B, C: (batch, N, L)`` or
    ``(batch, G, N, L)``; ``D, delta_bias: (dim,)``; ``cu_seqlens: (num_seqs + 1,)`` (batch 1).
    Returns ``out (batch, dim, L)`` in u's dtype, or ``(out, last_state)`` with
    ``last_state (batch, dim, N)`` float32 when ``return_last_state``.
    """
    delta_softplus, return_last_state = flag("delta_softplus", delta_softplus), flag("return_last_state",
                                                                                      return_last_state)
    check_covered(A, B, C, cu_seqlens, return_last_state)
    return _ops.selective_scan(u, delta, A, B, C, D, z, delta_bias, delta_softplus,
                               return_last_state=return_last_state, cu_seqlens=cu_seqlens)


def selective_scan_ref(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False,
                       return_last_state=False, cu_seqlens=None):
    """mamba-ssm's ``selective_scan_ref``: the plain PyTorch definition (scanforge's float64 reference),
    cast back like mamba-ssm's: ``out`` in u's dtype, ``last_state`` float32."""
    delta_softplus, return_last_state = flag("delta_softplus", delta_softplus), flag("return_last_state",
                                                                                      return_last_state)
    check_covered(A, B, C, cu_seqlens, return_last_state)
    result = _reference.selective_scan_ref(u, delta, A, B, C, D, z, delta_bias, delta_softplus,
                                           return_last_state=return_last_state, cu_seqlens=cu_seqlens)
    if not return_last_state:
        return result.to(u.dtype)
    out, last_state = result
    return out.to(u.dtype), last_state.to(torch.float32)


def selective_state_update(state, x, dt, A, B, C, D=None, z=None, dt_bias=None, dt_softplus=False,
                           state_batch_indices=None):
    """mamba-ssm's ``selective_state_update``: one decode step, ``state`` updated in place.

    Without heads: ``state (batch, dim, N)``, ``x, dt, z (batch, dim)``, ``A (dim, N)``,
    ``B, C (batch, N)``, ``D, dt_bias (dim,)``; returns ``out (batch, dim)``.
    With heads (Mamba-2): ``state (batch, nheads, dim, N)``, ``x, dt, z (batch, nheads, dim)``,
    ``A (nheads, dim, N)``, ``B, C (batch, ngroups, N)`` (nheads divisible by ngroups),
    ``D, dt_bias (nheads, dim)``; returns ``out (batch, nheads, dim)``. ``state_batch_indices (batch,)``
    picks the rows of ``state`` to use and update. ``out`` is in x's dtype.
    """
    return _state_update(state, x, dt, A, B, C, D, z, dt_bias, dt_softplus, state_batch_indices, backend=None)


def selective_state_update_ref(state, x, dt, A, B, C, D=None, z=None, dt_bias=None, dt_softplus=False,
                               state_batch_indices=None):
    """mamba-ssm's ``selective_state_update_ref``: :func:`selective_state_update` on the float64 reference."""
    return _state_update(state, x, dt, A, B, C, D, z, dt_bias, dt_softplus, state_batch_indices,
                         backend="reference")


def _state_update(state, x, dt, A, B, C, D, z, dt_bias, dt_softplus, state_batch_indices, backend):
    """Fold mamba-ssm's heads into scanforge's channels (channel = head * headdim + p), run one step,
    and unfold the output. B's groups are contiguous blocks of heads, as scanforge's groups are of channels."""
    check_covered(A)
    dt_softplus = flag("dt_softplus", dt_softplus)
    for name, t in (("state", state), ("x", x), ("dt", dt), ("A", A), ("B", B), ("C", C)):
        if not isinstance(t, Tensor):
            raise TypeError(f"{name}: expected a torch.Tensor, got {type(t).__name__}")
    if state.dim() not in (3, 4):
        raise ValueError(f"state: expected (batch, dim, N) or (batch, nheads, dim, N), got shape {tuple(state.shape)}")
    has_heads = state.dim() == 4
    # mamba-ssm's normalisation: the head-less form is the heads form with one head and one group.
    unsqueeze = (("state", state, 3, 1), ("x", x, 2, 1), ("dt", dt, 2, 1), ("A", A, 2, 0), ("B", B, 2, 1),
                 ("C", C, 2, 1), ("D", D, 1, 0), ("z", z, 2, 1), ("dt_bias", dt_bias, 1, 0))
    state, x, dt, A, B, C, D, z, dt_bias = (t.unsqueeze(axis) if isinstance(t, Tensor) and t.dim() == n else t
                                            for _, t, n, axis in unsqueeze)
    _, nheads, headdim, N = state.shape
    batch = x.shape[0] if x.dim() == 3 else -1
    expected = {"x": (batch, nheads, headdim), "dt": (batch, nheads, headdim), "z": (batch, nheads, headdim),
                "A": (nheads, headdim, N), "D": (nheads, headdim), "dt_bias": (nheads, headdim)}
    for name, t in (("x", x), ("dt", dt), ("z", z), ("A", A), ("D", D), ("dt_bias", dt_bias)):
        if t is not None and tuple(t.shape) != expected[name]:
            raise ValueError(f"{name}: expected shape {expected[name]} to match state {tuple(state.shape)} "
                             f"(batch, nheads, dim, N), got {tuple(t.shape)}")
    groups = B.shape[1] if B.dim() == 3 else 0
    for name, t in (("B", B), ("C", C)):
        if t.dim() != 3 or tuple(t.shape) != (batch, groups, N) or groups < 1 or nheads % groups:
            raise ValueError(f"{name}: expected (batch, N) or (batch, ngroups, N) = ({batch}, ngroups, {N}) with "
                             f"nheads = {nheads} divisible by ngroups, got {tuple(t.shape)}")
    if state_batch_indices is None and state.shape[0] != batch:
        raise ValueError(f"state: expected batch {batch} (that of x), got shape {tuple(state.shape)}; pass "
                         "state_batch_indices to pick rows of a larger state")
    if state_batch_indices is not None and tuple(state_batch_indices.shape) != (batch,):
        raise ValueError(f"state_batch_indices: expected shape ({batch},), got {tuple(state_batch_indices.shape)}")

    channels = nheads * headdim
    # Merging (nheads, headdim) is a view when the two dims are laid out contiguously; else a copy, written back.
    in_place = nheads == 1 or state.stride(1) == headdim * state.stride(2)
    flat = state.flatten(1, 2) if in_place else state.reshape(state.shape[0], channels, N).contiguous()
    work = flat if state_batch_indices is None else flat.index_select(0, state_batch_indices.long())
    fold = lambda t: None if t is None else t.reshape(*t.shape[:-2], channels)  # noqa: E731
    Bf, Cf = (B[:, 0], C[:, 0]) if groups == 1 else (B, C)
    out = _decode.selective_state_update(work, fold(x), fold(dt), A.reshape(channels, N), Bf, Cf, fold(D), fold(z),
                                         fold(dt_bias), dt_softplus, backend=backend)
    if state_batch_indices is not None:
        flat.index_copy_(0, state_batch_indices.long(), work.to(flat.dtype))
    if not in_place:
        state.copy_(flat.view(state.shape))
    out = out.view(batch, nheads, headdim)
    return out if has_heads else out[:, 0]
