"""Float64 PyTorch references: the definition of every op's semantics.

Every kernel of every backend is tested against these functions, and their autograd is the
definition of the gradients. They are written for clarity, not speed: plain loops over time,
everything in float64, results returned in float64.

Notation (per batch b, channel d, state n, step t)::

    dt_t  = softplus(delta_t + delta_bias)   if delta_softplus else   delta_t + delta_bias
    dA_t  = exp(dt_t * A[d, n])
    dBu_t = dt_t * B[n, t] * u_t
    h_t   = dA_t * h_{t-1} + dBu_t                  (causal)
    y_t   = sum_n C[n, t] * h_t + D * u_t ;  y_t *= silu(z_t) if z is given
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from .ir import Direction, GateMode, Summary, Weight

__all__ = ["selective_scan_ref", "selective_state_update_ref", "ssd_scan_ref", "topk_gather_ref"]


def _f64(t: torch.Tensor | None) -> torch.Tensor | None:
    return None if t is None else t.to(torch.float64)


def _per_channel(BC: torch.Tensor, dim: int) -> torch.Tensor:
    """(batch, N, L) -> (batch, 1, N, L); grouped (batch, G, N, L) -> (batch, dim, N, L)."""
    if BC.dim() == 3:
        return BC.unsqueeze(1)
    return BC.repeat_interleave(dim // BC.shape[1], dim=1)


def _keep(acc: torch.Tensor, reset: torch.Tensor) -> torch.Tensor:
    """``(1 - reset) * acc``, exactly zero where ``reset == 1``: a reset window starts empty even when it
    held an inf (``inf * 0`` would leave NaN in every later window). A soft gate's reset is differentiable:
    where it is exactly 1, d/dreset = -acc still flows (a finite acc; the value stays exactly zero)."""
    kept = torch.where(reset == 1, torch.zeros_like(acc), (1 - reset) * acc)
    if reset.requires_grad:
        finite = torch.where(torch.isfinite(acc), acc, torch.zeros_like(acc)).detach()
        kept = kept + torch.where(reset == 1, -(reset - reset.detach()) * finite, torch.zeros_like(acc))
    return kept


def _gated_mix(g_soft, gate_threshold, gate_mode, update, h):
    """The state after a gated step: ``g * update + (1 - g) * h``, but exactly ``h`` where g == 0 and exactly
    ``update`` where g == 1 (no ``0 * inf``: a held step does not read a window holding an inf). In "hard"
    mode g is the hard decision and the gradient is the straight-through estimator: d/dgate = update - h."""
    g = (g_soft > gate_threshold).to(torch.float64) if gate_mode is GateMode.HARD else g_soft
    g = g.unsqueeze(-1)
    mixed = torch.where(g == 1, update, torch.where(g == 0, h, g * update + (1 - g) * h))
    if g_soft.requires_grad:  # where g is exactly 0 or 1, d/dgate = update - h comes from this term
        diff = (update - h).detach()
        diff = torch.where(torch.isfinite(diff), diff, torch.zeros_like(diff))
        edge = (g == 0) | (g == 1)
        mixed = mixed + torch.where(edge, (g_soft - g_soft.detach()).unsqueeze(-1) * diff, torch.zeros_like(diff))
    return mixed


def _scan_one_way(u, dt, A, B, C, gate, gate_threshold, gate_mode, stride, h0):
    """Causal scan core (no D, no z) with strided / gated pooling. Returns (y_core, h_last).

    A step t "fires" (updates the state) when: stride=1 and no gate — always; stride=k — at the
    last step of each window of k steps, and at t = L-1; gated — where gate_t > gate_threshold.
    A firing step applies the update pooled over the window since the previous firing:
    ``h <- exp(sum(dt) * A) * h + sum(dt) * mean(B) * mean(u)``; other steps hold h.
    With a gate the state is mixed, ``h <- g * update + (1 - g) * h``, and the pooled window is
    reset with ``acc <- (1 - g) * acc``: in "hard" mode g is the hard decision in the forward pass
    and the straight-through estimator ``hard + gate - gate.detach()`` for the mix in the
    backward (the reset stays hard); in "soft" mode g is the gate itself in both. A soft gate
    that is exactly 0 or 1 therefore gives the hard result.
    Non-finite values follow IEEE arithmetic of this recurrence: a held step leaves h untouched and
    a reset window starts from zeros (never ``0 * inf``), so an inf reaches the state only when its
    window fires, and a window after it starts clean.
    """
    batch, dim, L = u.shape
    h = torch.zeros(batch, dim, A.shape[1], dtype=torch.float64, device=u.device) if h0 is None else h0
    acc_dt = torch.zeros(batch, dim, dtype=torch.float64, device=u.device)
    acc_u = torch.zeros_like(acc_dt)
    acc_B = torch.zeros(batch, B.shape[1], A.shape[1], dtype=torch.float64, device=u.device)
    count = torch.zeros(batch, 1, dtype=torch.float64, device=u.device)
    ys = []
    for t in range(L):
        acc_dt = acc_dt + dt[:, :, t]
        acc_u = acc_u + u[:, :, t]
        acc_B = acc_B + B[..., t]
        count = count + 1
        mean_u = acc_u / count
        mean_B = acc_B / count.unsqueeze(-1)
        update = torch.exp(acc_dt.unsqueeze(-1) * A) * h + (acc_dt * mean_u).unsqueeze(-1) * mean_B
        if gate is None:
            fire = (t + 1) % stride == 0 or t == L - 1
            if fire:
                h = update
                acc_dt, acc_u, acc_B, count = (torch.zeros_like(a) for a in (acc_dt, acc_u, acc_B, count))
        else:
            g_soft = gate[:, t : t + 1]
            h = _gated_mix(g_soft, gate_threshold, gate_mode, update, h)
            g_reset = (g_soft > gate_threshold).to(torch.float64) if gate_mode is GateMode.HARD else g_soft
            acc_dt, acc_u, count = (_keep(a, g_reset) for a in (acc_dt, acc_u, count))
            acc_B = _keep(acc_B, g_reset.unsqueeze(-1))
        ys.append((C[..., t] * h).sum(-1))
    return torch.stack(ys, dim=-1), h


def selective_scan_ref(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False, *,
                       direction="causal", stride=1, gate=None, gate_threshold=0.5, gate_mode="hard",
                       initial_state=None, return_last_state=False, cu_seqlens=None):
    """Selective scan, computed in float64. Returns ``y`` or ``(y, h_last)``, both float64.

    Shapes: ``u, delta, z: (batch, dim, L)``; ``A: (dim, N)``; ``B, C: (batch, N, L)`` or grouped
    ``(batch, G, N, L)``; ``D, delta_bias: (dim,)``; ``gate: (batch, L)``;
    ``initial_state, h_last: (batch, dim, N)``.

    direction:
      * ``"causal"``: the recurrence of the module docstring, t = 0 .. L-1.
      * ``"reverse"``: the same with time flipped (t = L-1 .. 0); strided windows are cut from the
        end, and ``initial_state`` is the state before step L-1.
      * ``"bidirectional"``: ``causal + reverse - D*u`` (the skip term counted once); the z gate
        multiplies the sum.
    stride=k > 1 (strided slow channel): windows of k steps; one state update per window, at its
    last step, with ``dt_w = sum(dt)``, ``mean(B)``, ``mean(u)``; the state is held in between and
    ``y_t`` reads the latest state. gate (adaptive): see :func:`_scan_one_way`.
    cu_seqlens ``(num_seqs + 1,)``: batch 1 holds sequences packed along L, the i-th spanning
    ``cu_seqlens[i]:cu_seqlens[i+1]``; each is scanned on its own (states reset at boundaries).
    """
    if cu_seqlens is not None:
        bounds = [int(b) for b in cu_seqlens]
        seq = lambda t, a, b: t[..., a:b] if t is not None and t.dim() >= 3 else t  # noqa: E731
        parts = [selective_scan_ref(seq(u, a, b), seq(delta, a, b), A, seq(B, a, b), seq(C, a, b), D, seq(z, a, b),
                                    delta_bias, delta_softplus, direction=direction)
                 for a, b in zip(bounds[:-1], bounds[1:])]
        return torch.cat(parts, dim=-1)
    direction, gate_mode = Direction(direction), GateMode(gate_mode)
    u64, A64, D64, z64 = _f64(u), _f64(A), _f64(D), _f64(z)
    dt = _f64(delta) if delta_bias is None else _f64(delta) + _f64(delta_bias)[:, None]
    if delta_softplus:
        dt = F.softplus(dt)
    Bc, Cc = _per_channel(_f64(B), u.shape[1]), _per_channel(_f64(C), u.shape[1])
    gate64, h0 = _f64(gate), _f64(initial_state)

    def one_way(reverse: bool):
        flip = (lambda t: None if t is None else t.flip(-1)) if reverse else (lambda t: t)
        y, h = _scan_one_way(flip(u64), flip(dt), A64, flip(Bc), flip(Cc), flip(gate64), gate_threshold,
                             gate_mode, stride, h0)
        return flip(y), h

    if direction is Direction.BIDIRECTIONAL:
        y = one_way(False)[0] + one_way(True)[0]
        h_last = None
    else:
        y, h_last = one_way(direction is Direction.REVERSE)
    if D64 is not None:
        y = y + D64[:, None] * u64
    if z64 is not None:
        y = y * F.silu(z64)
    return (y, h_last) if return_last_state else y


def ssd_scan_ref(x, dt, A, B, C, D=None, z=None, dt_bias=None, dt_softplus=False, *, dt_limit=(0.0, math.inf),
                 direction="causal", initial_state=None, return_last_state=False, cu_seqlens=None):
    """Mamba-2's scan (one scalar decay per head), as its plain recurrence in float64. Returns ``y`` or ``(y, h_last)``.

    Shapes: ``x, z: (batch, nheads * headdim, L)``; ``dt: (batch, nheads, L)``; ``A, dt_bias: (nheads,)``;
    ``B, C: (batch, ngroups, N, L)`` (or ``(batch, N, L)``: one group), the heads of group g being
    ``g * nheads / ngroups ...``; ``D: (nheads,)`` or ``(nheads * headdim,)``;
    ``initial_state, h_last: (batch, nheads, headdim, N)``. Per head h and step t (direction, cu_seqlens and the
    bidirectional sum as in :func:`selective_scan_ref`)::

        dt_t = clamp(softplus(dt_t + dt_bias) if dt_softplus else dt_t + dt_bias, *dt_limit)
        S_t  = exp(dt_t * A[h]) * S_{t-1} + dt_t * x_t (outer) B_t        (S: headdim x N)
        y_t  = S_t @ C_t + D * x_t ;  y_t *= silu(z_t) if z is given
    """
    if cu_seqlens is not None:
        bounds = [int(b) for b in cu_seqlens]
        seq = lambda t, a, b: t[..., a:b] if t is not None and t.dim() >= 3 else t  # noqa: E731
        return torch.cat([ssd_scan_ref(seq(x, a, b), seq(dt, a, b), A, seq(B, a, b), seq(C, a, b), D, seq(z, a, b),
                                       dt_bias, dt_softplus, dt_limit=dt_limit, direction=direction)
                          for a, b in zip(bounds[:-1], bounds[1:])], dim=-1)
    direction = Direction(direction)
    (batch, dim, L), heads = x.shape, A.shape[0]
    xh = _f64(x).reshape(batch, heads, dim // heads, L)
    step = _f64(dt) if dt_bias is None else _f64(dt) + _f64(dt_bias)[:, None]
    step = (F.softplus(step) if dt_softplus else step).clamp(*dt_limit)
    Bh, Ch = (_per_channel(_f64(t), heads) for t in (B, C))  # (batch, nheads, N, L)
    h0 = _f64(initial_state)

    def one_way(reverse: bool):
        S = torch.zeros(batch, heads, dim // heads, Bh.shape[2], dtype=torch.float64, device=x.device) \
            if h0 is None else h0
        ys = [None] * L
        for t in (range(L - 1, -1, -1) if reverse else range(L)):
            decay = torch.exp(step[:, :, t] * _f64(A))[:, :, None, None]
            S = decay * S + (step[:, :, t, None] * xh[..., t])[..., None] * Bh[:, :, None, :, t]
            ys[t] = (S * Ch[:, :, None, :, t]).sum(-1)
        return torch.stack(ys, dim=-1).reshape(batch, dim, L), S

    if direction is Direction.BIDIRECTIONAL:
        y, h_last = one_way(False)[0] + one_way(True)[0], None
    else:
        y, h_last = one_way(direction is Direction.REVERSE)
    if D is not None:
        D64 = _f64(D).repeat_interleave(dim // D.shape[0])
        y = y + D64[:, None] * _f64(x)
    if z is not None:
        y = y * F.silu(_f64(z))
    return (y, h_last) if return_last_state else y


def selective_state_update_ref(state, x, dt, A, B, C, D=None, z=None, dt_bias=None, dt_softplus=False, *,
                               stride=1, gate=None, gate_threshold=0.5, gate_mode="hard", window=None):
    """One decode step: mamba-ssm's ``selective_state_update``, in float64 and functional.

    Shapes: ``state: (batch, dim, N)``; ``x, dt, z: (batch, dim)``; ``A: (dim, N)``;
    ``B, C: (batch, N)`` or grouped ``(batch, G, N)``; ``D, dt_bias: (dim,)``; ``gate: (batch,)``.
    Plain step: ``new_state = exp(dt*A) * state + dt * B * x``; ``out = (sum_n C * new_state + D*x) * silu(z)``.

    Strided (stride=k) and gated steps continue the open window ``window = (acc_dt, acc_u, acc_B,
    count)`` (shapes ``(batch, dim)``, ``(batch, dim)``, ``(batch, G or 1, N)``, ``(batch,)``), exactly
    as :func:`selective_scan_ref` pools it: the step fires when the window holds k steps (strided) or
    ``gate > gate_threshold`` (gated; ``"soft"`` mixes with the gate itself). Decoding token by token
    equals the full scan, except that a full strided scan also updates at its last step (a window
    cut short by the end of the sequence), which a decoder cannot know about.
    Returns ``(out, new_state, new_window)`` (``new_window`` is None for a plain step).
    """
    x64, A64, h = _f64(x), _f64(A), _f64(state)
    dt64 = _f64(dt) if dt_bias is None else _f64(dt) + _f64(dt_bias)
    if dt_softplus:
        dt64 = F.softplus(dt64)
    B64 = _f64(B) if B.dim() == 3 else _f64(B).unsqueeze(1)
    Bc = B64.repeat_interleave(x.shape[1] // B64.shape[1], dim=1)
    C64 = _f64(C) if C.dim() == 3 else _f64(C).unsqueeze(1)
    Cc = C64.repeat_interleave(x.shape[1] // C64.shape[1], dim=1)
    new_window = None
    if window is None:
        h = torch.exp(dt64.unsqueeze(-1) * A64) * h + (dt64 * x64).unsqueeze(-1) * Bc
    else:
        acc_dt, acc_u, acc_B, count = (_f64(t) for t in window)
        acc_dt, acc_u, acc_B, count = acc_dt + dt64, acc_u + x64, acc_B + B64, count + 1
        mean_B = (acc_B / count[:, None, None]).repeat_interleave(x.shape[1] // acc_B.shape[1], dim=1)
        update = (torch.exp(acc_dt.unsqueeze(-1) * A64) * h
                  + (acc_dt * acc_u / count[:, None]).unsqueeze(-1) * mean_B)
        if gate is None:
            reset = (count >= stride).to(torch.float64)
            h = torch.where(reset[:, None, None] == 1, update, h)
        else:
            g64 = _f64(gate)
            h = _gated_mix(g64[:, None], gate_threshold, GateMode(gate_mode), update, h)
            reset = (g64 > gate_threshold).to(torch.float64) if GateMode(gate_mode) is GateMode.HARD else g64
        new_window = (_keep(acc_dt, reset[:, None]), _keep(acc_u, reset[:, None]), _keep(acc_B, reset[:, None, None]),
                      _keep(count, reset))
    out = (Cc * h).sum(-1)
    if D is not None:
        out = out + _f64(D) * x64
    if z is not None:
        out = out * F.silu(_f64(z))
    return out, h, new_window


def _ranking(s: torch.Tensor) -> torch.Tensor:
    """Token indices from first to last rank: score descending, ties to the lower index, NaN last."""
    nan = torch.isnan(s)
    by_score = torch.sort(torch.where(nan, float("-inf"), s), dim=1, descending=True, stable=True).indices
    last = torch.sort(nan.gather(1, by_score).to(torch.uint8), dim=1, stable=True).indices  # NaNs after numbers
    return by_score.gather(1, last)


def topk_gather_ref(x, k, scores=None, *, keep_order=True, summary=None, weight=None):
    """Keep the k highest-scoring tokens of ``x: (batch, T, d)``, in float64.

    ``scores: (batch, T)``, or None for the L2 norm of each token. Ties: the lower index wins. NaN: a NaN
    score (a token holding a NaN, for the norm) ranks below every number, -inf included; NaNs among
    themselves by index (the same rule on every backend).
    ``keep_order=True`` returns the kept tokens in their original order, else by rank.
    ``summary="mean"`` appends the mean of all T tokens; ``"mean_dropped"`` the mean of the T-k
    dropped tokens (zeros when k == T). ``weight="sigmoid"`` multiplies each kept token by
    ``sigmoid(score)`` (the summary token is not weighted). The selection itself carries no
    gradient. Returns ``(out, idx)``: ``out: (batch, k [+1], d)`` float64, ``idx: (batch, k)`` int64.
    """
    summary = Summary.NONE if summary is None else Summary(summary)
    weight = Weight.NONE if weight is None else Weight(weight)
    x64 = _f64(x)
    s = x64.norm(dim=-1) if scores is None else _f64(scores)
    ranked = _ranking(s.detach())[:, :k]
    idx = torch.sort(ranked, dim=1).values if keep_order else ranked
    out = x64.gather(1, idx.unsqueeze(-1).expand(-1, -1, x.shape[-1]))
    if weight is Weight.SIGMOID:
        out = out * torch.sigmoid(s.gather(1, idx)).unsqueeze(-1)
    if summary is Summary.MEAN:
        out = torch.cat([out, x64.mean(dim=1, keepdim=True)], dim=1)
    elif summary is Summary.MEAN_DROPPED:
        kept = torch.zeros_like(s).scatter(1, idx, 1.0)
        dropped = (x64 * (1 - kept).unsqueeze(-1)).sum(dim=1, keepdim=True)
        out = torch.cat([out, dropped / max(x.shape[1] - k, 1)], dim=1)
    return out, idx
