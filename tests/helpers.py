"""Shared test helpers: the backends under test, each on the device it runs on here, and readable ids.

Every backend is tested on its own device: on a GPU machine Triton and Numba-CUDA get CUDA tensors (their
parameters carry the ``gpu`` marker, so ``pytest -m gpu`` selects them) while Numba CPU keeps CPU tensors; on a
CPU machine Triton runs interpreted and Numba-CUDA simulated, both on CPU tensors.
"""

import pytest
import torch
from hypothesis import settings

from scanforge import backends

#: The machine's device: what the public ops get when a test does not name a backend.
DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")


def kernel_backends() -> list[str]:
    """Every installed backend (the reference included: it checks the op's dtype handling)."""
    return [b.name for b in backends.available()]


def device_of(backend: str) -> torch.device:
    """The device ``backend``'s tests hand it tensors on: CUDA where its kernels run on the GPU here, CPU
    for a CPU backend (or an interpreted / simulated one), the machine's device for the reference."""
    if backend == "reference":
        return DEVICE
    return torch.device("cuda" if backends.get(backend).runs_on_gpu() else "cpu")


def backend_param(name: str):
    """``name`` as a pytest parameter, marked ``gpu`` where it runs on CUDA tensors."""
    return pytest.param(name, id=name, marks=[pytest.mark.gpu] if device_of(name).type == "cuda" else [])


def supported(backend: str, spec) -> bool:
    return backends.get(backend).unsupported_reason(spec, device_of(backend)) is None


def shape_id(batch, dim, L, N, dtype) -> str:
    return f"B{batch}-D{dim}-L{L}-N{N}-{dtype}"


def backends_for(spec=None) -> list:
    """The installed backends (as parameters, see :func:`backend_param`) that implement ``spec`` on
    their device; every installed backend when ``spec`` is None."""
    return [backend_param(name) for name in kernel_backends() if spec is None or supported(name, spec)]


def simulated(backend: str) -> bool:
    """Whether ``backend`` runs simulated here (Numba-CUDA's simulator runs every thread in Python)."""
    return backend == "numba_cuda" and not backends.get(backend).runs_on_gpu()


def scan_sizes(backend: str) -> dict:
    """Caps for Hypothesis-drawn scan shapes: small enough for a simulated backend (the long sequences and
    N = 16 that the caps leave out are fixed examples in test_numba_cuda.py)."""
    return dict(max_L=64, max_dim=2, Ns=(1, 4)) if simulated(backend) else {}


def deep() -> bool:
    """Whether the nightly Hypothesis profile runs (``SCANFORGE_HYPOTHESIS_PROFILE=deep``, see conftest)."""
    return settings.get_current_profile_name() == "deep"


def strides_for(backend: str) -> tuple[int, ...]:
    """The strides the strided family draws: 2 to 9 on every backend. Drawing many costs no compiles on a CPU:
    Numba CPU takes the stride at run time, and Triton and Numba-CUDA run interpreted or simulated there."""
    return tuple(range(2, 10))


def gather_sizes(backend: str) -> dict:
    """Caps for Hypothesis-drawn gather shapes."""
    return dict(max_batch=2, max_T=48, max_d=16) if simulated(backend) else {}
