"""The IR: frozen, validated descriptions of the kernels scanforge generates.

A spec fixes everything that changes the *code* of a kernel (which terms exist, which
direction it runs, which dtype it reads); shapes and tiling are not part of it. Codegen
renders one kernel source per (spec, config), and the tuned-config cache is keyed by
``spec.key()``.

A spec is also the one place where a variant's meaning is worked out: what follows from its
fields (the passes a scan makes, how its input is pooled, how many rows a gather returns, how
its key is written and read) is a property here, and templates, backends, the tuner, the
compile gate and the testing layer read it instead of deriving it again from raw fields.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from enum import Enum

from .keys import choice, enum_token, flag, int_token, read_key, write_key


class Direction(str, Enum):
    CAUSAL = "causal"
    REVERSE = "reverse"
    BIDIRECTIONAL = "bidirectional"


class GateMode(str, Enum):
    HARD = "hard"  # forward hard, backward straight-through the soft update
    SOFT = "soft"  # forward and backward use the soft update


class Pooling(str, Enum):
    """How a scan's input reaches its state: every step, or pooled over windows that end at an update."""

    NONE = "none"  # every step updates the state
    STRIDED = "strided"  # windows of `stride` steps
    GATED_HARD = "gated_hard"  # windows end where the gate fires; straight-through gradients
    GATED_SOFT = "gated_soft"  # the soft update g*update + (1-g)*hold, forward and backward

    @property
    def code(self) -> int:
        """The number the Numba templates compile in (``MODE``): 0 none, 1 strided, 2 hard gate, 3 soft gate."""
        return list(Pooling).index(self)


class Decay(str, Enum):
    """What A holds: a decay per channel and state (Mamba-1), or one scalar per head (Mamba-2's SSD scan)."""

    CHANNEL = "channel"  # A (dim, N), dt (batch, dim, L): one exponential per (channel, state, step)
    HEAD = "head"  # A (nheads,), dt (batch, nheads, L): one exponential per (head, step)


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
_DTYPE_PART = choice({tag: {"dtype": name} for name, tag in _DTYPE_TAG.items()})


def _coerceenum_token(obj, name: str, enum: type[Enum]) -> None:
    value = getattr(obj, name)
    if isinstance(value, enum):
        return
    try:
        object.__setattr__(obj, name, enum(value))
    except ValueError:
        choices = ", ".join(repr(e.value) for e in enum)
        raise ValueError(f"{name}: expected one of {choices}, got {value!r}") from None


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
    decay: Decay = Decay.CHANNEL
    phase: Phase = Phase.FORWARD

    def __post_init__(self) -> None:
        """Every rule on how the fields combine is checked here, and only here; the argument checks of the public
        ops build the spec and let these messages, which name the ops' arguments, reach the user."""
        _coerceenum_token(self, "direction", Direction)
        _coerceenum_token(self, "gate_mode", GateMode)
        _coerceenum_token(self, "phase", Phase)
        _coerceenum_token(self, "decay", Decay)
        _check_bool(self, ("gated", "has_D", "has_z", "has_delta_bias", "softplus", "grouped",
                           "has_initial_state", "return_last_state", "varlen"))
        _check_dtype(self)
        if isinstance(self.stride, bool) or not isinstance(self.stride, int) or self.stride < 1:
            raise ValueError(f"stride: expected an int >= 1, got {self.stride!r}")
        if self.gated and self.stride != 1:
            raise ValueError("stride: a gated scan pools its windows from the gate; stride must be 1, "
                             f"got stride={self.stride}")
        if self.varlen and (self.pooled or self.has_initial_state or self.return_last_state
                            or self.phase is Phase.DECODE):
            raise ValueError("cu_seqlens: variable-length scans take no stride, gate, initial_state or last state "
                             "(they are causal, reverse or bidirectional)")
        if self.phase is Phase.DECODE and (self.direction is not Direction.CAUSAL or self.has_initial_state
                                           or self.return_last_state):
            raise ValueError("direction: a decode step is causal and updates its state in place; "
                             "direction must be 'causal' and the state flags False")
        if self.decay is Decay.HEAD and (self.pooled or self.phase is Phase.DECODE):
            raise ValueError("A: a per-head scalar decay (Mamba-2's scan, A of shape (nheads,)) has no stride or "
                             "gate, and its decode step is selective_state_update with A expanded per channel")
        if self.direction is Direction.BIDIRECTIONAL and (self.has_initial_state or self.return_last_state):
            raise ValueError("initial_state/return_last_state: a bidirectional scan has two states; "
                             "they are defined for direction='causal' or 'reverse' only")

    @property
    def pooling(self) -> Pooling:
        """How the input is pooled before it reaches the state (the strided and gated variants)."""
        if self.gated:
            return Pooling.GATED_HARD if self.gate_mode is GateMode.HARD else Pooling.GATED_SOFT
        return Pooling.STRIDED if self.stride > 1 else Pooling.NONE

    @property
    def pooled(self) -> bool:
        """Whether the state updates only at window ends (strided or gated), carrying an open window between."""
        return self.pooling is not Pooling.NONE

    @property
    def kind(self) -> str:
        """The kernel family's stem: ``scan`` (a decay per channel and state) or ``ssd`` (one per head)."""
        return "ssd" if self.decay is Decay.HEAD else "scan"

    @property
    def passes(self) -> tuple[Direction, ...]:
        """The sweeps a scan makes, in order: causal and/or reverse (a bidirectional scan makes both and adds
        them, counting the skip term once)."""
        if self.direction is Direction.BIDIRECTIONAL:
            return (Direction.CAUSAL, Direction.REVERSE)
        return (self.direction,)

    @property
    def reversed_passes(self) -> tuple[bool, ...]:
        """:attr:`passes` as the templates loop over them: whether each sweep runs from L-1 down to 0."""
        return tuple(p is Direction.REVERSE for p in self.passes)

    def key(self) -> str:
        """A stable, readable identifier: equal specs give equal keys in every process."""
        return write_key("scan", _SCAN_KEY, self)

    def adjoint(self) -> ScanSpec:
        """The spec the backward kernel is generated from: same variant, phase flipped to backward.

        The backward of a scan running one way is a scan of the adjoint state running the
        other way; the backward template derives that from ``direction``.
        """
        if self.phase is not Phase.FORWARD:
            raise ValueError(f"ScanSpec.adjoint: expected a forward spec, got phase {self.phase.value!r}")
        return dataclasses.replace(self, phase=Phase.BACKWARD)


_SCAN_KEY = (
    enum_token("phase", Phase), enum_token("direction", Direction), int_token("stride", "s"),
    choice({"nogate": {"gated": False}, "gate-hard": {"gated": True, "gate_mode": GateMode.HARD},
             "gate-soft": {"gated": True, "gate_mode": GateMode.SOFT}}),
    flag("has_D", "D", "noD"), flag("has_z", "z", "noz"), flag("has_delta_bias", "bias", "nobias"),
    flag("softplus", "softplus", "linear"), flag("grouped", "grouped", "shared"), _DTYPE_PART,
    flag("has_initial_state", "h0", "noh0"), flag("return_last_state", "hlast", "nohlast"),
    choice({"varlen": {"varlen": True}, "": {"varlen": False}}, optional=True),
    choice({"headdecay": {"decay": Decay.HEAD}, "": {"decay": Decay.CHANNEL}}, optional=True),
)


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
        _coerceenum_token(self, "summary", Summary)
        _coerceenum_token(self, "weight", Weight)
        _coerceenum_token(self, "phase", Phase)
        _check_bool(self, ("scores_given", "keep_order"))
        _check_dtype(self)
        if self.phase is Phase.DECODE:
            raise ValueError("GatherSpec.phase: a gather has a forward and a backward phase, no decode step")

    @property
    def has_summary(self) -> bool:
        """Whether one summary token follows the k kept ones."""
        return self.summary is not Summary.NONE

    def out_rows(self, k: int) -> int:
        """Rows of the output per batch: the k kept tokens, and the summary token if there is one."""
        return k + int(self.has_summary)

    def key(self) -> str:
        """A stable, readable identifier: equal specs give equal keys in every process."""
        return write_key("gather", _GATHER_KEY, self)

    def adjoint(self) -> GatherSpec:
        """The spec the backward kernel is generated from."""
        if self.phase is not Phase.FORWARD:
            raise ValueError(f"GatherSpec.adjoint: expected a forward spec, got phase {self.phase.value!r}")
        return dataclasses.replace(self, phase=Phase.BACKWARD)


_GATHER_KEY = (
    choice({"fwd": {"phase": Phase.FORWARD}, "bwd": {"phase": Phase.BACKWARD}}),
    flag("scores_given", "scores", "l2norm"), flag("keep_order", "ordered", "ranked"),
    enum_token("summary", Summary, "summary-"), enum_token("weight", Weight, "weight-"), _DTYPE_PART,
)


def spec_from_key(key: str) -> ScanSpec | GatherSpec:
    """The spec whose :meth:`~ScanSpec.key` is ``key`` (cache entries store keys, not specs)."""
    for cls, head, parts in ((ScanSpec, "scan", _SCAN_KEY), (GatherSpec, "gather", _GATHER_KEY)):
        spec = read_key(cls, head, parts, key)
        if spec is not None:
            return spec
    raise ValueError(f"spec key: not a scanforge spec key: {key!r}")
