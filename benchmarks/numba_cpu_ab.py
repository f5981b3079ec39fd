"""A/B of the Numba CPU scan kernels between two checkouts of scanforge, on one machine, back to back.

    python benchmarks/numba_cpu_ab.py BEFORE_CHECKOUT AFTER_CHECKOUT [--rounds 3] [--shape B D L N]

A change to the templates or the host code must leave the kernels' speed alone unless it says otherwise; this
times forward and forward+backward of the causal, strided (k = 8) and gated (~1/8 firing) scans with each
checkout's code, alternating the two in fresh processes (``rounds`` of each, medians of 7 calls per round)
so that a drift of the machine hits both sides alike. Both sides share one kernel cache folder: modules are
named by the hash of their own text, so a checkout never runs the other's kernels. Writes
benchmarks/results/numba_cpu_ab.json (each round's rows, the medians across rounds, after / before ratios).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile

from timing import write_results

#: Runs inside one checkout: imports its scanforge and prints {variant: [forward s, forward+backward s]}.
_PROBE = r"""
import json, sys, time
sys.path.insert(0, sys.argv[1])
import torch
import scanforge as sf
assert sf.__file__.startswith(sys.argv[1]), sf.__file__
b, d, L, N = (int(v) for v in sys.argv[2:6])
g = torch.Generator().manual_seed(0)
x = dict(u=torch.randn(b, d, L, generator=g), delta=torch.rand(b, d, L, generator=g) * 0.02 + 0.001,
         A=-torch.rand(d, N, generator=g) - 0.5, B=torch.randn(b, N, L, generator=g),
         C=torch.randn(b, N, L, generator=g), D=torch.randn(d, generator=g), z=torch.randn(b, d, L, generator=g))
gate = (torch.rand(b, L, generator=g) > 0.875).float()

def median(fn, repeats=7):
    fn(); fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter(); fn(); times.append(time.perf_counter() - start)
    return sorted(times)[repeats // 2]

rows = {}
for name, options in {"causal": {}, "strided k=8": {"stride": 8}, "gated ~1/8": {"gate": gate}}.items():
    leaves = {k: v.clone().requires_grad_(True) for k, v in x.items()}
    with torch.no_grad():
        forward = median(lambda: sf.selective_scan(**x, **options, backend="numba_cpu"))
    both = median(lambda: sf.selective_scan(**leaves, **options, backend="numba_cpu").sum().backward())
    rows[name] = [forward, both]
print(json.dumps(rows))
"""


def _commit(checkout: str) -> str:
    """The checkout's commit (its working tree may hold more), as the results name it instead of a local path."""
    done = subprocess.run(["git", "-C", checkout, "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
    return done.stdout.strip() or "unknown"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("before", help="a checkout of scanforge (its repository root)")
    parser.add_argument("after", help="another checkout")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--shape", type=int, nargs=4, default=[2, 512, 2048, 16], metavar=("B", "D", "L", "N"))
    args = parser.parse_args()
    env = dict(os.environ, SCANFORGE_CACHE_DIR=tempfile.mkdtemp(prefix="scanforge-ab-"))
    runs: dict[str, list[dict]] = {"before": [], "after": []}
    for _ in range(args.rounds):
        for side in ("before", "after"):
            checkout = os.path.abspath(getattr(args, side))
            done = subprocess.run([sys.executable, "-c", _PROBE, checkout, *map(str, args.shape)], env=env,
                                  capture_output=True, text=True, check=True)
            runs[side].append(json.loads(done.stdout.strip().splitlines()[-1]))
            print(side, runs[side][-1])
    rows = []
    for variant in runs["before"][0]:
        for i, phase in enumerate(("fwd_s", "fwd_bwd_s")):
            before = statistics.median(r[variant][i] for r in runs["before"])
            after = statistics.median(r[variant][i] for r in runs["after"])
            rows.append({"variant": variant, "timing": phase, "before": before, "after": after,
                         "after_over_before": after / before,
                         "spread_before": [min(r[variant][i] for r in runs["before"]),
                                           max(r[variant][i] for r in runs["before"])],
                         "spread_after": [min(r[variant][i] for r in runs["after"]),
                                          max(r[variant][i] for r in runs["after"])]})
            print(rows[-1])
    commits = {side: _commit(getattr(args, side)) for side in ("before", "after")}
    notes = (f"shape (B, D, L, N) = {tuple(args.shape)} fp32 with D and z; before = commit {commits['before']}, "
             f"after = commit {commits['after']}; medians of {args.rounds} alternating rounds")
    print(write_results("numba_cpu_ab", rows, notes, runs=runs))


if __name__ == "__main__":
    main()
