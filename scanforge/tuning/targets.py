"""The GPU architectures the offline compile gate knows, with the per-SM (NVIDIA) or per-SIMD (AMD) limits that
turn a compiled kernel's registers and shared memory into resident warps or waves (occupancy).

A target names its vendor, the Triton ``GPUTarget`` it compiles for, the backends whose kernels compile for it, and
its occupancy unit: resident warps per SM on NVIDIA, resident waves per SIMD on AMD. Floors (:data:`FLOORS`) are in
that unit.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

#: The backends whose kernels compile for a GPU target.
GPU_BACKENDS = ("triton", "numba_cuda")


def _round_up(value: int, granule: int) -> int:
    return -(-value // granule) * granule


@dataclass(frozen=True)
class Target:
    """An NVIDIA architecture's per-SM limits (CUDA C Programming Guide, "Compute Capabilities")."""

    name: str
    cc: tuple[int, int]
    max_warps: int = 64  # resident warps per SM
    max_ctas: int = 32  # resident blocks per SM
    registers: int = 65536  # 32-bit registers per SM
    shared: int = 233472  # shared memory per SM available to blocks, bytes
    shared_reserved: int = 1024  # per block, reserved by the system (sm_80 and later)

    vendor = "nvidia"
    warp_size = 32
    unit = "warps/SM"
    backends = GPU_BACKENDS

    def gpu_target(self) -> tuple[str, int | str, int]:
        """The ``triton.backends.compiler.GPUTarget`` fields (backend, arch, warp size)."""
        return "cuda", self.cc[0] * 10 + self.cc[1], self.warp_size

    def warps_per_sm(self, registers: int, shared: int, warps_per_block: int) -> dict[str, int]:
        """Resident warps per SM as limited by registers, shared memory and threads, and the minimum.

        Registers are allocated per warp in units of 256 (8 per thread); shared memory per block
        adds the reserved 1 KiB.
        """
        per_warp = _round_up(max(registers, 1) * 32, 256)
        by_regs = (self.registers // (per_warp * warps_per_block)) * warps_per_block
        by_threads = min(self.max_warps // warps_per_block, self.max_ctas) * warps_per_block
        by_shared = by_threads if shared == 0 else (
            self.shared // (shared + self.shared_reserved)) * warps_per_block
        return {"by_registers": by_regs, "by_shared": by_shared, "by_threads": by_threads,
                "warps": min(by_regs, by_shared, by_threads)}

    def occupancy(self, report) -> dict[str, int]:
        """Occupancy of a compiled kernel's report (:class:`scanforge.tuning.aot.KernelReport`)."""
        return self.warps_per_sm(report.registers, report.shared, report.warps_per_block)


@dataclass(frozen=True)
class AMDTarget:
    """An AMD Instinct (CDNA) architecture's per-CU limits.

    Sources: ROCm "AMD GPU specifications" (rocm.docs.amd.com/en/latest/reference/gpu-specs.html: 64 KiB LDS per
    CU on MI250X/gfx90a and MI300X/gfx942, 160 KiB on MI355X/gfx950; a 512 KiB VGPR file per CU, i.e. 4 SIMDs x 64
    lanes x 512 registers); LLVM's AMDGPU occupancy math (``GCNSubtarget::getOccupancyWithNumVGPRs``,
    ``AMDGPU::IsaInfo``, which ``llvm-calc-occupancy`` exposes): on gfx90a and later the VGPRs and AGPRs of a wave
    share one file of 512 per lane per SIMD (AGPRs start at the VGPR count rounded up to 4), allocated in granules of
    8; at most 8 waves per SIMD; 800 SGPRs per SIMD allocated in granules of 16; at most 16 workgroups per CU when a
    workgroup has more than one wave.
    """

    name: str
    card: str
    lds: int = 65536  # bytes per CU
    vgprs: int = 512  # VGPR + AGPR per lane per SIMD
    vgpr_granule: int = 8
    sgprs: int = 800  # per SIMD
    sgpr_granule: int = 16
    max_waves: int = 8  # per SIMD
    simds: int = 4  # per CU
    max_workgroups: int = 16  # per CU

    vendor = "amd"
    warp_size = 64
    unit = "waves/SIMD"
    backends = ("triton",)  # Numba compiles for CUDA only

    def gpu_target(self) -> tuple[str, int | str, int]:
        return "hip", self.name, self.warp_size

    def waves_per_simd(self, vgprs: int, agprs: int, sgprs: int, lds: int, waves_per_block: int) -> dict[str, int]:
        """Resident waves per SIMD as limited by registers (VGPR + AGPR, and SGPR), LDS and the wave and
        workgroup slots, and the minimum."""
        unified = (_round_up(vgprs, 4) + agprs) if agprs else vgprs
        by_regs = min(self.vgprs // _round_up(max(unified, 1), self.vgpr_granule), self.max_waves)
        by_sgprs = min(self.sgprs // _round_up(max(sgprs, 1), self.sgpr_granule), self.max_waves)
        slots = self.max_waves * self.simds  # waves per CU
        groups = slots // waves_per_block if waves_per_block == 1 else min(slots // waves_per_block,
                                                                          self.max_workgroups)
        by_threads = min(groups * waves_per_block // self.simds, self.max_waves)
        by_lds = by_threads if lds == 0 else min(
            min(self.lds // lds, groups) * waves_per_block // self.simds, self.max_waves)
        return {"by_registers": min(by_regs, by_sgprs), "by_shared": by_lds, "by_threads": by_threads,
                "warps": min(by_regs, by_sgprs, by_lds, by_threads)}

    def occupancy(self, report) -> dict[str, int]:
        return self.waves_per_simd(report.registers, report.agprs, report.sgprs, report.shared,
                                   report.warps_per_block)


#: The targets ``scanforge compile`` knows: A100 (sm_80: 164 KiB shared memory per SM), H100/H200
#: (sm_90: 228 KiB), B200 (sm_100: 228 KiB); MI250X (gfx90a), MI300X (gfx942), MI355X (gfx950).
TARGETS: dict[str, Target | AMDTarget] = {
    "sm_80": Target("sm_80", (8, 0), shared=167936),
    "sm_90": Target("sm_90", (9, 0)),
    "sm_100": Target("sm_100", (10, 0)),
    "gfx90a": AMDTarget("gfx90a", "MI250X"),
    "gfx942": AMDTarget("gfx942", "MI300X"),
    "gfx950": AMDTarget("gfx950", "MI355X", lds=163840),
}

#: The fewest resident warps per SM a family's default config must reach (mamba-ssm builds its
#: scan kernels for 3 blocks of 4 warps per SM). Gathers have no floor: they are memory-bound
#: with few, large blocks.
WARPS_FLOOR = {"scan_fwd": 12, "scan_decode": 12, "scan_bwd": 8}

#: The same floors on AMD, in waves per SIMD. A scan program walks its chunks one after another (an associative
#: scan, then the carry): a wave waits on its own chunk's loads, so latency is hidden only by other waves of the same
#: SIMD. NVIDIA's floors are 3 (forward, decode) and 2 (backward) warps per scheduler (12 and 8 warps over an SM's 4
#: schedulers); a CDNA SIMD issues for one wave at a time like a scheduler does, so the same 3 and 2 waves per SIMD.
WAVES_FLOOR = {"scan_fwd": 3, "scan_decode": 3, "scan_bwd": 2}

FLOORS = {"nvidia": WARPS_FLOOR, "amd": WAVES_FLOOR}


def floor(tgt: Target | AMDTarget, family: str) -> int:
    """The occupancy floor of ``family`` on ``tgt``, in the target's unit."""
    return FLOORS[tgt.vendor].get(family, 0)


def target(name: str) -> Target | AMDTarget:
    if name not in TARGETS:
        raise ValueError(f"--target: expected one of {sorted(TARGETS)}, got {name!r}")
    return TARGETS[name]


def for_backend(backend: str, names) -> tuple[str, ...]:
    """The targets of ``names`` that ``backend``'s kernels compile for (Numba-CUDA: NVIDIA only)."""
    return tuple(n for n in names if backend in target(n).backends)


def amd_arch(props) -> str:
    """The LLVM target of a ROCm device's properties (``gcnArchName`` 'gfx942:sramecc+:xnack-' -> 'gfx942')."""
    return str(getattr(props, "gcnArchName", "") or "").split(":")[0]


def device_target() -> str | None:
    """The target of this machine's current GPU, if it is one :data:`TARGETS` knows (a ROCm build of PyTorch
    names AMD GPUs by their LLVM target, e.g. gfx942)."""
    if not torch.cuda.is_available():
        return None
    if getattr(torch.version, "hip", None):
        name = amd_arch(torch.cuda.get_device_properties(torch.cuda.current_device()))
    else:
        major, minor = torch.cuda.get_device_capability()
        name = f"sm_{major}{minor}"
    return name if name in TARGETS else None
