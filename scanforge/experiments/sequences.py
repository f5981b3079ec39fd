"""Generated sequence tasks for the Mamba-family experiments, and a small sequence network around any block.

Every generator is deterministic given its ``torch.Generator`` and states the rule it asks the model to learn.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from scanforge.nn import Backbone

__all__ = ["SequenceNet", "key_recall", "marked_majority", "bursts", "window_majority", "causal_window_ceiling"]


class SequenceNet(nn.Module):
    """``(batch, L, d_in)`` -> input projection -> :class:`scanforge.nn.Backbone` of ``block()`` -> head.

    ``readout="last"`` classifies the sequence from its last position (so a causal model must carry what it
    saw in its state); ``"all"`` classifies every position."""

    def __init__(self, d_in: int, n_out: int, d_model: int, n_layer: int, block: Callable[[], nn.Module],
                 readout: str = "last") -> None:
        super().__init__()
        if readout not in ("last", "all"):
            raise ValueError(f"readout: expected 'last' or 'all', got {readout!r}")
        self.readout = readout
        self.proj = nn.Linear(d_in, d_model)
        self.backbone = Backbone(d_model, n_layer, block)
        self.head = nn.Linear(d_model, n_out)

    def forward(self, x: Tensor) -> Tensor:
        h = self.backbone(self.proj(x))
        return self.head(h[:, -1] if self.readout == "last" else h)

    def compute_penalty(self) -> Tensor:
        return self.backbone.compute_penalty()


def key_recall(n: int, L: int, key_len: int, classes: int, g: torch.Generator,
               distract: float = 0.0) -> tuple[Tensor, Tensor]:
    """Rule: the first ``key_len`` steps repeat one key, a class in ``0 .. classes-1`` (its one-hot plus a flag
    channel set to 1); the ``L - key_len`` steps after it are blank (zeros) or, with probability ``distract`` per
    step, a random class's one-hot without the flag. The label is the key, read at the last step, so the model
    must hold what it saw at the start across ``L - key_len`` steps. Tokens are ``(classes + 1)``-wide; chance
    ``1 / classes``."""
    if not 0 < key_len < L:
        raise ValueError(f"key_len: expected 0 < key_len < L={L}, got {key_len}")
    y = torch.randint(0, classes, (n,), generator=g)
    x = torch.zeros(n, L, classes + 1)
    if distract > 0:
        on = torch.rand(n, L, generator=g) < distract
        x[..., :classes] = F.one_hot(torch.randint(0, classes, (n, L), generator=g), classes).float() * on[..., None]
    x[:, :key_len] = 0.0
    x[:, :key_len, :classes] = F.one_hot(y, classes).float()[:, None]
    x[:, :key_len, classes] = 1.0
    return x, y


def marked_majority(n: int, L: int, marks: int, g: torch.Generator) -> tuple[Tensor, Tensor]:
    """Rule: ``marks`` (odd) positions, uniform over the whole sequence, carry a bit; every other token is
    blank. The label is the majority of the marked bits, read at the last position, so the model must keep a
    running count across up to L steps. Tokens are ``[bit as -1/+1, 1]`` where marked and ``[0, 0]`` where blank
    (a blank step adds nothing to a linear count). Chance: 0.5."""
    if marks % 2 == 0 or marks > L:
        raise ValueError(f"marks: expected an odd count <= L={L}, got {marks}")
    pos = torch.rand(n, L, generator=g).argsort(dim=1)[:, :marks]
    bits = torch.randint(0, 2, (n, marks), generator=g)
    x = torch.zeros(n, L, 2)
    x[..., 0].scatter_(1, pos, 2.0 * bits - 1)
    x[..., 1].scatter_(1, pos, 1.0)
    y = (bits.sum(1) * 2 > marks).long()
    return x, y


def bursts(n: int, L: int, n_bursts: int, burst_len: tuple[int, int], g: torch.Generator,
           noise: float = 0.3) -> tuple[Tensor, Tensor, Tensor]:
    """Variable-rate sequences: ``n_bursts`` (odd) bursts of ``burst_len`` steps, at random places, each
    repeating one bit (+-1 plus noise) on channel 0 and flagging itself on channel 1; quiet stretches carry
    small noise only. Rule: the label is the majority of the bursts' bits, read at the last position.
    Returns ``(x (n, L, 2), y (n,), burst_mask (n, L))``; chance 0.5."""
    lo, hi = burst_len
    if n_bursts % 2 == 0 or n_bursts * hi > L:
        raise ValueError(f"n_bursts: expected an odd count with n_bursts * {hi} <= L={L}, got {n_bursts}")
    x = torch.randn(n, L, 2, generator=g) * 0.1
    mask = torch.zeros(n, L, dtype=torch.bool)
    bits = torch.randint(0, 2, (n, n_bursts), generator=g)
    slot = L // n_bursts
    for i in range(n):
        for j in range(n_bursts):  # one burst per slot of L / n_bursts steps, at a random offset in it
            length = int(torch.randint(lo, hi + 1, (), generator=g))
            start = j * slot + int(torch.randint(0, slot - length + 1, (), generator=g))
            sign = 2.0 * bits[i, j] - 1.0
            x[i, start:start + length, 0] = sign + noise * torch.randn(length, generator=g)
            x[i, start:start + length, 1] = 1.0
            mask[i, start:start + length] = True
    y = (bits.sum(1) * 2 > n_bursts).long()
    return x, y, mask


def window_majority(n: int, L: int, w: int, g: torch.Generator) -> tuple[Tensor, Tensor]:
    """Rule: random +-1 bits; the label of position t is the majority of the 2w+1 bits t-w..t+w (w past,
    w future). Positions closer than w to an edge are labelled -100 (ignored). Chance 0.5."""
    bits = torch.randint(0, 2, (n, L), generator=g).float() * 2 - 1
    sums = F.conv1d(bits[:, None], torch.ones(1, 1, 2 * w + 1)).squeeze(1)  # (n, L - 2w), centred at w..L-w-1
    y = torch.full((n, L), -100, dtype=torch.int64)
    y[:, w:L - w] = (sums > 0).long()
    return bits[..., None], y


def causal_window_ceiling(w: int) -> float:
    """Best accuracy a model that sees only bits t-w..t can reach on :func:`window_majority`: guess the
    majority of the w+1 bits it has seen; exact, from binomial counts."""
    past, future = w + 1, w
    correct = 0.0
    for a in range(past + 1):  # a ones among the past bits
        for b in range(future + 1):
            p = math.comb(past, a) * math.comb(future, b) / 2 ** (past + future)
            correct += p * ((2 * a > past) == (2 * (a + b) > past + future))
    return correct
