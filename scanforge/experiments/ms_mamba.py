"""Experiment ms-mamba: toy Mamba vs MS-Mamba (slow channel stride k=8) on marked-bit majority.

Source figures: both ~0.69 accuracy after 400 steps (~1M parameters each); MS-Mamba makes 64 slow updates
per 512 steps (0.125); forward 171 ms (MS-Mamba, a Python slow channel) vs 97 ms (Mamba)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

import scanforge.nn as snn

from .common import Context, Report, median_ms, parameters, train
from .sequences import SequenceNet, marked_majority


@dataclass(frozen=True)
class Config:
    lengths: tuple[int, ...] = (128, 256, 512)
    steps: int = 400
    batch: int = 16
    d_model: int = 16
    n_layer: int = 1
    d_state: int = 4
    stride: int = 8
    marks: int = 3
    lr: float = 5e-3
    eval_every: int = 50
    eval_n: int = 256
    timing_batch: int = 16


QUICK = Config(lengths=(16, 32), steps=4, batch=4, d_model=8, d_state=2, eval_every=2, eval_n=16, timing_batch=2)


def _model(kind: str, cfg: Config, backend: str | None) -> SequenceNet:
    if kind == "mamba":
        block = lambda: snn.Mamba(cfg.d_model, d_state=cfg.d_state, backend=backend)  # noqa: E731
    else:
        block = lambda: snn.MSMamba(cfg.d_model, d_state=cfg.d_state, stride=cfg.stride, backend=backend)  # noqa: E731
    return SequenceNet(2, 2, cfg.d_model, cfg.n_layer, block)


def run(ctx: Context) -> dict:
    cfg = QUICK if ctx.quick else Config()
    report = Report(ctx, cfg)
    report.note(f"task: marked-bit majority; {cfg.marks} marked bits at uniform positions, label = their majority,"
                " read at the last step (needs a running count over the whole sequence); chance 0.5; data generated")
    report.note(f"sized for a 2-core CPU: d_model={cfg.d_model}, d_state={cfg.d_state}, {cfg.n_layer} layer, "
                f"{cfg.steps} steps of batch {cfg.batch} (the source: ~1M parameters, 400 steps)")
    curves: dict[str, list] = {}
    final: dict[str, dict[int, float]] = {"mamba": {}, "ms-mamba": {}}
    for L in cfg.lengths:
        g = torch.Generator().manual_seed(ctx.seed * 1000 + L)
        x_eval, y_eval = marked_majority(cfg.eval_n, L, cfg.marks, g)
        x_eval, y_eval = x_eval.to(ctx.device), y_eval.to(ctx.device)
        for kind in ("mamba", "ms-mamba"):
            torch.manual_seed(ctx.seed)
            model = _model(kind, cfg, ctx.backend).to(ctx.device)
            data_g = torch.Generator().manual_seed(ctx.seed * 1000 + L + 1)

            def batches():
                while True:
                    x, y = marked_majority(cfg.batch, L, cfg.marks, data_g)  # noqa: B023
                    yield x.to(ctx.device), y.to(ctx.device)

            def loss_fn(x, y):
                return F.cross_entropy(model(x), y)  # noqa: B023

            def evaluate():
                return float((model(x_eval).argmax(-1) == y_eval).float().mean())  # noqa: B023

            curve = train(model, batches(), loss_fn, lr=cfg.lr, steps=cfg.steps, label=f"{kind} L={L}",
                          evaluate=evaluate, eval_every=cfg.eval_every)
            curves[f"{kind} L={L}"] = curve
            final[kind][L] = curve[-1][1]
            model.eval()
            xt = x_eval[: cfg.timing_batch]
            with torch.no_grad():
                fwd = median_ms(lambda: model(xt), device=ctx.device)  # noqa: B023
            updates = model.backbone.layers[0].slow_updates(L) if kind == "ms-mamba" else L
            report.row(model=kind, L=L, params=parameters(model), steps=cfg.steps, accuracy=curve[-1][1],
                       best_accuracy=max(a for _, a in curve), chance=0.5, slow_updates=updates,
                       update_ratio=updates / L, forward_ms=fwd, timing_batch=cfg.timing_batch)
    report.extra["curves"] = curves

    def draw_curves(ax):
        for label, curve in curves.items():
            ax.plot(*zip(*curve), label=label, linestyle="-" if label.startswith("mamba") else "--")
        ax.axhline(0.5, color="gray", linewidth=0.8, label="chance")

    report.plot("accuracy_curves.png", draw_curves, title="marked-bit majority: eval accuracy during training",
                xlabel="step", ylabel="accuracy")

    def draw_length(ax):
        for kind, acc in final.items():
            ax.plot(list(acc), list(acc.values()), marker="o", label=kind)
        ax.axhline(0.5, color="gray", linewidth=0.8, label="chance")

    report.plot("accuracy_vs_length.png", draw_length, title="final accuracy vs sequence length",
                xlabel="L", ylabel="accuracy")
    return report.finish()
