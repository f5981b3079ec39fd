"""The tiling config a backend's kernel runs with when the caller forces none.

Backends do not know where configs come from. A :class:`ConfigProvider` answers for them; the tuning layer installs
one when scanforge is imported (:func:`scanforge.tuning.configs.install`: the config tuned for this device if the
cache has one, else the family's documented default). A resolved config is kept per (backend, spec, shape), so that
after the first call of a kernel finding its config is one dict hit.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Protocol

from ..kernels.ir import GatherSpec, ScanSpec


class ConfigProvider(Protocol):
    def default(self, backend: str, spec: ScanSpec | GatherSpec) -> Mapping:
        """The documented default config of ``spec``'s kernel family on ``backend``."""

    def resolve(self, backend: str, spec: ScanSpec | GatherSpec, shape: tuple[int, ...]) -> Mapping:
        """The config to run ``spec`` at ``shape`` with on this machine."""


_provider: ConfigProvider | None = None
_resolved: dict[tuple, Mapping] = {}  # (backend, spec, shape) -> config: one dict hit per kernel call


def provide(provider: ConfigProvider) -> None:
    """Make ``provider`` the source of configs (replacing any earlier one)."""
    global _provider
    _provider = provider
    forget()


def _current() -> ConfigProvider:
    if _provider is None:
        raise RuntimeError("no config provider is installed: `import scanforge` installs the tuning layer's")
    return _provider


def config_for(backend: str, spec: ScanSpec | GatherSpec, shape: tuple[int, ...]) -> Mapping:
    """The config to run ``spec`` at ``shape`` with. Read-only (it is shared by every call with this key)."""
    key = (backend, spec, shape)
    try:
        return _resolved[key]
    except KeyError:
        pass
    if len(_resolved) > 4096:  # many distinct shapes (e.g. every prompt length): start over
        _resolved.clear()
    config = _resolved[key] = MappingProxyType(dict(_current().resolve(backend, spec, shape)))
    return config


def default_config(backend: str, spec: ScanSpec | GatherSpec) -> dict:
    """The documented default config of ``spec``'s kernel family on ``backend``."""
    return dict(_current().default(backend, spec))


def forget() -> None:
    """Drop resolved configs (the cache changed)."""
    _resolved.clear()
