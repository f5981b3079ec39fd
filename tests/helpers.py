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


def simulated(backend: str) -> bool:
    """Whether ``backend`` runs simulated here (Numba-CUDA's simulator runs every thread in Python)."""
    return backend == "numba_cuda" and not torch.cuda.is_available()


def scan_sizes(backend: str) -> dict:
    """Caps for Hypothesis-drawn scan shapes: small enough for a simulated backend."""
    return dict(max_L=64, max_dim=2, Ns=(1, 4)) if simulated(backend) else {}


def gather_sizes(backend: str) -> dict:
    """Caps for Hypothesis-drawn gather shapes."""
    return dict(max_batch=2, max_T=48, max_d=16) if simulated(backend) else {}
