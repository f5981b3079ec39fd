"""The primitive argument checks every op's validation is made of: each raises naming the argument, its shape,
dtype and device, and what was expected."""

from __future__ import annotations

import math
import numbers

import torch

from .tensor_facts import describe

INPUT_DTYPES = (torch.float32, torch.float16, torch.bfloat16)
DTYPE_NAME = {torch.float32: "float32", torch.float16: "float16", torch.bfloat16: "bfloat16"}


def as_int(value):
    """``value`` as a Python int when it is integer-like (a :class:`numbers.Integral` such as ``np.int64(4)``,
    or a 0-d integer tensor such as ``torch.tensor(3)``); anything else unchanged, for the checks to refuse.
    A bool is not an int here."""
    if isinstance(value, bool):
        return value
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, torch.Tensor) and value.dim() == 0 and not value.dtype.is_floating_point \
            and not value.dtype.is_complex and value.dtype != torch.bool:
        return int(value.item())
    return value


def check_threshold(gate_threshold) -> None:
    if isinstance(gate_threshold, bool) or not isinstance(gate_threshold, numbers.Real):
        raise TypeError(f"gate_threshold: expected a float, got {gate_threshold!r}")
    if not -math.inf < gate_threshold < math.inf:  # comparisons, not math.isfinite: torch.compile traces them
        raise ValueError(f"gate_threshold: expected a finite float (a gate fires where gate > gate_threshold), "
                         f"got {gate_threshold!r}")


def check_tensor(name: str, t, optional: bool = False) -> None:
    if t is None and optional:
        return
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{name}: expected a torch.Tensor{' or None' if optional else ''}, got {type(t).__name__}")


def check_shape(name: str, t: torch.Tensor, expected: tuple, meaning: str) -> None:
    if tuple(t.shape) != tuple(expected):
        raise ValueError(f"{name}: expected shape {meaning} = {tuple(expected)}, got {describe(t)}")


def check_dtype(name: str, t: torch.Tensor, allowed: tuple, why: str) -> None:
    if t.dtype not in allowed:
        names = [str(d) for d in dict.fromkeys(allowed)]
        names = names[0] if len(names) == 1 else f"{', '.join(names[:-1])} or {names[-1]}"
        raise TypeError(f"{name}: expected dtype {names} ({why}), got {describe(t)}")


def check_same_as(name: str, t: torch.Tensor, ref: torch.Tensor, ref_name: str, meaning: str) -> None:
    check_shape(name, t, ref.shape, f"{meaning} like {ref_name}")
    check_dtype(name, t, (ref.dtype,), f"the dtype of {ref_name}")


def check_A(A: torch.Tensor, dim: int, ref: torch.Tensor, ref_name: str) -> int:
    """A is (dim, N), float32 or the dtype of the sequence input; returns N."""
    if A.dim() != 2 or A.shape[0] != dim or A.shape[1] < 1:
        raise ValueError(f"A: expected shape (dim, N) with dim = {dim} and N >= 1, got {describe(A)}")
    check_dtype("A", A, (torch.float32, ref.dtype), f"float32 or the dtype of {ref_name}; complex A is not supported")
    return A.shape[1]


def check_per_channel(named, dim: int, ref: torch.Tensor, ref_name: str) -> None:
    for name, t in named:
        if t is not None:
            check_shape(name, t, (dim,), "(dim,)")
            check_dtype(name, t, (torch.float32, ref.dtype), f"float32 or the dtype of {ref_name}")


def check_devices(named, ref: torch.Tensor, ref_name: str) -> None:
    for name, t in named:
        if t is not None and t.device != ref.device:
            raise ValueError(f"{name}: expected the device of {ref_name} ({ref.device}), got {describe(t)}")


def check_cu_seqlens(cu_seqlens, u, u_name: str = "u") -> None:
    """Offsets of sequences packed along the last axis of ``u`` (named ``u_name`` in messages), batch 1."""
    check_tensor("cu_seqlens", cu_seqlens)
    if cu_seqlens.dim() != 1 or cu_seqlens.numel() < 2 or cu_seqlens.dtype not in (torch.int32, torch.int64):
        raise ValueError(f"cu_seqlens: expected a 1-d int32/int64 tensor (num_seqs + 1,), got {describe(cu_seqlens)}")
    check_devices((("cu_seqlens", cu_seqlens),), u, u_name)
    if u.shape[0] != 1:
        raise ValueError(f"{u_name}: packed sequences (cu_seqlens) need batch 1, got {describe(u)}")
    if torch.compiler.is_compiling():
        return  # the values are data: checked eagerly only
    bounds = cu_seqlens.tolist()
    if bounds[0] != 0 or bounds[-1] != u.shape[2] or any(a >= b for a, b in zip(bounds[:-1], bounds[1:])):
        raise ValueError(f"cu_seqlens: expected strictly increasing offsets from 0 to L = {u.shape[2]}, "
                         f"got {bounds if len(bounds) <= 12 else bounds[:6] + ['...'] + bounds[-6:]}")
