"""mamba-ssm's ``mamba_inner_fn`` / ``mamba_inner_ref``: the Mamba block's fast path between its two projections.

``xz (batch, 2 * d_inner, L)`` is split into x and z; x goes through the causal depthwise convolution and silu;
``x_proj`` gives ``dt`` (rank ``delta_rank``), B and C (``d_state`` each, plus ``B_proj_bias`` / ``C_proj_bias``);
``dt = delta_proj_weight @ dt``; the selective scan (``D``, gate ``z``, ``delta_bias``, ``delta_softplus``) then
``out_proj``. Returns ``(batch, L, out_dim)``. Optional RMS norms of B, C (over ``d_state``) and dt (over
``d_inner``) with ``b_rms_weight``, ``c_rms_weight``, ``dt_rms_weight`` and ``b_c_dt_rms_eps``, as mamba-ssm.

mamba-ssm fuses this into one ``autograd.Function`` with a hand-written backward; here it is composed of
PyTorch ops, :func:`scanforge.compat.causal_conv1d.causal_conv1d_fn` and scanforge's selective scan op, and
autograd takes the gradients (every input, B/C/D/biases included).

Differences, each with its reason:
    * ``checkpoint_lvl``: 0 keeps every activation; 1 (the default) recomputes the convolution and the dt
      projection in the backward (``torch.utils.checkpoint``), like mamba-ssm. The scan op keeps its own inputs,
      so level 1 saves less memory than mamba-ssm's. Other values: ``NotImplementedError`` (mamba-ssm asserts).
    * complex ``A`` and constant (time-invariant) ``B``/``C`` of shape ``(d_inner, N)``: ``NotImplementedError``
      (scanforge's scan is real-valued and takes input-dependent B, C).
    * ``mamba_inner_ref`` honours ``delta_softplus`` (mamba-ssm's reference always applies softplus) and computes
      in float64 (causal-conv1d's and scanforge's references), cast back to xz's dtype.
    * autocast: mamba-ssm casts the projection weights to the autocast GPU dtype itself; here ``F.linear`` follows
      the autocast rules of the device it runs on.
    * ``delta_softplus`` may be ``None`` (False), ``checkpoint_lvl`` a bool, ``b_c_dt_rms_eps`` an int.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

from .args import flag, real, refuse
from .causal_conv1d import causal_conv1d_fn, causal_conv1d_ref
from .mamba_ssm import check_covered, selective_scan_fn, selective_scan_ref
from .norms import rms_norm_fn

__all__ = ["mamba_inner_fn", "mamba_inner_ref"]

_WHERE = "scanforge.compat.inner"


def _front(conv, xz, conv1d_weight, conv1d_bias, x_proj_weight, delta_proj_weight):
    """The convolution and the projections: ``(x (b, d, L), x_dbl (b, L, r + 2N), delta (b, d, L))``."""
    x = xz[:, : xz.shape[1] // 2]
    x = conv(x, conv1d_weight.reshape(conv1d_weight.shape[0], -1), conv1d_bias, activation="silu")
    x_dbl = F.linear(x.transpose(1, 2), x_proj_weight)
    delta = delta_proj_weight @ x_dbl[..., : delta_proj_weight.shape[1]].transpose(1, 2)
    return x, x_dbl, delta


def _rms(t, weight, eps):
    """RMS norm of t over its channel dimension (``-2`` for (b, N, L) / (b, d, L) tensors)."""
    if weight is None:
        return t
    return rms_norm_fn(t.transpose(-1, -2), weight, None, eps=eps).transpose(-1, -2).contiguous()


def _inner(conv, scan, checkpoint_lvl, xz, conv1d_weight, conv1d_bias, x_proj_weight, delta_proj_weight,
           out_proj_weight, out_proj_bias, A, B, C, D, delta_bias, B_proj_bias, C_proj_bias, delta_softplus,
           b_rms_weight=None, c_rms_weight=None, dt_rms_weight=None, eps=1e-6):
    check_covered(A, B, C)
    if xz.dim() != 3 or xz.shape[1] % 2:
        raise ValueError(f"xz: expected (batch, 2 * d_inner, L), got shape {tuple(xz.shape)}")
    front = (xz, conv1d_weight, conv1d_bias, x_proj_weight, delta_proj_weight)
    if checkpoint_lvl == 1 and torch.is_grad_enabled():
        x, x_dbl, delta = checkpoint(_front, conv, *front, use_reentrant=False)
    else:
        x, x_dbl, delta = _front(conv, *front)
    z = xz[:, xz.shape[1] // 2:]
    rank, d_state = delta_proj_weight.shape[1], A.shape[-1]
    if B is None:
        B = x_dbl[..., rank:rank + d_state]
        B = (B if B_proj_bias is None else B + B_proj_bias.to(B.dtype)).transpose(1, 2).contiguous()
    if C is None:
        C = x_dbl[..., x_dbl.shape[-1] - d_state:]
        C = (C if C_proj_bias is None else C + C_proj_bias.to(C.dtype)).transpose(1, 2).contiguous()
    B, C, delta = _rms(B, b_rms_weight, eps), _rms(C, c_rms_weight, eps), _rms(delta, dt_rms_weight, eps)
    y = scan(x, delta, A, B, C, D, z=z, delta_bias=delta_bias, delta_softplus=delta_softplus)
    return F.linear(y.transpose(1, 2), out_proj_weight, out_proj_bias)


def mamba_inner_fn(xz, conv1d_weight, conv1d_bias, x_proj_weight, delta_proj_weight, out_proj_weight, out_proj_bias,
                   A, B=None, C=None, D=None, delta_bias=None, B_proj_bias=None, C_proj_bias=None,
                   delta_softplus=True, checkpoint_lvl=1, b_rms_weight=None, c_rms_weight=None, dt_rms_weight=None,
                   b_c_dt_rms_eps=1e-6):
    """mamba-ssm's ``mamba_inner_fn``: convolution, projections, selective scan and output projection.

    Shapes: ``xz (batch, 2 * d_inner, L)``; ``conv1d_weight (d_inner, 1, width)``, ``conv1d_bias (d_inner,)``;
    ``x_proj_weight (delta_rank + 2 * d_state, d_inner)``; ``delta_proj_weight (d_inner, delta_rank)``;
    ``out_proj_weight (out_dim, d_inner)``, ``out_proj_bias (out_dim,)``; ``A (d_inner, d_state)``; ``B, C``
    None (input-dependent, from x_proj) or ``(batch, d_state, L)``; ``D, delta_bias (d_inner,)``;
    ``B_proj_bias, C_proj_bias (d_state,)``. Returns ``(batch, L, out_dim)`` in xz's dtype.
    """
    if checkpoint_lvl not in (0, 1):
        raise refuse("checkpoint_lvl", checkpoint_lvl, "0 (keep activations) or 1 (recompute the convolution)",
                     _WHERE)
    return _inner(causal_conv1d_fn, selective_scan_fn, int(checkpoint_lvl), xz, conv1d_weight, conv1d_bias,
                  x_proj_weight, delta_proj_weight, out_proj_weight, out_proj_bias, A, B, C, D, delta_bias,
                  B_proj_bias, C_proj_bias, flag("delta_softplus", delta_softplus), b_rms_weight, c_rms_weight,
                  dt_rms_weight, real("b_c_dt_rms_eps", b_c_dt_rms_eps))


def mamba_inner_ref(xz, conv1d_weight, conv1d_bias, x_proj_weight, delta_proj_weight, out_proj_weight,
                    out_proj_bias, A, B=None, C=None, D=None, delta_bias=None, B_proj_bias=None, C_proj_bias=None,
                    delta_softplus=True):
    """mamba-ssm's ``mamba_inner_ref``: the same composition on the float64 references of the convolution and
    of the scan, each cast back to xz's dtype."""
    return _inner(causal_conv1d_ref, selective_scan_ref, 0, xz, conv1d_weight, conv1d_bias, x_proj_weight,
                  delta_proj_weight, out_proj_weight, out_proj_bias, A, B, C, D, delta_bias, B_proj_bias, C_proj_bias,
                  flag("delta_softplus", delta_softplus))
