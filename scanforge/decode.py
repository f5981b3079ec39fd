"""The decode step (one token at a time, state updated in place), registered with ``torch.library``."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from . import backends
from .backends.base import DecodeInputs
from .kernels.validate import as_int, check_decode_args, decode_spec_for

__all__ = ["DecodeWindow", "selective_state_update"]


@dataclass
class DecodeWindow:
    """The open window of a strided or gated decoder, carried beside the state: the sums of dt, u
    and B since the state's last update, and how many steps they hold (all float32)."""

    acc_dt: Tensor  # (batch, dim)
    acc_u: Tensor  # (batch, dim)
    acc_B: Tensor  # (batch, G, N), G = 1 for shared B
    count: Tensor  # (batch,)

    @classmethod
    def zeros(cls, batch: int, dim: int, N: int, groups: int = 1, device=None) -> DecodeWindow:
        f32 = dict(dtype=torch.float32, device=device)
        return cls(torch.zeros(batch, dim, **f32), torch.zeros(batch, dim, **f32),
                   torch.zeros(batch, groups, N, **f32), torch.zeros(batch, **f32))

    def tensors(self) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        return self.acc_dt, self.acc_u, self.acc_B, self.count


@torch.library.custom_op("scanforge::selective_state_update",
                         mutates_args=("state", "acc_dt", "acc_u", "acc_B", "count"))
def _decode_op(state: Tensor, x: Tensor, dt: Tensor, A: Tensor, B: Tensor, C: Tensor, D: Tensor | None,
               z: Tensor | None, dt_bias: Tensor | None, gate: Tensor | None, acc_dt: Tensor | None,
               acc_u: Tensor | None, acc_B: Tensor | None, count: Tensor | None, dt_softplus: bool, stride: int,
               gate_threshold: float, gate_mode: str, backend: str) -> Tensor:
    spec = decode_spec_for(x, B, D, z, dt_bias, gate, dt_softplus, stride, gate_mode)
    window = None if acc_dt is None else (acc_dt, acc_u, acc_B, count)
    inputs = DecodeInputs(state, x, dt, A, B, C, D, z, dt_bias, gate, gate_threshold, window)
    return backends.get(backend).scan_decode(spec, inputs)


@_decode_op.register_fake
def _(state, x, *args):
    return torch.empty_like(x)


def selective_state_update(state, x, dt, A, B, C, D=None, z=None, dt_bias=None, dt_softplus=False, *, stride=1,
                           gate=None, gate_threshold=0.5, gate_mode="hard", window=None, backend=None):
    """One decode step, mamba-ssm's ``selective_state_update``: updates ``state`` in place.

    Args:
        state: ``[batch, dim, N]`` (float32, float16 or bfloat16; float32 arithmetic), updated in place.
        x, dt, z: ``[batch, dim]``. A: ``[dim, N]``. B, C: ``[batch, N]`` or grouped ``[batch, G, N]``.
        D, dt_bias: ``[dim]``. dt_softplus: ``dt = softplus(dt + dt_bias)``.
        stride, gate, gate_threshold, gate_mode: the strided / gated variants of
            :func:`scanforge.selective_scan`; they need ``window`` (:class:`DecodeWindow`), the
            open window's sums, also updated in place. ``gate`` is ``[batch]`` for this token.
        backend: None (by device), ``"triton"`` or ``"reference"``.

    Returns:
        ``out [batch, dim]`` in x's dtype: the scan's output for this token.
    """
    stride = as_int(stride)
    spec = check_decode_args(state, x, dt, A, B, C, D, z, dt_bias, dt_softplus=dt_softplus, stride=stride,
                             gate=gate, gate_threshold=gate_threshold, gate_mode=gate_mode, window=window)
    name = backends.resolve(backend, spec, x.device)
    acc = window.tensors() if window is not None else (None, None, None, None)
    return torch.ops.scanforge.selective_state_update(state, x, dt, A, B, C, D, z, dt_bias, gate, *acc, dt_softplus,
                                                      stride, float(gate_threshold), spec.gate_mode.value, name)
