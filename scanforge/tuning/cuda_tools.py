"""The CUDA binaries the compile gate runs (``ptxas``, ``cuobjdump``), the AMD backend it needs for AMD targets,
and the environment of a compiling process."""

from __future__ import annotations

import contextlib
import os
import shutil
from pathlib import Path

from ..backends.numba_cuda import simulated
from ..backends.triton import interpreted
from .targets import target


def _tool_dirs() -> list[Path]:
    """Where CUDA binaries are looked for, newest toolkit first."""
    dirs = []
    if os.environ.get("SCANFORGE_CUDA_BIN"):
        dirs.append(Path(os.environ["SCANFORGE_CUDA_BIN"]))
    with contextlib.suppress(ImportError):
        import nvidia  # the nvidia-cuda-nvcc wheel: nvidia/cu13/bin

        for root in nvidia.__path__:
            dirs += sorted(Path(root).glob("cu*/bin"), reverse=True) + [Path(root) / "cuda_nvcc" / "bin"]
    for var in ("CUDA_HOME", "CUDA_PATH"):
        if os.environ.get(var):
            dirs.append(Path(os.environ[var]) / "bin")
    dirs.append(Path("/usr/local/cuda/bin"))
    with contextlib.suppress(ImportError):
        import triton

        dirs.append(Path(triton.__file__).parent / "backends" / "nvidia" / "bin")
    return dirs


def find_tool(name: str) -> str:
    """The path of a CUDA binary (``ptxas``, ``cuobjdump``); an error names every place looked in."""
    dirs = _tool_dirs()
    for d in dirs:
        if (d / name).is_file():
            return str(d / name)
    found = shutil.which(name)
    if found:
        return found
    looked = ", ".join(str(d) for d in dirs)
    raise FileNotFoundError(f"{name} not found: looked in $SCANFORGE_CUDA_BIN, {looked} and PATH "
                            f"(pip install 'scanforge[compile]' brings it)")


def compile_environment() -> dict[str, str]:
    """The environment of a process that compiles for GPUs: triton compiled, no CUDA simulator."""
    env = dict(os.environ)
    env.update(TRITON_INTERPRET="0", NUMBA_ENABLE_CUDASIM="0")
    env.setdefault("TRITON_DEFAULT_FP_FUSION", "1")  # Triton 3.9's default, stated (it warns otherwise)
    return env


def check_compiling_process() -> None:
    """Refuse to run in a process whose triton is interpreted or whose numba is simulated."""
    if interpreted() or simulated():
        raise RuntimeError("ahead-of-time compilation needs triton compiled and numba without its simulator: "
                           "run it in a process started with TRITON_INTERPRET=0 NUMBA_ENABLE_CUDASIM=0")


def check_target_tools(names) -> None:
    """Refuse (ValueError), in one line, a target this machine cannot compile for: NVIDIA targets need ``ptxas`` and
    ``cuobjdump``; AMD targets need Triton's AMD (``hip``) backend, which Triton's Linux wheels bundle."""
    vendors = {target(n).vendor for n in names}
    if "nvidia" in vendors:
        for tool in ("ptxas", "cuobjdump"):
            try:
                find_tool(tool)
            except FileNotFoundError as e:
                raise ValueError(str(e)) from None
    if "amd" in vendors:
        import triton
        from triton.backends import backends as triton_backends

        if "amd" not in triton_backends:
            amd = sorted(n for n in names if target(n).vendor == "amd")
            raise ValueError(f"--target {', '.join(amd)}: this Triton ({triton.__version__}) has no AMD "
                                    f"backend (its backends: {', '.join(sorted(triton_backends))}); install a "
                                    "Triton wheel for Linux x86-64, which bundles it")
