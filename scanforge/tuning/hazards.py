"""Failure classes that only a GPU shows, audited in the kernel templates (tests: ``tests/tuning/test_hazards.py``).

**32-bit offsets.** Triton types an integer argument below 2**31 as int32, and int32 arithmetic wraps. Every kernel
computes its batch offset in int64 (``tl.program_id(0).to(tl.int64)`` times the batch stride), so the batch count is
not limited. Offsets *inside one batch row* (``offs_d * s_u_d + offs_l * s_u_l``) would wrap once a row of u, delta,
z or y holds 2**31 elements (dim x L >= 2**31, e.g. dim 2048 at L >= 2**20), or B/C do (G x N x L), or the scan's
chunk-state buffer (chunks x rows x dim x N, indexed by chunk without a batch offset). Every Triton kernel therefore
takes a constexpr ``WIDE``, set by its launcher (``_wide``) when a tensor argument's in-row span (:func:`in_row_span`)
reaches 2**31, or the whole span of one indexed without a batch offset (A, D, delta_bias, the chunk states): then
channel, state, step and chunk indices are int64, else int32 (a 64-bit offset costs registers; normal sizes compile
to the kernels they were). The scans (forward, backward, pooled, decode) and the top-k gather do this; masked lanes
past the end may wrap, but are never read or written. :func:`int32_offsets` names the tensors of a recorded launch
whose offsets can wrap: none for a launch with ``WIDE=True``. Numba-CUDA kernels index arrays element by element with
64-bit integers (``cuda.grid(1)`` and array shapes are int64, Numba casts every index to intp before it multiplies a
stride, and its integer arithmetic promotes int32 values such as cu_seqlens to int64): no 32-bit offset.

Mamba-2's Triton kernels (``ssd_*.j2``) keep in-row offsets in int32 and have no ``WIDE`` variant yet: their host
(``backends/triton_ssd.py``) refuses a call whose x or whose backward's per-head B/C partial gradients would hold
2**31 elements per row (at the 2.7B shape: the backward past L ~ 52K, the forward past L ~ 419K), with a message
that says to chain shorter calls through the states.

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


#: Scan kernel arguments indexed without a batch offset: their whole span counts. The chunk states are 4-D (chunk,
#: row, dim, N); a 3-D tensor in their place is the output standing in for a buffer the launch does not use.
UNBATCHED = ("A_ptr", "D_ptr", "delta_bias_ptr", "dt_bias_ptr")
CHUNK_STATES = ("states_ptr", "states_rev_ptr")
#: A pooled scan's chunk buffers of window sums: indexed from the int64 batch index alone.
INT64_INDEXED = ("acc_states_ptr", "accB_states_ptr", "cnt_states_ptr")


def int32_offsets(launch: Launch) -> list[str]:
    """The tensor arguments (by name) of a Triton launch whose offsets inside one batch row (or anywhere, for
    :data:`UNBATCHED` and :data:`CHUNK_STATES`) can pass 2**31 while the kernel computes them in int32 (no
    ``WIDE=True``): where a GPU run would read or write wrong memory."""
    if launch.backend != "triton" or launch.kwargs.get("WIDE"):
        return []
    names = list(getattr(launch.kernel, "arg_names", [])) or [f"arg{i}" for i in range(len(launch.args))]
    flagged = []
    for name, arg in zip(names, launch.args):
        if not hasattr(arg, "stride") or name in INT64_INDEXED:
            continue
        whole = name in UNBATCHED or (name in CHUNK_STATES and arg.dim() == 4)
        span = (in_row_span((1, *arg.shape), (0, *arg.stride())) if whole
                else in_row_span(tuple(arg.shape), arg.stride()) if arg.dim() > 1 else 0)
        if span >= 2**31:
            flagged.append(name)
    return flagged


def grid_problems(grid: tuple[int, ...]) -> list[str]:
    """Why a launch grid cannot be launched: an axis past its limit."""
    limits = (2**31 - 1, GRID_AXIS_LIMIT, GRID_AXIS_LIMIT)
    return [f"grid axis {i}: {n} programs > {limit}" for i, (n, limit) in enumerate(zip(grid, limits)) if n > limit]
