"""What a tuned config is valid for: the device, the libraries and the kernels that were timed.

A config tuned on one GPU model, with one Triton version, for one version of the templates, says
nothing reliable about another; the fingerprint names all of them and the cache refuses a
mismatch (the "strict key" of a tuning cache).
"""

from __future__ import annotations

import hashlib
import json
import platform
from functools import cache
from importlib import metadata
from importlib.resources import files

import torch

#: Bump when the layout of cache files changes; a file with a newer schema is refused.
SCHEMA_VERSION = 1

_LIBRARY = {"triton": "triton", "numba_cpu": "numba", "numba_cuda": "numba-cuda"}


@cache
def cpu_name() -> str:
    """The CPU model (``model name`` of /proc/cpuinfo on Linux), with the core count."""
    name = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    name = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return f"{name} x{torch.get_num_threads()} threads"


@cache
def gpu_name() -> str:
    """The current CUDA device and its compute capability."""
    index = torch.cuda.current_device()
    major, minor = torch.cuda.get_device_capability(index)
    return f"{torch.cuda.get_device_name(index)} sm_{major}{minor}"


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "absent"


@cache
def kernels_hash(backend: str) -> str:
    """A hash of the backend's templates: a config tuned for other kernels is not trusted."""
    digest = hashlib.sha256()
    root = files("scanforge") / "templates" / backend
    if root.is_dir():
        for entry in sorted(root.iterdir(), key=lambda e: e.name):
            digest.update(entry.name.encode() + entry.read_bytes())
    return digest.hexdigest()[:16]


@cache
def fingerprint(backend: str) -> dict:
    """The fingerprint of ``backend`` on this machine (a dict of strings)."""
    from . import __version__, backends

    return {"schema": SCHEMA_VERSION, "backend": backend, "device": backends.get(backend).device_name(),
            "library": f"{_LIBRARY.get(backend, 'torch')} {_version(_LIBRARY.get(backend, 'torch'))}",
            "torch": torch.__version__.split("+")[0], "scanforge": __version__, "kernels": kernels_hash(backend)}


def fingerprint_id(fp: dict) -> str:
    """A short stable name of a fingerprint: ``<backend>-<device words>-<hash>``."""
    digest = hashlib.sha256(json.dumps(fp, sort_keys=True).encode()).hexdigest()[:12]
    words = "".join(c if c.isalnum() else "-" for c in fp["device"].lower()).strip("-")
    while "--" in words:
        words = words.replace("--", "-")
    return f"{fp['backend']}-{words[:40].strip('-')}-{digest}"
