"""torch.compile(fullgraph=True) with dynamic shapes: the argument checks trace (README "torch.compile and
dynamic shapes"), forward and backward, for the scan and the decode step."""

import pytest
import torch

import scanforge as sf
from scanforge.kernels.reference import selective_scan_ref

b, d, N = 2, 4, 3


def _scan(u, delta, A, B, C, gate, threshold):
    return sf.selective_scan(u, delta, A, B, C, gate=gate, gate_threshold=threshold, backend="reference")


def _step(state, x, dt, A, B, C, threshold):
    return sf.selective_state_update(state, x, dt, A, B, C, gate_threshold=threshold, backend="reference")


def _scan_inputs(L, seed=0):
    g = torch.Generator().manual_seed(seed)
    u = torch.randn(b, d, L, generator=g).requires_grad_()
    return (u, torch.rand(b, d, L, generator=g), -torch.rand(d, N, generator=g), torch.randn(b, N, L, generator=g),
            torch.randn(b, N, L, generator=g), torch.rand(b, L, generator=g))


@pytest.mark.parametrize("dynamic", [True, None, "mark_dynamic"])
def test_scan_compiles_fullgraph_across_lengths(dynamic):
    torch._dynamo.reset()
    fn = torch.compile(_scan, fullgraph=True, dynamic=None if dynamic == "mark_dynamic" else dynamic)
    for L in (5, 7, 11):
        x = _scan_inputs(L, seed=L)
        if dynamic == "mark_dynamic":
            for t in (x[0], x[1], x[3], x[4], x[5]):
                torch._dynamo.mark_dynamic(t, t.dim() - 1)
        y = fn(*x, 0.5)
        (du,) = torch.autograd.grad(y.sum(), x[0])
        u = x[0].detach().requires_grad_()
        ref = selective_scan_ref(u, *x[1:5], gate=x[5], gate_threshold=0.5)
        (ref_du,) = torch.autograd.grad(ref.sum(), u)
        torch.testing.assert_close(y.double(), ref, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(du, ref_du, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("dynamic", [True, None, "mark_dynamic"])
def test_decode_step_compiles_fullgraph_across_batches(dynamic):
    torch._dynamo.reset()
    fn = torch.compile(_step, fullgraph=True, dynamic=None if dynamic == "mark_dynamic" else dynamic)
    for batch in (2, 3, 5):
        g = torch.Generator().manual_seed(batch)
        state = torch.randn(batch, d, N, generator=g)
        x = torch.randn(batch, d, generator=g)  # the decode step is inference only: it has no backward
        args = (torch.rand(batch, d, generator=g), -torch.rand(d, N, generator=g),
                torch.randn(batch, N, generator=g), torch.randn(batch, N, generator=g))
        if dynamic == "mark_dynamic":
            for t in (state, x, *args[:1], *args[2:]):
                torch._dynamo.mark_dynamic(t, 0)
        expected_state = state.clone()
        expected = sf.selective_state_update(expected_state, x, *args, backend="reference")
        out = fn(state, x, *args, 0.3)
        torch.testing.assert_close(out, expected)
        torch.testing.assert_close(state, expected_state)


def test_non_finite_threshold_is_still_refused_under_compile():
    torch._dynamo.reset()
    fn = torch.compile(_scan, fullgraph=True, dynamic=True)
    with pytest.raises(Exception, match="gate_threshold: expected a finite float"):
        fn(*_scan_inputs(5), float("inf"))
