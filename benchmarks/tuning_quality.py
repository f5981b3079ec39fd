"""Tuning quality: exhaustive grid vs the samplers (local, TPE, random) on the Numba CPU backend, and tuned
vs default.

Every feasible config of a family's space is measured once at each shape (the grid, real kernels,
real timings, each config checked against the reference). The samplers are then replayed against
that table with many seeds: a replayed trial costs nothing and sees exactly the grid's timing,
so the comparison is about the search, not about timing noise. Targets (issue "Autotuner"): the
tuner within 5% of the grid optimum using at most 25% of the grid's trials; the grid's best vs the
default config at least 1.3x geomean where the space allows it.

    python benchmarks/tuning_quality.py [--quick]   # writes benchmarks/results/tuning_quality.json
    python benchmarks/tuning_quality.py --replay     # the samplers again, on the grids stored there

The JSON keeps every grid (config -> ms), so ``--replay`` can compare samplers or their settings
again without measuring anything (it rewrites the JSON's sampler results, not its grids).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import tempfile
import time
from pathlib import Path

os.environ.setdefault("SCANFORGE_CACHE_DIR", tempfile.mkdtemp(prefix="scanforge-tq-"))

import optuna  # noqa: E402

from scanforge.backends.machine import cpu_name  # noqa: E402
from scanforge.kernels.variants import MAMBA, variant_spec  # noqa: E402
from scanforge.tuning.configs import default_config  # noqa: E402
from scanforge.tuning.spaces import config_key, space_for  # noqa: E402
from scanforge.tuning.trials import Task, TrialResult, TrialRunner  # noqa: E402
from scanforge.tuning.tuner import tune  # noqa: E402

SHAPES = [(2, 512, 1024, 16), (1, 256, 4096, 16)]
FAMILIES = [("fwd", MAMBA), ("bwd", MAMBA)]
SEEDS = range(10)


class ReplayRunner:
    """Answers trials from a table of measured times (the grid), so samplers can be compared cheaply."""

    def __init__(self, table: dict[tuple, float | None]):
        self.table = table

    def run(self, task, config) -> TrialResult:
        seconds = self.table.get(config_key(config))
        return TrialResult(True, seconds) if seconds is not None else TrialResult(False, None, "failed in the grid")


def measure_grid(task: Task, runner: TrialRunner) -> dict[tuple, float | None]:
    space = space_for(task.backend, task.family)
    table = {}
    for config in space.grid(task.shape):
        result = runner.run(task, config)
        table[config_key(config)] = result.seconds if result.ok else None
        print(f"  {config}: {'%.3f ms' % (result.seconds * 1e3) if result.ok else result.reason}", flush=True)
    return table


def replay(task: Task, table: dict, sampler: str, trials: int, seed: int) -> float:
    """The grid time of the best config a sampler finds within ``trials`` trials."""
    storage = optuna.storages.InMemoryStorage()
    out = tune(task, ReplayRunner(table), trials=trials, sampler=sampler, seed=seed, storage=storage, accept=False)
    study = optuna.load_study(study_name=out.study_name, storage=storage)
    done = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    return min(table[config_key(t.user_attrs["config"])] for t in done)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="one small shape, three seeds")
    parser.add_argument("--replay", action="store_true", help="replay on the grids of the stored results")
    args = parser.parse_args()
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    shapes = [(1, 64, 256, 16)] if args.quick else SHAPES
    seeds = range(3) if args.quick else SEEDS
    out = Path(__file__).parent / "results" / "tuning_quality.json"
    previous = json.loads(out.read_text()) if args.replay else {"rows": []}
    stored = {(r["family"], tuple(r["shape"])): r["grid"] for r in previous["rows"]}
    runner, rows, start = TrialRunner(), [], time.perf_counter()
    for phase, variant in FAMILIES:
        for shape in shapes:
            task = Task("numba_cpu", variant_spec("selective_scan", variant, phase, "float32"), shape, variant)
            print(task.describe(), flush=True)
            if args.replay:
                table = {config_key(g["config"]): None if g["ms"] is None else g["ms"] / 1e3
                         for g in stored[(task.family, shape)]}
            else:
                table = measure_grid(task, runner)
            ok = {k: v for k, v in table.items() if v is not None}
            best = min(ok.values())
            default = table.get(config_key(default_config("numba_cpu", task.spec)))
            budget = max(1, math.floor(0.25 * len(table)))
            local = [replay(task, table, "local", budget, s) / best for s in seeds]
            tpe = [replay(task, table, "tpe", budget, s) / best for s in seeds]
            rnd = [replay(task, table, "random", budget, s) / best for s in seeds]
            rows.append({"family": task.family, "variant": variant, "shape": list(shape), "grid_configs": len(table),
                         "grid_failed": len(table) - len(ok), "grid_best_ms": best * 1e3,
                         "grid_best_config": dict(min(ok, key=ok.get)),
                         "default_ms": None if default is None else default * 1e3,
                         "best_vs_default": None if default is None else default / best,
                         "budget_trials": budget, "local_over_best_median": sorted(local)[len(local) // 2],
                         "local_over_best_worst": max(local), "local_within_5pct": sum(r <= 1.05 for r in local)
                         / len(local), "tpe_over_best_median": sorted(tpe)[len(tpe) // 2],
                         "tpe_over_best_worst": max(tpe), "tpe_within_5pct": sum(r <= 1.05 for r in tpe) / len(tpe),
                         "random_over_best_median": sorted(rnd)[len(rnd) // 2],
                         "grid": [{"config": dict(k), "ms": None if v is None else v * 1e3} for k, v in table.items()]})
            print(json.dumps({k: v for k, v in rows[-1].items() if k != "grid"}), flush=True)
    speedups = [r["best_vs_default"] for r in rows if r["best_vs_default"]]
    measured = {"command": "python benchmarks/tuning_quality.py" + (" --quick" if args.quick else ""),
                "machine": cpu_name(), "platform": platform.platform(), "seconds": round(time.perf_counter() - start)}
    if args.replay:  # the grids' measurement stays as recorded; the samplers ran again on them
        measured = {k: previous[k] for k in measured} | {"replayed_by": "python benchmarks/tuning_quality.py --replay"}
    record = {**measured, "seeds": len(seeds), "rows": rows,
              "geomean_best_vs_default": math.exp(sum(map(math.log, speedups)) / len(speedups)),
              "share_of_studies_tpe_within_5pct_median": sum(r["tpe_over_best_median"] <= 1.05 for r in rows)
              / len(rows),
              "share_of_studies_local_within_5pct_median": sum(r["local_over_best_median"] <= 1.05 for r in rows)
              / len(rows)}
    print(json.dumps({k: v for k, v in record.items() if k != "rows"}, indent=1))
    if not args.quick:
        out.write_text(json.dumps(record, indent=1) + "\n")


if __name__ == "__main__":
    main()
