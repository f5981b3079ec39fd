"""Timing helpers shared by the benchmarks: median wall time (CUDA events on a GPU), machine facts,
results written as JSON with the command that produced them."""

from __future__ import annotations

import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import torch


def median_seconds(fn, *, warmup: int = 3, repeats: int = 10) -> float:
    """Median time of ``fn()``; CUDA work is timed with events after a synchronize."""
    for _ in range(warmup):
        fn()
    times = []
    cuda = torch.cuda.is_available()
    for _ in range(repeats):
        if cuda:
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            torch.cuda.synchronize()
            start.record()
            fn()
            end.record()
            torch.cuda.synchronize()
            times.append(start.elapsed_time(end) / 1e3)
        else:
            t0 = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t0)
    return statistics.median(times)


def cpu_model() -> str:
    """``model name`` of /proc/cpuinfo (Linux), else what platform knows."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine() -> dict:
    """What a reader needs to compare numbers: CPU model, cores, threads, library versions, and the
    load average (other processes on a shared machine slow a run down)."""
    info = {"python": platform.python_version(), "torch": torch.__version__, "cpu": cpu_model(),
            "cpu_count": os.cpu_count(), "threads": torch.get_num_threads()}
    try:
        import numba

        info.update(numba=numba.__version__, numba_threads=numba.get_num_threads())
    except ImportError:
        pass
    if hasattr(os, "getloadavg"):
        info["loadavg_1_5_15min"] = [round(v, 2) for v in os.getloadavg()]
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name()
    return info


def write_results(name: str, rows: list[dict], notes: str = "", **extra) -> Path:
    """benchmarks/results/<name>.json: the command, the machine, notes, the rows, and any extra sections."""
    out = Path(__file__).parent / "results" / f"{name}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    payload = {"command": " ".join(["python", *sys.argv]), "machine": machine(), "notes": notes, **extra,
               "rows": rows}
    out.write_text(json.dumps(payload, indent=2) + "\n")
    return out
