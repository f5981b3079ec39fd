"""Timing helpers shared by the benchmarks: median wall time (CUDA events on a GPU), machine facts,
results written as JSON with the command that produced them."""

from __future__ import annotations

import json
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


def machine() -> dict:
    info = {"python": platform.python_version(), "torch": torch.__version__, "cpu": platform.processor() or
            platform.machine(), "threads": torch.get_num_threads()}
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name()
    return info


def write_results(name: str, rows: list[dict], notes: str = "") -> Path:
    out = Path(__file__).parent / "results" / f"{name}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    payload = {"command": " ".join(["python", *sys.argv]), "machine": machine(), "notes": notes, "rows": rows}
    out.write_text(json.dumps(payload, indent=2) + "\n")
    return out
