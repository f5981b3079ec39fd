"""Every backend's selective scan against the float64 reference: forward, last state and gradients.

Hypothesis draws shapes (L from 1 to ~300, not multiples of the chunk; dim not a multiple of the
channel block; N in {1, 4, 16}), dtypes, optional terms and strided layouts. Outputs are NaN-poisoned
(SCANFORGE_POISON=1, set in conftest), so an element a kernel forgets to write fails.
"""

import pytest
import torch
from helpers import DEVICE, kernel_backends, shape_id, supported
from hypothesis import given
from hypothesis import strategies as st

import scanforge as sf
from scanforge import backends
from scanforge.accuracy import (
    FORWARD_TOLERANCE,
    GRAD_TOLERANCE,
    check_scan,
    random_scan_inputs,
    reference_outputs,
    rel_error,
)
from scanforge.backends.base import SCAN_GRAD_NAMES
from scanforge.ir import ScanSpec

BACKENDS = kernel_backends()


def _run_public(backend, spec, x, dy, dh):
    """sf.selective_scan with autograd; returns (y, h_last or None, grads by name)."""
    leaves = [None if t is None else t.detach().clone().requires_grad_(t.dtype.is_floating_point)
              for t in x.tensors]
    u, delta, A, B, C, D, z, delta_bias, gate, h0 = leaves
    out = sf.selective_scan(u, delta, A, B, C, D, z, delta_bias, spec.softplus, direction=spec.direction.value,
                            stride=spec.stride, gate=gate, gate_threshold=x.gate_threshold,
                            gate_mode=spec.gate_mode.value, initial_state=h0,
                            return_last_state=spec.return_last_state, backend=backend)
    y, h_last = out if spec.return_last_state else (out, None)
    loss = (y.float() * dy.float()).sum()
    if h_last is not None:
        loss = loss + (h_last * dh).sum()
    loss.backward()
    grads = {n: t.grad for n, t in zip(SCAN_GRAD_NAMES, leaves) if t is not None}
    return y, h_last, grads


def _assert_matches_reference(backend, spec, x, seed=0):
    g = torch.Generator().manual_seed(seed + 1)
    dy = torch.randn(x.u.shape, generator=g).to(DEVICE, x.u.dtype)
    dh = torch.randn(x.u.shape[0], x.u.shape[1], x.A.shape[1], generator=g).to(DEVICE)
    y, h_last, grads = _run_public(backend, spec, x, dy, dh)
    y_ref, h_ref, g_ref = reference_outputs(spec, x, dy, dh if spec.return_last_state else None)
    assert y.dtype == x.u.dtype and y.shape == x.u.shape
    fwd_tol, grad_tol = FORWARD_TOLERANCE[spec.dtype], GRAD_TOLERANCE[spec.dtype]
    assert rel_error(y, y_ref) <= fwd_tol, f"y: {rel_error(y, y_ref):.3e}"
    if spec.return_last_state:
        assert h_last.dtype == torch.float32
        assert rel_error(h_last, h_ref) <= fwd_tol, f"h_last: {rel_error(h_last, h_ref):.3e}"
    for name, ref in g_ref.items():
        assert grads[name].dtype == getattr(x, name).dtype, name
        err = rel_error(grads[name], ref)
        assert err <= grad_tol, f"grad {name}: {err:.3e}"


#: Variant families, each a test of its own per backend (unsupported combinations are skipped).
FAMILIES = {
    "causal": dict(),
    "reverse": dict(direction="reverse"),
    "bidirectional": dict(direction="bidirectional"),
    "strided": dict(stride=3),
    "gated-hard": dict(gated=True),
    "gated-soft": dict(gated=True, gate_mode="soft"),
}


@st.composite
def scan_cases(draw, family):
    two_states = FAMILIES[family].get("direction") == "bidirectional"
    groups = draw(st.sampled_from([1, 1, 2, 3]))
    spec = ScanSpec(**FAMILIES[family], has_D=draw(st.booleans()), has_z=draw(st.booleans()),
                    has_delta_bias=draw(st.booleans()), softplus=draw(st.booleans()), grouped=groups > 1,
                    dtype=draw(st.sampled_from(["float32", "float16", "bfloat16"])),
                    has_initial_state=not two_states and draw(st.booleans()),
                    return_last_state=not two_states and draw(st.booleans()))
    shape = (draw(st.integers(1, 2)), groups * draw(st.integers(1, 4)), draw(st.integers(1, 300)),
             draw(st.sampled_from([1, 4, 16])))
    return spec, groups, shape, draw(st.booleans()), draw(st.integers(0, 2**16))


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("backend", BACKENDS)
@given(data=st.data())
def test_scan_matches_reference(backend, family, data):
    if not supported(backend, ScanSpec(**FAMILIES[family])):
        pytest.skip(f"{backend} does not implement {family} scans")
    spec, groups, (batch, dim, L, N), transpose, seed = data.draw(scan_cases(family))
    x = random_scan_inputs(spec, batch, dim, L, N, groups=groups, device=DEVICE, seed=seed, transpose=transpose)
    _assert_matches_reference(backend, spec, x, seed)


EDGE_SHAPES = [(1, 1, 1, 1), (1, 3, 31, 4), (2, 4, 32, 16), (1, 5, 33, 16), (2, 9, 64, 4), (1, 2, 65, 1)]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("shape", EDGE_SHAPES, ids=[shape_id(*s, "float32") for s in EDGE_SHAPES])
def test_chunk_and_block_edges(backend, shape):
    spec = ScanSpec(has_D=True, has_z=True, has_delta_bias=True, softplus=True, has_initial_state=True,
                    return_last_state=True)
    _assert_matches_reference(backend, spec, random_scan_inputs(spec, *shape, device=DEVICE, seed=7))


TRITON_CONFIGS = [dict(BLOCK_D=1, BLOCK_L=16, num_warps=1), dict(BLOCK_D=8, BLOCK_L=8, num_warps=2),
                  dict(BLOCK_D=2, BLOCK_L=128, num_warps=8)]


@pytest.mark.skipif("triton" not in BACKENDS, reason="triton is not installed")
@pytest.mark.parametrize("config", TRITON_CONFIGS, ids=lambda c: "-".join(f"{k}{v}" for k, v in c.items()))
def test_triton_tiling_configs_give_the_same_result(config):
    spec = ScanSpec(has_D=True, has_z=True, softplus=True, has_initial_state=True, return_last_state=True)
    x = random_scan_inputs(spec, 2, 5, 70, 4, device=DEVICE, seed=3)
    errors = check_scan(backends.get("triton"), spec, x, config=config)
    assert max(errors.values()) <= GRAD_TOLERANCE["float32"], errors


@pytest.mark.parametrize("backend", BACKENDS)
def test_unsupported_variant_is_a_clear_error(backend):
    spec = ScanSpec(direction="reverse")
    if supported(backend, spec):
        pytest.skip(f"{backend} implements reverse scans")
    x = random_scan_inputs(spec, 1, 2, 8, 2, device=DEVICE)
    with pytest.raises(NotImplementedError, match=f"backend '{backend}'.*reverse"):
        sf.selective_scan(*x.tensors[:5], direction="reverse", backend=backend)


def test_default_backend_runs_and_returns_input_dtype():
    spec = ScanSpec(dtype="bfloat16")
    x = random_scan_inputs(spec, 1, 3, 10, 4, device=DEVICE)
    y = sf.selective_scan(*x.tensors[:5])
    assert y.dtype == torch.bfloat16 and y.shape == (1, 3, 10)
