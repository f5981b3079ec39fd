"""Experiment saliency-pruning: which of 576 tokens to keep — a learned saliency scorer (trained through the
task loss via the gather's sigmoid weight) vs the token L2 norm vs random — at keep ratios 100% ... 1/16, in two
generated settings: one built so that L2 ranking fails (loud artifact tokens that carry nothing), one where the
object is the loudest content and L2 ranking is a fair guess. Source: accuracy stays stable until fewer than
~25% of the tokens are kept."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

import scanforge as sf
from scanforge.nn import TopKTokenPruner
from scanforge.nn.pruning import resolve_keep

from .common import Context, Report, batched, errorbar, train
from .features import FeatureSpec, TokenFeatures

# Background tokens have norm ~sqrt(1 + noise^2) = 1.41 here. "artifacts": 48 artifact tokens of norm 3.0 outrank
# everything, and the object (norm 1.4) is as loud as the background, so an L2 ranking keeps the artifacts first
# and then a random draw of object and background. "loud-object": no artifacts and an object of norm 2.5, so the
# L2 ranking keeps the object first.
ARTIFACTS = FeatureSpec(side=24, dim=64, object_side=(4, 9), artifacts=48, object_norm=1.4, distractor_norm=3.0,
                        noise=1.0)
LOUD_OBJECT = FeatureSpec(side=24, dim=64, object_side=(4, 9), artifacts=0, object_norm=2.5, noise=1.0)


@dataclass(frozen=True)
class Config:
    ratios: tuple[float, ...] = (1.0, 0.5, 0.25, 0.125, 0.0625)
    settings: tuple[tuple[str, FeatureSpec], ...] = (("artifacts", ARTIFACTS), ("loud-object", LOUD_OBJECT))
    n_train: int = 1500
    n_test: int = 500
    steps: int = 200
    batch: int = 32
    lr: float = 3e-3
    anneal: float = 0.5  # share of the steps over which the keep ratio falls from 100% to its target


QUICK = Config(ratios=(1.0, 0.25), settings=(("artifacts", FeatureSpec(side=6, dim=16, object_side=(1, 2),
                                                                       artifacts=2)),),
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
    """tokens -> pruner -> attention pooling of the kept tokens -> LayerNorm -> linear head. The attention lets
    the full-token model find the object among 576 tokens (a mean would drown it). Its logits come from a learned
    key, or, with a saliency pruner, from the saliency scorer itself: the scorer that ranks the tokens is the one
    the task loss trains through the pooling, so it learns from the first step (through the gather's sigmoid
    weights alone it learned too slowly to rank anything before the pruning began)."""

    def __init__(self, pruner: nn.Module | None, dim: int, classes: int) -> None:
        super().__init__()
        self.pruner = pruner
        scorer = getattr(pruner, "scorer", None)
        self.key = scorer if scorer is not None else nn.Sequential(nn.LayerNorm(dim), nn.Linear(dim, 1))
        self.norm, self.head = nn.LayerNorm(dim), nn.Linear(dim, classes)

    def forward(self, x: Tensor) -> Tensor:
        if self.pruner is not None:
            x = self.pruner(x)[0]
        weights = self.key(x).softmax(dim=1)
        return self.head(self.norm((weights * x).sum(1)))


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
    report = Report(ctx, cfg, keys=("setting", "keep_ratio"))
    for name, spec in cfg.settings:
        report.note(f"setting {name!r}: {spec.side * spec.side} x {spec.dim} synthetic tokens; background norm "
                    f"~{(1 + spec.noise ** 2) ** 0.5:.2f}, one object of {spec.object_side[0]}-{spec.object_side[1]} "
                    f"tokens a side carrying one of {spec.classes} class prototypes at norm {spec.object_norm}, "
                    f"{spec.artifacts} artifact tokens of norm {spec.distractor_norm} that carry nothing"
                    + (" (so L2 ranking keeps them before the object)" if spec.artifacts else
                       " (so L2 ranking keeps the object first)"))
    report.note("each (setting, method, ratio) trains its own classifier (and scorer) on the pruned tokens: "
                "attention pooling -> LayerNorm -> linear, the attention logits from a learned key (L2, random) or "
                "from the saliency scorer itself (saliency; its sigmoid weights also scale the tokens it keeps; at "
                "100% it keeps every token). Training anneals the keep ratio from 100% to its target over the "
                f"first {cfg.anneal:.0%} of the steps (top-k passes no gradient to the tokens it drops)")
    report.note(f"sized for a 2-core CPU: {cfg.steps} steps of batch {cfg.batch}, {cfg.n_train} training images")
    methods = ("saliency", "l2", "random")
    for seed in ctx.seeds:
        for setting, spec in cfg.settings:
            T = spec.side * spec.side
            gen = TokenFeatures(spec, seed)
            g = torch.Generator().manual_seed(seed * 1000 + 5)
            x_train, y_train = gen.sample(cfg.n_train, g)
            x_test, y_test = gen.sample(cfg.n_test, g)
            full_acc = None
            for ratio in cfg.ratios:
                accs = {}
                for method in methods:
                    if ratio == 1.0 and method != "saliency" and full_acc is not None:
                        accs[method] = full_acc  # keeping every token: L2 and random are the same model
                        continue
                    accs[method] = _train_one(ctx, cfg, spec, method, ratio, seed, x_train, y_train, x_test, y_test,
                                              f"{setting}: {method} {ratio:.1%} seed={seed}")
                    if ratio == 1.0 and method != "saliency":
                        full_acc = accs[method]
                report.row(setting=setting, keep_ratio=ratio, seed=seed,
                           tokens_kept=resolve_keep(ratio, T) if ratio < 1 else T,
                           **{f"acc_{m}": accs[m] for m in methods}, chance=1 / spec.classes)
    rows = report.summary()

    def draw(ax):
        for (setting, _), style in zip(cfg.settings, ("-", "--")):
            sub = [r for r in rows if r["setting"] == setting]
            for method in methods:
                errorbar(ax, [r["keep_ratio"] for r in sub], sub, f"acc_{method}", marker="o", linestyle=style,
                         label=f"{setting}: {method}")
        ax.axhline(rows[0]["chance"], color="gray", linewidth=0.8, label="chance")
        ax.set_xscale("log", base=2)
        ax.invert_xaxis()

    report.plot("accuracy_vs_keep_ratio.png", draw, title="test accuracy vs share of the tokens kept (mean +- sd "
                "over seeds)", xlabel="keep ratio", ylabel="accuracy")
    return report.finish()


def _train_one(ctx: Context, cfg: Config, spec: FeatureSpec, method: str, ratio: float, seed: int, x_train: Tensor,
               y_train: Tensor, x_test: Tensor, y_test: Tensor, label: str) -> float:
    """Train one pruned classifier (the keep ratio annealed) and return its test accuracy at ``ratio``."""
    torch.manual_seed(seed)
    model = PrunedClassifier(_pruner(method, ratio, spec.dim, ctx.backend), spec.dim, spec.classes).to(ctx.device)
    order_g = torch.Generator().manual_seed(seed)

    def batches():
        step = 0
        while True:
            perm = torch.randperm(cfg.n_train, generator=order_g)
            for s in batched(cfg.n_train, cfg.batch):
                if model.pruner is not None:
                    model.pruner.k = _keep_schedule(ratio, step, cfg)
                step += 1
                i = perm[s]
                yield x_train[i].to(ctx.device), y_train[i].to(ctx.device)

    def loss_fn(x, y):
        return F.cross_entropy(model(x), y)

    def evaluate():
        if model.pruner is not None:
            model.pruner.k = ratio  # tested at the target ratio
        hits = 0
        for s in batched(len(y_test), 128):
            hits += int((model(x_test[s].to(ctx.device)).argmax(-1).cpu() == y_test[s]).sum())
        return hits / len(y_test)

    return train(model, batches(), loss_fn, lr=cfg.lr, steps=cfg.steps, label=label, evaluate=evaluate)[-1][1]
