"""The decode step on every backend: one token equals the reference (fixed variants, and Hypothesis-drawn steps
with every stride, gate, dtype mix and memory layout of the inputs, the in-place state and window included),
token-by-token decoding equals the full scan (plain, strided and gated), the state and window are updated in
place."""

import dataclasses

import pytest
import torch
from helpers import DEVICE, backends_for, device_of, strides_for
from hypothesis import given
from hypothesis import strategies as st

import scanforge as sf
from scanforge.kernels.ir import ScanSpec
from scanforge.kernels.variants import DECODE_VARIANTS
from scanforge.testing import assert_matches_reference, decode_examples, random_decode_inputs, scan_specs
from scanforge.testing.accuracy import rel_error

BACKENDS = backends_for(ScanSpec(phase="decode"))


def _seq(batch=2, dim=6, L=24, N=4, groups=None, dtype=torch.float32, seed=0, device=DEVICE):
    g = torch.Generator().manual_seed(seed)
    bc = (batch, groups, N, L) if groups else (batch, N, L)
    return dict(u=torch.randn(batch, dim, L, generator=g).to(device, dtype),
                delta=(torch.randn(batch, dim, L, generator=g) * 0.5 - 1).to(device, dtype),
                A=(-torch.rand(dim, N, generator=g) - 0.3).to(device),
                B=torch.randn(*bc, generator=g).to(device, dtype),
                C=torch.randn(*bc, generator=g).to(device, dtype), D=torch.randn(dim, generator=g).to(device),
                z=torch.randn(batch, dim, L, generator=g).to(device, dtype),
                delta_bias=(torch.randn(dim, generator=g) * 0.1).to(device))


def _decode_all(backend, x, **variant):
    batch, dim, L = x["u"].shape
    N, device = x["A"].shape[1], x["u"].device
    groups = x["B"].shape[1] if x["B"].dim() == 4 else 1
    state = torch.zeros(batch, dim, N, device=device)
    pooled = variant.get("stride", 1) > 1 or variant.get("gate") is not None
    window = sf.DecodeWindow.zeros(batch, dim, N, groups, device=device) if pooled else None
    outs = []
    for t in range(L):
        gate = variant.get("gate")
        outs.append(sf.selective_state_update(
            state, x["u"][..., t], x["delta"][..., t], x["A"], x["B"][..., t], x["C"][..., t], x["D"], x["z"][..., t],
            x["delta_bias"], True, stride=variant.get("stride", 1), gate=None if gate is None else gate[:, t],
            gate_mode=variant.get("gate_mode", "hard"), window=window, backend=backend))
    return torch.stack(outs, -1), state


VARIANTS = {"plain": {}, "stride4": {"stride": 4}, "gated": {"gate": "pattern"},
            "gated-soft": {"gate": "random", "gate_mode": "soft"}}


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("groups", [None, 3], ids=["shared", "grouped"])
def test_decoding_token_by_token_equals_the_full_scan(backend, variant, groups):
    x = _seq(groups=groups, device=device_of(backend))
    kwargs = dict(VARIANTS[variant])
    if "gate" in kwargs:
        g = torch.Generator().manual_seed(5)
        gate = torch.rand(2, 24, generator=g) if kwargs["gate"] == "random" else (torch.rand(2, 24, generator=g) > 0.6)
        kwargs["gate"] = gate.float().to(device_of(backend))
    outs, state = _decode_all(backend, x, **kwargs)
    full, h_last = sf.selective_scan(**x, delta_softplus=True, return_last_state=True, backend="reference", **kwargs)
    assert rel_error(outs, full) < 1e-5
    assert rel_error(state, h_last) < 1e-5


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
@pytest.mark.parametrize("variant", DECODE_VARIANTS)
def test_one_step_matches_reference(backend, variant, dtype):
    """One step from a random state (and half-full window) against the reference: out, state, window."""
    spec = dataclasses.replace(DECODE_VARIANTS[variant], dtype=dtype)
    inputs = random_decode_inputs(spec, 2, 6, 4, groups=3 if spec.grouped else 1, device=device_of(backend), seed=3)
    assert_matches_reference(backend, spec, inputs, variant=variant)


@pytest.mark.parametrize("backend", BACKENDS)
@given(data=st.data())
def test_drawn_decode_steps_match_reference(backend, data):
    device = device_of(backend)
    spec = data.draw(scan_specs(phase="decode", strides=strides_for(backend), backend=backend, device=device),
                     label="spec")
    example = data.draw(decode_examples(spec), label="example")
    assert_matches_reference(backend, spec, example.inputs(device), variant=f"decode (drawn) {example.id}")


def test_window_is_required_exactly_for_pooled_steps():
    x = _seq(L=1)
    args = (torch.zeros(2, 6, 4, device=DEVICE), x["u"][..., 0], x["delta"][..., 0], x["A"], x["B"][..., 0],
            x["C"][..., 0])
    with pytest.raises(ValueError, match=r"^window: a strided or gated step needs"):
        sf.selective_state_update(*args, stride=2)
    with pytest.raises(ValueError, match=r"^window: only a strided or gated step"):
        sf.selective_state_update(*args, window=sf.DecodeWindow.zeros(2, 6, 4))
    with pytest.raises(ValueError, match=r"^state: expected shape"):
        sf.selective_state_update(torch.zeros(2, 6, 5), *args[1:])
    with pytest.raises(ValueError, match=r"^gate: expected shape \(batch,\)"):
        sf.selective_state_update(*args, gate=torch.rand(2, 3), window=sf.DecodeWindow.zeros(2, 6, 4))
