"""Per-call cost of finding a kernel's config: ``configs.config_for`` (the tuned-cache dict hit)
and ``codegen.load`` (the compiled module memo), which every op call pays.

    python benchmarks/cache_lookup.py   # writes benchmarks/results/cache_lookup.json
"""

from __future__ import annotations

import json
import os
import platform
import tempfile
import timeit
from pathlib import Path

os.environ.setdefault("SCANFORGE_CACHE_DIR", tempfile.mkdtemp(prefix="scanforge-bench-"))

from scanforge.kernels import codegen  # noqa: E402
from scanforge.kernels.ir import ScanSpec  # noqa: E402
from scanforge.tuning import cache  # noqa: E402
from scanforge.tuning.configs import config_for, default_config  # noqa: E402

SPEC = ScanSpec(has_D=True, has_z=True, has_delta_bias=True, softplus=True)
SHAPE = (2, 512, 2048, 16)


def per_call_us(fn, number=200_000) -> float:
    return min(timeit.repeat(fn, number=number, repeat=5)) / number * 1e6


def main() -> None:
    results = {"untuned config_for": per_call_us(lambda: config_for("numba_cpu", SPEC, SHAPE))}
    cache.store("numba_cpu", SPEC, SHAPE, default_config("numba_cpu", SPEC))
    results["tuned config_for"] = per_call_us(lambda: config_for("numba_cpu", SPEC, SHAPE))
    config = config_for("numba_cpu", SPEC, SHAPE)
    codegen.load(SPEC, "numba_cpu", config)
    results["codegen.load (memo hit)"] = per_call_us(lambda: codegen.load(SPEC, "numba_cpu", config))
    record = {"command": "python benchmarks/cache_lookup.py", "machine": platform.processor() or platform.machine(),
              "python": platform.python_version(),
              "microseconds_per_call": {k: round(v, 3) for k, v in results.items()},
              "target": "config lookup < 5 us per call"}
    print(json.dumps(record, indent=1))
    out = Path(__file__).parent / "results" / "cache_lookup.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(record, indent=1) + "\n")


if __name__ == "__main__":
    main()
