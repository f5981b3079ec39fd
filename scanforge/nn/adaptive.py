"""AC-Mamba: an MS-Mamba whose slow channel updates where a learned gate fires, instead of every k steps,
so that compute follows the content; a penalty on the gate trades accuracy for updates."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .mamba import check_sequence
from .multiscale import MSMamba, MSMambaCache

__all__ = ["ACMamba"]


class ACMamba(MSMamba):
    """Adaptive-compute Mamba block.

    ``gate_t = sigmoid(W [y^f_{t-1}, x_t] + b - tau)`` where ``y^f`` is the fast channel's output and
    ``x_t`` the conv'd input; the slow state updates where ``gate_t > 0.5`` (i.e. the logit exceeds the
    learnable threshold ``tau``), with the op's straight-through gradients (forward hard, backward soft),
    so ``W``, ``b`` and ``tau`` learn. ``compute_penalty()`` is ``penalty * mean(gate)`` of the last
    forward (add it to the loss to buy fewer updates); ``update_rate()`` the realised fraction of steps
    that updated. Other arguments as :class:`MSMamba` (``stride`` is unused).
    """

    def __init__(self, d_model: int, d_state: int = 16, d_conv: int = 4, expand: int = 2, *, penalty: float = 0.0,
                 tau_init: float = 0.0, backend: str | None = None, **kwargs) -> None:
        kwargs.setdefault("stride", 1)
        super().__init__(d_model, d_state, d_conv, expand, backend=backend, **kwargs)
        if not isinstance(penalty, (int, float)) or penalty < 0:
            raise ValueError(f"penalty: expected a number >= 0, got {penalty!r}")
        self.penalty = float(penalty)
        self.gate_proj = nn.Linear(2 * self.d_inner, 1)
        nn.init.normal_(self.gate_proj.weight, std=self.d_inner ** -0.5)
        nn.init.zeros_(self.gate_proj.bias)
        self.tau = nn.Parameter(torch.tensor(float(tau_init)))
        self._last_gate: Tensor | None = None

    def gate(self, y_f: Tensor, xs: Tensor) -> Tensor:
        """``y_f, xs: (batch, d_inner, L)`` -> soft gate ``(batch, L)`` from the previous fast output and
        the current input (each half of ``W`` projects its input to one logit per step, then the fast half
        is shifted by one step: no concatenated or shifted copy of the activations)."""
        w_y, w_x = self.gate_proj.weight[0].split(self.d_inner)
        logit_y = torch.einsum("d,bdl->bl", w_y, y_f)
        logit = F.pad(logit_y[:, :-1], (1, 0)) + torch.einsum("d,bdl->bl", w_x, xs) + self.gate_proj.bias
        return torch.sigmoid(logit - self.tau)

    def forward(self, x: Tensor) -> Tensor:
        check_sequence(x, self.d_model)
        xs, z = self._in(x)
        y_f = self._fast(xs, z)
        gate = self.gate(y_f, xs)
        self._last_gate = gate
        y_s = self._slow(xs, z, y_f, gate=gate)
        return self._out(y_f, y_s, 1)

    def compute_penalty(self) -> Tensor:
        """``penalty * mean(gate)`` of the last forward (differentiable); 0 before any forward."""
        if self._last_gate is None:
            return self.tau.new_zeros(())
        return self.penalty * self._last_gate.mean()

    def update_rate(self) -> float:
        """Fraction of steps whose slow state updated in the last forward."""
        if self._last_gate is None:
            raise RuntimeError("update_rate: no forward has run yet")
        return float((self._last_gate.detach() > 0.5).float().mean())

    def slow_updates(self, L: int | None = None) -> int:
        """Slow updates in the last forward, summed over the batch and divided by the batch size."""
        if self._last_gate is None:
            raise RuntimeError("slow_updates: no forward has run yet")
        return round(float((self._last_gate.detach() > 0.5).float().sum(-1).mean()))

    def step(self, x_t: Tensor, cache: MSMambaCache) -> Tensor:
        """Decode one token; equals :meth:`forward` token by token."""
        xs, z, y_f = self._step_fast(x_t, cache)
        logit = self.gate_proj(torch.cat([cache.prev_fast, xs], dim=-1)).squeeze(-1)
        gate = torch.sigmoid(logit - self.tau)
        y_s = self._step_slow(xs, z, y_f, cache, gate=gate)
        cache.prev_fast.copy_(y_f)
        return self._out(y_f, y_s, -1)
