"""Every backend's selective scan against the float64 reference: forward, last state and gradients.

Hypothesis draws from the public strategies of :mod:`scanforge.testing`: every family, the strided and gated
ones in every direction the backend implements, strides 2 to 9, shapes (L from 1 to ~300, favouring 1 and
either side of chunk sizes; dim not a multiple of the channel block; N in {1, 4, 16}), dtypes with the
half-precision mixes of A, B, C, D, delta_bias, gate and initial state that the op accepts, optional terms,
transposed, offset and strided views, and extreme dt. Outputs are NaN-poisoned (SCANFORGE_POISON=1, set in
conftest), so an element a kernel forgets to write fails (test_poisoning.py proves it for each backend).
"""

import pytest
import torch
from helpers import DEVICE, backends_for, device_of, scan_sizes, shape_id, strides_for, supported
from hypothesis import given
from hypothesis import strategies as st

import scanforge as sf
from scanforge import backends
from scanforge.kernels.ir import ScanSpec
from scanforge.testing import SCAN_FAMILIES, assert_matches_reference, scan_examples, scan_specs
from scanforge.testing.accuracy import GRAD_TOLERANCE, check_scan, random_scan_inputs

BACKENDS = backends_for()


@pytest.mark.parametrize("family", SCAN_FAMILIES)
@pytest.mark.parametrize("backend", BACKENDS)
@given(data=st.data())
def test_scan_matches_reference(backend, family, data):
    device = device_of(backend)
    try:
        specs = scan_specs([family], strides=strides_for(backend), backend=backend, device=device)
    except ValueError:
        pytest.skip(f"{backend} does not implement {family} scans")
    spec = data.draw(specs, label="spec")
    example = data.draw(scan_examples(spec, **scan_sizes(backend)), label="example")
    assert_matches_reference(backend, spec, example.inputs(device), seed=example.seed + 1, variant=family)


EDGE_SHAPES = [(1, 1, 1, 1), (1, 3, 31, 4), (2, 4, 32, 16), (1, 5, 33, 16), (2, 9, 64, 4), (1, 2, 65, 1)]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("shape", EDGE_SHAPES, ids=[shape_id(*s, "float32") for s in EDGE_SHAPES])
def test_chunk_and_block_edges(backend, shape):
    spec = ScanSpec(has_D=True, has_z=True, has_delta_bias=True, softplus=True, has_initial_state=True,
                    return_last_state=True)
    assert_matches_reference(backend, spec, random_scan_inputs(spec, *shape, device=device_of(backend), seed=7))


TRITON_CONFIGS = [dict(BLOCK_D=1, BLOCK_L=16, num_warps=1), dict(BLOCK_D=8, BLOCK_L=8, num_warps=2),
                  dict(BLOCK_D=2, BLOCK_L=128, num_warps=8)]


@pytest.mark.skipif(backends.get("triton").unavailable_reason() is not None, reason="triton is not installed")
@pytest.mark.parametrize("config", TRITON_CONFIGS, ids=lambda c: "-".join(f"{k}{v}" for k, v in c.items()))
def test_triton_tiling_configs_give_the_same_result(config):
    spec = ScanSpec(has_D=True, has_z=True, softplus=True, has_initial_state=True, return_last_state=True)
    x = random_scan_inputs(spec, 2, 5, 70, 4, device=device_of("triton"), seed=3)
    errors = check_scan(backends.get("triton"), spec, x, config=config)
    assert max(errors.values()) <= GRAD_TOLERANCE["float32"], errors


@pytest.mark.parametrize("backend", BACKENDS)
def test_unsupported_variant_is_a_clear_error(backend):
    spec = ScanSpec(direction="reverse", stride=2)
    if supported(backend, spec):
        pytest.skip(f"{backend} implements reverse strided scans")
    x = random_scan_inputs(spec, 1, 2, 8, 2, device=device_of(backend))
    with pytest.raises(NotImplementedError, match=f"backend '{backend}' cannot run this scan: .*causal"):
        sf.selective_scan(*x.tensors[:5], direction="reverse", stride=2, backend=backend)


def test_default_backend_runs_and_returns_input_dtype():
    spec = ScanSpec(dtype="bfloat16")
    x = random_scan_inputs(spec, 1, 3, 10, 4, device=DEVICE)
    y = sf.selective_scan(*x.tensors[:5])
    assert y.dtype == torch.bfloat16 and y.shape == (1, 3, 10)
