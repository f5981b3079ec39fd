"""The functions served under mamba-ssm's and causal-conv1d's names: their signatures, results against plain
definitions, gradients, the arguments mamba-ssm's callers pass, and clear refusals of what is not covered."""

import inspect

import pytest
import torch
import torch.nn.functional as F

from scanforge.compat import causal_conv1d as cc
from scanforge.compat import gated_norm, inner, norms, ssd
from scanforge.compat import mamba_ssm as mc
from scanforge.testing.accuracy import rel_error

SIGNATURES = {
    inner.mamba_inner_fn: "xz conv1d_weight conv1d_bias x_proj_weight delta_proj_weight out_proj_weight out_proj_bias "
                          "A B C D delta_bias B_proj_bias C_proj_bias delta_softplus checkpoint_lvl b_rms_weight "
                          "c_rms_weight dt_rms_weight b_c_dt_rms_eps",
    inner.mamba_inner_ref: "xz conv1d_weight conv1d_bias x_proj_weight delta_proj_weight out_proj_weight out_proj_bias "
                           "A B C D delta_bias B_proj_bias C_proj_bias delta_softplus",
    cc.causal_conv1d_fn: "x weight bias seq_idx initial_states return_final_states final_states_out activation",
    cc.causal_conv1d_update: "x conv_state weight bias activation cache_seqlens conv_state_indices",
    norms.layer_norm_fn: "x weight bias residual x1 weight1 bias1 eps dropout_p rowscale prenorm residual_in_fp32 "
                         "is_rms_norm return_dropout_mask",
    norms.rms_norm_fn: "x weight bias residual x1 weight1 bias1 eps dropout_p rowscale prenorm residual_in_fp32 "
                       "return_dropout_mask",
    gated_norm.rmsnorm_fn: "x weight bias z eps group_size norm_before_gate",
    ssd.mamba_split_conv1d_scan_combined: "zxbcdt conv1d_weight conv1d_bias dt_bias A D chunk_size initial_states "
                                          "seq_idx dt_limit return_final_states activation rmsnorm_weight rmsnorm_eps "
                                          "outproj_weight outproj_bias headdim ngroups norm_before_gate state_dtype",
}


@pytest.mark.parametrize("fn", list(SIGNATURES), ids=lambda f: f.__name__)
def test_signatures_are_the_originals(fn):
    assert list(inspect.signature(fn).parameters) == SIGNATURES[fn].split()


def _inner_args(batch=2, d_inner=6, L=10, N=4, rank=2, width=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    r = lambda *s, scale=1.0: (torch.randn(*s, generator=g) * scale).requires_grad_()  # noqa: E731
    return dict(xz=r(batch, 2 * d_inner, L), conv1d_weight=r(d_inner, 1, width, scale=0.5), conv1d_bias=r(d_inner),
                x_proj_weight=r(rank + 2 * N, d_inner, scale=0.5), delta_proj_weight=r(d_inner, rank, scale=0.5),
                out_proj_weight=r(5, d_inner), out_proj_bias=r(5),
                A=(-torch.rand(d_inner, N, generator=g) - 0.5).requires_grad_(), D=r(d_inner),
                delta_bias=r(d_inner, scale=0.1))


def _grads(out, tensors):
    return torch.autograd.grad(out.square().sum(), tensors)


def test_mamba_inner_fn_matches_its_reference_forward_and_backward_at_both_checkpoint_levels():
    args = _inner_args()
    tensors = list(args.values())
    want = inner.mamba_inner_ref(**args)
    want_grads = _grads(want, tensors)
    for lvl in (0, 1):
        out = inner.mamba_inner_fn(**args, checkpoint_lvl=lvl)
        assert out.shape == (2, 10, 5) and rel_error(out, want) < 1e-5
        for name, g, w in zip(args, _grads(out, tensors), want_grads):
            assert rel_error(g, w) < 1e-4, (lvl, name)


def test_mamba_inner_fn_projection_biases_and_rms_norms():
    """B_proj_bias and b_rms_weight act on the projected B exactly as passing that B in does."""
    args = {k: v.detach() for k, v in _inner_args().items()}
    b_bias, b_w, eps = torch.randn(4), torch.rand(4) + 0.5, 1e-3
    out = inner.mamba_inner_fn(**args, B_proj_bias=b_bias, b_rms_weight=b_w, b_c_dt_rms_eps=eps)
    x = cc.causal_conv1d_fn(args["xz"][:, :6], args["conv1d_weight"][:, 0], args["conv1d_bias"], activation="silu")
    B = F.linear(x.transpose(1, 2), args["x_proj_weight"])[..., 2:6] + b_bias
    B = (B * torch.rsqrt(B.square().mean(-1, keepdim=True) + eps) * b_w).transpose(1, 2).contiguous()
    assert rel_error(out, inner.mamba_inner_fn(**args, B=B)) < 1e-6


def test_mamba_inner_fn_refuses_what_it_does_not_cover():
    args = {k: v.detach() for k, v in _inner_args().items()}
    with pytest.raises(NotImplementedError, match=r"checkpoint_lvl=2 .*supported: 0 .* or 1"):
        inner.mamba_inner_fn(**args, checkpoint_lvl=2)
    with pytest.raises(NotImplementedError, match="complex A"):
        inner.mamba_inner_fn(**{**args, "A": torch.complex(args["A"], args["A"])})


def test_selective_scan_fn_takes_none_for_flags_as_mambavision_passes_them():
    g = torch.Generator().manual_seed(0)
    u, delta = torch.randn(1, 4, 7, generator=g), torch.randn(1, 4, 7, generator=g) * 0.3
    A, B, C = -torch.rand(4, 3, generator=g) - 0.2, torch.randn(1, 3, 7, generator=g), torch.randn(1, 3, 7, generator=g)
    out = mc.selective_scan_fn(u, delta, A, B, C, torch.ones(4), z=None, delta_bias=torch.zeros(4),
                               delta_softplus=True, return_last_state=None)
    assert isinstance(out, torch.Tensor) and out.shape == u.shape
    assert torch.equal(out, mc.selective_scan_fn(u, delta, A, B, C, torch.ones(4), None, torch.zeros(4), 1, 0))
    with pytest.raises(TypeError, match="return_last_state: expected a bool"):
        mc.selective_scan_fn(u, delta, A, B, C, return_last_state="yes")


# ---------------------------------------------------------------------------------------------- causal conv1d

def _conv_inputs(batch=2, dim=5, L=9, width=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(batch, dim, L, generator=g), torch.randn(dim, width, generator=g), torch.randn(dim, generator=g)


@pytest.mark.parametrize("activation", [None, "silu", "swish"])
def test_causal_conv1d_fn_matches_the_per_tap_reference_with_gradients(activation):
    x, w, b = (t.requires_grad_() for t in _conv_inputs())
    out = cc.causal_conv1d_fn(x, w, b, activation=activation)
    leaves = [t.detach().double().requires_grad_() for t in (x, w, b)]
    want = cc.causal_conv1d_ref(*leaves, activation=activation)
    assert out.dtype == torch.float32 and rel_error(out, want) < 1e-6
    for got, ref in zip(_grads(out, (x, w, b)), _grads(want, leaves)):
        assert rel_error(got, ref) < 1e-6


def test_causal_conv1d_fn_states_half_inputs_and_seq_idx():
    x, w, b = _conv_inputs()
    init = torch.randn(2, 5, 3)
    into = torch.empty(2, 5, 3)
    out, final = cc.causal_conv1d_fn(x, w, b, initial_states=init, return_final_states=True, final_states_out=into,
                                     activation="silu")
    full = cc.causal_conv1d_ref(torch.cat([init, x], -1), w, b, activation="silu")[..., 3:]
    assert rel_error(out, full) < 1e-6 and final is into and torch.equal(into, x[..., -3:])
    half = cc.causal_conv1d_fn(x.bfloat16(), w, b, activation="silu")
    assert half.dtype == torch.bfloat16 and rel_error(half, cc.causal_conv1d_ref(x, w, b, activation="silu")) < 1e-2
    seq_idx = torch.tensor([[0, 0, 0, 1, 1, 2, 2, 2, 2], [0] * 7 + [-1] * 2], dtype=torch.int32)
    out = cc.causal_conv1d_fn(x, w, b, seq_idx=seq_idx, activation="silu")
    for row, bounds in ((0, [(0, 3), (3, 5), (5, 9)]), (1, [(0, 7)])):
        for s, e in bounds:
            want = cc.causal_conv1d_ref(x[row:row + 1, :, s:e], w, b, activation="silu")
            assert rel_error(out[row:row + 1, :, s:e], want) < 1e-6, (row, s, e)
    assert torch.equal(out[1, :, 7:], torch.zeros(5, 2))  # padding tokens
    with pytest.raises(NotImplementedError, match=r"activation='relu' .*supported: None, 'silu', 'swish'"):
        cc.causal_conv1d_fn(x, w, b, activation="relu")


@pytest.mark.parametrize("layout", ["shift", "circular", "indices"])
def test_causal_conv1d_update_continues_the_convolution(layout):
    """Token by token (and two tokens at once) equals the whole-sequence convolution; conv_state as causal-conv1d
    keeps it: shifted, a circular buffer at cache_seqlens, or rows picked by conv_state_indices (-1: padding)."""
    x, w, b = _conv_inputs(L=8)
    full = cc.causal_conv1d_fn(x, w, b, activation="silu")
    pool = torch.full((4, 5, 6), float("nan"))
    state = torch.zeros(2, 5, 6 if layout == "circular" else 3)
    ref_state = state.clone()
    idx = torch.tensor([3, 1], dtype=torch.int32)
    if layout == "indices":
        pool[idx.long()] = 0.0
    seqlens, outs, t = torch.zeros(2, dtype=torch.int32), [], 0
    for size in (1, 1, 2, 1, 3):
        chunk = x[..., t:t + size] if size > 1 else x[..., t]
        if layout == "indices":
            outs.append(cc.causal_conv1d_update(chunk, pool, w, b, "silu", conv_state_indices=idx))
        else:
            kw = {"cache_seqlens": seqlens} if layout == "circular" else {}
            outs.append(cc.causal_conv1d_update(chunk, state, w, b, "silu", **kw))
            want = cc.causal_conv1d_update_ref(chunk, ref_state, w, b, "silu", **kw)
            assert rel_error(outs[-1], want) < 1e-6 and torch.equal(state, ref_state)
        seqlens, t = seqlens + size, t + size
    got = torch.cat([o if o.dim() == 3 else o[..., None] for o in outs], dim=-1)
    assert rel_error(got, full) < 1e-6
    if layout == "indices":
        assert pool[[0, 2]].isnan().all()  # rows not picked are untouched
        padded = cc.causal_conv1d_update(x[..., 0], pool, w, b, "silu", conv_state_indices=torch.tensor([-1, 1]))
        assert torch.equal(padded[0], torch.zeros(5)) and pool[[0, 2]].isnan().all()


# ---------------------------------------------------------------------------------------------- norms

def test_fused_add_rms_norm_dtypes_values_and_gradients():
    g = torch.Generator().manual_seed(0)
    x, res, w = torch.randn(2, 3, 8, generator=g), torch.randn(2, 3, 8, generator=g), torch.rand(8, generator=g) + .5
    y, r = norms.rms_norm_fn(x.bfloat16(), w, None, residual=None, prenorm=True, residual_in_fp32=True, eps=1)
    assert y.dtype == torch.bfloat16 and r.dtype == torch.float32 and torch.equal(r, x.bfloat16().float())
    y, r = norms.rms_norm_fn(x.bfloat16(), w, None, residual=res, prenorm=True, residual_in_fp32=None)
    assert y.dtype == torch.bfloat16 and r.dtype == torch.float32  # residual's dtype wins
    leaves = [t.clone().requires_grad_() for t in (x, res, w)]
    bias = torch.randn(8, generator=g)
    for is_rms, ref in ((True, norms.rms_norm_ref), (False, norms.layer_norm_ref)):
        out, total = norms.layer_norm_fn(*leaves[:1], leaves[2], bias, residual=leaves[1], prenorm=True,
                                         is_rms_norm=is_rms)
        doubles = [t.detach().double().requires_grad_() for t in leaves]
        want, want_total = ref(doubles[0], doubles[2], bias.double(), residual=doubles[1], prenorm=True)
        assert rel_error(out, want) < 1e-6 and rel_error(total, want_total) < 1e-6
        for got, exp in zip(_grads(out, leaves), _grads(want, doubles)):
            assert rel_error(got, exp) < 1e-5
    module = norms.RMSNorm(8, dropout_p=0.1).eval()
    assert rel_error(module(x), norms.rms_norm_ref(x.double(), torch.ones(8, dtype=torch.float64), None,
                                                   eps=1e-5)) < 1e-6
    with pytest.raises(NotImplementedError, match=r"dropout_p=0.1 .*supported: 0.0"):
        module.train()(x)


@pytest.mark.parametrize("norm_before_gate", [True, False])
@pytest.mark.parametrize("group_size", [None, 4])
def test_gated_rms_norm_matches_its_reference(group_size, norm_before_gate):
    g = torch.Generator().manual_seed(0)
    x, z, w = torch.randn(3, 8, generator=g), torch.randn(3, 8, generator=g), torch.rand(8, generator=g) + 0.5
    out = gated_norm.rmsnorm_fn(x, w, None, z=z, group_size=group_size, norm_before_gate=norm_before_gate)
    want = gated_norm.rms_norm_ref(x.double(), w, None, z=z, group_size=group_size, norm_before_gate=norm_before_gate)
    assert out.dtype == x.dtype and rel_error(out, want) < 1e-6
    layer = gated_norm.LayerNorm(8, group_size=group_size, norm_before_gate=norm_before_gate)
    gate = F.silu(z)
    xs = x if norm_before_gate else x * gate
    plain = F.group_norm(xs, 8 // (group_size or 8), eps=layer.eps)
    assert rel_error(layer(x, z), plain * gate if norm_before_gate else plain) < 1e-5


# ---------------------------------------------------------------------------------------------- Mamba-2

def _ssd_by_hand(x, dt, A, B, C, D, dt_bias):
    """Mamba-2's per-head recurrence in float64: x (b, L, h, p), dt (b, L, h), B, C (b, L, g, n)."""
    heads, groups = x.shape[2], B.shape[2]
    B, C = (t.repeat_interleave(heads // groups, dim=2) for t in (B, C))  # (b, L, h, n)
    dt = F.softplus(dt + dt_bias)
    state = x.new_zeros(x.shape[0], heads, x.shape[3], B.shape[-1])
    ys = []
    for t in range(x.shape[1]):
        decay = torch.exp(dt[:, t] * A)[..., None, None]
        state = decay * state + dt[:, t, :, None, None] * x[:, t, :, :, None] * B[:, t, :, None, :]
        ys.append((state * C[:, t, :, None, :]).sum(-1) + D[:, None] * x[:, t])
    return torch.stack(ys, dim=1), state


def test_mamba_split_conv1d_scan_combined_is_conv_scan_gated_norm_and_projection():
    g = torch.Generator().manual_seed(0)
    batch, L, heads, headdim, groups, N, width = 2, 11, 4, 3, 2, 5, 4
    dim = heads * headdim
    channels = dim + 2 * groups * N
    zxbcdt = torch.randn(batch, L, 2 * dim + 2 * groups * N + heads, generator=g)
    conv_w, conv_b = torch.randn(channels, width, generator=g) * 0.5, torch.randn(channels, generator=g)
    dt_bias, A, D = torch.randn(heads, generator=g) * 0.1, -torch.rand(heads, generator=g) - 0.3, torch.randn(heads)
    norm_w, out_w = torch.rand(dim, generator=g) + 0.5, torch.randn(7, dim, generator=g)
    out, final = ssd.mamba_split_conv1d_scan_combined(
        zxbcdt, conv_w, conv_b, dt_bias, A, D, 4, return_final_states=True, rmsnorm_weight=norm_w, rmsnorm_eps=1e-5,
        outproj_weight=out_w, headdim=headdim, ngroups=groups)
    z, xBC, dt = zxbcdt.double().split([dim, channels, heads], dim=-1)
    xBC = cc.causal_conv1d_ref(xBC.transpose(1, 2), conv_w, conv_b, activation="silu").transpose(1, 2)
    x, B, C = xBC.split([dim, groups * N, groups * N], dim=-1)
    y, want_final = _ssd_by_hand(x.unflatten(-1, (heads, headdim)), dt, A.double(), B.unflatten(-1, (groups, N)),
                                 C.unflatten(-1, (groups, N)), D.double(), dt_bias.double())
    y = y.flatten(-2).unflatten(-1, (groups, dim // groups))
    y = (y * torch.rsqrt(y.square().mean(-1, keepdim=True) + 1e-5)).flatten(-2) * norm_w.double() * F.silu(z)
    assert out.shape == (batch, L, 7) and rel_error(out, y @ out_w.double().t()) < 1e-4
    assert rel_error(final, want_final) < 1e-4
