"""The Triton kernels of Mamba-2's scan (per-head decay, chunked "state space duality" form) against the float64
plain recurrence :func:`scanforge.kernels.reference.ssd_scan_ref`: output, last state and every gradient.

Interpreted on CPU (tiny shapes); the chunk edges are exercised by forcing CHUNK=16 with L=37 (three chunks,
the last one partial) through the backend's ``config``, the op path (``sf.ssd_scan``) runs the default config.
Outputs are NaN-poisoned (SCANFORGE_POISON=1, conftest), so an element a kernel forgets to write fails.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import pytest
import torch
from helpers import device_of

import scanforge as sf
from scanforge import backends
from scanforge.backends.base import ScanInputs
from scanforge.kernels.reference import ssd_scan_ref
from scanforge.kernels.validate import check_ssd_args
from scanforge.testing.accuracy import FORWARD_TOLERANCE, GRAD_TOLERANCE, rel_error

pytestmark = pytest.mark.skipif(backends.get("triton").unavailable_reason() is not None,
                                reason="triton is not installed")

DEVICE = device_of("triton")
SMALL = dict(CHUNK=16, BLOCK_P=16, BLOCK_N=16, num_warps=2, num_stages=1)
_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}


@dataclass(frozen=True)
class Case:
    batch: int = 2
    heads: int = 2
    headdim: int = 3
    N: int = 5
    L: int = 37
    groups: int = 0  # 0: B, C (batch, N, L); else (batch, groups, N, L)
    direction: str = "causal"
    D: str | None = None  # "head" (nheads,) or "channel" (dim,)
    z: bool = False
    bias: bool = False  # dt_bias and the softplus
    dt_limit: tuple[float, float] = (0.0, math.inf)
    h0: bool = False
    last: bool = False
    seqlens: tuple[int, ...] | None = None  # varlen: batch 1, these lengths packed along L
    dtype: str = "float32"
    views: bool = False  # x, z, B, C as transposed views (non-contiguous)

    def __str__(self) -> str:
        parts = [f"B{self.batch}-H{self.heads}-P{self.headdim}-N{self.N}-L{self.L}", self.direction, self.dtype]
        parts += [name for name, on in ((f"G{self.groups}", self.groups), (f"D{self.D}", self.D), ("z", self.z),
                                        ("bias", self.bias), ("clamp", self.dt_limit != (0.0, math.inf)),
                                        ("h0", self.h0), ("last", self.last), ("varlen", self.seqlens),
                                        ("views", self.views)) if on]
        return "-".join(parts)


def _inputs(case: Case, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    dtype = _DTYPES[case.dtype]
    batch, L = (1, sum(case.seqlens)) if case.seqlens else (case.batch, case.L)
    dim = case.heads * case.headdim

    def rand(*shape, scale=1.0):
        return torch.randn(*shape, generator=gen) * scale

    def seq(*shape):  # (batch, ..., L), stored as a transposed view when asked
        t = rand(batch, L, *shape).movedim(1, -1)
        return (t if case.views else t.contiguous()).to(dtype)

    x = seq(dim)
    if case.bias:
        dt = rand(batch, case.heads, L, scale=0.5) - 1.0
    else:
        dt = torch.rand(batch, case.heads, L, generator=gen) * 0.3 + 0.05
    bc = (case.groups, case.N) if case.groups else (case.N,)
    B, C = seq(*bc), seq(*bc)
    A = -torch.exp(rand(case.heads, scale=0.5))
    D = rand(case.heads if case.D == "head" else dim) if case.D else None
    h0 = rand(batch, case.heads, case.headdim, case.N) if case.h0 else None
    cu = torch.tensor([0, *torch.tensor(case.seqlens).cumsum(0).tolist()]) if case.seqlens else None
    args = dict(x=x, dt=dt.to(dtype), A=A, B=B, C=C, D=D, z=seq(dim) if case.z else None,
                dt_bias=rand(case.heads, scale=0.1) if case.bias else None, initial_state=h0, cu_seqlens=cu)
    return {k: None if v is None else v.to(DEVICE) for k, v in args.items()}


_GRAD_ARGS = ("x", "dt", "A", "B", "C", "D", "z", "dt_bias", "initial_state")


def _ssd(fn, case: Case, args: dict, **kw):
    return fn(args["x"], args["dt"], args["A"], args["B"], args["C"], args["D"], args["z"], args["dt_bias"],
              case.bias, dt_limit=case.dt_limit, direction=case.direction, initial_state=args["initial_state"],
              return_last_state=case.last, cu_seqlens=args["cu_seqlens"], **kw)


def _outputs_and_grads(fn, case: Case, args: dict, dy, dh, **kw):
    leaves = {k: v.detach().clone().requires_grad_() for k, v in args.items() if k in _GRAD_ARGS and v is not None}
    out = _ssd(fn, case, {**args, **leaves}, **kw)
    y, h_last = out if case.last else (out, None)
    loss = (y.to(torch.float64) * dy).sum()
    if h_last is not None:
        loss = loss + (h_last.to(torch.float64) * dh).sum()
    grads = torch.autograd.grad(loss, list(leaves.values()))
    return y, h_last, dict(zip(leaves, grads))


def _cotangents(case: Case, args: dict):
    gen = torch.Generator().manual_seed(1)
    x = args["x"]
    dy = torch.randn(x.shape, generator=gen, dtype=torch.float64)
    dh = torch.randn(x.shape[0], case.heads, case.headdim, case.N, generator=gen, dtype=torch.float64)
    return dy.to(DEVICE), dh.to(DEVICE)


def _reference(case: Case, args: dict, dy, dh):
    f64 = {k: (v.to(torch.float64) if k in _GRAD_ARGS and v is not None else v) for k, v in args.items()}
    return _outputs_and_grads(ssd_scan_ref, case, f64, dy, dh)


def _errors(got, ref) -> dict[str, float]:
    (y, h, g), (ry, rh, rg) = got, ref
    errors = {"y": rel_error(y, ry)}
    if rh is not None:
        errors["h_last"] = rel_error(h, rh)
    errors.update({f"grad_{k}": rel_error(g[k], rg[k]) for k in rg})
    return errors


def _assert_within(case: Case, errors: dict[str, float]) -> None:
    bound = lambda name: (GRAD_TOLERANCE if name.startswith("grad_") else FORWARD_TOLERANCE)[case.dtype]  # noqa: E731
    bad = {k: v for k, v in errors.items() if not v <= bound(k)}
    assert not bad, f"{case}: {bad} (all: {errors})"


def _run_backend(case: Case, args: dict, dy, dh, config: dict):
    """The backend's forward and backward with a forced config (the op cannot force one)."""
    backend = backends.get("triton")
    D = args["D"]
    dim = args["x"].shape[1]
    D = D.repeat_interleave(dim // D.shape[0]) if D is not None else None
    h0 = args["initial_state"]
    h0 = h0.reshape(h0.shape[0], dim, case.N) if h0 is not None else None
    spec = check_ssd_args(args["x"], args["dt"], args["A"], args["B"], args["C"], D, args["z"], args["dt_bias"],
                          args["initial_state"], dt_softplus=case.bias, dt_limit=case.dt_limit,
                          direction=case.direction, return_last_state=case.last, cu_seqlens=args["cu_seqlens"])
    inputs = ScanInputs(u=args["x"], delta=args["dt"], A=args["A"], B=args["B"], C=args["C"], D=D, z=args["z"],
                        delta_bias=args["dt_bias"], gate=None, initial_state=h0, gate_threshold=0.5,
                        cu_seqlens=args["cu_seqlens"], dt_limit=case.dt_limit)
    y, h_last = backend.scan_forward(spec, inputs, config)
    dh_flat = dh.reshape(h_last.shape).to(torch.float32) if case.last else None
    g = backend.scan_backward(spec, inputs, dy.to(args["x"].dtype), dh_flat, config)
    names = dict(u="x", delta="dt", delta_bias="dt_bias")
    grads = {names.get(k, k): v for k, v in g.items()}
    if case.D == "head":
        grads["D"] = grads["D"].view(case.heads, -1).sum(1)
    if case.h0:
        grads["initial_state"] = grads["initial_state"].view(args["initial_state"].shape)
    h_last = h_last.view(-1, case.heads, case.headdim, case.N) if case.last else None
    return y, h_last, grads


FULL = Case(D="channel", z=True, bias=True, h0=True, last=True)
CASES = [
    Case(),
    FULL,
    replace(FULL, direction="reverse"),
    replace(FULL, N=40, L=20),  # three blocks of BLOCK_N=16 states, the last one partial
    Case(direction="bidirectional", D="channel", z=True, bias=True, groups=2, heads=4),
    Case(direction="reverse", groups=2, heads=4, dt_limit=(0.1, 0.3), views=True, last=True),
    Case(D="head", dt_limit=(0.1, 0.3), h0=True, views=True),
    Case(seqlens=(5, 17, 16), D="channel", z=True, bias=True),
    Case(seqlens=(7, 20), direction="bidirectional", D="head"),
    Case(seqlens=(9, 3, 21), direction="reverse"),
    replace(FULL, dtype="bfloat16"),
    Case(direction="bidirectional", D="channel", z=True, groups=2, heads=4, dtype="bfloat16", views=True),
]


@pytest.mark.parametrize("case", CASES, ids=str)
def test_ssd_kernels_match_the_reference_at_chunk_edges(case):
    """CHUNK=16 with L=37 (or packed sequences crossing chunk boundaries): every input's gradient."""
    args = _inputs(case)
    dy, dh = _cotangents(case, args)
    errors = _errors(_run_backend(case, args, dy, dh, SMALL), _reference(case, args, dy, dh))
    _assert_within(case, errors)


OP_CASES = [
    Case(D="head", z=True, bias=True, h0=True, last=True, headdim=4, N=8, L=20),
    Case(direction="bidirectional", groups=2, heads=4, D="head", L=20),
]


@pytest.mark.parametrize("case", OP_CASES, ids=str)
def test_ssd_scan_op_on_triton(case):
    """Through ``sf.ssd_scan(..., backend="triton")`` with its default config and autograd."""
    args = _inputs(case, seed=3)
    dy, dh = _cotangents(case, args)
    got = _outputs_and_grads(sf.ssd_scan, case, args, dy, dh, backend="triton")
    _assert_within(case, _errors(got, _reference(case, args, dy, dh)))


def test_a_headdim_wider_than_a_channel_block():
    """headdim 20 over BLOCK_P 16: two programs per head, whose partial dt, A, B, C gradients the host adds."""
    case = Case(batch=1, heads=2, headdim=20, N=4, L=23, D="channel", z=True, bias=True, last=True)
    args = _inputs(case, seed=5)
    dy, dh = _cotangents(case, args)
    _assert_within(case, _errors(_run_backend(case, args, dy, dh, SMALL), _reference(case, args, dy, dh)))


def test_triton_runs_the_per_head_decay_scan():
    spec = check_ssd_args(*(_inputs(Case()).get(k) for k in ("x", "dt", "A", "B", "C", "D", "z", "dt_bias")),
                          None, dt_softplus=False, dt_limit=(0.0, math.inf), direction="causal",
                          return_last_state=False)
    assert spec.kind == "ssd"
    assert backends.get("triton").unsupported_reason(spec, torch.device(DEVICE)) is None


def test_a_row_past_32_bit_offsets_is_refused_before_any_kernel_runs():
    from scanforge.backends import triton_ssd

    with pytest.raises(ValueError, match=r"ssd_scan: x would hold 3072000000 elements per batch row .*\(2\*\*31\)"):
        triton_ssd._check_rows({"x": (1, 5120, 600_000)})
    triton_ssd._check_rows({"x": (8, 5120, 8192)})  # a Mamba-2 2.7B batch: fine


def test_an_odd_stride_is_copied_before_the_kernels_and_others_are_not():
    from scanforge.backends import triton_ssd

    odd = torch.randn(2, 30, 40).transpose(1, 2)[:, ::3]  # strides (1200, 3, 40)
    assert triton_ssd._plain(odd).is_contiguous()
    view = torch.randn(2, 64, 48).transpose(1, 2)  # the mamba-ssm layout: strides (3072, 1, 64)
    assert triton_ssd._plain(view) is view
