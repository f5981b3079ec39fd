"""``python -m scanforge.compat run [--force] script.py [args...]``: run a script written for mamba-ssm with
scanforge's ops served under mamba-ssm's module names (:func:`scanforge.compat.install`), no code changed.

The script runs as ``__main__`` with ``sys.argv = [script.py, args...]``, like ``python script.py args...``; the
served modules are printed on one line to stderr first. ``-m module`` runs a module instead of a file.
"""

from __future__ import annotations

import argparse
import os
import runpy
import sys

from .hook import install

USAGE = "python -m scanforge.compat run [--force] (script.py | -m module) [args ...]"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m scanforge.compat", usage=USAGE,
                                     description="Run code written for mamba-ssm on scanforge's ops.")
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", usage=USAGE, help="run a script or module with the import hook installed")
    run.add_argument("--force", action="store_true", help="serve the ops even over a working mamba-ssm build")
    run.add_argument("-m", dest="module", help="run this module (like python -m) instead of a script")
    run.add_argument("target", nargs=argparse.REMAINDER, help="script.py and its arguments")
    args = parser.parse_args(argv)
    if args.module is None and not args.target:
        parser.error("run: expected a script (or -m module)")
    served = install(force=args.force)
    print("scanforge.compat serves: " + (", ".join(served) or "nothing (the real packages work)"), file=sys.stderr)
    if args.module is not None:
        sys.argv = [args.module, *args.target]
        runpy.run_module(args.module, run_name="__main__", alter_sys=True)
    else:
        script, *rest = args.target
        sys.argv = [script, *rest]
        sys.path[0] = os.path.dirname(os.path.abspath(script))  # as `python script.py` sets it
        runpy.run_path(script, run_name="__main__")
    return 0


if __name__ == "__main__":
    sys.exit(main())
