"""Shared test helpers: the backends under test and readable parameter ids."""

import torch

from scanforge import backends

DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")


def kernel_backends() -> list[str]:
    """Every installed backend (the reference included: it checks the op's dtype handling)."""
    return [b.name for b in backends.available()]


def supported(backend: str, spec) -> bool:
    return backends.get(backend).unsupported_reason(spec, DEVICE) is None


def shape_id(batch, dim, L, N, dtype) -> str:
    return f"B{batch}-D{dim}-L{L}-N{N}-{dtype}"


def backends_for(spec) -> list[str]:
    """The installed backends that implement ``spec`` on this device."""
    return [name for name in kernel_backends() if supported(name, spec)]
