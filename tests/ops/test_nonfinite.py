"""Non-finite inputs (README "Non-finite values"): an inf follows IEEE arithmetic of the recurrence, on every
backend and in the reference, which resets a window to zeros rather than multiplying it by 0."""

import pytest
import torch
from helpers import backends_for, device_of
from hypothesis import given, settings

import scanforge as sf
from scanforge.kernels.ir import ScanSpec
from scanforge.kernels.reference import selective_scan_ref
from scanforge.testing.strategies import nonfinite_scan_inputs

INF = float("inf")


def _issue_inputs(name, value=INF):
    u, delta, A = torch.ones(1, 1, 4), torch.full((1, 1, 4), 0.5), -torch.ones(1, 1)
    B, C = torch.ones(1, 1, 4), torch.ones(1, 1, 4)
    x = dict(u=u, delta=delta, A=A, B=B, C=C)
    x[name][0, 0, 1] = value
    return x


def _same_nonfinite(out, ref):
    """inf and NaN at the same places (inf with the same sign), finite values close."""
    out, ref = out.double().cpu(), ref.double().cpu()
    assert torch.equal(torch.isnan(out), torch.isnan(ref)), (out, ref)
    assert torch.equal(torch.isposinf(out), torch.isposinf(ref)), (out, ref)
    assert torch.equal(torch.isneginf(out), torch.isneginf(ref)), (out, ref)
    finite = torch.isfinite(ref)
    torch.testing.assert_close(out[finite], ref[finite], rtol=1e-5, atol=1e-5)


def test_reference_follows_the_plain_recurrence():
    y = selective_scan_ref(**_issue_inputs("B"))
    assert y.flatten().tolist() == [0.5, INF, INF, INF]


@pytest.mark.parametrize("stride", [2, 3])
def test_reference_strided_window_starts_clean_after_an_inf(stride):
    y = selective_scan_ref(**_issue_inputs("B"), stride=stride)
    assert not torch.isnan(y).any(), y


@pytest.mark.parametrize("gate_mode", ["hard", "soft"])
def test_reference_gated_holds_without_reading_an_inf_window(gate_mode):
    gate = torch.tensor([[1.0, 0.0, 1.0, 1.0]])
    y = selective_scan_ref(**_issue_inputs("B"), gate=gate, gate_mode=gate_mode)
    assert y.flatten().tolist() == [0.5, 0.5, INF, INF]


@pytest.mark.parametrize("backend", backends_for())
@pytest.mark.parametrize("direction", ["causal", "reverse", "bidirectional"])
@pytest.mark.parametrize("name,value", [("u", INF), ("u", -INF), ("delta", INF), ("B", INF), ("C", INF)])
def test_every_backend_agrees_with_the_reference_on_inf(backend, direction, name, value):
    x = {k: v.to(device_of(backend)) for k, v in _issue_inputs(name, value).items()}
    ref = selective_scan_ref(**x, direction=direction)
    _same_nonfinite(sf.selective_scan(**x, direction=direction, backend=backend), ref)


@pytest.mark.parametrize("backend", [b for b in backends_for() if b.values[0] != "reference"])
@pytest.mark.parametrize("options", [dict(stride=2), dict(gate=torch.tensor([[1.0, 0.0, 1.0, 1.0]]))],
                         ids=["strided", "gated"])
def test_pooled_kernels_reset_windows_without_multiplying(backend, options):
    x = {k: v.to(device_of(backend)) for k, v in _issue_inputs("B").items()}
    options = {k: v.to(device_of(backend)) if isinstance(v, torch.Tensor) else v for k, v in options.items()}
    _same_nonfinite(sf.selective_scan(**x, **options, backend=backend), selective_scan_ref(**x, **options))


@settings(max_examples=25, deadline=None)
@given(nonfinite_scan_inputs(ScanSpec(), inputs=("delta", "B", "C"), max_L=40, max_dim=2, Ns=(1, 4)))
def test_numba_cpu_matches_the_reference_with_an_inf_anywhere(x):
    ref = selective_scan_ref(*x.tensors[:5])
    _same_nonfinite(sf.selective_scan(*x.tensors[:5], backend="numba_cpu"), ref)


@settings(max_examples=10, deadline=None)
@given(nonfinite_scan_inputs(ScanSpec(), inputs=("u",)))
def test_strategy_puts_one_inf_in_the_named_input(x):
    assert torch.isinf(x.u).sum() == 1 and torch.isfinite(x.delta).all()
