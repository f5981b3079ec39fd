"""The host side of the Numba CPU kernels of Mamba-2's scan (a spec with one scalar decay per head, kind ``ssd``).

The kernels (``templates/numba_cpu/ssd_*.j2``) run one parallel task per (sequence, head) on contiguous float32
NumPy arrays: bfloat16/float16 inputs, and float32 parameters beside them, are converted once here, as the other
Numba CPU kernels' inputs are. :class:`scanforge.backends.numba_cpu.NumbaCPUBackend` hands its ``ssd`` specs to
:func:`ssd_forward` and :func:`ssd_backward` with the kernel module it loaded and the function that runs a kernel
(on one thread for a small call).

Gradients of inputs shared between tasks are written as per-task partials and summed here in a fixed order
(deterministic): B and C per (batch, head), time-major, summed over the heads of each group; A and dt_bias per
(sequence, head); D per (sequence, channel).
"""

from __future__ import annotations

from collections.abc import Callable
from types import ModuleType

import numpy as np
import torch

from .base import ScanInputs, new_output
from .host import empty_last_state, group_count, no_last_state_cotangent, sequence_rows

__all__ = ["ssd_backward", "ssd_forward", "ssd_shape", "ssd_tasks", "ssd_work"]

#: A kernel runner: ``run(kernel, work, tasks, *args)`` (work in state updates; a backward update counts 4).
Runner = Callable[..., None]


def ssd_shape(inputs: ScanInputs) -> tuple[int, int, int, int]:
    """The shape an SSD config is chosen for: (batch, dim = nheads * headdim, L, N)."""
    return (*inputs.u.shape, inputs.B.shape[-2])


def ssd_tasks(inputs: ScanInputs) -> int:
    """The parallel tasks of an SSD kernel: one per (sequence, head)."""
    return sequence_rows(inputs) * inputs.A.shape[0]


def ssd_work(inputs: ScanInputs) -> int:
    """State updates of one direction's sweep: batch * dim * L * N."""
    batch, dim, L, N = ssd_shape(inputs)
    return batch * dim * L * N


def _f32(t: torch.Tensor | None, shape=(0,)) -> np.ndarray:
    """A contiguous float32 NumPy view (or copy) of t; an empty array for an absent input."""
    if t is None:
        return np.zeros(shape, dtype=np.float32)
    return t.detach().to(torch.float32).contiguous().numpy()


def _out(shape) -> np.ndarray:
    """A float32 output the kernel fully writes (NaN-poisoned under SCANFORGE_POISON=1)."""
    return new_output(tuple(shape), torch.float32).numpy()


def _inputs(spec, inputs: ScanInputs) -> tuple:
    """The kernels' leading arguments: x, delta, A, B, C (time-major, with a group axis: (batch, G, L, N); every
    head of a group reads whole rows of them), D, z, dt_bias, h0, bounds, packed,
    passes (per sweep, whether it runs backwards in time), softplus, lo, hi."""
    x = inputs
    packed = x.cu_seqlens is not None
    bounds = x.cu_seqlens.to(torch.int64).numpy() if packed else np.zeros(1, dtype=np.int64)
    bc = [_f32((t if t.dim() == 4 else t.unsqueeze(1)).transpose(-1, -2)) for t in (x.B, x.C)]  # time-major
    return (_f32(x.u), _f32(x.delta), _f32(x.A), *bc, _f32(x.D), _f32(x.z, (0, 0, 0)), _f32(x.delta_bias),
            _f32(x.initial_state, (0, 0, 0)), bounds, packed, np.array(spec.reversed_passes, dtype=np.uint8),
            spec.softplus, float(x.dt_limit[0]), float(x.dt_limit[1]))


def ssd_forward(spec, inputs: ScanInputs, module: ModuleType, run: Runner) -> tuple[torch.Tensor, torch.Tensor]:
    """``(y, h_last)``: y like x (contiguous, x's dtype), h_last float32 (batch, dim, N) or empty."""
    batch, dim, L, N = ssd_shape(inputs)
    y = _out((batch, dim, L))
    h_last = _out((batch, dim, N) if spec.return_last_state else (0, 0, 0))
    run(module.ssd_forward, ssd_work(inputs) * len(spec.passes), ssd_tasks(inputs), *_inputs(spec, inputs), y,
        h_last)
    h = torch.from_numpy(h_last) if spec.return_last_state else empty_last_state(inputs.u)
    return torch.from_numpy(y).to(inputs.u.dtype), h


def ssd_backward(spec, inputs: ScanInputs, dy: torch.Tensor, dh_last: torch.Tensor | None, module: ModuleType,
                 run: Runner) -> dict[str, torch.Tensor]:
    """Gradients by input name (u, delta, A, B, C and the present optional inputs), each like its input."""
    batch, dim, L, N = ssd_shape(inputs)
    heads = inputs.A.shape[0]
    rows = sequence_rows(inputs)
    f32 = dict(dtype=np.float32)
    seq = (batch, dim, L)
    out = dict(dx=_out(seq), ddelta=_out((batch, heads, L)), dz=_out(seq if spec.has_z else (0, 0, 0)),
               dA=np.zeros((rows, heads), **f32), dB=np.zeros((batch, heads, L, N), **f32),
               dC=np.zeros((batch, heads, L, N), **f32), dD=np.zeros((rows, dim), **f32),
               dbias=np.zeros((rows, heads), **f32),
               dh0=_out((batch, dim, N) if spec.has_initial_state else (0, 0, 0)))
    no_dh = not spec.return_last_state or no_last_state_cotangent(dh_last)
    run(module.ssd_backward, 4 * ssd_work(inputs) * len(spec.passes), ssd_tasks(inputs), *_inputs(spec, inputs),
        _f32(dy), _f32(None, (0, 0, 0)) if no_dh else _f32(dh_last), *out.values())
    t = {k: torch.from_numpy(v) for k, v in out.items()}
    G = group_count(inputs.B)
    # the heads of a group, summed in order; time-major back to (batch, G, N, L)
    per_head = lambda g: g.view(batch, G, heads // G, L, N).sum(2).transpose(-1, -2).contiguous()  # noqa: E731
    grads = {"u": t["dx"], "delta": t["ddelta"], "A": t["dA"].sum(0), "B": per_head(t["dB"]),
             "C": per_head(t["dC"])}
    if inputs.B.dim() == 3:
        grads["B"], grads["C"] = grads["B"][:, 0], grads["C"][:, 0]
    optional = {"D": t["dD"].sum(0), "z": t["dz"], "delta_bias": t["dbias"].sum(0), "initial_state": t["dh0"]}
    grads.update({k: v for k, v in optional.items() if getattr(inputs, k) is not None})
    return {k: v.to(getattr(inputs, k).dtype) for k, v in grads.items()}
