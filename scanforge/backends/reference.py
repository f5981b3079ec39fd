"""The reference backend: :mod:`scanforge.kernels.reference` in float64, cast back to the input dtypes."""

from __future__ import annotations

import torch

from ..kernels.ir import Decay, GatherSpec, ScanSpec
from ..kernels.reference import selective_scan_ref, selective_state_update_ref, ssd_scan_ref, topk_gather_ref
from .base import SCAN_GRAD_NAMES, Backend, ScanInputs
from .host import empty_last_state, no_last_state_cotangent


def run_scan(spec: ScanSpec, x: ScanInputs, tensors) -> tuple[torch.Tensor, ...]:
    """The reference of ``spec`` on ``tensors`` (ScanInputs' tensors, any dtype, e.g. float64 leaves of a graph) with
    the options of ``x``: ``(y,)``, or ``(y, h_last)`` when the spec returns the last state; float64."""
    u, delta, A, B, C, D, z, delta_bias, gate, h0 = tensors
    if spec.decay is Decay.HEAD:
        return _run_ssd(spec, x, tensors)
    out = selective_scan_ref(u, delta, A, B, C, D, z, delta_bias, spec.softplus, direction=spec.direction,
                             stride=spec.stride, gate=gate, gate_threshold=x.gate_threshold,
                             gate_mode=spec.gate_mode, initial_state=h0,
                             return_last_state=spec.return_last_state, cu_seqlens=x.cu_seqlens)
    return out if spec.return_last_state else (out,)


def _run_ssd(spec: ScanSpec, x: ScanInputs, tensors) -> tuple[torch.Tensor, ...]:
    """:func:`run_scan` of a per-head decay spec: its states are ``(batch, dim, N)`` here, per head in the reference."""
    u, delta, A, B, C, D, z, delta_bias, _, h0 = tensors
    batch, dim, _ = u.shape
    heads, N = A.shape[0], B.shape[-2]
    h0 = None if h0 is None else h0.reshape(batch, heads, dim // heads, N)
    out = ssd_scan_ref(u, delta, A, B, C, D, z, delta_bias, spec.softplus, dt_limit=x.dt_limit,
                       direction=spec.direction, initial_state=h0, return_last_state=spec.return_last_state,
                       cu_seqlens=x.cu_seqlens)
    return (out[0], out[1].reshape(batch, dim, N)) if spec.return_last_state else (out,)


class ReferenceBackend(Backend):
    name = "reference"
    scan_kinds = ("scan", "ssd")

    def scan_forward(self, spec, inputs, config=None):
        out = run_scan(spec, inputs, inputs.tensors)
        h_last = out[1] if spec.return_last_state else empty_last_state(inputs.u)
        return out[0].to(inputs.u.dtype), h_last.to(torch.float32)

    def scan_backward(self, spec, inputs, dy, dh_last, config=None):
        present = [name for name, t in zip(SCAN_GRAD_NAMES, inputs.tensors) if t is not None]
        originals = [getattr(inputs, name) for name in present]

        def outputs(*leaves):
            tensors = dict(zip(SCAN_GRAD_NAMES, inputs.tensors)) | dict(zip(present, leaves))
            return run_scan(spec, inputs, [tensors[name] for name in SCAN_GRAD_NAMES])

        # torch.func, not torch.autograd: this runs inside a custom op, below the autograd dispatch key.
        out, vjp = torch.func.vjp(outputs, *[t.detach().to(torch.float64) for t in originals])
        cotangents = [dy.to(torch.float64)]
        if spec.return_last_state:
            no_dh = no_last_state_cotangent(dh_last)
            cotangents.append(torch.zeros_like(out[1]) if no_dh else dh_last.to(torch.float64))
        grads = vjp(tuple(cotangents))
        return {name: g.to(t.dtype) for name, g, t in zip(present, grads, originals)}

    def gather_forward(self, spec, x, k, scores, config=None):
        out, idx = _gather(spec, x, k, scores)
        slot = torch.full(x.shape[:2], -1, dtype=torch.int32, device=x.device)
        positions = torch.arange(k, dtype=torch.int32, device=x.device).expand_as(idx)
        return out.to(x.dtype), idx, slot.scatter(1, idx, positions)

    def gather_backward(self, spec, x, k, scores, slot, gout, config=None):
        leaves = [x.detach().to(torch.float64)] + ([] if scores is None else [scores.detach().to(torch.float64)])
        _, vjp = torch.func.vjp(lambda *t: _gather(spec, t[0], k, t[1] if len(t) > 1 else None)[0], *leaves)
        grads = vjp(gout.to(torch.float64))
        dscores = None if scores is None else grads[1].to(scores.dtype)
        return grads[0].to(x.dtype), dscores

    def scan_decode(self, spec, inputs, config=None):
        state, x, dt, A, B, C, D, z, dt_bias, gate, gate_threshold, window = inputs
        out, new_state, new_window = selective_state_update_ref(
            state, x, dt, A, B, C, D, z, dt_bias, spec.softplus, stride=spec.stride, gate=gate,
            gate_threshold=gate_threshold, gate_mode=spec.gate_mode, window=window)
        state.copy_(new_state)
        for buffer, value in zip(window or (), new_window or ()):
            buffer.copy_(value)
        return out.to(x.dtype)


def _gather(spec: GatherSpec, x, k, scores):
    return topk_gather_ref(x, k, scores, keep_order=spec.keep_order, summary=spec.summary, weight=spec.weight)
