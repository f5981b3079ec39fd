"""The IR: frozen, validated descriptions of the kernels scanforge generates.

A spec fixes everything that changes the *code* of a kernel (which terms exist, which
direction it runs, which dtype it reads); shapes and tiling are not part of it. Codegen
renders one kernel source per (spec, config), and the tuned-config cache is keyed by
``spec.key()``.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass
from enum import Enum


class Direction(str, Enum):
    CAUSAL = "causal"
    REVERSE = "reverse"
    BIDIRECTIONAL = "bidirectional"


class GateMode(str, Enum):
    HARD = "hard"  # forward hard, backward straight-through the soft update
    SOFT = "soft"  # forward and backward use the soft update


class Phase(str, Enum):
    FORWARD = "fwd"
    BACKWARD = "bwd"
    DECODE = "decode"  # one token, state updated in place (inference)


class Summary(str, Enum):
    NONE = "none"
    MEAN = "mean"
    MEAN_DROPPED = "mean_dropped"


class Weight(str, Enum):
    NONE = "none"
    SIGMOID = "sigmoid"


#: The floating dtypes a kernel may be generated for (input dtype of u / x).
DTYPES = ("float32", "float16", "bfloat16")
_DTYPE_TAG = {"float32": "f32", "float16": "f16", "bfloat16": "bf16"}


def _coerce_enum(obj, name: str, enum: type[Enum]) -> None:
    value = getattr(obj, name)
    if isinstance(value, enum):
        return
    try:
        object.__setattr__(obj, name, enum(value))
    except ValueError:
        choices = ", ".join(repr(e.value) for e in enum)
        raise ValueError(f"{type(obj).__name__}.{name}: expected one of {choices}, got {value!r}") from None


def _check_bool(obj, names: tuple[str, ...]) -> None:
    for name in names:
        if not isinstance(getattr(obj, name), bool):
            raise TypeError(f"{type(obj).__name__}.{name}: expected a bool, got {getattr(obj, name)!r}")


def _check_dtype(obj) -> None:
    if obj.dtype not in DTYPES:
        raise ValueError(f"{type(obj).__name__}.dtype: expected one of {DTYPES}, got {obj.dtype!r}")


@dataclass(frozen=True)
class ScanSpec:
    """One selective-scan kernel variant (semantics: :mod:`scanforge.kernels.reference`)."""

    direction: Direction = Direction.CAUSAL
    stride: int = 1
    gated: bool = False
    gate_mode: GateMode = GateMode.HARD
    has_D: bool = False
    has_z: bool = False
    has_delta_bias: bool = False
    softplus: bool = False
    grouped: bool = False
    dtype: str = "float32"
    has_initial_state: bool = False
    return_last_state: bool = False
    varlen: bool = False  # sequences packed along L, split by cu_seqlens (batch 1)
    phase: Phase = Phase.FORWARD

    def __post_init__(self) -> None:
        _coerce_enum(self, "direction", Direction)
        _coerce_enum(self, "gate_mode", GateMode)
        _coerce_enum(self, "phase", Phase)
        _check_bool(self, ("gated", "has_D", "has_z", "has_delta_bias", "softplus", "grouped",
                           "has_initial_state", "return_last_state", "varlen"))
        _check_dtype(self)
        if isinstance(self.stride, bool) or not isinstance(self.stride, int) or self.stride < 1:
            raise ValueError(f"ScanSpec.stride: expected an int >= 1, got {self.stride!r}")
        if self.gated and self.stride != 1:
            raise ValueError("ScanSpec: a gated scan pools its windows from the gate; stride must be 1, "
                             f"got stride={self.stride}")
        if self.varlen and (self.stride != 1 or self.gated or self.has_initial_state or self.return_last_state
                            or self.phase is Phase.DECODE):
            raise ValueError("ScanSpec: variable-length (cu_seqlens) scans are causal, reverse or bidirectional "
                             "without stride, gate or states")
        if self.phase is Phase.DECODE and (self.direction is not Direction.CAUSAL or self.has_initial_state
                                           or self.return_last_state):
            raise ValueError("ScanSpec: a decode step is causal and updates its state in place; "
                             "direction must be 'causal' and the state flags False")
        if self.direction is Direction.BIDIRECTIONAL and (self.has_initial_state or self.return_last_state):
            raise ValueError("ScanSpec: a bidirectional scan has two states; initial_state/return_last_state "
                             "are only defined for direction='causal' or 'reverse'")

    def key(self) -> str:
        """A stable, readable identifier: equal specs give equal keys in every process."""
        parts = [
            "scan", self.phase.value, self.direction.value, f"s{self.stride}",
            f"gate-{self.gate_mode.value}" if self.gated else "nogate",
            "D" if self.has_D else "noD", "z" if self.has_z else "noz",
            "bias" if self.has_delta_bias else "nobias", "softplus" if self.softplus else "linear",
            "grouped" if self.grouped else "shared", _DTYPE_TAG[self.dtype],
            "h0" if self.has_initial_state else "noh0", "hlast" if self.return_last_state else "nohlast",
        ]
        if self.varlen:
            parts.append("varlen")
        return "-".join(parts)

    def adjoint(self) -> ScanSpec:
        """The spec the backward kernel is generated from: same variant, phase flipped to backward.

        The backward of a scan running one way is a scan of the adjoint state running the
        other way; the backward template derives that from ``direction``.
        """
        if self.phase is not Phase.FORWARD:
            raise ValueError(f"ScanSpec.adjoint: expected a forward spec, got phase {self.phase.value!r}")
        return dataclasses.replace(self, phase=Phase.BACKWARD)


@dataclass(frozen=True)
class GatherSpec:
    """One top-k token gather variant (semantics: :func:`scanforge.kernels.reference.topk_gather_ref`)."""

    scores_given: bool = False
    keep_order: bool = True
    summary: Summary = Summary.NONE
    weight: Weight = Weight.NONE
    dtype: str = "float32"
    phase: Phase = Phase.FORWARD

    def __post_init__(self) -> None:
        if self.summary is None:
            object.__setattr__(self, "summary", Summary.NONE)
        if self.weight is None:
            object.__setattr__(self, "weight", Weight.NONE)
        _coerce_enum(self, "summary", Summary)
        _coerce_enum(self, "weight", Weight)
        _coerce_enum(self, "phase", Phase)
        _check_bool(self, ("scores_given", "keep_order"))
        _check_dtype(self)

    def key(self) -> str:
        """A stable, readable identifier: equal specs give equal keys in every process."""
        parts = [
            "gather", self.phase.value, "scores" if self.scores_given else "l2norm",
            "ordered" if self.keep_order else "ranked", f"summary-{self.summary.value}",
            f"weight-{self.weight.value}", _DTYPE_TAG[self.dtype],
        ]
        return "-".join(parts)

    def adjoint(self) -> GatherSpec:
        """The spec the backward kernel is generated from."""
        if self.phase is not Phase.FORWARD:
            raise ValueError(f"GatherSpec.adjoint: expected a forward spec, got phase {self.phase.value!r}")
        return dataclasses.replace(self, phase=Phase.BACKWARD)


def spec_from_key(key: str) -> ScanSpec | GatherSpec:
    """The spec whose :meth:`~ScanSpec.key` is ``key`` (cache entries store keys, not specs)."""
    dtypes = {"f32": "float32", "f16": "float16", "bf16": "bfloat16"}
    m = re.fullmatch(r"scan-(fwd|bwd|decode)-(causal|reverse|bidirectional)-s(\d+)-(nogate|gate-hard|gate-soft)-"
                     r"(D|noD)-(z|noz)-(bias|nobias)-(softplus|linear)-(grouped|shared)-(f32|f16|bf16)-(h0|noh0)-"
                     r"(hlast|nohlast)(-varlen)?", key)
    if m:
        phase, direction, stride, gate, D, z, bias, sp, grouped, dt, h0, hl, varlen = m.groups()
        return ScanSpec(direction=direction, stride=int(stride), gated=gate != "nogate",
                        gate_mode="soft" if gate == "gate-soft" else "hard", has_D=D == "D", has_z=z == "z",
                        has_delta_bias=bias == "bias", softplus=sp == "softplus", grouped=grouped == "grouped",
                        dtype=dtypes[dt], has_initial_state=h0 == "h0", return_last_state=hl == "hlast",
                        varlen=bool(varlen), phase=phase)
    m = re.fullmatch(r"gather-(fwd|bwd)-(scores|l2norm)-(ordered|ranked)-summary-(none|mean|mean_dropped)-"
                     r"weight-(none|sigmoid)-(f32|f16|bf16)", key)
    if m:
        phase, scores, order, summary, weight, dt = m.groups()
        return GatherSpec(scores_given=scores == "scores", keep_order=order == "ordered", summary=summary,
                          weight=weight, dtype=dtypes[dt], phase=phase)
    raise ValueError(f"spec key: not a scanforge spec key: {key!r}")
