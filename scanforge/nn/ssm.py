"""Shared pieces of the selective-SSM blocks: mamba-ssm's initialisation and the input-dependent
projections (x -> dt, B, C), so that every block builds its branches the same way."""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

__all__ = ["check_positive", "resolve_dt_rank", "init_dt_proj", "a_log_init", "project_dt_bc", "in_projection",
           "causal_conv", "conv_step"]


def check_positive(**values: int | float) -> None:
    """Raise a ValueError naming the first argument that is not a positive number."""
    for name, value in values.items():
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
            raise ValueError(f"{name}: expected a positive number, got {value!r}")


def resolve_dt_rank(dt_rank: int | str, d_model: int) -> int:
    if dt_rank == "auto":
        return math.ceil(d_model / 16)
    if isinstance(dt_rank, bool) or not isinstance(dt_rank, int) or dt_rank <= 0:
        raise ValueError(f"dt_rank: expected 'auto' or a positive int, got {dt_rank!r}")
    return dt_rank


@torch.no_grad()
def init_dt_proj(dt_proj: nn.Linear, dt_min: float, dt_max: float, dt_init_floor: float, dt_scale: float = 1.0) -> None:
    """mamba-ssm's dt initialisation: weight ~ U(-r^-1/2, r^-1/2) * dt_scale; the bias is the inverse
    softplus of dt drawn log-uniformly in [dt_min, dt_max] (floored), so softplus(bias) starts there."""
    if not 0 < dt_min <= dt_max:
        raise ValueError(f"dt_min, dt_max: expected 0 < dt_min <= dt_max, got {dt_min}, {dt_max}")
    std = dt_proj.in_features ** -0.5 * dt_scale
    nn.init.uniform_(dt_proj.weight, -std, std)
    dt_proj.bias.copy_(dt_bias_init(dt_proj.out_features, dt_min, dt_max, dt_init_floor))
    dt_proj.bias._no_reinit = True


def dt_bias_init(n: int, dt_min: float, dt_max: float, dt_init_floor: float) -> Tensor:
    """mamba-ssm's dt bias: the inverse softplus of dt drawn log-uniformly in [dt_min, dt_max] (floored)."""
    dt = torch.exp(torch.rand(n) * (math.log(dt_max) - math.log(dt_min)) + math.log(dt_min))
    dt = dt.clamp(min=dt_init_floor)
    return dt + torch.log(-torch.expm1(-dt))


def a_log_init(d_inner: int, d_state: int) -> nn.Parameter:
    """S4D-real initialisation: A = -(1..N) for every channel, stored as log(1..N)."""
    a = torch.arange(1, d_state + 1, dtype=torch.float32).repeat(d_inner, 1)
    param = nn.Parameter(torch.log(a))
    param._no_weight_decay = True
    return param


def project_dt_bc(x: Tensor, x_proj: nn.Linear, dt_proj: nn.Linear, d_state: int) -> tuple[Tensor, Tensor, Tensor]:
    """``x: (batch, d, L)`` -> ``delta (batch, d, L)`` (without dt bias), ``B, C (batch, N, L)``, all
    contiguous (the ops' gradients come back contiguous; a transposed view would not match them)."""
    x_dbl = x_proj(x.transpose(1, 2))  # (batch, L, r + 2N)
    dt, B, C = torch.split(x_dbl, [dt_proj.in_features, d_state, d_state], dim=-1)
    delta = torch.matmul(dt_proj.weight, dt.transpose(1, 2))
    return delta, B.transpose(1, 2).contiguous(), C.transpose(1, 2).contiguous()


def in_projection(in_proj: nn.Linear, x: Tensor) -> Tensor:
    """``x: (batch, L, d_model)`` -> ``in_proj(x)`` viewed as ``(batch, 2*d_inner, L)`` (a transposed view:
    its halves are not dense, so the ops' fake gradients come out contiguous like the real ones)."""
    return in_proj(x).transpose(1, 2)


def causal_conv(conv: nn.Conv1d, x: Tensor) -> Tensor:
    """Depthwise causal convolution of ``x: (batch, d, L)`` with ``conv``'s weights, written as d_conv
    shifted multiply-adds: on CPU this is several times faster than ``nn.Conv1d``'s depthwise backward."""
    weight, L = conv.weight.squeeze(1), x.shape[-1]  # (d, K)
    K = weight.shape[1]
    padded = torch.nn.functional.pad(x, (K - 1, 0))
    out = padded[..., K - 1 :] * weight[:, K - 1, None]
    for k in range(K - 1):
        out = out + padded[..., k : k + L] * weight[:, k, None]
    return out if conv.bias is None else out + conv.bias[:, None]


def conv_step(conv: nn.Conv1d, conv_state: Tensor, x_t: Tensor) -> Tensor:
    """One step of :func:`causal_conv`: shift ``x_t (batch, d)`` into ``conv_state (batch, d, d_conv)``
    in place and return the convolution at this step."""
    conv_state.copy_(torch.roll(conv_state, shifts=-1, dims=-1))
    conv_state[:, :, -1] = x_t
    out = (conv_state * conv.weight.squeeze(1)).sum(-1)
    return out if conv.bias is None else out + conv.bias
