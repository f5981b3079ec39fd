"""Kernel generation: render a spec + tuning config through a backend's templates, then load it.

The rendered source is written to ``<cache dir>/kernels/<backend>/<family>_<hash>.py`` (named by
the hash of its own text, written atomically) and imported from there, so a kernel a user runs is
always a readable file, and rendering the same (spec, config, constants) twice reuses the loaded
module. ``constants`` are shape values a backend must compile in (Numba-CUDA sizes its thread-local
state arrays by N); they are not tuning parameters.

The folder is a cache, and a damaged entry (a truncated module, Numba's index or data pickles beside
it) must not break every later call: a module whose file differs from its source is rewritten, a
module that does not import is rebuilt, and a backend call wrapped in :func:`rebuilds_damaged_cache`
that fails while Numba reads its on-disk cache removes the cache files of the modules that call
loaded, warns once and runs again (Numba compiles afresh and writes a new cache).
"""

from __future__ import annotations

import contextvars
import functools
import hashlib
import importlib.util
import os
import pickle
import sys
import tempfile
import threading
import traceback
import warnings
from collections.abc import Callable, Mapping
from functools import cache
from importlib.resources import files
from pathlib import Path
from types import ModuleType

import jinja2

from ..paths import cache_dir
from .ir import GatherSpec, ScanSpec

_modules: dict[str, ModuleType] = {}  # by generated file: specs that render the same source share it
_loaded: dict[tuple, ModuleType] = {}  # by (backend, spec, config): no re-rendering on the op's hot path
_lock = threading.Lock()
_used: contextvars.ContextVar[list | None] = contextvars.ContextVar("scanforge_kernels_used", default=None)
_imported: list[str] = []  # "<backend> <spec key> (<file>)" of each kernel module this process imported, in order


def imported_kernels() -> list[str]:
    """The kernel modules this process has imported so far, in order (``<backend> <spec key> (<file>)``): a
    long-running command shows from it what it compiled (a module's kernels compile, or load from Numba's
    disk cache, on their first call)."""
    return list(_imported)
_warned: set[str] = set()


def templates_dir(backend: str):
    """The folder of ``backend``'s templates in the package (``scanforge/kernels/templates/<backend>``)."""
    return files("scanforge.kernels") / "templates" / backend


@cache
def templates_hash(backend: str) -> str:
    """A hash of ``backend``'s templates (file names and bytes); that of nothing for a backend without any."""
    digest = hashlib.sha256()
    root = templates_dir(backend)
    if root.is_dir():
        for entry in sorted(root.iterdir(), key=lambda e: e.name):
            digest.update(entry.name.encode() + entry.read_bytes())
    return digest.hexdigest()[:16]


@cache
def _environment(backend: str) -> jinja2.Environment:
    root = templates_dir(backend)
    if not root.is_dir():
        raise ValueError(f"backend {backend!r} has no templates (looked in {root})")
    return jinja2.Environment(loader=jinja2.FileSystemLoader(str(root)), trim_blocks=True, lstrip_blocks=True,
                              keep_trailing_newline=True, undefined=jinja2.StrictUndefined)


def family(spec: ScanSpec | GatherSpec) -> str:
    """The kernel family of a spec, e.g. ``scan_fwd``: the unit of search spaces and defaults."""
    return f"{_stem(spec)}_{spec.phase.value}"


def _stem(spec: ScanSpec | GatherSpec) -> str:
    """``scan``, ``ssd`` or ``gather``: a family's name before its phase, and its entry template's name."""
    return spec.kind if isinstance(spec, ScanSpec) else "gather"


def render(spec: ScanSpec | GatherSpec, backend: str, config: Mapping[str, object],
           constants: Mapping[str, object] | None = None) -> str:
    """The kernel source (Python text) for ``spec`` on ``backend`` with tiling ``config``."""
    template = _environment(backend).get_template(f"{_stem(spec)}_module.j2")
    return template.render(spec=spec, config=dict(config), constants=dict(constants or {}))


def source_path(spec: ScanSpec | GatherSpec, backend: str, source: str) -> Path:
    digest = hashlib.sha256(source.encode()).hexdigest()[:20]
    return cache_dir() / "kernels" / backend / f"{family(spec)}_{digest}.py"


def _write_atomic(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=".py")
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.replace(tmp, path)


def load(spec: ScanSpec | GatherSpec, backend: str, config: Mapping[str, object],
         constants: Mapping[str, object] | None = None) -> ModuleType:
    """Render, write (once) and import the kernel module of ``spec`` with ``config``."""
    memo = (backend, spec, tuple(sorted(config.items())), tuple(sorted((constants or {}).items())))
    module = _loaded.get(memo)
    if module is None:
        module = _load(memo, spec, backend, config, constants)
    used = _used.get()
    if used is not None:
        used.append(module)
    return module


def _load(memo: tuple, spec, backend: str, config, constants) -> ModuleType:
    source = render(spec, backend, config, constants)
    path = source_path(spec, backend, source)
    key = str(path)
    with _lock:
        module = _modules.get(key)
        if module is not None:
            _loaded[memo] = module
            return module
        # The same name in every process: Numba's on-disk cache refers to a kernel's module by name.
        # The file states it, so a file compiled under another name is rewritten, which makes
        # Numba's cache (keyed by the file's time stamp) compile it afresh instead of failing.
        name = f"scanforge_generated_{backend}_{path.stem}"
        text = f"# module {name}\n{source}"
        try:
            module = _import(name, path, text)
        except (SyntaxError, ValueError, EOFError) as e:  # a damaged file or its bytecode (bad marshal data)
            _remove_cache_files(path, e)
            module = _import(name, path, text)
        _modules[key] = _loaded[memo] = module
        _imported.append(f"{backend} {spec.key()} ({path.name})")
        return module


def _import(name: str, path: Path, text: str) -> ModuleType:
    if not path.exists() or path.read_bytes() != text.encode():
        _write_atomic(path, text)
    module_spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(module_spec)
    sys.modules[name] = module  # triton resolves globals of jitted functions through the module
    module_spec.loader.exec_module(module)
    return module


def _cache_files(path: Path) -> list[Path]:
    """The files compiled from the generated module ``path``: Numba's index and data, Python's bytecode."""
    folder = path.parent / "__pycache__"
    return sorted(folder.glob(f"{path.stem}.*")) if folder.is_dir() else []


def _remove_cache_files(path: Path, error: BaseException) -> None:
    """Delete the module ``path`` and what was compiled from it (rebuilt on the next load), with one warning."""
    removed = [p for p in [path, *_cache_files(path)] if p.exists()]
    for p in removed:
        p.unlink(missing_ok=True)
    if str(path) not in _warned:
        _warned.add(str(path))
        first = str(error).splitlines()[0][:200] if str(error) else ""
        warnings.warn(f"scanforge kernel cache: {path.name} or its compiled files in {path.parent} were damaged "
                      f"({type(error).__name__}: {first}); removed {len(removed)} file(s), the kernel is rebuilt",
                      RuntimeWarning, stacklevel=4)


def damaged_cache(error: BaseException) -> bool:
    """Whether ``error`` was raised reading an on-disk kernel cache (Numba's caching, a pickle)."""
    if isinstance(error, (pickle.UnpicklingError, EOFError)):
        return True
    return any("numba" in frame.f_code.co_filename and frame.f_code.co_filename.endswith("caching.py")
               for frame, _ in traceback.walk_tb(error.__traceback__))


def _forget(module: ModuleType) -> Path:
    """Drop ``module`` from the loaded kernels (the next :func:`load` imports it again); returns its file."""
    path = Path(module.__file__)
    with _lock:
        _modules.pop(str(path), None)
        for memo in [m for m, loaded in _loaded.items() if loaded is module]:
            del _loaded[memo]
        sys.modules.pop(module.__name__, None)
    return path


def rebuilds_damaged_cache(method: Callable) -> Callable:
    """Wrap a backend call: if it fails reading a damaged on-disk kernel cache, remove the cache files of
    the modules it loaded (one warning) and run it once more, which compiles them afresh. Any other
    error, or a second failure, propagates."""

    @functools.wraps(method)
    def call(*args, **kwargs):
        token = _used.set([])
        try:
            return method(*args, **kwargs)
        except Exception as e:
            used = _used.get()
            if not used or not damaged_cache(e):
                raise
            for module in dict.fromkeys(used):
                _remove_cache_files(_forget(module), e)
        finally:
            _used.reset(token)
        return method(*args, **kwargs)

    return call
