"""``scanforge compile``: compile the GPU kernels for target GPUs without a GPU, print their resources."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from rich.console import Console
from rich.markup import escape
from rich.progress import Progress
from rich.table import Table

from ..testing.config_file import family_configs
from ..tuning import bounds, compile_plan
from ..tuning.capture import LAYOUTS
from ..tuning.cuda_tools import check_target_tools
from ..tuning.spaces import config_text
from ..tuning.targets import FLOORS, GPU_BACKENDS, TARGETS, target
from .common import positive_int
from .tune import parse_shape

#: What ``scanforge compile`` builds when no --target is named: the CI gate's targets.
DEFAULT_TARGETS = ("sm_80", "sm_90", "gfx90a", "gfx942")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--target", action="append", help=f"GPU architecture, repeatable: {', '.join(TARGETS)} "
                   f"(default: {', '.join(DEFAULT_TARGETS)}; Numba-CUDA kernels compile for the sm_* ones only)")
    p.add_argument("--backend", action="append", help="triton or numba_cuda, repeatable (default: both)")
    p.add_argument("--op", action="append", choices=list(compile_plan.KINDS), help="only this kind of kernel")
    p.add_argument("--variant", action="append", help="a named variant (see `scanforge check`); repeatable")
    p.add_argument("--phase", action="append", choices=["fwd", "bwd", "decode"])
    p.add_argument("--dtype", action="append", choices=["float32", "float16", "bfloat16"],
                   help="default: float32 and bfloat16")
    p.add_argument("--shapes", nargs="+", help="BATCHxDIMxLxN for scans, BATCHxTxDxK for gathers "
                   "(default: the GPU workload's typical shape per op)")
    p.add_argument("--layout", action="append", help=f"input strides, repeatable: {', '.join(LAYOUTS)} (generic: "
                   "no stride 1 or multiple of 16, an unaligned pointer; Triton compiles it as another kernel); "
                   "default: both")
    which = p.add_mutually_exclusive_group()
    which.add_argument("--config", metavar="FILE", help="TOML/JSON {family: config} merged onto the defaults")
    which.add_argument("--space", action="store_true", help="every config of each family's search space: "
                       "reports which are infeasible on the target")
    p.add_argument("--json", metavar="FILE", help="write the rows as JSON")
    p.add_argument("--jobs", type=positive_int, help="compiling processes (default: the CPU count)")
    p.set_defaults(func=run)


def _warps(row: dict) -> str:
    occ = row.get("occupancy") or {}
    if not occ:
        return "-"
    unit = target(row["target"]).unit
    return f"{occ['warps']} {unit} ({occ['by_registers']}/{occ['by_shared']}/{occ['by_threads']})"


def _registers(row: dict) -> str:
    if "registers" not in row:
        return "-"
    if row["target"] in TARGETS and target(row["target"]).vendor == "amd":
        spilled = f" +{row['sgpr_spill']} sgpr spill" if row.get("sgpr_spill") else ""
        return f"{row['registers']}v/{row['agprs']}a/{row['sgprs']}s{spilled}"
    return str(row["registers"])


def print_table(rows: list[dict], console: Console, title: str) -> None:
    table = Table(title=title, title_justify="left")
    for name in ("kernel", "case", "config", "target", "regs (AMD: vgpr/agpr/sgpr)", "spill/stack B",
                 "smem/LDS B", "resident (reg/smem/thr)", "exp", "s", "verdict"):
        table.add_column(name, overflow="fold")
    for r in rows:
        verdict = "ok" if r["verdict"] == "ok" else f"[red]{escape(r['verdict'])}[/red] {escape(r.get('error') or '')}"
        table.add_row(f"{r['backend']}:{r['kernel']}", f"{r['variant']} {r['phase']} {r['dtype']} {r['layout']}",
                      config_text(r["config"]), r["target"], _registers(r),
                      f"{r.get('spill', 0)}/{r.get('stack', 0)}", str(r.get("shared", "-")), _warps(r),
                      str(r.get("exps", "-")), f"{r.get('seconds', 0):.1f}", verdict)
    console.print(table)


def run(args) -> int:
    console = Console()
    configs = {}
    if args.config:
        configs = family_configs(args.config)
        if configs is None:
            raise ValueError(f"--config {args.config}: expected a {{family: config}} table, not a cache file")
    shapes = None
    if args.shapes:
        shapes = [parse_shape(s) for s in args.shapes]
    if args.jobs is not None and args.jobs < 1:
        raise ValueError(f"--jobs: expected an int >= 1, got {args.jobs}")
    names = args.target or DEFAULT_TARGETS
    jobs = compile_plan.plan(args.backend or GPU_BACKENDS, names, kinds=args.op,
                             variants=args.variant, phases=args.phase, dtypes=args.dtype or ("float32", "bfloat16"),
                             shapes=shapes, configs=configs, space=args.space,
                             config_source=f"--config {args.config}", layouts=args.layout or LAYOUTS)
    if not jobs:
        raise ValueError("nothing to compile: the filters select no kernel")
    check_target_tools({t for job in jobs for t in job.targets})
    with Progress(console=console, transient=True) as progress:
        task = progress.add_task("compiling", total=len(jobs))
        rows = compile_plan.run(jobs, args.jobs, on_rows=lambda _: progress.advance(task))
    print_table(rows, console, "scanforge compile: registers, spills, shared memory (LDS) and resident warps per "
                               f"SM (NVIDIA) or waves per SIMD (AMD) (floors: {FLOORS})")
    failed = [r for r in rows if r["verdict"] != "ok" and not r["verdict"].startswith("not implemented")]
    if args.json:
        floors = bounds.floors_for(rows)
        Path(args.json).write_text(json.dumps({"rows": rows, "floors": floors}, indent=1, default=str))
        console.print(f"wrote {len(rows)} rows to {args.json}")
    if args.space:
        feasible = len(rows) - len(failed)
        console.print(f"{feasible} of {len(rows)} (config, kernel, target) rows are feasible")
        return 0
    errors = sum(r["verdict"] == "error" for r in rows)
    console.print(f"{len(rows)} kernels compiled: {errors} errors, {len(failed) - errors} over a limit "
                  "(spill or warps floor)" if failed else f"{len(rows)} kernels compiled: all ok")
    return 1 if failed else 0
