"""Memory layouts of drawn inputs: the same values stored contiguously, transposed, at a storage offset, or with
gaps, so that a kernel that assumes a layout (ignores a stride or the storage offset) reads poison and fails.

- ``"contiguous"``: row-major, offset 0.
- ``"transposed"``: the last two dimensions swapped in memory (a sequence tensor's L, or A's N, is not the
  innermost dimension); 1-d tensors stay contiguous.
- ``"offset"``: a contiguous view that starts a few elements into a larger buffer (``storage_offset() > 0``).
- ``"strided"``: the last dimension at stride 2.

The memory around and between the values (the offset's head, the gaps) holds NaN, or the most negative integer,
so that reading it shows up in the result.
"""

from __future__ import annotations

import torch

LAYOUTS = ("contiguous", "transposed", "offset", "strided")
#: Elements before an ``"offset"`` view (odd: the view is not aligned to 8 or 16 bytes).
OFFSET = 3


def _filler(dtype: torch.dtype) -> float | int:
    return float("nan") if dtype.is_floating_point else torch.iinfo(dtype).min


def as_layout(t: torch.Tensor | None, layout: str) -> torch.Tensor | None:
    """``t``'s values in ``layout`` (:data:`LAYOUTS`), on t's device; None stays None."""
    if layout not in LAYOUTS:
        raise ValueError(f"layout: expected one of {LAYOUTS}, got {layout!r}")
    if t is None or layout == "contiguous" or t.dim() == 0:
        return t
    fill = _filler(t.dtype)
    if layout == "transposed":
        if t.dim() < 2:
            return t
        return t.transpose(-1, -2).contiguous().transpose(-1, -2)
    if layout == "offset":
        buffer = torch.full((t.numel() + OFFSET,), fill, dtype=t.dtype, device=t.device)
        view = buffer[OFFSET:].view(t.shape)
    else:  # "strided"
        buffer = torch.full((*t.shape[:-1], 2 * t.shape[-1]), fill, dtype=t.dtype, device=t.device)
        view = buffer[..., ::2]
    view.copy_(t)
    return view


def clone_layout(t: torch.Tensor | None) -> torch.Tensor | None:
    """A copy of ``t`` with its size, strides and storage offset (``Tensor.clone`` keeps neither a gap nor an
    offset); the memory the view does not cover holds poison, as in :func:`as_layout`."""
    if t is None:
        return None
    extent = 1 + sum((n - 1) * s for n, s in zip(t.shape, t.stride())) if t.numel() else 0
    buffer = torch.full((t.storage_offset() + extent,), _filler(t.dtype), dtype=t.dtype, device=t.device)
    view = buffer.as_strided(t.shape, t.stride(), t.storage_offset())
    view.copy_(t)
    return view
