"""compat.mamba2.mamba_chunk_scan_combined: mamba-ssm's layouts, return conventions and packing, against the
float64 plain recurrence."""

import pytest
import torch

from scanforge.compat.mamba2 import mamba_chunk_scan_combined
from scanforge.kernels.reference import ssd_scan_ref
from scanforge.testing.accuracy import rel_error

BATCH, L, H, P, G, N = 1, 21, 4, 3, 2, 5


def _inputs(seed=0):
    gen = torch.Generator().manual_seed(seed)
    r = lambda *s: torch.randn(*s, generator=gen)  # noqa: E731
    return dict(x=r(BATCH, L, H, P), dt=r(BATCH, L, H) * 0.5 - 1, A=-torch.rand(H, generator=gen) - 0.2,
                B=r(BATCH, L, G, N), C=r(BATCH, L, G, N))


def _ref(x, dt, A, B, C, **kw):
    channels = lambda t: t.reshape(t.shape[0], t.shape[1], -1).transpose(1, 2)  # noqa: E731
    out = ssd_scan_ref(channels(x), dt.transpose(1, 2), A, B.permute(0, 2, 3, 1), C.permute(0, 2, 3, 1), **kw)
    y, h = out if kw.get("return_last_state") else (out, None)
    return y.transpose(1, 2).reshape(x.shape), h


def test_matches_the_reference_with_final_states_and_per_channel_D():
    a = _inputs()
    D, z, bias = torch.randn(H, P), torch.randn(BATCH, L, H, P), torch.randn(H)
    h0 = torch.randn(BATCH, H, P, N)
    out, final = mamba_chunk_scan_combined(**a, chunk_size=16, D=D, z=z, dt_bias=bias, initial_states=h0,
                                           dt_softplus=True, return_final_states=True)
    want, want_h = _ref(**a, D=D.reshape(-1), z=z.reshape(BATCH, L, -1).transpose(1, 2), dt_bias=bias,
                        dt_softplus=True, initial_state=h0, return_last_state=True)
    assert out.shape == (BATCH, L, H, P) and out.is_contiguous() and final.shape == (BATCH, H, P, N)
    assert rel_error(out, want) < 1e-5 and rel_error(final, want_h) < 1e-5


def test_seq_idx_packs_sequences_and_varlen_states_are_each_sequences_last():
    a = _inputs(1)
    seq_idx = torch.tensor([[0] * 8 + [1] * 13])
    cu = torch.tensor([0, 8, 21])
    out, final, states = mamba_chunk_scan_combined(**a, chunk_size=8, seq_idx=seq_idx, cu_seqlens=cu,
                                                   dt_softplus=True, return_final_states=True,
                                                   return_varlen_states=True)
    channels = a["x"].reshape(BATCH, L, -1).transpose(1, 2)
    want = ssd_scan_ref(channels, a["dt"].transpose(1, 2), a["A"], a["B"].permute(0, 2, 3, 1),
                        a["C"].permute(0, 2, 3, 1), dt_softplus=True, cu_seqlens=cu)
    assert rel_error(out, want.transpose(1, 2).reshape(out.shape)) < 1e-5
    second = {k: v[:, 8:] if k != "A" else v for k, v in a.items()}
    _, last = _ref(**second, dt_softplus=True, return_last_state=True)
    assert states.shape == (2, H, P, N) and rel_error(states[1:], last) < 1e-5 and rel_error(final, last) < 1e-5


def test_gradients_flow_to_every_tensor():
    a = {k: v.requires_grad_() for k, v in _inputs().items()}
    mamba_chunk_scan_combined(**a, chunk_size=64, dt_softplus=True).square().sum().backward()
    assert all(v.grad is not None and v.grad.abs().sum() > 0 for v in a.values())


@pytest.mark.parametrize("chunk_size", [48, 0, 2.0])
def test_chunk_size_must_be_a_power_of_two(chunk_size):
    with pytest.raises(ValueError, match="chunk_size: expected a power of two"):
        mamba_chunk_scan_combined(**_inputs(), chunk_size=chunk_size)


def test_heads_must_divide_into_groups_and_shapes_are_named():
    a = _inputs()
    with pytest.raises(ValueError, match=r"dt: expected \(batch, seqlen, nheads\)"):
        mamba_chunk_scan_combined(**(a | {"dt": torch.rand(BATCH, L, H + 1)}), chunk_size=16)
    with pytest.raises(ValueError, match="B: expected .* ngroups dividing nheads"):
        bad = torch.randn(BATCH, L, 3, N)
        mamba_chunk_scan_combined(**(a | {"B": bad, "C": bad}), chunk_size=16)
