"""mamba-ssm's ``mamba_ssm.ops.triton.layer_norm``: ``layer_norm_fn``, ``rms_norm_fn``, ``RMSNorm``, on PyTorch.

The fused add + norm of mamba-ssm's ``Block``: ``residual_out = x (+ x1) (+ residual)`` (x scaled by
``rowscale`` first), ``y = norm(residual_out) * weight + bias`` (and ``y1`` with ``weight1, bias1``); returns ``y``
or, with ``prenorm=True``, ``(y, residual_out)``. As mamba-ssm's Triton kernel: the arithmetic is float32 (float64
stays float64), ``y`` is in x's dtype, ``residual_out`` in residual's dtype, else float32 with
``residual_in_fp32``, else x's dtype, and the norm reads the unrounded sum. Gradients are PyTorch's.

Differences: ``dropout_p`` other than 0.0 is refused (a ``NotImplementedError``): ``RMSNorm`` passes 0.0 in
eval mode, so a model with dropout runs in eval mode, and training with norm dropout is not covered.
``return_dropout_mask=True`` returns ``None`` masks (there is no dropout). ``eps`` may be an int.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from .args import flag, real, refuse

__all__ = ["RMSNorm", "layer_norm_fn", "layer_norm_ref", "rms_norm_fn", "rms_norm_ref"]

_WHERE = "scanforge.compat.norms"


def _normalize(x: Tensor, weight: Tensor, bias, eps: float, is_rms_norm: bool) -> Tensor:
    if is_rms_norm:
        out = x * torch.rsqrt(x.square().mean(-1, keepdim=True) + eps)
    else:
        out = F.layer_norm(x, x.shape[-1:], eps=eps)
    out = out * weight.to(x.dtype)
    return out if bias is None else out + bias.to(x.dtype)


def layer_norm_fn(x, weight, bias, residual=None, x1=None, weight1=None, bias1=None, eps=1e-6, dropout_p=0.0,
                  rowscale=None, prenorm=False, residual_in_fp32=False, is_rms_norm=False,
                  return_dropout_mask=False):
    """mamba-ssm's ``layer_norm_fn``: (add the residual, then) LayerNorm or RMSNorm over the last dimension.

    Shapes: ``x, residual, x1 (..., hidden)``, ``weight, bias, weight1, bias1 (hidden,)``, ``rowscale (...)``.
    Returns ``y``, ``(y, y1)`` with ``weight1``, each followed by ``residual_out`` with ``prenorm`` and by two
    ``None`` dropout masks with ``return_dropout_mask``.
    """
    eps, prenorm = real("eps", eps), flag("prenorm", prenorm)
    residual_in_fp32, is_rms_norm = flag("residual_in_fp32", residual_in_fp32), flag("is_rms_norm", is_rms_norm)
    if real("dropout_p", dropout_p) != 0.0:
        raise refuse("dropout_p", dropout_p, "0.0 (call the model in eval mode: RMSNorm then passes 0.0)", _WHERE)
    hidden = x.shape[-1]
    for name, t in (("weight", weight), ("bias", bias), ("weight1", weight1), ("bias1", bias1)):
        if t is not None and tuple(t.shape) != (hidden,):
            raise ValueError(f"{name}: expected shape ({hidden},) to match x {tuple(x.shape)}, got {tuple(t.shape)}")
    for name, t in (("residual", residual), ("x1", x1)):
        if t is not None and t.shape != x.shape:
            raise ValueError(f"{name}: expected x's shape {tuple(x.shape)}, got {tuple(t.shape)}")
    if x1 is not None and rowscale is not None:
        raise ValueError("rowscale: not supported together with x1 (parallel LayerNorm), as in mamba-ssm")
    dtype = torch.promote_types(x.dtype, torch.float32)
    total = x.to(dtype)
    if rowscale is not None:
        total = total * rowscale.to(dtype)[..., None]
    if x1 is not None:
        total = total + x1.to(dtype)
    if residual is not None:
        total = total + residual.to(dtype)
    y = _normalize(total, weight, bias, eps, is_rms_norm).to(x.dtype)
    outs = [y] if weight1 is None else [y, _normalize(total, weight1, bias1, eps, is_rms_norm).to(x.dtype)]
    if prenorm:
        residual_dtype = residual.dtype if residual is not None else torch.float32 if residual_in_fp32 else x.dtype
        changed = residual is not None or x1 is not None or rowscale is not None or residual_dtype != x.dtype
        outs.append(total.to(residual_dtype) if changed else x)
    if flag("return_dropout_mask", return_dropout_mask):
        outs += [None, None]
    return outs[0] if len(outs) == 1 else tuple(outs)


def rms_norm_fn(x, weight, bias, residual=None, x1=None, weight1=None, bias1=None, eps=1e-6, dropout_p=0.0,
                rowscale=None, prenorm=False, residual_in_fp32=False, return_dropout_mask=False):
    """mamba-ssm's ``rms_norm_fn``: :func:`layer_norm_fn` with ``is_rms_norm=True``."""
    return layer_norm_fn(x, weight, bias, residual, x1, weight1, bias1, eps, dropout_p, rowscale, prenorm,
                         residual_in_fp32, True, return_dropout_mask)


def _norm_ref(x, weight, bias, residual, x1, weight1, bias1, eps, dropout_p, rowscale, prenorm, upcast, rms):
    if dropout_p:
        raise refuse("dropout_p", dropout_p, "0.0", _WHERE)
    dtype = x.dtype
    if upcast:
        x, residual, x1 = (None if t is None else t.float() for t in (x, residual, x1))
        weight, bias, weight1, bias1 = (None if t is None else t.float() for t in (weight, bias, weight1, bias1))
    if rowscale is not None:
        x = x * rowscale[..., None]
    if x1 is not None:
        x = x + x1
    if residual is not None:
        x = (x + residual).to(x.dtype)

    def norm(w, b):
        if rms:
            out = x * torch.rsqrt(x.square().mean(-1, keepdim=True) + eps) * w
            return (out if b is None else out + b).to(dtype)
        return F.layer_norm(x.to(w.dtype), x.shape[-1:], weight=w, bias=b, eps=eps).to(dtype)

    outs = [norm(weight, bias)] + ([] if weight1 is None else [norm(weight1, bias1)])
    return outs[0] if len(outs) == 1 and not prenorm else tuple(outs + ([x] if prenorm else []))


def layer_norm_ref(x, weight, bias, residual=None, x1=None, weight1=None, bias1=None, eps=1e-6, dropout_p=0.0,
                   rowscale=None, prenorm=False, dropout_mask=None, dropout_mask1=None, upcast=False):
    """mamba-ssm's ``layer_norm_ref``: the plain definition in the inputs' dtype (float32 with ``upcast``)."""
    return _norm_ref(x, weight, bias, residual, x1, weight1, bias1, eps, dropout_p, rowscale, prenorm, upcast, False)


def rms_norm_ref(x, weight, bias, residual=None, x1=None, weight1=None, bias1=None, eps=1e-6, dropout_p=0.0,
                 rowscale=None, prenorm=False, dropout_mask=None, dropout_mask1=None, upcast=False):
    """mamba-ssm's ``rms_norm_ref``: the plain definition in the inputs' dtype (float32 with ``upcast``)."""
    return _norm_ref(x, weight, bias, residual, x1, weight1, bias1, eps, dropout_p, rowscale, prenorm, upcast, True)


class RMSNorm(torch.nn.Module):
    """mamba-ssm's ``RMSNorm`` module: ``forward(x, residual=None, prenorm=False, residual_in_fp32=False)``."""

    def __init__(self, hidden_size, eps=1e-5, dropout_p=0.0, device=None, dtype=None):
        super().__init__()
        self.eps = eps
        self.drop = torch.nn.Dropout(dropout_p) if dropout_p > 0.0 else None
        self.weight = torch.nn.Parameter(torch.empty(hidden_size, device=device, dtype=dtype))
        self.register_parameter("bias", None)
        self.reset_parameters()

    def reset_parameters(self):
        torch.nn.init.ones_(self.weight)

    def forward(self, x, residual=None, prenorm=False, residual_in_fp32=False):
        dropout_p = self.drop.p if self.drop is not None and self.training else 0.0
        return rms_norm_fn(x, self.weight, self.bias, residual=residual, eps=self.eps, dropout_p=dropout_p,
                           prenorm=prenorm, residual_in_fp32=residual_in_fp32)
