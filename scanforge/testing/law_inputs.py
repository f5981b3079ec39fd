"""The inputs of the metamorphic laws (:mod:`scanforge.testing.laws`): small float32 tensors drawn from a seed, and
the slices, flips and comparisons the laws make of them."""

from __future__ import annotations

from collections.abc import Mapping

import torch

from .accuracy import rel_error

SEQ = ("u", "delta", "B", "C", "z")  # inputs with an L axis (the rest are per channel or per head)


def sizes(seed: int) -> tuple[int, int, int, int]:
    """``(batch, dim, L, N)`` of a law's inputs: fixed at seed 0, drawn (small) from other seeds."""
    if seed == 0:
        return 2, 4, 45, 4
    g = torch.Generator().manual_seed(seed)
    pick = lambda lo, hi: int(torch.randint(lo, hi + 1, (1,), generator=g))  # noqa: E731
    return pick(1, 3), pick(1, 6), pick(2, 140), (1, 4, 8, 16)[pick(0, 3)]


def scan_inputs(device, seed: int = 0, *, batch=None, L=None, z=False) -> dict[str, torch.Tensor]:
    """float32 inputs with D (and z): dt in [0.05, 0.35], A in [-1.3, -0.3]."""
    b, dim, length, N = sizes(seed)
    batch, L = batch or b, L or length
    g = torch.Generator().manual_seed(1000 + seed)
    x = dict(u=torch.randn(batch, dim, L, generator=g), delta=torch.rand(batch, dim, L, generator=g) * 0.3 + 0.05,
             A=-torch.rand(dim, N, generator=g) - 0.3, B=torch.randn(batch, N, L, generator=g),
             C=torch.randn(batch, N, L, generator=g), D=torch.randn(dim, generator=g))
    if z:
        x["z"] = torch.randn(batch, dim, L, generator=g)
    return {k: v.to(device) for k, v in x.items()}


def slice_seq(x: Mapping, sl: slice) -> dict:
    return {k: (v[..., sl] if k in SEQ else v) for k, v in x.items()}


def flip_seq(x: Mapping) -> dict:
    return {k: (v.flip(-1) if k in SEQ else v) for k, v in x.items()}


def exact(a: torch.Tensor, b: torch.Tensor) -> float:
    """0 when bit-identical, else the relative error (at least 1e-30 so that a zero bound fails)."""
    return 0.0 if torch.equal(a, b) else max(rel_error(a, b), 1e-30)


def ssd_inputs(device, seed: int = 0, *, heads: int = 2, L=None) -> dict[str, torch.Tensor]:
    """float32 inputs of a per-head decay scan (``(batch, heads * headdim, L)``, dt and A per head, 2 groups of
    B/C when the heads allow) with per-channel D; the sizes of :func:`sizes`, headdim = its dim."""
    batch, headdim, length, N = sizes(seed)
    L, groups = L or length, 2 if heads % 2 == 0 else 1
    g = torch.Generator().manual_seed(2000 + seed)
    x = dict(u=torch.randn(batch, heads * headdim, L, generator=g),
             delta=torch.rand(batch, heads, L, generator=g) * 0.3 + 0.05, A=-torch.rand(heads, generator=g) - 0.3,
             B=torch.randn(batch, groups, N, L, generator=g), C=torch.randn(batch, groups, N, L, generator=g),
             D=torch.randn(heads * headdim, generator=g))
    return {k: v.to(device) for k, v in x.items()}
