"""Deliberately broken kernels for tests: a backend's real template, rendered as usual, with one line changed,
written to a temporary module and loaded in place of the right one. The templates themselves are never edited.
"""

from __future__ import annotations

import hashlib
import importlib.util
import re
import sys
from collections.abc import Callable
from pathlib import Path

from scanforge.kernels import codegen
from scanforge.kernels.ir import Phase, ScanSpec

#: One line of each backend's forward scan template, changed: (pattern, replacement, what the change skips).
SKIP_THE_END = {
    "triton": (r"n_chunks = tl\.cdiv\(seq_len, BLOCK_L\)", "n_chunks = tl.cdiv(seq_len, BLOCK_L) - 1",
               "the last chunk of BLOCK_L steps"),
    "numba_cpu": (r"for c in range\(n_chunks\):", "for c in range(n_chunks - 1):", "the last chunk of CHUNK_L steps"),
    "numba_cuda": (r"_sweep\(b, d, g_idx, start, n, 0, n, ", "_sweep(b, d, g_idx, start, n, 0, n - 1, ",
                   "the last step of the sequence"),
}


def forward_scan(spec, config) -> bool:
    return isinstance(spec, ScanSpec) and spec.phase is Phase.FORWARD


def _import(path: Path, source: str):
    name = f"scanforge_broken_{path.stem}"
    path.write_text(source)
    module_spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(module_spec)
    sys.modules[name] = module  # Triton resolves a kernel's globals through its module
    module_spec.loader.exec_module(module)
    return module


def install(monkeypatch, directory: Path, backend: str, pattern: str | None = None, replacement: str | None = None,
            applies: Callable = forward_scan) -> None:
    """From now on (until monkeypatch undoes it), ``backend``'s kernels for which ``applies(spec, config)`` holds
    come from its template with ``pattern`` replaced (default: :data:`SKIP_THE_END`); the pattern must match
    exactly once, so a template that changed fails loudly instead of testing nothing."""
    if pattern is None:
        pattern, replacement, _ = SKIP_THE_END[backend]
    real = codegen.load

    def load(spec, name, config, constants=None):
        if name != backend or not applies(spec, config):
            return real(spec, name, config, constants)
        source, count = re.subn(pattern, replacement, codegen.render(spec, name, config, constants))
        assert count == 1, f"the {backend} template changed: {pattern!r} matched {count} times"
        digest = hashlib.sha256(source.encode()).hexdigest()[:16]
        path = directory / f"{backend}_{digest}.py"
        return sys.modules.get(f"scanforge_broken_{path.stem}") or _import(path, source)

    monkeypatch.setattr(codegen, "load", load)
