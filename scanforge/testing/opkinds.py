"""The op kinds: one object per kernel family (``scan_fwd``, ``scan_bwd``, ``scan_decode``, ``gather_fwd``,
``gather_bwd``, as :func:`scanforge.kernels.codegen.family` names them).

An op kind owns what every stage needs to know about its family: the inputs for a shape (random ones to prove and
time a kernel, ``meta`` ones to capture its launches), the float64 reference, the kernel call (the backend's entry
point with a forced config, by keyword), what a tuning trial runs and checks (:meth:`OpKind.prove`), and its rows in
the conformance suite (reference rows, the tuner's gate, Hypothesis properties). Stages look a kind up with
:func:`op_kind` or iterate over :data:`OP_KINDS` instead of branching on ops and phases: a new family is one new
entry.

Shapes are the tuner's: scan ``(batch, dim, L, N)``, gather ``(batch, T, d, k)``, decode ``(batch, dim, L, N)`` with
L ignored (one token).
"""

from __future__ import annotations

import dataclasses
from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import NamedTuple

import torch

from ..backends.base import Backend, DecodeInputs, GatherInputs, ScanInputs
from ..kernels.codegen import family
from ..kernels.ir import GatherSpec, Phase, ScanSpec
from ..kernels.reference import selective_state_update_ref
from . import strategies
from .accuracy import DEFAULT_HALF, gather_case, gather_errors, rel_error, scan_case, scan_errors
from .examples import SCAN_FAMILIES, DecodeExample, GatherExample, ScanExample, clone_decode_inputs
from .rows import SIZES, Row


class ScanCotangents(NamedTuple):
    """What a scan's backward takes: the forward's inputs and the cotangents of y and of the last state."""

    inputs: ScanInputs
    dy: torch.Tensor
    dh_last: torch.Tensor | None


class GatherCotangents(NamedTuple):
    """What a gather's backward takes: the forward's inputs, its slots (the row of each token) and the cotangent
    of its output."""

    inputs: GatherInputs
    slot: torch.Tensor
    gout: torch.Tensor


class Proof(NamedTuple):
    """A kernel run checked against a reference computed once: what a tuning trial times and proves."""

    call: Callable[[dict], object]  # config -> the kernel's result
    errors: Callable[[object], dict[str, float]]  # result -> relative error of every output


def groups_for(spec: ScanSpec, dim: int) -> int:
    """B/C groups of a tuning shape: the most of 4, 3, 2 that divides dim (1 for an ungrouped spec)."""
    return next((g for g in (4, 3, 2) if dim % g == 0), 1) if spec.grouped else 1


def _meta(shape, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    return torch.empty(shape, dtype=dtype, device="meta")


def _dtype(spec: ScanSpec | GatherSpec) -> torch.dtype:
    return getattr(torch, spec.dtype)


class OpKind(ABC):
    """One kernel family: see the module's docstring."""

    family: str
    op: str  # the public op whose conformance rows exercise the family
    phase: Phase
    #: The suite's Hypothesis properties (``scanforge check --deep``) that draw this family's specs.
    properties: tuple[str, ...] = ()

    @property
    def grads(self) -> bool:
        """Whether a check of this family compares gradients (the backward families)."""
        return self.phase is Phase.BACKWARD

    def entry_spec(self, spec):
        """The spec the backend's entry point takes: a backward family's entry takes the forward spec."""
        return dataclasses.replace(spec, phase=Phase.FORWARD) if self.grads else spec

    @abstractmethod
    def example(self, spec, shape: tuple[int, ...], *, seed: int = 0, groups: int | None = None,
                layout: str = "contiguous", half: tuple[str, ...] = DEFAULT_HALF):
        """A drawn input at ``shape`` (an Example of :mod:`scanforge.testing.examples`: short, rebuilds its
        tensors); ``groups`` defaults to :func:`groups_for`."""

    def inputs(self, spec, shape: tuple[int, ...], *, device: torch.device | str = "cpu", seed: int = 0):
        """Random inputs of the op at ``shape`` (the forward's for a backward family), to prove and time it."""
        return self.example(spec, shape, seed=seed).inputs(device)

    @abstractmethod
    def meta_inputs(self, spec, shape: tuple[int, ...]):
        """What :meth:`launch` takes, as contiguous ``meta`` tensors: the launches are captured, never run."""

    @abstractmethod
    def launch(self, backend: Backend, spec, given, config: dict | None):
        """The backend's entry point of this family on ``given`` (:meth:`meta_inputs`' bundle), ``config`` forced."""

    @abstractmethod
    def prove(self, backend: Backend, spec, inputs, *, seed: int) -> Proof:
        """The reference side of a check on ``inputs`` (cotangents drawn from ``seed``), computed once."""

    def row_example(self, row: Row, spec, size: str):
        """The input of a conformance reference row at the suite's ``size`` (:data:`scanforge.testing.rows.SIZES`)."""
        batch, dim, L, N = SIZES[size]["scan"]
        return self.example(spec, (batch, dim, L, N), groups=3 if spec.grouped else 1, layout=row.layout,
                            half=row.half)

    def verify_examples(self, spec, shape: tuple[int, ...] | None, *, seed: int = 0) -> list:
        """The tuner's gate: small inputs for a config tuned at ``shape``, N kept, tails not multiples of a block."""
        batch, dim, L, N = shape or (2, 24, 150, 16)
        dim = min(dim, 24)
        groups = groups_for(spec, dim)
        spec = self.entry_spec(spec)
        return [self.example(spec, (min(batch, 2), dim, min(L, 150), N), groups=groups, seed=seed),
                self.example(spec, (1, dim, 1, N), groups=groups, seed=seed)]

    def property_draws(self, name: str, backend: str, device: torch.device):
        """``(spec strategy, example strategy of a spec)`` of the suite's property ``name``; ValueError when
        ``backend`` runs no spec of it."""
        return strategies.scan_specs([name], backend=backend, device=device), strategies.scan_examples


class _Scan(OpKind):
    op = "selective_scan"

    def example(self, spec, shape, *, seed=0, groups=None, layout="contiguous", half=DEFAULT_HALF):
        batch, dim, L, N = shape
        groups = groups_for(spec, dim) if groups is None else groups
        return ScanExample(spec, batch, dim, L, N, groups=groups, seed=seed, layout=layout, half=half)

    def _meta_scan(self, spec: ScanSpec, shape, groups: int = 2) -> ScanInputs:
        """Meta inputs as a user passes them: u, delta, z, B, C in the spec's dtype, the rest float32."""
        batch, dim, L, N = shape
        dt = _dtype(spec)
        bc = (batch, groups, N, L) if spec.grouped else (batch, N, L)
        return ScanInputs(
            u=_meta((batch, dim, L), dt), delta=_meta((batch, dim, L), dt), A=_meta((dim, N)),
            B=_meta(bc, dt), C=_meta(bc, dt), D=_meta((dim,)) if spec.has_D else None,
            z=_meta((batch, dim, L), dt) if spec.has_z else None,
            delta_bias=_meta((dim,)) if spec.has_delta_bias else None,
            gate=_meta((batch, L)) if spec.gated else None,
            initial_state=_meta((batch, dim, N)) if spec.has_initial_state else None, gate_threshold=0.5)


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
        dh_last = _meta((shape[0], shape[1], shape[3])) if spec.return_last_state else None
        return ScanCotangents(inputs, _meta(inputs.u.shape, inputs.u.dtype), dh_last)

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
        dt = _dtype(spec)
        groups = 2 if spec.grouped else 1
        bc = (batch, groups, N) if spec.grouped else (batch, N)
        window = (_meta((batch, dim)), _meta((batch, dim)), _meta((batch, groups, N)), _meta((batch,))) \
            if spec.pooled else None
        return DecodeInputs(
            state=_meta((batch, dim, N)), x=_meta((batch, dim), dt), dt=_meta((batch, dim), dt), A=_meta((dim, N)),
            B=_meta(bc, dt), C=_meta(bc, dt), D=_meta((dim,)) if spec.has_D else None,
            z=_meta((batch, dim), dt) if spec.has_z else None, dt_bias=_meta((dim,)) if spec.has_delta_bias else None,
            gate=_meta((batch,)) if spec.gated else None, gate_threshold=0.5, window=window)

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


class _Gather(OpKind):
    op = "topk_gather"

    def example(self, spec, shape, *, seed=0, groups=None, layout="contiguous", half=DEFAULT_HALF):
        batch, T, d, k = shape
        return GatherExample(spec, batch, T, d, k, seed=seed, layout=layout)

    def inputs(self, spec, shape, *, device="cpu", seed=0):
        return self.example(self.entry_spec(spec), shape, seed=seed).inputs(device)

    def _meta_gather(self, spec: GatherSpec, shape) -> GatherInputs:
        batch, T, d, k = shape
        return GatherInputs(_meta((batch, T, d), _dtype(spec)), k, _meta((batch, T)) if spec.scores_given else None)

    def row_example(self, row, spec, size):
        return self.example(spec, SIZES[size]["gather"], layout=row.layout)

    def verify_examples(self, spec, shape, *, seed=0):
        batch, T, d, k = shape or (2, 100, 48, 25)
        T2 = min(T, 150)
        return [self.example(self.entry_spec(spec), (min(batch, 2), T2, min(d, 70), max(1, min(T2, round(k * T2 / T)))),
                             seed=seed)]

    def property_draws(self, name, backend, device):
        return strategies.gather_specs(), strategies.gather_examples


class GatherForward(_Gather):
    family, phase = "gather_fwd", Phase.FORWARD
    properties = ("gather",)

    def meta_inputs(self, spec, shape):
        return self._meta_gather(spec, shape)

    def launch(self, backend, spec, given, config):
        return backend.gather_forward(spec=spec, x=given.x, k=given.k, scores=given.scores, config=config)

    def prove(self, backend, spec, inputs, *, seed):
        case = gather_case(spec, *inputs, grads=False, seed=seed)
        return Proof(lambda config: self.launch(backend, spec, inputs, config),
                     lambda result: gather_errors(case, result[0], result[1]))


class GatherBackward(_Gather):
    family, phase = "gather_bwd", Phase.BACKWARD

    def meta_inputs(self, spec, shape):
        inputs = self._meta_gather(spec, shape)
        batch, T, d, k = shape
        return GatherCotangents(inputs, _meta((batch, T), torch.int32),
                                _meta((batch, spec.out_rows(k), d), _dtype(spec)))

    def launch(self, backend, spec, given, config):
        x, k, scores = given.inputs
        return backend.gather_backward(spec=self.entry_spec(spec), x=x, k=k, scores=scores, slot=given.slot,
                                       gout=given.gout, config=config)

    def prove(self, backend, spec, inputs, *, seed):
        fwd = self.entry_spec(spec)
        case = gather_case(fwd, *inputs, grads=True, seed=seed)
        slot = GatherForward().launch(backend, fwd, inputs, None)[2]  # the slots of the tuned default forward
        given = GatherCotangents(inputs, slot, case.gout)

        def errors(result):
            every = gather_errors(case, case.out, case.idx, result)
            return {n: e for n, e in every.items() if n.startswith("grad_")}

        return Proof(lambda config: self.launch(backend, spec, given, config), errors)


#: Every op kind by family, in the order the suite runs them.
OP_KINDS: dict[str, OpKind] = {kind.family: kind for kind in (ScanForward(), ScanBackward(), GatherForward(),
                                                              GatherBackward(), DecodeStep())}


def op_kind(spec: ScanSpec | GatherSpec) -> OpKind:
    """The op kind of ``spec``'s family."""
    return OP_KINDS[family(spec)]


def suite_kind(op: str) -> OpKind:
    """The op kind whose reference rows and properties stand for the public ``op`` in the suite (its forward or
    decode family: a row checks the backward through the same call)."""
    return next(k for k in OP_KINDS.values() if k.op == op and not k.grads)
