"""The suite catches an element a kernel forgets to write, on every backend.

Every backend allocates its outputs through one helper (:func:`scanforge.backends.base.new_output`), which fills
them with NaN (integers: their most negative value) under ``SCANFORGE_POISON=1``. Two proofs per backend:

- with kernels that write nothing, every output of every op is poison (nothing is left to the allocator,
  whose reused memory often holds an earlier, right result);
- a deliberately broken kernel, rendered from the real template with one line changed so that it skips the
  last chunk or the last element of the sequence, fails the suite's comparison with the reference and
  ``scanforge check``'s conformance row.
"""

from __future__ import annotations

import broken_kernels
import pytest
import torch
from helpers import backend_param, device_of

import scanforge as sf
from scanforge import backends
from scanforge.backends.base import poison_value
from scanforge.kernels import codegen
from scanforge.kernels.ir import GatherSpec, Phase, ScanSpec
from scanforge.testing import (
    GatherExample,
    ReferenceMismatch,
    ScanExample,
    assert_matches_reference,
    random_decode_inputs,
)
from scanforge.testing.conformance import Case, run_case

KERNEL_BACKENDS = [name for name in ("numba_cpu", "triton", "numba_cuda") if name in backends.names()
                   and backends.get(name).unavailable_reason() is None]


class _NoOp:
    """A kernel (or a Numba-CUDA launch, ``kernel[grid, block]``) that does nothing."""

    def __call__(self, *args, **kwargs):
        return None

    def __getitem__(self, launch):
        return self


class _WritesNothing:
    """A generated kernel module whose every kernel writes nothing (sizes as the backends read them)."""

    BLOCK_D, THREADS, CHUNK = 4, 32, 16

    def __getattr__(self, name):
        return _NoOp()


def _is_poison(t: torch.Tensor) -> bool:
    value = poison_value(t.dtype)
    return bool(torch.isnan(t).all()) if t.dtype.is_floating_point else bool((t == value).all())


@pytest.mark.parametrize("backend", [backend_param(b) for b in KERNEL_BACKENDS])
def test_an_output_no_kernel_writes_is_poison(backend, monkeypatch):
    monkeypatch.setattr(codegen, "load", lambda *args, **kwargs: _WritesNothing())
    b, device = backends.get(backend), device_of(backend)
    spec = ScanSpec(has_z=True, has_D=True, return_last_state=True)
    x = ScanExample(spec, 2, 8, 9, 4).inputs(device)
    y, h_last = b.scan_forward(spec, x)
    assert _is_poison(y) and _is_poison(h_last)
    grads = b.scan_backward(spec, x, torch.ones_like(x.u), torch.ones_like(h_last))
    assert all(_is_poison(grads[name]) for name in ("u", "delta", "z")), {k: v.flatten()[:2] for k, v in grads.items()}
    step = random_decode_inputs(ScanSpec(phase=Phase.DECODE), 2, 8, 4, device=device)
    assert _is_poison(b.scan_decode(ScanSpec(phase=Phase.DECODE), step))
    gspec = GatherSpec(scores_given=True, summary="mean", weight="sigmoid")
    gx, k, scores = GatherExample(gspec, 2, 9, 5, 3).inputs(device)
    out, idx, slot = b.gather_forward(gspec, gx, k, scores)
    assert _is_poison(out) and _is_poison(idx) and _is_poison(slot)
    dx, dscores = b.gather_backward(gspec, gx, k, scores, torch.zeros_like(slot), torch.ones_like(out))
    assert _is_poison(dx) and _is_poison(dscores)


@pytest.mark.parametrize("backend", [backend_param(b) for b in KERNEL_BACKENDS])
def test_a_kernel_that_skips_the_end_of_the_sequence_fails_the_suite(backend, monkeypatch, tmp_path):
    device = device_of(backend)
    spec = ScanSpec()
    example = ScanExample(spec, 1, 3, 40, 4, seed=3)
    x = example.inputs(device)
    right = sf.selective_scan(*x.tensors[:5], backend=backend)
    assert torch.isfinite(right).all()
    broken_kernels.install(monkeypatch, tmp_path, backend)
    y = sf.selective_scan(*x.tensors[:5], backend=backend)
    assert torch.isnan(y[..., -1]).all(), f"the break leaves {broken_kernels.SKIP_THE_END[backend][2]} unwritten"
    with pytest.raises(ReferenceMismatch, match=r"y rel err nan > 1e-05; worst element \(0, \d, \d+\): got nan"):
        assert_matches_reference(backend, spec, x, grads=False)
    row = run_case(Case(backend, "reference", "selective_scan", "causal", "float32", "quick"))
    assert row.status == "FAIL" and "y rel err nan" in row.message, row.message
