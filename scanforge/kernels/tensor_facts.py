"""Facts about a tensor that argument checks word into their messages or test: how it is described, which
memory it reaches, and whether two of its indices can address one element."""

from __future__ import annotations

import torch


def describe(t: torch.Tensor) -> str:
    """How an error message names a tensor it refuses."""
    return f"shape {tuple(t.shape)}, dtype {t.dtype}, device {t.device}"


def overlaps_itself(t: torch.Tensor) -> bool:
    """Whether two indices of ``t`` may address one element. Sufficient test: ordered by stride, each
    dimension of size > 1 must step past everything the smaller-stride dimensions span (then the offsets
    are a mixed-radix number, one per index). A 0 stride (``expand``) fails it; so does an interleaved
    ``as_strided`` view, refused as well, since telling it apart costs a scan of its offsets. Under
    torch.compile only the 0 stride is looked for."""
    if torch.compiler.is_compiling():  # strides may be symbolic, which sorting cannot take: the expand case
        return any(sz > 1 and st == 0 for sz, st in zip(t.shape, t.stride()))
    span = 0  # the largest offset reached by the smaller-stride dimensions checked so far
    for stride, size in sorted((st, sz) for sz, st in zip(t.shape, t.stride()) if sz > 1):
        if stride <= span:
            return True
        span += (size - 1) * stride
    return False


def memory_range(t: torch.Tensor) -> tuple[int, int, int]:
    """The storage a view reaches: (storage address, first byte, one past its last byte)."""
    start = t.storage_offset()
    extent = sum((sz - 1) * st for sz, st in zip(t.shape, t.stride()))
    return t.untyped_storage().data_ptr(), start * t.element_size(), (start + extent + 1) * t.element_size()
