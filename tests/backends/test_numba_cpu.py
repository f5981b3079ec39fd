"""Numba CPU specifics: kernels compiled by one process are loaded from the disk cache by the next,
whatever order that process loads kernel modules in."""

import json
import os
import subprocess
import sys

import pytest

pytest.importorskip("numba")

_RUN = """
import json, sys, time, torch
from scanforge.kernels import codegen
from scanforge.backends.numba_cpu import _module
from scanforge.kernels.ir import ScanSpec
import scanforge as sf
if sys.argv[1] == "other-first":  # load an unrelated kernel module first: module load order differs
    codegen.load(ScanSpec(stride=2), "numba_cpu", {"LAYOUT": "channels", "EXP": "poly", "BLOCK_D": 16, "CHUNK_L": 64})
g = torch.Generator().manual_seed(0)
x = dict(u=torch.randn(1, 8, 5, generator=g), delta=torch.rand(1, 8, 5, generator=g), A=-torch.rand(8, 4, generator=g),
         B=torch.randn(1, 4, 5, generator=g), C=torch.randn(1, 4, 5, generator=g))
start = time.perf_counter()
y = sf.selective_scan(**x, backend="numba_cpu")
seconds = time.perf_counter() - start
ref = sf.selective_scan(**x, backend="reference")
stats = _module(ScanSpec(), (1, 8, 5, 4), None).scan_forward.stats
print(json.dumps({"hits": sum(stats.cache_hits.values()), "misses": sum(stats.cache_misses.values()),
                  "seconds": seconds, "err": float((y - ref).abs().max())}))
"""


def _run(cache_dir, order: str) -> dict:
    env = {**os.environ, "SCANFORGE_CACHE_DIR": str(cache_dir)}
    done = subprocess.run([sys.executable, "-c", _RUN, order], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_a_second_process_loads_the_compiled_forward_from_disk(tmp_path):
    first = _run(tmp_path, "scan-first")
    assert first["misses"] >= 1 and first["hits"] == 0 and first["err"] < 1e-5
    second = _run(tmp_path, "other-first")
    assert second["hits"] >= 1 and second["misses"] == 0, second
    assert second["err"] < 1e-5
