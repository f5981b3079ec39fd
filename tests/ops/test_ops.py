"""The torch.library registration: schema/fake/autograd consistency and torch.compile without graph breaks."""

import math

import pytest
import torch
from helpers import backends_for, device_of

import scanforge as sf
from scanforge.kernels.ir import GatherSpec, ScanSpec
from scanforge.testing.accuracy import random_scan_inputs, rel_error

SPEC = ScanSpec(has_D=True, has_z=True, has_delta_bias=True, softplus=True, has_initial_state=True,
                return_last_state=True)


def _op_args(x, backend):
    return (*x.tensors, None, True, "causal", 1, 0.5, "hard", True, "channel", 0.0, math.inf, backend)


@pytest.mark.parametrize("backend", backends_for())
def test_opcheck(backend):
    x = random_scan_inputs(SPEC, 1, 3, 20, 4, device=device_of(backend))
    args = tuple(t.requires_grad_() if isinstance(t, torch.Tensor) else t for t in _op_args(x, backend))
    torch.library.opcheck(torch.ops.scanforge.selective_scan.default, args,
                          test_utils=("test_schema", "test_autograd_registration", "test_faketensor"))


def test_fake_impl_gives_output_metadata():
    from torch._subclasses.fake_tensor import FakeTensorMode

    x = random_scan_inputs(ScanSpec(dtype="bfloat16", return_last_state=True), 2, 3, 7, 5)
    with FakeTensorMode(allow_non_fake_inputs=True):
        y, h = torch.ops.scanforge.selective_scan(*x.tensors, None, False, "causal", 1, 0.5, "hard", True,
                                                  "channel", 0.0, math.inf, "reference")
    assert y.shape == (2, 3, 7) and y.dtype == torch.bfloat16
    assert h.shape == (2, 3, 5) and h.dtype == torch.float32


@pytest.mark.parametrize("backend", backends_for())
def test_torch_compile_fullgraph_forward_and_backward(backend):
    torch._dynamo.reset()
    x = random_scan_inputs(SPEC, 1, 3, 20, 4, device=device_of(backend), seed=5)

    def loss_fn(u, delta, A, B, C, D, z, delta_bias, h0):
        y, h = sf.selective_scan(u, delta, A, B, C, D, z, delta_bias, True, initial_state=h0,
                                 return_last_state=True, backend=backend)
        return (y * y).sum() + h.sum()

    def grads(fn):
        leaves = [t.detach().clone().requires_grad_() for t in x.tensors if t is not None]
        fn(*leaves).backward()
        return [t.grad for t in leaves]

    compiled = torch.compile(loss_fn, fullgraph=True)
    for eager, comp in zip(grads(loss_fn), grads(compiled)):
        assert rel_error(comp, eager) < 1e-6


@pytest.mark.parametrize("backend", backends_for(GatherSpec()))
def test_opcheck_topk_gather(backend):
    x = torch.randn(2, 17, 6, device=device_of(backend), requires_grad=True)
    scores = torch.randn(2, 17, device=device_of(backend), requires_grad=True)
    torch.library.opcheck(torch.ops.scanforge.topk_gather.default, (x, 5, scores, True, "mean", "sigmoid", backend),
                          test_utils=("test_schema", "test_autograd_registration", "test_faketensor"))


@pytest.mark.parametrize("backend", backends_for(ScanSpec(phase="decode")))
@pytest.mark.parametrize("pooled", [False, True], ids=["plain", "strided"])
def test_opcheck_decode_step(backend, pooled):
    g, device = torch.Generator().manual_seed(2), device_of(backend)
    state = torch.randn(2, 4, 3, generator=g).to(device)
    x, dt = torch.randn(2, 4, generator=g).to(device), torch.rand(2, 4, generator=g).to(device)
    A, B, C = -torch.rand(4, 3).to(device), torch.randn(2, 3).to(device), torch.randn(2, 3).to(device)
    window = sf.DecodeWindow.zeros(2, 4, 3, device=device).tensors() if pooled else (None,) * 4
    args = (state, x, dt, A, B, C, None, None, None, None, *window, False, 3 if pooled else 1, 0.5, "hard", backend)
    torch.library.opcheck(torch.ops.scanforge.selective_state_update.default, args,
                          test_utils=("test_schema", "test_faketensor"))
