"""Numba-CUDA specifics: the generated kernels are module-level functions that Numba caches on disk (a GPU
process compiles a kernel once, not once per process), with the state size compiled in; and the long sequences
and full state size that the simulated property tests leave out."""

import json
import os
import subprocess
import sys

import pytest
from helpers import device_of

from scanforge.kernels.ir import ScanSpec
from scanforge.testing import ScanExample, assert_matches_reference

pytest.importorskip("numba_cuda")

_INSPECT = """
import json
from numba.cuda.dispatcher import CUDACache
from scanforge.backends.numba_cuda import _module
from scanforge.kernels.ir import GatherSpec, Phase, ScanSpec
found = {}
for name, spec, shape in [("forward", ScanSpec(), (2, 8, 32, 4)),
                          ("backward", ScanSpec(phase=Phase.BACKWARD), (2, 8, 32, 4)),
                          ("decode", ScanSpec(phase=Phase.DECODE), (2, 8, 1, 4)),
                          ("gather", GatherSpec(), (2, 16, 8, 4))]:
    module = _module(spec, shape, None)
    kernel = getattr(module, name)
    found[name] = {"cached": isinstance(kernel._cache, CUDACache), "cache_path": kernel._cache._cache_path,
                   "file": module.__file__, "N": getattr(module, "N", None)}
print(json.dumps(found))
"""


def test_kernels_are_cached_on_disk_beside_their_generated_file(tmp_path):
    # Real numba.cuda (not the simulator): creating the dispatchers needs no GPU.
    env = {**os.environ, "SCANFORGE_CACHE_DIR": str(tmp_path), "NUMBA_ENABLE_CUDASIM": "0"}
    done = subprocess.run([sys.executable, "-c", _INSPECT], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    found = json.loads(done.stdout.strip().splitlines()[-1])
    for name, kernel in found.items():
        assert kernel["cached"], name
        assert kernel["cache_path"] == os.path.join(os.path.dirname(kernel["file"]), "__pycache__"), name
    assert found["forward"]["N"] == found["backward"]["N"] == found["decode"]["N"] == 4
    assert found["forward"]["file"] != found["backward"]["file"]


LONG = {"causal, all terms and states": ScanSpec(has_D=True, has_z=True, has_delta_bias=True, softplus=True,
                                                  has_initial_state=True, return_last_state=True),
        "bidirectional strided k=3": ScanSpec(direction="bidirectional", stride=3, has_D=True),
        "reverse gated soft": ScanSpec(direction="reverse", gated=True, gate_mode="soft", return_last_state=True)}


@pytest.mark.parametrize("variant", LONG)
def test_long_sequences_and_a_full_state(variant):
    """What the drawn examples leave out for the simulator's sake: L past 64 and past the backward's chunks of
    checkpoints, with N = 16 states (one example each, a couple of channels)."""
    spec = LONG[variant]
    example = ScanExample(spec, 1, 2, 130, 16, seed=4)
    assert_matches_reference("numba_cuda", spec, example.inputs(device_of("numba_cuda")), variant=variant)
