"""Before/after table of `scanforge compile --json` results: registers, spills, warps per SM, MUFU.EX2.

    scanforge compile --target sm_80 --target sm_90 --json after.json
    python benchmarks/compile_table.py before.json after.json --target sm_90 > table.md

"ex2/elem" is the static MUFU.EX2 count of a Triton scan or decode kernel times its threads, per
(channel, state, step) of one tile (BLOCK_D x N x BLOCK_L; BLOCK_D x N for decode): ~1 means one
hardware exponential per state update (more: softplus, sigmoid, a second direction).
"""

from __future__ import annotations

import argparse
import json


def _key(r: dict) -> tuple:
    return (r["backend"], r["variant"], r["phase"], r["dtype"], r["kernel"], r["target"])


def _ex2_per_element(r: dict) -> str:
    c, shape = r["config"], [int(v) for v in r["shape"].split("x")]
    if r["backend"] != "triton" or not r["family"].startswith("scan") or not r.get("mufu_ex2"):
        return "-"
    tile = c["BLOCK_D"] * shape[3] * (c.get("BLOCK_L", 1) if r["family"] != "scan_decode" else 1)
    return f"{r['mufu_ex2'] * 32 * r['warps_per_block'] / tile:.2f}"


def _cell(r: dict | None) -> tuple[str, ...]:
    if r is None:
        return ("-",) * 4
    if r.get("error"):
        return ("error", "-", "-", "-")
    warps = (r.get("occupancy") or {}).get("warps", "-")
    return (str(r["registers"]), str(r["spill"]), str(warps), _ex2_per_element(r))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("before")
    p.add_argument("after")
    p.add_argument("--target", default="sm_90")
    args = p.parse_args()
    before = {_key(r): r for r in json.load(open(args.before))["rows"] if r["target"] == args.target}
    after = {_key(r): r for r in json.load(open(args.after))["rows"] if r["target"] == args.target}
    print("| backend | variant | phase | dtype | kernel | regs before → after | spill B before → after | "
          "warps/SM before → after | ex2/elem before → after | verdict after |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for key in sorted(set(before) | set(after), key=lambda k: tuple(map(str, k))):
        b, a = _cell(before.get(key)), _cell(after.get(key))
        verdict = after[key]["verdict"] if key in after else "-"
        print(f"| {' | '.join(key[:5])} | {b[0]} → {a[0]} | {b[1]} → {a[1]} | {b[2]} → {a[2]} | {b[3]} → {a[3]} | "
              f"{verdict} |")


if __name__ == "__main__":
    main()
