"""The correctness gate shared by tests, ``scanforge check`` and the tuner: fresh random inputs for
a spec, relative errors against the float64 reference, and the tolerance of each dtype."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from ..backends.base import SCAN_GRAD_NAMES, Backend, ScanInputs
from ..backends.reference import run_scan
from ..kernels.ir import GatherSpec, ScanSpec
from ..kernels.reference import topk_gather_ref
from .layouts import as_layout

#: Relative-error bounds ``||out - ref|| / ||ref||`` by input dtype (DESIGN §5).
FORWARD_TOLERANCE = {"float32": 1e-5, "float16": 1e-2, "bfloat16": 1e-2}
GRAD_TOLERANCE = {"float32": 1e-4, "float16": 1e-2, "bfloat16": 2e-2}

_TORCH_DTYPE = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


def rel_error(out: torch.Tensor, ref: torch.Tensor) -> float:
    """``||out - ref|| / ||ref||`` in float64; NaN when out has NaN (so it never passes a bound)."""
    out, ref = out.detach().to(torch.float64), ref.detach().to(torch.float64)
    if out.shape != ref.shape:
        raise ValueError(f"rel_error: shapes differ, out {tuple(out.shape)} vs ref {tuple(ref.shape)}")
    if torch.isnan(out).any():
        return math.nan
    denom = ref.norm().item()
    diff = (out - ref).norm().item()
    return diff / denom if denom > 0 else diff


#: The dt range of ``random_scan_inputs(..., extreme_dt=True)``: from a held state to a full reset.
EXTREME_DT = (1e-4, 8.0)


#: The scan inputs that may be stored in u's dtype instead of float32 beside half-precision u (mamba-ssm's
#: mixes: A, D, delta_bias in float32 or u's dtype; B, C in u's dtype or float32; gate and initial_state too).
HALF_CAPABLE = ("A", "B", "C", "D", "delta_bias", "gate", "initial_state")
#: The mix :func:`random_scan_inputs` draws by default: B in u's dtype, every other parameter float32.
DEFAULT_HALF = ("B",)


def random_scan_inputs(spec: ScanSpec, batch: int, dim: int, L: int, N: int, *, groups: int = 1,
                       device: str | torch.device = "cpu", seed: int = 0, layout: str = "contiguous",
                       extreme_dt: bool = False, half: Sequence[str] = DEFAULT_HALF, heads: int = 0) -> ScanInputs:
    """Fresh random inputs of ``spec`` (never zeros), in the spec's dtype.

    dt lands in a realistic range (softplus(delta + bias) about 0.05-1), A is negative, so the
    state neither explodes nor vanishes over a few hundred steps. ``layout`` stores every tensor
    as :func:`scanforge.testing.layouts.as_layout` says (the values do not depend on it).
    ``extreme_dt=True`` spreads dt log-uniformly over :data:`EXTREME_DT` (tiny steps that barely
    move the state and huge ones that wipe it), the edge of what a trained model produces.
    ``half`` names the inputs of :data:`HALF_CAPABLE` stored in u's dtype (the others are float32);
    it only matters for a float16/bfloat16 spec. A per-head decay spec (Mamba-2) takes ``heads`` (dividing dim):
    dt, A and delta_bias are then per head.
    """
    unknown = set(half) - set(HALF_CAPABLE)
    if unknown:
        raise ValueError(f"half: expected names from {HALF_CAPABLE}, got {sorted(unknown)}")
    gen = torch.Generator().manual_seed(seed)
    dtype = _TORCH_DTYPE[spec.dtype]
    low = lambda name: dtype if name in half else torch.float32  # noqa: E731

    def rand(*shape, scale=1.0, shift=0.0, to=dtype):
        return (torch.randn(*shape, generator=gen) * scale + shift).to(device=device, dtype=to)

    bc_shape = (batch, groups, N, L) if spec.grouped else (batch, N, L)
    rows = heads if spec.kind == "ssd" else dim  # what dt, A and delta_bias are given for: heads or channels
    if spec.kind == "ssd" and (heads < 1 or dim % heads):
        raise ValueError(f"heads: a per-head decay spec needs heads dividing dim = {dim}, got {heads}")
    if spec.softplus:
        delta = rand(batch, rows, L, scale=0.5, shift=-1.0)
    else:
        delta = (torch.rand(batch, rows, L, generator=gen) * 0.3 + 0.02).to(device=device, dtype=dtype)
    if extreme_dt:  # dt log-uniform; delta is its preimage (inverse softplus), so dt stays positive either way
        low_dt, high_dt = math.log(EXTREME_DT[0]), math.log(EXTREME_DT[1])
        dt = torch.exp(torch.rand(batch, rows, L, generator=gen, dtype=torch.float64) * (high_dt - low_dt) + low_dt)
        delta = (torch.log(torch.expm1(dt)) if spec.softplus else dt).to(device=device, dtype=dtype)
    A = -torch.exp(rand(*((heads,) if spec.kind == "ssd" else (dim, N)), scale=0.5, to=torch.float32)).to(low("A"))
    # Without softplus, dt = delta + delta_bias must stay positive: a positive bias.
    delta_bias = (rand(rows, scale=0.1, to=torch.float32) if spec.softplus
                  else (torch.rand(rows, generator=gen) * 0.1).to(device=device)).to(low("delta_bias"))
    gate = None
    if spec.gated:
        gate = torch.rand(batch, L, generator=gen).to(device=device, dtype=low("gate"))
    x = ScanInputs(
        u=rand(batch, dim, L), delta=delta, A=A,
        B=rand(*bc_shape, to=low("B")), C=rand(*bc_shape, to=low("C")),
        D=rand(dim, to=low("D")) if spec.has_D else None,
        z=rand(batch, dim, L) if spec.has_z else None,
        delta_bias=delta_bias if spec.has_delta_bias else None,
        gate=gate,
        initial_state=rand(batch, dim, N, to=low("initial_state")) if spec.has_initial_state else None,
        gate_threshold=0.5,
    )
    return x._replace(**{name: as_layout(getattr(x, name), layout) for name in SCAN_GRAD_NAMES})


def reference_outputs(spec: ScanSpec, inputs: ScanInputs, dy: torch.Tensor | None = None,
                      dh_last: torch.Tensor | None = None):
    """Float64 ``(y, h_last or None, grads)``; grads (autograd of the reference) only when dy is given."""
    leaves = [None if t is None else t.detach().to(torch.float64).requires_grad_(dy is not None)
              for t in inputs.tensors]
    with torch.enable_grad():
        out = run_scan(spec, inputs, leaves)
        y, h_last = out if spec.return_last_state else (out[0], None)
        grads = {}
        if dy is not None:
            loss = (y * dy.to(torch.float64)).sum()
            if h_last is not None and dh_last is not None:
                loss = loss + (h_last * dh_last.to(torch.float64)).sum()
            present = [(n, t) for n, t in zip(SCAN_GRAD_NAMES, leaves) if t is not None]
            values = torch.autograd.grad(loss, [t for _, t in present], allow_unused=True)
            grads = {n: (torch.zeros_like(t) if g is None else g) for (n, t), g in zip(present, values)}
    return y.detach(), None if h_last is None else h_last.detach(), grads


@dataclass(frozen=True)
class ScanCase:
    """Inputs, cotangents and the float64 reference outputs of one scan check: computed once, then
    any number of kernel runs (a tuner's trials) are compared against it."""

    spec: ScanSpec
    inputs: ScanInputs
    dy: torch.Tensor | None
    dh: torch.Tensor | None
    y: torch.Tensor
    h_last: torch.Tensor | None
    grads: dict[str, torch.Tensor]


def scan_case(spec: ScanSpec, inputs: ScanInputs, *, grads: bool = True, seed: int = 1) -> ScanCase:
    """The reference side of a check: random cotangents (if ``grads``) and the reference outputs."""
    gen = torch.Generator().manual_seed(seed)
    u = inputs.u
    dy = torch.randn(u.shape, generator=gen).to(device=u.device, dtype=u.dtype) if grads else None
    dh = (torch.randn(u.shape[0], u.shape[1], inputs.B.shape[-2], generator=gen).to(u.device)
          if grads and spec.return_last_state else None)
    y, h_last, g = reference_outputs(spec, inputs, dy, dh)
    return ScanCase(spec, inputs, dy, dh, y, h_last, g)


def scan_errors(case: ScanCase, y: torch.Tensor, h_last: torch.Tensor | None,
                grads: dict[str, torch.Tensor] | None = None) -> dict[str, float]:
    """Relative errors of a kernel's outputs against ``case``: ``y``, ``h_last`` (if returned) and
    ``grad_<name>`` for every input (if ``grads``)."""
    errors = {"y": rel_error(y, case.y)}
    if case.spec.return_last_state:
        errors["h_last"] = rel_error(h_last, case.h_last)
    if grads is not None:
        errors.update({f"grad_{n}": rel_error(grads[n], ref) for n, ref in case.grads.items()})
    return errors


def check_scan(backend: Backend, spec: ScanSpec, inputs: ScanInputs, *, config: dict | None = None,
               grads: bool = True, seed: int = 1) -> dict[str, float]:
    """Run ``backend`` (forward, and backward if ``grads``, both with ``config``) on ``inputs`` and
    return the relative errors against the reference (:func:`scan_errors`)."""
    case = scan_case(spec, inputs, grads=grads, seed=seed)
    y, h_last = backend.scan_forward(spec, inputs, config)
    g = backend.scan_backward(spec, inputs, case.dy, case.dh, config) if grads else None
    return scan_errors(case, y, h_last, g)


def bound(name: str, dtype: str) -> float:
    """The bound of error ``name`` (``y``, ``grad_u``, ``idx``...) in ``dtype``: indices are exact."""
    if name == "idx":
        return 0.0
    return (GRAD_TOLERANCE if name.startswith("grad_") else FORWARD_TOLERANCE)[dtype]


def passes(errors: dict[str, float], dtype: str) -> bool:
    """Whether every error is within its dtype's bound (NaN never passes)."""
    return all(e <= bound(name, dtype) for name, e in errors.items())


def failures(errors: dict[str, float], dtype: str) -> list[str]:
    """One line per error over its bound, e.g. ``grad_u rel err 3.1e-02 > 2e-02``."""
    return [f"{name} rel err {e:.2e} > {bound(name, dtype):.0e}" for name, e in errors.items()
            if not e <= bound(name, dtype)]


def random_gather_inputs(spec: GatherSpec, batch: int, T: int, d: int, *, device: str | torch.device = "cpu",
                         seed: int = 0, ties: bool = False,
                         layout: str = "contiguous") -> tuple[torch.Tensor, torch.Tensor | None]:
    """Fresh random ``(x, scores or None)`` for ``spec``; ``ties=True`` repeats rows and scores so
    that equal scores must be broken by index; ``layout`` as in :func:`random_scan_inputs`."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, T, d, generator=gen)
    scores = torch.randn(batch, T, generator=gen) if spec.scores_given else None
    if ties:
        pattern = torch.randint(0, max(T // 3, 1), (T,), generator=gen)
        x = x[:, pattern]
        scores = None if scores is None else scores[:, pattern]
    dtype = _TORCH_DTYPE[spec.dtype]
    x = as_layout(x.to(device=device, dtype=dtype), layout)
    return x, as_layout(None if scores is None else scores.to(device=device, dtype=dtype), layout)


@dataclass(frozen=True)
class GatherCase:
    """Inputs, cotangent and float64 reference of one top-k gather check (see :class:`ScanCase`)."""

    spec: GatherSpec
    x: torch.Tensor
    k: int
    scores: torch.Tensor | None
    gout: torch.Tensor | None
    out: torch.Tensor
    idx: torch.Tensor
    grads: tuple[torch.Tensor, ...]


def gather_case(spec: GatherSpec, x: torch.Tensor, k: int, scores: torch.Tensor | None, *, grads: bool = True,
                seed: int = 1) -> GatherCase:
    leaves = [x.detach().to(torch.float64).requires_grad_()]
    if scores is not None:
        leaves.append(scores.detach().to(torch.float64).requires_grad_())
    with torch.enable_grad():
        ref, ref_idx = topk_gather_ref(leaves[0], k, leaves[1] if scores is not None else None,
                                       keep_order=spec.keep_order, summary=spec.summary, weight=spec.weight)
    gout, ref_grads = None, ()
    if grads:
        gout = torch.randn(ref.shape, generator=torch.Generator().manual_seed(seed)).to(x.device, x.dtype)
        values = torch.autograd.grad(ref, leaves, gout.to(torch.float64), allow_unused=True)
        ref_grads = tuple(torch.zeros_like(t) if g is None else g for t, g in zip(leaves, values))
    return GatherCase(spec, x, k, scores, gout, ref.detach(), ref_idx, ref_grads)


def gather_errors(case: GatherCase, out: torch.Tensor, idx: torch.Tensor,
                  grads: tuple[torch.Tensor, torch.Tensor | None] | None = None) -> dict[str, float]:
    """Relative errors against ``case``: ``out``, ``idx`` (1.0 if any index differs, else 0.0), and
    ``grad_x`` / ``grad_scores`` if ``grads`` (the backward's ``(dx, dscores)``)."""
    errors = {"out": rel_error(out, case.out), "idx": float(not torch.equal(idx.cpu(), case.idx.cpu()))}
    if grads is not None:
        errors["grad_x"] = rel_error(grads[0], case.grads[0])
        if case.scores is not None:
            errors["grad_scores"] = rel_error(grads[1], case.grads[1])
    return errors


def check_gather(backend: Backend, spec: GatherSpec, x: torch.Tensor, k: int, scores: torch.Tensor | None, *,
                 config: dict | None = None, grads: bool = True, seed: int = 1) -> dict[str, float]:
    """Run ``backend``'s top-k gather (forward, and backward if ``grads``) and return
    :func:`gather_errors` against the reference."""
    case = gather_case(spec, x, k, scores, grads=grads, seed=seed)
    out, idx, slot = backend.gather_forward(spec, x, k, scores, config)
    g = backend.gather_backward(spec, x, k, scores, slot, case.gout, config) if grads else None
    return gather_errors(case, out, idx, g)
