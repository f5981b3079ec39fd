"""mamba-ssm's ``mamba_ssm.ops.triton.layernorm_gated``: the gated (group) norm of Mamba-2, on PyTorch.

``norm(x) * silu(z)`` with ``norm_before_gate=True`` (the default), ``norm(x * silu(z))`` otherwise; without z,
a plain norm. ``group_size`` normalises each contiguous group of that many channels on its own (GroupNorm; None
means one group of all channels). The arithmetic is float32 (float64 stays float64); the output is in x's dtype.
Gradients are PyTorch's. ``eps`` may be an int, ``norm_before_gate`` None (False).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from .args import flag, real

__all__ = ["LayerNorm", "RMSNorm", "layernorm_fn", "rms_norm_ref", "rmsnorm_fn"]


def _group_norm(x: Tensor, group_size: int, eps: float, is_rms_norm: bool) -> Tensor:
    groups = x.reshape(*x.shape[:-1], x.shape[-1] // group_size, group_size)
    if not is_rms_norm:
        groups = groups - groups.mean(-1, keepdim=True)
    return (groups * torch.rsqrt(groups.square().mean(-1, keepdim=True) + eps)).reshape(x.shape)


def layernorm_fn(x, weight, bias, z=None, eps=1e-6, group_size=None, norm_before_gate=True, is_rms_norm=False):
    """Gated LayerNorm / RMSNorm over the last dimension.

    Shapes: ``x, z (..., hidden)``, ``weight, bias (hidden,)``; ``group_size`` divides hidden.
    Returns the normalised, gated x in x's dtype.
    """
    eps, norm_before_gate, is_rms_norm = real("eps", eps), flag("norm_before_gate", norm_before_gate), flag(
        "is_rms_norm", is_rms_norm)
    hidden = x.shape[-1]
    group_size = hidden if group_size is None else int(group_size)
    if group_size < 1 or hidden % group_size:
        raise ValueError(f"group_size: expected a divisor of x's last dimension {hidden}, got {group_size}")
    for name, t in (("weight", weight), ("bias", bias)):
        if t is not None and tuple(t.shape) != (hidden,):
            raise ValueError(f"{name}: expected shape ({hidden},) to match x {tuple(x.shape)}, got {tuple(t.shape)}")
    if z is not None and z.shape != x.shape:
        raise ValueError(f"z: expected x's shape {tuple(x.shape)}, got {tuple(z.shape)}")
    dtype = torch.promote_types(x.dtype, torch.float32)
    xs = x.to(dtype)
    if z is not None and not norm_before_gate:
        xs = xs * F.silu(z.to(dtype))
    out = _group_norm(xs, group_size, eps, is_rms_norm) * weight.to(dtype)
    if bias is not None:
        out = out + bias.to(dtype)
    if z is not None and norm_before_gate:
        out = out * F.silu(z.to(dtype))
    return out.to(x.dtype)


def rmsnorm_fn(x, weight, bias, z=None, eps=1e-6, group_size=None, norm_before_gate=True):
    """mamba-ssm's gated ``rmsnorm_fn``: :func:`layernorm_fn` with ``is_rms_norm=True``."""
    return layernorm_fn(x, weight, bias, z, eps, group_size, norm_before_gate, True)


def rms_norm_ref(x, weight, bias, z=None, eps=1e-6, group_size=None, norm_before_gate=True, upcast=True):
    """mamba-ssm's gated ``rms_norm_ref``: the plain definition, in float64 (cast back to x's dtype)."""
    dtype = x.dtype
    xd, zd = x.double(), None if z is None else z.double()
    if zd is not None and not norm_before_gate:
        xd = xd * F.silu(zd)
    size = x.shape[-1] if group_size is None else group_size
    groups = xd.unflatten(-1, (-1, size))
    out = (groups / torch.sqrt(groups.square().mean(-1, keepdim=True) + eps)).flatten(-2) * weight.double()
    if bias is not None:
        out = out + bias.double()
    if zd is not None and norm_before_gate:
        out = out * F.silu(zd)
    return out.to(dtype)


class _GatedNorm(torch.nn.Module):
    is_rms_norm = False

    def __init__(self, hidden_size, eps=1e-5, group_size=None, norm_before_gate=True, device=None, dtype=None):
        super().__init__()
        self.eps, self.group_size, self.norm_before_gate = eps, group_size, norm_before_gate
        self.weight = torch.nn.Parameter(torch.empty(hidden_size, device=device, dtype=dtype))
        if self.is_rms_norm:
            self.register_parameter("bias", None)
        else:
            self.bias = torch.nn.Parameter(torch.empty(hidden_size, device=device, dtype=dtype))
        self.reset_parameters()

    def reset_parameters(self):
        torch.nn.init.ones_(self.weight)
        if self.bias is not None:
            torch.nn.init.zeros_(self.bias)

    def forward(self, x, z=None):
        """``norm(x) * silu(z)`` if norm_before_gate, else ``norm(x * silu(z))``."""
        return layernorm_fn(x, self.weight, self.bias, z=z, eps=self.eps, group_size=self.group_size,
                            norm_before_gate=self.norm_before_gate, is_rms_norm=self.is_rms_norm)


class LayerNorm(_GatedNorm):
    """mamba-ssm's gated ``LayerNorm`` module (weight and bias)."""


class RMSNorm(_GatedNorm):
    """mamba-ssm's gated ``RMSNorm`` module (weight only)."""

    is_rms_norm = True
