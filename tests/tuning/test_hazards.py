"""The GPU-only failure classes of :mod:`scanforge.tuning.hazards`, checked on meta tensors and template sources
(no GPU): 32-bit offsets, grid limits, alignment assumptions, atomics."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import pytest
import torch

from scanforge.kernels import codegen
from scanforge.kernels.ir import GatherSpec, Phase, ScanSpec
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
    return [dict(wide=launch.kwargs.get("WIDE"), int32=hazards.int32_offsets(launch)) for launch in launches]

bwd = GatherSpec(summary="mean", weight="sigmoid", phase=Phase.BACKWARD)
out = {}
for spec in (dataclasses.replace(bwd, phase=Phase.FORWARD), bwd):
    out[spec.phase.value] = dict(small=run(spec, (16, 576, 1024, 144)), wide=run(spec, (2, 2**17, 2**14 + 8, 144)))
out["scan_fine"] = run(ScanSpec(has_D=True), (64, 2048, 4096, 16))
out["scan_past"] = run(ScanSpec(has_D=True), (1, 4096, 2**19 + 16, 16))
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


def test_a_scan_row_of_2_to_the_31_elements_is_the_documented_int32_limit(probe):
    assert not any(launch["int32"] for launch in probe["scan_fine"])  # batch offsets are int64
    flagged = {name for launch in probe["scan_past"] for name in launch["int32"]}
    assert {"u_ptr", "delta_ptr", "y_ptr"} <= flagged, flagged
    assert "dim x L >= 2**31" in hazards.__doc__


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
