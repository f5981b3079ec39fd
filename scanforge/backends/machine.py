"""What a backend knows about the machine it runs on: its cores, its CPU and GPU as a tuned config's key names
them, and the versions of the libraries a kernel depends on."""

from __future__ import annotations

import os
import platform
from functools import cache
from importlib import metadata

import torch


@cache
def machine_cores() -> int:
    """The cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


@cache
def cpu_name() -> str:
    """The CPU model (``model name`` of /proc/cpuinfo on Linux), with the cores this process may use (not
    torch's thread setting: a trial process that runs on fewer threads is still on the same machine)."""
    name = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    name = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return f"{name} x{machine_cores()} threads"


@cache
def gpu_name() -> str:
    """The current GPU as a tuned config's key names it: an NVIDIA device with its compute capability
    (``NVIDIA H100 80GB HBM3 sm_90``); on a ROCm build of PyTorch, an AMD device with its LLVM target and the
    HIP version (``AMD Instinct MI300X gfx942 HIP 6.4.43484``), so that a config tuned on one architecture or
    ROCm release is never taken for another."""
    index = torch.cuda.current_device()
    hip = getattr(torch.version, "hip", None)
    if hip:
        arch = str(getattr(torch.cuda.get_device_properties(index), "gcnArchName", "") or "").split(":")[0]
        return f"{torch.cuda.get_device_name(index)} {arch or 'gfx?'} HIP {hip}"
    major, minor = torch.cuda.get_device_capability(index)
    return f"{torch.cuda.get_device_name(index)} sm_{major}{minor}"


def version_of(distribution: str) -> str:
    """The installed version of a distribution, or ``"absent"``."""
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return "absent"
