"""The physical floor of each kernel on a GPU: HBM bytes, hardware exponentials and FP32 work.

A kernel cannot run faster than ``max(bytes / bandwidth, exps / SFU rate, flops / FMA rate)``;
the GPU benchmark reports its time as a fraction of that floor. The counts are what the op must
do at least (every input read once, every output written once, one exponential per state update),
not what today's kernels do.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from ..kernels.ir import GatherSpec, Phase, ScanSpec
from ..testing.ssd_kinds import heads_of
from .compile_plan import KINDS


@dataclass(frozen=True)
class Card:
    """Public figures of a GPU (NVIDIA's H100 and H200 datasheets, SXM; 16 SFU ops per SM per clock
    on Hopper: 4 per SM sub-partition)."""

    name: str
    bandwidth: float  # HBM bytes / s
    sms: int
    clock: float  # boost clock, Hz
    sfu_per_sm_clock: int = 16
    fp32_per_sm_clock: int = 256  # 128 FMA lanes x 2 flops

    @property
    def exp_rate(self) -> float:
        return self.sms * self.sfu_per_sm_clock * self.clock

    @property
    def flop_rate(self) -> float:
        return self.sms * self.fp32_per_sm_clock * self.clock


CARDS = {
    "H100 SXM": Card("H100 SXM", 3.35e12, 132, 1.98e9),
    "H200": Card("H200", 4.8e12, 132, 1.98e9),
}

_BYTES = {"float32": 4, "float16": 2, "bfloat16": 2}


def work(spec: ScanSpec | GatherSpec, shape: tuple[int, ...]) -> dict[str, float]:
    """Least HBM bytes, exponentials and FP32 flops of one call of ``spec`` at ``shape``.

    Scans: u, delta (and z) read and y written once per element, B and C once per (batch, step);
    one exp(dt*A) and ~6 flops (dt*A, dt*u*B, the state FMA, C*h) per (element, state) update;
    a strided scan updates every k-th step, a gated one is counted as if every step fired (its
    rate depends on the data); bidirectional does both directions. The backward reads the
    forward's inputs and dy, writes their gradients (dB, dC in float32), and recomputes the
    states (two exponentials and ~18 flops per update). Mamba-2's scan (a per-head decay) moves the same bytes
    (dt per head) but takes one exponential per (head, step) (heads: :func:`scanforge.testing.ssd_kinds.heads_of`);
    its products run on tensor cores, whose rate the cards here do not give, so its flops are left out of the floor
    (a floor must stay a lower bound). Gathers move the kept rows and read x.
    """
    e = _BYTES[spec.dtype]
    if isinstance(spec, GatherSpec):
        batch, T, d, k = shape
        moved = batch * spec.out_rows(k) * d * e + batch * T * d * e * (1 if spec.phase is Phase.FORWARD else 2)
        return {"bytes": moved, "exps": batch * T, "flops": 2 * batch * T * d}
    batch, dim, L, N = shape
    elements = batch * dim * L
    rate = 1.0 / spec.stride
    updates = elements * N * rate * len(spec.passes)
    if spec.phase is Phase.DECODE:
        return {"bytes": 2 * batch * dim * N * 4 + 4 * batch * dim * e, "exps": batch * dim * N,
                "flops": 6 * batch * dim * N}
    seq_tensors = 3 + spec.has_z  # u, delta, y (+ z)
    bc = 2 * batch * N * L * e
    if spec.kind == "ssd":
        steps = batch * heads_of(dim) * L * len(spec.passes)
        seq_bytes = (2 + spec.has_z) * elements * e + batch * heads_of(dim) * L * e  # x, y (+ z); dt per head
        if spec.phase is Phase.FORWARD:
            return {"bytes": seq_bytes + bc, "exps": steps * (1 + spec.softplus), "flops": 0}
        grads = (1 + spec.has_z) * elements * e + batch * heads_of(dim) * L * e  # dx (+ dz), ddt
        return {"bytes": 2 * seq_bytes + grads + bc + 2 * batch * N * L * 4, "exps": steps * (2 + spec.softplus),
                "flops": 0}
    if spec.phase is Phase.FORWARD:
        return {"bytes": seq_tensors * elements * e + bc, "exps": updates + elements * spec.softplus,
                "flops": 6 * updates}
    grads = 2 + spec.has_z  # du, ddelta (+ dz)
    return {"bytes": (seq_tensors + grads) * elements * e + bc + 2 * batch * N * L * 4,
            "exps": 2 * updates + elements * spec.softplus, "flops": 18 * updates}


def floor(spec: ScanSpec | GatherSpec, shape: tuple[int, ...], card: Card) -> dict[str, float]:
    """Seconds each resource needs on ``card``, the floor (their maximum) and what binds it."""
    w = work(spec, shape)
    times = {"memory": w["bytes"] / card.bandwidth, "exp": w["exps"] / card.exp_rate,
             "fp32": w["flops"] / card.flop_rate}
    bound = max(times, key=times.get)
    return {**w, **{f"{k}_s": v for k, v in times.items()}, "floor_s": times[bound], "bound": bound}


def floors_for(rows: list[dict]) -> list[dict]:
    """The floor of every distinct (variant, phase, dtype, shape) among ``scanforge compile`` rows."""
    seen, out = set(), []
    for r in rows:
        key = (r["variant"], r["phase"], r["dtype"], r["shape"])
        if key in seen:
            continue
        seen.add(key)
        table = next(t for t, _, _ in KINDS.values() if r["variant"] in t)
        spec = dataclasses.replace(table[r["variant"]], dtype=r["dtype"], phase=Phase(r["phase"]))
        shape = tuple(int(v) for v in r["shape"].split("x"))
        for card in CARDS.values():
            out.append({"variant": r["variant"], "phase": r["phase"], "dtype": r["dtype"], "shape": r["shape"],
                        "card": card.name, **floor(spec, shape, card)})
    return out

