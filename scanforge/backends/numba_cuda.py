"""Numba-CUDA backend: kernels rendered from ``templates/numba_cuda``, one thread per (sequence, channel).

On a GPU the kernels take CUDA tensors (through ``__cuda_array_interface__``) and run on torch's
current stream. With ``NUMBA_ENABLE_CUDASIM=1`` (set before numba is imported) Numba's CUDA
simulator runs the same kernels, in Python threads, on CPU tensors: that is how CI tests them.
Numba has no bfloat16: every floating input is converted to a contiguous float32 tensor before
the launch (float16 too), and outputs are converted back to the input's dtype.
"""

from __future__ import annotations

import importlib.util
import os

import numpy as np
import torch

from ..kernels import codegen
from ..kernels.ir import GatherSpec, ScanSpec
from .base import Backend, LaunchRecorder, ScanInputs, new_output
from .configs import config_for
from .host import (
    empty_last_state,
    group_count,
    longest_sequence,
    no_last_state_cotangent,
    scan_shape,
    scores_learn,
    sequence_rows,
)

_F32 = torch.float32
#: Open while the compile gate records this backend's launches (``NumbaCudaBackend.recording_launches``).
_recorder = LaunchRecorder("numba_cuda")


def simulated() -> bool:
    """Whether numba runs CUDA kernels in its simulator (NUMBA_ENABLE_CUDASIM=1 when numba was imported)."""
    import numba

    return bool(numba.config.ENABLE_CUDASIM)


def _arg(t):
    """The kernel argument for ``t``: a NumPy view in the simulator, a CUDA array view on the GPU
    (scalars pass as they are)."""
    if not isinstance(t, torch.Tensor):
        return t
    if t.device.type == "cpu":
        return t.detach().numpy()
    from numba import cuda

    return cuda.as_cuda_array(t.detach())


def _f32(t: torch.Tensor | None, device: torch.device, dtype: torch.dtype = _F32) -> torch.Tensor:
    """A contiguous copy or view of ``t`` in ``dtype``; a 1-element placeholder for an absent input
    (the kernel of a spec without that term never reads it)."""
    if t is None:
        return torch.zeros(1, dtype=dtype, device=device)
    return t.detach().to(dtype).contiguous()


def _buffer(shape, dtype: torch.dtype, device: torch.device, present: bool = True) -> torch.Tensor:
    """An output the kernel fully writes (NaN-poisoned under SCANFORGE_POISON=1), or a placeholder."""
    return new_output(shape, dtype, device) if present else torch.zeros(1, dtype=dtype, device=device)


def _launch(kernel, work: int, threads: int, device: torch.device, *args) -> None:
    """Launch a grid-stride kernel over ``work`` items: on torch's current stream on a GPU; in the
    simulator as one block (each block is a batch of Python threads; the loops cover the rest). While
    launches are recorded, the launch is recorded instead."""
    if _recorder.record(kernel, args, threads=threads):
        return
    if device.type == "cpu":
        kernel[1, max(1, min(threads, work))](*map(_arg, args))
        return
    from numba import cuda

    with cuda.gpus[device.index if device.index is not None else torch.cuda.current_device()]:
        stream = cuda.external_stream(torch.cuda.current_stream(device).cuda_stream)
        blocks = max(1, min(-(-work // threads), 65535))
        kernel[blocks, threads, stream](*map(_arg, args))


def _module(spec: ScanSpec | GatherSpec, shape: tuple[int, ...], config: dict | None):
    """The kernel module of spec; a scan's compiles in its state size N (the last entry of its shape)."""
    constants = {"N": shape[3]} if isinstance(spec, ScanSpec) else None
    return codegen.load(spec, "numba_cuda", config or config_for("numba_cuda", spec, shape), constants)


def _scan_args(inputs: ScanInputs) -> tuple:
    """The inputs every scan kernel takes, as float32 (B, C as (batch, G, N, L))."""
    x, dev = inputs, inputs.u.device
    bc = lambda t: _f32(t if t.dim() == 4 else t.unsqueeze(1), dev)  # noqa: E731
    bounds = _f32(x.cu_seqlens, dev, torch.int64)
    return (_f32(x.u, dev), _f32(x.delta, dev), _f32(x.A, dev), bc(x.B), bc(x.C), _f32(x.D, dev), _f32(x.z, dev),
            _f32(x.delta_bias, dev), _f32(x.gate, dev), _f32(x.initial_state, dev), bounds)


class NumbaCUDABackend(Backend):
    kind_reasons = {"ssd": "has no per-head decay (Mamba-2) scan: its chunked form is built on matrix products, "
                           "which the triton backend generates for tensor cores; use backend='triton' on a GPU"}
    name = "numba_cuda"
    requires = "numba"
    library = "numba-cuda"  # the kernels' compiler: its version is a part of the tuned configs' fingerprint

    def unavailable_reason(self) -> str | None:
        reason = super().unavailable_reason()
        if reason is None and importlib.util.find_spec("numba_cuda") is None:
            return "the numba-cuda package (numba.cuda) is not installed"
        return reason

    def runs_on_gpu(self) -> bool:
        return not simulated() and torch.cuda.is_available()

    def recording_launches(self, launches):
        return _recorder.recording(launches)

    def unsupported_reason(self, spec, device):
        if simulated():
            if device.type != "cpu":
                return (f"numba runs CUDA kernels in its simulator (NUMBA_ENABLE_CUDASIM=1): CPU tensors only, "
                        f"got a tensor on {device}")
            return None
        if device.type != "cuda":
            late = os.environ.get("NUMBA_ENABLE_CUDASIM", "0") == "1"
            hint = ("NUMBA_ENABLE_CUDASIM=1 was set after numba was imported, too late for the simulator" if late
                    else "set NUMBA_ENABLE_CUDASIM=1 before numba is imported to run the kernels in the CUDA "
                    "simulator on CPU tensors")
            return f"runs on CUDA tensors, got a tensor on {device} ({hint})"
        if getattr(torch.version, "hip", None):
            return (f"numba-cuda compiles for NVIDIA GPUs (CUDA) only; this PyTorch is a ROCm build (HIP "
                    f"{torch.version.hip}): use backend='triton' on AMD GPUs")
        from numba import cuda

        if not cuda.is_available():
            return "numba finds no usable CUDA driver or GPU"
        return None

    @codegen.rebuilds_damaged_cache
    def scan_forward(self, spec, inputs, config=None):
        u = inputs.u
        batch, dim, L = u.shape
        N = inputs.A.shape[1]
        module = _module(spec, scan_shape(inputs), config)
        y = new_output((batch, dim, L), _F32, u.device)
        h_last = _buffer((batch, dim, N), _F32, u.device, spec.return_last_state)
        _launch(module.forward, sequence_rows(inputs) * dim, module.THREADS, u.device, *_scan_args(inputs),
                np.float32(inputs.gate_threshold), y, h_last)
        return y.to(u.dtype), h_last if spec.return_last_state else empty_last_state(u)

    @codegen.rebuilds_damaged_cache
    def scan_backward(self, spec, inputs, dy, dh_last, config=None):
        u, dev = inputs.u, inputs.u.device
        batch, dim, L = u.shape
        N = inputs.A.shape[1]
        G = group_count(inputs.B)
        rows = sequence_rows(inputs)
        module = _module(spec.adjoint(), scan_shape(inputs), config)
        passes = len(spec.passes)
        chunks = -(-longest_sequence(inputs) // module.CHUNK)
        scratch = (torch.empty((passes, rows * dim, chunks, 2 * N + 3), dtype=_F32, device=dev),
                   torch.empty((batch, dim, L), dtype=_F32, device=dev))
        out = dict(u=new_output(u.shape, _F32, dev), delta=new_output(u.shape, _F32, dev),
                   z=_buffer(u.shape, _F32, dev, spec.has_z), A=new_output((rows, dim, N), _F32, dev),
                   B=torch.zeros((batch, G, N, L), dtype=_F32, device=dev),
                   C=torch.zeros((batch, G, N, L), dtype=_F32, device=dev),
                   D=_buffer((rows, dim), _F32, dev, spec.has_D),
                   delta_bias=_buffer((rows, dim), _F32, dev, spec.has_delta_bias),
                   gate=torch.zeros((batch, L) if spec.gated else (1,), dtype=_F32, device=dev),
                   initial_state=_buffer((batch, dim, N), _F32, dev, spec.has_initial_state))
        if not spec.return_last_state:
            dh = _f32(None, dev)
        elif no_last_state_cotangent(dh_last):
            dh = torch.zeros((batch, dim, N), dtype=_F32, device=dev)
        else:
            dh = _f32(dh_last, dev)
        _launch(module.backward, rows * dim, module.THREADS, dev, *_scan_args(inputs),
                np.float32(inputs.gate_threshold), _f32(dy, dev), dh, *scratch,
                out["u"], out["delta"], out["z"], out["A"], out["B"], out["C"], out["D"], out["delta_bias"],
                out["gate"], out["initial_state"])
        for name in ("A", "D", "delta_bias"):
            out[name] = out[name].sum(0)
        if inputs.B.dim() == 3:
            out["B"], out["C"] = out["B"][:, 0], out["C"][:, 0]
        return {k: v.to(getattr(inputs, k).dtype) for k, v in out.items() if getattr(inputs, k) is not None}

    @codegen.rebuilds_damaged_cache
    def scan_decode(self, spec, inputs, config=None):
        state, x, dt, A, B, C, D, z, dt_bias, gate, gate_threshold, window = inputs
        dev = x.device
        batch, dim = x.shape
        N = A.shape[1]
        module = _module(spec, (batch, dim, 1, N), config)  # a scan shape of one step
        bc = lambda t: _f32(t if t.dim() == 3 else t.unsqueeze(1), dev)  # noqa: E731
        in_place = [state] + ([window[0], window[1]] if window is not None else [])
        buffers = [t if t.dtype == _F32 and t.is_contiguous() else _f32(t, dev) for t in in_place]
        if window is not None:
            acc_B, count = _f32(window[2], dev), _f32(window[3], dev)
            fresh = (torch.empty_like(acc_B), torch.empty_like(count))
        else:
            acc_B = count = torch.zeros(1, dtype=_F32, device=dev)
            fresh = (acc_B, count)
        acc = buffers[1:] if window is not None else [acc_B, count]
        out = new_output((batch, dim), _F32, dev)
        _launch(module.decode, batch * dim, module.THREADS, dev, buffers[0], _f32(x, dev), _f32(dt, dev),
                _f32(A, dev), bc(B), bc(C), _f32(D, dev), _f32(z, dev), _f32(dt_bias, dev), _f32(gate, dev),
                np.float32(gate_threshold), acc[0], acc[1], acc_B, count, *fresh, out)
        for target, buffer in zip(in_place, buffers):
            if target is not buffer:
                target.copy_(buffer)
        if window is not None:
            window[2].copy_(fresh[0])
            window[3].copy_(fresh[1])
        return out.to(x.dtype)

    def _scores(self, module, x: torch.Tensor, xf: torch.Tensor, scores: torch.Tensor | None) -> torch.Tensor:
        """Float64 scores (batch, T): the given ones, or the L2 norm of each token."""
        if scores is not None:
            return _f32(scores, x.device, torch.float64)
        s = torch.empty(x.shape[:2], dtype=torch.float64, device=x.device)
        _launch(module.norms, x.shape[0] * x.shape[1], module.THREADS, x.device, xf, s)
        return s

    @codegen.rebuilds_damaged_cache
    def gather_forward(self, spec, x, k, scores, config=None):
        batch, T, d = x.shape
        dev = x.device
        module = _module(spec, (batch, T, d, k), config)
        xf = _f32(x, dev)
        s = self._scores(module, x, xf, scores)
        rank = torch.empty((batch, T), dtype=torch.int32, device=dev)
        idx = new_output((batch, k), torch.int64, dev)
        slot = new_output((batch, T), torch.int32, dev)
        out = new_output((batch, spec.out_rows(k), d), _F32, dev)
        _launch(module.ranks, batch * T, module.THREADS, dev, s, rank)
        _launch(module.place, batch, module.THREADS, dev, rank, k, idx, slot)
        _launch(module.gather, out.numel(), module.THREADS, dev, xf, s, idx, slot, k, out)
        return out.to(x.dtype), idx, slot

    @codegen.rebuilds_damaged_cache
    def gather_backward(self, spec, x, k, scores, slot, gout, config=None):
        batch, T, d = x.shape
        dev = x.device
        module = _module(spec.adjoint(), (batch, T, d, k), config)
        xf, slot_c, gf = _f32(x, dev), slot.contiguous(), _f32(gout, dev)
        sigmoid = spec.weight.value == "sigmoid"
        learned = scores_learn(spec, scores)
        w, radial = (torch.empty((batch, T), dtype=_F32, device=dev) for _ in range(2))
        dscores = _buffer((batch, T), _F32, dev, learned)
        if sigmoid:
            s = self._scores(module, x, xf, scores)
            _launch(module.weight_grads, batch * T, module.THREADS, dev, xf, s, slot_c, gf, w, radial, dscores)
        dx = new_output((batch, T, d), _F32, dev)
        _launch(module.scatter, dx.numel(), module.THREADS, dev, xf, slot_c, gf, w, radial, k, dx)
        if scores is None:
            return dx.to(x.dtype), None
        ds = dscores if learned else torch.zeros(scores.shape, device=dev)
        return dx.to(x.dtype), ds.to(scores.dtype)
