"""Structured synthetic token features standing in for a ViT encoder's output (no weights, no downloads), and
a linear probe to measure what pruning them costs a downstream classifier.

A token grid of ``side x side`` holds, per image: background tokens (one shared direction plus noise), an
object of random size and place whose tokens carry the class prototype (plus a per-image part variation),
and a few high-norm "artifact" tokens that carry no class information, like the outlier tokens of large
ViTs. ``distractor_norm`` sets how loud the artifacts are, and so how easily an L2-norm ranking is fooled."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn


@dataclass(frozen=True)
class FeatureSpec:
    side: int = 14
    dim: int = 768
    classes: int = 10
    object_side: tuple[int, int] = (3, 6)
    artifacts: int = 4
    object_norm: float = 1.4
    distractor_norm: float = 4.0
    noise: float = 0.6
    class_share: float = 0.5  # prototypes = normalize(common + class_share * own direction): classes look alike
    part: float = 0.8  # per-image variation of the object direction


class TokenFeatures:
    """Draws ``(n, side*side, dim)`` token features and labels from fixed class prototypes."""

    def __init__(self, spec: FeatureSpec, seed: int) -> None:
        self.spec = spec
        g = torch.Generator().manual_seed(seed)
        d = spec.dim
        unit = lambda *shape: torch.nn.functional.normalize(torch.randn(*shape, d, generator=g), dim=-1)  # noqa: E731
        self.background = unit(1)[0]
        own = unit(spec.classes)
        self.prototypes = torch.nn.functional.normalize(unit(1) + spec.class_share * own, dim=-1)
        self.artifact_dirs = unit(8)

    def sample(self, n: int, g: torch.Generator) -> tuple[Tensor, Tensor]:
        s = self.spec
        T, d = s.side * s.side, s.dim
        y = torch.randint(0, s.classes, (n,), generator=g)
        x = self.background + s.noise * torch.randn(n, T, d, generator=g) / d ** 0.5
        for i in range(n):
            h, w = (int(torch.randint(s.object_side[0], s.object_side[1] + 1, (), generator=g)) for _ in range(2))
            r0, c0 = int(torch.randint(0, s.side - h + 1, (), generator=g)), int(torch.randint(0, s.side - w + 1, (),
                                                                                                 generator=g))
            rows = torch.arange(r0, r0 + h)[:, None] * s.side + torch.arange(c0, c0 + w)[None, :]
            part = s.part * torch.randn(d, generator=g) / d ** 0.5
            obj = torch.nn.functional.normalize(self.prototypes[y[i]] + part, dim=0)
            x[i, rows.flatten()] += s.object_norm * obj - self.background
            spots = torch.randperm(T, generator=g)[: s.artifacts]
            which = torch.randint(0, len(self.artifact_dirs), (s.artifacts,), generator=g)
            x[i, spots] = s.distractor_norm * self.artifact_dirs[which]
        return x, y


class Probe(nn.Module):
    """Multinomial logistic regression on features standardised with the training set's mean and std."""

    def __init__(self, features: Tensor, labels: Tensor, classes: int, *, steps: int = 300, lr: float = 0.05) -> None:
        super().__init__()
        self.register_buffer("mean", features.mean(0))
        self.register_buffer("std", features.std(0) + 1e-6)
        self.linear = nn.Linear(features.shape[1], classes)
        opt = torch.optim.Adam(self.linear.parameters(), lr=lr, weight_decay=1e-4)
        for _ in range(steps):
            loss = nn.functional.cross_entropy(self(features), labels)
            opt.zero_grad()
            loss.backward()
            opt.step()

    def forward(self, features: Tensor) -> Tensor:
        return self.linear((features - self.mean) / self.std)

    @torch.no_grad()
    def accuracy(self, features: Tensor, labels: Tensor) -> float:
        return float((self(features).argmax(-1) == labels).float().mean())
