"""Comparison with the float64 reference: per-dtype tolerances, messages that locate the error."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

import torch

from .. import backends
from ..backends.base import SCAN_GRAD_NAMES, ScanInputs
from ..decode import DecodeWindow, selective_state_update
from ..kernels.codegen import family
from ..kernels.ir import GatherSpec, Phase, ScanSpec
from ..kernels.reference import selective_state_update_ref
from ..ops import selective_scan, topk_gather
from ..ssd import ssd_scan
from .accuracy import FORWARD_TOLERANCE, bound, failures, gather_case, reference_outputs, rel_error
from .examples import DecodeInputs, GatherInputs, clone_decode_inputs


class ReferenceMismatch(AssertionError):
    """A backend's result differs from the reference beyond its dtype's tolerance."""

    def __init__(self, message: str, errors: dict[str, float]):
        super().__init__(message)
        self.errors = errors


def _worst_element(out: torch.Tensor, ref: torch.Tensor) -> str:
    """Where ``out`` is furthest from ``ref`` (a NaN first): index, value, expected value."""
    out, ref = out.detach().cpu().to(torch.float64), ref.detach().cpu().to(torch.float64)
    if out.shape != ref.shape or out.numel() == 0:
        return f"shape {tuple(out.shape)} vs expected {tuple(ref.shape)}"
    diff = (out - ref).abs()
    diff = torch.where(torch.isnan(diff), torch.full_like(diff, float("inf")), diff)
    flat = int(diff.argmax())
    index = tuple(int(i) for i in torch.unravel_index(torch.tensor(flat), out.shape))
    return f"worst element {index}: got {out.flatten()[flat].item():.6g}, expected {ref.flatten()[flat].item():.6g}"


def _configs_for(configs: Mapping[str, Mapping] | None, spec) -> dict | None:
    chosen = (configs or {}).get(family(spec))
    return None if chosen is None else dict(chosen)


def _public_scan(spec: ScanSpec, x: ScanInputs, leaves, backend: str):
    """The public op of ``spec`` on ``leaves`` (ScanInputs' tensors): ``sf.selective_scan``, or ``sf.ssd_scan`` for
    a per-head decay, whose states are ``(batch, nheads, headdim, N)`` (returned here as ``(batch, dim, N)``)."""
    u, delta, A, B, C, D, z, delta_bias, gate, h0 = leaves
    if spec.kind == "ssd":
        batch, dim, _ = u.shape
        N = B.shape[-2]
        heads = (batch, A.shape[0], dim // A.shape[0], N)
        out = ssd_scan(u, delta, A, B, C, D, z, delta_bias, spec.softplus, dt_limit=x.dt_limit,
                       direction=spec.direction.value, initial_state=None if h0 is None else h0.view(heads),
                       return_last_state=spec.return_last_state, cu_seqlens=x.cu_seqlens, backend=backend)
        return (out[0], out[1].reshape(batch, dim, N)) if spec.return_last_state else out
    return selective_scan(u, delta, A, B, C, D, z, delta_bias, spec.softplus, direction=spec.direction.value,
                          stride=spec.stride, gate=gate, gate_threshold=x.gate_threshold,
                          gate_mode=spec.gate_mode.value, initial_state=h0, return_last_state=spec.return_last_state,
                          cu_seqlens=x.cu_seqlens, backend=backend)


def _scan_run(backend: str, spec: ScanSpec, x: ScanInputs, dy, dh, grads: bool, configs):
    """``(y, h_last or None, grads)``: through the public op and autograd when no config is forced
    (the user's path), else straight through the backend with the forced configs."""
    if configs is None:
        # detach, not clone: a clone would make a strided or offset input contiguous, hiding its layout
        leaves = [None if t is None else t.detach().requires_grad_(grads) for t in x.tensors]
        out = _public_scan(spec, x, leaves, backend)
        y, h_last = out if spec.return_last_state else (out, None)
        g = {}
        if grads:
            loss = (y.float() * dy.float()).sum() + (0 if h_last is None else (h_last * dh).sum())
            loss.backward()
            g = {n: t.grad for n, t in zip(SCAN_GRAD_NAMES, leaves) if t is not None}
        return y.detach(), None if h_last is None else h_last.detach(), g
    b = backends.get(backend)
    fwd = dataclasses.replace(spec, phase=Phase.FORWARD)
    y, h_last = b.scan_forward(fwd, x, _configs_for(configs, fwd))
    g = b.scan_backward(fwd, x, dy, dh, _configs_for(configs, fwd.adjoint())) if grads else {}
    return y, h_last if spec.return_last_state else None, g


def _scan_errors(backend, spec, x: ScanInputs, grads, seed, configs):
    gen = torch.Generator().manual_seed(seed)
    dy = torch.randn(x.u.shape, generator=gen).to(x.u.device, x.u.dtype)
    dh = torch.randn(x.u.shape[0], x.u.shape[1], x.B.shape[-2], generator=gen).to(x.u.device)
    dh = dh if spec.return_last_state else None
    y, h_last, g = _scan_run(backend, spec, x, dy, dh, grads, configs)
    y_ref, h_ref, g_ref = reference_outputs(dataclasses.replace(spec, phase=Phase.FORWARD), x,
                                            dy if grads else None, dh)
    pairs = {"y": (y, y_ref)}
    problems = []
    if y.dtype != x.u.dtype or y.shape != x.u.shape:
        problems.append(f"y: expected {tuple(x.u.shape)} {x.u.dtype}, got {tuple(y.shape)} {y.dtype}")
    if spec.return_last_state:
        pairs["h_last"] = (h_last, h_ref)
        if h_last.dtype != torch.float32:
            problems.append(f"h_last: expected float32, got {h_last.dtype}")
    for name, ref in g_ref.items():
        got = g.get(name)
        if got is None:
            problems.append(f"grad_{name}: missing")
            continue
        if got.dtype != getattr(x, name).dtype:
            problems.append(f"grad_{name}: expected {getattr(x, name).dtype} like {name}, got {got.dtype}")
        pairs[f"grad_{name}"] = (got, ref)
    return pairs, problems


def _gather_errors(backend, spec: GatherSpec, inputs: GatherInputs, grads, seed, configs):
    x, k, scores = inputs
    fwd = dataclasses.replace(spec, phase=Phase.FORWARD)
    case = gather_case(fwd, x, k, scores, grads=grads, seed=seed)
    ref, ref_idx, gout = case.out, case.idx, case.gout
    if configs is None:
        xs = x.detach().requires_grad_(grads)  # keeps x's layout (see _scan_run)
        ss = None if scores is None else scores.detach().requires_grad_(grads)
        summary, weight = (None if v.value == "none" else v.value for v in (spec.summary, spec.weight))
        out, idx = topk_gather(xs, k, ss, keep_order=spec.keep_order, summary=summary, weight=weight,
                               backend=backend)
        if grads:
            (out.float() * gout.float()).sum().backward()
        got = (xs.grad, None if ss is None else ss.grad) if grads else None
    else:
        b = backends.get(backend)
        out, idx, slot = b.gather_forward(fwd, x, k, scores, _configs_for(configs, fwd))
        got = b.gather_backward(fwd, x, k, scores, slot, gout, _configs_for(configs, fwd.adjoint())) if grads \
            else None
    pairs, problems = {"out": (out.detach(), ref.detach())}, []
    if out.dtype != x.dtype:
        problems.append(f"out: expected {x.dtype} like x, got {out.dtype}")
    if not torch.equal(idx.cpu(), ref_idx.cpu()):
        row = int((idx.cpu() != ref_idx.cpu()).any(-1).nonzero()[0]) if idx.shape == ref_idx.shape else 0
        problems.append(f"idx: row {row} selects {idx[row].tolist()[:16]}, expected {ref_idx[row].tolist()[:16]}")
    if grads:
        refs = case.grads
        dx = got[0] if got[0] is not None else torch.zeros_like(x)
        pairs["grad_x"] = (dx, refs[0])
        if scores is not None:
            pairs["grad_scores"] = (got[1] if got[1] is not None else torch.zeros_like(scores), refs[1])
    return pairs, problems


def _decode_errors(backend, spec: ScanSpec, inputs: DecodeInputs, configs):
    ref_in = clone_decode_inputs(inputs)
    ref_out, ref_state, ref_window = selective_state_update_ref(
        ref_in.state, *ref_in[1:9], spec.softplus, stride=spec.stride, gate=ref_in.gate,
        gate_threshold=ref_in.gate_threshold, gate_mode=spec.gate_mode, window=ref_in.window)
    run = clone_decode_inputs(inputs)
    if configs is None:
        window = None if run.window is None else DecodeWindow(*run.window)
        out = selective_state_update(run.state, *run[1:9], spec.softplus, stride=spec.stride, gate=run.gate,
                                     gate_threshold=run.gate_threshold, gate_mode=spec.gate_mode.value,
                                     window=window, backend=backend)
    else:
        out = backends.get(backend).scan_decode(spec, run, _configs_for(configs, spec))
    pairs = {"out": (out, ref_out), "state": (run.state, ref_state)}
    for name, got, ref in zip(("acc_dt", "acc_u", "acc_B", "count"), run.window or (), ref_window or ()):
        pairs[f"window_{name}"] = (got, ref)
    problems = [] if out.dtype == inputs.x.dtype else [f"out: expected {inputs.x.dtype} like x, got {out.dtype}"]
    return pairs, problems


def reference_errors(backend: str, spec: ScanSpec | GatherSpec, inputs, *, grads: bool = True, seed: int = 1,
                     configs: Mapping[str, Mapping] | None = None):
    """``(errors, problems, pairs)``: relative error of every output (and gradient) of ``backend``
    against the float64 reference, structural problems (dtype, shape, indices), and the
    ``(got, expected)`` tensors. ``configs`` maps kernel families (``scan_fwd``...) to forced configs."""
    if isinstance(spec, GatherSpec):
        pairs, problems = _gather_errors(backend, spec, GatherInputs(*inputs), grads, seed, configs)
    elif spec.phase is Phase.DECODE:
        pairs, problems = _decode_errors(backend, spec, inputs, configs)
    else:
        pairs, problems = _scan_errors(backend, spec, inputs, grads, seed, configs)
    errors = {name: rel_error(got, ref) for name, (got, ref) in pairs.items()}
    if isinstance(spec, GatherSpec):
        errors["idx"] = float(any(p.startswith("idx") for p in problems))
    return errors, problems, pairs


def _shape_of(spec, inputs) -> str:
    if isinstance(spec, GatherSpec):
        x, k, _ = inputs
        return f"B{x.shape[0]}-T{x.shape[1]}-d{x.shape[2]}-k{k}"
    if spec.phase is Phase.DECODE:
        return f"B{inputs.x.shape[0]}-D{inputs.x.shape[1]}-N{inputs.A.shape[1]} (one token)"
    batch, dim, L = inputs.u.shape
    return f"B{batch}-D{dim}-L{L}-N{inputs.A.shape[1]}"


def assert_matches_reference(backend: str, spec: ScanSpec | GatherSpec, inputs, *, grads: bool = True,
                             seed: int = 1, configs: Mapping[str, Mapping] | None = None,
                             variant: str | None = None) -> dict[str, float]:
    """Check ``backend`` on ``inputs`` against the float64 reference with the per-dtype tolerances
    of :mod:`scanforge.testing.accuracy` (forward and, if ``grads``, every gradient); return the errors.

    ``inputs``: :class:`ScanInputs` for a scan spec, :class:`GatherInputs` (or ``(x, k, scores)``)
    for a gather spec, :class:`DecodeInputs` for a decode spec. Without ``configs`` the public op
    runs (validation, autograd, the tuned config); ``configs`` ({family: config}) forces tiling
    configs and calls the backend directly. Raises :class:`ReferenceMismatch` naming the backend,
    variant, shape, dtype, the failing outputs with their errors and bounds, and the worst element.
    """
    errors, problems, pairs = reference_errors(backend, spec, inputs, grads=grads and spec.phase is not Phase.DECODE,
                                               seed=seed, configs=configs)
    if spec.phase is Phase.DECODE:  # computed in float32: the state is as exact as its own dtype, the window float32
        state_dtype = str(inputs.state.dtype).removeprefix("torch.")
        state_dtype = state_dtype if state_dtype in FORWARD_TOLERANCE else "float32"
        windows = {k: v for k, v in errors.items() if k.startswith("window_")}
        outputs = {k: v for k, v in errors.items() if k != "state" and k not in windows}
        bad = failures(outputs, spec.dtype) + failures({"state": errors["state"]}, state_dtype) + \
            failures(windows, "float32")
    else:
        bad = failures(errors, spec.dtype)
    if bad or problems:
        lines = [f"{backend}: {variant or spec.key()} [{spec.key()}] {_shape_of(spec, inputs)} {spec.dtype} "
                 "differs from the float64 reference:"]
        for line in bad:
            name = line.split(" ", 1)[0]
            where = f"; {_worst_element(*pairs[name])}" if name in pairs else ""
            lines.append(f"  {line}{where}")
        lines += [f"  {p}" for p in problems]
        raise ReferenceMismatch("\n".join(lines), errors)
    return errors


def tolerance(name: str, spec: ScanSpec | GatherSpec) -> float:
    """The relative-error bound of output ``name`` of ``spec`` (DESIGN §5)."""
    return bound(name, spec.dtype)
