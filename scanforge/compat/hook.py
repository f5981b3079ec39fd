"""The import hook: model code written for mamba-ssm imports its ops by module path and gets scanforge's.

:func:`install` puts a ``sys.meta_path`` finder in front that answers for exactly these module names
(:data:`SERVED`) and nothing else::

    mamba_ssm.ops.selective_scan_interface       selective_scan_fn/_ref, mamba_inner_fn/_ref
    mamba_ssm.ops.triton.selective_state_update  selective_state_update/_ref
    mamba_ssm.ops.triton.layer_norm              RMSNorm, layer_norm_fn, rms_norm_fn, *_ref
    mamba_ssm.ops.triton.layernorm_gated         RMSNorm, LayerNorm, rmsnorm_fn, layernorm_fn
    mamba_ssm.ops.triton.ssd_combined            mamba_chunk_scan_combined, mamba_split_conv1d_scan_combined
    causal_conv1d                                causal_conv1d_fn, causal_conv1d_update, *_ref

Two groups, decided apart: mamba-ssm's ops are served when ``mamba_ssm`` is not installed or its CUDA
extension (``selective_scan_cuda``) does not import (a CPU machine, a ``MAMBA_SKIP_CUDA_BUILD`` build);
causal-conv1d's when ``causal_conv1d`` is absent or ``causal_conv1d_cuda`` does not import. A working
extension is never shadowed unless ``force=True``. With an installed mamba-ssm the finder serves only the op
modules: ``mamba_ssm`` itself, its ``modules/``, ``models/`` and ``utils/`` stay the real package's. Without one,
the parents ``mamba_ssm``, ``mamba_ssm.ops`` and ``mamba_ssm.ops.triton`` are empty stub packages so that op
imports succeed (``mamba_ssm.modules`` then is not found, as without mamba-ssm).

A served module is a fresh module under mamba-ssm's name holding the public functions of a scanforge module;
those are imported when the served module is first imported, so installing the hook costs nothing. Entries of
``sys.modules`` under served names that exist at install time are set aside and put back by :func:`uninstall`,
which also removes every module the hook made and the finder itself: ``sys.modules`` and ``sys.meta_path`` are
as they were. Code that imported a served function keeps its reference.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import importlib.util
import logging
import sys
import types

__all__ = ["SERVED", "install", "installed", "served_modules", "uninstall"]

log = logging.getLogger("scanforge.compat")

_SCAN_OPS = "scanforge.compat.mamba_ssm"
#: served module -> ((scanforge module, names it lends), ...)
SERVED: dict[str, tuple[tuple[str, tuple[str, ...]], ...]] = {
    "mamba_ssm.ops.selective_scan_interface": (
        (_SCAN_OPS, ("selective_scan_fn", "selective_scan_ref")),
        ("scanforge.compat.inner", ("mamba_inner_fn", "mamba_inner_ref"))),
    "mamba_ssm.ops.triton.selective_state_update": (
        (_SCAN_OPS, ("selective_state_update", "selective_state_update_ref")),),
    "mamba_ssm.ops.triton.layer_norm": (
        ("scanforge.compat.norms", ("RMSNorm", "layer_norm_fn", "rms_norm_fn", "layer_norm_ref", "rms_norm_ref")),),
    "mamba_ssm.ops.triton.layernorm_gated": (
        ("scanforge.compat.gated_norm", ("RMSNorm", "LayerNorm", "rmsnorm_fn", "layernorm_fn", "rms_norm_ref")),),
    "mamba_ssm.ops.triton.ssd_combined": (
        ("scanforge.compat.ssd", ("mamba_chunk_scan_combined", "mamba_split_conv1d_scan_combined",
                                  "mamba_split_conv1d_scan_ref")),),
    "causal_conv1d": (
        ("scanforge.compat.causal_conv1d", ("causal_conv1d_fn", "causal_conv1d_update", "causal_conv1d_ref",
                                            "causal_conv1d_update_ref")),),
}
#: (the package whose ops a group replaces, its compiled extension, the served names of the group)
_GROUPS = (("mamba_ssm", "selective_scan_cuda", tuple(n for n in SERVED if n.startswith("mamba_ssm."))),
           ("causal_conv1d", "causal_conv1d_cuda", ("causal_conv1d",)))
_STUBS = ("mamba_ssm", "mamba_ssm.ops", "mamba_ssm.ops.triton")


def _present(name: str) -> bool:
    """Whether ``name`` is imported or can be found, without importing it."""
    if name in sys.modules:
        return True
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


def _importable(name: str) -> bool:
    """Whether ``name`` imports (a compiled extension may be found and still fail to load)."""
    try:
        if importlib.util.find_spec(name) is None:
            return False
        importlib.import_module(name)
        return True
    except Exception:  # ImportError, OSError (a missing CUDA library), RuntimeError from a driver check
        return False


class _Finder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Answers for the served names (and the stubs, when mamba-ssm is absent), and for nothing else."""

    def __init__(self, served: tuple[str, ...], stubs: tuple[str, ...]):
        self.served, self.stubs = served, stubs
        self.made: dict[str, types.ModuleType] = {}

    def find_spec(self, fullname, path=None, target=None):
        if fullname in self.served:
            return importlib.machinery.ModuleSpec(fullname, self, origin="scanforge.compat")
        if fullname in self.stubs:
            return importlib.machinery.ModuleSpec(fullname, self, origin="scanforge.compat", is_package=True)
        return None

    def create_module(self, spec):
        return None  # the default: a fresh module

    def exec_module(self, module):
        name = module.__name__
        self.made[name] = module
        if name in self.stubs:
            module.__path__ = []
            module.__doc__ = f"{name}: an empty stand-in made by scanforge.compat (mamba-ssm is not installed)."
            return
        lent = []
        for source, names in SERVED[name]:
            # Imported here, when the served module is first imported: installing the hook stays cheap.
            backing = importlib.import_module(source)
            for attr in names:
                setattr(module, attr, getattr(backing, attr))
            lent.extend(names)
        module.__all__ = lent
        module.__doc__ = f"{name} served by scanforge.compat: " + ", ".join(lent) + "."


_state: dict = {}


def installed() -> bool:
    return "finder" in _state


def served_modules() -> tuple[str, ...]:
    """The module names the installed hook answers for (empty when not installed)."""
    return _state["finder"].served if installed() else ()


def install(force: bool = False) -> tuple[str, ...]:
    """Serve scanforge's implementations under mamba-ssm's and causal-conv1d's op module names.

    Returns the served names (logged on one line at INFO level on the ``scanforge.compat`` logger). A group whose
    package is installed with a working CUDA extension is left alone unless ``force``. Installing twice is a
    no-op that returns the names already served; :func:`uninstall` first to change ``force``.
    """
    if installed():
        return served_modules()
    served, reasons = [], []
    for package, extension, names in _GROUPS:
        present = _present(package)
        if force or not present or not _importable(extension):
            served.extend(names)
            why = "forced" if force else (f"{extension} does not import" if present else f"{package} not installed")
            reasons.append(f"{package}: {why}")
    stubs = _STUBS if "mamba_ssm.ops.selective_scan_interface" in served and not _present("mamba_ssm") else ()
    finder = _Finder(tuple(served), stubs)
    shadowed = {n: sys.modules.pop(n) for n in (*served, *stubs) if n in sys.modules}
    parents = {}  # attributes of real parent packages that served modules will overwrite
    for name in served:
        parent, _, child = name.rpartition(".")
        if parent in sys.modules and hasattr(sys.modules[parent], child):
            parents[name] = getattr(sys.modules[parent], child)
    sys.meta_path.insert(0, finder)
    _state.update(finder=finder, shadowed=shadowed, parents=parents)
    if served:
        log.info("scanforge.compat serves %s (%s)", ", ".join(served), "; ".join(reasons))
    else:
        log.info("scanforge.compat serves nothing: mamba-ssm and causal-conv1d are installed and working")
    return tuple(served)


def uninstall() -> None:
    """Remove the finder and every module it made; put back what :func:`install` set aside."""
    if not installed():
        return
    finder = _state.pop("finder")
    shadowed, parents = _state.pop("shadowed"), _state.pop("parents")
    if finder in sys.meta_path:
        sys.meta_path.remove(finder)
    for name, made in finder.made.items():
        if sys.modules.get(name) is made:
            del sys.modules[name]
        parent, _, child = name.rpartition(".")
        owner = sys.modules.get(parent)  # a real parent package keeps an attribute for its imported child
        if owner is not None and getattr(owner, child, None) is made:
            if name in parents:
                setattr(owner, child, parents[name])
            else:
                delattr(owner, child)
    sys.modules.update(shadowed)
