"""Tuned configs moving between machines: ``scanforge cache import`` of a file another machine (or a fleet)
exported, checked against this installation's search spaces and this machine's fingerprint before a single entry
is merged."""

from __future__ import annotations

import json
from pathlib import Path

from .. import backends
from .cache import entry_problems, merge_entries, user_dir, warn_once
from .fingerprint import SCHEMA_VERSION, fingerprint, fingerprint_id
from .spaces import backend_spaces


def is_this_machine(fp: dict) -> bool:
    """Whether a file's fingerprint is this machine's for its backend (so its entries are used)."""
    try:
        backend = backends.get(fp.get("backend", ""))
    except ValueError:
        return False
    return backend.unavailable_reason() is None and fp == fingerprint(backend.name)


def check_entries(source: str, data: dict) -> None:
    """A ValueError naming ``source``, the entry, its family, the parameter and the allowed values if an
    entry of a cache file is not a config of its backend's search space (a backend this installation
    does not have is not checked: its entries are never used here)."""
    backend = data["fingerprint"].get("backend")
    if backend not in backends.names() or backends.get(backend).unavailable_reason():
        return
    try:
        backend_spaces(backend)
    except ValueError:
        return  # a backend without a search space takes no config
    for key, entry in data["entries"].items():
        found = entry_problems(backend, entry)
        if found:
            raise ValueError(f"{source}: entry {key!r} on {backend}: " + "; ".join(found))


def _parse_for_import(text: str) -> tuple[dict, str | None]:
    """A cache file's data, or why it is not one, said as what to fix: an import is the user's request,
    so the error names the file's problem instead of the cache read's "ignored; using default configs"."""
    expected = ("expected the JSON object that `scanforge cache export` writes, with schema, fingerprint and "
                "entries")
    if not text.strip():
        return {}, f"the file is empty ({expected})"
    try:
        data = json.loads(text)
    except ValueError as e:
        return {}, f"not JSON ({e}; {expected})"
    if not isinstance(data, dict):
        return {}, f"{expected}, got a JSON {'array' if isinstance(data, list) else type(data).__name__}"
    missing = [k for k in ("schema", "fingerprint", "entries") if k not in data]
    if missing:
        return {}, f"{expected}; it has no {', '.join(missing)} (its keys: {sorted(data)[:5]})"
    if not isinstance(data["fingerprint"], dict) or not isinstance(data["entries"], dict):
        return {}, f"{expected}; its fingerprint and entries must be objects"
    schema = data["schema"]
    if not isinstance(schema, int) or isinstance(schema, bool):
        return {}, f"{expected}; its schema must be an int, got {schema!r}"
    if schema > SCHEMA_VERSION:
        return {}, f"schema {schema} is newer than this scanforge's {SCHEMA_VERSION} (upgrade scanforge)"
    return data, None


def import_file(path: str | Path) -> tuple[Path | None, int]:
    """Merge a cache file (e.g. a fleet's winners, from ``scanforge cache export``) into this
    machine's cache: returns (where, entries). A file tuned for another fingerprint (device,
    libraries, kernels) is refused with one warning: (None, 0). A file that does not exist or cannot
    be read, is not a cache file, or holds a config outside its backend's search space is a
    ValueError naming the file (and the entry), and nothing is imported."""
    p = Path(path)
    if not p.is_file():
        raise ValueError(f"cache import: no such file: {path}" if not p.exists() else
                         f"cache import: {path} is not a file")
    try:
        text = p.read_text()
    except (OSError, UnicodeDecodeError) as e:
        raise ValueError(f"cache import: cannot read {path} ({type(e).__name__}: {e})") from None
    data, problem = _parse_for_import(text)
    if problem:
        raise ValueError(f"cache import: {path} is not a scanforge cache file: {problem}")
    fp = data["fingerprint"]
    if not all(isinstance(fp.get(k), str) for k in ("backend", "device")):
        raise ValueError(f"cache import: {path}: its fingerprint names no backend or device")
    check_entries(f"cache import {path}", data)
    if not is_this_machine(fp):
        warn_once(str(path), f"{path} was tuned for {fp.get('backend')} on {fp.get('device')} "
                              f"({fingerprint_id(fp)}), not this machine: its {len(data['entries'])} entries are "
                              f"not imported (ship it for that device as scanforge/tuning/shipped/<device>.json)")
        return None, 0
    target = user_dir() / f"{fingerprint_id(fp)}.json"
    merge_entries(target, fp, data["entries"])
    return target, len(data["entries"])
