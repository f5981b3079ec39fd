"""`scanforge compile`: every GPU kernel compiles for sm_80, sm_90 (NVIDIA), gfx90a and gfx942 (AMD) without
spilling, in both the contiguous and the generic-stride specialisation (the CI gate), and the tool's own pieces
(occupancy, tool lookup, bad input) behave."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from scanforge.kernels.variants import DECODE_VARIANTS, GATHER_VARIANTS, SCAN_VARIANTS
from scanforge.tuning import compile_plan, cuda_tools, targets


def _scanforge(*args: str, timeout: float = 3600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", "import sys; from scanforge.cli import main; sys.exit(main())",
                           *args], capture_output=True, text=True, timeout=timeout)


#: The gate's targets, and those compiled with generic strides too (one per vendor: the specialisation is the same
#: Triton argument analysis on every target of a vendor, and each extra target costs CI time).
GATE_TARGETS = ("sm_80", "sm_90", "gfx90a", "gfx942")
GENERIC_TARGETS = ("sm_90", "gfx942")


@pytest.fixture(scope="module")
def gate(tmp_path_factory) -> tuple[list[subprocess.CompletedProcess], list[dict]]:
    """The gate as CI runs it: every variant x phase x fp32/bf16 x default config, both backends (Numba-CUDA on
    NVIDIA only), contiguous inputs on every target and generic-stride views on one target per vendor."""
    runs, rows = [], []
    for name, flags in (("contiguous", [*(f for t in GATE_TARGETS if t not in GENERIC_TARGETS
                                          for f in ("--target", t)), "--layout", "contiguous"]),
                        ("both", [f for t in GENERIC_TARGETS for f in ("--target", t)])):
        out = tmp_path_factory.mktemp("compile") / f"{name}.json"
        runs.append(_scanforge("compile", *flags, "--json", str(out)))
        rows += json.loads(out.read_text())["rows"] if out.exists() else []
    return runs, rows


def test_gate_every_kernel_compiles_without_spills_and_reaches_the_occupancy_floor(gate):
    runs, rows = gate
    bad = [(r["backend"], r["kernel"], r["variant"], r["phase"], r["dtype"], r["layout"], r["target"], r["verdict"],
            r.get("error")) for r in rows if r["verdict"] != "ok"]
    assert all(done.returncode == 0 for done in runs) and not bad, (
        bad, [(done.stdout[-3000:], done.stderr[-3000:]) for done in runs])


def test_gate_covers_every_variant_phase_dtype_layout_target_and_backend(gate):
    _, rows = gate
    seen = {(r["backend"], r["variant"], r["phase"], r["dtype"], r["layout"], r["target"]) for r in rows}
    expected = {(b, v, p, d, layout, t) for b in targets.GPU_BACKENDS for d in ("float32", "bfloat16")
                for t in targets.for_backend(b, GATE_TARGETS)
                for layout in (("contiguous", "generic") if t in GENERIC_TARGETS else ("contiguous",))
                for table, phases in ((SCAN_VARIANTS, ("fwd", "bwd")), (DECODE_VARIANTS, ("decode",)),
                                      (GATHER_VARIANTS, ("fwd", "bwd")))
                for v in table for p in phases}
    assert expected <= seen, sorted(expected - seen)[:10]
    assert not any(r["backend"] == "numba_cuda" and r["target"].startswith("gfx") for r in rows)
    for r in rows:  # strided kernels failed to compile before STRIDE became a constexpr
        assert r["registers"] > 0 and r["error"] is None, r


def test_generic_strides_compile_another_kernel(gate):
    """The generic layout reaches Triton's other specialisation: somewhere its registers differ."""
    _, rows = gate
    by = {}
    for r in rows:
        if r["backend"] == "triton" and r["target"] in GENERIC_TARGETS:
            by.setdefault((r["kernel"], r["variant"], r["phase"], r["dtype"], r["target"]), {})[r["layout"]] = \
                r["registers"]
    assert any(v.get("contiguous") != v.get("generic") for v in by.values())


def test_gate_records_the_physical_floor_beside_the_table(tmp_path):
    out = tmp_path / "one.json"
    done = _scanforge("compile", "--target", "sm_90", "--backend", "triton", "--variant", "causal", "--phase", "fwd",
                      "--dtype", "bfloat16", "--json", str(out))
    assert done.returncode == 0, done.stderr
    data = json.loads(out.read_text())
    floors = {f["card"]: f for f in data["floors"]}
    assert set(floors) == {"H100 SXM", "H200"}
    # (8, 2048, 2048, 16): 5.4e8 exponentials, ~1.3e-4 s of SFU time on 132 SMs at 1.98 GHz: exp-bound.
    assert floors["H100 SXM"]["exps"] == 8 * 2048 * 2048 * 16 and floors["H100 SXM"]["bound"] == "exp"
    assert floors["H200"]["memory_s"] < floors["H100 SXM"]["memory_s"]


@pytest.mark.parametrize("registers, shared, warps, expected", [
    (168, 0, 4, 12),  # mamba-ssm's budget: 3 blocks of 128 threads
    (255, 0, 4, 8), (96, 0, 4, 20), (32, 0, 4, 64),  # the thread limit
    (32, 100_000, 4, 8),  # two blocks of ~98 KiB shared memory
])
def test_warps_per_sm_from_the_target_limits(registers, shared, warps, expected):
    assert targets.TARGETS["sm_90"].warps_per_sm(registers, shared, warps)["warps"] == expected


@pytest.mark.parametrize("flags, message", [
    (["--target", "sm_75"], "--target: expected one of"),
    (["--layout", "transposed"], "--layout: expected one of"),
    (["--backend", "cuda_c"], "--backend: expected one of"),
    (["--variant", "diagonal"], "--variant: unknown ['diagonal']"),
])
def test_bad_input_names_the_argument(flags, message):
    done = _scanforge("compile", *flags, timeout=300)
    assert done.returncode == 2 and message in " ".join((done.stderr + done.stdout).split()), done.stderr


def test_a_config_outside_the_space_is_refused(tmp_path):
    path = tmp_path / "bad.toml"
    path.write_text('[scan_fwd]\nBLOCK_Q = 8\n')
    done = _scanforge("compile", "--backend", "triton", "--variant", "causal", "--config", str(path), timeout=300)
    assert done.returncode == 2 and "[scan_fwd] has no parameter 'BLOCK_Q'" in " ".join(done.stderr.split())
    with pytest.raises(ValueError, match="BLOCK_L = 48 is not one of"):
        compile_plan.check_config("triton", "scan_fwd", {"BLOCK_L": 48}, "x.toml")


def test_a_missing_ptxas_says_where_it_was_looked_for(monkeypatch, tmp_path):
    monkeypatch.setattr(cuda_tools, "_tool_dirs", lambda: [tmp_path])
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(FileNotFoundError, match=f"ptxas not found: looked in .*{tmp_path}"):
        cuda_tools.find_tool("ptxas")


def test_the_compiling_process_refuses_an_interpreted_triton():
    if os.environ.get("TRITON_INTERPRET") != "1":
        pytest.skip("this test process runs triton compiled")
    with pytest.raises(RuntimeError, match="TRITON_INTERPRET=0"):
        cuda_tools.check_compiling_process()
