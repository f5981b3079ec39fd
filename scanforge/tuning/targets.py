"""The GPU architectures the offline compile gate knows, with the per-SM limits that turn a compiled kernel's
registers and shared memory into resident warps (occupancy)."""

from __future__ import annotations

from dataclasses import dataclass

import torch

#: The backends whose kernels compile for a GPU target.
GPU_BACKENDS = ("triton", "numba_cuda")


@dataclass(frozen=True)
class Target:
    """A GPU architecture's per-SM limits (CUDA C Programming Guide, "Compute Capabilities")."""

    name: str
    cc: tuple[int, int]
    max_warps: int = 64  # resident warps per SM
    max_ctas: int = 32  # resident blocks per SM
    registers: int = 65536  # 32-bit registers per SM
    shared: int = 233472  # shared memory per SM available to blocks, bytes
    shared_reserved: int = 1024  # per block, reserved by the system (sm_80 and later)

    def warps_per_sm(self, registers: int, shared: int, warps_per_block: int) -> dict[str, int]:
        """Resident warps per SM as limited by registers, shared memory and threads, and the minimum.

        Registers are allocated per warp in units of 256 (8 per thread); shared memory per block
        adds the reserved 1 KiB.
        """
        per_warp = -(-max(registers, 1) * 32 // 256) * 256
        by_regs = (self.registers // (per_warp * warps_per_block)) * warps_per_block
        by_threads = min(self.max_warps // warps_per_block, self.max_ctas) * warps_per_block
        by_shared = by_threads if shared == 0 else (
            self.shared // (shared + self.shared_reserved)) * warps_per_block
        return {"by_registers": by_regs, "by_shared": by_shared, "by_threads": by_threads,
                "warps": min(by_regs, by_shared, by_threads)}


#: The targets ``scanforge compile`` knows: A100 (sm_80: 164 KiB shared memory per SM), H100/H200
#: (sm_90: 228 KiB), B200 (sm_100: 228 KiB).
TARGETS: dict[str, Target] = {
    "sm_80": Target("sm_80", (8, 0), shared=167936),
    "sm_90": Target("sm_90", (9, 0)),
    "sm_100": Target("sm_100", (10, 0)),
}

#: The fewest resident warps per SM a family's default config must reach (mamba-ssm builds its
#: scan kernels for 3 blocks of 4 warps per SM). Gathers have no floor: they are memory-bound
#: with few, large blocks.
WARPS_FLOOR = {"scan_fwd": 12, "scan_decode": 12, "scan_bwd": 8}


def target(name: str) -> Target:
    if name not in TARGETS:
        raise ValueError(f"--target: expected one of {sorted(TARGETS)}, got {name!r}")
    return TARGETS[name]


def device_target() -> str | None:
    """The target of this machine's current GPU, if it is one :data:`TARGETS` knows."""
    if not torch.cuda.is_available():
        return None
    major, minor = torch.cuda.get_device_capability()
    name = f"sm_{major}{minor}"
    return name if name in TARGETS else None
