"""The tiling config a kernel runs with: the tuned one for this device and shape, else the default."""

from __future__ import annotations

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


def config_for(backend: str, spec: ScanSpec | GatherSpec, shape: tuple[int, ...]) -> dict:
    """The config to run ``spec`` at ``shape`` with: tuned for this device if the cache has it."""
    from . import cache

    tuned = cache.lookup(backend, spec, shape)
    return dict(tuned) if tuned is not None else default_config(backend, spec)
