"""AMD Instinct targets: occupancy from the CDNA limits, the amdgcn metadata a report is read from, the vendor's
search space, a ROCm device's fingerprint and backend choice (simulated: no AMD GPU here), and bad input."""

from __future__ import annotations

import subprocess
import sys
from types import SimpleNamespace

import pytest
import torch

from scanforge import backends
from scanforge.backends import machine
from scanforge.backends.numba_cuda import NumbaCUDABackend
from scanforge.kernels.ir import GatherSpec, ScanSpec
from scanforge.tuning import aot, capture, cuda_tools, fingerprint, spaces, targets


def _scanforge(*args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", "import sys; from scanforge.cli import main; sys.exit(main())",
                           *args], capture_output=True, text=True, timeout=timeout)


@pytest.mark.parametrize("vgprs, agprs, lds, waves, expected", [
    (64, 0, 0, 4, 8),  # 512 // 64
    (65, 0, 0, 4, 7),  # rounded up to 72 (granules of 8): 512 // 72
    (128, 0, 0, 4, 4), (256, 0, 0, 4, 2), (512, 0, 0, 4, 1),
    (126, 64, 0, 4, 2),  # unified: AGPRs start at 128 (VGPRs rounded to 4): 192 -> 512 // 192
    (32, 0, 32768, 4, 2),  # two workgroups of 32 KiB LDS per CU, one wave of each per SIMD
    (32, 0, 0, 1, 8),  # one-wave workgroups are not capped at 16 per CU: 32 of them, 8 per SIMD
])
def test_waves_per_simd_from_the_cdna3_limits(vgprs, agprs, lds, waves, expected):
    occ = targets.TARGETS["gfx942"].waves_per_simd(vgprs, agprs, 16, lds, waves)
    assert occ["warps"] == expected, occ


def test_gfx950_has_160_kib_of_lds_and_the_same_register_file():
    gfx942, gfx950 = targets.TARGETS["gfx942"], targets.TARGETS["gfx950"]
    assert (gfx942.lds, gfx950.lds) == (65536, 163840) and gfx942.vgprs == gfx950.vgprs == 512
    assert gfx950.waves_per_simd(32, 0, 16, 40960, 4)["by_shared"] == 4 > \
        gfx942.waves_per_simd(32, 0, 16, 40960, 4)["by_shared"]


AMDGCN = """
    .amdhsa_kernel scan_fwd_kernel
    ...
    v_exp_f32_e32 v1, v2
    v_exp_f32 v3, v4
  - .agpr_count:     4
    .group_segment_fixed_size: 1024
    .private_segment_fixed_size: 16
    .sgpr_count:     54
    .sgpr_spill_count: 2
    .vgpr_count:     97
    .vgpr_spill_count: 3
"""


def test_a_report_reads_the_amdgcn_metadata_and_refuses_spills_and_scratch():
    report = aot.amd_report("scan_fwd_kernel", targets.TARGETS["gfx942"], AMDGCN, num_warps=4, shared=0)
    assert (report.registers, report.agprs, report.sgprs, report.sgpr_spill) == (97, 4, 54, 2)
    assert (report.spill, report.stack, report.shared, report.exps) == (12, 16, 1024, 2)
    report.occupancy = targets.TARGETS["gfx942"].occupancy(report)
    assert report.occupancy["warps"] == 4  # 100 + 4 -> 104 registers: 512 // 104
    assert aot.verdict("scan_fwd", report) == "spills 12 B"
    report.spill = 0
    assert aot.verdict("scan_fwd", report) == "scratch 16 B"
    report.stack = 0
    assert aot.verdict("scan_fwd", report) == "ok"
    report.occupancy["warps"] = 2
    assert aot.verdict("scan_fwd", report) == "2 waves/SIMD < 3"


def test_the_amd_space_adds_its_launch_options_and_nvidia_keeps_its_own():
    amd = spaces.space_for("triton", "gather_bwd", vendor="amd")
    nvidia = spaces.space_for("triton", "gather_bwd", vendor="nvidia")
    assert "waves_per_eu" in amd.params and "waves_per_eu" not in nvidia.params
    assert amd.default["num_warps"] * 64 == nvidia.default["num_warps"] * 32  # the same lanes per program
    assert spaces.space_for("triton", "scan_fwd", vendor="amd") == spaces.space_for("triton", "scan_fwd",
                                                                                   vendor="nvidia")


def test_a_bad_vendor_overlay_is_refused_when_the_file_is_read(tmp_path):
    path = tmp_path / "t.toml"
    path.write_text("[scan_fwd.params]\nBLOCK_D = [1, 2]\n[scan_fwd.default]\nBLOCK_D = 1\n"
                    "[scan_fwd.amd.default]\nBLOCK_D = 4\n")
    with pytest.raises(ValueError, match=r"\[scan_fwd.amd\].*BLOCK_D: 4 is not one of"):
        spaces.parse_file(path)


def test_generic_strides_are_never_1_nor_a_multiple_of_16_and_the_views_do_not_overlap():
    for shape in [(8, 2048, 2048), (16, 576, 1024), (3, 1, 5), (7,)]:
        strides = capture.generic_strides(shape)
        assert all(s != 1 and s % 16 for s in strides), strides
        for inner in range(1, len(shape)):  # an outer stride spans the inner dimensions
            assert strides[inner - 1] > (shape[inner] - 1) * strides[inner]
    view = capture.restride(torch.empty((4, 32, 16), device="meta"))
    assert view.shape == (4, 32, 16) and view.data_ptr() % 16 and not view.is_contiguous()


@pytest.fixture
def rocm(monkeypatch):
    """A ROCm build of PyTorch on an MI300X (torch.version.hip and the device's properties)."""
    def device(name: str, arch: str):
        monkeypatch.setattr(torch.version, "hip", "6.4.43484", raising=False)
        monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
        monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
        monkeypatch.setattr(torch.cuda, "get_device_name", lambda index=0: name)
        monkeypatch.setattr(torch.cuda, "get_device_properties",
                            lambda index=0: SimpleNamespace(gcnArchName=f"{arch}:sramecc+:xnack-", name=name))
        monkeypatch.setattr(torch.cuda, "get_device_capability", lambda index=0: (9, 4))
        machine.gpu_name.cache_clear()
        fingerprint.fingerprint.cache_clear()
        monkeypatch.setattr(backends.get("triton"), "runs_on_gpu", lambda: True)
        return fingerprint.fingerprint("triton")

    yield device
    machine.gpu_name.cache_clear()
    fingerprint.fingerprint.cache_clear()


def test_a_rocm_device_is_named_by_its_architecture_and_hip_version(rocm):
    mi300x = rocm("AMD Instinct MI300X", "gfx942")
    assert mi300x["device"] == "AMD Instinct MI300X gfx942 HIP 6.4.43484"
    assert targets.device_target() == "gfx942" and spaces.machine_vendor() == "amd"
    mi250x = rocm("AMD Instinct MI250X", "gfx90a")
    assert targets.device_target() == "gfx90a"
    assert fingerprint.fingerprint_id(mi300x) != fingerprint.fingerprint_id(mi250x)
    assert mi250x["device"] != mi300x["device"]


def test_a_cache_tuned_on_mi300x_is_not_used_on_mi250x_nor_on_an_nvidia_card(rocm, monkeypatch):
    mi300x = rocm("AMD Instinct MI300X", "gfx942")
    mi250x = rocm("AMD Instinct MI250X", "gfx90a")
    monkeypatch.setattr(torch.version, "hip", None)
    machine.gpu_name.cache_clear()
    fingerprint.fingerprint.cache_clear()
    h100 = fingerprint.fingerprint("triton")
    assert h100["device"].endswith("sm_94") and len({f["device"] for f in (mi300x, mi250x, h100)}) == 3


def test_on_rocm_backend_none_runs_triton_and_numba_cuda_says_it_needs_cuda(rocm, monkeypatch):
    rocm("AMD Instinct MI300X", "gfx942")
    monkeypatch.setattr("scanforge.backends.numba_cuda.simulated", lambda: False)
    spec, gpu = ScanSpec(has_D=True), torch.device("cuda")
    reason = NumbaCUDABackend().unsupported_reason(spec, gpu)
    assert reason.startswith("numba-cuda compiles for NVIDIA GPUs (CUDA) only") and "\n" not in reason
    monkeypatch.setattr(backends.get("triton"), "unsupported_reason", lambda spec, device: None)
    assert backends.resolve(None, spec, gpu) == "triton"
    assert backends.resolve(None, GatherSpec(), gpu) == "triton"
    monkeypatch.setattr(backends.get("triton"), "unsupported_reason", lambda spec, device: "not here")
    assert backends.resolve(None, spec, gpu) == "reference"  # never numba_cuda on ROCm
    with pytest.raises(NotImplementedError, match="NVIDIA GPUs"):
        backends.resolve("numba_cuda", spec, gpu)


def test_a_triton_without_the_amd_backend_is_one_clear_line(monkeypatch):
    import triton.backends

    monkeypatch.setattr(triton.backends, "backends", {"nvidia": object()})
    with pytest.raises(ValueError, match=r"--target gfx942: this Triton \(.*\) has no AMD backend") as e:
        cuda_tools.check_target_tools(["gfx942"])
    assert "\n" not in str(e.value)


def test_an_unknown_target_names_the_known_ones():
    done = _scanforge("compile", "--target", "gfx1100", timeout=300)
    message = " ".join(done.stderr.split())
    assert done.returncode == 2 and "--target: expected one of" in message
    assert all(t in message for t in ("gfx90a", "gfx942", "gfx950", "sm_90"))


def test_tune_dry_run_lists_the_feasible_configs_for_gfx942():
    done = _scanforge("tune", "--dry-run", "--target", "gfx942", "--variant", "l2norm", "--phase", "bwd",
                      "--dtype", "float32", "--shapes", "4x576x256x144")
    text = " ".join(done.stdout.split())
    assert done.returncode == 0, done.stderr[-2000:]
    assert "compile for gfx942" in text and "waves/SIMD floor" in text and "waves_per_eu=" in text
