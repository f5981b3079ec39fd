"""The laws that tie the scan variants together, checked on every backend that implements them."""

import pytest
import torch
from helpers import DEVICE, kernel_backends, supported

import scanforge as sf
from scanforge.accuracy import rel_error
from scanforge.ir import ScanSpec

BACKENDS = kernel_backends()


def _inputs(batch=2, dim=4, L=45, N=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    return dict(u=torch.randn(batch, dim, L, generator=g).to(DEVICE),
                delta=(torch.rand(batch, dim, L, generator=g) * 0.3 + 0.05).to(DEVICE),
                A=(-torch.rand(dim, N, generator=g) - 0.3).to(DEVICE),
                B=torch.randn(batch, N, L, generator=g).to(DEVICE), C=torch.randn(batch, N, L, generator=g).to(DEVICE),
                D=torch.randn(dim, generator=g).to(DEVICE))


def _needs(backend, **variant):
    if not supported(backend, ScanSpec(**variant)):
        pytest.skip(f"{backend} does not implement {variant}")


def _flip(x):
    return {k: (v.flip(-1) if k in ("u", "delta", "B", "C") else v) for k, v in x.items()}


@pytest.mark.parametrize("backend", BACKENDS)
def test_reverse_is_flip_causal_flip(backend):
    _needs(backend, direction="reverse")
    x = _inputs()
    rev = sf.selective_scan(**x, direction="reverse", backend=backend)
    assert rel_error(rev, sf.selective_scan(**_flip(x), backend=backend).flip(-1)) < 1e-6


@pytest.mark.parametrize("backend", BACKENDS)
def test_bidirectional_is_causal_plus_reverse_minus_skip(backend):
    _needs(backend, direction="bidirectional")
    x = _inputs()
    bi = sf.selective_scan(**x, direction="bidirectional", backend=backend)
    causal = sf.selective_scan(**x, backend=backend)
    rev = sf.selective_scan(**x, direction="reverse", backend=backend)
    assert rel_error(bi, causal + rev - x["D"][:, None] * x["u"]) < 1e-6


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("direction", ["causal", "reverse"])
def test_chunked_calls_with_states_equal_one_call(backend, direction):
    _needs(backend, direction=direction, has_initial_state=True, return_last_state=True)
    x, split = _inputs(L=70), 29
    whole, h_whole = sf.selective_scan(**x, direction=direction, return_last_state=True, backend=backend)
    part = lambda sl: {k: (v[..., sl] if k in ("u", "delta", "B", "C") else v) for k, v in x.items()}  # noqa: E731
    first, second = (part(slice(0, split)), part(slice(split, None)))
    if direction == "reverse":  # the reverse scan starts from the end
        first, second = second, first
    y1, h1 = sf.selective_scan(**first, direction=direction, return_last_state=True, backend=backend)
    y2, h2 = sf.selective_scan(**second, direction=direction, initial_state=h1, return_last_state=True,
                               backend=backend)
    joined = torch.cat([y1, y2] if direction == "causal" else [y2, y1], dim=-1)
    assert rel_error(joined, whole) < 1e-6 and rel_error(h2, h_whole) < 1e-6


@pytest.mark.parametrize("backend", BACKENDS)
def test_stride_one_is_exactly_causal(backend):
    _needs(backend, stride=1)
    x = _inputs()
    assert torch.equal(sf.selective_scan(**x, stride=1, backend=backend), sf.selective_scan(**x, backend=backend))


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("mode", ["hard", "soft"])
def test_gate_all_ones_is_causal(backend, mode):
    _needs(backend, gated=True, gate_mode=mode)
    x = _inputs()
    gate = torch.ones(2, 45, device=DEVICE)
    y = sf.selective_scan(**x, gate=gate, gate_mode=mode, backend=backend)
    assert rel_error(y, sf.selective_scan(**x, backend=backend)) < 1e-6


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("k", [2, 5])
def test_gate_every_kth_step_is_stride_k(backend, k):
    _needs(backend, gated=True)
    _needs(backend, stride=k)
    L = 9 * k
    x = _inputs(L=L)
    gate = torch.zeros(2, L, device=DEVICE)
    gate[:, k - 1 :: k] = 1.0
    y = sf.selective_scan(**x, gate=gate, backend=backend)
    assert rel_error(y, sf.selective_scan(**x, stride=k, backend=backend)) < 1e-6


@pytest.mark.parametrize("backend", BACKENDS)
def test_grouped_with_one_group_equals_shared_bc(backend):
    _needs(backend, grouped=True)
    x = _inputs()
    grouped = {**x, "B": x["B"][:, None], "C": x["C"][:, None]}
    assert rel_error(sf.selective_scan(**grouped, backend=backend), sf.selective_scan(**x, backend=backend)) < 1e-6


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("direction", ["causal", "reverse", "bidirectional"])
def test_varlen_equals_separate_calls_per_sequence(backend, direction):
    _needs(backend, direction=direction, varlen=True)
    x = _inputs(batch=1, L=70)
    z = torch.randn(1, 4, 70, device=DEVICE)
    cu = torch.tensor([0, 5, 38, 39, 70], dtype=torch.int32, device=DEVICE)
    leaves = {k: v.clone().requires_grad_() for k, v in x.items()}
    packed = sf.selective_scan(**leaves, z=z, delta_softplus=True, direction=direction, cu_seqlens=cu,
                               backend=backend)
    packed.square().sum().backward()
    separate_leaves = {k: v.clone().requires_grad_() for k, v in x.items()}
    parts = []
    for a, b in zip(cu[:-1].tolist(), cu[1:].tolist()):
        seq = {k: (v[..., a:b] if k in ("u", "delta", "B", "C") else v) for k, v in separate_leaves.items()}
        parts.append(sf.selective_scan(**seq, z=z[..., a:b], delta_softplus=True, direction=direction,
                                       backend=backend))
    separate = torch.cat(parts, -1)
    separate.square().sum().backward()
    assert rel_error(packed, separate) < 1e-6
    for name in x:
        assert rel_error(leaves[name].grad, separate_leaves[name].grad) < 1e-5, name
