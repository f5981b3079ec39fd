"""Tuned configs on disk: one JSON file per device fingerprint, looked up on every kernel call.

``$SCANFORGE_CACHE_DIR/tuned/<fingerprint id>.json`` holds this machine's winners; the package's
``tuning/shipped/*.json`` ships winners for known GPUs and is read when the user has no entry. An entry is
keyed by the spec key and the shape bucket. A corrupt file, a newer schema or a file whose
fingerprint is not this machine's is refused with one warning, never used silently. Writes go to
a temporary file renamed over the old one, under a lock, so concurrent tuners lose nothing.
"""

from __future__ import annotations

import fcntl
import json
import math
import os
import tempfile
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from importlib.resources import files
from pathlib import Path

from ..backends import configs
from ..kernels.ir import GatherSpec, ScanSpec
from ..paths import cache_dir
from .fingerprint import SCHEMA_VERSION, fingerprint, fingerprint_id
from .spaces import backend_spaces

_stores: dict[str, dict[str, dict]] = {}  # backend -> entries usable on this machine
_memo: dict[tuple, dict | None] = {}  # (backend, spec, bucket) -> config: the per-call dict hit
_warned: set[str] = set()


def _pow2(n: int) -> int:
    return 1 << max(int(n) - 1, 0).bit_length()


def bucket(shape: tuple[int, ...]) -> tuple[int, ...]:
    """The shape bucket a config is tuned for: sizes rounded up to powers of two, the state size N
    (scan) kept exact. Scan shapes are (batch, dim, L, N); gather shapes (batch, T, d, k)."""
    return (_pow2(shape[0]), _pow2(shape[1]), _pow2(shape[2]), shape[3])


def entry_key(spec: ScanSpec | GatherSpec, shape_bucket: tuple[int, ...]) -> str:
    return f"{spec.key()}@{'x'.join(map(str, shape_bucket))}"


def user_dir() -> Path:
    return cache_dir() / "tuned"


def user_file(backend: str) -> Path:
    return user_dir() / f"{fingerprint_id(fingerprint(backend))}.json"


def shipped_files() -> list:
    root = files("scanforge.tuning") / "shipped"
    return sorted((f for f in root.iterdir() if f.name.endswith(".json")), key=lambda f: f.name) \
        if root.is_dir() else []


def warn_once(source: str, message: str) -> None:
    if source not in _warned:
        _warned.add(source)
        warnings.warn(f"scanforge tuned-config cache: {message}; using default configs instead", stacklevel=3)


def read_file(source: str, text: str) -> dict | None:
    """A parsed cache file, or None (with one warning) if it is corrupt or of a newer schema."""
    try:
        data = json.loads(text)
        schema, fp, entries = data["schema"], data["fingerprint"], data["entries"]
        if not isinstance(fp, dict) or not isinstance(entries, dict):
            raise TypeError("fingerprint and entries must be objects")
    except (ValueError, KeyError, TypeError) as e:
        warn_once(source, f"{source} is corrupt ({type(e).__name__}: {e}) and is ignored")
        return None
    if not isinstance(schema, int) or schema > SCHEMA_VERSION:
        warn_once(source, f"{source} has schema {schema!r}, newer than this scanforge's {SCHEMA_VERSION}; ignored")
        return None
    return data


def _family(entry: dict) -> str:
    return "_".join(str(entry["spec"]).split("-")[:2])


def entry_problems(backend: str, entry: object) -> list[str]:
    """Why a stored entry is not a config of the backend's current search space at its bucket (the
    tuner's own rules: every parameter, each one of its choices, every constraint); empty if it is.
    A space that gained or lost a parameter since makes old entries unusable: a kernel would not render."""
    try:
        family = _family(entry)
        space = backend_spaces(backend).get(family)
        if space is None:
            return [f"{backend} has no kernel family {family!r}"]
        bucket_shape = tuple(int(v) for v in entry["bucket"])
        config = entry["config"]
        if not isinstance(config, dict) or len(bucket_shape) != 4:
            return ["expected a config table and a 4-number bucket"]
        return [f"[{family}] {p}" for p in space.problems(config, shapes=(bucket_shape,))]
    except (KeyError, TypeError, AttributeError, ValueError) as e:
        return [f"not an entry ({type(e).__name__}: {e})"]


def _fits_space(backend: str, entry: dict) -> bool:
    return not entry_problems(backend, entry)


def _usable(source: str, data: dict | None, backend: str) -> dict:
    """The entries of ``data`` if its fingerprint is this machine's for ``backend``; else {}."""
    if data is None:
        return {}
    here = fingerprint(backend)
    if data["fingerprint"] != here:
        difference = fingerprint_difference(data["fingerprint"], here)
        warn_once(source, f"{source} was tuned for another fingerprint ({difference})")
        return {}
    entries = {k: e for k, e in data["entries"].items() if _fits_space(backend, e)}
    if len(entries) < len(data["entries"]):
        bad = sorted(set(data["entries"]) - set(entries))
        warn_once(source + "#space", f"{source}: entries {bad[:3]} are not configs of the current search space")
    return entries


def fingerprint_difference(tuned: dict, here: dict) -> str:
    """What differs between a cache file's fingerprint and this machine's, part by part (a changed kernel
    template shows as ``kernels``, another GPU as ``device``)."""
    parts = sorted(set(tuned) | set(here), key=str)
    return "; ".join(f"{p}: {tuned.get(p, '(none)')!r} there, {here.get(p, '(none)')!r} here"
                     for p in parts if tuned.get(p) != here.get(p))


def load_entries(backend: str) -> dict[str, dict]:
    """This machine's entries for ``backend``: the user file over the shipped ones for this device."""
    entries: dict[str, dict] = {}
    device = fingerprint(backend)["device"]
    for shipped in shipped_files():
        data = read_file(str(shipped), shipped.read_text())
        if data and data["fingerprint"].get("backend") == backend and data["fingerprint"].get("device") == device:
            entries.update(_usable(str(shipped), data, backend))
    path = user_file(backend)
    if path.exists():
        entries.update(_usable(str(path), read_file(str(path), path.read_text()), backend))
    return entries


def forget() -> None:
    """Drop what was read (after the cache dir or the files changed)."""
    _stores.clear()
    _memo.clear()
    configs.forget()


def _nearest(entries: dict[str, dict], spec_key: str, want: tuple[int, ...]) -> dict | None:
    """The config tuned for the closest bucket of the same spec (log-distance of sizes; N must match)."""
    best, best_distance = None, math.inf
    for entry in entries.values():
        have = tuple(entry["bucket"])
        if entry["spec"] != spec_key or have[3] != want[3]:
            continue
        distance = sum(abs(math.log2(a) - math.log2(b)) for a, b in zip(have[:3], want[:3]))
        if distance < best_distance:
            best, best_distance = entry["config"], distance
    return best


def lookup(backend: str, spec: ScanSpec | GatherSpec, shape: tuple[int, ...]) -> dict | None:
    """The tuned config for ``spec`` at ``shape`` on this machine (nearest tuned bucket), or None.

    After the first call for a (spec, bucket) this is one dict lookup.
    """
    b = bucket(shape)
    memo_key = (backend, spec, b)
    try:
        return _memo[memo_key]
    except KeyError:
        pass
    entries = _stores.get(backend)
    if entries is None:
        entries = _stores[backend] = load_entries(backend)
    entry = entries.get(entry_key(spec, b))
    config = entry["config"] if entry else _nearest(entries, spec.key(), b)
    _memo[memo_key] = config
    return config


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_suffix(".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def write_json_atomic(path: Path, data: dict) -> None:
    """Write ``data`` to ``path`` through a temporary file and a rename: readers never see half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=".json")
    with os.fdopen(fd, "w") as f:
        json.dump(data, f, indent=1, sort_keys=True)
    os.replace(tmp, path)


def merge_entries(path: Path, fp: dict, entries: dict[str, dict]) -> None:
    """Add ``entries`` to the file of fingerprint ``fp`` at ``path`` (created if absent)."""
    with _locked(path):
        data = read_file(str(path), path.read_text()) if path.exists() else None
        if data is None or data["fingerprint"] != fp:
            data = {"schema": SCHEMA_VERSION, "fingerprint": fp, "entries": {}}
        data["entries"].update(entries)
        write_json_atomic(path, data)
    forget()


def store(backend: str, spec: ScanSpec | GatherSpec, shape: tuple[int, ...], config: dict, **record) -> str:
    """Record a tuned config for this machine; the next kernel call uses it. Returns the entry key."""
    b = bucket(shape)
    key = entry_key(spec, b)
    entry = {"spec": spec.key(), "bucket": list(b), "config": dict(config), **record}
    merge_entries(user_file(backend), fingerprint(backend), {key: entry})
    return key


def cache_files() -> list[tuple[str, dict | None]]:
    """Every cache file scanforge can see (user files, then shipped ones) with its parsed content."""
    found = [(str(p), read_file(str(p), p.read_text())) for p in sorted(user_dir().glob("*.json"))]
    return found + [(str(f), read_file(str(f), f.read_text())) for f in shipped_files()]


def clear() -> int:
    """Delete the user's tuned configs; returns how many files went."""
    removed = 0
    for p in list(user_dir().glob("*.json")) + list(user_dir().glob("*.lock")):
        p.unlink(missing_ok=True)
        removed += p.suffix == ".json"
    forget()
    return removed
