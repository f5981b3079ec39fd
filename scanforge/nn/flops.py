"""Analytic FLOP counts (2 per multiply-add) of the layers the models use, from shapes alone, so that
token pruning and early exit can be compared without a profiler."""

from __future__ import annotations

__all__ = ["linear", "attention_block", "mamba_block", "scan", "scorer"]


def linear(tokens: int, d_in: int, d_out: int) -> int:
    return 2 * tokens * d_in * d_out


def attention_block(tokens: int, dim: int, mlp_hidden: int) -> int:
    """Pre-norm transformer block: qkv + output projections, QK^T and AV, the two MLP layers."""
    proj = linear(tokens, dim, 3 * dim) + linear(tokens, dim, dim)
    mix = 2 * 2 * tokens * tokens * dim
    return proj + mix + linear(tokens, dim, mlp_hidden) + linear(tokens, mlp_hidden, dim)


def scan(tokens: int, d_inner: int, d_state: int, updates: int | None = None) -> int:
    """Selective scan: ~3 FLOPs per (token, channel, state) for the state update (exp, multiply, add) — at
    ``updates`` steps only, for strided/gated scans — plus 2 for the read-out at every token."""
    updates = tokens if updates is None else updates
    return 3 * updates * d_inner * d_state + 2 * tokens * d_inner * d_state


def mamba_block(tokens: int, d_model: int, d_inner: int, d_state: int, d_conv: int, dt_rank: int) -> int:
    return (linear(tokens, d_model, 2 * d_inner) + 2 * tokens * d_inner * d_conv
            + linear(tokens, d_inner, dt_rank + 2 * d_state) + linear(tokens, dt_rank, d_inner)
            + scan(tokens, d_inner, d_state) + linear(tokens, d_inner, d_model))


def scorer(tokens: int, d_model: int, hidden: int) -> int:
    return linear(tokens, d_model, hidden) + linear(tokens, hidden, 1)
