"""What every experiment shares: its run context, seeding, a small training loop, timing, and the report it
writes (table on stdout + ``table.csv`` + ``results.json`` + ``config.json`` with the command and machine, PNGs)."""

from __future__ import annotations

import csv
import json
import os
import platform
import random
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, is_dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

__all__ = ["Context", "Report", "seed_everything", "machine_info", "median_ms", "train", "progress", "accuracy",
           "summarise", "mean_curve", "errorbar", "curve_band"]


@dataclass
class Context:
    """How an experiment was asked to run: ``quick`` sizes it for CI, ``backend`` is passed to every op."""

    name: str
    quick: bool
    seed: int
    out: Path
    device: torch.device
    backend: str | None = None
    command: str = ""  # the equivalent ``scanforge experiment ...`` command line
    seeds: tuple[int, ...] = ()  # every seed to run (``--seeds N``: seed, seed+1, ...); empty: just ``seed``

    def __post_init__(self) -> None:
        if not self.seeds:
            self.seeds = (self.seed,)


def seed_everything(seed: int) -> None:
    """Python, NumPy and torch (CPU and CUDA) from one seed; every experiment prints it."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def machine_info(device: torch.device) -> dict[str, Any]:
    info: dict[str, Any] = {
        "platform": platform.platform(), "python": platform.python_version(), "torch": torch.__version__,
        "cpu": platform.processor() or platform.machine(), "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(), "device": str(device),
        "numba_threads": os.environ.get("NUMBA_NUM_THREADS", "default"),
    }
    try:
        with open("/proc/cpuinfo") as f:
            names = [line.split(":", 1)[1].strip() for line in f if line.startswith("model name")]
        if names:
            info["cpu"] = names[0]
    except OSError:
        pass
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    try:
        from importlib.metadata import version

        info["scanforge"] = version("scanforge")
    except Exception:  # noqa: BLE001 - an uninstalled checkout has no metadata
        info["scanforge"] = "unknown"
    return info


def _plain(value: Any) -> Any:
    """JSON-able copy of configs and results (dataclasses, paths, tensors, numpy scalars)."""
    if is_dataclass(value) and not isinstance(value, type):
        return _plain(asdict(value))
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, Path | torch.device):
        return str(value)
    if isinstance(value, Tensor):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    return value


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


class Report:
    """Collects one experiment's outputs and writes them under ``ctx.out``."""

    def __init__(self, ctx: Context, config: Any, keys: Sequence[str] = (), fixed: Sequence[str] = ("chance",)) -> None:
        self.ctx, self.config, self.keys, self.fixed = ctx, config, tuple(keys), tuple(fixed)
        self.rows: list[dict[str, Any]] = []  # one per (keys, seed); the table shows their mean +- sd over seeds
        self.extra: dict[str, Any] = {}
        self.notes: list[str] = []
        self.plots: list[str] = []
        self.started, self.cpu_started = time.perf_counter(), time.process_time()
        ctx.out.mkdir(parents=True, exist_ok=True)
        print(f"[{ctx.name}] seed={ctx.seed} seeds={list(ctx.seeds)} quick={ctx.quick} device={ctx.device} "
              f"backend={ctx.backend or 'auto'}"
              f" -> {ctx.out}", flush=True)

    def note(self, text: str) -> None:
        """A sentence printed now and kept in results.json (data provenance, reductions, caveats)."""
        self.notes.append(text)
        print(f"[{self.ctx.name}] {text}", flush=True)

    def row(self, **values: Any) -> None:
        """One seed's measurements: ``seed=`` and the ``keys`` columns say which row of the table it joins."""
        self.rows.append(values)

    def summary(self) -> list[dict[str, Any]]:
        """The table: the rows grouped by ``keys``, measurements as mean, ``_sd`` and ``_seeds``."""
        return summarise(self.rows, self.keys, self.fixed)

    def plot(self, filename: str, draw: Callable[[Any], None], *, title: str, xlabel: str, ylabel: str) -> Path:
        """One PNG: ``draw(ax)`` fills the axes (headless Agg backend)."""
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(6.4, 4.2))
        draw(ax)
        ax.set_title(title, fontsize=10)
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8)
        fig.tight_layout()
        path = self.ctx.out / filename
        fig.savefig(path, dpi=110)
        plt.close(fig)
        self.plots.append(filename)
        return path

    def finish(self) -> dict[str, Any]:
        """Print the table; write table.csv, results.json and config.json."""
        from rich.console import Console
        from rich.table import Table

        rows = self.summary()
        columns: list[str] = []
        for r in rows:
            columns += [c for c in r if c not in columns and not c.endswith(("_sd", "_seeds"))]
        n = len(self.ctx.seeds)
        table = Table(title=f"scanforge experiment {self.ctx.name}" + (" (quick)" if self.ctx.quick else "")
                      + (f": mean ± sd over {n} seeds" if n > 1 else ""))
        for c in columns:
            table.add_column(c, justify="right")
        for r in rows:
            table.add_row(*(_fmt(r.get(c, "")) + (f" ± {_fmt(r[c + '_sd'])}" if n > 1 and c + "_sd" in r else "")
                            for c in columns))
        Console(width=200).print(table)
        csv_columns = [c for col in columns for c in (col, col + "_sd") if c == col or any(c in r for r in rows)]
        with open(self.ctx.out / "table.csv", "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=csv_columns, extrasaction="ignore")
            writer.writeheader()
            writer.writerows(_plain(rows))
        seconds = time.perf_counter() - self.started
        cpu_seconds = time.process_time() - self.cpu_started
        results = {"experiment": self.ctx.name, "quick": self.ctx.quick, "seed": self.ctx.seed,
                   "seeds": list(self.ctx.seeds), "command": self.ctx.command, "rows": rows, "seed_rows": self.rows,
                   "notes": self.notes, "plots": self.plots, "seconds": round(seconds, 1),
                   "cpu_seconds": round(cpu_seconds, 1), "load_average": os.getloadavg(), **self.extra}
        (self.ctx.out / "results.json").write_text(json.dumps(_plain(results), indent=1) + "\n")
        config = {"experiment": self.ctx.name, "command": self.ctx.command, "argv": sys.argv, "seed": self.ctx.seed,
                  "seeds": list(self.ctx.seeds),
                  "quick": self.ctx.quick, "backend": self.ctx.backend, "config": self.config,
                  "machine": machine_info(self.ctx.device), "seconds": round(seconds, 1),
                  "cpu_seconds": round(cpu_seconds, 1), "load_average": os.getloadavg(),
                  "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
        (self.ctx.out / "config.json").write_text(json.dumps(_plain(config), indent=1) + "\n")
        print(f"[{self.ctx.name}] wrote table.csv, results.json, config.json, {', '.join(self.plots) or 'no plots'}"
              f" to {self.ctx.out} in {seconds:.0f} s "
              f"({cpu_seconds:.0f} s of CPU time)", flush=True)
        return results


def progress(description: str, total: int):
    """A transient rich progress bar (use as a context manager; ``advance(loss=...)`` per step): steps done,
    the last loss, elapsed time and the time left at the current pace."""
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    class _Bar:
        def __enter__(self):
            self.progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                     TextColumn("loss {task.fields[loss]}"), TimeElapsedColumn(),
                                     TextColumn("eta"), TimeRemainingColumn(), transient=True)
            self.progress.__enter__()
            self.task = self.progress.add_task(description, total=total, loss="-")
            return self

        def advance(self, n: int = 1, loss: float | None = None) -> None:
            fields = {} if loss is None else {"loss": f"{loss:.4f}"}
            self.progress.update(self.task, advance=n, **fields)

        def __exit__(self, *exc):
            return self.progress.__exit__(*exc)

    return _Bar()


def accuracy(logits: Tensor, target: Tensor) -> float:
    return float((logits.argmax(-1) == target).float().mean())


def train(model: nn.Module, batches: Iterable[tuple], loss_fn: Callable[..., Tensor], *, lr: float,
          steps: int, label: str, evaluate: Callable[[], float] | None = None, eval_every: int = 0,
          weight_decay: float = 0.0, clip: float = 1.0) -> list[tuple[int, float]]:
    """AdamW with a cosine schedule over ``steps`` batches; ``evaluate()`` every ``eval_every`` steps and at
    the end. Returns the curve ``[(step, metric), ...]``."""
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 0.5 * (1 + np.cos(np.pi * min(s, steps) / steps)))
    curve: list[tuple[int, float]] = []
    it = iter(batches)
    with progress(label, steps) as bar:
        for step in range(1, steps + 1):
            model.train()
            loss = loss_fn(*next(it))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if clip:
                nn.utils.clip_grad_norm_(model.parameters(), clip)
            opt.step()
            sched.step()
            bar.advance(loss=loss.item())
            if evaluate is not None and ((eval_every and step % eval_every == 0) or step == steps):
                model.eval()
                with torch.no_grad():
                    curve.append((step, evaluate()))
                    bar.progress.console.print(f"  {label}: step {step}/{steps} loss {loss.item():.4f} "
                                               f"eval {curve[-1][1]:.4f}", highlight=False)
    return curve


def median_ms(fn: Callable[[], Any], *, repeats: int = 7, warmup: int = 2, device: torch.device | None = None) -> float:
    """Median wall time of ``fn()`` in milliseconds (CUDA synchronised when on a GPU)."""
    sync = torch.cuda.synchronize if device is not None and device.type == "cuda" else (lambda: None)
    for _ in range(warmup):
        fn()
    sync()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        sync()
        times.append((time.perf_counter() - t) * 1e3)
    return float(np.median(times))


def parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def batched(n: int, batch: int) -> Sequence[slice]:
    return [slice(i, min(i + batch, n)) for i in range(0, n, batch)]


def shuffled_batches(tensors: Sequence[Tensor], batch: int, seed: int, device: torch.device) -> Iterator[tuple]:
    """Endless minibatches of ``tensors`` (same first dimension) on ``device``, reshuffled every epoch by a
    generator seeded with ``seed``: the same order on every machine."""
    n, order = len(tensors[0]), torch.Generator().manual_seed(seed)
    while True:
        perm = torch.randperm(n, generator=order)
        for s in batched(n, batch):
            i = perm[s]
            yield tuple(t[i].to(device) for t in tensors)


def _number(value: Any) -> bool:
    return isinstance(value, (int, float, np.number)) and not isinstance(value, bool)


def summarise(rows: Sequence[dict[str, Any]], keys: Sequence[str], fixed: Sequence[str] = ()) -> list[dict[str, Any]]:
    """Rows of several seeds -> one row per value of ``keys`` (first-seen order). A column holding a float, or
    numbers that differ between seeds, is a measurement: its mean, ``<col>_sd`` (sample standard deviation, 0
    for one seed) and ``<col>_seeds`` (the per-seed values); any other column, and a ``fixed`` one that is the
    same in every seed (a chance level), keeps its common value."""
    groups: dict[tuple, list[dict[str, Any]]] = {}
    for r in rows:
        groups.setdefault(tuple(r.get(k) for k in keys), []).append(r)
    out = []
    for group in groups.values():
        columns: list[str] = []
        for r in group:
            columns += [c for c in r if c not in columns and c != "seed"]
        agg: dict[str, Any] = {}
        for c in columns:
            values = [r[c] for r in group if c in r]
            same = len(set(map(repr, values))) == 1
            measured = c not in keys and not (c in fixed and same) and all(_number(v) for v in values) and (
                any(isinstance(v, (float, np.floating)) for v in values) or not same)
            if measured:
                arr = np.asarray(values, dtype=float)
                agg[c] = float(arr.mean())
                agg[c + "_sd"] = float(arr.std(ddof=1)) if len(arr) > 1 else 0.0
                agg[c + "_seeds"] = [float(v) for v in values]
            else:
                agg[c] = values[0]
        agg["seeds"] = len(group)
        out.append(agg)
    return out


def mean_curve(curves: Sequence[Sequence[tuple[float, float]]]) -> tuple[list[float], list[float], list[float]]:
    """Per-seed curves ``[(x, y), ...]`` on the same xs -> ``(xs, mean, sd)``."""
    n = min(len(c) for c in curves)
    ys = np.asarray([[y for _, y in c[:n]] for c in curves], dtype=float)
    sd = ys.std(0, ddof=1) if len(curves) > 1 else np.zeros(n)
    return [x for x, _ in curves[0][:n]], ys.mean(0).tolist(), sd.tolist()


def curve_band(ax, curves: Sequence[Sequence[tuple[float, float]]], **kwargs) -> None:
    """Draw the seeds' mean curve with a +-1 sd band."""
    xs, mean, sd = mean_curve(curves)
    (line,) = ax.plot(xs, mean, **kwargs)
    ax.fill_between(xs, np.subtract(mean, sd), np.add(mean, sd), color=line.get_color(), alpha=0.15)


def errorbar(ax, xs: Sequence[float], rows: Sequence[dict[str, Any]], column: str, **kwargs) -> None:
    """Draw ``column``'s mean over seeds at ``xs`` with +-1 sd error bars (rows from :func:`summarise`)."""
    ax.errorbar(list(xs), [r[column] for r in rows], yerr=[r.get(column + "_sd", 0.0) for r in rows], capsize=3,
                **kwargs)
