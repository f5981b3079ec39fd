"""The public ops, registered with ``torch.library`` (autograd, fake tensors, ``torch.compile``).

``scanforge::selective_scan`` and its backward are opaque custom ops; the backend is resolved in
Python before the op is called and passed to it by name, so a compiled graph keeps its choice.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from . import backends
from .backends.base import SCAN_GRAD_NAMES, ScanInputs
from .kernels.validate import as_int, check_gather_args, check_scan_args, gather_spec_for, scan_spec_for

__all__ = ["selective_scan", "topk_gather"]

#: The flat arguments of ``scanforge::selective_scan`` after its tensors: options, then the backend's name.
#: torch.library takes positional tensors and scalars; the kernels take a spec and a named bundle. This module
#: is the one place where one becomes the other (:func:`_scan_call`, :func:`_setup_context`).
_SCAN_TENSORS = ("u", "delta", "A", "B", "C", "D", "z", "delta_bias", "gate", "initial_state", "cu_seqlens")


def _scan_call(u, delta, A, B, C, D, z, delta_bias, gate, initial_state, cu_seqlens, delta_softplus, direction,
               stride, gate_threshold, gate_mode, return_last_state, decay, dt_min, dt_max):
    """The spec and the named input bundle of the op's flat arguments."""
    spec = scan_spec_for(u, B, D, z, delta_bias, gate, initial_state, delta_softplus, direction, stride, gate_mode,
                         return_last_state, cu_seqlens, decay)
    inputs = ScanInputs(u=u, delta=delta, A=A, B=B, C=C, D=D, z=z, delta_bias=delta_bias, gate=gate,
                        initial_state=initial_state, gate_threshold=gate_threshold, cu_seqlens=cu_seqlens,
                        dt_limit=(dt_min, dt_max))
    return spec, inputs


@torch.library.custom_op("scanforge::selective_scan", mutates_args=())
def _selective_scan_op(u: Tensor, delta: Tensor, A: Tensor, B: Tensor, C: Tensor, D: Tensor | None,
                       z: Tensor | None, delta_bias: Tensor | None, gate: Tensor | None,
                       initial_state: Tensor | None, cu_seqlens: Tensor | None, delta_softplus: bool, direction: str,
                       stride: int, gate_threshold: float, gate_mode: str, return_last_state: bool, decay: str,
                       dt_min: float, dt_max: float, backend: str) -> tuple[Tensor, Tensor]:
    spec, inputs = _scan_call(u, delta, A, B, C, D, z, delta_bias, gate, initial_state, cu_seqlens, delta_softplus,
                              direction, stride, gate_threshold, gate_mode, return_last_state, decay, dt_min, dt_max)
    return backends.get(backend).scan_forward(spec, inputs)


@_selective_scan_op.register_fake
def _(u, delta, A, B, C, D, z, delta_bias, gate, initial_state, cu_seqlens, delta_softplus, direction, stride,
      gate_threshold, gate_mode, return_last_state, decay, dt_min, dt_max, backend):
    batch, dim, _ = u.shape
    state_shape = (batch, dim, B.shape[-2]) if return_last_state else (0,)
    return torch.empty_like(u, memory_format=torch.contiguous_format), u.new_empty(state_shape, dtype=torch.float32)


@torch.library.custom_op("scanforge::selective_scan_backward", mutates_args=())
def _selective_scan_backward_op(dy: Tensor, dh_last: Tensor, u: Tensor, delta: Tensor, A: Tensor, B: Tensor,
                                C: Tensor, D: Tensor | None, z: Tensor | None, delta_bias: Tensor | None,
                                gate: Tensor | None, initial_state: Tensor | None, cu_seqlens: Tensor | None,
                                delta_softplus: bool, direction: str, stride: int, gate_threshold: float,
                                gate_mode: str, return_last_state: bool, decay: str, dt_min: float, dt_max: float,
                                backend: str) -> list[Tensor]:
    """Gradients of every input in :data:`SCAN_GRAD_NAMES` order; an absent input gets an empty tensor."""
    spec, inputs = _scan_call(u, delta, A, B, C, D, z, delta_bias, gate, initial_state, cu_seqlens, delta_softplus,
                              direction, stride, gate_threshold, gate_mode, return_last_state, decay, dt_min, dt_max)
    grads = backends.get(backend).scan_backward(spec, inputs, dy, dh_last)
    return [grads[name] if name in grads else u.new_empty((0,)) for name in SCAN_GRAD_NAMES]


@_selective_scan_backward_op.register_fake
def _(dy, dh_last, u, delta, A, B, C, D, z, delta_bias, gate, initial_state, *args):
    inputs = (u, delta, A, B, C, D, z, delta_bias, gate, initial_state)
    contiguous = torch.contiguous_format  # the backends return contiguous gradients, whatever the input strides
    return [u.new_empty((0,)) if t is None else torch.empty_like(t, memory_format=contiguous) for t in inputs]


def _setup_context(ctx, inputs, output):
    tensors = len(_SCAN_TENSORS)
    ctx.save_for_backward(*inputs[:tensors])
    ctx.options = inputs[tensors:]


def _backward(ctx, dy, dh_last):
    saved = ctx.saved_tensors
    grads = torch.ops.scanforge.selective_scan_backward(dy, dh_last, *saved, *ctx.options)
    grads = [g if t is not None else None for g, t in zip(grads, saved)]
    return (*grads, None, *([None] * len(ctx.options)))


_selective_scan_op.register_autograd(_backward, setup_context=_setup_context)


def _no_double_backward(op_name: str):
    """An autograd formula for a backward op that refuses, in one line, to differentiate it again: without
    one, a second gradient fails with PyTorch's message about a missing registration."""
    def refuse(ctx, *grads):
        raise NotImplementedError(f"{op_name}: double backward (a gradient of a gradient taken with "
                                  f"create_graph=True) is not supported; take first-order gradients only")
    return refuse


_selective_scan_backward_op.register_autograd(_no_double_backward("selective_scan"),
                                              setup_context=lambda ctx, inputs, output: None)


def selective_scan(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False, *,
                   direction="causal", stride=1, gate=None, gate_threshold=0.5, gate_mode="hard",
                   initial_state=None, return_last_state=False, cu_seqlens=None, backend=None):
    """Selective scan (Mamba's S6), the variants of :func:`scanforge.kernels.reference.selective_scan_ref`.

    Args:
        u, delta, z: ``[batch, dim, L]``, one floating dtype (float32, float16 or bfloat16).
        A: ``[dim, N]`` (float32 or u's dtype). D, delta_bias: ``[dim]``.
        B, C: ``[batch, N, L]`` or grouped ``[batch, G, N, L]`` (dim divisible by G), u's dtype or float32.
        delta_softplus: ``dt = softplus(delta + delta_bias)`` instead of ``delta + delta_bias``.
        direction: ``"causal"``, ``"reverse"`` or ``"bidirectional"`` (causal + reverse - D*u).
        stride: k > 1 updates the state once per window of k steps (strided slow channel).
        gate: ``[batch, L]`` in [0, 1]; the state updates where ``gate > gate_threshold``;
            ``gate_mode="hard"`` (straight-through gradients) or ``"soft"``.
        initial_state: ``[batch, dim, N]``, the state before the first step.
        return_last_state: also return the final state ``[batch, dim, N]`` (float32).
        cu_seqlens: ``[num_seqs + 1]`` int offsets: variable-length sequences packed along L in a
            batch of 1, each scanned on its own (causal, reverse, bidirectional; no states).
        backend: None (by device: tuned kernels, else the reference), ``"triton"``, ``"numba_cuda"``,
            ``"numba_cpu"`` or ``"reference"``.

    Returns:
        ``y [batch, dim, L]`` in u's dtype, or ``(y, h_last)`` with ``return_last_state=True``.
    """
    stride = as_int(stride)
    spec = check_scan_args(u, delta, A, B, C, D, z, delta_bias, gate, initial_state,
                           delta_softplus=delta_softplus, direction=direction, stride=stride,
                           gate_threshold=gate_threshold, gate_mode=gate_mode, return_last_state=return_last_state,
                           cu_seqlens=cu_seqlens)
    name = backends.resolve(backend, spec, u.device)
    y, h_last = torch.ops.scanforge.selective_scan(
        u, delta, A, B, C, D, z, delta_bias, gate, initial_state, cu_seqlens, delta_softplus, spec.direction.value,
        stride, float(gate_threshold), spec.gate_mode.value, return_last_state, spec.decay.value, 0.0, math.inf, name)
    return (y, h_last) if return_last_state else y


@torch.library.custom_op("scanforge::topk_gather", mutates_args=())
def _topk_gather_op(x: Tensor, k: int, scores: Tensor | None, keep_order: bool, summary: str, weight: str,
                    backend: str) -> tuple[Tensor, Tensor, Tensor]:
    spec = gather_spec_for(x, scores, keep_order, summary, weight)
    return backends.get(backend).gather_forward(spec, x, k, scores)


@_topk_gather_op.register_fake
def _(x, k, scores, keep_order, summary, weight, backend):
    batch, T, d = x.shape
    out = x.new_empty((batch, k + (summary != "none"), d))
    return out, x.new_empty((batch, k), dtype=torch.int64), x.new_empty((batch, T), dtype=torch.int32)


@torch.library.custom_op("scanforge::topk_gather_backward", mutates_args=())
def _topk_gather_backward_op(gout: Tensor, x: Tensor, k: int, scores: Tensor | None, slot: Tensor,
                             keep_order: bool, summary: str, weight: str, backend: str) -> tuple[Tensor, Tensor]:
    """``(dx, dscores)``; dscores is an empty tensor when no scores were given."""
    spec = gather_spec_for(x, scores, keep_order, summary, weight)
    dx, dscores = backends.get(backend).gather_backward(spec, x, k, scores, slot, gout)
    return dx, x.new_empty((0,)) if dscores is None else dscores


@_topk_gather_backward_op.register_fake
def _(gout, x, k, scores, slot, keep_order, summary, weight, backend):
    return (torch.empty_like(x, memory_format=torch.contiguous_format),
            x.new_empty((0,)) if scores is None else torch.empty_like(scores, memory_format=torch.contiguous_format))


def _gather_setup_context(ctx, inputs, output):
    x, k, scores, *options = inputs
    ctx.save_for_backward(x, scores, output[2])
    ctx.k, ctx.options = k, options


def _gather_backward(ctx, gout, _gidx, _gslot):
    x, scores, slot = ctx.saved_tensors
    dx, dscores = torch.ops.scanforge.topk_gather_backward(gout, x, ctx.k, scores, slot, *ctx.options)
    return dx, None, (dscores if scores is not None else None), None, None, None, None


_topk_gather_op.register_autograd(_gather_backward, setup_context=_gather_setup_context)
_topk_gather_backward_op.register_autograd(_no_double_backward("topk_gather"),
                                           setup_context=lambda ctx, inputs, output: None)


def topk_gather(x, k, scores=None, *, keep_order=True, summary=None, weight=None, backend=None):
    """Keep the k highest-scoring tokens of each row (visual token reduction), in one fused kernel.

    Args:
        x: ``[batch, T, d]`` tokens (float32, float16 or bfloat16).
        k: how many tokens to keep, ``1 <= k <= T`` (an int, ``np.int64`` or 0-d integer tensor).
        scores: ``[batch, T]`` (float32 or x's dtype), or None for the L2 norm of each token.
            Ties go to the lower index, on every backend; a NaN score (or a token with a NaN, whose
            norm is NaN) ranks below every number, -inf included, NaNs among themselves by index.
        keep_order: return the kept tokens in their original order (else by rank).
        summary: None, ``"mean"`` (append the mean of all tokens) or ``"mean_dropped"`` (of the
            dropped ones; zeros when k == T).
        weight: None or ``"sigmoid"``: multiply each kept token by sigmoid(score), so that a learned
            scorer gets gradients. The selection itself carries no gradient.
        backend: None (by device), ``"triton"``, ``"numba_cuda"``, ``"numba_cpu"`` or ``"reference"``.

    Returns:
        ``(out [batch, k (+1), d], idx [batch, k] int64)``.
    """
    k = as_int(k)
    spec = check_gather_args(x, k, scores, keep_order=keep_order, summary=summary, weight=weight)
    name = backends.resolve(backend, spec, x.device)
    out, idx, _ = torch.ops.scanforge.topk_gather(x, k, scores, keep_order, spec.summary.value, spec.weight.value,
                                                  name)
    return out, idx
