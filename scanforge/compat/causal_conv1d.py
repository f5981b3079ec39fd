"""causal-conv1d's ``causal_conv1d_fn`` / ``causal_conv1d_update`` with its signatures, on PyTorch.

The convolution is a depthwise ``F.conv1d`` (``groups=dim``, left padding ``width - 1``) followed by
``F.silu``; gradients are PyTorch's. Why PyTorch and not a generated kernel family, measured by
``python benchmarks/causal_conv1d.py`` (``benchmarks/results/causal_conv1d.json``; x (2, 1536, 2048) float32,
width 4, one thread of a shared 2-core AMD EPYC at load average ~6, so +-2x between runs): the forward takes
70 ms, 44x a copy of the same bytes (1.6 ms, the memory floor); a per-tap loop of PyTorch ops 38 ms; a
hand-written serial Numba loop plus PyTorch's silu 24 ms (silu alone: 6.7 ms). So on this CPU PyTorch's
depthwise convolution is far from the floor and a generated kernel would be about 3x faster forward; the
backward goes the other way (F.conv1d's 125 ms against the per-tap loop's 249 ms) and the decode step is
0.2 ms. PyTorch is kept because it gives, with no new kernel family (templates per backend, a tuning space,
conformance rows), the backward, half dtypes, ``seq_idx``, CUDA (cuDNN's depthwise kernels) and
``torch.compile``; a generated convolution (fused into the scan's input pass, where its bytes are read anyway)
is the follow-up these numbers justify, not a change of this API.

Semantics are causal-conv1d's: ``out[t] = act(bias + sum_k weight[:, k] * x[t - width + 1 + k])`` with x
zero before t = 0 (or ``initial_states``); half inputs are computed in float32 and the result cast back to
x's dtype (as the CUDA kernel does); ``seq_idx`` keeps each token's taps inside its own sequence and zeroes
tokens whose ``seq_idx`` is negative (padding). ``causal_conv1d_update`` shifts ``conv_state`` in place, or,
with ``cache_seqlens``, treats it as a circular buffer written at ``cache_seqlens % state_len`` (the caller
advances ``cache_seqlens``); ``conv_state_indices`` picks the rows of a larger ``conv_state``, a negative
index marking a padding row (output zero, no state touched).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["causal_conv1d_fn", "causal_conv1d_ref", "causal_conv1d_update", "causal_conv1d_update_ref"]

_WHERE = "scanforge.compat.causal_conv1d"
_ACTIVATIONS = (None, "silu", "swish")


def _silu(activation) -> bool:
    if activation not in _ACTIVATIONS:
        raise NotImplementedError(f"activation={activation!r} is not supported by {_WHERE}; "
                                  f"supported: None, 'silu', 'swish' (as causal-conv1d)")
    return activation is not None


def _compute_dtype(x: Tensor, weight: Tensor) -> torch.dtype:
    """float32 for half inputs (the CUDA kernel's arithmetic), else the wider of x and weight."""
    return torch.promote_types(torch.promote_types(x.dtype, weight.dtype), torch.float32)


def _check(x: Tensor, weight: Tensor, bias) -> tuple[int, int]:
    if x.dim() != 3:
        raise ValueError(f"x: expected (batch, dim, seqlen), got shape {tuple(x.shape)}")
    dim = x.shape[1]
    if weight.dim() != 2 or weight.shape[0] != dim:
        raise ValueError(f"weight: expected (dim, width) = ({dim}, width), got shape {tuple(weight.shape)}")
    if bias is not None and tuple(bias.shape) != (dim,):
        raise ValueError(f"bias: expected shape ({dim},), got {tuple(bias.shape)}")
    return dim, weight.shape[1]


def causal_conv1d_fn(x, weight, bias=None, seq_idx=None, initial_states=None, return_final_states=False,
                     final_states_out=None, activation=None):
    """Causal depthwise convolution along the sequence.

    Shapes: ``x (batch, dim, seqlen)``, ``weight (dim, width)``, ``bias (dim,)``, ``seq_idx (batch, seqlen)``
    int, ``initial_states`` and ``final_states_out (batch, dim, width - 1)``. Returns ``out (batch, dim,
    seqlen)`` in x's dtype, or ``(out, final_states)`` with ``return_final_states`` (the last ``width - 1``
    inputs, zero-padded on the left; written into ``final_states_out`` when given).
    """
    silu = _silu(activation)
    dim, width = _check(x, weight, bias)
    if seq_idx is not None and (initial_states is not None or return_final_states):
        raise NotImplementedError("seq_idx: not supported together with initial_states or return_final_states "
                                  "(as in causal-conv1d)")
    dtype = _compute_dtype(x, weight)
    xc, w = x.to(dtype), weight.to(dtype)
    b = None if bias is None else bias.to(dtype)
    seqlen = x.shape[-1]
    if seq_idx is not None:
        out = _conv_by_sequence(xc, w, b, seq_idx)
    elif initial_states is None:
        out = F.conv1d(xc, w.unsqueeze(1), b, padding=width - 1, groups=dim)[..., :seqlen]
    else:
        xc = torch.cat([initial_states.to(dtype), xc], dim=-1)
        out = F.conv1d(xc, w.unsqueeze(1), b, groups=dim)
    out = (F.silu(out) if silu else out).to(x.dtype)
    if not return_final_states:
        return out
    final = F.pad(xc, (width - 1 - xc.shape[-1], 0)).to(x.dtype)
    if final_states_out is not None:
        final_states_out.copy_(final)
        final = final_states_out
    return out, final


def _conv_by_sequence(x: Tensor, w: Tensor, b, seq_idx: Tensor) -> Tensor:
    """The convolution with each tap kept inside its token's sequence; tokens with seq_idx < 0 give zero."""
    width, seqlen = w.shape[1], x.shape[-1]
    if tuple(seq_idx.shape) != (x.shape[0], seqlen):
        raise ValueError(f"seq_idx: expected shape {(x.shape[0], seqlen)}, got {tuple(seq_idx.shape)}")
    padded = F.pad(x, (width - 1, 0))
    ids = F.pad(seq_idx.long(), (width - 1, 0), value=-1)
    out = x.new_zeros(x.shape) if b is None else b[:, None].expand_as(x).clone()
    for k in range(width):  # tap k reads position t - (width - 1 - k)
        same = (ids[:, k:k + seqlen] == seq_idx.long())[:, None, :]
        out = out + torch.where(same, w[:, k, None] * padded[..., k:k + seqlen], 0)
    return torch.where((seq_idx >= 0)[:, None, :], out, 0)


def causal_conv1d_update(x, conv_state, weight, bias=None, activation=None, cache_seqlens=None,
                         conv_state_indices=None):
    """One (or a few) decode steps of the convolution; ``conv_state`` is updated in place.

    Shapes: ``x (batch, dim)`` or ``(batch, dim, seqlen)``; ``conv_state (batch', dim, state_len)`` with
    ``state_len >= width - 1`` (batch' = batch, or any size with ``conv_state_indices (batch,)``);
    ``cache_seqlens (batch,)`` int: conv_state is a circular buffer written at ``cache_seqlens % state_len``.
    Returns ``out`` shaped like x, in x's dtype.
    """
    silu = _silu(activation)
    squeeze = x.dim() == 2
    x3 = x.unsqueeze(-1) if squeeze else x
    dim, width = _check(x3, weight, bias)
    state_len = conv_state.shape[-1]
    if conv_state.dim() != 3 or conv_state.shape[1] != dim or state_len < width - 1:
        raise ValueError(f"conv_state: expected (batch, {dim}, state_len >= {width - 1}), "
                         f"got shape {tuple(conv_state.shape)}")
    batch = x3.shape[0]
    if conv_state_indices is None:
        if conv_state.shape[0] != batch:
            raise ValueError(f"conv_state: expected batch {batch} (that of x), got shape {tuple(conv_state.shape)}; "
                             "pass conv_state_indices to pick rows of a larger state")
        rows, valid = None, None
    else:
        if tuple(conv_state_indices.shape) != (batch,):
            raise ValueError(f"conv_state_indices: expected shape ({batch},), got {tuple(conv_state_indices.shape)}")
        valid = conv_state_indices >= 0
        rows = conv_state_indices.long().clamp(min=0)
    state = conv_state if rows is None else conv_state.index_select(0, rows)
    out, new_state = _update(x3, state, weight, bias, silu, cache_seqlens)
    if rows is None:
        conv_state.copy_(new_state)
    else:
        keep = valid.nonzero().squeeze(-1)
        conv_state.index_copy_(0, rows[keep], new_state[keep].to(conv_state.dtype))
        out = torch.where(valid[:, None, None], out, 0)
    return out.squeeze(-1) if squeeze else out


def _update(x: Tensor, state: Tensor, weight: Tensor, bias, silu: bool, cache_seqlens) -> tuple[Tensor, Tensor]:
    """(out, the new state) for one batch of rows: the window is the last ``width - 1`` inputs before each token."""
    dim, width = weight.shape
    seqlen, state_len = x.shape[-1], state.shape[-1]
    dtype = _compute_dtype(x, weight)
    if cache_seqlens is None:
        window = torch.cat([state[..., state_len - (width - 1):].to(dtype), x.to(dtype)], dim=-1)
        new_state = torch.cat([state, x.to(state.dtype)], dim=-1)[..., -state_len:]
    else:
        start = cache_seqlens.long()[:, None]
        read = torch.remainder(start + torch.arange(-(width - 1), 0, device=x.device), state_len)
        past = state.gather(2, read[:, None, :].expand(-1, dim, -1))
        window = torch.cat([past.to(dtype), x.to(dtype)], dim=-1)
        write = torch.remainder(start + torch.arange(seqlen, device=x.device), state_len)
        new_state = state.scatter(2, write[:, None, :].expand(-1, dim, -1), x.to(state.dtype))
    b = None if bias is None else bias.to(dtype)
    out = F.conv1d(window, weight.to(dtype).unsqueeze(1), b, groups=dim)[..., -seqlen:]
    return (F.silu(out) if silu else out).to(x.dtype), new_state


def causal_conv1d_ref(x, weight, bias=None, initial_states=None, return_final_states=False, final_states_out=None,
                      activation=None):
    """causal-conv1d's ``causal_conv1d_ref``: the plain per-tap definition, computed in float64."""
    silu = _silu(activation)
    dim, width = _check(x, weight, bias)
    seqlen = x.shape[-1]
    xd = x.double() if initial_states is None else torch.cat([initial_states.double(), x.double()], dim=-1)
    padded = F.pad(xd, (width - 1 - (xd.shape[-1] - seqlen), 0))
    out = torch.zeros(x.shape, dtype=torch.float64, device=x.device)
    for k in range(width):
        out = out + weight.double()[:, k, None] * padded[..., k:k + seqlen]
    if bias is not None:
        out = out + bias.double()[:, None]
    out = (F.silu(out) if silu else out).to(x.dtype)
    if not return_final_states:
        return out
    final = F.pad(xd, (width - 1 - xd.shape[-1], 0)).to(x.dtype)
    if final_states_out is not None:
        final_states_out.copy_(final)
        final = final_states_out
    return out, final


def causal_conv1d_update_ref(x, conv_state, weight, bias=None, activation=None, cache_seqlens=None):
    """causal-conv1d's ``causal_conv1d_update_ref``: concatenate, convolve per tap in float64, keep the tail."""
    silu = _silu(activation)
    squeeze = x.dim() == 2
    x3 = x.unsqueeze(-1) if squeeze else x
    dim, width = _check(x3, weight, bias)
    seqlen, state_len = x3.shape[-1], conv_state.shape[-1]
    if cache_seqlens is None:
        full = torch.cat([conv_state.double(), x3.double()], dim=-1)
        conv_state.copy_(full[..., -state_len:])
    else:
        start = cache_seqlens.long()[:, None]
        read = torch.remainder(start + torch.arange(-(width - 1), 0, device=x.device), state_len)
        full = torch.cat([conv_state.gather(2, read[:, None, :].expand(-1, dim, -1)).double(), x3.double()], -1)
        write = torch.remainder(start + torch.arange(seqlen, device=x.device), state_len)
        conv_state.scatter_(2, write[:, None, :].expand(-1, dim, -1), x3.to(conv_state.dtype))
    out = torch.zeros(x3.shape, dtype=torch.float64, device=x.device)
    for k in range(width):
        out = out + weight.double()[:, k, None] * full[..., full.shape[-1] - seqlen - (width - 1) + k:][..., :seqlen]
    if bias is not None:
        out = out + bias.double()[:, None]
    out = (F.silu(out) if silu else out).to(x.dtype)
    return out.squeeze(-1) if squeeze else out
