"""Mamba-2's scan (``sf.ssd_scan``, one decay per head) on every backend that claims it, against the float64
plain-recurrence reference: forward, final state and every gradient.

Hypothesis draws specs (direction, D, z, dt_bias + softplus, grouped B/C, states, dtype) and inputs (heads, headdim
and N not powers of two, groups dividing the heads, lengths either side of chunk sizes, memory layouts); fixed
cases cover packed sequences, dt clamping and the equality with a Mamba-1 scan whose A and dt are expanded per
channel.
"""

import math

import pytest
import torch
from helpers import backends_for, device_of, supported
from hypothesis import given, settings
from hypothesis import strategies as st

import scanforge as sf
from scanforge.kernels.ir import ScanSpec
from scanforge.kernels.reference import selective_scan_ref, ssd_scan_ref
from scanforge.testing import assert_matches_reference, ssd_examples, ssd_specs
from scanforge.testing.accuracy import random_scan_inputs, rel_error

SSD = ScanSpec(decay="head", has_D=True, has_z=True, has_delta_bias=True, softplus=True, grouped=True)
BACKENDS = backends_for(SSD)
#: Interpreted Triton runs every chunk in Python: shorter draws.
SIZES = {"triton": dict(max_L=70, max_heads=3, max_headdim=4)}


@pytest.mark.parametrize("backend", BACKENDS)
@settings(max_examples=12)
@given(data=st.data())
def test_ssd_matches_reference(backend, data):
    device = device_of(backend)
    spec = data.draw(ssd_specs(backend=backend, device=device), label="spec")
    example = data.draw(ssd_examples(spec, **SIZES.get(backend, {})), label="example")
    assert_matches_reference(backend, spec, example.inputs(device), seed=example.seed + 1, variant="ssd")


def _inputs(backend, heads=4, headdim=3, L=37, N=5, groups=2, **flags):
    spec = ScanSpec(decay="head", grouped=groups > 1, **flags)
    return spec, random_scan_inputs(spec, 1, heads * headdim, L, N, groups=groups, device=device_of(backend),
                                    seed=3, heads=heads)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("direction", ["causal", "reverse", "bidirectional"])
def test_packed_sequences(backend, direction):
    spec, x = _inputs(backend, has_D=True, softplus=True, has_delta_bias=True, direction=direction)
    cu = torch.tensor([0, 9, 10, 37], device=x.u.device)
    if not supported(backend, ScanSpec(decay="head", direction=direction, varlen=True, grouped=True)):
        pytest.skip(f"{backend} has no packed {direction} per-head scan")
    y = sf.ssd_scan(x.u, x.delta, x.A, x.B, x.C, x.D, None, x.delta_bias, True, direction=direction,
                    cu_seqlens=cu, backend=backend)
    want = ssd_scan_ref(x.u, x.delta, x.A, x.B, x.C, x.D, None, x.delta_bias, True, direction=direction,
                        cu_seqlens=cu)
    assert rel_error(y, want) < 1e-5


@pytest.mark.parametrize("backend", BACKENDS)
def test_dt_limit_clamps_and_stops_gradients(backend):
    spec, x = _inputs(backend, has_delta_bias=True, softplus=True)
    leaves = [t.detach().requires_grad_() for t in (x.u, x.delta, x.delta_bias)]
    limit = (0.3, 0.7)  # dt lands around 0.05-1: both bounds clamp some steps
    y = sf.ssd_scan(leaves[0], leaves[1], x.A, x.B, x.C, None, None, leaves[2], True, dt_limit=limit,
                    backend=backend)
    ref_leaves = [t.detach().double().requires_grad_() for t in (x.u, x.delta, x.delta_bias)]
    want = ssd_scan_ref(ref_leaves[0], ref_leaves[1], x.A, x.B, x.C, None, None, ref_leaves[2], True,
                        dt_limit=limit)
    assert rel_error(y, want) < 1e-5
    dy = torch.randn_like(want)
    got = torch.autograd.grad(y, leaves, dy.to(y.dtype))
    expected = torch.autograd.grad(want, ref_leaves, dy)
    for g, e in zip(got, expected):
        assert rel_error(g, e) < 1e-4


def test_a_scalar_decay_per_head_is_a_mamba1_scan_with_A_and_dt_expanded():
    """The IR's claim, checked on the references: the two definitions agree."""
    _, x = _inputs("reference", has_D=True)
    headdim = x.u.shape[1] // x.A.shape[0]
    A = x.A.repeat_interleave(headdim)[:, None].expand(-1, x.B.shape[-2])
    y1 = selective_scan_ref(x.u, x.delta.repeat_interleave(headdim, 1), A, x.B, x.C, x.D)
    assert rel_error(ssd_scan_ref(x.u, x.delta, x.A, x.B, x.C, x.D), y1) < 1e-12


def test_per_head_D_and_states_have_mamba2_shapes():
    _, x = _inputs("reference")
    batch, dim, _ = x.u.shape
    heads, N = x.A.shape[0], x.B.shape[-2]
    D = torch.randn(heads)
    h0 = torch.randn(batch, heads, dim // heads, N)
    y, h = sf.ssd_scan(x.u, x.delta, x.A, x.B, x.C, D, initial_state=h0, return_last_state=True)
    want, want_h = ssd_scan_ref(x.u, x.delta, x.A, x.B, x.C, D, initial_state=h0, return_last_state=True)
    assert h.shape == (batch, heads, dim // heads, N) and h.dtype == torch.float32
    assert rel_error(y, want) < 1e-5 and rel_error(h, want_h) < 1e-5


def test_torch_compile_fullgraph():
    _, x = _inputs("reference", has_D=True)
    torch._dynamo.reset()
    f = torch.compile(lambda u, dt: sf.ssd_scan(u, dt, x.A, x.B, x.C, x.D, dt_softplus=True), fullgraph=True)
    u, dt = x.u.detach().requires_grad_(), x.delta.detach().requires_grad_()
    y = f(u, dt)
    y.sum().backward()
    assert rel_error(y, ssd_scan_ref(x.u, x.delta, x.A, x.B, x.C, x.D, dt_softplus=True)) < 1e-5
    assert u.grad is not None and dt.grad.shape == dt.shape


@pytest.mark.parametrize("change, message", [
    (dict(A=torch.randn(5)), "A: nheads = 5 .* must divide x's channels"),
    (dict(A=torch.randn(4, 2)), r"A: expected shape \(nheads,\)"),
    (dict(dt=torch.rand(1, 3, 37)), r"dt: expected shape \(batch, nheads, L\)"),
    (dict(B=torch.randn(1, 3, 5, 37), C=torch.randn(1, 3, 5, 37)), "B: expected .* ngroups dividing nheads"),
    (dict(D=torch.randn(7)), r"D: expected \(nheads,\)"),
    (dict(dt_limit=(1.0, 0.5)), "dt_limit: expected"),
    (dict(dt_limit=(0.0, math.nan)), "dt_limit: expected"),
    (dict(initial_state=torch.randn(1, 12, 5)), r"initial_state: expected shape \(batch, nheads, headdim, N\)"),
])
def test_bad_input_names_the_argument(change, message):
    _, x = _inputs("reference")
    args = dict(x=x.u, dt=x.delta, A=x.A, B=x.B, C=x.C) | change
    with pytest.raises((ValueError, TypeError), match=message):
        sf.ssd_scan(**args)


def test_unsupported_backend_says_why():
    _, x = _inputs("reference")
    with pytest.raises(NotImplementedError, match="numba_cuda.*per-head decay"):
        sf.ssd_scan(x.u, x.delta, x.A, x.B, x.C, backend="numba_cuda")
