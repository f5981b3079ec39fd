"""The compiled Triton decode step rounds its float32 results to the nearest half-precision value when it stores
a bf16/fp16 state or output (README "Rounding of a half-precision state"): the PTX has ``cvt.rn``, never
``cvt.rz``. Triton's interpreter truncates instead (its float32 -> bf16 cast rounds toward zero), so an
interpreted run is not the place to judge the rounding; the offline compile needs no GPU."""

import re
import subprocess
import sys

import pytest

pytest.importorskip("triton")

SCRIPT = r"""
import re, sys
import torch, triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource
from triton.compiler.compiler import make_backend
from triton.runtime.jit import create_function_from_signature
from scanforge import backends
from scanforge.backends.base import DecodeInputs
from scanforge.kernels.ir import ScanSpec
from scanforge.tuning.configs import default_config

dtype = getattr(torch, sys.argv[1])
spec = ScanSpec(phase="decode", dtype=sys.argv[1], has_D=True)
m = lambda shape, dt=torch.float32: torch.empty(shape, dtype=dt, device="meta")
inputs = DecodeInputs(m((2, 64, 16), dtype), m((2, 64), dtype), m((2, 64), dtype), m((64, 16)), m((2, 16), dtype),
                      m((2, 16), dtype), m((64,)), None, None, None, 0.5, None)
launches = []
triton_backend = backends.get("triton")
with triton_backend.recording_launches(launches):
    triton_backend.scan_decode(spec, inputs, default_config("triton", spec))
(launch,) = launches
gpu = GPUTarget("cuda", 90, 32)
backend = make_backend(gpu)
binder = create_function_from_signature(launch.kernel.signature, launch.kernel.params, backend)
kwargs = dict(launch.kwargs)
bound, specialization, options = binder(*launch.args, **kwargs)
options, signature, constexprs, attrs = launch.kernel._pack_args(backend, kwargs, bound, specialization, options)
assert signature["state_ptr"] == signature["out_ptr"], signature
compiled = triton.compile(ASTSource(launch.kernel, signature, constexprs, attrs), target=gpu,
                          options=options.__dict__)
print("\n".join(sorted(set(re.findall(r"cvt\.[a-z0-9.]+", compiled.asm["ptx"])))))
"""


@pytest.mark.parametrize("dtype, short", [("bfloat16", "bf16"), ("float16", "f16")])
def test_the_compiled_decode_step_rounds_a_half_state_to_nearest(dtype, short):
    from scanforge.tuning.cuda_tools import compile_environment

    env = {**compile_environment(), "TRITON_DEFAULT_FP_FUSION": "1"}
    done = subprocess.run([sys.executable, "-c", SCRIPT, dtype], capture_output=True, text=True, env=env,
                          timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    casts = done.stdout.split()
    narrowing = [c for c in casts if re.fullmatch(rf"cvt\.[a-z]+\.{short}(x2)?\.f32", c)]
    # the state tile is stored two at a time (x2), the output one at a time: both round to nearest even
    assert narrowing and all(c.startswith("cvt.rn.") for c in narrowing), casts
