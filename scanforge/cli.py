"""The ``scanforge`` command line: tune | cache | check | bench | experiment | show-kernel | serve-storage."""

from __future__ import annotations

import argparse
import sys

from rich.console import Console
from rich.table import Table

from .ir import Direction, GateMode, GatherSpec, Phase, ScanSpec, Summary, Weight


def _fmt(error: float) -> str:
    return "-" if error != error else f"{error:.2e}"


def _cmd_check(args) -> int:
    from rich.markup import escape
    from rich.progress import Progress

    from . import check, conformance

    console = Console(width=max(Console().width, 132))
    if args.examples < 1:
        raise ValueError(f"--examples: expected an int >= 1, got {args.examples}")
    if args.deep:
        import importlib.util

        if importlib.util.find_spec("hypothesis") is None:
            raise ValueError("--deep draws inputs with Hypothesis: pip install hypothesis")
    configs, entries = None, []
    names = conformance.selected_backends(args.backend)
    if args.config:
        loaded = check.load_config_file(args.config)
        configs = loaded.families
        entries = [(args.backend[0] if args.backend else loaded.backend, *e) for e in loaded.entries]
    if args.tuned:
        entries += check.tuned_entries(names)
    suite = not (args.config and configs is None)  # a cache file: verify its entries only
    cases = conformance.plan(names, quick=args.quick, deep=args.deep, examples=args.examples,
                             seed=args.seed) if suite else []
    for name in names:  # the kernels' compile (or disk-cache load) time, outside the table's rows
        seconds = check.first_call_seconds(name)
        if seconds:
            console.print(f"first call on {name}: forward {seconds[0]:.1f} s, backward {seconds[1]:.1f} s "
                          f"(compiling the kernels, or loading them from the disk cache)")
    results = []
    with Progress(console=console, transient=True) as progress:
        task = progress.add_task("scanforge check", total=len(cases) + len(entries))

        def seen(result):
            progress.update(task, advance=1, description=f"{result.case.backend} {result.case.name}")

        for case in cases:
            results.append(conformance.run_case(case, configs))
            seen(results[-1])
        results += check.verify_entries(entries, on_result=seen)
    table = Table(title="scanforge check: rel err ||out - ref|| / ||ref|| against float64; laws: rel err "
                        "between variants")
    for column in ("backend", "kind", "op", "variant / law", "dtype", "fwd err", "grad err", "time (s)", "result"):
        table.add_column(column, justify="right" if "err" in column or "time" in column else "left")
    for r in results:
        c = r.case
        style = {"pass": "green", "FAIL": "bold red", "error": "red"}.get(r.status, "dim")
        table.add_row(c.backend, c.kind, c.op, c.name, c.dtype, _fmt(r.forward_error), _fmt(r.grad_error),
                      f"{r.seconds:.1f}", f"[{style}]{r.status}[/{style}]")
    console.print(table)
    bad = [r for r in results if not r.ok]
    for r in bad:
        console.print(f"[bold red]{r.status}[/bold red] {escape(r.case.id)}: {escape(r.message)}", highlight=False)
    written = check.write_snippets(bad, args.repro_dir)
    if written:
        console.print(f"reproducers written: {', '.join(map(str, written))}")
    skipped = [r for r in results if r.status == "not implemented"]
    console.print(f"{len(results) - len(bad) - len(skipped)} passed, {len(bad)} failed, "
                  f"{len(skipped)} not implemented")
    return 1 if bad else 0


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
    print(render(spec, args.backend, default_config(args.backend, spec), {"N": args.N}), end="")
    return 0


def _cmd_tune(args) -> int:
    from . import tune_command

    return tune_command.run(args)


def _cmd_bench(args) -> int:
    from . import bench_command

    return bench_command.run(args)


def _cmd_experiment(args) -> int:
    from . import experiments

    return experiments.run(args)


def _cmd_cache(args) -> int:
    from . import cache_command

    return cache_command.run(args)


def _cmd_serve_storage(args) -> int:
    from . import serve_command

    return serve_command.run(args)


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
    tune.add_argument("--trials", type=int, default=10, help="configs to measure per study, earlier runs included")
    tune.add_argument("--budget-seconds", type=float, help="stop each study after this long")
    tune.add_argument("--sampler", choices=["local", "tpe", "random", "grid"], default="local",
                      help="local: adjacent choices around the best config so far (the default first)")
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

    experiment = sub.add_parser("experiment", help="rerun one of the design's experiments (tables, plots, results)")
    from .experiments import add_arguments

    add_arguments(experiment)
    experiment.set_defaults(func=_cmd_experiment)

    cache = sub.add_parser("cache", help="list | show | clear | export | import tuned configs")
    cache.add_argument("action", choices=["list", "show", "clear", "export", "import"])
    cache.add_argument("path", nargs="?", help="export: file to write; import: file to read")
    cache.add_argument("--backend")
    cache.add_argument("--storage", help="export: the winners recorded in this study storage (a fleet's), not "
                                         "this machine's cache")
    cache.add_argument("--fingerprint", help="export --storage: which device's winners (a fingerprint id), when "
                                             "the storage holds several")
    cache.set_defaults(func=_cmd_cache)

    serve = sub.add_parser("serve-storage", help="Optuna's gRPC storage proxy: many workers, few database "
                                                 "connections")
    from .serve_command import add_arguments as serve_arguments

    serve_arguments(serve)
    serve.set_defaults(func=_cmd_serve_storage)

    check = sub.add_parser("check", help="conformance suite: every backend, op, variant and law vs the reference")
    check.add_argument("--quick", action="store_true", help="small shapes (seconds, not minutes)")
    check.add_argument("--backend", action="append", help="only this backend (repeatable; default: all installed)")
    configs = check.add_mutually_exclusive_group()
    configs.add_argument("--config", metavar="FILE",
                         help="JSON/TOML {family: config} forced on every case, or a cache file whose entries are "
                              "each verified")
    configs.add_argument("--tuned", action="store_true",
                         help="also verify every tuned config in this machine's cache (the suite itself always "
                              "runs the tuned configs)")
    check.add_argument("--deep", action="store_true", help="add Hypothesis-drawn inputs per op family and more "
                                                           "law seeds")
    check.add_argument("--examples", type=int, default=20, help="--deep: examples per property (default 20)")
    check.add_argument("--seed", type=int, default=0, help="seed of the drawn inputs and laws (default 0)")
    check.add_argument("--repro-dir", default="scanforge-check-failures",
                       help="where failing cases are written as runnable scripts")
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
    show.add_argument("--N", type=int, default=16, help="selective_scan: state size (numba_cuda compiles it in)")
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
        from rich.markup import escape

        Console(stderr=True, soft_wrap=True).print(f"[red]error:[/red] {escape(str(e))}")
        return 2


if __name__ == "__main__":
    sys.exit(main())
