"""``scanforge tune``: build the tasks of a workload, tune each with a progress bar, print a summary."""

from __future__ import annotations

import dataclasses
import math
import time
import warnings

import optuna
import torch
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from .. import backends
from ..kernels.variants import DEFAULT_WORKLOAD, GATHER_VARIANTS, SCAN_VARIANTS, variant_spec
from ..tuning import aot, compile_plan
from ..tuning.plots import plot_study
from ..tuning.spaces import space_for
from ..tuning.storage import redact
from ..tuning.trials import Task, TrialRunner
from ..tuning.tuner import Outcome, open_storage, tune
from ..tuning.worker import RunnerPool, SubprocessRunner


def parse_shape(text: str) -> tuple[int, ...]:
    try:
        shape = tuple(int(v) for v in text.lower().split("x"))
    except ValueError:
        shape = ()
    if len(shape) != 4 or min(shape) < 1:
        raise ValueError(f"--shapes: expected BATCHxDIMxLxN (scan) or BATCHxTxDxK (gather), e.g. 2x512x1024x16, "
                         f"got {text!r}")
    return shape


def tuning_backend(name: str | None) -> str:
    """The backend to tune: the one named, else the best kernel backend this machine runs natively."""
    if name:
        backend = backends.get(name)
        if backend.unavailable_reason():
            raise ValueError(f"--backend {name}: {backend.unavailable_reason()}")
        return name
    for candidate in ("triton", "numba_cuda", "numba_cpu"):
        b = backends.get(candidate) if candidate in backends.names() else None
        if b and not b.unavailable_reason() and (b.runs_on_gpu() or candidate == "numba_cpu"):
            return candidate
    raise ValueError("no kernel backend is installed (numba or triton)")


def build_tasks(backend: str, ops: list[str] | None, variants: list[str] | None, shapes: list[str] | None,
                dtypes: list[str] | None, phases: list[str] | None,
                for_gpu: bool = False) -> tuple[list[Task], list[str]]:
    """The workload's tasks, filtered by the CLI's flags; also the lines saying what was skipped.
    ``for_gpu`` plans the GPU workload on any machine (``--dry-run --target``)."""
    gpu = for_gpu or backends.get(backend).runs_on_gpu()
    workload = DEFAULT_WORKLOAD["gpu" if gpu else "cpu"]
    if variants:
        table = {**{v: "selective_scan" for v in SCAN_VARIANTS}, **{v: "topk_gather" for v in GATHER_VARIANTS}}
        unknown = [v for v in variants if v not in table]
        if unknown:
            raise ValueError(f"--variant: unknown {unknown}; known: {sorted(table)}")
        default_shapes = {op: s for op, _, _, s in workload}
        workload = [(table[v], v, ("fwd", "bwd"), default_shapes.get(table[v], [])) for v in variants]
    tasks, skipped = [], []
    for op, variant, op_phases, op_shapes in workload:
        if ops and op not in ops:
            continue
        for phase in phases or op_phases:
            for shape in [parse_shape(s) for s in shapes] if shapes else op_shapes:
                for dtype in dtypes or (["float32", "bfloat16"] if gpu else ["float32"]):
                    spec = variant_spec(op, variant, phase, dtype)
                    device = torch.device("cuda") if for_gpu else Task(backend, spec, shape).device
                    reason = None if for_gpu else backends.get(backend).unsupported_reason(spec, device)
                    if reason:
                        skipped.append(f"{op} {variant} {phase} {dtype}: {reason}")
                        continue
                    tasks.append(Task(backend, spec, shape, variant))
    return tasks, skipped


def _ms(seconds: float | None) -> str:
    return "-" if seconds is None or seconds != seconds else f"{seconds * 1e3:.3f}"


def summary_table(outcomes: list[Outcome]) -> Table:
    table = Table(title="scanforge tune: tuned vs default config (median kernel time, re-timed alternately)")
    for column in ("family", "variant", "dtype", "shape", "trials ok/fail/pruned", "default ms", "tuned ms",
                   "speed-up", "config", "note"):
        table.add_column(column, justify="right" if column.endswith(("ms", "up")) else "left")
    for o in outcomes:
        t = o.task
        speed = "-" if math.isnan(o.speedup) else f"{o.speedup:.2f}x"
        config = " ".join(f"{k}={v}" for k, v in o.config.items())
        table.add_row(t.family, t.label, t.spec.dtype, "x".join(map(str, t.shape)),
                      f"{o.complete}/{o.failed}/{o.pruned}", _ms(o.default_seconds), _ms(o.seconds), speed,
                      config + ("" if o.accepted else " (default)"), o.note[:60])
    return table


def geomean_speedup(outcomes: list[Outcome]) -> float:
    values = [o.speedup for o in outcomes if not math.isnan(o.speedup)]
    return math.exp(sum(math.log(v) for v in values) / len(values)) if values else math.nan


def dry_run(args, console: Console) -> int:
    """``--dry-run --target T``: compile every config of each study's space for T, list the feasible ones."""
    if not args.target:
        raise ValueError("--dry-run: name the GPU to plan for with --target (e.g. --target sm_90)")
    target = aot.target(args.target).name
    backend = args.backend or "triton"
    if backend not in aot.GPU_BACKENDS:
        raise ValueError(f"--dry-run --target: --backend must be one of {list(aot.GPU_BACKENDS)}, got {backend!r}")
    tasks, _ = build_tasks(backend, args.op, args.variant, args.shapes, args.dtype, args.phase, for_gpu=True)
    jobs = [compile_plan.Job(backend, t.label, dataclasses.replace(t.spec, dtype="float32"), t.shape,
                             tuple(sorted(c.items())), (t.spec.dtype,), (target,))
            for t in tasks for c in space_for(backend, t.family).grid(t.shape)]
    with Progress(console=console, transient=True) as progress:
        bar = progress.add_task(f"compiling {len(jobs)} configs for {target}", total=len(jobs))
        rows = compile_plan.run(jobs, on_rows=lambda _: progress.advance(bar))
    verdicts: dict[tuple, list[str]] = {}
    for r in rows:
        key = (r["family"], r["variant"], r["dtype"], r["shape"], compile_plan.config_text(r["config"]))
        verdicts.setdefault(key, []).append(r["verdict"])
    table = Table(title=f"scanforge tune --dry-run: configs that compile for {target} without spilling and "
                        f"reach the warps floor", title_justify="left")
    for column in ("family", "variant", "dtype", "shape", "feasible", "feasible configs"):
        table.add_column(column, overflow="fold")
    buckets: dict[tuple, list[str]] = {}
    for (fam, variant, dtype, shape, config), found in verdicts.items():
        ok = buckets.setdefault((fam, variant, dtype, shape), [])
        if all(v == "ok" for v in found):
            ok.append(config)
    for (fam, variant, dtype, shape), ok in buckets.items():
        total = sum(1 for k in verdicts if k[:4] == (fam, variant, dtype, shape))
        table.add_row(fam, variant, dtype, shape, f"{len(ok)}/{total}", "; ".join(ok))
    console.print(table)
    return 0


def run(args) -> int:
    console = Console(width=max(Console().width, 160))
    optuna.logging.set_verbosity(optuna.logging.ERROR)  # failures are in our table
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    if args.dry_run or args.target:
        return dry_run(args, console)
    backend = tuning_backend(args.backend)
    tasks, skipped = build_tasks(backend, args.op, args.variant, args.shapes, args.dtype, args.phase)
    storage = open_storage(args.storage)  # before anything is printed: a bad URL is one line of error
    device = backends.get(backend).device_name()
    where = redact(args.storage) if args.storage else "SQLite in the cache dir"
    console.print(f"[bold]scanforge tune[/bold]: {len(tasks)} studies on {backend} ({device}); "
                  f"sampler {args.sampler}, seed {args.seed}, up to {args.trials} measured configs each; storage "
                  f"{where} (inspect with optuna-dashboard)")
    for line in skipped:
        console.print(f"[dim]skipped {line}[/dim]")
    if args.in_process:
        runner = TrialRunner(seed=args.seed)
    else:
        runner = RunnerPool([SubprocessRunner(args.trial_timeout, args.seed) for _ in range(args.workers)])
    outcomes, start = [], time.perf_counter()
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
               TextColumn("best {task.fields[best]}  failed {task.fields[failed]}"))
    try:
        with Progress(*columns, console=console) as progress:
            for task in tasks:
                bar = progress.add_task(f"{task.family} {task.label} {task.spec.dtype} "
                                        f"{'x'.join(map(str, task.shape))}", total=args.trials, best="-", failed=0)
                state = {"best": math.inf, "failed": 0}

                def on_trial(number, config, result, bar=bar, state=state):
                    if result.ok:
                        state["best"] = min(state["best"], result.seconds)
                    else:
                        state["failed"] += 1
                    progress.update(bar, advance=1, best=f"{state['best'] * 1e3:.3f} ms", failed=state["failed"])

                outcome = tune(task, runner, trials=args.trials, budget_seconds=args.budget_seconds,
                               sampler=args.sampler, seed=args.seed, storage=storage, on_trial=on_trial)
                progress.update(bar, completed=args.trials)
                outcomes.append(outcome)
                if args.plot:
                    path = plot_study(outcome, storage, args.plot)
                    console.print(f"[dim]plot: {path}[/dim]")
    finally:
        runner.close()
    console.print(summary_table(outcomes))
    gm = geomean_speedup(outcomes)
    console.print(f"{len(outcomes)} studies in {time.perf_counter() - start:.0f} s; geomean speed-up over the "
                  f"defaults {gm:.2f}x; tuned configs are used from now on (`scanforge cache show`).")
    return 0
