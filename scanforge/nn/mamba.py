"""The Mamba-1 block on scanforge's ops, with mamba-ssm's parameter names, shapes and initialisation
(a mamba-ssm ``Mamba`` state_dict loads with ``strict=True``), and a token-by-token decoder."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

import scanforge as sf

from .ssm import (
    a_log_init,
    causal_conv,
    check_positive,
    conv_step,
    in_projection,
    init_dt_proj,
    project_dt_bc,
    resolve_dt_rank,
)

__all__ = ["Mamba", "MambaCache", "check_sequence", "check_token"]


def check_sequence(x: Tensor, d_model: int, name: str = "x") -> None:
    if not isinstance(x, Tensor) or x.dim() != 3 or x.shape[-1] != d_model:
        got = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
        raise ValueError(f"{name}: expected a tensor (batch, L, {d_model}), got {got}")


def check_token(x: Tensor, d_model: int, name: str = "x_t") -> None:
    if not isinstance(x, Tensor) or x.dim() != 2 or x.shape[-1] != d_model:
        got = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
        raise ValueError(f"{name}: expected a tensor (batch, {d_model}), got {got}")


@dataclass
class MambaCache:
    """Decode state of one block, updated in place: the last d_conv inputs of the convolution and the
    SSM state (float32)."""

    conv_state: Tensor  # (batch, d_inner, d_conv)
    ssm_state: Tensor  # (batch, d_inner, d_state)


class Mamba(nn.Module):
    """Mamba-1 block: in_proj -> causal depthwise conv -> SiLU -> selective scan (gated by SiLU(z)) -> out_proj.

    ``backend`` is passed to every scanforge op (None: by device)."""

    def __init__(self, d_model: int, d_state: int = 16, d_conv: int = 4, expand: int = 2, dt_rank: int | str = "auto",
                 dt_min: float = 1e-3, dt_max: float = 0.1, dt_init_floor: float = 1e-4, conv_bias: bool = True,
                 bias: bool = False, *, dt_scale: float = 1.0, backend: str | None = None) -> None:
        super().__init__()
        check_positive(d_model=d_model, d_state=d_state, d_conv=d_conv, expand=expand)
        self.d_model, self.d_state, self.d_conv, self.expand = d_model, d_state, d_conv, expand
        self.d_inner = int(expand * d_model)
        self.dt_rank = resolve_dt_rank(dt_rank, d_model)
        self.backend = backend
        self.in_proj = nn.Linear(d_model, 2 * self.d_inner, bias=bias)
        self.conv1d = nn.Conv1d(self.d_inner, self.d_inner, d_conv, groups=self.d_inner, padding=d_conv - 1,
                                bias=conv_bias)
        self.x_proj = nn.Linear(self.d_inner, self.dt_rank + 2 * d_state, bias=False)
        self.dt_proj = nn.Linear(self.dt_rank, self.d_inner, bias=True)
        init_dt_proj(self.dt_proj, dt_min, dt_max, dt_init_floor, dt_scale)
        self.A_log = a_log_init(self.d_inner, d_state)
        self.D = nn.Parameter(torch.ones(self.d_inner))
        self.D._no_weight_decay = True
        self.out_proj = nn.Linear(self.d_inner, d_model, bias=bias)

    def _in(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """``(batch, L, d_model)`` -> conv'd, activated ``x`` and gate ``z``, both ``(batch, d_inner, L)``,
        contiguous: the ops' gradients are contiguous, and a compiler must not pick another layout for
        their inputs (the Numba backend would copy ``z`` to contiguous anyway)."""
        xz = in_projection(self.in_proj, x)
        xs, z = xz.chunk(2, dim=1)
        return F.silu(causal_conv(self.conv1d, xs)).contiguous(), z.contiguous()

    def forward(self, x: Tensor) -> Tensor:
        """``x: (batch, L, d_model)`` -> ``(batch, L, d_model)``."""
        check_sequence(x, self.d_model)
        xs, z = self._in(x)
        delta, B, C = project_dt_bc(xs, self.x_proj, self.dt_proj, self.d_state)
        y = sf.selective_scan(xs, delta, -torch.exp(self.A_log.float()), B, C, self.D.float(), z,
                              self.dt_proj.bias.float(), delta_softplus=True, backend=self.backend)
        return self.out_proj(y.transpose(1, 2))

    def allocate_cache(self, batch: int, device=None, dtype: torch.dtype | None = None) -> MambaCache:
        device = device if device is not None else self.in_proj.weight.device
        dtype = dtype or self.in_proj.weight.dtype
        return MambaCache(torch.zeros(batch, self.d_inner, self.d_conv, device=device, dtype=dtype),
                          torch.zeros(batch, self.d_inner, self.d_state, device=device, dtype=torch.float32))

    def _step_in(self, x_t: Tensor, cache: MambaCache) -> tuple[Tensor, Tensor]:
        check_token(x_t, self.d_model)
        xs, z = self.in_proj(x_t).chunk(2, dim=-1)
        return F.silu(conv_step(self.conv1d, cache.conv_state, xs)), z

    def _step_dt_bc(self, xs: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        dt, B, C = torch.split(self.x_proj(xs), [self.dt_rank, self.d_state, self.d_state], dim=-1)
        return F.linear(dt, self.dt_proj.weight), B, C

    def step(self, x_t: Tensor, cache: MambaCache) -> Tensor:
        """Decode one token ``x_t: (batch, d_model)``; ``cache`` is updated in place. Token by token this
        equals :meth:`forward` on the whole sequence."""
        xs, z = self._step_in(x_t, cache)
        dt, B, C = self._step_dt_bc(xs)
        y = sf.selective_state_update(cache.ssm_state, xs, dt, -torch.exp(self.A_log.float()), B, C, self.D.float(),
                                      z, self.dt_proj.bias.float(), True, backend=self.backend)
        return self.out_proj(y)
