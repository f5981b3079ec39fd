"""One call on a GPU machine, everything worth bringing home, in under 10 minutes:

    python benchmarks/gpu_run.py --out gpu_run_out [--mamba-sdist mamba_ssm-2.2.4.tar.gz] [--trials 6]

1. prints the device (name, architecture, CUDA or HIP version, Triton, torch);
2. runs ``pytest -m gpu`` (the tests only a GPU can run);
3. times every kernel of the GPU default workload (one shape per entry: the first) against the PyTorch reference
   chain (the ``reference`` backend: the float32 recurrence in torch ops) and, for the Mamba forward and backward,
   mamba-ssm's CUDA selective scan when it is importable or was built in this run;
4. tunes the default workload with a trial budget (``scanforge tune --trials``) into a cache in the output folder;
5. writes ``gpu_run.json`` (device, versions, each kernel's time, its floor from the bound model of
   :mod:`scanforge.tuning.bounds` where the card is known, its ratio to each baseline) and copies the tuned cache.

The GPU machine has no network: mamba-ssm is carried as an sdist (``--mamba-sdist``) and built in the background
while the tests run (``pip install --no-deps --no-build-isolation`` into the output folder, log beside it); when
it is absent or its build fails, its column says why and the run goes on.

Without a GPU (or with ``--tiny``) the same run is rehearsed at tiny sizes with Triton interpreted on CPU tensors:
every step runs or prints what it would run, and each measurement is labelled a rehearsal.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TINY_SHAPES = {"selective_scan": (1, 16, 32, 4), "topk_gather": (1, 32, 16, 8), "ssd_scan": (1, 16, 32, 4)}


def parse(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--out", default="gpu_run_out", help="output folder (JSON, tuned cache, logs)")
    p.add_argument("--tiny", action="store_true", help="rehearse at tiny sizes (automatic without a GPU)")
    p.add_argument("--mamba-sdist", help="a mamba-ssm sdist to build in the background (the device has no network)")
    p.add_argument("--trials", type=int, default=6, help="configs measured per tuning study")
    p.add_argument("--skip-tests", action="store_true")
    p.add_argument("--skip-tune", action="store_true")
    return p.parse_args(argv)


def _gpu() -> bool:
    import torch

    return torch.cuda.is_available()


def main(argv=None) -> int:
    args = parse(argv)
    args.tiny = args.tiny or not _gpu()
    if args.tiny:  # before triton is imported: kernels run interpreted on CPU tensors
        os.environ["TRITON_INTERPRET"] = "1"
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    os.environ["SCANFORGE_CACHE_DIR"] = str(out / "cache")
    start = time.perf_counter()
    from gpu_run_steps import device_info, mamba_baseline, time_workload  # noqa: PLC0415 - after TRITON_INTERPRET

    device = device_info()
    print("device:", json.dumps(device))
    build = _start_mamba_build(args.mamba_sdist, out)
    steps = {"tests": _run_tests(args, out), "timings": None, "tune": None}
    mamba = mamba_baseline(build, out)
    print(f"mamba-ssm baseline: {mamba['status']}")
    steps["timings"] = time_workload(args.tiny, mamba)
    steps["tune"] = _tune(args, out)
    result = {"rehearsal": args.tiny, "device": device, "seconds": time.perf_counter() - start, **steps,
              "mamba_ssm": {k: v for k, v in mamba.items() if k != "module"}}
    path = out / "gpu_run.json"
    path.write_text(json.dumps(result, indent=1, default=str))
    for row in steps["timings"]:
        print(f"  {row['kernel']:<60} {row['seconds'] * 1e3:9.3f} ms  ref x{row.get('vs_reference', 0):.2f}"
              f"  floor {row['floor_s'] or 0:.3g} s")
    note = "rehearsal: interpreted, tiny sizes, not measurements" if args.tiny else "bring this folder home"
    print(f"wrote {path}; tuned cache in {out / 'cache' / 'tuned'} ({note}); {result['seconds']:.0f} s")
    return 0 if steps["tests"].get("returncode", 0) == 0 else 1


def _start_mamba_build(sdist: str | None, out: Path) -> dict:
    """Start building mamba-ssm from a carried sdist in the background (or say why not)."""
    if not sdist:
        return {"status": "skipped: no --mamba-sdist given (the device has no network to fetch it)"}
    if not Path(sdist).is_file():
        return {"status": f"skipped: {sdist} does not exist"}
    log = out / "mamba_build.log"
    target = out / "mamba_site"
    cmd = [sys.executable, "-m", "pip", "install", "--no-deps", "--no-build-isolation", "--no-index",
           "--target", str(target), sdist]
    env = dict(os.environ, MAMBA_FORCE_BUILD="TRUE", MAX_JOBS=str(os.cpu_count() or 4))
    proc = subprocess.Popen(cmd, stdout=log.open("w"), stderr=subprocess.STDOUT, env=env)
    print(f"building mamba-ssm in the background: {' '.join(cmd)} (log: {log})")
    return {"status": "building", "process": proc, "target": str(target), "log": str(log)}


def _run_tests(args, out: Path) -> dict:
    cmd = [sys.executable, "-m", "pytest", "-q", "-m", "gpu", "-p", "no:cacheprovider", str(ROOT / "tests")]
    if args.skip_tests or args.tiny:
        why = "--skip-tests" if args.skip_tests else "rehearsal: no GPU here, the gpu tests would skip"
        print(f"pytest -m gpu: not run ({why}); on a GPU: {' '.join(cmd)}")
        return {"command": " ".join(cmd), "status": f"not run: {why}"}
    t0 = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=240)
    (out / "pytest_gpu.log").write_text(done.stdout + done.stderr)
    summary = (done.stdout.strip().splitlines() or [""])[-1]
    print(f"pytest -m gpu: {summary} ({time.perf_counter() - t0:.0f} s)")
    return {"command": " ".join(cmd), "returncode": done.returncode, "summary": summary}


def _tune(args, out: Path) -> dict:
    cmd = [sys.executable, "-m", "scanforge.cli", "tune", "--trials", str(args.trials), "--budget-seconds", "20"]
    if args.tiny:
        cmd += ["--backend", "triton", "--variant", "causal", "--phase", "fwd", "--dtype", "float32", "--shapes",
                "x".join(map(str, TINY_SHAPES["selective_scan"])), "--trials", "2", "--in-process"]
    if args.skip_tune:
        return {"command": " ".join(cmd), "status": "not run: --skip-tune"}
    t0 = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=300,
                          env=dict(os.environ, PYTHONPATH=str(ROOT)))
    (out / "tune.log").write_text(done.stdout + done.stderr)
    files = sorted(str(p.relative_to(out)) for p in (out / "cache" / "tuned").glob("*.json"))
    print(f"tune: exit {done.returncode} in {time.perf_counter() - t0:.0f} s; tuned cache files: {files or 'none'}"
          + (" (rehearsal: interpreted timings, not a tuning result)" if args.tiny else ""))
    return {"command": " ".join(cmd), "returncode": done.returncode, "cache_files": files}


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    sys.path.insert(0, str(ROOT))
    sys.exit(main())
