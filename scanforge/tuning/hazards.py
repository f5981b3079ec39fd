"""Failure classes that only a GPU shows, audited in the kernel templates (tests: ``tests/tuning/test_hazards.py``).

**32-bit offsets.** Triton types an integer argument below 2**31 as int32, and int32 arithmetic wraps. Every kernel
computes its batch offset in int64 (``tl.program_id(0).to(tl.int64)`` times the batch stride), so the batch count is
not limited. Offsets *inside one batch row* are int32 in the scan kernels: ``offs_d * s_u_d + offs_l * s_u_l`` wraps
once one row of u, delta, z or y holds 2**31 elements or more (dim x L >= 2**31, e.g. dim 2048 at L >= 2**20), or
B/C (G x N x L) do. The top-k gather computes its token and column offsets in int64 whenever a row's span can pass
2**31 (its launcher's ``WIDE``), and in int32 otherwise (a 64-bit offset costs registers). :func:`int32_offsets`
names the tensors of a recorded launch whose in-row offsets can wrap.

**Grid limits.** A grid's axis 0 holds up to 2**31 - 1 programs, axes 1 and 2 up to 65535 (CUDA; HIP's limits are
larger). Scans: ``(batch rows, dim / BLOCK_D)`` - dim up to 65535 x BLOCK_D (131070 at the backward's default
BLOCK_D = 2, far above any Mamba width). Decode: the same. Gather forward: ``(batch, SPLITS <= 4)``. Gather backward:
one axis of batch x token blocks (it was ``(batch, T / BLOCK_T)``: T past 65535 x 64 = 4.2M tokens failed to launch).

**Alignment.** No template asserts alignment or contiguity (no ``tl.multiple_of``, ``tl.max_contiguous``): vectorised
loads come only from Triton's own specialisation, which checks every launch's pointers (16-byte alignment) and
integers (1, multiples of 16) and compiles another kernel when they differ. An offset or strided view therefore gets a
correct, slower kernel; the compile gate compiles both (``--layout generic``: unaligned pointers, strides that are
neither 1 nor multiples of 16). Numba-CUDA kernels index element by element. The gather copies an input whose columns
are strided (a transposed view) before its kernels run: strided columns make every load its own transaction.

**Atomics and reproducibility.** :data:`ATOMICS` lists every atomic add: float32 adds in the order programs arrive,
so those gradients are not bit-reproducible run to run on a GPU (they agree to float32 rounding); every other output
of every kernel is written once by one program and is bit-reproducible. The forward passes, the decode step and the
gather use no atomics.
"""

from __future__ import annotations

from ..backends.base import Launch

#: Every atomic add in the kernel templates: (backend, template, what it accumulates).
ATOMICS = (
    ("triton", "scan_bwd.j2", "dB, dC: (batch, G, N, L) summed over the channel blocks of a group"),
    ("triton", "scan_pooled.j2", "dB, dC over channel blocks; dgate (batch, L) over channel blocks"),
    ("numba_cuda", "scan_bwd.j2", "dB, dC over the channels of a group; dgate over channels"),
)

#: The largest count of programs on grid axes 1 and 2 (axis 0: 2**31 - 1).
GRID_AXIS_LIMIT = 65535


def in_row_span(shape: tuple[int, ...], strides: tuple[int, ...]) -> int:
    """The largest element offset inside one batch row (every dimension but the first)."""
    return sum((n - 1) * abs(s) for n, s in zip(shape[1:], strides[1:]))


def int32_offsets(launch: Launch) -> list[str]:
    """The tensor arguments (by position) of a Triton launch whose offsets inside one batch row can pass 2**31
    while the kernel computes them in int32 (no ``WIDE=True``): where a GPU run would read or write wrong memory."""
    if launch.backend != "triton" or launch.kwargs.get("WIDE"):
        return []
    names = list(getattr(launch.kernel, "arg_names", [])) or [f"arg{i}" for i in range(len(launch.args))]
    return [name for name, arg in zip(names, launch.args)
            if hasattr(arg, "stride") and arg.dim() > 1 and in_row_span(tuple(arg.shape), arg.stride()) >= 2**31]


def grid_problems(grid: tuple[int, ...]) -> list[str]:
    """Why a launch grid cannot be launched: an axis past its limit."""
    limits = (2**31 - 1, GRID_AXIS_LIMIT, GRID_AXIS_LIMIT)
    return [f"grid axis {i}: {n} programs > {limit}" for i, (n, limit) in enumerate(zip(grid, limits)) if n > limit]
