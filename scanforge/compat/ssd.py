"""mamba-ssm's ``mamba_ssm.ops.triton.ssd_combined``: Mamba-2's chunked scan and its fused block path.

``mamba_chunk_scan_combined`` is scanforge's Mamba-2 scan, :mod:`scanforge.compat.mamba2`, re-exported.

``mamba_split_conv1d_scan_combined`` is composed on top of it, the way mamba-ssm's ``mamba_split_conv1d_scan_ref``
defines it: split ``zxbcdt`` into (the optional SwiGLU part,) z, xBC and dt; causal convolution of xBC
(:func:`scanforge.compat.causal_conv1d.causal_conv1d_fn`, ``seq_idx`` honoured); the chunk scan with
``dt_softplus=True``; the gated RMSNorm (groups of ``dim // ngroups`` channels, as mamba-ssm's kernel) when
``rmsnorm_weight`` is given, else the gate ``z`` inside the scan; then ``outproj``. Gradients are autograd's.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .args import flag, real, refuse
from .causal_conv1d import causal_conv1d_fn
from .gated_norm import rmsnorm_fn
from .mamba2 import mamba_chunk_scan_combined

__all__ = ["mamba_chunk_scan_combined", "mamba_split_conv1d_scan_combined",
           "mamba_split_conv1d_scan_ref"]

_WHERE = "scanforge.compat.ssd"
def _split_conv_scan(zxbcdt, conv1d_weight, conv1d_bias, dt_bias, A, D, chunk_size, initial_states, seq_idx,
                     dt_limit, return_final_states, activation, rmsnorm_weight, rmsnorm_eps, outproj_weight,
                     outproj_bias, headdim, ngroups, norm_before_gate, state_dtype):
    if activation not in (None, "silu", "swish"):
        raise refuse("activation", activation, "None, 'silu' or 'swish'", _WHERE)
    if D.dim() == 1:
        if headdim is None:
            raise ValueError("headdim: required when D has shape (nheads,)")
        nheads = D.shape[0]
    else:
        nheads, headdim = D.shape
    ngroups = int(ngroups)
    if nheads % ngroups:
        raise ValueError(f"ngroups: expected a divisor of nheads = {nheads}, got {ngroups}")
    batch, seqlen, width = zxbcdt.shape
    dim = nheads * headdim
    conv1d_weight = conv1d_weight.reshape(conv1d_weight.shape[0], -1)  # (channels, 1, w) is accepted too
    dstate = (conv1d_weight.shape[0] - dim) // ngroups // 2
    d_nonssm = (width - 2 * dim - 2 * ngroups * dstate - nheads) // 2
    if d_nonssm < 0 or width != 2 * d_nonssm + 2 * dim + 2 * ngroups * dstate + nheads:
        raise ValueError(f"zxbcdt: expected last dimension 2 * d_nonssm + 2 * dim + 2 * ngroups * dstate + nheads "
                         f"(dim = {dim}, ngroups = {ngroups}, dstate = {dstate}, nheads = {nheads}), "
                         f"got shape {tuple(zxbcdt.shape)}")
    zx0, z, xBC, dt = zxbcdt.split([2 * d_nonssm, dim, dim + 2 * ngroups * dstate, nheads], dim=-1)
    xBC = causal_conv1d_fn(xBC.transpose(1, 2), conv1d_weight, conv1d_bias, seq_idx=seq_idx,
                           activation=activation).transpose(1, 2)
    x, B, C = xBC.split([dim, ngroups * dstate, ngroups * dstate], dim=-1)
    x = x.unflatten(-1, (nheads, headdim))
    B, C = B.unflatten(-1, (ngroups, dstate)), C.unflatten(-1, (ngroups, dstate))
    z = z.unflatten(-1, (nheads, headdim))
    extra = {} if state_dtype is None else {"state_dtype": state_dtype}
    result = mamba_chunk_scan_combined(
        x, dt, A, B, C, chunk_size, D=D, z=z if rmsnorm_weight is None else None, dt_bias=dt_bias,
        initial_states=initial_states, seq_idx=seq_idx, dt_softplus=True,
        dt_limit=tuple(real("dt_limit", v) for v in dt_limit), return_final_states=return_final_states, **extra)
    out, final_states = result if return_final_states else (result, None)
    out = out.flatten(-2)
    if rmsnorm_weight is not None:
        out = rmsnorm_fn(out, rmsnorm_weight, None, z=z.flatten(-2), eps=rmsnorm_eps, group_size=dim // ngroups,
                         norm_before_gate=norm_before_gate)
    if d_nonssm > 0:
        x0, y0 = zx0.chunk(2, dim=-1)
        out = torch.cat([F.silu(x0) * y0, out], dim=-1)
    if outproj_weight is not None:
        out = F.linear(out, outproj_weight, outproj_bias)
    elif outproj_bias is not None:
        raise ValueError("outproj_bias: given without outproj_weight")
    return (out, final_states) if return_final_states else out


def mamba_split_conv1d_scan_combined(zxbcdt, conv1d_weight, conv1d_bias, dt_bias, A, D, chunk_size,
                                     initial_states=None, seq_idx=None, dt_limit=(0.0, float("inf")),
                                     return_final_states=False, activation="silu", rmsnorm_weight=None,
                                     rmsnorm_eps=1e-6, outproj_weight=None, outproj_bias=None, headdim=None,
                                     ngroups=1, norm_before_gate=True, state_dtype=None):
    """mamba-ssm's ``mamba_split_conv1d_scan_combined``: Mamba-2's block between its projections.

    Shapes: ``zxbcdt (batch, seqlen, 2 * d_nonssm + 2 * dim + 2 * ngroups * dstate + nheads)``, dim = nheads *
    headdim; ``conv1d_weight (dim + 2 * ngroups * dstate, width)``; ``conv1d_bias`` likewise; ``dt_bias, A
    (nheads,)``; ``D (nheads, headdim)`` or ``(nheads,)`` (then ``headdim`` is required); ``initial_states (batch,
    nheads, headdim, dstate)``; ``seq_idx (batch, seqlen)``; ``rmsnorm_weight (dim,)``; ``outproj_weight
    (out_dim, d_nonssm + dim)``. Returns ``out (batch, seqlen, out_dim)``, or ``(out, final_states)``.
    """
    return _split_conv_scan(zxbcdt, conv1d_weight, conv1d_bias, dt_bias, A, D, chunk_size, initial_states, seq_idx,
                            dt_limit, flag("return_final_states", return_final_states), activation, rmsnorm_weight,
                            real("rmsnorm_eps", rmsnorm_eps), outproj_weight, outproj_bias, headdim, ngroups,
                            flag("norm_before_gate", norm_before_gate), state_dtype)


def mamba_split_conv1d_scan_ref(zxbcdt, conv1d_weight, conv1d_bias, dt_bias, A, D, chunk_size,
                                dt_limit=(0.0, float("inf")), activation="silu", rmsnorm_weight=None,
                                rmsnorm_eps=1e-6, outproj_weight=None, outproj_bias=None, headdim=None, ngroups=1,
                                norm_before_gate=True):
    """mamba-ssm's ``mamba_split_conv1d_scan_ref`` signature; the same composition (no states, no seq_idx)."""
    return mamba_split_conv1d_scan_combined(zxbcdt, conv1d_weight, conv1d_bias, dt_bias, A, D, chunk_size,
                                            dt_limit=dt_limit, activation=activation, rmsnorm_weight=rmsnorm_weight,
                                            rmsnorm_eps=rmsnorm_eps, outproj_weight=outproj_weight,
                                            outproj_bias=outproj_bias, headdim=headdim, ngroups=ngroups,
                                            norm_before_gate=norm_before_gate)
