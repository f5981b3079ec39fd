"""Sequence models around any block with ``forward(x)``/``step(x_t, cache)``/``allocate_cache``:
embedding (or an input projection), N pre-norm residual blocks with RMSNorm, and a head."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

from .mamba import Mamba

__all__ = ["Backbone", "MambaLM", "MambaClassifier"]


class Backbone(nn.Module):
    """``x <- x + block(RMSNorm(x))`` for each block, then a final RMSNorm."""

    def __init__(self, d_model: int, n_layer: int, block: Callable[[], nn.Module]) -> None:
        super().__init__()
        if isinstance(n_layer, bool) or not isinstance(n_layer, int) or n_layer < 1:
            raise ValueError(f"n_layer: expected a positive int, got {n_layer!r}")
        self.layers = nn.ModuleList(block() for _ in range(n_layer))
        self.norms = nn.ModuleList(nn.RMSNorm(d_model) for _ in range(n_layer))
        self.norm_f = nn.RMSNorm(d_model)

    def forward(self, x: Tensor) -> Tensor:
        for norm, layer in zip(self.norms, self.layers):
            x = x + layer(norm(x))
        return self.norm_f(x)

    def step(self, x_t: Tensor, caches: list) -> Tensor:
        for norm, layer, cache in zip(self.norms, self.layers, caches):
            x_t = x_t + layer.step(norm(x_t), cache)
        return self.norm_f(x_t)

    def allocate_cache(self, batch: int) -> list:
        return [layer.allocate_cache(batch) for layer in self.layers]

    def compute_penalty(self) -> Tensor:
        """Sum of the blocks' compute penalties from the last forward (0 for blocks without one)."""
        terms = [layer.compute_penalty() for layer in self.layers if hasattr(layer, "compute_penalty")]
        return torch.stack(terms).sum() if terms else torch.zeros(())


def _check_ids(ids: Tensor, vocab_size: int, dims: int) -> None:
    if not isinstance(ids, Tensor) or ids.dim() != dims or ids.dtype not in (torch.int64, torch.int32):
        got = (tuple(ids.shape), ids.dtype) if isinstance(ids, Tensor) else type(ids).__name__
        raise ValueError(f"ids: expected an integer tensor with {dims} dims, got {got}")


class MambaLM(nn.Module):
    """Language model: token embedding -> :class:`Backbone` -> tied LM head.

    ``block`` builds one layer (default: ``Mamba(d_model, backend=backend, **block_kwargs)``)."""

    def __init__(self, vocab_size: int, d_model: int, n_layer: int, *, block: Callable[[], nn.Module] | None = None,
                 backend: str | None = None, **block_kwargs) -> None:
        super().__init__()
        self.vocab_size = vocab_size
        self.embedding = nn.Embedding(vocab_size, d_model)
        block = block or (lambda: Mamba(d_model, backend=backend, **block_kwargs))
        self.backbone = Backbone(d_model, n_layer, block)
        self.lm_head = nn.Linear(d_model, vocab_size, bias=False)
        self.lm_head.weight = self.embedding.weight

    def forward(self, ids: Tensor) -> Tensor:
        """``ids: (batch, L)`` -> logits ``(batch, L, vocab)``."""
        _check_ids(ids, self.vocab_size, 2)
        return self.lm_head(self.backbone(self.embedding(ids)))

    def allocate_cache(self, batch: int) -> list:
        return self.backbone.allocate_cache(batch)

    def step(self, ids_t: Tensor, caches: list) -> Tensor:
        """``ids_t: (batch,)`` -> logits ``(batch, vocab)`` of the next token; caches updated in place."""
        _check_ids(ids_t, self.vocab_size, 1)
        return self.lm_head(self.backbone.step(self.embedding(ids_t), caches))

    def compute_penalty(self) -> Tensor:
        return self.backbone.compute_penalty()


class MambaClassifier(nn.Module):
    """Sequence classifier: linear input projection of ``(batch, L, d_in)`` features -> :class:`Backbone` ->
    mean over L -> linear head."""

    def __init__(self, d_in: int, num_classes: int, d_model: int, n_layer: int, *,
                 block: Callable[[], nn.Module] | None = None, backend: str | None = None, **block_kwargs) -> None:
        super().__init__()
        self.d_in = d_in
        self.proj = nn.Linear(d_in, d_model)
        block = block or (lambda: Mamba(d_model, backend=backend, **block_kwargs))
        self.backbone = Backbone(d_model, n_layer, block)
        self.head = nn.Linear(d_model, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        """``x: (batch, L, d_in)`` -> logits ``(batch, num_classes)``."""
        if not isinstance(x, Tensor) or x.dim() != 3 or x.shape[-1] != self.d_in:
            raise ValueError(f"x: expected (batch, L, {self.d_in}), got {getattr(x, 'shape', type(x).__name__)}")
        return self.head(self.backbone(self.proj(x)).mean(dim=1))

    def compute_penalty(self) -> Tensor:
        return self.backbone.compute_penalty()
