"""mamba-ssm's Mamba-2 scan entry point (``mamba_ssm.ops.triton.ssd_combined``) with its signature, on scanforge.

``mamba_chunk_scan_combined`` takes mamba-ssm's ``(batch, seqlen, nheads, headdim)`` layouts and return conventions
(``out``, ``(out, final_states)``, ``(out, varlen_states)`` or ``(out, final_states, varlen_states)``) and runs
:func:`scanforge.ssd_scan` (the tuned kernel of the device: Triton on a GPU, Numba on a CPU) on strided views of
them, with gradients for every tensor argument.

Differences, each for a reason:
    * ``chunk_size`` is checked (a power of two >= 1, as mamba-ssm's kernels need) but does not pick the kernel's
      chunk: that is a tuned parameter of the device (``scanforge tune``). The result is the same function; only
      the rounding of float32 sums may differ.
    * ``seq_idx`` (packed sequences) needs batch 1 and no ``initial_states``; it is turned into offsets
      (``cu_seqlens``). ``return_final_states`` with ``seq_idx`` returns the last sequence's final state, and
      ``return_varlen_states`` the final state of each sequence (one extra scan per sequence).
    * ``out`` is contiguous, as mamba-ssm's.
"""

from __future__ import annotations

import torch
from torch import Tensor

from ..ssd import ssd_scan

__all__ = ["mamba_chunk_scan_combined"]


def _check_layout(x, dt, A, B, C, chunk_size) -> None:
    for name, t in (("x", x), ("dt", dt), ("A", A), ("B", B), ("C", C)):
        if not isinstance(t, Tensor):
            raise TypeError(f"{name}: expected a torch.Tensor, got {type(t).__name__}")
    if x.dim() != 4:
        raise ValueError(f"x: expected (batch, seqlen, nheads, headdim), got shape {tuple(x.shape)}")
    batch, L, heads, _ = x.shape
    if tuple(dt.shape) != (batch, L, heads):
        raise ValueError(f"dt: expected (batch, seqlen, nheads) = {(batch, L, heads)}, got {tuple(dt.shape)}")
    for name, t in (("B", B), ("C", C)):
        if t.dim() != 4 or tuple(t.shape[:2]) != (batch, L):
            raise ValueError(f"{name}: expected (batch, seqlen, ngroups, dstate) with batch {batch}, seqlen {L}, "
                             f"got {tuple(t.shape)}")
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1 \
            or chunk_size & (chunk_size - 1):
        raise ValueError(f"chunk_size: expected a power of two (e.g. 256), got {chunk_size!r}")


def _offsets(seq_idx: Tensor, L: int) -> Tensor:
    """cu_seqlens of a packed row from its sequence ids (batch 1; ids change where a sequence starts)."""
    ids = seq_idx.reshape(-1)
    starts = torch.nonzero(ids[1:] != ids[:-1]).flatten() + 1
    zero, end = ids.new_zeros(1), ids.new_full((1,), L)
    return torch.cat([zero, starts, end]).to(torch.int64)


def mamba_chunk_scan_combined(x, dt, A, B, C, chunk_size, D=None, z=None, dt_bias=None, initial_states=None,
                              seq_idx=None, cu_seqlens=None, dt_softplus=False, dt_limit=(0.0, float("inf")),
                              return_final_states=False, return_varlen_states=False):
    """mamba-ssm's ``mamba_chunk_scan_combined``: Mamba-2's scan over ``(batch, seqlen, nheads, headdim)``.

    Shapes: ``x, z: (batch, seqlen, nheads, headdim)``; ``dt: (batch, seqlen, nheads)``; ``A, dt_bias: (nheads,)``;
    ``B, C: (batch, seqlen, ngroups, dstate)``; ``D: (nheads, headdim)`` or ``(nheads,)``;
    ``initial_states: (batch, nheads, headdim, dstate)``; ``seq_idx: (batch, seqlen)``; ``cu_seqlens:
    (num_sequences + 1,)``, used (as in mamba-ssm) only for ``return_varlen_states``.
    Returns ``out (batch, seqlen, nheads, headdim)`` in x's dtype, followed by ``final_states (batch, nheads,
    headdim, dstate)`` if ``return_final_states`` and ``varlen_states (num_sequences, nheads, headdim, dstate)`` if
    ``return_varlen_states`` (float32).
    """
    _check_layout(x, dt, A, B, C, chunk_size)
    batch, L, heads, headdim = x.shape
    dt_softplus, return_final_states = bool(dt_softplus), bool(return_final_states)  # mamba-ssm takes None as False
    if return_varlen_states and cu_seqlens is None:
        raise ValueError("cu_seqlens: return_varlen_states=True needs the offsets of the packed sequences")
    packed = None
    if seq_idx is not None:
        if batch != 1 or initial_states is not None:
            given = "given" if initial_states is not None else None
            raise NotImplementedError("seq_idx: packed sequences are supported with batch 1 and no initial_states "
                                      f"(got batch {batch}, initial_states {given})")
        packed = _offsets(seq_idx, L)
    channels_first = lambda t: None if t is None else t.reshape(batch, L, heads * headdim).transpose(1, 2)  # noqa: E731
    Bt, Ct = (t.permute(0, 2, 3, 1) for t in (B, C))
    Dc = None if D is None else D.reshape(-1)
    scan = dict(dt_bias=dt_bias, dt_softplus=dt_softplus, dt_limit=tuple(dt_limit))
    xc, dtc, zc = channels_first(x), dt.transpose(1, 2), channels_first(z)
    final = None
    if packed is None:
        result = ssd_scan(xc, dtc, A, Bt, Ct, Dc, zc, initial_state=initial_states,
                          return_last_state=return_final_states, **scan)
        y, final = result if return_final_states else (result, None)
    else:
        y = ssd_scan(xc, dtc, A, Bt, Ct, Dc, zc, cu_seqlens=packed, **scan)
    out = y.transpose(1, 2).reshape(batch, L, heads, headdim).contiguous()

    def last_state(a: int, b: int) -> Tensor:
        part = lambda t: t[..., a:b]  # noqa: E731
        return ssd_scan(part(xc), part(dtc), A, part(Bt), part(Ct), Dc, None if zc is None else part(zc),
                        initial_state=initial_states if a == 0 else None, return_last_state=True, **scan)[1]

    results = [out]
    if return_final_states:
        results.append(final if final is not None else last_state(int(packed[-2]), L))
    if return_varlen_states:
        bounds = [int(v) for v in cu_seqlens]
        results.append(torch.cat([last_state(a, b) for a, b in zip(bounds[:-1], bounds[1:])]))
    return results[0] if len(results) == 1 else tuple(results)


