"""Which kernels ``scanforge compile`` builds, and building them in worker processes.

A job is one (backend, variant, phase, config) at one shape, compiled for every requested dtype, input layout
(:data:`scanforge.tuning.capture.LAYOUTS`: contiguous and generic strides) and target that the backend compiles
for (Numba-CUDA: NVIDIA only); a launch is captured once per (dtype, layout) and compiled for every target. Its rows
are plain dicts (the ``--json`` format). Workers are fresh processes with
triton compiled and numba's simulator off, whatever the parent runs with.
"""

from __future__ import annotations

import dataclasses
import multiprocessing
import os
import signal
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass

from .. import backends
from ..backends.base import Launch
from ..kernels.codegen import family
from ..kernels.ir import GatherSpec, Phase, ScanSpec
from ..kernels.variants import DECODE_VARIANTS, GATHER_VARIANTS, SCAN_VARIANTS, SSD_VARIANTS
from . import aot
from .capture import LAYOUTS, capture
from .cuda_tools import check_compiling_process, compile_environment
from .spaces import space_for
from .targets import GPU_BACKENDS, AMDTarget, Target, for_backend, target
from .worker import sigint_blocked

#: (op table, phases, default shape) per kind of kernel: the GPU default workload's typical shapes
#: (Mamba-1.4B width at 2K tokens; LLaVA-1.5's 576 visual tokens kept to 144; Mamba-2 2.7B: 80 heads of 64, N 128).
KINDS = {
    "selective_scan": (SCAN_VARIANTS, ("fwd", "bwd"), (8, 2048, 2048, 16)),
    "decode": (DECODE_VARIANTS, ("decode",), (8, 2048, 1, 16)),
    "topk_gather": (GATHER_VARIANTS, ("fwd", "bwd"), (16, 576, 1024, 144)),
    "ssd_scan": (SSD_VARIANTS, ("fwd", "bwd"), (8, 5120, 2048, 128)),
}


@dataclass(frozen=True)
class Job:
    backend: str
    variant: str
    base: ScanSpec | GatherSpec  # the variant's spec in the job's phase
    shape: tuple[int, ...]
    config: tuple  # sorted (param, value) pairs
    dtypes: tuple[str, ...]
    targets: tuple[str, ...]
    layouts: tuple[str, ...] = ("contiguous",)

    @property
    def phase(self) -> str:
        return self.base.phase.value

    def spec(self, dtype: str) -> ScanSpec | GatherSpec:
        return dataclasses.replace(self.base, dtype=dtype)


def check_config(backend: str, fam: str, config: Mapping, source: str, vendor: str = "nvidia",
                 dtype: str = "float32") -> dict:
    """``config`` merged onto the family default (of ``vendor``'s space, for ``dtype``), refusing parameters or
    values outside the space."""
    space = space_for(backend, fam, vendor=vendor)
    for name, value in config.items():
        if name not in space.params:
            raise ValueError(f"{source}: [{fam}] has no parameter {name!r} on {backend} "
                             f"(parameters: {sorted(space.params)})")
        if value not in space.params[name]:
            raise ValueError(f"{source}: [{fam}] {name} = {value!r} is not one of {list(space.params[name])}")
    return {**space.default_for(dtype), **config}


def plan(backends: Iterable[str], targets: Iterable[str], *, kinds: Iterable[str] | None = None,
         variants: Iterable[str] | None = None, phases: Iterable[str] | None = None,
         dtypes: Iterable[str] = ("float32", "bfloat16"), shapes: Iterable[tuple] | None = None,
         configs: Mapping[str, Mapping] | None = None, space: bool = False,
         config_source: str = "--config", layouts: Iterable[str] = ("contiguous",)) -> list[Job]:
    """The jobs for the selection (None: everything); ``space`` compiles every config of each family's space."""
    targets = tuple(target(t).name for t in targets)
    layouts = tuple(layouts)
    for layout in layouts:
        if layout not in LAYOUTS:
            raise ValueError(f"--layout: expected one of {list(LAYOUTS)}, got {layout!r}")
    for b in backends:
        if b not in GPU_BACKENDS:
            raise ValueError(f"--backend: expected one of {list(GPU_BACKENDS)}, got {b!r}")
    known = {v for table, _, _ in KINDS.values() for v in table}
    unknown = sorted(set(variants or ()) - known)
    if unknown:
        raise ValueError(f"--variant: unknown {unknown}; known: {sorted(known)}")
    jobs = []
    for backend in backends:
        backend_targets = for_backend(backend, targets)
        for vendor in dict.fromkeys(target(t).vendor for t in backend_targets):  # a space per vendor
            vendor_targets = tuple(t for t in backend_targets if target(t).vendor == vendor)
            for kind, (_, _, default_shape) in KINDS.items():
                if kinds and kind not in kinds:
                    continue
                for shape in [tuple(s) for s in shapes] if shapes else [default_shape]:
                    if kind == "decode":  # one token
                        shape = (shape[0], shape[1], 1, shape[3])
                    jobs += _kind_jobs(backend, kind, shape, vendor_targets, variants, phases, tuple(dtypes),
                                       configs, space, config_source, vendor)
    return [dataclasses.replace(job, layouts=layouts) for job in jobs]


def _kind_jobs(backend, kind, shape, targets, variants, phases, dtypes, configs, space, config_source,
               vendor) -> list[Job]:
    table, kind_phases, _ = KINDS[kind]
    jobs = []
    for variant in table:
        if variants and variant not in variants:
            continue
        for phase in kind_phases:
            if phases and phase not in phases:
                continue
            base = dataclasses.replace(table[variant], phase=Phase(phase))
            if backends.get(backend).kind_missing(base):  # e.g. Numba-CUDA has no per-head decay scan
                continue
            fam = family(base)
            if space:
                jobs += [Job(backend, variant, base, shape, tuple(sorted(c.items())), dtypes, targets)
                         for c in space_for(backend, fam, vendor=vendor).grid(shape)]
                continue
            by_config: dict[tuple, list[str]] = {}  # dtypes whose defaults agree share a job
            for dtype in dtypes:
                c = check_config(backend, fam, (configs or {}).get(fam, {}), config_source, vendor, dtype)
                by_config.setdefault(tuple(sorted(c.items())), []).append(dtype)
            jobs += [Job(backend, variant, base, shape, c, tuple(ds), targets) for c, ds in by_config.items()]
    return jobs


_numba_memo: dict[tuple, aot.KernelReport] = {}


def _compile(launch: Launch, tgt: Target | AMDTarget) -> aot.KernelReport:
    """Compile a launch, once per (kernel, argument types, target) for Numba (its kernels take
    float32 whatever the op's dtype); Triton keeps its own on-disk cache."""
    if launch.backend != "numba_cuda":
        return aot.compile_launch(launch, tgt)
    key = (launch.kernel.py_func.__module__, launch.name, tuple(map(str, map(aot.numba_type, launch.args))),
           launch.threads, tgt.name)
    if key not in _numba_memo:
        _numba_memo[key] = aot.compile_launch(launch, tgt)
    return dataclasses.replace(_numba_memo[key])


def run_job(job: Job) -> list[dict]:
    """Compile a job: one row per (dtype, kernel launch, target)."""
    check_compiling_process()
    config = dict(job.config)
    rows = []
    for dtype in job.dtypes:
        for layout in job.layouts:
            rows += _layout_rows(job, dtype, layout, config)
    return rows


def _layout_rows(job: Job, dtype: str, layout: str, config: dict) -> list[dict]:
    spec = job.spec(dtype)
    base = dict(backend=job.backend, variant=job.variant, phase=job.phase, dtype=dtype, layout=layout,
                shape="x".join(map(str, job.shape)), config=config, family=family(spec))
    try:
        launches = capture(job.backend, spec, job.shape, config, layout)
    except NotImplementedError as e:
        return [{**base, "kernel": "-", "target": "-", "error": None, "verdict": f"not implemented: {e}"}]
    except Exception as e:  # a launcher that refuses the config: a row, not a crash
        return [{**base, "kernel": "-", "target": t, "error": f"{type(e).__name__}: {e}", "verdict": "error"}
                for t in job.targets]
    rows = []
    for launch in launches:
        for name in job.targets:
            report = _compile(launch, target(name))
            rows.append({**base, **report.as_dict(), "verdict": aot.verdict(family(spec), report)})
    return rows


def _ignore_interrupt() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C stops the parent, which cancels the jobs left


def run(jobs: list[Job], workers: int | None = None, on_rows: Callable[[list[dict]], None] | None = None) -> list[dict]:
    """Run jobs in ``workers`` fresh processes (default: the CPU count), rows in plan order. Ctrl-C cancels
    the jobs not started (the running ones end quietly)."""
    workers = max(1, min(workers or os.cpu_count() or 1, len(jobs) or 1))
    saved = {k: os.environ.get(k) for k in ("TRITON_INTERPRET", "NUMBA_ENABLE_CUDASIM", "TRITON_DEFAULT_FP_FUSION")}
    os.environ.update({k: v for k, v in compile_environment().items() if k in saved})
    results: dict[int, list[dict]] = {}
    try:
        pool = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"),
                                   initializer=_ignore_interrupt)
        try:
            with sigint_blocked():  # the workers start here
                futures = {pool.submit(run_job, job): i for i, job in enumerate(jobs)}
            for future in as_completed(futures):
                results[futures[future]] = future.result()
                if on_rows:
                    on_rows(results[futures[future]])
        except BaseException:
            pool.shutdown(wait=False, cancel_futures=True)
            raise
        pool.shutdown()
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    return [row for i in range(len(jobs)) for row in results[i]]
