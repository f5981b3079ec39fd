"""The tiling config a kernel runs with: the tuned one for this device and shape, else the default."""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

from .codegen import family
from .ir import GatherSpec, ScanSpec
from .spaces import backend_spaces


def default_config(backend: str, spec: ScanSpec | GatherSpec) -> dict:
    """The documented default config of ``spec``'s kernel family on ``backend``."""
    fam = family(spec)
    spaces = backend_spaces(backend)
    if fam not in spaces:
        raise ValueError(f"autotune/{backend}.toml: no [{fam}] table")
    return dict(spaces[fam].default)


_resolved: dict[tuple, Mapping] = {}  # (backend, spec, shape) -> config: one dict hit per kernel call


def config_for(backend: str, spec: ScanSpec | GatherSpec, shape: tuple[int, ...]) -> Mapping:
    """The config to run ``spec`` at ``shape`` with: tuned for this device if the cache has it,
    else the family default. Read-only (it is shared by every call with this key)."""
    key = (backend, spec, shape)
    try:
        return _resolved[key]
    except KeyError:
        pass
    from . import cache

    tuned = cache.lookup(backend, spec, shape)
    if len(_resolved) > 4096:  # many distinct shapes (e.g. every prompt length): start over
        _resolved.clear()
    config = _resolved[key] = MappingProxyType(dict(tuned) if tuned is not None else default_config(backend, spec))
    return config


def forget() -> None:
    """Drop resolved configs (the cache changed)."""
    _resolved.clear()
