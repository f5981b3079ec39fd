"""The Mamba-2 block on scanforge's ops, with mamba-ssm's ``Mamba2`` parameter names, shapes and initialisation
(its state_dict loads with ``strict=True``), and a token-by-token decoder.

in_proj -> (z, xBC, dt); causal depthwise conv + SiLU on xBC -> (x, B, C); :func:`scanforge.ssd_scan` with one decay
per head; gated RMSNorm ``norm(y * silu(z))``; out_proj. The decode step is ``sf.selective_state_update`` with the
per-head A, dt and D expanded per channel (the same function token by token).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

import scanforge as sf

from .mamba import check_sequence, check_token
from .ssm import causal_conv, check_positive, conv_step, dt_bias_init

__all__ = ["GatedRMSNorm", "Mamba2", "Mamba2Cache"]


class GatedRMSNorm(nn.Module):
    """mamba-ssm's gated RMSNorm (``layernorm_gated.RMSNorm``): ``rmsnorm(x * silu(z))`` per group of
    ``group_size`` channels (or ``rmsnorm(x) * silu(z)`` when ``norm_before_gate``), times ``weight``."""

    def __init__(self, hidden: int, eps: float = 1e-5, norm_before_gate: bool = False, group_size: int | None = None):
        super().__init__()
        self.eps, self.norm_before_gate, self.group_size = eps, norm_before_gate, group_size or hidden
        self.weight = nn.Parameter(torch.ones(hidden))

    def forward(self, x: Tensor, z: Tensor | None = None) -> Tensor:
        dtype = x.dtype
        x = x.float()
        if z is not None and not self.norm_before_gate:
            x = x * F.silu(z.float())
        groups = x.unflatten(-1, (-1, self.group_size))
        x = (groups * torch.rsqrt(groups.pow(2).mean(-1, keepdim=True) + self.eps)).flatten(-2)
        x = x * self.weight.float()
        if z is not None and self.norm_before_gate:
            x = x * F.silu(z.float())
        return x.to(dtype)


@dataclass
class Mamba2Cache:
    """Decode state of one block, updated in place: the last d_conv inputs of the convolution (of x, B and C) and
    the SSM state (float32), as mamba-ssm's ``conv_state`` and ``ssm_state``."""

    conv_state: Tensor  # (batch, d_inner + 2 * ngroups * d_state, d_conv)
    ssm_state: Tensor  # (batch, nheads, headdim, d_state)


class Mamba2(nn.Module):
    """Mamba-2 block (mamba-ssm's ``Mamba2`` without its optional MLP half, tensor parallelism or fused kernel
    path: ``d_ssm`` is ``d_inner``). ``backend`` is passed to every scanforge op (None: by device)."""

    def __init__(self, d_model: int, d_state: int = 128, d_conv: int = 4, expand: int = 2, headdim: int = 64,
                 ngroups: int = 1, A_init_range: tuple[float, float] = (1, 16), D_has_hdim: bool = False,
                 rmsnorm: bool = True, norm_before_gate: bool = False, dt_min: float = 0.001, dt_max: float = 0.1,
                 dt_init_floor: float = 1e-4, dt_limit: tuple[float, float] = (0.0, float("inf")), bias: bool = False,
                 conv_bias: bool = True, chunk_size: int = 256, *, backend: str | None = None) -> None:
        super().__init__()
        check_positive(d_model=d_model, d_state=d_state, d_conv=d_conv, expand=expand, headdim=headdim,
                       ngroups=ngroups)
        self.d_model, self.d_state, self.d_conv, self.headdim, self.ngroups = d_model, d_state, d_conv, headdim, ngroups
        self.d_inner = int(expand * d_model)
        if self.d_inner % headdim:
            raise ValueError(f"headdim: expected a divisor of d_inner = expand * d_model = {self.d_inner}, "
                             f"got {headdim}")
        self.nheads = self.d_inner // headdim
        if self.nheads % ngroups:
            raise ValueError(f"ngroups: expected a divisor of nheads = {self.nheads}, got {ngroups}")
        self.D_has_hdim, self.rmsnorm, self.dt_limit, self.chunk_size = D_has_hdim, rmsnorm, tuple(dt_limit), chunk_size
        self.backend = backend
        conv_dim = self.d_inner + 2 * ngroups * d_state
        self.in_proj = nn.Linear(d_model, 2 * self.d_inner + 2 * ngroups * d_state + self.nheads, bias=bias)
        self.conv1d = nn.Conv1d(conv_dim, conv_dim, d_conv, groups=conv_dim, padding=d_conv - 1, bias=conv_bias)
        if not 0 < dt_min <= dt_max:
            raise ValueError(f"dt_min, dt_max: expected 0 < dt_min <= dt_max, got {dt_min}, {dt_max}")
        self.dt_bias = nn.Parameter(dt_bias_init(self.nheads, dt_min, dt_max, dt_init_floor))
        self.dt_bias._no_weight_decay = True
        self.A_log = nn.Parameter(torch.log(torch.empty(self.nheads).uniform_(*A_init_range)))
        self.A_log._no_weight_decay = True
        self.D = nn.Parameter(torch.ones(self.d_inner if D_has_hdim else self.nheads))
        self.D._no_weight_decay = True
        if rmsnorm:
            self.norm = GatedRMSNorm(self.d_inner, eps=1e-5, norm_before_gate=norm_before_gate,
                                     group_size=self.d_inner // ngroups)
        self.out_proj = nn.Linear(self.d_inner, d_model, bias=bias)

    def _split(self, zxbcdt: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        return torch.split(zxbcdt, [self.d_inner, self.d_inner + 2 * self.ngroups * self.d_state, self.nheads], -1)

    def _out(self, y: Tensor, z: Tensor) -> Tensor:
        """``y, z: (..., d_inner)`` -> the block's output (gated norm, out_proj)."""
        return self.out_proj(self.norm(y, z) if self.rmsnorm else y)

    def forward(self, u: Tensor) -> Tensor:
        """``u: (batch, L, d_model)`` -> ``(batch, L, d_model)``."""
        check_sequence(u, self.d_model, "u")
        z, xBC, dt = self._split(self.in_proj(u))
        xBC = F.silu(causal_conv(self.conv1d, xBC.transpose(1, 2)))  # (batch, conv_dim, L)
        x, B, C = torch.split(xBC, [self.d_inner, self.ngroups * self.d_state, self.ngroups * self.d_state], 1)
        batch, L = u.shape[:2]
        grouped = lambda t: t.reshape(batch, self.ngroups, self.d_state, L)  # noqa: E731
        y = sf.ssd_scan(x.contiguous(), dt.transpose(1, 2).contiguous(), -torch.exp(self.A_log.float()),
                        grouped(B), grouped(C), self.D.float(), None if self.rmsnorm else z.transpose(1, 2),
                        self.dt_bias.float(), True, dt_limit=self.dt_limit, backend=self.backend)
        return self._out(y.transpose(1, 2), z)

    def allocate_cache(self, batch: int, device=None, dtype: torch.dtype | None = None) -> Mamba2Cache:
        device = device if device is not None else self.in_proj.weight.device
        dtype = dtype or self.in_proj.weight.dtype
        conv_dim = self.d_inner + 2 * self.ngroups * self.d_state
        return Mamba2Cache(torch.zeros(batch, conv_dim, self.d_conv, device=device, dtype=dtype),
                           torch.zeros(batch, self.nheads, self.headdim, self.d_state, device=device,
                                       dtype=torch.float32))

    def step(self, u_t: Tensor, cache: Mamba2Cache) -> Tensor:
        """Decode one token ``u_t: (batch, d_model)``; ``cache`` is updated in place. Token by token this equals
        :meth:`forward` on the whole sequence (with ``dt_limit`` at its default: the decode step does not clamp)."""
        check_token(u_t, self.d_model, "u_t")
        z, xBC, dt = self._split(self.in_proj(u_t))
        xBC = F.silu(conv_step(self.conv1d, cache.conv_state, xBC))
        x, B, C = torch.split(xBC, [self.d_inner, self.ngroups * self.d_state, self.ngroups * self.d_state], -1)
        per_channel = lambda t: t.repeat_interleave(self.headdim, dim=-1)  # noqa: E731
        A = per_channel(-torch.exp(self.A_log.float()))[:, None].expand(self.d_inner, self.d_state)
        D = self.D.float() if self.D_has_hdim else per_channel(self.D.float())
        state = cache.ssm_state.view(u_t.shape[0], self.d_inner, self.d_state)
        y = sf.selective_state_update(state, x, per_channel(dt), A, B.unflatten(-1, (self.ngroups, self.d_state)),
                                      C.unflatten(-1, (self.ngroups, self.d_state)), D,
                                      None if self.rmsnorm else z, per_channel(self.dt_bias.float()), True,
                                      backend=self.backend)
        return self._out(y, z)
