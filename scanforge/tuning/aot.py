"""Ahead-of-time compilation of the GPU kernels for a target GPU, on any machine (no GPU needed).

A kernel is compiled exactly as the op would launch it (:mod:`scanforge.tuning.capture`). Each launch is compiled
for the target (Triton: ``triton.compile`` with a ``GPUTarget``; Numba-CUDA: ``numba.cuda.compile`` to PTX, then
``ptxas``). On NVIDIA its resources are read from the cubin: registers, stack (spills), shared memory, resident warps
per SM (:mod:`scanforge.tuning.targets`), and the static count of MUFU.EX2 (hardware exponentials) in the SASS. On
AMD (Triton's ``hip`` backend, bundled in its wheel) they are read from the amdgcn metadata: VGPRs, AGPRs, SGPRs,
VGPR/SGPR spills, scratch (``.private_segment_fixed_size``), LDS (``.group_segment_fixed_size``), resident waves per
SIMD, and the static count of ``v_exp_f32``.

The process must have loaded triton compiled (``TRITON_INTERPRET`` unset or 0) and numba
without its simulator (``NUMBA_ENABLE_CUDASIM`` unset or 0): :func:`scanforge.tuning.cuda_tools.compile_environment`.
"""

from __future__ import annotations

import re
import subprocess
import tempfile
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import SimpleNamespace

import torch

from ..backends.base import Launch
from ..kernels import codegen
from ..kernels.ir import GatherSpec, ScanSpec
from .capture import capture
from .cuda_tools import find_tool
from .targets import AMDTarget, Target, floor, target


@dataclass
class KernelReport:
    """Resources of one compiled kernel on one target (``error`` set when it did not compile)."""

    kernel: str
    target: str
    registers: int = 0
    stack: int = 0  # bytes of local memory per thread (Triton: spilled registers)
    spill: int = 0  # bytes of spill stores per thread
    shared: int = 0  # bytes per block
    warps_per_block: int = 0
    occupancy: dict = field(default_factory=dict)  # warps per SM (NVIDIA) or waves per SIMD (AMD)
    mufu_ex2: int = 0  # static count in the SASS
    exps: int = 0  # hardware exponentials, static count: MUFU.EX2 (NVIDIA), v_exp_f32 (AMD)
    agprs: int = 0  # AMD: accumulation registers per lane (``registers`` are the VGPRs)
    sgprs: int = 0  # AMD: scalar registers per wave
    sgpr_spill: int = 0  # AMD: SGPRs spilled (into VGPR lanes, not memory)
    seconds: float = 0.0
    error: str | None = None

    def as_dict(self) -> dict:
        return asdict(self)


def _run(cmd: list[str]) -> str:
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"{Path(cmd[0]).name} failed: {(done.stderr or done.stdout).strip()[:500]}")
    return done.stdout + done.stderr


def _sass_ex2(cubin: Path) -> int:
    return _run([find_tool("cuobjdump"), "-sass", str(cubin)]).count("MUFU.EX2")


def _resources(cubin: Path) -> dict[str, int]:
    """REG, STACK, SHARED of the (single) function in a cubin (``cuobjdump --dump-resource-usage``)."""
    text = _run([find_tool("cuobjdump"), "--dump-resource-usage", str(cubin)])
    fields = dict(re.findall(r"\b(REG|STACK|SHARED|LOCAL):(\d+)", text.split("Function", 1)[-1]))
    return {k: int(v) for k, v in fields.items()}


def _amdgcn_field(asm: str, key: str) -> int:
    found = re.search(rf"\.{key}:\s*(\d+)", asm)
    return int(found.group(1)) if found else 0


def amd_report(name: str, tgt: AMDTarget, asm: str, num_warps: int, shared: int) -> KernelReport:
    """A report from the amdgcn assembly's kernel metadata (AMDGPU code object v5 ``.amdhsa`` notes)."""
    field_ = lambda key: _amdgcn_field(asm, key)  # noqa: E731
    spilled = field_("vgpr_spill_count")
    scratch = field_("private_segment_fixed_size")
    return KernelReport(name, tgt.name, registers=field_("vgpr_count"), agprs=field_("agpr_count"),
                        sgprs=field_("sgpr_count"), stack=scratch, spill=spilled * 4,
                        sgpr_spill=field_("sgpr_spill_count"),
                        shared=max(field_("group_segment_fixed_size"), shared), warps_per_block=num_warps,
                        exps=len(re.findall(r"\bv_exp_f32", asm)))


def _compile_triton(launch: Launch, tgt: Target | AMDTarget, workdir: Path) -> KernelReport:
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource
    from triton.compiler.compiler import make_backend
    from triton.runtime.jit import create_function_from_signature

    fn = launch.kernel
    gpu = GPUTarget(*tgt.gpu_target())
    try:
        backend = make_backend(gpu)
    except Exception as e:  # a Triton wheel without the target's backend
        raise FileNotFoundError(f"this Triton ({triton.__version__}) cannot compile for {tgt.name}: "
                                f"{type(e).__name__}: {e}") from None
    binder = create_function_from_signature(fn.signature, fn.params, backend)
    kwargs = dict(launch.kwargs)
    bound, specialization, options = binder(*launch.args, **kwargs)
    options, signature, constexprs, attrs = fn._pack_args(backend, kwargs, bound, specialization, options)
    compiled = triton.compile(ASTSource(fn, signature, constexprs, attrs), target=gpu, options=options.__dict__)
    if tgt.vendor == "amd":
        return amd_report(launch.name, tgt, compiled.asm["amdgcn"], compiled.metadata.num_warps,
                          compiled.metadata.shared)
    cubin = workdir / f"{launch.name}.cubin"
    cubin.write_bytes(compiled.asm["cubin"])
    res = _resources(cubin)
    stack = res.get("STACK", 0) + res.get("LOCAL", 0)
    ex2 = _sass_ex2(cubin)
    return KernelReport(launch.name, tgt.name, registers=res.get("REG", 0), stack=stack, spill=stack,
                        shared=max(compiled.metadata.shared, res.get("SHARED", 0)),
                        warps_per_block=compiled.metadata.num_warps, mufu_ex2=ex2, exps=ex2)


def numba_type(arg):
    """The Numba type of a launch argument (its signature entry)."""
    import numpy as np
    from numba import from_dtype, types

    if isinstance(arg, torch.Tensor):
        dtype = from_dtype(np.dtype(str(arg.dtype).removeprefix("torch.")))
        return types.Array(dtype, arg.dim(), "C" if arg.is_contiguous() else "A")
    if isinstance(arg, np.generic):
        return from_dtype(arg.dtype)
    if isinstance(arg, bool):
        return types.boolean
    return types.int64 if isinstance(arg, int) else types.float64


def _compile_numba(launch: Launch, tgt: Target, workdir: Path) -> KernelReport:
    from numba import cuda
    from numba.cuda import dispatcher

    signature = tuple(numba_type(a) for a in launch.args)
    # Device functions called by the kernel ask the current device for its compute capability;
    # without a GPU, the target's answers.
    real_device = dispatcher.get_current_device
    dispatcher.get_current_device = lambda: SimpleNamespace(compute_capability=tgt.cc)
    try:
        ptx, _ = cuda.compile(launch.kernel.py_func, signature, device=False, abi="numba", cc=tgt.cc,
                                output="ptx")
    finally:
        dispatcher.get_current_device = real_device
    source = workdir / f"{launch.name}.ptx"
    source.write_text(ptx)
    cubin = workdir / f"{launch.name}.cubin"
    log = _run([find_tool("ptxas"), "-v", "--gpu-name", tgt.name, "-o", str(cubin), str(source)])
    number = lambda pattern: int(m.group(1)) if (m := re.search(pattern, log)) else 0  # noqa: E731
    return KernelReport(launch.name, tgt.name, registers=number(r"Used (\d+) registers"),
                        stack=number(r"(\d+) bytes stack frame"), spill=number(r"(\d+) bytes spill stores"),
                        shared=number(r"(\d+) bytes smem"), warps_per_block=-(-launch.threads // 32),
                        mufu_ex2=(ex2 := _sass_ex2(cubin)), exps=ex2)


def compile_launch(launch: Launch, tgt: Target | AMDTarget) -> KernelReport:
    """Compile one recorded launch for ``tgt``; a failure is a report with its error."""
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="scanforge-aot-") as tmp:
        try:
            compile_one = _compile_triton if launch.backend == "triton" else _compile_numba
            report = compile_one(launch, tgt, Path(tmp))
        except FileNotFoundError:
            raise
        except Exception as e:  # a compiler's refusal is a result, not a crash
            message = " ".join(str(e).split())
            report = KernelReport(launch.name, tgt.name, error=f"{type(e).__name__}: {message[:400]}")
    report.seconds = time.perf_counter() - start
    if report.error is None:
        report.occupancy = tgt.occupancy(report)
    return report


def verdict(family: str, report: KernelReport) -> str:
    """``ok``, or why the kernel is not acceptable on its target: error, spill (AMD: or scratch), or under the
    family's occupancy floor (warps per SM on NVIDIA, waves per SIMD on AMD)."""
    if report.error:
        return "error"
    if report.spill:
        return f"spills {report.spill} B"
    tgt = target(report.target)
    if tgt.vendor == "amd" and report.stack:
        return f"scratch {report.stack} B"
    least = floor(tgt, family)
    if report.occupancy.get("warps", 0) < least:
        return f"{report.occupancy.get('warps', 0)} {tgt.unit} < {least}"
    return "ok"


def infeasible(backend: str, spec: ScanSpec | GatherSpec, shape: tuple[int, ...], config: Mapping,
               target_name: str) -> str | None:
    """Why ``config`` is not worth timing on ``target_name`` (a kernel fails to compile, spills,
    or is under its family's warps floor), or None."""
    for launch in capture(backend, spec, shape, config):
        report = compile_launch(launch, target(target_name))
        why = verdict(codegen.family(spec), report)
        if why != "ok":
            return f"{target_name} {launch.name}: {report.error or why}"
    return None
