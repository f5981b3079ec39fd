"""Experiment saliency-pruning: which of 576 tokens to keep — a learned saliency scorer (trained through the
task loss via the gather's sigmoid weight) vs the token L2 norm vs random — at keep ratios 100% ... 10%.
Source: accuracy stays stable until fewer than ~25% of the tokens are kept."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

import scanforge as sf
from scanforge.nn import TopKTokenPruner
from scanforge.nn.pruning import resolve_keep

from .common import Context, Report, batched, train
from .features import FeatureSpec, TokenFeatures


@dataclass(frozen=True)
class Config:
    ratios: tuple[float, ...] = (1.0, 0.75, 0.5, 0.25, 0.1)
    features: FeatureSpec = FeatureSpec(side=24, dim=64, object_side=(4, 9), artifacts=48, object_norm=1.4,
                                        distractor_norm=3.0, noise=1.0)
    n_train: int = 1500
    n_test: int = 500
    steps: int = 200
    batch: int = 32
    lr: float = 3e-3
    anneal: float = 0.5  # share of the steps over which the keep ratio falls from 100% to its target


QUICK = Config(ratios=(1.0, 0.25), features=FeatureSpec(side=6, dim=16, object_side=(1, 2), artifacts=2),
               n_train=16, n_test=8, steps=2, batch=8)


class RandomPruner(nn.Module):
    """Keeps k tokens drawn uniformly (fresh scores on every call), in their original order."""

    def __init__(self, k: float, backend: str | None) -> None:
        super().__init__()
        self.k, self.backend = k, backend

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        scores = torch.rand(x.shape[:2], device=x.device)
        return sf.topk_gather(x, resolve_keep(self.k, x.shape[1]), scores, backend=self.backend)


class PrunedClassifier(nn.Module):
    """tokens -> pruner -> mean of the kept tokens -> LayerNorm -> linear head."""

    def __init__(self, pruner: nn.Module | None, dim: int, classes: int) -> None:
        super().__init__()
        self.pruner = pruner
        self.norm, self.head = nn.LayerNorm(dim), nn.Linear(dim, classes)

    def forward(self, x: Tensor) -> Tensor:
        if self.pruner is not None:
            x = self.pruner(x)[0]
        return self.head(self.norm(x.mean(1)))


def _pruner(method: str, ratio: float, dim: int, backend: str | None) -> nn.Module | None:
    """At ratio 1 the saliency scorer still weights every token (a fair 100% point); L2 and random keep all."""
    if ratio == 1.0 and method != "saliency":
        return None
    if method == "random":
        return RandomPruner(ratio, backend)
    return TopKTokenPruner(ratio, score="saliency" if method == "saliency" else "l2", d_model=dim, backend=backend)


def _keep_schedule(ratio: float, step: int, cfg: Config) -> float:
    """Keep ratio at a training step: from 100% down to ``ratio`` over the first ``anneal`` share of the steps.
    Top-k selection passes no gradient, so a scorer pruning hard from step 0 never sees the tokens it drops;
    the same schedule is used for every method."""
    span = max(1, int(cfg.anneal * cfg.steps))
    return float(max(ratio, 1.0 - (1.0 - ratio) * step / span))


def run(ctx: Context) -> dict:
    cfg = QUICK if ctx.quick else Config()
    spec = cfg.features
    T = spec.side * spec.side
    report = Report(ctx, cfg)
    report.note(f"features: structured synthetic {T} x {spec.dim} tokens (background, one class-carrying object, "
                f"{spec.artifacts} high-norm artifact tokens that fool an L2 ranking), {spec.classes} classes; "
                "generated. Each (method, ratio) trains its own classifier (and scorer) on the pruned tokens; the "
                "classifier is LayerNorm(mean of the kept tokens) -> linear, and the saliency scorer's sigmoid "
                "weights also weight the mean (at 100% it keeps every token but still weights them). Training "
                f"anneals the keep ratio from 100% to its target over the first {cfg.anneal:.0%} of the steps.")
    report.note(f"sized for a 2-core CPU: {cfg.steps} steps of batch {cfg.batch}, {cfg.n_train} training images")
    gen = TokenFeatures(spec, ctx.seed)
    g = torch.Generator().manual_seed(ctx.seed * 1000 + 5)
    x_train, y_train = gen.sample(cfg.n_train, g)
    x_test, y_test = gen.sample(cfg.n_test, g)
    results: dict[str, list[tuple[float, float]]] = {"saliency": [], "l2": [], "random": []}
    full_acc = None
    for ratio in cfg.ratios:
        for method in results:
            if ratio == 1.0 and method != "saliency" and full_acc is not None:
                results[method].append((ratio, full_acc))  # keeping every token: L2 and random are the same model
                continue
            torch.manual_seed(ctx.seed)
            model = PrunedClassifier(_pruner(method, ratio, spec.dim, ctx.backend), spec.dim, spec.classes)
            model = model.to(ctx.device)
            order_g = torch.Generator().manual_seed(ctx.seed)

            def batches():
                step = 0
                while True:
                    perm = torch.randperm(cfg.n_train, generator=order_g)  # noqa: B023
                    for s in batched(cfg.n_train, cfg.batch):
                        if model.pruner is not None:  # noqa: B023
                            model.pruner.k = _keep_schedule(ratio, step, cfg)  # noqa: B023
                        step += 1
                        i = perm[s]
                        yield x_train[i].to(ctx.device), y_train[i].to(ctx.device)

            def loss_fn(x, y):
                return F.cross_entropy(model(x), y)  # noqa: B023

            def evaluate():
                if model.pruner is not None:  # noqa: B023
                    model.pruner.k = ratio  # noqa: B023 - tested at the target ratio
                hits = 0
                for s in batched(cfg.n_test, 128):
                    hits += int((model(x_test[s].to(ctx.device)).argmax(-1).cpu() == y_test[s]).sum())  # noqa: B023
                return hits / cfg.n_test

            label = f"{method} {ratio:.0%}"
            acc = train(model, batches(), loss_fn, lr=cfg.lr, steps=cfg.steps, label=label, evaluate=evaluate)[-1][1]
            if ratio == 1.0 and method != "saliency":
                full_acc = acc
            results[method].append((ratio, acc))
    for i, ratio in enumerate(cfg.ratios):
        report.row(keep_ratio=ratio, tokens_kept=resolve_keep(ratio, T) if ratio < 1 else T,
                   **{f"acc_{m}": results[m][i][1] for m in results}, chance=1 / spec.classes)
    report.extra["curves"] = results

    def draw(ax):
        for method, pts in results.items():
            ax.plot(*zip(*pts), marker="o", label=method)
        ax.axhline(1 / spec.classes, color="gray", linewidth=0.8, label="chance")
        ax.axvline(0.25, color="lightgray", linestyle=":", label="25% kept")
        ax.invert_xaxis()

    report.plot("accuracy_vs_keep_ratio.png", draw, title=f"test accuracy vs share of the {T} tokens kept",
                xlabel="keep ratio", ylabel="accuracy")
    return report.finish()
