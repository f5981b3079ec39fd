"""The ``scanforge`` command line: tune | cache | check | bench | show-kernel."""

from __future__ import annotations

import argparse
import sys

from rich.console import Console
from rich.table import Table

from .ir import Direction, GateMode, GatherSpec, Phase, ScanSpec, Summary, Weight


def _fmt(error: float) -> str:
    return "-" if error != error else f"{error:.2e}"


def _cmd_check(args) -> int:
    from .check import run_checks

    console = Console(width=max(Console().width, 132))
    with console.status("checking every backend against the float64 reference..."):
        rows = run_checks(quick=args.quick, backend_names=args.backend)
    table = Table(title="scanforge check: relative error ||out - ref|| / ||ref|| against float64")
    for column in ("backend", "op", "variant", "dtype", "fwd rel err", "grad rel err", "time (s)", "result"):
        table.add_column(column, justify="right" if "err" in column or "time" in column else "left")
    for r in rows:
        style = {"pass": "green", "FAIL": "bold red"}.get(r.status, "red" if r.status.startswith("error") else "dim")
        table.add_row(r.backend, r.op, r.variant, r.dtype, _fmt(r.forward_error), _fmt(r.grad_error),
                      f"{r.seconds:.1f}", f"[{style}]{r.status}[/{style}]")
    console.print(table)
    ran = [r for r in rows if r.status != "not implemented"]
    failed = [r for r in ran if r.status != "pass"]
    console.print(f"{len(ran) - len(failed)} passed, {len(failed)} failed, "
                  f"{len(rows) - len(ran)} not implemented")
    return 1 if failed else 0


def _cmd_show_kernel(args) -> int:
    from .codegen import render
    from .configs import default_config

    if args.op == "topk_gather":
        spec = GatherSpec(scores_given=args.scores, keep_order=not args.ranked, summary=args.summary,
                          weight=args.weight, dtype=args.dtype, phase=Phase(args.phase))
    else:
        spec = ScanSpec(direction=Direction(args.direction), stride=args.stride, gated=args.gated,
                        gate_mode=GateMode(args.gate_mode), has_D=args.D, has_z=args.z,
                        has_delta_bias=args.delta_bias, softplus=args.softplus, grouped=args.grouped,
                        dtype=args.dtype, has_initial_state=args.initial_state, return_last_state=args.last_state,
                        varlen=args.varlen, phase=Phase(args.phase))
    print(render(spec, args.backend, default_config(args.backend, spec)), end="")
    return 0


def _cmd_tune(args) -> int:
    from . import tune_command

    return tune_command.run(args)


def _cmd_bench(args) -> int:
    from . import bench_command

    return bench_command.run(args)


def _cmd_cache(args) -> int:
    from . import cache_command

    return cache_command.run(args)


def _workload_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--backend", help="backend to tune (default: the best one this machine runs natively)")
    p.add_argument("--op", action="append", choices=["selective_scan", "topk_gather"], help="only this op")
    p.add_argument("--variant", action="append", help="a named variant (see `scanforge check`); repeatable")
    p.add_argument("--shapes", nargs="+", help="BATCHxDIMxLxN for scans, BATCHxTxDxK for gathers")
    p.add_argument("--dtype", action="append", choices=["float32", "float16", "bfloat16"])
    p.add_argument("--phase", action="append", choices=[p.value for p in Phase], help="kernel family phase")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="scanforge", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    tune = sub.add_parser("tune", help="autotune the kernels of this machine (Optuna), cache the winners")
    _workload_flags(tune)
    tune.add_argument("--trials", type=int, default=16, help="finished trials per study, earlier runs included")
    tune.add_argument("--budget-seconds", type=float, help="stop each study after this long")
    tune.add_argument("--sampler", choices=["tpe", "random", "grid"], default="tpe")
    tune.add_argument("--seed", type=int, default=0)
    tune.add_argument("--storage", help="Optuna storage URL (default: SQLite file in the cache dir)")
    tune.add_argument("--workers", type=int, default=1, help="parallel trial processes")
    tune.add_argument("--trial-timeout", type=float, default=300.0, help="seconds before a trial is killed")
    tune.add_argument("--in-process", action="store_true", help="run trials in this process (no timeout)")
    tune.add_argument("--plot", metavar="DIR", help="write a PNG per study (time vs trial, best so far)")
    tune.set_defaults(func=_cmd_tune)

    bench = sub.add_parser("bench", help="time tuned vs default configs vs the PyTorch reference")
    _workload_flags(bench)
    bench.set_defaults(func=_cmd_bench)

    cache = sub.add_parser("cache", help="list | show | clear | export | import tuned configs")
    cache.add_argument("action", choices=["list", "show", "clear", "export", "import"])
    cache.add_argument("path", nargs="?", help="export: file to write; import: file to read")
    cache.add_argument("--backend")
    cache.set_defaults(func=_cmd_cache)

    check = sub.add_parser("check", help="run every available backend against the float64 reference")
    check.add_argument("--quick", action="store_true", help="small shapes (seconds, not minutes)")
    check.add_argument("--backend", action="append", help="only this backend (repeatable)")
    check.set_defaults(func=_cmd_check)

    show = sub.add_parser("show-kernel", help="print the generated source of a kernel")
    show.add_argument("--op", choices=["selective_scan", "topk_gather"], default="selective_scan")
    show.add_argument("--backend", default="triton")
    show.add_argument("--phase", choices=[p.value for p in Phase], default="fwd")
    show.add_argument("--direction", choices=[d.value for d in Direction], default="causal")
    show.add_argument("--stride", type=int, default=1)
    show.add_argument("--gated", action="store_true")
    show.add_argument("--gate-mode", choices=[m.value for m in GateMode], default="hard")
    show.add_argument("--dtype", choices=["float32", "float16", "bfloat16"], default="float32")
    for flag in ("D", "z", "delta-bias", "softplus", "grouped", "initial-state", "last-state", "varlen"):
        show.add_argument(f"--{flag}", action="store_true", help="selective_scan: include this term")
    show.add_argument("--scores", action="store_true", help="topk_gather: scores are given (else L2 norm)")
    show.add_argument("--ranked", action="store_true", help="topk_gather: output by rank, not original order")
    show.add_argument("--summary", choices=[m.value for m in Summary], default="none")
    show.add_argument("--weight", choices=[w.value for w in Weight], default="none")
    show.set_defaults(func=_cmd_show_kernel)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "cache" and args.action in ("export", "import") and not args.path:
        parser.error(f"cache {args.action}: a file path is required")
    if args.command == "tune" and (args.trials < 1 or args.workers < 1):
        parser.error("tune: --trials and --workers must be at least 1")
    try:
        return args.func(args)
    except ValueError as e:
        Console(stderr=True).print(f"[red]error:[/red] {e}")
        return 2


if __name__ == "__main__":
    sys.exit(main())
