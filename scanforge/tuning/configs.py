"""The tiling config a kernel runs with: the tuned one for this device and shape, else the default.

:func:`install` hands this rule to the backends (:mod:`scanforge.backends.configs`); ``import scanforge`` calls it.
"""

from __future__ import annotations

from ..backends import configs as backend_configs
from ..backends.configs import config_for, forget
from ..kernels.codegen import family
from ..kernels.ir import GatherSpec, ScanSpec
from . import cache
from .spaces import backend_spaces

__all__ = ["config_for", "default_config", "forget", "install", "resolve"]


def default_config(backend: str, spec: ScanSpec | GatherSpec) -> dict:
    """The documented default config of ``spec``'s kernel family on ``backend``."""
    fam = family(spec)
    spaces = backend_spaces(backend)
    if fam not in spaces:
        raise ValueError(f"autotune/{backend}.toml: no [{fam}] table")
    return spaces[fam].default_for(spec.dtype)


def resolve(backend: str, spec: ScanSpec | GatherSpec, shape: tuple[int, ...]) -> dict:
    """The config to run ``spec`` at ``shape`` with: tuned for this device if the cache has it, else the family
    default. Kernels reach it through :func:`config_for`, which keeps the answer per (backend, spec, shape)."""
    tuned = cache.lookup(backend, spec, shape)
    return dict(tuned) if tuned is not None else default_config(backend, spec)


class TunedConfigs:
    """The config provider of the tuning layer (:class:`scanforge.backends.configs.ConfigProvider`)."""

    def default(self, backend: str, spec: ScanSpec | GatherSpec) -> dict:
        return default_config(backend, spec)

    def resolve(self, backend: str, spec: ScanSpec | GatherSpec, shape: tuple[int, ...]) -> dict:
        return resolve(backend, spec, shape)


def install() -> None:
    """Make the backends run with tuned configs (else the defaults) when none is forced."""
    backend_configs.provide(TunedConfigs())
