"""Ahead-of-time compilation of the GPU kernels for a target GPU, on any machine (no GPU needed).

A kernel is compiled exactly as the op would launch it: the backend's own launcher runs on
``meta`` tensors of the requested shape and dtype while its kernels are replaced by recorders,
so every recorded launch carries the real arguments (dtypes, strides, constexprs, grid). Each
launch is then compiled for the target (Triton: ``triton.compile`` with a ``GPUTarget``;
Numba-CUDA: ``numba.cuda.compile`` to PTX, then ``ptxas``) and its resources are read from the
cubin: registers, stack (spills), shared memory, resident warps per SM, and the static count of
MUFU.EX2 (hardware exponentials) in the SASS.

The process must have loaded triton compiled (``TRITON_INTERPRET`` unset or 0) and numba
without its simulator (``NUMBA_ENABLE_CUDASIM`` unset or 0): :func:`compile_environment`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import re
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import SimpleNamespace

import torch

from .. import backends
from ..backends import numba_cuda
from ..backends.base import DecodeInputs, ScanInputs
from ..backends.numba_cuda import simulated
from ..backends.triton import interpreted
from ..kernels import codegen
from ..kernels.ir import GatherSpec, Phase, ScanSpec

GPU_BACKENDS = ("triton", "numba_cuda")


@dataclass(frozen=True)
class Target:
    """A GPU architecture's per-SM limits (CUDA C Programming Guide, "Compute Capabilities")."""

    name: str
    cc: tuple[int, int]
    max_warps: int = 64  # resident warps per SM
    max_ctas: int = 32  # resident blocks per SM
    registers: int = 65536  # 32-bit registers per SM
    shared: int = 233472  # shared memory per SM available to blocks, bytes
    shared_reserved: int = 1024  # per block, reserved by the system (sm_80 and later)

    def warps_per_sm(self, registers: int, shared: int, warps_per_block: int) -> dict[str, int]:
        """Resident warps per SM as limited by registers, shared memory and threads, and the minimum.

        Registers are allocated per warp in units of 256 (8 per thread); shared memory per block
        adds the reserved 1 KiB.
        """
        per_warp = -(-max(registers, 1) * 32 // 256) * 256
        by_regs = (self.registers // (per_warp * warps_per_block)) * warps_per_block
        by_threads = min(self.max_warps // warps_per_block, self.max_ctas) * warps_per_block
        by_shared = by_threads if shared == 0 else (
            self.shared // (shared + self.shared_reserved)) * warps_per_block
        return {"by_registers": by_regs, "by_shared": by_shared, "by_threads": by_threads,
                "warps": min(by_regs, by_shared, by_threads)}


#: The targets ``scanforge compile`` knows: A100 (sm_80: 164 KiB shared memory per SM), H100/H200
#: (sm_90: 228 KiB), B200 (sm_100: 228 KiB).
TARGETS: dict[str, Target] = {
    "sm_80": Target("sm_80", (8, 0), shared=167936),
    "sm_90": Target("sm_90", (9, 0)),
    "sm_100": Target("sm_100", (10, 0)),
}

#: The fewest resident warps per SM a family's default config must reach (mamba-ssm builds its
#: scan kernels for 3 blocks of 4 warps per SM). Gathers have no floor: they are memory-bound
#: with few, large blocks.
WARPS_FLOOR = {"scan_fwd": 12, "scan_decode": 12, "scan_bwd": 8}


def target(name: str) -> Target:
    if name not in TARGETS:
        raise ValueError(f"--target: expected one of {sorted(TARGETS)}, got {name!r}")
    return TARGETS[name]


# ---------------------------------------------------------------------------------------------
# Tools


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


# ---------------------------------------------------------------------------------------------
# Capture: the backend's launcher on meta tensors, its kernels recorded instead of run


@dataclass
class Launch:
    """One kernel launch as the backend would make it."""

    backend: str
    kernel: object  # triton JITFunction or numba CUDADispatcher
    args: tuple
    kwargs: dict = field(default_factory=dict)
    threads: int = 0  # numba: threads per block

    @property
    def name(self) -> str:
        fn = getattr(self.kernel, "py_func", None) or getattr(self.kernel, "fn", self.kernel)
        return fn.__name__


class _TritonRecorder:
    def __init__(self, fn, launches: list[Launch]):
        self.fn, self.launches = fn, launches

    def __getitem__(self, grid):
        def record(*args, **kwargs):
            self.launches.append(Launch("triton", self.fn, args, kwargs))
        return record


@contextlib.contextmanager
def _recording(backend: str, launches: list[Launch]) -> Iterator[None]:
    """Swap the kernels of every generated module (triton) or the launch function (numba) for recorders."""
    if backend == "numba_cuda":
        real = numba_cuda._launch

        def record(kernel, work, threads, device, *args):
            launches.append(Launch("numba_cuda", kernel, args, threads=threads))

        numba_cuda._launch = record
        try:
            yield
        finally:
            numba_cuda._launch = real
        return
    from triton.runtime.jit import JITFunction  # triton is optional: imported when a Triton kernel is compiled

    swapped = []
    real_load = codegen.load

    def load_recorded(*args, **kwargs):
        module = real_load(*args, **kwargs)
        for name, value in list(vars(module).items()):
            if isinstance(value, JITFunction):
                setattr(module, name, _TritonRecorder(value, launches))
                swapped.append((module, name, value))
        return module

    codegen.load = load_recorded
    try:
        yield
    finally:
        codegen.load = real_load
        for module, name, value in reversed(swapped):
            setattr(module, name, value)


def _meta(shape, dtype=torch.float32) -> torch.Tensor:
    return torch.empty(shape, dtype=dtype, device="meta")


_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


def _scan_inputs(spec: ScanSpec, shape: tuple[int, ...], groups: int = 2) -> ScanInputs:
    """Contiguous meta inputs of a scan as a user passes them: u, delta, z, B, C in the dtype, the rest fp32."""
    batch, dim, L, N = shape
    dt = _DTYPES[spec.dtype]
    bc = (batch, groups, N, L) if spec.grouped else (batch, N, L)
    return ScanInputs(
        u=_meta((batch, dim, L), dt), delta=_meta((batch, dim, L), dt), A=_meta((dim, N)),
        B=_meta(bc, dt), C=_meta(bc, dt), D=_meta((dim,)) if spec.has_D else None,
        z=_meta((batch, dim, L), dt) if spec.has_z else None,
        delta_bias=_meta((dim,)) if spec.has_delta_bias else None,
        gate=_meta((batch, L)) if spec.gated else None,
        initial_state=_meta((batch, dim, N)) if spec.has_initial_state else None, gate_threshold=0.5)


def _call(backend, spec: ScanSpec | GatherSpec, shape: tuple[int, ...], config: Mapping) -> None:
    """Run the backend's entry point of spec's phase on meta tensors of ``shape``."""
    config = dict(config)
    if isinstance(spec, GatherSpec):
        batch, T, d, k = shape
        dt = _DTYPES[spec.dtype]
        x = _meta((batch, T, d), dt)
        scores = _meta((batch, T)) if spec.scores_given else None
        if spec.phase is Phase.FORWARD:
            backend.gather_forward(spec, x, k, scores, config)
        else:
            gout = _meta((batch, spec.out_rows(k), d), dt)
            forward = dataclasses.replace(spec, phase=Phase.FORWARD)
            backend.gather_backward(forward, x, k, scores, _meta((batch, T), torch.int32), gout, config)
        return
    if spec.phase is Phase.DECODE:
        batch, dim, _, N = shape
        dt = _DTYPES[spec.dtype]
        groups = 2 if spec.grouped else 1
        bc = (batch, groups, N) if spec.grouped else (batch, N)
        window = (_meta((batch, dim)), _meta((batch, dim)), _meta((batch, groups, N)), _meta((batch,))) \
            if spec.pooled else None
        inputs = DecodeInputs(_meta((batch, dim, N)), _meta((batch, dim), dt), _meta((batch, dim), dt),
                              _meta((dim, N)), _meta(bc, dt), _meta(bc, dt), _meta((dim,)) if spec.has_D else None,
                              _meta((batch, dim), dt) if spec.has_z else None,
                              _meta((dim,)) if spec.has_delta_bias else None,
                              _meta((batch,)) if spec.gated else None, 0.5, window)
        backend.scan_decode(spec, inputs, config)
        return
    inputs = _scan_inputs(spec, shape)
    if spec.phase is Phase.FORWARD:
        backend.scan_forward(spec, inputs, config)
    else:
        forward = dataclasses.replace(spec, phase=Phase.FORWARD)
        dh_last = _meta((shape[0], shape[1], shape[3])) if spec.return_last_state else None
        backend.scan_backward(forward, inputs, _meta(inputs.u.shape, inputs.u.dtype), dh_last, config)


def capture(backend_name: str, spec: ScanSpec | GatherSpec, shape: tuple[int, ...], config: Mapping) -> list[Launch]:
    """The kernel launches the backend makes for ``spec`` at ``shape`` with ``config``, not run."""
    backend = backends.get(backend_name)
    launches: list[Launch] = []
    with _recording(backend_name, launches):
        _call(backend, spec, shape, config)
    return launches


# ---------------------------------------------------------------------------------------------
# Compile and read the resources


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
    occupancy: dict = field(default_factory=dict)
    mufu_ex2: int = 0  # static count in the SASS
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


def _compile_triton(launch: Launch, tgt: Target, workdir: Path) -> KernelReport:
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource
    from triton.compiler.compiler import make_backend
    from triton.runtime.jit import create_function_from_signature

    fn = launch.kernel
    gpu = GPUTarget("cuda", tgt.cc[0] * 10 + tgt.cc[1], 32)
    backend = make_backend(gpu)
    binder = create_function_from_signature(fn.signature, fn.params, backend)
    kwargs = dict(launch.kwargs)
    bound, specialization, options = binder(*launch.args, **kwargs)
    options, signature, constexprs, attrs = fn._pack_args(backend, kwargs, bound, specialization, options)
    compiled = triton.compile(ASTSource(fn, signature, constexprs, attrs), target=gpu, options=options.__dict__)
    cubin = workdir / f"{launch.name}.cubin"
    cubin.write_bytes(compiled.asm["cubin"])
    res = _resources(cubin)
    stack = res.get("STACK", 0) + res.get("LOCAL", 0)
    return KernelReport(launch.name, tgt.name, registers=res.get("REG", 0), stack=stack, spill=stack,
                        shared=max(compiled.metadata.shared, res.get("SHARED", 0)),
                        warps_per_block=compiled.metadata.num_warps, mufu_ex2=_sass_ex2(cubin))


def _numba_type(arg):
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

    signature = tuple(_numba_type(a) for a in launch.args)
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
                        mufu_ex2=_sass_ex2(cubin))


def compile_launch(launch: Launch, tgt: Target) -> KernelReport:
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
        report.occupancy = tgt.warps_per_sm(report.registers, report.shared, report.warps_per_block)
    return report


def verdict(family: str, report: KernelReport) -> str:
    """``ok``, or why the kernel is not acceptable on its target: error, spill, or too few warps."""
    if report.error:
        return "error"
    if report.spill:
        return f"spills {report.spill} B"
    floor = WARPS_FLOOR.get(family, 0)
    if report.occupancy.get("warps", 0) < floor:
        return f"{report.occupancy.get('warps', 0)} warps/SM < {floor}"
    return "ok"


def device_target() -> str | None:
    """The target of this machine's current GPU, if it is one :data:`TARGETS` knows."""
    if not torch.cuda.is_available():
        return None
    major, minor = torch.cuda.get_device_capability()
    name = f"sm_{major}{minor}"
    return name if name in TARGETS else None


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
