"""``scanforge tune``: build the tasks of a workload, tune each with a progress bar, print a summary."""

from __future__ import annotations

import dataclasses
import math
import signal
import sys
import threading
import time
import warnings

import optuna
import torch
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from .. import backends
from ..kernels.variants import DEFAULT_WORKLOAD, VARIANTS_OF, variant_spec
from ..tuning import compile_plan, targets
from ..tuning.cuda_tools import check_target_tools
from ..tuning.plots import plot_study
from ..tuning.spaces import config_text, space_for
from ..tuning.storage import redact
from ..tuning.targets import GPU_BACKENDS
from ..tuning.timing import NOISY
from ..tuning.trials import Interrupted, Task, TrialRunner
from ..tuning.tuner import Outcome, open_storage, tune
from ..tuning.worker import RunnerPool, StopEvent, SubprocessRunner, threads_per_worker
from .common import machine_backend

#: The exit code of a run stopped by Ctrl-C (128 + SIGINT), as a shell reports it.
INTERRUPTED = 130


def parse_shape(text: str) -> tuple[int, ...]:
    try:
        shape = tuple(int(v) for v in text.lower().split("x"))
    except ValueError:
        shape = ()
    if len(shape) != 4:
        raise ValueError(f"--shapes: expected BATCHxDIMxLxN (scan) or BATCHxTxDxK (gather), e.g. 2x512x1024x16, "
                         f"got {text!r}")
    if min(shape) < 1:
        raise ValueError(f"--shapes: every size must be >= 1, got {text!r}")
    return shape


def tuning_backend(name: str | None) -> str:
    """The backend to tune: the one named, else the best kernel backend this machine runs natively."""
    return machine_backend(name)


def build_tasks(backend: str, ops: list[str] | None, variants: list[str] | None, shapes: list[str] | None,
                dtypes: list[str] | None, phases: list[str] | None,
                for_gpu: bool = False) -> tuple[list[Task], list[str]]:
    """The workload's tasks, filtered by the CLI's flags; also the lines saying what was skipped.
    ``for_gpu`` plans the GPU workload on any machine (``--dry-run --target``)."""
    gpu = for_gpu or backends.get(backend).runs_on_gpu()
    workload = DEFAULT_WORKLOAD["gpu" if gpu else "cpu"]
    if variants:
        table = {v: op for op, named in VARIANTS_OF.items() for v in named}
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


def configs_text(o: Outcome, sep: str = "\n") -> str:
    """What the study measured: configs measured (failed among them), pruned, re-measured, interrupted."""
    parts = [f"{o.trials} measured" + (f" ({o.failed} failed)" if o.failed else "")]
    if o.measured_now != o.trials:
        parts.append(f"{o.measured_now} this run")
    for count, word in ((o.pruned, "pruned"), (o.remeasured, "re-measured"), (o.interrupted, "interrupted"),
                        (o.noisy, "noisy")):
        if count:
            parts.append(f"{count} {word}")
    return sep.join(parts)


def result_text(o: Outcome) -> str:
    if o.accepted:
        return f"cached: {config_text(o.config)}"
    return f"not cached: {o.note or 'no winner'}"


def summary_table(outcomes: list[Outcome]) -> Table:
    """One row per study; every cell wraps to the terminal's width and no reason is cut."""
    table = Table(title="scanforge tune: tuned vs default config (median ms, re-timed alternately)",
                  title_justify="left", show_lines=True,
                  caption="configs: measured ones count against --trials; re-measured: measured again after an "
                          "interruption; interrupted: stopped from outside, not a measurement; noisy: timing repeats "
                          f"disagreed by more than {NOISY:.0%}; gain: default / tuned", caption_justify="left")
    table.add_column("study", overflow="fold", ratio=2)
    table.add_column("configs", overflow="fold", ratio=2)
    for column in ("default", "tuned", "gain"):
        table.add_column(column, justify="right", no_wrap=True)
    table.add_column("result", overflow="fold", ratio=4)
    for o in outcomes:
        t = o.task
        speed = "-" if math.isnan(o.speedup) else f"{o.speedup:.2f}x"
        table.add_row(f"{t.family} {t.label} {t.spec.dtype} {'x'.join(map(str, t.shape))}", configs_text(o),
                      _ms(o.default_seconds), _ms(o.seconds), speed, result_text(o))
    return table


def failure_lines(outcomes: list[Outcome]) -> list[str]:
    """Why configs failed, per study (every reason in full)."""
    lines = []
    for o in outcomes:
        for reason, count in o.failures.items():
            lines.append(f"{o.task.family} {o.task.label}: {count} config(s) failed: {reason}")
    return lines


def geomean_speedup(outcomes: list[Outcome]) -> float:
    values = [o.speedup for o in outcomes if not math.isnan(o.speedup)]
    return math.exp(sum(math.log(v) for v in values) / len(values)) if values else math.nan


def closing_line(outcomes: list[Outcome], seconds: float) -> str:
    measured = sum(o.measured_now for o in outcomes)
    cached = [o for o in outcomes if o.accepted]
    line = (f"{len(outcomes)} studies in {seconds:.0f} s: {measured} configs measured this run, "
            f"{len(cached)} tuned config(s) cached")
    if cached:
        gm = geomean_speedup(cached)
        return line + f" (geomean speed-up over the defaults {gm:.2f}x); the next calls use them " \
                      f"(`scanforge cache show`)."
    return line + "; nothing was cached, the defaults stay in use (reasons above)."


def dry_run(args, console: Console) -> int:
    """``--dry-run --target T``: compile every config of each study's space for T, list the feasible ones."""
    if not args.target:
        raise ValueError("--dry-run: name the GPU to plan for with --target (e.g. --target sm_90)")
    target = targets.target(args.target).name
    backend = args.backend or "triton"
    if backend not in GPU_BACKENDS:
        raise ValueError(f"--dry-run --target: --backend must be one of {list(GPU_BACKENDS)}, got {backend!r}")
    if backend not in targets.target(target).backends:
        raise ValueError(f"--dry-run --target {target}: {backend} kernels do not compile for it "
                         f"(backends for {target}: {', '.join(targets.target(target).backends)})")
    check_target_tools([target])
    tasks, _ = build_tasks(backend, args.op, args.variant, args.shapes, args.dtype, args.phase, for_gpu=True)
    jobs = [compile_plan.Job(backend, t.label, dataclasses.replace(t.spec, dtype="float32"), t.shape,
                             tuple(sorted(c.items())), (t.spec.dtype,), (target,))
            for t in tasks for c in space_for(backend, t.family, vendor=targets.target(target).vendor).grid(t.shape)]
    with Progress(console=console, transient=True) as progress:
        bar = progress.add_task(f"compiling {len(jobs)} configs for {target}", total=len(jobs))
        rows = compile_plan.run(jobs, on_rows=lambda _: progress.advance(bar))
    verdicts: dict[tuple, list[str]] = {}
    for r in rows:
        key = (r["family"], r["variant"], r["dtype"], r["shape"], config_text(r["config"]))
        verdicts.setdefault(key, []).append(r["verdict"])
    table = Table(title=f"scanforge tune --dry-run: configs that compile for {target} without spilling and "
                        f"reach the {targets.target(target).unit} floor", title_justify="left")
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


class _Stop:
    """Ctrl-C or SIGTERM during ``scanforge tune``: the first signal stops the run (the running trial is
    marked interrupted, its process killed); a second one while stopping is ignored."""

    def __init__(self):
        self.event = StopEvent()
        self.previous: dict = {}

    def __enter__(self) -> _Stop:
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self.previous[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum, frame) -> None:
        if self.event.is_set():
            return
        name = "Ctrl-C" if signum == signal.SIGINT else signal.Signals(signum).name
        self.event.stop(f"stopped by {name}")
        raise KeyboardInterrupt(self.event.reason)

    def __exit__(self, *exc) -> None:
        for sig, handler in self.previous.items():
            signal.signal(sig, handler)


def run(args) -> int:
    console = Console()
    optuna.logging.set_verbosity(optuna.logging.ERROR)  # failures are in our table
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    if args.dry_run or args.target:
        return dry_run(args, console)
    backend = tuning_backend(args.backend)
    tasks, skipped = build_tasks(backend, args.op, args.variant, args.shapes, args.dtype, args.phase)
    storage = open_storage(args.storage)  # before anything is printed: a bad URL is one line
    device = backends.get(backend).device_name()
    threads = threads_per_worker(args.workers) if not args.in_process else None
    console.print(f"[bold]scanforge tune[/bold]: {len(tasks)} studies on {backend} ({device}); "
                  f"sampler {args.sampler}, seed {args.seed}, up to {args.trials} measured configs each"
                  + (f", {args.workers} workers of {threads} thread(s)" if threads else "")
                  + f"; storage {redact(args.storage) if args.storage else 'SQLite in the cache dir'}"
                  + " (inspect with optuna-dashboard)")
    for line in skipped:
        console.print(f"[dim]skipped {escape(line)}[/dim]")
    outcomes, start = [], time.perf_counter()
    with _Stop() as stop:
        if args.in_process:
            runner = TrialRunner(seed=args.seed)
        else:
            runner = RunnerPool([SubprocessRunner(args.trial_timeout, args.seed, threads, stop.event)
                                 for _ in range(args.workers)])
        try:
            _tune_all(args, tasks, runner, storage, console, outcomes)
        except (KeyboardInterrupt, Interrupted) as e:
            stop.event.stop(stop.event.reason)
            done = f"; {len(outcomes)} of {len(tasks)} studies finished" if outcomes else ""
            print(f"scanforge tune: {e or 'stopped'}; finished trials are kept and a trial that was running is "
                  f"recorded as interrupted, to be measured again first{done}; to resume, run the same command "
                  f"again", file=sys.stderr)
            return INTERRUPTED
        finally:
            runner.close()
    console.print(summary_table(outcomes))
    for line in failure_lines(outcomes):
        console.print(escape(line), highlight=False)
    console.print(closing_line(outcomes, time.perf_counter() - start), highlight=False)
    return 0


def _tune_all(args, tasks: list[Task], runner, storage, console: Console, outcomes: list[Outcome]) -> None:
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
               TextColumn("{task.fields[status]}"))
    with Progress(*columns, console=console) as progress:
        for task in tasks:
            name = f"{task.family} {task.label} {task.spec.dtype} {'x'.join(map(str, task.shape))}"
            bar = progress.add_task(name, total=None, status="")
            state = {"best": math.inf, "failed": 0}

            def on_plan(total, bar=bar):
                progress.update(bar, total=total, status="nothing left to measure" if total == 0 else "")

            def on_trial(number, config, result, bar=bar, state=state):
                if result.ok:
                    state["best"] = min(state["best"], result.seconds)
                else:
                    state["failed"] += 1
                best = "-" if state["best"] == math.inf else f"{state['best'] * 1e3:.3f} ms"
                progress.update(bar, advance=1, status=f"best {best}, failed {state['failed']}")

            outcome = tune(task, runner, trials=args.trials, budget_seconds=args.budget_seconds,
                           sampler=args.sampler, seed=args.seed, storage=storage, on_trial=on_trial,
                           on_plan=on_plan)
            progress.update(bar, status=f"{configs_text(outcome, ', ')}; {outcome.stopped}")
            outcomes.append(outcome)
            if args.plot:
                path = plot_study(outcome, storage, args.plot)
                console.print(f"[dim]plot: {path}[/dim]")
