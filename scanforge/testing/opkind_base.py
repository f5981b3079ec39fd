"""What an op kind is (:mod:`scanforge.testing.opkinds` holds the table): the interface of one kernel family, the
bundles its backward entry points take, and the :class:`Proof` a tuning trial runs."""

from __future__ import annotations

import dataclasses
from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import NamedTuple

import torch

from ..backends.base import Backend, GatherInputs, ScanInputs
from ..kernels.ir import GatherSpec, Phase, ScanSpec
from . import strategies
from .accuracy import DEFAULT_HALF
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


def meta(shape, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    return torch.empty(shape, dtype=dtype, device="meta")


def torch_dtype(spec: ScanSpec | GatherSpec) -> torch.dtype:
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
