"""Kernel generation: render a spec + tuning config through a backend's templates, then load it.

The rendered source is written to ``<cache dir>/kernels/<backend>/<family>_<hash>.py`` (named by
the hash of its own text, written atomically) and imported from there, so a kernel a user runs is
always a readable file, and rendering the same (spec, config, constants) twice reuses the loaded
module. ``constants`` are shape values a backend must compile in (Numba-CUDA sizes its thread-local
state arrays by N); they are not tuning parameters.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import sys
import tempfile
import threading
from collections.abc import Mapping
from functools import cache
from importlib.resources import files
from pathlib import Path
from types import ModuleType

import jinja2

from ..paths import cache_dir
from .ir import GatherSpec, ScanSpec

_ENTRY_TEMPLATE = {ScanSpec: "scan_module.j2", GatherSpec: "gather_module.j2"}
_modules: dict[str, ModuleType] = {}  # by generated file: specs that render the same source share it
_loaded: dict[tuple, ModuleType] = {}  # by (backend, spec, config): no re-rendering on the op's hot path
_lock = threading.Lock()


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
    return f"{'scan' if isinstance(spec, ScanSpec) else 'gather'}_{spec.phase.value}"


def render(spec: ScanSpec | GatherSpec, backend: str, config: Mapping[str, object],
           constants: Mapping[str, object] | None = None) -> str:
    """The kernel source (Python text) for ``spec`` on ``backend`` with tiling ``config``."""
    template = _environment(backend).get_template(_ENTRY_TEMPLATE[type(spec)])
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
    if module is not None:
        return module
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
        if not path.exists() or path.read_text() != text:
            _write_atomic(path, text)
        module_spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(module_spec)
        sys.modules[name] = module  # triton resolves globals of jitted functions through the module
        module_spec.loader.exec_module(module)
        _modules[key] = _loaded[memo] = module
        return module
