"""MS-Mamba: a fast channel (the Mamba scan, every step) and a slow channel (a strided scan that updates
its state once per window of ``stride`` steps) whose dt, B, C are read from the fast channel's output."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

import scanforge as sf

from .mamba import Mamba, check_sequence
from .ssm import a_log_init, check_positive, init_dt_proj, project_dt_bc

__all__ = ["MSMamba", "MSMambaCache"]


@dataclass
class MSMambaCache:
    """Decode state: the fast block's conv/SSM states, the slow SSM state and its open window, and the
    fast channel's last output (the adaptive gate reads it)."""

    conv_state: Tensor  # (batch, d_inner, d_conv)
    ssm_state: Tensor  # (batch, d_inner, d_state)
    slow_state: Tensor  # (batch, slow_channels, slow_d_state)
    window: sf.DecodeWindow
    prev_fast: Tensor  # (batch, d_inner)


class MSMamba(Mamba):
    """Multi-scale Mamba block.

    The fast channel is :class:`Mamba`'s scan (same parameter names). The slow channel scans the first
    ``slow_channels`` channels of the same conv'd input with ``stride`` (one state update per window),
    and is coupled top-down: its ``dt_s, B_s, C_s`` are projected from the fast channel's output, so its
    effective ``exp(dt_s A_s)`` and ``B_s`` depend on the fast state. The read-outs are fused by a learned
    projection: ``fuse="proj"`` (default) adds ``out_proj_s(y_s)`` to ``out_proj(y_f)``; ``fuse="linear"``
    mixes ``Linear(d_inner + slow_channels, d_inner)([y_f, y_s])`` before ``out_proj``.

    ``slow_channels`` (default ``d_inner // 4``) and ``slow_d_state`` (default ``d_state``) size the slow
    channel: its scan costs about ``slow_channels / d_inner`` of the fast one, since on CPU a scan's time
    follows its channels far more than its state size or update rate. ``slow_updates(L)`` is the number of
    slow state updates a sequence of length L costs (``ceil(L / stride)``).
    """

    def __init__(self, d_model: int, d_state: int = 16, d_conv: int = 4, expand: int = 2, *, stride: int = 8,
                 slow_channels: int | None = None, slow_d_state: int | None = None, fuse: str = "proj",
                 dt_min: float = 1e-3, dt_max: float = 0.1, dt_init_floor: float = 1e-4, backend: str | None = None,
                 **kwargs) -> None:
        super().__init__(d_model, d_state, d_conv, expand, dt_min=dt_min, dt_max=dt_max, dt_init_floor=dt_init_floor,
                         backend=backend, **kwargs)
        if isinstance(stride, bool) or not isinstance(stride, int) or stride < 1:
            raise ValueError(f"stride: expected a positive int, got {stride!r}")
        if fuse not in ("proj", "linear"):
            raise ValueError(f"fuse: expected 'proj' or 'linear', got {fuse!r}")
        self.stride, self.fuse = stride, fuse
        self.slow_channels = max(1, self.d_inner // 4) if slow_channels is None else slow_channels
        self.slow_d_state = d_state if slow_d_state is None else slow_d_state
        check_positive(slow_channels=self.slow_channels, slow_d_state=self.slow_d_state)
        if self.slow_channels > self.d_inner:
            raise ValueError(f"slow_channels: expected at most d_inner={self.d_inner}, got {self.slow_channels}")
        ds = self.slow_channels
        self.x_proj_s = nn.Linear(self.d_inner, self.dt_rank + 2 * self.slow_d_state, bias=False)
        self.dt_proj_s = nn.Linear(self.dt_rank, ds, bias=True)
        init_dt_proj(self.dt_proj_s, dt_min, dt_max, dt_init_floor)
        self.A_s_log = a_log_init(ds, self.slow_d_state)
        self.D_s = nn.Parameter(torch.ones(ds))
        self.D_s._no_weight_decay = True
        if fuse == "proj":
            self.out_proj_s = nn.Linear(ds, d_model, bias=False)
        else:
            self.fuse_proj = nn.Linear(self.d_inner + ds, self.d_inner, bias=False)
            with torch.no_grad():  # start as the fast read-out plus a little of the slow one
                self.fuse_proj.weight.zero_()
                self.fuse_proj.weight[:, : self.d_inner].copy_(torch.eye(self.d_inner))
                self.fuse_proj.weight[:ds, self.d_inner :].copy_(0.5 * torch.eye(ds))

    def slow_updates(self, L: int) -> int:
        """Slow state updates per sequence of length L (the strided scan also updates at the last step)."""
        return math.ceil(L / self.stride)

    def _out(self, y_f: Tensor, y_s: Tensor, dim: int) -> Tensor:
        """Fuse the read-outs (channels on ``dim``) and project to ``(..., d_model)``."""
        if self.fuse == "proj":
            return self.out_proj(y_f.movedim(dim, -1)) + self.out_proj_s(y_s.movedim(dim, -1))
        return self.out_proj(self.fuse_proj(torch.cat([y_f, y_s], dim=dim).movedim(dim, -1)))

    def _fast(self, xs: Tensor, z: Tensor) -> Tensor:
        delta, B, C = project_dt_bc(xs, self.x_proj, self.dt_proj, self.d_state)
        return sf.selective_scan(xs, delta, -torch.exp(self.A_log.float()), B, C, self.D.float(), z,
                                 self.dt_proj.bias.float(), True, backend=self.backend)

    def _slow(self, xs: Tensor, z: Tensor, y_f: Tensor, gate: Tensor | None = None) -> Tensor:
        delta, B, C = project_dt_bc(y_f, self.x_proj_s, self.dt_proj_s, self.slow_d_state)
        options = dict(stride=self.stride) if gate is None else dict(gate=gate, gate_mode="hard")
        ds = self.slow_channels
        xs, z = xs[:, :ds].contiguous(), z[:, :ds].contiguous()
        return sf.selective_scan(xs, delta, -torch.exp(self.A_s_log.float()), B, C, self.D_s.float(), z,
                                 self.dt_proj_s.bias.float(), True, backend=self.backend, **options)

    def forward(self, x: Tensor) -> Tensor:
        """``x: (batch, L, d_model)`` -> ``(batch, L, d_model)``."""
        check_sequence(x, self.d_model)
        xs, z = self._in(x)
        y_f = self._fast(xs, z)
        y_s = self._slow(xs, z, y_f)
        return self._out(y_f, y_s, 1)

    def allocate_cache(self, batch: int, device=None, dtype: torch.dtype | None = None) -> MSMambaCache:
        base = super().allocate_cache(batch, device, dtype)
        f32 = dict(device=base.ssm_state.device, dtype=torch.float32)
        slow = torch.zeros(batch, self.slow_channels, self.slow_d_state, **f32)
        return MSMambaCache(base.conv_state, base.ssm_state, slow,
                            sf.DecodeWindow.zeros(batch, self.slow_channels, self.slow_d_state, device=f32["device"]),
                            torch.zeros(batch, self.d_inner, dtype=base.conv_state.dtype, device=f32["device"]))

    def _step_fast(self, x_t: Tensor, cache: MSMambaCache) -> tuple[Tensor, Tensor, Tensor]:
        xs, z = self._step_in(x_t, cache)
        dt, B, C = self._step_dt_bc(xs)
        y_f = sf.selective_state_update(cache.ssm_state, xs, dt, -torch.exp(self.A_log.float()), B, C,
                                        self.D.float(), z, self.dt_proj.bias.float(), True, backend=self.backend)
        return xs, z, y_f

    def _step_slow(self, xs: Tensor, z: Tensor, y_f: Tensor, cache: MSMambaCache, gate: Tensor | None = None):
        dt, B, C = torch.split(self.x_proj_s(y_f), [self.dt_rank, self.slow_d_state, self.slow_d_state], dim=-1)
        options = dict(stride=self.stride) if gate is None else dict(gate=gate, gate_mode="hard")
        ds = self.slow_channels
        return sf.selective_state_update(cache.slow_state, xs[:, :ds], F.linear(dt, self.dt_proj_s.weight),
                                         -torch.exp(self.A_s_log.float()), B, C, self.D_s.float(), z[:, :ds],
                                         self.dt_proj_s.bias.float(), True, window=cache.window,
                                         backend=self.backend, **options)

    def step(self, x_t: Tensor, cache: MSMambaCache) -> Tensor:
        """Decode one token; equals :meth:`forward` token by token (for a forward whose length is a multiple
        of ``stride``: a full strided scan also updates at its very last step)."""
        xs, z, y_f = self._step_fast(x_t, cache)
        y_s = self._step_slow(xs, z, y_f, cache)
        cache.prev_fast.copy_(y_f)
        return self._out(y_f, y_s, -1)
