"""The Numba CPU kernels of Mamba-2's scan (one scalar decay per head) against the float64 recurrence
:func:`scanforge.kernels.reference.ssd_scan_ref`: forward, final state and every gradient through
``sf.ssd_scan(..., backend="numba_cpu")``; and the decode step: ``selective_state_update`` with A, dt, dt_bias and D
expanded per channel decodes, token by token, exactly the SSD scan on every backend that runs a decode step.

One compiled forward and one backward of the default configs serve every case here (the direction and the optional
terms are run-time arguments of the kernels), so the cases are cheap once the first has compiled; one more test
compiles the other layout (FASTMATH off) with short chunks.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import pytest
import torch

import scanforge as sf
from scanforge import backends
from scanforge.backends.base import ScanInputs
from scanforge.kernels.ir import ScanSpec
from scanforge.kernels.reference import ssd_scan_ref
from scanforge.testing.accuracy import FORWARD_TOLERANCE, GRAD_TOLERANCE, rel_error

pytest.importorskip("numba")

_DTYPE = {"float32": torch.float32, "bfloat16": torch.bfloat16}


@dataclass(frozen=True)
class Case:
    direction: str = "causal"
    batch: int = 2
    heads: int = 4
    headdim: int = 3
    N: int = 5
    L: int = 37
    groups: int | None = 2  # None: shared B, C (batch, N, L)
    D: str | None = "head"  # "head" (nheads,), "channel" (dim,), None
    z: bool = True
    bias: bool = True
    softplus: bool = True
    dt_limit: tuple[float, float] = (0.0, math.inf)
    states: bool = False  # initial_state and return_last_state
    cu_seqlens: tuple[int, ...] | None = None
    views: bool = False  # non-contiguous x, dt, B, C
    dtype: str = "float32"


CASES = {
    # everything on; L spans two forward chunks and many backward checkpoints; dt clamped at both ends
    "causal-full": Case(L=300, dt_limit=(0.3, 0.9), states=True),
    "reverse-N40-shared-views": Case("reverse", N=40, groups=None, D="channel", z=False, softplus=False,
                                     dt_limit=(0.05, 1.5), states=True, views=True, L=45),
    "bidirectional-N12": Case("bidirectional", N=12, L=40, dt_limit=(0.0, 0.8)),
    "varlen-N16": Case(batch=1, N=16, L=64, cu_seqlens=(0, 5, 39, 64), dt_limit=(0.3, 2.0)),
    "varlen-bidirectional": Case("bidirectional", batch=1, L=50, cu_seqlens=(0, 33, 50), bias=False),
    "causal-bf16": Case(L=64, dt_limit=(0.3, 0.9), states=True, dtype="bfloat16"),
}


def _inputs(case: Case) -> dict[str, torch.Tensor]:
    """Leaf tensors (x, dt, z and B in the case's dtype; A, D, dt_bias, C, initial_state float32)."""
    g = torch.Generator().manual_seed(0)
    dtype = _DTYPE[case.dtype]
    b, H, P, N, L = case.batch, case.heads, case.headdim, case.N, case.L
    dim = H * P
    bc_shape = (b, N, L) if case.groups is None else (b, case.groups, N, L)

    def rand(*shape, scale=1.0, view=False):
        if view:  # stored time-major, seen (..., L): a strided view
            t = torch.randn(*shape[:-2], shape[-1], shape[-2], generator=g).transpose(-1, -2)
        else:
            t = torch.randn(*shape, generator=g)
        return t * scale

    out = dict(x=rand(b, dim, L, view=case.views).to(dtype), dt=rand(b, H, L, scale=0.7, view=case.views).to(dtype),
               A=-(0.3 + torch.rand(H, generator=g)), B=rand(*bc_shape, view=case.views).to(dtype),
               C=rand(*bc_shape, view=case.views))
    if not case.softplus:  # dt itself: mostly positive, some below the clamp's lower end
        out["dt"] = (out["dt"].float().abs() + 0.02).to(dtype)
    if case.D:
        out["D"] = torch.randn(H if case.D == "head" else dim, generator=g)
    if case.z:
        out["z"] = torch.randn(b, dim, L, generator=g).to(dtype)
    if case.bias:
        out["dt_bias"] = 0.5 * torch.randn(H, generator=g)
    if case.states:
        out["initial_state"] = torch.randn(b, H, P, N, generator=g)
    return out


def _run(fn, case: Case, leaves: dict, cotangents: tuple, **extra):
    """Outputs and gradients of fn on fresh copies of leaves; the loss is <outputs, cotangents>."""
    grads_of = {k: v.detach().clone().requires_grad_() for k, v in leaves.items()}
    kw = dict(dt_softplus=case.softplus, dt_limit=case.dt_limit, direction=case.direction,
              return_last_state=case.states,
              cu_seqlens=None if case.cu_seqlens is None else torch.tensor(case.cu_seqlens), **extra)
    out = fn(**grads_of, **kw)
    outs = out if isinstance(out, tuple) else (out,)
    loss = sum((o.to(torch.float64) * c).sum() for o, c in zip(outs, cotangents))
    loss.backward()
    return outs, {k: v.grad for k, v in grads_of.items()}


def _reference(**kw):
    return ssd_scan_ref(**{k: v.to(torch.float64) if torch.is_tensor(v) and v.is_floating_point() else v
                           for k, v in kw.items()})


@pytest.mark.parametrize("name", list(CASES))
def test_forward_state_and_gradients_match_the_reference(name):
    case = CASES[name]
    leaves = _inputs(case)
    x = leaves["x"]
    cot = [torch.randn(x.shape, dtype=torch.float64)]
    if case.states:
        cot.append(torch.randn(leaves["initial_state"].shape, dtype=torch.float64))
    outs, grads = _run(sf.ssd_scan, case, leaves, tuple(cot), backend="numba_cpu")
    ref_outs, ref_grads = _run(_reference, case, leaves, tuple(cot))
    fwd_tol, grad_tol = FORWARD_TOLERANCE[case.dtype], GRAD_TOLERANCE[case.dtype]
    assert outs[0].dtype == x.dtype and outs[0].shape == x.shape and outs[0].is_contiguous()
    assert rel_error(outs[0], ref_outs[0]) <= fwd_tol
    if case.states:
        assert outs[1].dtype == torch.float32 and outs[1].shape == leaves["initial_state"].shape
        assert rel_error(outs[1], ref_outs[1]) <= fwd_tol
    assert set(grads) == set(leaves)
    for k, g in grads.items():
        assert g.dtype == leaves[k].dtype and g.shape == leaves[k].shape, k
        err = rel_error(g, ref_grads[k])
        assert err <= grad_tol, f"d{k}: relative error {err:.2e} > {grad_tol}"


def test_an_unused_last_state_needs_no_cotangent():
    """return_last_state=True with only y in the loss: the state's cotangent is absent, not zeros passed in."""
    case = CASES["causal-full"]
    leaves = {k: v[..., :20] if k in ("x", "dt", "B", "C", "z") else v for k, v in _inputs(case).items()}
    small = Case(L=20, dt_limit=case.dt_limit, states=True)
    cot = (torch.randn(leaves["x"].shape, dtype=torch.float64),)
    _, grads = _run(sf.ssd_scan, small, leaves, cot, backend="numba_cpu")
    _, ref = _run(_reference, small, leaves, cot)
    for k in grads:
        assert rel_error(grads[k], ref[k]) <= GRAD_TOLERANCE["float32"], k


@pytest.mark.parametrize("backend", ["numba_cpu", "triton", "reference"])
def test_decode_step_with_a_per_channel_decay_is_the_ssd_scan(backend):
    """Mamba-2's decode step is selective_state_update with A (nheads,) expanded to (dim, N), dt, dt_bias per
    channel: token by token it gives ssd_scan_ref's outputs and final state."""
    case = Case(L=6)
    leaves = _inputs(case)
    x, dt, A, B, C, D, z, bias = (leaves[k] for k in ("x", "dt", "A", "B", "C", "D", "z", "dt_bias"))
    H, P, N = case.heads, case.headdim, case.N
    h0 = torch.randn(case.batch, H, P, N)
    ref_y, ref_state = ssd_scan_ref(*(t.double() for t in (x, dt, A, B, C, D, z, bias)), True,
                                    initial_state=h0.double(), return_last_state=True)
    A_ch = A.repeat_interleave(P)[:, None].expand(H * P, N)
    state = h0.reshape(case.batch, H * P, N).clone()
    ys = [sf.selective_state_update(state, x[..., t], dt[..., t].repeat_interleave(P, dim=1), A_ch, B[..., t],
                                    C[..., t], D.repeat_interleave(P), z[..., t], bias.repeat_interleave(P), True,
                                    backend=backend)
          for t in range(case.L)]
    assert rel_error(torch.stack(ys, dim=-1), ref_y) <= FORWARD_TOLERANCE["float32"]
    assert rel_error(state.view(case.batch, H, P, N), ref_state) <= FORWARD_TOLERANCE["float32"]


def test_the_other_configs_match_the_reference_backend():
    """FASTMATH off (the other state layout and halving sums) and short chunks (many forward chunks and backward
    checkpoints), one bidirectional varlen call: every output and gradient equals the reference backend's."""
    case = Case("bidirectional", batch=1, N=12, L=70, cu_seqlens=(0, 21, 70), dt_limit=(0.3, 0.9))
    t = _inputs(case)
    D = t["D"].repeat_interleave(case.headdim)
    spec = ScanSpec(direction=case.direction, has_D=True, has_z=True, has_delta_bias=True, softplus=True,
                    grouped=True, varlen=True, decay="head")
    inputs = ScanInputs(t["x"], t["dt"], t["A"], t["B"], t["C"], D, t["z"], t["dt_bias"], None, None, 0.5,
                        torch.tensor(case.cu_seqlens), case.dt_limit)
    numba_cpu, reference = backends.get("numba_cpu"), backends.get("reference")
    y = numba_cpu.scan_forward(spec, inputs, {"CHUNK_L": 64, "FASTMATH": False})[0]
    assert rel_error(y, reference.scan_forward(spec, inputs)[0]) <= FORWARD_TOLERANCE["float32"]
    dy = torch.randn(y.shape)
    grads = numba_cpu.scan_backward(spec, inputs, dy, None, {"CHUNK_L": 16, "FASTMATH": False})
    expected = reference.scan_backward(spec, inputs, dy, None)
    assert set(grads) == set(expected)
    for k, g in grads.items():
        assert rel_error(g, expected[k]) <= GRAD_TOLERANCE["float32"], k
