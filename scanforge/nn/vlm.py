"""TinyVLM: the LLaVA pipeline in miniature — ViT encoder -> projector -> token pruner -> decoder language
model over [visual tokens; question tokens] that predicts the one-token answer — to measure what pruning
visual tokens does to FLOPs, latency and accuracy."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from . import flops as fl
from .lm import Backbone
from .mamba import Mamba
from .pruning import TopKTokenPruner
from .vit import Block, PatchEmbed

__all__ = ["TinyVLM"]


class _TransformerDecoder(nn.Module):
    def __init__(self, d_model: int, n_layer: int, heads: int) -> None:
        super().__init__()
        self.layers = nn.ModuleList(Block(d_model, heads, causal=True) for _ in range(n_layer))
        self.norm_f = nn.LayerNorm(d_model)

    def forward(self, x: Tensor) -> Tensor:
        for layer in self.layers:
            x = layer(x)
        return self.norm_f(x)


class TinyVLM(nn.Module):
    """``forward(images, questions)`` -> answer logits ``(batch, vocab_size)``, read at the last position.

    ``keep``: None (no pruning) or the visual tokens to keep (count or fraction; ``score``/``summary`` as
    :class:`TopKTokenPruner`). ``decoder``: ``"mamba"`` or ``"transformer"``. ``flops(images, questions)``
    counts one forward per example; ``last_visual_tokens`` is how many visual tokens the decoder read.
    """

    def __init__(self, vocab_size: int, image_size: int = 32, patch_size: int = 4, vision_dim: int = 48,
                 vision_depth: int = 2, d_model: int = 48, n_layer: int = 2, decoder: str = "mamba",
                 keep: int | float | None = None, score: str = "l2", summary: str | None = None, heads: int = 4,
                 *, backend: str | None = None) -> None:
        super().__init__()
        if decoder not in ("mamba", "transformer"):
            raise ValueError(f"decoder: expected 'mamba' or 'transformer', got {decoder!r}")
        self.vocab_size, self.decoder_kind = vocab_size, decoder
        self.patch = PatchEmbed(image_size, patch_size, 3, vision_dim)
        self.vision = nn.ModuleList(Block(vision_dim, heads) for _ in range(vision_depth))
        self.projector = nn.Sequential(nn.LayerNorm(vision_dim), nn.Linear(vision_dim, d_model), nn.GELU(),
                                       nn.Linear(d_model, d_model))
        self.pruner = None if keep is None else TopKTokenPruner(keep, score, summary, d_model, backend=backend)
        self.embedding = nn.Embedding(vocab_size, d_model)
        if decoder == "mamba":
            self.decoder = Backbone(d_model, n_layer, lambda: Mamba(d_model, d_state=8, backend=backend))
        else:
            self.decoder = _TransformerDecoder(d_model, n_layer, heads)
        self.lm_head = nn.Linear(d_model, vocab_size, bias=False)
        self.last_visual_tokens = self.patch.num_patches

    def visual_tokens(self, images: Tensor) -> Tensor:
        x = self.patch(images)
        for block in self.vision:
            x = block(x)
        x = self.projector(x)
        if self.pruner is not None:
            x = self.pruner(x)[0]
        self.last_visual_tokens = x.shape[1]
        return x

    def forward(self, images: Tensor, questions: Tensor) -> Tensor:
        if not isinstance(questions, Tensor) or questions.dim() != 2 or questions.dtype != torch.int64:
            raise ValueError(f"questions: expected int64 (batch, Lq), got {getattr(questions, 'shape', questions)}")
        seq = torch.cat([self.visual_tokens(images), self.embedding(questions)], dim=1)
        return self.lm_head(self.decoder(seq)[:, -1])

    @torch.no_grad()
    def flops(self, images: Tensor, questions: Tensor) -> int:
        """FLOPs per example of one forward (encoder, projector, scorer, decoder, head)."""
        n = self.patch.num_patches
        vd, d = self.patch.proj.out_channels, self.embedding.embedding_dim
        total = self.patch.flops() + sum(b.flops(n) for b in self.vision)
        total += fl.linear(n, vd, d) + fl.linear(n, d, d)
        if self.pruner is not None and self.pruner.scorer is not None:
            total += fl.scorer(n, d, self.pruner.scorer[1].out_features)
        kept = n if self.pruner is None else self.pruner.kept(n) + (self.pruner.summary is not None)
        tokens = kept + questions.shape[1]
        if self.decoder_kind == "mamba":
            total += sum(fl.mamba_block(tokens, d, m.d_inner, m.d_state, m.d_conv, m.dt_rank)
                         for m in self.decoder.layers)
        else:
            total += sum(b.flops(tokens) for b in self.decoder.layers)
        return total + fl.linear(1, d, self.vocab_size)
