"""Drawn inputs as short descriptions (spec, sizes, seed) that rebuild the exact tensors."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch

from ..backends.base import DecodeInputs, GatherInputs, ScanInputs
from ..kernels.ir import GatherSpec, Phase, ScanSpec
from .accuracy import DEFAULT_HALF, random_gather_inputs, random_scan_inputs
from .layouts import as_layout, clone_layout

SCAN_FAMILIES: dict[str, dict] = {
    "causal": {},
    "reverse": {"direction": "reverse"},
    "bidirectional": {"direction": "bidirectional"},
    "strided": {"stride": 3},
    "gated-hard": {"gated": True},
    "gated-soft": {"gated": True, "gate_mode": "soft"},
}
#: The families whose direction is drawn too (their entry above fixes the pooling, not the direction).
POOLED_FAMILIES = ("strided", "gated-hard", "gated-soft")
DIRECTIONS = ("causal", "reverse", "bidirectional")

#: Sequence lengths worth drawing on purpose: one step, and either side of the chunk sizes kernels use.
EDGE_LENGTHS = (1, 2, 15, 16, 17, 31, 32, 33, 63, 64, 65, 127, 128, 129, 255, 256, 257)


def clone_decode_inputs(inputs: DecodeInputs) -> DecodeInputs:
    """Copies of the state and window (the tensors a step updates), with their strides and offsets."""
    window = None if inputs.window is None else tuple(clone_layout(t) for t in inputs.window)
    return inputs._replace(state=clone_layout(inputs.state), window=window)


def spec_source(spec: ScanSpec | GatherSpec) -> str:
    """Python source that rebuilds ``spec`` (non-default fields only), for reproducible snippets."""
    args = []
    for f in dataclasses.fields(spec):
        value = getattr(spec, f.name)
        if value != f.default:
            args.append(f"{f.name}={getattr(value, 'value', value)!r}")
    return f"{type(spec).__name__}({', '.join(args)})"


def _fields_source(example) -> str:
    """``name=value`` of each field but the spec, defaults left out."""
    fields = [f for f in dataclasses.fields(example) if f.name != "spec"]
    return ", ".join(f"{f.name}={getattr(example, f.name)!r}" for f in fields
                     if f.default is dataclasses.MISSING or getattr(example, f.name) != f.default)


def _id_extras(spec, layout: str, half: tuple[str, ...]) -> str:
    mixed = spec.dtype != "float32" and tuple(half) != DEFAULT_HALF
    return ("" if layout == "contiguous" else f"-{layout}") + (f"-half[{','.join(half)}]" if mixed else "")


@dataclass(frozen=True)
class ScanExample:
    """A drawn scan input, described by sizes and a seed: :meth:`inputs` rebuilds the exact tensors.

    ``layout`` is the memory layout of every input (:data:`scanforge.testing.layouts.LAYOUTS`); ``half`` names
    the inputs stored in u's dtype rather than float32 when the spec is float16/bfloat16
    (:data:`scanforge.testing.accuracy.HALF_CAPABLE`)."""

    spec: ScanSpec
    batch: int
    dim: int
    L: int
    N: int
    groups: int = 1
    seed: int = 0
    layout: str = "contiguous"
    extreme_dt: bool = False
    half: tuple[str, ...] = DEFAULT_HALF
    heads: int = 0  # a per-head decay spec's heads (Mamba-2); 0 for a decay per channel

    @property
    def id(self) -> str:
        extra = (f"-G{self.groups}" if self.spec.grouped else "") + _id_extras(self.spec, self.layout, self.half) + \
            ("-xdt" if self.extreme_dt else "")
        heads = f"-H{self.heads}" if self.heads else ""
        return f"B{self.batch}-D{self.dim}{heads}-L{self.L}-N{self.N}{extra}-{self.spec.dtype}-seed{self.seed}"

    def inputs(self, device: str | torch.device = "cpu") -> ScanInputs:
        spec = dataclasses.replace(self.spec, phase=Phase.FORWARD)
        return random_scan_inputs(spec, self.batch, self.dim, self.L, self.N, groups=self.groups, device=device,
                                  seed=self.seed, layout=self.layout, extreme_dt=self.extreme_dt, half=self.half,
                                  heads=self.heads)

    def source(self) -> str:
        return f"ScanExample({spec_source(self.spec)}, {_fields_source(self)})"


@dataclass(frozen=True)
class GatherExample:
    """A drawn top-k gather input (sizes, k, ties, layout, seed): :meth:`inputs` rebuilds the exact tensors."""

    spec: GatherSpec
    batch: int
    T: int
    d: int
    k: int
    ties: bool = False
    seed: int = 0
    layout: str = "contiguous"

    @property
    def id(self) -> str:
        return f"B{self.batch}-T{self.T}-d{self.d}-k{self.k}{'-ties' if self.ties else ''}" \
               f"{_id_extras(self.spec, self.layout, DEFAULT_HALF)}-{self.spec.dtype}-seed{self.seed}"

    def inputs(self, device: str | torch.device = "cpu") -> GatherInputs:
        spec = dataclasses.replace(self.spec, phase=Phase.FORWARD)
        x, scores = random_gather_inputs(spec, self.batch, self.T, self.d, device=device, seed=self.seed,
                                         ties=self.ties, layout=self.layout)
        return GatherInputs(x, self.k, scores)

    def source(self) -> str:
        return f"GatherExample({spec_source(self.spec)}, {_fields_source(self)})"


@dataclass(frozen=True)
class DecodeExample:
    """A drawn decode step (sizes, layout, dtype mix, seed): :meth:`inputs` rebuilds the exact tensors
    (:func:`random_decode_inputs`)."""

    spec: ScanSpec
    batch: int
    dim: int
    N: int
    groups: int = 1
    seed: int = 0
    layout: str = "contiguous"
    half: tuple[str, ...] = DEFAULT_HALF

    @property
    def id(self) -> str:
        extra = (f"-G{self.groups}" if self.spec.grouped else "") + _id_extras(self.spec, self.layout, self.half)
        return f"B{self.batch}-D{self.dim}-N{self.N}{extra}-{self.spec.dtype}-seed{self.seed}"

    def inputs(self, device: str | torch.device = "cpu") -> DecodeInputs:
        return random_decode_inputs(self.spec, self.batch, self.dim, self.N, groups=self.groups, device=device,
                                    seed=self.seed, layout=self.layout, half=self.half)

    def source(self) -> str:
        return f"DecodeExample({spec_source(self.spec)}, {_fields_source(self)})"


# ---------------------------------------------------------------------------------------------- strategies


def random_decode_inputs(spec: ScanSpec, batch: int, dim: int, N: int, *, groups: int = 1,
                         device: str | torch.device = "cpu", seed: int = 0, layout: str = "contiguous",
                         half: tuple[str, ...] = DEFAULT_HALF) -> DecodeInputs:
    """One decode step's inputs for a decode ``spec``: a random state and, for strided/gated steps,
    a half-full window (so that the step may or may not fire). ``layout`` and ``half`` as in
    :func:`scanforge.testing.accuracy.random_scan_inputs` (``initial_state`` in ``half`` means the state)."""
    fwd = dataclasses.replace(spec, phase=Phase.FORWARD)
    x = random_scan_inputs(fwd, batch, dim, 1, N, groups=groups, device=device, seed=seed, half=half)
    gen = torch.Generator().manual_seed(seed + 1)
    state_dtype = x.u.dtype if "initial_state" in half else torch.float32
    state = torch.randn(batch, dim, N, generator=gen).to(device, state_dtype)
    window = None
    if spec.pooled:
        G = x.B.shape[1] if spec.grouped else 1
        window = (torch.rand(batch, dim, generator=gen), torch.randn(batch, dim, generator=gen),
                  torch.randn(batch, G, N, generator=gen), torch.randint(0, spec.stride, (batch,), generator=gen))
        window = tuple(as_layout(t.to(device, torch.float32), layout) for t in window)
    step = lambda t: None if t is None else as_layout(t[..., 0], layout)  # noqa: E731
    keep = lambda t: as_layout(t, layout)  # noqa: E731
    return DecodeInputs(keep(state), step(x.u), step(x.delta), keep(x.A), step(x.B), step(x.C), keep(x.D),
                        step(x.z), keep(x.delta_bias), None if x.gate is None else keep(x.gate[:, 0]),
                        x.gate_threshold, window)
