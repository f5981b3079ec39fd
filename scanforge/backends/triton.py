"""Triton backend: kernels rendered from ``templates/triton``; CPU tensors run them interpreted."""

from __future__ import annotations

import torch

from ..kernels import codegen
from ..kernels.ir import GatherSpec, ScanSpec
from . import triton_interpreter, triton_ssd
from .base import Backend, LaunchRecorder, ScanInputs, new_output
from .configs import config_for
from .host import empty_last_state, no_last_state_cotangent, scan_shape, scores_learn, sequence_rows

#: Open while the compile gate records this backend's launches (``TritonBackend.recording_launches``).
_recorder = LaunchRecorder("triton")


def _module(spec: ScanSpec | GatherSpec, shape: tuple[int, ...], device: torch.device, config: dict | None):
    """The kernel module of spec; while launches are recorded, its kernels record instead of running (put
    back when the recording closes)."""
    if device.type == "cpu":
        triton_interpreter.install()
    if config is None:
        config = config_for("triton", spec, shape)
    module = codegen.load(spec, "triton", config)
    if _recorder.active:
        from triton.runtime.jit import JITFunction  # loaded by the module above

        for name, kernel in list(vars(module).items()):
            if isinstance(kernel, JITFunction):
                setattr(module, name, _recorder.stand_in(kernel))
                _recorder.on_close(lambda name=name, kernel=kernel: setattr(module, name, kernel))
    return module


def _scan_config(spec: ScanSpec, inputs: ScanInputs, config: dict | None) -> dict:
    """The tiling config, with BLOCK_D shrunk to a divisor of dim / G for grouped B/C (a channel
    block must read a single group)."""
    config = dict(config or config_for("triton", spec, scan_shape(inputs)))
    if spec.grouped:
        per_group = inputs.u.shape[1] // inputs.B.shape[1]
        block = config["BLOCK_D"]
        while per_group % block:
            block //= 2
        config["BLOCK_D"] = block
    return config


def _rows_contiguous(t: torch.Tensor) -> torch.Tensor:
    """``t`` with unit stride along its last dimension (the gather's d): a copy of a view whose columns are
    strided (e.g. a transposed one). The kernels read d columns of a token row together; strided, every element
    is its own memory transaction, which costs more than one copy, and the generic-stride kernel spills (sm_90,
    fp32 l2norm+mean+sigmoid forward: 16 B)."""
    return t if t.stride(-1) == 1 or t.shape[-1] <= 1 else t.contiguous()


def interpreted() -> bool:
    """Whether triton was loaded in interpreter mode (TRITON_INTERPRET=1 when it was first imported).

    Triton fixes the mode of its own library functions at import, so one process runs either
    compiled kernels on CUDA tensors or interpreted kernels on CPU tensors, not both.
    """
    import triton.language as tl
    from triton.runtime.interpreter import InterpretedFunction

    return isinstance(tl.sum, InterpretedFunction)


class TritonBackend(Backend):
    name = "triton"
    requires = "triton"
    scan_kinds = ("scan", "ssd")

    def runs_on_gpu(self) -> bool:
        return not interpreted()

    def recording_launches(self, launches):
        return _recorder.recording(launches)

    def unsupported_reason(self, spec, device):
        wanted = "cpu" if interpreted() else "cuda"
        if device.type != wanted:
            mode = ("interpreted (TRITON_INTERPRET=1 at import): CPU tensors only" if wanted == "cpu"
                    else "compiled: CUDA tensors only; set TRITON_INTERPRET=1 before starting Python for CPU tensors")
            return f"triton is loaded {mode}, got a tensor on {device}"
        if isinstance(spec, GatherSpec):
            return None
        if spec.phase.value == "decode":
            return None
        if spec.pooled and (spec.direction.value != "causal" or spec.varlen):
            return "implements strided and gated scans for direction='causal' only"
        return None

    def scan_forward(self, spec, inputs, config=None):
        if spec.kind == "ssd":
            ssd = _module(spec, triton_ssd.ssd_shape(inputs), inputs.u.device, config)
            return triton_ssd.forward(spec, inputs, ssd)
        u = inputs.u
        batch, dim, L = u.shape
        N = inputs.A.shape[1]
        y = new_output((batch, dim, L), u.dtype, u.device)
        h_last = (new_output((batch, dim, N), torch.float32, u.device) if spec.return_last_state
                  else empty_last_state(u))
        h0 = None if inputs.initial_state is None else inputs.initial_state.contiguous()
        module = _module(spec, scan_shape(inputs), u.device, _scan_config(spec, inputs, config))
        module.launch_forward(*inputs.tensors[:9], inputs.gate_threshold, h0, y, h_last, cu_seqlens=inputs.cu_seqlens)
        return y, h_last

    def scan_backward(self, spec, inputs, dy, dh_last, config=None):
        if spec.kind == "ssd":
            ssd = _module(spec.adjoint(), triton_ssd.ssd_shape(inputs), inputs.u.device, config)
            return triton_ssd.backward(spec, inputs, dy, dh_last, ssd)
        u, A = inputs.u, inputs.A
        _, dim, _ = u.shape
        N = A.shape[1]
        rows = sequence_rows(inputs)
        f32 = dict(dtype=torch.float32, device=u.device)
        two_pass = len(spec.passes) == 2  # its passes add into du, ddelta, dz: keep fp32
        seq_dtype = torch.float32 if two_pass else u.dtype
        grads = {
            "u": new_output(u.shape, seq_dtype, u.device),
            "delta": new_output(u.shape, seq_dtype, u.device),
            "A": new_output((rows, dim, N), **f32),
            "B": torch.zeros(inputs.B.shape, **f32),
            "C": torch.zeros(inputs.C.shape, **f32),
        }
        if spec.has_D:
            grads["D"] = new_output((rows, dim), **f32)
        if spec.has_z:
            grads["z"] = new_output(u.shape, seq_dtype, u.device)
        if spec.has_delta_bias:
            grads["delta_bias"] = new_output((rows, dim), **f32)
        if spec.has_initial_state:
            grads["initial_state"] = new_output((rows, dim, N), **f32)
        if spec.gated:
            grads["gate"] = torch.zeros(inputs.gate.shape, **f32)
        if spec.return_last_state and no_last_state_cotangent(dh_last):
            dh_last = torch.zeros((rows, dim, N), **f32)
        dh_last = dh_last.contiguous() if spec.return_last_state else None
        h0 = None if inputs.initial_state is None else inputs.initial_state.contiguous()
        adjoint = spec.adjoint()
        module = _module(adjoint, scan_shape(inputs), u.device, _scan_config(adjoint, inputs, config))
        module.launch_backward(*inputs.tensors[:9], inputs.gate_threshold, h0, dy, dh_last, grads,
                               cu_seqlens=inputs.cu_seqlens)
        per_row = {"A", "D", "delta_bias"}
        result = {}
        for name, g in grads.items():
            like = getattr(inputs, name)
            result[name] = (g.sum(0) if name in per_row else g).to(like.dtype)
        return result

    def scan_decode(self, spec, inputs, config=None):
        state, x, dt, A, B, C, D, z, dt_bias, gate, gate_threshold, window = inputs
        module = _module(spec, (*x.shape, 1, A.shape[1]), x.device, config)  # a scan shape of one step
        out = new_output(x.shape, x.dtype, x.device)
        # The kernel indexes the window's sums as contiguous arrays: a view (e.g. a slice of a larger cache) is
        # updated through a contiguous copy.
        packed = None if window is None else tuple(t.contiguous() for t in window)
        module.launch_decode(state, x, dt, A, B, C, D, z, dt_bias, gate, gate_threshold, packed, out)
        for target, buffer in zip(window or (), packed or ()):
            if target is not buffer:
                target.copy_(buffer)
        return out

    def gather_forward(self, spec, x, k, scores, config=None):
        x = _rows_contiguous(x)
        batch, T, d = x.shape
        module = _module(spec, (batch, T, d, k), x.device, config)
        out = new_output((batch, spec.out_rows(k), d), x.dtype, x.device)
        idx = new_output((batch, k), torch.int64, x.device)
        slot = new_output((batch, T), torch.int32, x.device)
        module.launch_forward(x, k, scores, out, idx, slot)
        return out, idx, slot

    def gather_backward(self, spec, x, k, scores, slot, gout, config=None):
        x, gout = _rows_contiguous(x), _rows_contiguous(gout)
        module = _module(spec.adjoint(), (*x.shape, k), x.device, config)
        dx = new_output(x.shape, x.dtype, x.device)
        learned = scores_learn(spec, scores)
        dscores = new_output(scores.shape, torch.float32, x.device) if learned else None
        module.launch_backward(x, k, scores, slot, gout, dx, dscores)
        if scores is None:
            return dx, None
        return dx, (dscores if learned else torch.zeros(scores.shape, device=x.device)).to(scores.dtype)

