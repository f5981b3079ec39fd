"""Synthetic image-question data (a visual question answering task in miniature), deterministic from a seed.

Each image is a ``grid x grid`` board of cells on a noisy dark background; some cells hold a coloured
square. Questions are 4 tokens, answers one token:

* ``[COLOR, row, col, ?]`` -> the colour of that cell, or ``NONE`` if it is empty;
* ``[COUNT, colour, ?, ?]`` -> how many squares of that colour the board holds (a digit).

Objects are few and the background is plain, so most image tokens are uninformative: the task is made
for measuring what visual token pruning costs in accuracy and saves in compute.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

__all__ = ["VQABatch", "Vocab", "synthetic_vqa"]

COLORS = ((1.0, 0.1, 0.1), (0.1, 1.0, 0.1), (0.2, 0.3, 1.0), (1.0, 1.0, 0.1))


@dataclass(frozen=True)
class Vocab:
    """Token ids of the question/answer vocabulary for a ``grid`` board with at most ``max_objects``."""

    grid: int = 4
    max_objects: int = 5
    PAD: int = 0
    QMARK: int = 1
    COLOR: int = 2
    COUNT: int = 3

    def row(self, r: int) -> int:
        return 4 + r

    def col(self, c: int) -> int:
        return 4 + self.grid + c

    def color(self, k: int) -> int:
        return 4 + 2 * self.grid + k

    @property
    def none(self) -> int:
        return 4 + 2 * self.grid + len(COLORS)

    def digit(self, n: int) -> int:
        return self.none + 1 + n

    @property
    def size(self) -> int:
        return self.digit(self.max_objects) + 1


@dataclass
class VQABatch:
    images: Tensor  # (n, 3, image_size, image_size) float32
    questions: Tensor  # (n, 4) int64
    answers: Tensor  # (n,) int64


def synthetic_vqa(n: int, *, seed: int, image_size: int = 32, grid: int = 4, max_objects: int = 5,
                  noise: float = 0.05) -> VQABatch:
    """``n`` image-question-answer triples, the same for the same arguments (a private generator)."""
    for name, value in (("n", n), ("image_size", image_size), ("grid", grid), ("max_objects", max_objects)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name}: expected a positive int, got {value!r}")
    if image_size % grid:
        raise ValueError(f"grid: expected a divisor of image_size={image_size}, got {grid}")
    if max_objects > grid * grid:
        raise ValueError(f"max_objects: expected at most grid*grid={grid * grid}, got {max_objects}")
    vocab = Vocab(grid, max_objects)
    g = torch.Generator().manual_seed(seed)
    cell = image_size // grid
    images = torch.randn(n, 3, image_size, image_size, generator=g) * noise
    questions = torch.full((n, 4), vocab.QMARK, dtype=torch.int64)
    answers = torch.empty(n, dtype=torch.int64)
    palette = torch.tensor(COLORS)
    for i in range(n):
        count = int(torch.randint(1, max_objects + 1, (1,), generator=g))
        cells = torch.randperm(grid * grid, generator=g)[:count]
        colors = torch.randint(0, len(COLORS), (count,), generator=g)
        board = torch.full((grid * grid,), -1, dtype=torch.int64)
        board[cells] = colors
        margin = max(1, cell // 4)
        for c, k in zip(cells.tolist(), colors.tolist()):
            r0, c0 = (c // grid) * cell + margin, (c % grid) * cell + margin
            images[i, :, r0:r0 + cell - 2 * margin, c0:c0 + cell - 2 * margin] += palette[k].view(3, 1, 1)
        if torch.rand((), generator=g) < 0.5:
            # ask about an occupied cell half of the time, so that "none" is not the usual answer
            pick = cells[0] if torch.rand((), generator=g) < 0.5 else torch.randint(0, grid * grid, (), generator=g)
            r, c = divmod(int(pick), grid)
            questions[i, :3] = torch.tensor([vocab.COLOR, vocab.row(r), vocab.col(c)])
            answers[i] = vocab.none if board[pick] < 0 else vocab.color(int(board[pick]))
        else:
            k = int(torch.randint(0, len(COLORS), (), generator=g))
            questions[i, :2] = torch.tensor([vocab.COUNT, vocab.color(k)])
            answers[i] = vocab.digit(int((board == k).sum()))
    return VQABatch(images, questions, answers)
