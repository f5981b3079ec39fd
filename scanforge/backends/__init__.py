"""Backends: how a kernel runs.

Owns the registry (names to backends, and the choice for a device when none is named), the interface every backend
implements (:mod:`.base`), the shipped backends (reference, triton, numba_cpu, numba_cuda) and the hook through which a
backend gets the config it runs with (:mod:`.configs`). May import :mod:`scanforge.kernels` only: a backend declares
its search-space file and its fingerprint parts for the tuning layer to read, and is handed its config, instead of
importing the tuner's cache. A new backend is a :class:`Backend` subclass here, or in a plug-in module that calls
:func:`register` (``SCANFORGE_PLUGINS`` names such modules for child processes).
"""

from __future__ import annotations

import importlib
import os

import torch

from ..kernels.ir import GatherSpec, ScanSpec
from .base import Backend, ScanInputs
from .numba_cpu import NumbaCPUBackend
from .numba_cuda import NumbaCUDABackend
from .reference import ReferenceBackend
from .triton import TritonBackend

__all__ = ["Backend", "ScanInputs", "get", "names", "available", "register", "resolve"]

_REGISTRY: dict[str, Backend] = {b.name: b for b in (TritonBackend(), NumbaCPUBackend(), NumbaCUDABackend(),
                                                      ReferenceBackend())}

#: Preference order when ``backend=None``: the tuned kernels of the device, then the reference.
_PREFERENCE = {"cuda": ("triton", "numba_cuda", "reference"), "cpu": ("numba_cpu", "reference")}


def register(backend: Backend, *, prefer_on: tuple[str, ...] = ()) -> Backend:
    """Add a backend (an instance of a :class:`Backend` subclass) under its ``name``.

    ``prefer_on`` lists device types (``"cuda"``, ``"cpu"``) where ``backend=None`` should try it
    first. Registering a name twice is an error: one name, one backend.
    """
    if not isinstance(backend, Backend):
        raise TypeError(f"register: expected a scanforge.backends.Backend instance, got {type(backend).__name__}")
    if not getattr(backend, "name", None) or not isinstance(backend.name, str):
        raise ValueError("register: the backend needs a non-empty string `name`")
    if backend.name in _REGISTRY:
        raise ValueError(f"register: a backend named {backend.name!r} is already registered")
    _REGISTRY[backend.name] = backend
    for device_type in prefer_on:
        _PREFERENCE[device_type] = (backend.name, *_PREFERENCE.get(device_type, ("reference",)))
    return backend


def names() -> tuple[str, ...]:
    return tuple(_REGISTRY)


def get(name: str) -> Backend:
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ValueError(f"backend: expected None or one of {sorted(_REGISTRY)}, got {name!r}") from None


def available() -> list[Backend]:
    """The registered backends whose libraries are installed on this machine."""
    return [b for b in _REGISTRY.values() if b.unavailable_reason() is None]


def resolve(name: str | None, spec: ScanSpec | GatherSpec, device: torch.device) -> str:
    """The backend to run ``spec`` on ``device``: ``name`` if given (an error if it cannot), else
    the first of the device's preference list that is installed and implements the spec."""
    if name is not None:
        backend = get(name)
        reason = backend.unavailable_reason() or backend.unsupported_reason(spec, device)
        if reason:
            op = "scan" if isinstance(spec, ScanSpec) else "top-k gather"
            raise NotImplementedError(f"backend {name!r} cannot run this {op}: {reason}")
        return name
    for candidate in _PREFERENCE.get(device.type, ("reference",)):
        backend = _REGISTRY.get(candidate)
        if backend and not backend.unavailable_reason() and not backend.unsupported_reason(spec, device):
            return candidate
    return "reference"


def _load_plugins() -> None:
    """Import the modules named in ``SCANFORGE_PLUGINS`` (comma-separated): each registers its
    backends on import. Child processes (tuning trials) inherit the variable, so they see them too."""
    for module in filter(None, (m.strip() for m in os.environ.get("SCANFORGE_PLUGINS", "").split(","))):
        importlib.import_module(module)


_load_plugins()
