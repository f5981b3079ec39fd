"""The op kinds: one object per kernel family (``scan_fwd``, ``scan_bwd``, ``scan_decode``, ``gather_fwd``,
``gather_bwd``, ``ssd_fwd``, ``ssd_bwd``, as :func:`scanforge.kernels.codegen.family` names them).

An op kind owns what every stage needs to know about its family: the inputs for a shape (random ones to prove and
time a kernel, ``meta`` ones to capture its launches), the float64 reference, the kernel call (the backend's entry
point with a forced config, by keyword), what a tuning trial runs and checks (:meth:`OpKind.prove`), and its rows in
the conformance suite (reference rows, the tuner's gate, Hypothesis properties). Stages look a kind up with
:func:`op_kind` or iterate over :data:`OP_KINDS` instead of branching on ops and phases: a new family is one new
entry.

Shapes are the tuner's: scan ``(batch, dim, L, N)``, gather ``(batch, T, d, k)``, decode ``(batch, dim, L, N)`` with
L ignored (one token).
"""

from __future__ import annotations

from ..kernels.codegen import family
from ..kernels.ir import GatherSpec, ScanSpec
from .gather_kinds import GatherBackward, GatherForward
from .opkind_base import OpKind, Proof
from .scan_kinds import DecodeStep, ScanBackward, ScanForward
from .ssd_kinds import SSDBackward, SSDForward

__all__ = ["OP_KINDS", "OpKind", "Proof", "op_kind", "suite_kind"]


#: Every op kind by family, in the order the suite runs them.
OP_KINDS: dict[str, OpKind] = {kind.family: kind for kind in (ScanForward(), ScanBackward(), GatherForward(),
                                                              GatherBackward(), DecodeStep(), SSDForward(),
                                                              SSDBackward())}


def op_kind(spec: ScanSpec | GatherSpec) -> OpKind:
    """The op kind of ``spec``'s family."""
    return OP_KINDS[family(spec)]


def suite_kind(op: str) -> OpKind:
    """The op kind whose reference rows and properties stand for the public ``op`` in the suite (its forward or
    decode family: a row checks the backward through the same call)."""
    return next(k for k in OP_KINDS.values() if k.op == op and not k.grads)
