"""Every backend's top-k gather against the float64 reference: exact indices, values, gradients."""

import pytest
import torch
from helpers import DEVICE, backends_for, device_of, gather_sizes
from hypothesis import given
from hypothesis import strategies as st

import scanforge as sf
from scanforge import backends
from scanforge.kernels.ir import GatherSpec
from scanforge.kernels.reference import topk_gather_ref
from scanforge.testing import assert_matches_reference, gather_examples, gather_specs
from scanforge.testing.accuracy import check_gather, passes, random_gather_inputs

BACKENDS = backends_for(GatherSpec())


@pytest.mark.parametrize("backend", BACKENDS)
@given(data=st.data())
def test_topk_gather_matches_reference(backend, data):
    spec = data.draw(gather_specs(), label="spec")
    example = data.draw(gather_examples(spec, **gather_sizes(backend)), label="example")
    assert_matches_reference(backend, spec, example.inputs(device_of(backend)))


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("summary", [None, "mean", "mean_dropped"])
@pytest.mark.parametrize("weight", [None, "sigmoid"])
@pytest.mark.parametrize("learned", [False, True], ids=["l2norm", "scores"])
def test_public_op_values_and_autograd(backend, summary, weight, learned):
    g, device = torch.Generator().manual_seed(11), device_of(backend)
    x = torch.randn(2, 45, 33, generator=g).to(device).requires_grad_()
    scores = torch.randn(2, 45, generator=g).to(device).requires_grad_() if learned else None
    out, idx = sf.topk_gather(x, 12, scores, summary=summary, weight=weight, backend=backend)
    assert out.shape == (2, 12 + (summary is not None), 33) and idx.dtype == torch.int64
    cotangent = torch.randn(out.shape, generator=g).to(device)
    (out * cotangent).sum().backward()
    leaves = [x.detach().double().requires_grad_()] + ([scores.detach().double().requires_grad_()] if learned else [])
    ref, ref_idx = topk_gather_ref(leaves[0], 12, leaves[1] if learned else None, summary=summary, weight=weight)
    (ref * cotangent.double()).sum().backward()
    assert torch.equal(idx.cpu(), ref_idx)
    torch.testing.assert_close(out.double(), ref, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(x.grad.double(), leaves[0].grad, rtol=1e-5, atol=1e-6)
    if learned:
        expected = leaves[1].grad if leaves[1].grad is not None else torch.zeros_like(leaves[1])
        torch.testing.assert_close(scores.grad.double(), expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("backend", BACKENDS)
def test_equal_scores_go_to_the_lower_index(backend):
    device = device_of(backend)
    x = torch.ones(1, 10, 4, device=device)  # every norm ties
    _, idx = sf.topk_gather(x, 4, backend=backend)
    assert idx.tolist() == [[0, 1, 2, 3]]
    scores = torch.tensor([[1.0, 3.0, 3.0, 2.0, 3.0]], device=device)
    _, idx = sf.topk_gather(torch.randn(1, 5, 3, device=device), 3, scores, keep_order=False, backend=backend)
    assert idx.tolist() == [[1, 2, 4]]


@pytest.mark.skipif(backends.get("triton").unavailable_reason() is not None, reason="triton is not installed")
@pytest.mark.parametrize("config", [dict(BLOCK_D=8, BLOCK_J=4, SPLITS=3, num_warps=2),
                                    dict(BLOCK_D=64, BLOCK_J=64, SPLITS=1, num_warps=4)], ids=["split3", "wide"])
def test_triton_gather_configs(config):
    spec = GatherSpec(summary="mean_dropped", weight="sigmoid")
    x, scores = random_gather_inputs(spec, 2, 50, 37, device=device_of("triton"), seed=4)
    errors = check_gather(backends.get("triton"), spec, x, 20, scores, config=config, grads=False)
    assert passes(errors, "float32"), errors


def test_llava_shape_l2_topk():
    """196 ViT tokens, keep 64 (3.06x compression) plus the mean of the dropped ones."""
    spec = GatherSpec(summary="mean_dropped")
    x, _ = random_gather_inputs(spec, 2, 196, 48, device=DEVICE, seed=9)
    backend = backends.resolve(None, spec, x.device)
    errors = check_gather(backends.get(backend), spec, x, 64, None)
    assert passes(errors, "float32"), errors


@pytest.mark.parametrize("backend", BACKENDS)
def test_torch_compile_fullgraph(backend):
    torch._dynamo.reset()
    x = torch.randn(2, 30, 16, device=device_of(backend))
    w = torch.randn(16, device=device_of(backend), requires_grad=True)

    def fn(x, w):
        scores = x @ w
        out, _ = sf.topk_gather(x, 8, scores, summary="mean", weight="sigmoid", backend=backend)
        return out.square().sum()

    eager = torch.autograd.grad(fn(x, w), w)[0]
    compiled = torch.autograd.grad(torch.compile(fn, fullgraph=True)(x, w), w)[0]
    torch.testing.assert_close(compiled, eager, rtol=1e-4, atol=1e-5)  # inductor reorders the fp32 sums of x @ w
