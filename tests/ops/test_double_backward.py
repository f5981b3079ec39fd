"""Double backward is refused with one clear error (README "Double backward")."""

import pytest
import torch

import scanforge as sf

BACKENDS = ["reference", "numba_cpu"]


@pytest.mark.parametrize("backend", BACKENDS)
def test_scan_double_backward_says_it_is_not_supported(backend):
    g = torch.Generator().manual_seed(0)
    u = torch.randn(2, 4, 5, generator=g, requires_grad=True)
    delta, A = torch.rand(2, 4, 5, generator=g), -torch.rand(4, 3, generator=g)
    B, C = torch.randn(2, 3, 5, generator=g), torch.randn(2, 3, 5, generator=g)
    y = sf.selective_scan(u, delta, A, B, C, backend=backend)
    (du,) = torch.autograd.grad((y ** 2).sum(), u, create_graph=True)
    with pytest.raises(NotImplementedError, match=r"^selective_scan: double backward .* is not supported"):
        torch.autograd.grad(du.sum(), u)


@pytest.mark.parametrize("backend", BACKENDS)
def test_gather_double_backward_says_it_is_not_supported(backend):
    x = torch.randn(2, 6, 3, requires_grad=True)
    scores = torch.randn(2, 6, requires_grad=True)
    out, _ = sf.topk_gather(x, 3, scores, weight="sigmoid", backend=backend)
    (dscores,) = torch.autograd.grad((out ** 2).sum(), scores, create_graph=True)
    with pytest.raises(NotImplementedError, match=r"^topk_gather: double backward .* is not supported"):
        torch.autograd.grad(dscores.sum(), scores)


def test_first_order_gradients_with_create_graph_still_work():
    u = torch.randn(1, 2, 4, requires_grad=True)
    y = sf.selective_scan(u, torch.rand(1, 2, 4), -torch.rand(2, 3), torch.randn(1, 3, 4), torch.randn(1, 3, 4),
                          backend="reference")
    (du,) = torch.autograd.grad(y.sum(), u, create_graph=True)
    assert du.shape == u.shape and torch.isfinite(du).all()
