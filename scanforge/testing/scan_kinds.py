"""The op kinds of the selective scan: forward, backward and the decode step (:mod:`scanforge.testing.opkinds`)."""

from __future__ import annotations

from ..backends.base import DecodeInputs, ScanInputs
from ..kernels.ir import Phase, ScanSpec
from ..kernels.reference import selective_state_update_ref
from . import strategies
from .accuracy import DEFAULT_HALF, rel_error, scan_case, scan_errors
from .examples import SCAN_FAMILIES, DecodeExample, ScanExample, clone_decode_inputs
from .opkind_base import OpKind, Proof, ScanCotangents, groups_for, meta, torch_dtype
from .rows import SIZES


class _Scan(OpKind):
    op = "selective_scan"

    def example(self, spec, shape, *, seed=0, groups=None, layout="contiguous", half=DEFAULT_HALF):
        batch, dim, L, N = shape
        groups = groups_for(spec, dim) if groups is None else groups
        return ScanExample(spec, batch, dim, L, N, groups=groups, seed=seed, layout=layout, half=half)

    def _meta_scan(self, spec: ScanSpec, shape, groups: int = 2) -> ScanInputs:
        """Meta inputs as a user passes them: u, delta, z, B, C in the spec's dtype, the rest float32."""
        batch, dim, L, N = shape
        dt = torch_dtype(spec)
        bc = (batch, groups, N, L) if spec.grouped else (batch, N, L)
        return ScanInputs(
            u=meta((batch, dim, L), dt), delta=meta((batch, dim, L), dt), A=meta((dim, N)),
            B=meta(bc, dt), C=meta(bc, dt), D=meta((dim,)) if spec.has_D else None,
            z=meta((batch, dim, L), dt) if spec.has_z else None,
            delta_bias=meta((dim,)) if spec.has_delta_bias else None,
            gate=meta((batch, L)) if spec.gated else None,
            initial_state=meta((batch, dim, N)) if spec.has_initial_state else None, gate_threshold=0.5)


class ScanForward(_Scan):
    family, phase = "scan_fwd", Phase.FORWARD
    properties = tuple(SCAN_FAMILIES)

    def meta_inputs(self, spec, shape):
        return self._meta_scan(spec, shape)

    def launch(self, backend, spec, given, config):
        return backend.scan_forward(spec=spec, inputs=given, config=config)

    def prove(self, backend, spec, inputs, *, seed):
        case = scan_case(spec, inputs, grads=False, seed=seed)
        return Proof(lambda config: self.launch(backend, spec, inputs, config),
                     lambda result: scan_errors(case, *result))


class ScanBackward(_Scan):
    family, phase = "scan_bwd", Phase.BACKWARD

    def meta_inputs(self, spec, shape):
        inputs = self._meta_scan(spec, shape)
        dh_last = meta((shape[0], shape[1], shape[3])) if spec.return_last_state else None
        return ScanCotangents(inputs, meta(inputs.u.shape, inputs.u.dtype), dh_last)

    def launch(self, backend, spec, given, config):
        return backend.scan_backward(spec=self.entry_spec(spec), inputs=given.inputs, dy=given.dy,
                                     dh_last=given.dh_last, config=config)

    def prove(self, backend, spec, inputs, *, seed):
        fwd = self.entry_spec(spec)
        case = scan_case(fwd, inputs, grads=True, seed=seed)
        given = ScanCotangents(inputs, case.dy, case.dh)

        def errors(result):
            every = scan_errors(case, case.y, case.h_last, result)
            return {n: e for n, e in every.items() if n.startswith("grad_")}

        return Proof(lambda config: self.launch(backend, spec, given, config), errors)


class DecodeStep(_Scan):
    """One decode step: it updates its state and window in place, so every run gets fresh copies."""

    op, family, phase = "selective_state_update", "scan_decode", Phase.DECODE
    properties = ("decode",)

    def example(self, spec, shape, *, seed=0, groups=None, layout="contiguous", half=DEFAULT_HALF):
        batch, dim, _, N = shape
        groups = groups_for(spec, dim) if groups is None else groups
        return DecodeExample(spec, batch, dim, N, groups=groups, seed=seed, layout=layout, half=half)

    def meta_inputs(self, spec, shape):
        batch, dim, _, N = shape
        dt = torch_dtype(spec)
        groups = 2 if spec.grouped else 1
        bc = (batch, groups, N) if spec.grouped else (batch, N)
        window = (meta((batch, dim)), meta((batch, dim)), meta((batch, groups, N)), meta((batch,))) \
            if spec.pooled else None
        return DecodeInputs(
            state=meta((batch, dim, N)), x=meta((batch, dim), dt), dt=meta((batch, dim), dt), A=meta((dim, N)),
            B=meta(bc, dt), C=meta(bc, dt), D=meta((dim,)) if spec.has_D else None,
            z=meta((batch, dim), dt) if spec.has_z else None, dt_bias=meta((dim,)) if spec.has_delta_bias else None,
            gate=meta((batch,)) if spec.gated else None, gate_threshold=0.5, window=window)

    def launch(self, backend, spec, given, config):
        return backend.scan_decode(spec=spec, inputs=given, config=config)

    def prove(self, backend, spec, inputs, *, seed):
        x = clone_decode_inputs(inputs)
        ref_out, ref_state, _ = selective_state_update_ref(
            x.state, x.x, x.dt, x.A, x.B, x.C, x.D, x.z, x.dt_bias, spec.softplus, stride=spec.stride, gate=x.gate,
            gate_threshold=x.gate_threshold, gate_mode=spec.gate_mode, window=x.window)

        def call(config):
            run = clone_decode_inputs(inputs)
            return self.launch(backend, spec, run, config), run.state

        return Proof(call, lambda result: {"out": rel_error(result[0], ref_out),
                                           "state": rel_error(result[1], ref_state)})

    def row_example(self, row, spec, size):
        batch, dim, N = SIZES[size]["decode"]
        return self.example(spec, (batch, dim, 1, N), groups=3 if spec.grouped else 1, layout=row.layout,
                            half=row.half)

    def verify_examples(self, spec, shape, *, seed=0):
        batch, dim, _, N = shape or (2, 24, 150, 16)
        dim = min(dim, 24)
        return [self.example(spec, (min(batch, 2), dim, 1, N), groups=groups_for(spec, dim), seed=seed)]

    def property_draws(self, name, backend, device):
        return strategies.scan_specs(phase="decode", backend=backend, device=device), strategies.decode_examples
