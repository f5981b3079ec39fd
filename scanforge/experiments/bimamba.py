"""Experiment bimamba: causal Mamba vs bidirectional Mamba (the fused bidirectional scan) on a task where the
future matters. Source figure: ~92.5% for the bidirectional model after 5 epochs, better than causal."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

import scanforge.nn as snn

from .common import Context, Report, batched, curve_band, parameters, shuffled_batches, train
from .sequences import SequenceNet, causal_window_ceiling, window_majority


@dataclass(frozen=True)
class Config:
    L: int = 64
    w: int = 4
    n_train: int = 2048
    n_eval: int = 512
    epochs: int = 5
    batch: int = 32
    d_model: int = 32
    n_layer: int = 1
    d_state: int = 8
    lr: float = 3e-3


QUICK = Config(L=16, w=2, n_train=16, n_eval=16, epochs=2, batch=8, d_model=8, d_state=4)


def _accuracy(logits, y) -> float:
    keep = y != -100
    return float((logits.argmax(-1)[keep] == y[keep]).float().mean())


def run(ctx: Context) -> dict:
    cfg = QUICK if ctx.quick else Config()
    report = Report(ctx, cfg, keys=("model",), fixed=("chance", "causal_ceiling"))
    ceiling = causal_window_ceiling(cfg.w)
    report.note(f"task: random +-1 bits, L={cfg.L}; label of position t = majority of bits t-{cfg.w}..t+{cfg.w} "
                f"({cfg.w} of them in the future); chance 0.5; a causal model sees {cfg.w + 1} of the {2 * cfg.w + 1} "
                f"bits, so its best possible accuracy is {ceiling:.4f}; data generated")
    curves: dict[str, dict[int, list]] = {}
    for seed in ctx.seeds:
        g = torch.Generator().manual_seed(seed * 1000 + 3)
        x_train, y_train = window_majority(cfg.n_train, cfg.L, cfg.w, g)
        x_eval, y_eval = window_majority(cfg.n_eval, cfg.L, cfg.w, g)
        x_eval, y_eval = x_eval.to(ctx.device), y_eval.to(ctx.device)
        steps_per_epoch = len(batched(cfg.n_train, cfg.batch))
        for kind in ("causal", "bidirectional"):
            torch.manual_seed(seed)
            if kind == "causal":
                block = lambda: snn.Mamba(cfg.d_model, d_state=cfg.d_state, backend=ctx.backend)  # noqa: E731
            else:
                block = lambda: snn.BiMamba(cfg.d_model, d_state=cfg.d_state, backend=ctx.backend)  # noqa: E731
            model = SequenceNet(1, 2, cfg.d_model, cfg.n_layer, block, readout="all").to(ctx.device)
            batches = shuffled_batches((x_train[:cfg.n_train], y_train[:cfg.n_train]), cfg.batch, seed, ctx.device)

            def loss_fn(x, y):
                return F.cross_entropy(model(x).flatten(0, 1), y.flatten(), ignore_index=-100)  # noqa: B023

            def evaluate():
                return _accuracy(model(x_eval), y_eval)  # noqa: B023

            curve = train(model, batches, loss_fn, lr=cfg.lr, steps=cfg.epochs * steps_per_epoch,
                          label=f"{kind} seed={seed}", evaluate=evaluate, eval_every=steps_per_epoch)
            curves.setdefault(kind, {})[seed] = [(step / steps_per_epoch, acc) for step, acc in curve]
            report.row(model=kind, seed=seed, params=parameters(model), epochs=cfg.epochs, accuracy=curve[-1][1],
                       **{f"epoch_{i + 1}": acc for i, (_, acc) in enumerate(curve[: cfg.epochs])},
                       chance=0.5, causal_ceiling=ceiling)
    report.extra["curves"] = curves

    def draw(ax):
        for kind, per_seed in curves.items():
            curve_band(ax, list(per_seed.values()), marker="o", label=kind)
        ax.axhline(ceiling, color="C0", linestyle=":", label="best possible for a causal model")
        ax.axhline(0.5, color="gray", linewidth=0.8, label="chance")

    report.plot("accuracy_curves.png", draw, title=f"centred-window majority (w={cfg.w}): eval accuracy per epoch",
                xlabel="epoch", ylabel="per-position accuracy")
    return report.finish()
