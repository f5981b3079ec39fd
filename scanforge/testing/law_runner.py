"""The ops of one backend, called the way the public ops call them: what a metamorphic law
(:mod:`scanforge.testing.laws`) runs on."""

from __future__ import annotations

import math
from collections.abc import Mapping

import torch

from .. import backends
from ..backends.base import SCAN_GRAD_NAMES, DecodeInputs, ScanInputs
from ..decode import DecodeWindow
from ..kernels.codegen import family
from ..kernels.ir import GatherSpec, ScanSpec
from ..kernels.validate import check_decode_args, check_gather_args, check_scan_args, check_ssd_args


class Runner:
    """The ops of one backend, called the way the public ops call it, with optional forced configs
    (``configs``: kernel family such as ``"scan_fwd"`` -> config; a missing family uses the tuned
    or default config)."""

    def __init__(self, backend: str, configs: Mapping[str, Mapping] | None = None,
                 device: str | torch.device | None = None):
        self.name, self.backend = backend, backends.get(backend)
        self.configs = {k: dict(v) for k, v in (configs or {}).items()}
        gpu = device is None and self.backend.runs_on_gpu()
        self.device = torch.device(device if device is not None else ("cuda" if gpu else "cpu"))

    def config(self, spec: ScanSpec | GatherSpec) -> dict | None:
        return self.configs.get(family(spec))

    def unsupported(self, spec: ScanSpec | GatherSpec) -> str | None:
        return self.backend.unavailable_reason() or self.backend.unsupported_reason(spec, self.device)

    def _scan_inputs(self, x: Mapping, options: Mapping) -> tuple[ScanSpec, ScanInputs]:
        t = {n: x.get(n) for n in SCAN_GRAD_NAMES}
        spec = check_scan_args(*t.values(), delta_softplus=options.get("delta_softplus", False),
                               direction=options.get("direction", "causal"), stride=options.get("stride", 1),
                               gate_threshold=0.5, gate_mode=options.get("gate_mode", "hard"),
                               return_last_state=options.get("return_last_state", False),
                               cu_seqlens=options.get("cu_seqlens"))
        return spec, ScanInputs(*t.values(), 0.5, options.get("cu_seqlens"))

    def scan(self, x: Mapping, **options):
        """``y`` (or ``(y, h_last)`` with ``return_last_state=True``) like :func:`scanforge.selective_scan`."""
        spec, inputs = self._scan_inputs(x, options)
        y, h_last = self.backend.scan_forward(spec, inputs, self.config(spec))
        return (y, h_last) if spec.return_last_state else y

    def scan_grads(self, x: Mapping, dy: torch.Tensor, **options) -> dict[str, torch.Tensor]:
        """Gradients of ``(y * dy).sum()`` by input name."""
        spec, inputs = self._scan_inputs(x, options)
        return self.backend.scan_backward(spec, inputs, dy, None, self.config(spec.adjoint()))

    def decode(self, state, x, dt, A, B, C, D=None, z=None, dt_bias=None, dt_softplus=False, *, stride=1,
               gate=None, gate_mode="hard", window: DecodeWindow | None = None) -> torch.Tensor:
        """One step like :func:`scanforge.selective_state_update` (updates ``state``/``window``)."""
        spec = check_decode_args(state, x, dt, A, B, C, D, z, dt_bias, dt_softplus=dt_softplus, stride=stride,
                                 gate=gate, gate_threshold=0.5, gate_mode=gate_mode, window=window)
        inputs = DecodeInputs(state, x, dt, A, B, C, D, z, dt_bias, gate, 0.5,
                              None if window is None else window.tensors())
        return self.backend.scan_decode(spec, inputs, self.config(spec))

    def ssd(self, x: Mapping, **options):
        """``y`` (or ``(y, h_last)``, states ``(batch, dim, N)``) like :func:`scanforge.ssd_scan` with per-channel D:
        ``x`` names the tensors as ScanInputs does (delta = dt per head, A and delta_bias per head)."""
        spec, inputs = self._ssd_inputs(x, options)
        y, h_last = self.backend.scan_forward(spec, inputs, self.config(spec))
        return (y, h_last) if spec.return_last_state else y

    def ssd_grads(self, x: Mapping, dy: torch.Tensor, **options) -> dict[str, torch.Tensor]:
        """Gradients of ``(ssd(x) * dy).sum()`` by input name."""
        spec, inputs = self._ssd_inputs(x, options)
        return self.backend.scan_backward(spec, inputs, dy, None, self.config(spec.adjoint()))

    def _ssd_inputs(self, x: Mapping, options: Mapping) -> tuple[ScanSpec, ScanInputs]:
        t = {n: x.get(n) for n in SCAN_GRAD_NAMES}
        h0 = t["initial_state"]
        heads = None if h0 is None else h0.view(h0.shape[0], t["A"].shape[0], -1, h0.shape[-1])
        dt_limit = options.get("dt_limit", (0.0, math.inf))
        spec = check_ssd_args(t["u"], t["delta"], t["A"], t["B"], t["C"], t["D"], t["z"], t["delta_bias"], heads,
                              dt_softplus=options.get("delta_softplus", False), dt_limit=dt_limit,
                              direction=options.get("direction", "causal"),
                              return_last_state=options.get("return_last_state", False))
        return spec, ScanInputs(*t.values(), 0.5, None, tuple(dt_limit))

    def gather(self, x, k, scores=None, *, keep_order=True, summary=None, weight=None):
        spec = check_gather_args(x, k, scores, keep_order=keep_order, summary=summary, weight=weight)
        out, idx, _ = self.backend.gather_forward(spec, x, k, scores, self.config(spec))
        return out, idx
