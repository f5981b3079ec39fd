"""Capture: the backend's own launcher runs on ``meta`` tensors of the requested shape and dtype while the backend
records its kernel launches instead of running them (:meth:`scanforge.backends.base.Backend.recording_launches`),
so every recorded launch carries the real arguments (dtypes, strides, constexprs, grid). The inputs and the entry
point of each kernel family come from its op kind (:mod:`scanforge.testing.opkinds`).

Triton specialises an integer argument equal to 1 or divisible by 16 (and a pointer aligned to 16 bytes), so a
contiguous input and a strided view of it compile to different kernels. :data:`LAYOUTS` are the two that the gate
compiles: ``contiguous`` (strides as ``torch.empty`` makes them) and ``generic``, where every input tensor is a view
whose strides are neither 1 nor a multiple of 16 and whose pointer is not 16-byte aligned (what a transposed, sliced
or padded view can reach; the worst case for the compiler: no vectorised access, every index multiplied).
"""

from __future__ import annotations

from collections.abc import Mapping

import torch

from .. import backends
from ..backends.base import Launch
from ..kernels.ir import GatherSpec, ScanSpec
from ..testing.opkinds import op_kind

LAYOUTS = ("contiguous", "generic")


def generic_strides(shape: tuple[int, ...]) -> tuple[int, ...]:
    """Non-overlapping strides for ``shape``, none of them 1 or a multiple of 16 (innermost 3, each outer one the
    span of the inner dimensions plus 1 or 2, made odd)."""
    strides, span = [], 3
    for size in reversed(shape):
        strides.append(span)
        span = span * max(size, 1) + 1
        span += 1 - span % 2  # odd: never a multiple of 16
    return tuple(reversed(strides))


def restride(value):
    """``value`` (a tensor, a bundle of them, or anything else) with every tensor of more than one element
    replaced by a ``meta`` view of :func:`generic_strides` that starts one element into its storage."""
    if isinstance(value, torch.Tensor):
        if value.numel() <= 1:
            return value
        strides = generic_strides(tuple(value.shape))
        span = 2 + sum((size - 1) * stride for size, stride in zip(value.shape, strides))
        storage = torch.empty(span, dtype=value.dtype, device="meta")
        return storage.as_strided(value.shape, strides, 1)  # one element in: a pointer not aligned to 16 B
    if isinstance(value, tuple) and hasattr(value, "_fields"):
        return type(value)(*(restride(v) for v in value))
    if isinstance(value, tuple):
        return tuple(restride(v) for v in value)
    return value


def capture(backend_name: str, spec: ScanSpec | GatherSpec, shape: tuple[int, ...], config: Mapping,
            layout: str = "contiguous") -> list[Launch]:
    """The kernel launches the backend makes for ``spec`` at ``shape`` with ``config``, not run; ``layout``
    (:data:`LAYOUTS`) chooses the inputs' strides."""
    if layout not in LAYOUTS:
        raise ValueError(f"--layout: expected one of {list(LAYOUTS)}, got {layout!r}")
    backend = backends.get(backend_name)
    kind = op_kind(spec)
    given = kind.meta_inputs(spec, shape)
    if layout == "generic":
        given = restride(given)
    launches: list[Launch] = []
    with backend.recording_launches(launches):
        kind.launch(backend, spec, given, dict(config))
    return launches
