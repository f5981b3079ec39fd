"""A small ViT, and DynamicDepthViT: blocks that prune patch tokens progressively (``sf.topk_gather``)
and an optional early exit, with FLOPs counted per forward (``model.flops(images)``)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from . import flops as fl
from .pruning import TopKTokenPruner

__all__ = ["Block", "PatchEmbed", "DynamicDepthViT", "ViT"]


class Block(nn.Module):
    """Pre-norm transformer block (multi-head self-attention + MLP); ``causal=True`` for a decoder."""

    def __init__(self, dim: int, heads: int, mlp_ratio: float = 2.0, causal: bool = False) -> None:
        super().__init__()
        if dim % heads:
            raise ValueError(f"heads: expected a divisor of dim={dim}, got {heads}")
        self.heads, self.causal = heads, causal
        self.mlp_hidden = int(dim * mlp_ratio)
        self.norm1, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.qkv, self.proj = nn.Linear(dim, 3 * dim), nn.Linear(dim, dim)
        self.mlp = nn.Sequential(nn.Linear(dim, self.mlp_hidden), nn.GELU(), nn.Linear(self.mlp_hidden, dim))

    def forward(self, x: Tensor) -> Tensor:
        b, t, d = x.shape
        q, k, v = self.qkv(self.norm1(x)).view(b, t, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        att = F.scaled_dot_product_attention(q, k, v, is_causal=self.causal)
        x = x + self.proj(att.transpose(1, 2).reshape(b, t, d))
        return x + self.mlp(self.norm2(x))

    def flops(self, tokens: int) -> int:
        return fl.attention_block(tokens, self.qkv.in_features, self.mlp_hidden)


class PatchEmbed(nn.Module):
    """``(batch, C, H, W)`` images -> ``(batch, (H/p)*(W/p), dim)`` patch tokens plus learned positions."""

    def __init__(self, image_size: int, patch_size: int, in_chans: int, dim: int) -> None:
        super().__init__()
        if image_size % patch_size:
            raise ValueError(f"patch_size: expected a divisor of image_size={image_size}, got {patch_size}")
        self.image_size, self.in_chans = image_size, in_chans
        self.num_patches = (image_size // patch_size) ** 2
        self.proj = nn.Conv2d(in_chans, dim, patch_size, stride=patch_size)
        self.pos = nn.Parameter(torch.randn(1, self.num_patches, dim) * 0.02)

    def forward(self, images: Tensor) -> Tensor:
        expected = (self.in_chans, self.image_size, self.image_size)
        if not isinstance(images, Tensor) or images.dim() != 4 or tuple(images.shape[1:]) != expected:
            raise ValueError(f"images: expected (batch, {', '.join(map(str, expected))}), "
                             f"got {getattr(images, 'shape', type(images).__name__)}")
        return self.proj(images).flatten(2).transpose(1, 2) + self.pos

    def flops(self) -> int:
        k = self.proj.kernel_size[0]
        return fl.linear(self.num_patches, self.in_chans * k * k, self.proj.out_channels)


class DynamicDepthViT(nn.Module):
    """ViT classifier whose block i first keeps ``keep_ratios[i]`` of the current patch tokens (the CLS token
    is always kept; ``score`` as :class:`TopKTokenPruner`), and which, in eval mode with ``exit_threshold``
    set, stops after the first block whose exit head is that confident (max softmax) for every image.
    In training every exit head is computed: ``forward_exits`` returns them all for deep supervision.
    ``flops(images)`` runs the forward and returns the FLOPs it spent; ``last_depth`` the blocks it ran.
    """

    def __init__(self, image_size: int = 32, patch_size: int = 4, in_chans: int = 3, num_classes: int = 10,
                 dim: int = 64, depth: int = 4, heads: int = 4, mlp_ratio: float = 2.0,
                 keep_ratios: Sequence[float] | None = None, score: str = "l2", exit_threshold: float | None = None,
                 *, backend: str | None = None) -> None:
        super().__init__()
        keep_ratios = [1.0] * depth if keep_ratios is None else list(keep_ratios)
        if len(keep_ratios) != depth or not all(isinstance(r, (int, float)) and 0 < r <= 1 for r in keep_ratios):
            raise ValueError(f"keep_ratios: expected {depth} fractions in (0, 1], got {keep_ratios!r}")
        if exit_threshold is not None and not 0 < exit_threshold <= 1:
            raise ValueError(f"exit_threshold: expected None or a probability in (0, 1], got {exit_threshold!r}")
        self.keep_ratios, self.exit_threshold = [float(r) for r in keep_ratios], exit_threshold
        self.patch = PatchEmbed(image_size, patch_size, in_chans, dim)
        self.cls = nn.Parameter(torch.zeros(1, 1, dim))
        self.blocks = nn.ModuleList(Block(dim, heads, mlp_ratio) for _ in range(depth))
        self.pruners = nn.ModuleList(
            nn.Identity() if r == 1.0 else TopKTokenPruner(r, score, d_model=dim, backend=backend)
            for r in self.keep_ratios)
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, num_classes)
        self.exits = nn.ModuleList(nn.Linear(dim, num_classes) for _ in range(depth - 1)) if exit_threshold else None
        self.last_depth = depth

    def _run(self, images: Tensor, trace: list[int] | None, all_exits: bool) -> list[Tensor]:
        x = self.patch(images)
        x = torch.cat([self.cls.expand(x.shape[0], -1, -1), x], dim=1)
        outs: list[Tensor] = []
        self.last_depth = len(self.blocks)
        for i, (pruner, block) in enumerate(zip(self.pruners, self.blocks)):
            if isinstance(pruner, TopKTokenPruner):
                if trace is not None and pruner.scorer is not None:
                    trace.append(fl.scorer(x.shape[1] - 1, x.shape[2], pruner.scorer[1].out_features))
                x = torch.cat([x[:, :1], pruner(x[:, 1:])[0]], dim=1)
            x = block(x)
            if trace is not None:
                trace.append(block.flops(x.shape[1]))
            if self.exits is not None and i < len(self.exits) and (all_exits or not self.training):
                logits = self.exits[i](self.norm(x[:, 0]))
                if trace is not None:
                    trace.append(fl.linear(1, x.shape[2], logits.shape[1]))
                outs.append(logits)
                if not all_exits and not self.training and self._confident(logits):
                    self.last_depth = i + 1
                    return outs
        outs.append(self.head(self.norm(x[:, 0])))
        if trace is not None:
            trace.append(fl.linear(1, x.shape[2], outs[-1].shape[1]))
        return outs

    def _confident(self, logits: Tensor) -> bool:
        return bool((logits.softmax(-1).amax(-1) >= self.exit_threshold).all())

    def forward(self, images: Tensor) -> Tensor:
        """``images (batch, C, H, W)`` -> logits ``(batch, num_classes)`` (of the exit taken, in eval)."""
        return self._run(images, None, all_exits=False)[-1]

    def forward_exits(self, images: Tensor) -> list[Tensor]:
        """The logits of every exit head, then the final head's (train them all)."""
        return self._run(images, None, all_exits=True)

    @torch.no_grad()
    def flops(self, images: Tensor) -> int:
        """FLOPs per image of one forward on ``images`` (early exit included: run in the current mode)."""
        trace = [self.patch.flops()]
        self._run(images, trace, all_exits=False)
        return sum(trace)


class ViT(DynamicDepthViT):
    """The same-size baseline: every token through every block, no exit."""

    def __init__(self, image_size: int = 32, patch_size: int = 4, in_chans: int = 3, num_classes: int = 10,
                 dim: int = 64, depth: int = 4, heads: int = 4, mlp_ratio: float = 2.0) -> None:
        super().__init__(image_size, patch_size, in_chans, num_classes, dim, depth, heads, mlp_ratio)
