"""Drawn inputs as short descriptions (spec, sizes, seed) that rebuild the exact tensors."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import NamedTuple

import torch

from ..backends.base import ScanInputs
from ..kernels.ir import GatherSpec, Phase, ScanSpec
from .accuracy import random_gather_inputs, random_scan_inputs

SCAN_FAMILIES: dict[str, dict] = {
    "causal": {},
    "reverse": {"direction": "reverse"},
    "bidirectional": {"direction": "bidirectional"},
    "strided": {"stride": 3},
    "gated-hard": {"gated": True},
    "gated-soft": {"gated": True, "gate_mode": "soft"},
}

#: Sequence lengths worth drawing on purpose: one step, and either side of the chunk sizes kernels use.
EDGE_LENGTHS = (1, 2, 15, 16, 17, 31, 32, 33, 63, 64, 65, 127, 128, 129, 255, 256, 257)


class GatherInputs(NamedTuple):
    """The inputs of one top-k gather: ``x (batch, T, d)``, ``k``, ``scores (batch, T)`` or None."""

    x: torch.Tensor
    k: int
    scores: torch.Tensor | None


class DecodeInputs(NamedTuple):
    """The inputs of one decode step (:func:`scanforge.selective_state_update`); state/window are updated."""

    state: torch.Tensor
    x: torch.Tensor
    dt: torch.Tensor
    A: torch.Tensor
    B: torch.Tensor
    C: torch.Tensor
    D: torch.Tensor | None
    z: torch.Tensor | None
    dt_bias: torch.Tensor | None
    gate: torch.Tensor | None
    gate_threshold: float
    window: tuple[torch.Tensor, ...] | None

    def clone(self) -> DecodeInputs:
        window = None if self.window is None else tuple(t.clone() for t in self.window)
        return self._replace(state=self.state.clone(), window=window)


def spec_source(spec: ScanSpec | GatherSpec) -> str:
    """Python source that rebuilds ``spec`` (non-default fields only), for reproducible snippets."""
    args = []
    for f in dataclasses.fields(spec):
        value = getattr(spec, f.name)
        if value != f.default:
            args.append(f"{f.name}={getattr(value, 'value', value)!r}")
    return f"{type(spec).__name__}({', '.join(args)})"


@dataclass(frozen=True)
class ScanExample:
    """A drawn scan input, described by sizes and a seed: :meth:`inputs` rebuilds the exact tensors."""

    spec: ScanSpec
    batch: int
    dim: int
    L: int
    N: int
    groups: int = 1
    seed: int = 0
    transpose: bool = False
    extreme_dt: bool = False

    @property
    def id(self) -> str:
        extra = (f"-G{self.groups}" if self.spec.grouped else "") + ("-T" if self.transpose else "") + \
            ("-xdt" if self.extreme_dt else "")
        return f"B{self.batch}-D{self.dim}-L{self.L}-N{self.N}{extra}-{self.spec.dtype}-seed{self.seed}"

    def inputs(self, device: str | torch.device = "cpu") -> ScanInputs:
        spec = dataclasses.replace(self.spec, phase=Phase.FORWARD)
        return random_scan_inputs(spec, self.batch, self.dim, self.L, self.N, groups=self.groups, device=device,
                                  seed=self.seed, transpose=self.transpose, extreme_dt=self.extreme_dt)

    def source(self) -> str:
        fields = ", ".join(f"{f.name}={getattr(self, f.name)!r}" for f in dataclasses.fields(self) if f.name != "spec")
        return f"ScanExample({spec_source(self.spec)}, {fields})"


@dataclass(frozen=True)
class GatherExample:
    """A drawn top-k gather input (sizes, k, ties, seed): :meth:`inputs` rebuilds the exact tensors."""

    spec: GatherSpec
    batch: int
    T: int
    d: int
    k: int
    ties: bool = False
    seed: int = 0

    @property
    def id(self) -> str:
        return f"B{self.batch}-T{self.T}-d{self.d}-k{self.k}{'-ties' if self.ties else ''}-{self.spec.dtype}" \
               f"-seed{self.seed}"

    def inputs(self, device: str | torch.device = "cpu") -> GatherInputs:
        spec = dataclasses.replace(self.spec, phase=Phase.FORWARD)
        x, scores = random_gather_inputs(spec, self.batch, self.T, self.d, device=device, seed=self.seed,
                                         ties=self.ties)
        return GatherInputs(x, self.k, scores)

    def source(self) -> str:
        fields = ", ".join(f"{f.name}={getattr(self, f.name)!r}" for f in dataclasses.fields(self) if f.name != "spec")
        return f"GatherExample({spec_source(self.spec)}, {fields})"


# ---------------------------------------------------------------------------------------------- strategies


def random_decode_inputs(spec: ScanSpec, batch: int, dim: int, N: int, *, groups: int = 1,
                         device: str | torch.device = "cpu", seed: int = 0) -> DecodeInputs:
    """One decode step's inputs for a decode ``spec``: a random state and, for strided/gated steps,
    a half-full window (so that the step may or may not fire)."""
    fwd = dataclasses.replace(spec, phase=Phase.FORWARD)
    x = random_scan_inputs(fwd, batch, dim, 1, N, groups=groups, device=device, seed=seed)
    gen = torch.Generator().manual_seed(seed + 1)
    state = torch.randn(batch, dim, N, generator=gen).to(device)
    window = None
    if spec.stride > 1 or spec.gated:
        G = x.B.shape[1] if spec.grouped else 1
        window = (torch.rand(batch, dim, generator=gen), torch.randn(batch, dim, generator=gen),
                  torch.randn(batch, G, N, generator=gen), torch.randint(0, spec.stride, (batch,), generator=gen))
        window = tuple(t.to(device, torch.float32) for t in window)
    z = None if x.z is None else x.z[..., 0]
    return DecodeInputs(state, x.u[..., 0], x.delta[..., 0], x.A, x.B[..., 0], x.C[..., 0], x.D, z,
                        x.delta_bias, None if x.gate is None else x.gate[:, 0], x.gate_threshold, window)


# ---------------------------------------------------------------------------------------------- assertions
