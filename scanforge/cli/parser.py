"""The ``scanforge`` command line: tune | cache | check | bench | experiment | compile | show-kernel |
serve-storage."""

from __future__ import annotations

import argparse
import signal
import sys
import traceback
import warnings

from ..experiments import add_arguments
from ..kernels.ir import Direction, GateMode, Phase, Summary, Weight
from . import bench as bench_command
from . import cache as cache_command
from . import check as check_command
from . import compile as compile_command
from . import experiment as experiment_command
from . import serve_storage as serve_storage_command
from . import show_kernel as show_kernel_command
from . import tune as tune_command
from .common import Parser, positive_float, positive_int

#: Exit codes: a user error (a flag, a path, a storage URL, a config) is 2; Ctrl-C is 130 (128 + SIGINT).
USER_ERROR, INTERRUPTED = 2, 128 + signal.SIGINT


def _workload_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--backend", help="backend to tune (default: the best one this machine runs natively)")
    p.add_argument("--op", action="append", choices=["selective_scan", "topk_gather", "ssd_scan"], help="only this op")
    p.add_argument("--variant", action="append", help="a named variant (see `scanforge check`); repeatable")
    p.add_argument("--shapes", nargs="+", help="BATCHxDIMxLxN for scans, BATCHxTxDxK for gathers")
    p.add_argument("--dtype", action="append", choices=["float32", "float16", "bfloat16"])
    p.add_argument("--phase", action="append", choices=[p.value for p in Phase], help="kernel family phase")


def _debug_flag(p: argparse.ArgumentParser, default=argparse.SUPPRESS) -> None:
    p.add_argument("--debug", action="store_true", default=default,
                   help="show Python tracebacks (errors are otherwise one line)")


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="scanforge", description=__doc__)
    _debug_flag(parser, default=False)
    sub = parser.add_subparsers(dest="command", required=True)

    tune = sub.add_parser("tune", help="autotune the kernels of this machine (Optuna), cache the winners")
    _workload_flags(tune)
    tune.add_argument("--trials", type=positive_int, default=10,
                      help="configs to measure per study, earlier runs included (interrupted ones are not)")
    tune.add_argument("--budget-seconds", type=positive_float, help="stop each study after this long")
    tune.add_argument("--sampler", choices=["local", "tpe", "random", "grid"], default="local",
                      help="local: adjacent choices around the best config so far (the default first)")
    tune.add_argument("--seed", type=int, default=0)
    tune.add_argument("--storage", help="Optuna storage URL (default: SQLite file in the cache dir)")
    tune.add_argument("--workers", type=positive_int, default=1,
                      help="parallel trial processes (they split this machine's cores)")
    tune.add_argument("--trial-timeout", type=positive_float, default=300.0, help="seconds before a trial is killed")
    tune.add_argument("--in-process", action="store_true", help="run trials in this process (no timeout)")
    tune.add_argument("--plot", metavar="DIR", help="write a PNG per study (time vs trial, best so far)")
    tune.add_argument("--dry-run", action="store_true", help="with --target: list the configs of each study that "
                      "compile for that GPU without spilling (no GPU needed, nothing is timed)")
    tune.add_argument("--target", help="with --dry-run: the GPU architecture to plan for "
                      "(sm_80, sm_90, sm_100, gfx90a, gfx942, gfx950)")
    tune.set_defaults(func=tune_command.run)

    bench = sub.add_parser("bench", help="time tuned vs default configs vs the PyTorch reference")
    _workload_flags(bench)
    bench.set_defaults(func=bench_command.run)

    experiment = sub.add_parser("experiment", help="rerun one of the design's experiments (tables, plots, results)")
    add_arguments(experiment)
    experiment.set_defaults(func=experiment_command.run)

    cache = sub.add_parser("cache", help="list | show | clear | export | import tuned configs")
    cache_backend = "backend (default: this machine's: Triton on a GPU, Numba CPU without one)"
    cache.add_argument("--backend", help=cache_backend)
    actions = cache.add_subparsers(dest="action", required=True, metavar="ACTION")
    for action, text in (("list", "every tuned-config file scanforge sees, and whether this machine uses it"),
                         ("show", "the tuned configs the next call uses on this machine"),
                         ("clear", "delete this machine's tuned configs"),
                         ("export", "write this machine's tuned configs (or a fleet's winners: --storage) to FILE"),
                         ("import", "merge a tuned-config FILE (e.g. exported elsewhere) into the cache")):
        a = actions.add_parser(action, help=text)
        a.add_argument("--backend", default=argparse.SUPPRESS, help=cache_backend)
        _debug_flag(a)
        if action in ("export", "import"):
            a.add_argument("path", metavar="FILE", help="file to write" if action == "export" else "file to read")
        if action == "export":
            a.add_argument("--storage", help="the winners recorded in this study storage (a fleet's), not this "
                                             "machine's cache")
            a.add_argument("--fingerprint", help="with --storage: which device's winners (a fingerprint id), when "
                                                 "the storage holds several")
    cache.set_defaults(func=cache_command.run)

    serve = sub.add_parser("serve-storage", help="Optuna's gRPC storage proxy: many workers, few database "
                                                 "connections")
    serve_storage_command.add_arguments(serve)
    serve.set_defaults(func=serve_storage_command.run)

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
    check.add_argument("--examples", type=positive_int, default=20, help="--deep: examples per property (default 20)")
    check.add_argument("--seed", type=int, default=0, help="seed of the drawn inputs and laws (default 0)")
    check.add_argument("--repro-dir", default="scanforge-check-failures",
                       help="where failing cases are written as runnable scripts")
    check.set_defaults(func=check_command.run)

    compile_command.add_arguments(sub.add_parser(
        "compile", help="compile the GPU kernels for sm_80/sm_90/sm_100 without a GPU: registers, spills, shared "
        "memory, warps per SM"))

    show = sub.add_parser("show-kernel", help="print the generated source of a kernel")
    show.add_argument("--op", choices=["selective_scan", "topk_gather", "ssd_scan"], default="selective_scan")
    show.add_argument("--backend", help="triton, numba_cpu or numba_cuda (default: this machine's)")
    show.add_argument("--phase", choices=[p.value for p in Phase], default="fwd")
    show.add_argument("--direction", choices=[d.value for d in Direction], default="causal")
    show.add_argument("--stride", type=positive_int, default=1)
    show.add_argument("--gated", action="store_true")
    show.add_argument("--gate-mode", choices=[m.value for m in GateMode], default="hard")
    show.add_argument("--dtype", choices=["float32", "float16", "bfloat16"], default="float32")
    show.add_argument("--N", type=positive_int, default=16,
                      help="selective_scan: state size (numba_cuda compiles it in)")
    for flag in ("D", "z", "delta-bias", "softplus", "grouped", "initial-state", "last-state", "varlen"):
        show.add_argument(f"--{flag}", action="store_true", help="selective_scan: include this term")
    show.add_argument("--scores", action="store_true", help="topk_gather: scores are given (else L2 norm)")
    show.add_argument("--ranked", action="store_true", help="topk_gather: output by rank, not original order")
    show.add_argument("--summary", choices=[m.value for m in Summary], default="none")
    show.add_argument("--weight", choices=[w.value for w in Weight], default="none")
    show.set_defaults(func=show_kernel_command.run)
    for name, command in sub.choices.items():
        if name != "cache":
            _debug_flag(command)
    _debug_flag(cache)
    return parser


def _one_line(message: object, category, filename, lineno, line=None) -> str:
    return f"warning: {message}\n"


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    if isinstance(e, OSError) and e.strerror:
        text = f"{e.strerror}: {e.filename}" if e.filename else e.strerror
    return " ".join(text.split()) or type(e).__name__


def main(argv: list[str] | None = None) -> int:
    """Run one command; returns its exit code. A user error is one line on stderr and exit code 2, Ctrl-C
    exit code 130, anything else one line and exit code 1; ``--debug`` shows the traceback instead."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:  # --help, or a flag refused in one line
        return e.code if isinstance(e.code, int) else USER_ERROR
    command = f"scanforge {args.command}"
    formatwarning = warnings.formatwarning
    if not args.debug:
        warnings.formatwarning = _one_line
    try:
        return _run(args, command)
    finally:
        warnings.formatwarning = formatwarning


def _run(args, command: str) -> int:
    try:
        return args.func(args)
    except KeyboardInterrupt:
        if args.debug:
            raise
        print(f"{command}: interrupted", file=sys.stderr)
        return INTERRUPTED
    except (ValueError, OSError) as e:
        if args.debug:
            raise
        print(f"{command}: error: {_first_line(e)}", file=sys.stderr)
        return USER_ERROR
    except Exception as e:  # noqa: BLE001 - one line; --debug for the traceback
        if args.debug:
            raise
        where = traceback.extract_tb(e.__traceback__)[-1]
        print(f"{command}: unexpected {type(e).__name__}: {_first_line(e)} ({where.filename.rsplit('/', 1)[-1]}:"
              f"{where.lineno}; run with --debug for the traceback)", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
