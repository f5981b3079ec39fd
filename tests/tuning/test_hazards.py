"""The GPU-only failure classes of :mod:`scanforge.tuning.hazards`, checked on meta tensors and template sources
(no GPU): 32-bit offsets (and interpreted runs proving the int64 offsets change no result), grid limits, alignment
assumptions, atomics."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import pytest
import torch

from scanforge import backends
from scanforge.backends import triton as triton_backend
from scanforge.kernels import codegen
from scanforge.kernels.ir import GatherSpec, Phase, ScanSpec
from scanforge.testing.accuracy import random_scan_inputs
from scanforge.testing.examples import random_decode_inputs
from scanforge.tuning import hazards
from scanforge.tuning.cuda_tools import compile_environment
from scanforge.tuning.spaces import space_for

GATHER_BWD = GatherSpec(summary="mean", weight="sigmoid", phase=Phase.BACKWARD)


def _default(backend: str, spec) -> dict:
    return dict(space_for(backend, codegen.family(spec), vendor="nvidia").default)


PROBE = """
import dataclasses, json
from scanforge.kernels.codegen import family
from scanforge.kernels.ir import GatherSpec, Phase, ScanSpec
from scanforge.tuning import hazards
from scanforge.tuning.capture import capture
from scanforge.tuning.spaces import space_for

def run(spec, shape):
    launches = capture("triton", spec, shape, space_for("triton", family(spec), vendor="nvidia").default)
    return [dict(kernel=launch.kernel.fn.__name__, wide=launch.kwargs.get("WIDE"), int32=hazards.int32_offsets(launch),
                 narrow=hazards.int32_offsets(dataclasses.replace(launch, kwargs={**launch.kwargs, "WIDE": False})))
            for launch in launches]

bwd = GatherSpec(summary="mean", weight="sigmoid", phase=Phase.BACKWARD)
out = {}
for spec in (dataclasses.replace(bwd, phase=Phase.FORWARD), bwd):
    out[spec.phase.value] = dict(small=run(spec, (16, 576, 1024, 144)), wide=run(spec, (2, 2**17, 2**14 + 8, 144)))
scans = [ScanSpec(has_D=True, has_z=True, phase=phase) for phase in (Phase.FORWARD, Phase.BACKWARD)]
scans += [ScanSpec(direction="bidirectional", phase=Phase.BACKWARD), ScanSpec(stride=4, phase=Phase.BACKWARD),
          ScanSpec(gated=True, has_D=True, phase=Phase.BACKWARD)]
decode = [ScanSpec(phase=Phase.DECODE, has_D=True), ScanSpec(phase=Phase.DECODE, stride=4)]
out["scan_fine"] = [x for spec in scans for x in run(spec, (64, 2048, 4096, 16))]
out["scan_fine"] += [x for spec in decode for x in run(spec, (64, 2048, 1, 16))]
out["scan_past"] = [x for spec in scans for x in run(spec, (1, 4096, 2**19 + 16, 16))]
out["scan_bc"] = run(ScanSpec(), (1, 8, 2**27 + 16, 16))  # B and C pass 2**31 (N x L), u and y do not (dim x L)
out["scan_chunks"] = run(ScanSpec(phase=Phase.BACKWARD), (128, 2048, 2**14 + 32, 16))  # only the chunk states pass it
out["decode_past"] = [x for spec in decode for x in run(spec, (2, 2**17 + 16, 1, 2**14))]  # a state row: dim x N
print(json.dumps(out))
"""


@pytest.fixture(scope="module")
def probe() -> dict:
    """Launches captured in a process with Triton compiled (capture records compiled kernels, not interpreted)."""
    done = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, timeout=600,
                          env=compile_environment())
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_the_gather_computes_offsets_in_int64_once_a_row_passes_2_to_the_31(probe):
    for phase in ("fwd", "bwd"):
        assert all(launch["wide"] is False for launch in probe[phase]["small"])
        assert all(launch["wide"] is True and not launch["int32"] for launch in probe[phase]["wide"])


def _flagged(launches, kernel=None) -> set[str]:
    """What int32_offsets would name in these launches with WIDE off."""
    return {name for launch in launches if kernel in (None, launch["kernel"]) for name in launch["narrow"]}


def test_the_scan_kernels_compute_offsets_in_int64_once_a_row_passes_2_to_the_31(probe):
    kernels = {launch["kernel"] for launch in probe["scan_past"] + probe["decode_past"]}
    assert kernels == {"scan_fwd_kernel", "scan_bwd_kernel", "decode_kernel"}
    assert probe["scan_fine"] and all(launch["wide"] is False and not launch["narrow"] for launch in probe["scan_fine"])
    for case in ("scan_past", "scan_bc", "scan_chunks", "decode_past"):
        assert probe[case] and all(launch["wide"] is True and not launch["int32"] for launch in probe[case]), case
    # ... where int32 offsets would wrap: a row of u, delta, y (dim x L), of B and C alone (N x L), the chunk states
    # (chunks x rows x dim x N), a decode state row (dim x N)
    assert {"u_ptr", "delta_ptr", "y_ptr", "du_ptr", "states_ptr"} <= _flagged(probe["scan_past"])
    assert {"B_ptr", "C_ptr"} == _flagged(probe["scan_bc"])
    assert "states_ptr" in _flagged(probe["scan_chunks"], "scan_bwd_kernel") <= {"states_ptr", "states_rev_ptr"}
    assert {"state_ptr"} <= _flagged(probe["decode_past"])
    assert "dim x L >= 2**31" in hazards.__doc__ and "WIDE" in hazards.__doc__


#: Every Triton scan kernel family: forward and backward of a plain, bidirectional, strided and gated scan; decode.
WIDE_SPECS = [
    ScanSpec(has_D=True, has_z=True, has_delta_bias=True, softplus=True, has_initial_state=True,
             return_last_state=True),
    ScanSpec(direction="bidirectional", has_D=True, has_z=True),
    ScanSpec(stride=3, has_D=True, has_z=True),
    ScanSpec(gated=True, gate_mode="soft", has_delta_bias=True, softplus=True),
]


def _run_scan(spec, inputs, dy):
    backend = backends.get("triton")
    y, h_last = backend.scan_forward(spec, inputs)
    grads = backend.scan_backward(spec, inputs, dy, torch.ones_like(h_last) if spec.return_last_state else None)
    return [y, h_last, *grads.values()]


def _force_wide(monkeypatch) -> list[bool]:
    """Make every Triton scan launcher choose WIDE (its threshold at 0); returns what the launchers chose."""
    chosen = []
    loaded = triton_backend._module

    def module(*args, **kwargs):
        m = loaded(*args, **kwargs)
        if hasattr(m, "WIDE_FROM"):
            wide = m._wide
            monkeypatch.setattr(m, "WIDE_FROM", 0)
            monkeypatch.setattr(m, "_wide", lambda *t, **k: chosen.append(wide(*t, **k)) or chosen[-1])
        return m

    monkeypatch.setattr(triton_backend, "_module", module)
    return chosen


@pytest.mark.parametrize("spec", WIDE_SPECS, ids=lambda s: s.key()[:40])
def test_wide_scan_kernels_match_the_int32_ones(spec, monkeypatch):
    """Interpreted: int64 offsets (WIDE) give bit-identical outputs and gradients on a small input (3 chunks)."""
    inputs = random_scan_inputs(spec, 2, 6, 37, 4, seed=3)
    dy = torch.randn(inputs.u.shape, generator=torch.Generator().manual_seed(4))
    narrow = _run_scan(spec, inputs, dy)
    chosen = _force_wide(monkeypatch)
    wide = _run_scan(spec, inputs, dy)
    assert len(chosen) == 3 and all(chosen)  # forward, the backward's recomputation, backward
    for a, b in zip(narrow, wide):
        assert torch.equal(a, b)


@pytest.mark.parametrize("spec", [ScanSpec(phase=Phase.DECODE, has_D=True, has_z=True),
                                  ScanSpec(phase=Phase.DECODE, stride=4)], ids=["decode", "decode k=4"])
def test_the_wide_decode_step_matches_the_int32_one(spec, monkeypatch):
    backend = backends.get("triton")
    runs = []
    for force in (False, True):
        chosen = _force_wide(monkeypatch) if force else []
        inputs = random_decode_inputs(spec, 2, 40, 4, seed=5)
        runs.append([backend.scan_decode(spec, inputs), inputs.state, *(inputs.window or ())])
        assert chosen == ([True] if force else [])
    for a, b in zip(*runs):
        assert torch.equal(a, b)


class _GridRecorder:
    def __init__(self):
        self.grids = []

    def __getitem__(self, grid):
        self.grids.append(tuple(grid))
        return lambda *args, **kwargs: None


def _meta(shape, dtype=torch.float32):
    return torch.empty(shape, dtype=dtype, device="meta")


def test_the_gather_backward_grid_stays_on_axis_0_past_65535_token_blocks(monkeypatch):
    module = codegen.load(GATHER_BWD.adjoint() if GATHER_BWD.phase is Phase.FORWARD else GATHER_BWD, "triton",
                          _default("triton", GATHER_BWD))
    recorder = _GridRecorder()
    monkeypatch.setattr(module, "gather_bwd_kernel", recorder)
    batch, T, d, k = 2, 5_000_000, 8, 16  # 78125 blocks of 64 tokens per row
    x = _meta((batch, T, d))
    module.launch_backward(x, k, None, _meta((batch, T), torch.int32), _meta((batch, k + 1, d)), _meta(x.shape),
                           None)
    assert recorder.grids == [(batch * -(-T // 64),)] and not hazards.grid_problems(recorder.grids[0])
    assert hazards.grid_problems((1, 78125)) == ["grid axis 1: 78125 programs > 65535"]


def test_the_scan_grid_holds_any_mamba_width():
    for phase in (Phase.FORWARD, Phase.BACKWARD):
        block_d = _default("triton", ScanSpec(phase=phase))["BLOCK_D"]
        assert hazards.GRID_AXIS_LIMIT * block_d >= 4 * 16384  # dim on axis 1: Mamba widths are <= 16384


def test_no_template_assumes_alignment_or_contiguity():
    for backend in ("triton", "numba_cuda"):
        for path in codegen.templates_dir(backend).iterdir():
            text = path.read_text()
            assert not re.search(r"multiple_of|max_contiguous|tl\.assume|assume_aligned", text), path


def test_every_atomic_add_is_listed_in_the_audit():
    found = set()
    for backend in ("triton", "numba_cuda", "numba_cpu"):
        for path in codegen.templates_dir(backend).iterdir():
            if re.search(r"atomic_add|atomic\.add", path.read_text()):
                found.add((backend, path.name))
    assert found == {(backend, template) for backend, template, _ in hazards.ATOMICS}


@pytest.mark.parametrize("shape, layout, expected", [
    ((4, 576, 1024), "contiguous", 575 * 1024 + 1023),
    ((4, 576, 1024), "transposed", 1023 * 576 + 575),
])
def test_in_row_span(shape, layout, expected):
    x = torch.empty(shape, device="meta")
    if layout == "transposed":
        x = torch.empty((shape[0], shape[2], shape[1]), device="meta").transpose(1, 2)
    assert hazards.in_row_span(tuple(x.shape), x.stride()) == expected
