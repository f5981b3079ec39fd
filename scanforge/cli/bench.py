"""``scanforge bench``: each workload op timed with its tuned config, the default, and the reference."""

from __future__ import annotations

import math

from rich.console import Console
from rich.table import Table

from .. import backends
from ..tuning.configs import config_for, default_config
from ..tuning.trials import Task, TrialRunner
from .common import machine_backend
from .tune import build_tasks


def run(args) -> int:
    console = Console()
    backend = machine_backend(args.backend)
    tasks, _ = build_tasks(backend, args.op, args.variant, args.shapes, args.dtype, args.phase)
    runner = TrialRunner()
    table = Table(title=f"scanforge bench on {backend} ({backends.get(backend).device_name()}): median ms",
                  title_justify="left", caption="gain: default / tuned; vs ref: reference / tuned",
                  caption_justify="left")
    table.add_column("study", overflow="fold")
    for column in ("tuned", "default", "reference", "gain", "vs ref"):
        table.add_column(column, justify="right", no_wrap=True)
    with console.status("timing..."):
        for task in tasks:
            tuned, default = config_for(backend, task.spec, task.shape), default_config(backend, task.spec)
            timed = runner.compare(task, tuned, default, rounds=3)
            t_tuned, t_default = timed.seconds_a, timed.seconds_b
            ref = runner.run(Task("reference", task.spec, task.shape, task.label), {}).seconds or math.nan
            table.add_row(f"{task.family} {task.label} {task.spec.dtype} {'x'.join(map(str, task.shape))}",
                          f"{t_tuned * 1e3:.3f}", f"{t_default * 1e3:.3f}", f"{ref * 1e3:.3f}",
                          f"{t_default / t_tuned:.2f}x", f"{ref / t_tuned:.1f}x")
    console.print(table)
    return 0
