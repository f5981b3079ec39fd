"""Bidirectional Mamba for non-causal sequences (images, audio): one block reads both directions."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

import scanforge as sf

from .mamba import Mamba, check_sequence
from .ssm import a_log_init, causal_conv, in_projection, init_dt_proj, project_dt_bc

__all__ = ["BiMamba"]


class BiMamba(Mamba):
    """Bidirectional Mamba block.

    ``shared=True``: one set of parameters and the fused bidirectional scan (causal + reverse - D*u in one
    launch, gated by SiLU(z)). ``shared=False``: Vision-Mamba-v2 style, a second branch with its own
    ``conv1d_b, x_proj_b, dt_proj_b, A_b_log, D_b`` runs on the flipped sequence; the two outputs are averaged.
    Other arguments as :class:`Mamba`.
    """

    def __init__(self, d_model: int, d_state: int = 16, d_conv: int = 4, expand: int = 2, *, shared: bool = True,
                 dt_min: float = 1e-3, dt_max: float = 0.1, dt_init_floor: float = 1e-4, conv_bias: bool = True,
                 backend: str | None = None, **kwargs) -> None:
        super().__init__(d_model, d_state, d_conv, expand, dt_min=dt_min, dt_max=dt_max, dt_init_floor=dt_init_floor,
                         conv_bias=conv_bias, backend=backend, **kwargs)
        if not isinstance(shared, bool):
            raise ValueError(f"shared: expected a bool, got {shared!r}")
        self.shared = shared
        if not shared:
            d = self.d_inner
            self.conv1d_b = nn.Conv1d(d, d, d_conv, groups=d, padding=d_conv - 1, bias=conv_bias)
            self.x_proj_b = nn.Linear(d, self.dt_rank + 2 * d_state, bias=False)
            self.dt_proj_b = nn.Linear(self.dt_rank, d, bias=True)
            init_dt_proj(self.dt_proj_b, dt_min, dt_max, dt_init_floor)
            self.A_b_log = a_log_init(d, d_state)
            self.D_b = nn.Parameter(torch.ones(d))
            self.D_b._no_weight_decay = True

    def forward(self, x: Tensor) -> Tensor:
        """``x: (batch, L, d_model)`` -> ``(batch, L, d_model)``; every output sees the whole sequence."""
        check_sequence(x, self.d_model)
        xz = in_projection(self.in_proj, x)
        raw, z = xz.chunk(2, dim=1)
        xs, z = F.silu(causal_conv(self.conv1d, raw)).contiguous(), z.contiguous()
        delta, B, C = project_dt_bc(xs, self.x_proj, self.dt_proj, self.d_state)
        A = -torch.exp(self.A_log.float())
        if self.shared:
            y = sf.selective_scan(xs, delta, A, B, C, self.D.float(), z, self.dt_proj.bias.float(), True,
                                  direction="bidirectional", backend=self.backend)
        else:
            y_f = sf.selective_scan(xs, delta, A, B, C, self.D.float(), z, self.dt_proj.bias.float(), True,
                                    backend=self.backend)
            xb = F.silu(causal_conv(self.conv1d_b, raw.flip(-1))).contiguous()
            delta_b, B_b, C_b = project_dt_bc(xb, self.x_proj_b, self.dt_proj_b, self.d_state)
            y_b = sf.selective_scan(xb, delta_b, -torch.exp(self.A_b_log.float()), B_b, C_b, self.D_b.float(),
                                    z.flip(-1), self.dt_proj_b.bias.float(), True, backend=self.backend)
            y = (y_f + y_b.flip(-1)) * 0.5
        return self.out_proj(y.transpose(1, 2))

    def step(self, x_t, cache):
        raise NotImplementedError("BiMamba reads the whole sequence in both directions: it has no decode step")
