"""Tuning one study with 1, 2 and 4 workers on SQLite, on PostgreSQL and through the gRPC proxy.

Each worker is a process running the tuner's search (``tune(..., accept=False)``: what every
``scanforge tune`` process of a fleet does before the one verdict) on the same Numba CPU study
with the same budget of measured configs, its trials in a child process as the CLI runs them.
Every run starts with a fresh kernel cache, so each one compiles the configs it measures.

Two sets of runs. "Instant" trials (a runner that returns a made-up time at once) leave only the
storage round trip of a trial: ask, params, attributes, the claim check, tell, stale-trial checks.
Numba CPU trials compile, check and time real kernels. Recorded per run: wall-clock from the
start of the workers (Python start-up included) to the end of the last, configs measured, trials
per minute, the storage time per trial (time inside storage calls, the waits of a trial for a
rival's measurement of the same config included; the heartbeat thread is reported apart, as it
runs beside the trial) and, on PostgreSQL, the peak of database connections. On a 2-core machine
the workers compete for the cores (Numba compiles are CPU-bound), so wall-clock cannot improve
beyond about 2x; the storage overhead is its own figure.

    python benchmarks/fleet.py                 # writes benchmarks/results/fleet.json
    python benchmarks/fleet.py --budget 6 --workers 1 2
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))  # the throw-away PostgreSQL server of the tests

SHAPE = "1x32x128x4"
SKIPPED = ("record_heartbeat", "scanforge_url", "beat_at_start")


def _instrument(storage) -> dict:
    """Time every storage call this process makes (the heartbeat thread's apart)."""
    from scanforge.tuning.storage import _RETRIED

    totals = {"seconds": 0.0, "calls": 0, "heartbeat_seconds": 0.0, "heartbeats": 0}
    lock = threading.Lock()

    def timed(fn, heartbeat: bool):
        def call(*args, **kwargs):
            start = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                with lock:
                    key = "heartbeat" if heartbeat else ""
                    totals[f"{key}_seconds" if key else "seconds"] += time.perf_counter() - start
                    totals[f"{key}s" if key else "calls"] += 1
        return call

    for name in _RETRIED:
        if hasattr(storage, name):
            setattr(storage, name, timed(getattr(storage, name), False))
    if hasattr(storage, "record_heartbeat"):
        storage.record_heartbeat = timed(storage.record_heartbeat, True)
    return totals


class _Instant:
    """A runner whose trials take no time (a made-up time per config): what is left of a trial is the
    storage round trip (ask, params, attributes, the claim check, tell) and the sampler."""

    size = 1

    def run(self, task, config):
        from scanforge.tuning.trials import TrialResult

        return TrialResult(True, 1e-3 * (1 + sum(hash(str(v)) % 97 for v in config.values()) / 97), None, {}, 0.0)

    def close(self) -> None:
        pass


def worker(url: str, budget: int, seed: int, out: str, instant: bool = False) -> None:
    import optuna

    from scanforge.kernels.variants import variant_spec
    from scanforge.tuning.storage import open_storage
    from scanforge.tuning.trials import Task
    from scanforge.tuning.tuner import tune
    from scanforge.tuning.worker import SubprocessRunner

    optuna.logging.set_verbosity(optuna.logging.ERROR)
    storage = open_storage(url)
    totals = _instrument(storage)
    task = Task("numba_cpu", variant_spec("selective_scan", "causal", "fwd", "float32"),
                tuple(int(v) for v in SHAPE.split("x")), "causal")
    runner = _Instant() if instant else SubprocessRunner(timeout=300, seed=seed)
    ran = []
    start = time.perf_counter()
    try:
        outcome = tune(task, runner, trials=budget, seed=seed, storage=storage, accept=False,
                       on_trial=lambda number, config, result: ran.append(result.wall_seconds))
    finally:
        runner.close()
    Path(out).write_text(json.dumps(dict(totals, wall=time.perf_counter() - start, measured_here=len(ran),
                                         trial_seconds=sum(ran), study_measured=outcome.trials)))


def _peak_connections(server, database: str, stop: threading.Event, peak: list) -> None:
    while not stop.is_set():
        try:
            peak[0] = max(peak[0], server.connections(database))
        except Exception:  # noqa: BLE001 - the server is busy: the next sample counts
            pass
        stop.wait(0.2)


def run(kind: str, workers: int, budget: int, server=None, instant: bool = False) -> dict:
    tmp = Path(tempfile.mkdtemp(prefix="scanforge-fleet-bench-"))
    database = f"bench_{kind.split()[0]}_{'grpc_' if 'grpc' in kind else ''}{workers}_{int(instant)}"
    proxy = None
    if kind == "sqlite":
        url = f"sqlite:///{tmp / 'studies.db'}"
    else:
        url = server.create_database(database)
        if kind == "postgresql via grpc proxy":
            from postgres import free_port

            port = free_port()
            proxy = subprocess.Popen([sys.executable, "-m", "scanforge.cli", "serve-storage", "--storage", url,
                                      "--port", str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            url = f"grpc://127.0.0.1:{port}"
    env = dict(os.environ, SCANFORGE_CACHE_DIR=str(tmp / "cache"))  # fresh kernels: each run compiles its own
    stop, peak = threading.Event(), [0]
    watcher = None
    if server is not None:
        watcher = threading.Thread(target=_peak_connections, args=(server, database, stop, peak), daemon=True)
        watcher.start()
    start = time.perf_counter()
    procs = [subprocess.Popen([sys.executable, __file__, "--worker", url, str(budget), str(i), str(tmp / f"w{i}.json"),
                               "instant" if instant else "kernels"], env=env) for i in range(workers)]
    codes = [p.wait() for p in procs]
    wall = time.perf_counter() - start
    stop.set()
    if watcher:
        watcher.join()
    if proxy:
        proxy.terminate()
        proxy.wait(30)
    if any(codes):
        raise RuntimeError(f"{kind} x{workers}: a worker failed ({codes})")
    parts = [json.loads((tmp / f"w{i}.json").read_text()) for i in range(workers)]
    measured = max(p["study_measured"] for p in parts)
    trials_run = sum(p["measured_here"] for p in parts)
    calls = sum(p["calls"] for p in parts)
    result = {
        "storage": kind, "workers": workers, "budget": budget, "wall_seconds": round(wall, 1),
        "trials": "instant (storage round trip only)" if instant else "Numba CPU kernels (compile, check, time)",
        "configs_measured": measured, "trials_per_minute": round(60 * measured / wall, 2),
        "storage_ms_per_trial": round(1e3 * sum(p["seconds"] for p in parts) / max(trials_run, 1), 1),
        "storage_calls_per_trial": round(calls / max(trials_run, 1), 1),
        "storage_ms_per_call": round(1e3 * sum(p["seconds"] for p in parts) / max(calls, 1), 2),
        "heartbeat_ms_per_beat": round(1e3 * sum(p["heartbeat_seconds"] for p in parts)
                                       / max(sum(p["heartbeats"] for p in parts), 1), 2),
        "trial_seconds_mean": round(sum(p["trial_seconds"] for p in parts) / max(trials_run, 1), 2),
    }
    if server is not None:
        result["peak_db_connections"] = peak[0]
    print(json.dumps(result), flush=True)
    return result


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--worker":
        worker(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), sys.argv[5], sys.argv[6] == "instant")
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budget", type=int, default=8, help="configs to measure per run (the study's total)")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--round-trip-budget", type=int, default=30, help="configs per run of instant trials")
    parser.add_argument("--no-kernels", action="store_true", help="only the storage round trip (instant trials)")
    parser.add_argument("--out", default=str(HERE / "results" / "fleet.json"))
    args = parser.parse_args()
    from postgres import PostgresServer, missing_reason

    reason = missing_reason()
    if reason:
        sys.exit(f"benchmarks/fleet.py needs a PostgreSQL server: {reason}")
    server = PostgresServer(fast=False)  # durable commits, as a real server would make them
    server.start()
    load_before = os.getloadavg()
    runs = []
    kinds = ("sqlite", "postgresql", "postgresql via grpc proxy")
    try:
        for kind in kinds:  # the storage overhead on its own: trials that take no time
            for n in args.workers:
                runs.append(run(kind, n, args.round_trip_budget, server if kind != "sqlite" else None, instant=True))
        for kind in () if args.no_kernels else kinds:  # the same budget of real kernel trials
            for n in args.workers if kind != kinds[2] else [max(args.workers)]:
                runs.append(run(kind, n, args.budget, server if kind != "sqlite" else None))
    finally:
        server.close()
    import numba
    import optuna
    import sqlalchemy

    from scanforge.backends.machine import cpu_name

    record = {
        "command": "python benchmarks/fleet.py " + " ".join(sys.argv[1:]),
        "what": __doc__.split("\n\n")[1].replace("\n", " "),
        "study": f"numba_cpu scan_fwd causal float32 {SHAPE}, local sampler, {args.budget} measured configs "
                 f"({args.round_trip_budget} for the instant trials)",
        "machine": {"cpu": cpu_name(), "cores": os.cpu_count(), "python": platform.python_version(),
                    "load_average_before": [round(v, 2) for v in load_before],
                    "load_average_after": [round(v, 2) for v in os.getloadavg()],
                    "postgresql": subprocess.run([str(server.bin / "pg_ctl"), "--version"], capture_output=True,
                                                 text=True).stdout.strip(),
                    "optuna": optuna.__version__, "sqlalchemy": sqlalchemy.__version__, "numba": numba.__version__},
        "runs": runs,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(record, indent=1) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
