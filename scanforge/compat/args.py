"""What mamba-ssm's callers pass, read the way mamba-ssm reads it.

mamba-ssm's functions test flags for truth (``if return_last_state:``) and use numbers in arithmetic, so its
callers pass ``None`` for a false flag and ints where a float is meant; scanforge's public ops are strict
(a bool, a float) and refuse those. The compat functions convert here, once, and nowhere looser.
"""

from __future__ import annotations

import numbers

import torch

__all__ = ["flag", "real", "refuse"]


def flag(name: str, value) -> bool:
    """``None`` and false values as False, true ones as True: bools, ints 0/1, numpy bools, 0-d bool tensors."""
    if value is None:
        return False
    if isinstance(value, torch.Tensor):
        if value.numel() != 1:
            raise TypeError(f"{name}: expected a bool (or None), got a tensor of shape {tuple(value.shape)}")
        value = value.item()
    if isinstance(value, (bool, numbers.Integral)) or type(value).__name__ == "bool_":
        if value not in (0, 1):
            raise TypeError(f"{name}: expected a bool (or None), got {value!r}")
        return bool(value)
    raise TypeError(f"{name}: expected a bool (or None), got {type(value).__name__} {value!r}")


def real(name: str, value) -> float:
    """An int, float or 0-d tensor as a Python float."""
    if isinstance(value, torch.Tensor) and value.numel() == 1:
        value = value.item()
    if isinstance(value, numbers.Real) and not isinstance(value, bool):
        return float(value)
    raise TypeError(f"{name}: expected a number, got {type(value).__name__} {value!r}")


def refuse(name: str, value, supported: str, where: str) -> NotImplementedError:
    """The error for an argument value scanforge does not implement: never a silently different result."""
    return NotImplementedError(f"{name}={value!r} is not supported by {where}; supported: {supported}")
