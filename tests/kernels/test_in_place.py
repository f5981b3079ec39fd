"""Ops that write in place refuse outputs whose elements overlap, or that share memory with another
argument, before any kernel runs (README "In-place outputs")."""

import pytest
import torch
from helpers import backends_for, device_of

import scanforge as sf
from scanforge.kernels.tensor_facts import overlaps_itself

b, d, N = 2, 4, 3


def _step_inputs(device):
    g = torch.Generator().manual_seed(0)
    x, dt = torch.randn(b, d, generator=g), torch.rand(b, d, generator=g)
    A = -torch.rand(d, N, generator=g)
    B, C = torch.randn(b, N, generator=g), torch.randn(b, N, generator=g)
    return [t.to(device) for t in (x, dt, A, B, C)]


@pytest.mark.parametrize("backend", backends_for())
def test_expanded_state_is_refused_by_every_backend(backend):
    device = device_of(backend)
    state = torch.randn(1, d, N, device=device).expand(b, d, N)
    before = state.clone()
    with pytest.raises(ValueError, match=r"^state: expected a tensor whose elements do not overlap .*"
                                         r"strides \(0, 3, 1\)"):
        sf.selective_state_update(state, *_step_inputs(device), backend=backend)
    assert torch.equal(state, before)


@pytest.mark.parametrize("field", ["acc_dt", "acc_u", "acc_B", "count"])
def test_expanded_window_tensor_is_refused(field):
    window = sf.DecodeWindow.zeros(b, d, N)
    t = getattr(window, field)
    setattr(window, field, t[:1].expand(t.shape))
    with pytest.raises(ValueError, match=rf"^window\.{field}: expected a tensor whose elements do not overlap"):
        sf.selective_state_update(torch.zeros(b, d, N), *_step_inputs("cpu"), stride=2, window=window,
                                  backend="reference")


def test_state_sharing_memory_with_an_input_is_refused():
    x, dt, A, B, C = _step_inputs("cpu")
    buffer = torch.zeros(b, d, N + 1)
    state, x_alias = buffer[..., :N], buffer[..., N]
    with pytest.raises(ValueError, match=r"^state: expected memory of its own .* sharing memory with x"):
        sf.selective_state_update(state, x_alias, dt, A, B, C, backend="reference")


def test_window_tensors_sharing_memory_are_refused():
    window = sf.DecodeWindow.zeros(b, d, N)
    window.acc_u = window.acc_dt
    with pytest.raises(ValueError, match=r"^window\.acc_dt: expected memory of its own .* window\.acc_u"):
        sf.selective_state_update(torch.zeros(b, d, N), *_step_inputs("cpu"), stride=2, window=window,
                                  backend="reference")


def test_non_overlapping_views_are_accepted():
    """A slice, a transposed state and a state inside a larger cache are fine: no element is written twice."""
    x, dt, A, B, C = _step_inputs("cpu")
    cache = torch.zeros(3, b, d, N)
    for state in (cache[1], torch.zeros(b, N, d).transpose(1, 2), torch.zeros(b, d, 2 * N)[..., ::2]):
        ref = state.clone()
        out = sf.selective_state_update(state, x, dt, A, B, C, backend="reference")
        expected = sf.selective_state_update(ref, x, dt, A, B, C, backend="reference")
        assert torch.equal(out, expected) and torch.equal(state, ref)


@pytest.mark.parametrize("shape,stride,overlaps", [
    ((2, 4, 3), (12, 3, 1), False), ((2, 4, 3), (0, 3, 1), True), ((2, 4, 3), (1, 2, 8), False),
    ((2, 4, 3), (12, 3, 2), True),  # interleaved, not overlapping: refused too (the test is sufficient only)
    ((2, 4, 3), (12, 2, 1), True), ((1, 4, 1), (0, 1, 0), False),
    ((2, 2), (1, 1), True), ((3, 3), (3, 2), True),
])
def test_overlap_test_on_strides(shape, stride, overlaps):
    t = torch.zeros(100).as_strided(shape, stride)
    assert overlaps_itself(t) is overlaps
