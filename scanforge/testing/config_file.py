"""Forced configs from a file: a JSON or TOML table ``{family: config}`` applied to every case of the suite
(``scanforge check --config FILE``, ``SCANFORGE_CHECK_CONFIG``)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

from .opkinds import OP_KINDS

#: The kernel families a config file may name: every op kind's.
FAMILIES = tuple(OP_KINDS)


def read_table(path: str | Path) -> tuple[str, object]:
    """The text of a JSON or (``.toml``) TOML file and what it parses to."""
    p = Path(path)
    if not p.is_file():
        raise ValueError(f"--config: no such file: {path}")
    try:
        text = p.read_text()
    except (OSError, UnicodeDecodeError) as e:
        raise ValueError(f"--config: cannot read {path} ({type(e).__name__}: {e})") from None
    if p.suffix == ".toml":
        try:
            return text, tomllib.loads(text)
        except tomllib.TOMLDecodeError as e:
            raise ValueError(f"--config {path}: not valid TOML ({e})") from None
    try:
        return text, json.loads(text)
    except json.JSONDecodeError as e:
        raise ValueError(f"--config {path}: not valid JSON ({e}); use .toml for TOML") from None


def is_cache_file(data: object) -> bool:
    """Whether ``data`` is a tuned-config cache file (whose entries are verified one by one, not forced)."""
    return isinstance(data, dict) and {"schema", "fingerprint", "entries"} <= set(data)


def check_families(path: str | Path, data: object) -> dict[str, dict]:
    """``data`` as ``{family: config}``; a ValueError names what is not."""
    bad = [k for k, v in data.items() if k not in FAMILIES or not isinstance(v, dict)] if isinstance(data, dict) \
        else ["<not a table>"]
    if bad:
        raise ValueError(f"--config {path}: expected a table of kernel families {list(FAMILIES)} to config tables "
                         f"(or a scanforge cache file), got keys {bad}")
    return {k: dict(v) for k, v in data.items()}


def family_configs(path: str | Path) -> dict[str, dict] | None:
    """The ``{family: config}`` of a config file; None for a cache file (nothing is forced)."""
    _, data = read_table(path)
    return None if is_cache_file(data) else check_families(path, data)
