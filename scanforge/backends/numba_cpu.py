"""Numba CPU backend: kernels rendered from ``templates/numba_cpu``, compiled once and cached on disk.

Inputs are viewed as contiguous float32 NumPy arrays (bfloat16/float16 are converted: NumPy has no
bfloat16). Forward and backward run parallel over (sequence, block of channels), by default
vectorised over the block's channels in float32 (``LAYOUT="channels"``); the decode step computes in
float64 scalars. Mamba-2's scan (a spec of kind ``ssd``) has its own kernels and host code
(:mod:`scanforge.backends.numba_cpu_ssd`), one parallel task per (sequence, head).

Small calls run on one thread (:data:`SERIAL_WORK`): a parallel region ends when its slowest thread
does, and on a machine whose cores are busy with other work a descheduled worker thread makes a
0.2 ms call take milliseconds (OpenMP's waiting threads spin and take the core from the thread they
wait for).
"""

from __future__ import annotations

import os
import warnings

import numpy as np
import torch

from ..kernels import codegen
from ..kernels.ir import GatherSpec, ScanSpec
from .base import Backend, ScanInputs, new_output
from .configs import config_for, default_config
from .host import empty_last_state, group_count, no_last_state_cotangent, scan_shape, scores_learn, sequence_rows
from .numba_cpu_ssd import ssd_backward, ssd_forward, ssd_shape


def _serial_work(default: float = float(1 << 22)) -> float:
    text = os.environ.get("SCANFORGE_NUMBA_SERIAL_WORK", "").strip()
    try:
        return float(text) if text else default
    except ValueError:
        warnings.warn(f"SCANFORGE_NUMBA_SERIAL_WORK: expected a number of state updates, got {text!r}; using "
                      f"{default:g}", stacklevel=2)
        return default


#: A call with less work than this runs on one thread: scan state updates (batch * dim * L * N; a backward
#: update counts 4) or gather elements (batch * T * d). Measured on 2 shared cores (python
#: benchmarks/small_calls.py --sweep, results/small_calls_sweep.json): up to 2 million updates one thread
#: was faster in the median and the 90th percentile, alone and beside a process running parallel Numba
#: kernels; at 4 million it was mixed (faster alone, slower beside the load); above, all threads won. A
#: call with one parallel task always runs on one thread. ``SCANFORGE_NUMBA_SERIAL_WORK`` sets another
#: threshold; 0 turns it off (every call parallel, as before).
SERIAL_WORK = _serial_work()
_numba = None


def _run(kernel, work: int, tasks: int, *args) -> None:
    """Call ``kernel(*args)``, on one thread when the call is too small to gain from parallel threads."""
    global _numba
    if SERIAL_WORK <= 0 or (tasks > 1 and work >= SERIAL_WORK):
        kernel(*args)
        return
    if _numba is None:
        import numba

        _numba = numba
    threads = _numba.get_num_threads()
    if threads == 1:
        kernel(*args)
        return
    _numba.set_num_threads(1)  # this thread's setting: other threads' calls keep theirs
    try:
        kernel(*args)
    finally:
        _numba.set_num_threads(threads)


def _tasks(module, inputs: ScanInputs) -> int:
    """The parallel tasks of a scan kernel: one per (sequence, group, block of channels)."""
    dim = inputs.u.shape[1]
    G = group_count(inputs.B)
    return sequence_rows(inputs) * G * -(-(dim // G) // module.BLOCK_D)


def _out(shape, dtype: torch.dtype = torch.float32) -> np.ndarray:
    """An output array the kernel fully writes: the backends' one allocation helper (NaN-poisoned under
    SCANFORGE_POISON=1), seen as NumPy."""
    return new_output(tuple(shape), dtype).numpy()


def _np(t: torch.Tensor | None, shape=(0,)) -> np.ndarray:
    """A contiguous float32 NumPy view (or copy) of t; an empty array for an absent input."""
    if t is None:
        return np.zeros(shape, dtype=np.float32)
    return t.detach().to(torch.float32).contiguous().numpy()


def _bc(t: torch.Tensor) -> np.ndarray:
    return _np(t if t.dim() == 4 else t.unsqueeze(1))


def _with_group_axis(t: torch.Tensor) -> np.ndarray:
    """A decode step's B or C as (batch, G, N): shared (batch, N) is one group."""
    return _np(t if t.dim() == 3 else t.unsqueeze(1))


def _in_place(t: torch.Tensor) -> tuple[np.ndarray, bool]:
    """A float32 NumPy array sharing t's memory when it can, else a float32 copy (then True: copy it back)."""
    if t.dtype == torch.float32 and t.is_contiguous():
        return t.detach().numpy(), False
    return _np(t), True


def _module(spec: ScanSpec | GatherSpec, shape: tuple[int, ...], config: dict | None):
    """The kernel module of spec. The configured (tuned or default) config is complete; a forced
    config may name only some parameters, the rest keep their defaults."""
    if not config:
        return codegen.load(spec, "numba_cpu", config_for("numba_cpu", spec, shape))
    return codegen.load(spec, "numba_cpu", {**default_config("numba_cpu", spec), **config})


def _common(inputs: ScanInputs):
    x = inputs
    packed = x.cu_seqlens is not None
    bounds = x.cu_seqlens.to(torch.int64).numpy() if packed else np.zeros(1, dtype=np.int64)
    return (_np(x.u), _np(x.delta), _np(x.A), _bc(x.B), _bc(x.C), _np(x.D), _np(x.z, (0, 0, 0)),
            _np(x.delta_bias), _np(x.gate, (0, 0)), _np(x.initial_state, (0, 0, 0)), bounds, packed)


class NumbaCPUBackend(Backend):
    name = "numba_cpu"
    requires = "numba"
    scan_kinds = ("scan", "ssd")

    def unsupported_reason(self, spec, device):
        if device.type != "cpu":
            return f"runs on CPU tensors, got a tensor on {device}"
        return None

    @codegen.rebuilds_damaged_cache
    def scan_forward(self, spec, inputs, config=None):
        if spec.kind == "ssd":
            return ssd_forward(spec, inputs, _module(spec, ssd_shape(inputs), config), _run)
        batch, dim, L = inputs.u.shape
        N = inputs.A.shape[1]
        y = _out((batch, dim, L))
        h_last = _out((batch, dim, N) if spec.return_last_state else (0, 0, 0))
        module = _module(spec, scan_shape(inputs), config)
        _run(module.scan_forward, batch * dim * L * N, _tasks(module, inputs), *_common(inputs), spec.softplus,
             float(inputs.gate_threshold), spec.stride, y, h_last)
        h = torch.from_numpy(h_last) if spec.return_last_state else empty_last_state(inputs.u)
        return torch.from_numpy(y).to(inputs.u.dtype), h

    @codegen.rebuilds_damaged_cache
    def scan_backward(self, spec, inputs, dy, dh_last, config=None):
        if spec.kind == "ssd":
            return ssd_backward(spec, inputs, dy, dh_last, _module(spec.adjoint(), ssd_shape(inputs), config), _run)
        module = _module(spec.adjoint(), scan_shape(inputs), config)
        batch, dim, L = inputs.u.shape
        N = inputs.A.shape[1]
        G = group_count(inputs.B)
        rows = sequence_rows(inputs)
        blocks = G * -(-(dim // G) // module.BLOCK_D)  # partials: per block of channels of one group
        f32 = dict(dtype=np.float32)
        seq = (batch, dim, L)
        out = dict(du=_out(seq), ddelta=_out(seq), dz=_out(seq if spec.has_z else (0, 0, 0)),
                   dA=np.zeros((rows, dim, N), **f32),
                   dB=np.zeros((blocks, batch, G, N, L), **f32), dC=np.zeros((blocks, batch, G, N, L), **f32),
                   dD=np.zeros((rows, dim), **f32), dbias=np.zeros((rows, dim), **f32),
                   dgate=np.zeros((blocks, batch, L), **f32),
                   dh0=np.zeros((batch, dim, N) if spec.has_initial_state else (0, 0, 0), **f32))
        no_dh = not spec.return_last_state or no_last_state_cotangent(dh_last)
        _run(module.scan_backward, 4 * batch * dim * L * N, _tasks(module, inputs), *_common(inputs), spec.softplus,
             float(inputs.gate_threshold), spec.stride, _np(dy), _np(None, (0, 0, 0)) if no_dh else _np(dh_last),
             *out.values())
        t = {k: torch.from_numpy(v) for k, v in out.items()}
        grads = {"u": t["du"], "delta": t["ddelta"], "A": t["dA"].sum(0),
                 "B": t["dB"].sum(0), "C": t["dC"].sum(0)}
        if inputs.B.dim() == 3:
            grads["B"], grads["C"] = grads["B"][:, 0], grads["C"][:, 0]
        optional = {"D": t["dD"].sum(0), "z": t["dz"], "delta_bias": t["dbias"].sum(0),
                    "gate": t["dgate"].sum(0), "initial_state": t["dh0"]}
        grads.update({k: v for k, v in optional.items() if getattr(inputs, k) is not None})
        return {k: v.to(getattr(inputs, k).dtype) for k, v in grads.items()}

    @codegen.rebuilds_damaged_cache
    def scan_decode(self, spec, inputs, config=None):
        state, x, dt, A, B, C, D, z, dt_bias, gate, gate_threshold, window = inputs
        batch, dim = x.shape
        module = _module(spec, (batch, dim, 1, A.shape[1]), config)  # a scan shape with L = 1
        buffers = [state, *(window or ())]
        arrays = [_in_place(t) for t in buffers]
        if window is None:
            empty = (np.zeros((0, 0), np.float32), np.zeros((0, 0), np.float32), np.zeros((0, 0, 0), np.float32),
                     np.zeros(0, np.float32))
        else:
            empty = tuple(a for a, _ in arrays[1:])
        out = _out((batch, dim))
        module.scan_decode(arrays[0][0], _np(x), _np(dt), _np(A), _with_group_axis(B), _with_group_axis(C), _np(D),
                           _np(z, (0, 0)), _np(dt_bias), _np(gate), spec.softplus, float(gate_threshold), spec.stride,
                           *empty, out)
        for t, (a, copied) in zip(buffers, arrays):
            if copied:
                t.copy_(torch.from_numpy(a))
        return torch.from_numpy(out).to(x.dtype)

    @codegen.rebuilds_damaged_cache
    def gather_forward(self, spec, x, k, scores, config=None):
        batch, T, d = x.shape
        module = _module(spec, (batch, T, d, k), config)
        out = _out((batch, spec.out_rows(k), d))
        idx = _out((batch, k), torch.int64)
        slot = _out((batch, T), torch.int32)
        _run(module.gather_forward, batch * T * d, batch, _np(x), _np(scores, (0, 0)), k, out, idx, slot)
        return torch.from_numpy(out).to(x.dtype), torch.from_numpy(idx), torch.from_numpy(slot)

    @codegen.rebuilds_damaged_cache
    def gather_backward(self, spec, x, k, scores, slot, gout, config=None):
        module = _module(spec.adjoint(), (*x.shape, k), config)
        dx = _out(x.shape)
        learned = scores_learn(spec, scores)
        dscores = _out(scores.shape if learned else (0, 0))
        _run(module.gather_backward, x.numel(), x.shape[0], _np(x), _np(scores, (0, 0)), k, slot.contiguous().numpy(),
             _np(gout), dx, dscores)
        if scores is None:
            return torch.from_numpy(dx).to(x.dtype), None
        ds = torch.from_numpy(dscores) if learned else torch.zeros(scores.shape)
        return torch.from_numpy(dx).to(x.dtype), ds.to(scores.dtype)
