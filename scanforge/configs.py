"""Tiling configs: the default of each backend's kernel family, read from ``autotune/<backend>.toml``."""

from __future__ import annotations

import sys
from functools import cache
from importlib.resources import files

from .codegen import family
from .ir import GatherSpec, ScanSpec

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib


@cache
def search_space_file(backend: str) -> dict:
    """The parsed ``autotune/<backend>.toml``; a malformed file is an error naming it."""
    path = files("scanforge") / "autotune" / f"{backend}.toml"
    try:
        return tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise ValueError(f"backend {backend!r} has no search space file {path}") from None
    except tomllib.TOMLDecodeError as e:
        raise ValueError(f"{path}: not valid TOML: {e}") from None


def default_config(backend: str, spec: ScanSpec | GatherSpec) -> dict:
    """The documented default config of ``spec``'s kernel family on ``backend``."""
    fam = family(spec)
    space = search_space_file(backend)
    try:
        return dict(space[fam]["default"])
    except KeyError:
        raise ValueError(f"autotune/{backend}.toml: no [{fam}.default] table") from None


def config_for(backend: str, spec: ScanSpec | GatherSpec, shape: tuple[int, ...]) -> dict:
    """The config to run ``spec`` at ``shape`` with: for now the family default."""
    return default_config(backend, spec)
