"""The op kinds of Mamba-2's scan (a per-head decay spec): forward and backward, as the selective scan's kinds with
per-head shapes (:mod:`scanforge.testing.opkinds`).

A tuning shape is the scan's ``(batch, dim, L, N)``; the heads are :func:`heads_of` ``dim`` (headdim 64 where it
divides, as Mamba-2's models use, else a small divisor), and grouped B/C get the most of 4, 2 groups that divide them.
"""

from __future__ import annotations

from ..backends.base import ScanInputs
from ..kernels.ir import Phase, ScanSpec
from . import strategies
from .accuracy import DEFAULT_HALF
from .examples import ScanExample
from .opkind_base import meta, torch_dtype
from .rows import SIZES
from .scan_kinds import ScanBackward, ScanForward


def heads_of(dim: int) -> int:
    """The heads of a tuning shape's ``dim`` channels: headdim 64 where it divides dim, else 8, 4, 3, 2 or 1."""
    headdim = next(h for h in (64, 8, 4, 3, 2, 1) if dim % h == 0)
    return dim // headdim


def _groups(spec: ScanSpec, heads: int) -> int:
    return next((g for g in (4, 2) if heads % g == 0), 1) if spec.grouped else 1


class _SSD:
    """What the SSD kinds change in the scan kinds: per-head inputs."""

    op = "ssd_scan"
    properties = ("ssd",)

    def example(self, spec, shape, *, seed=0, groups=None, layout="contiguous", half=DEFAULT_HALF):
        batch, dim, L, N = shape
        heads = heads_of(dim)
        groups = _groups(spec, heads) if groups is None else groups
        return ScanExample(spec, batch, dim, L, N, groups=groups, seed=seed, layout=layout, half=half, heads=heads)

    def _meta_scan(self, spec: ScanSpec, shape, groups: int = 0) -> ScanInputs:
        batch, dim, L, N = shape
        heads, dt = heads_of(dim), torch_dtype(spec)
        g = _groups(spec, heads)
        bc = (batch, g, N, L) if spec.grouped else (batch, N, L)
        return ScanInputs(
            u=meta((batch, dim, L), dt), delta=meta((batch, heads, L), dt), A=meta((heads,)), B=meta(bc, dt),
            C=meta(bc, dt), D=meta((dim,)) if spec.has_D else None, z=meta((batch, dim, L), dt) if spec.has_z else None,
            delta_bias=meta((heads,)) if spec.has_delta_bias else None, gate=None,
            initial_state=meta((batch, dim, N)) if spec.has_initial_state else None, gate_threshold=0.5)

    def row_example(self, row, spec, size):
        batch, dim, L, N = SIZES[size]["scan"]
        return self.example(spec, (batch, 2 * dim, L, N), layout=row.layout, half=row.half)

    def verify_examples(self, spec, shape, *, seed=0):
        batch, dim, L, N = shape or (2, 24, 150, 16)
        spec = self.entry_spec(spec)
        return [self.example(spec, (min(batch, 2), 24, min(L, 150), N), seed=seed),
                self.example(spec, (1, 24, 1, N), seed=seed)]

    def property_draws(self, name, backend, device):
        phase = "bwd" if self.grads else "fwd"
        specs = strategies.ssd_specs(phase=phase, backend=backend, device=device)
        return specs, strategies.ssd_examples


class SSDForward(_SSD, ScanForward):
    family, phase = "ssd_fwd", Phase.FORWARD


class SSDBackward(_SSD, ScanBackward):
    family, phase = "ssd_bwd", Phase.BACKWARD
    properties = ()
