"""Experiment ms-mamba: Mamba vs MS-Mamba (slow channel stride k = 4, 8, 16) vs AC-Mamba (learned gate) on key
recall, L in {128, 256, 512, 1024}: accuracy, slow-channel updates and forward time, over several seeds.

Source figures: both ~0.69 accuracy after 400 steps (~1M parameters each); MS-Mamba makes 64 slow updates
per 512 steps (0.125) and holds or improves its accuracy at L = 256 / 512; forward 171 ms (MS-Mamba, a Python
slow channel) vs 97 ms (Mamba)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

import scanforge.nn as snn

from .common import Context, Report, curve_band, errorbar, median_ms, parameters, train
from .sequences import SequenceNet, key_recall


@dataclass(frozen=True)
class Config:
    lengths: tuple[int, ...] = (128, 256, 512, 1024)
    models: tuple[str, ...] = ("mamba", "ms-mamba k=4", "ms-mamba k=8", "ms-mamba k=16", "ac-mamba")
    key_len: int = 64
    classes: int = 4
    distract: float = 0.0
    steps: int = 300
    batch: int = 16
    d_model: int = 16
    n_layer: int = 1
    d_state: int = 4
    lr: float = 1e-2
    eval_every: int = 100
    eval_n: int = 256
    timing_batch: int = 16


QUICK = Config(lengths=(16, 32), models=("mamba", "ms-mamba k=8", "ac-mamba"), key_len=4, steps=4, batch=4,
               d_model=8, d_state=2, eval_every=2, eval_n=16, timing_batch=2)


def _model(kind: str, cfg: Config, backend: str | None) -> SequenceNet:
    if kind == "mamba":
        block = lambda: snn.Mamba(cfg.d_model, d_state=cfg.d_state, backend=backend)  # noqa: E731
    elif kind.startswith("ms-mamba k="):
        stride = int(kind.split("=")[1])
        block = lambda: snn.MSMamba(cfg.d_model, d_state=cfg.d_state, stride=stride, backend=backend)  # noqa: E731
    elif kind == "ac-mamba":
        block = lambda: snn.ACMamba(cfg.d_model, d_state=cfg.d_state, backend=backend)  # noqa: E731
    else:
        raise ValueError(f"model: expected mamba, ms-mamba k=N or ac-mamba, got {kind!r}")
    return SequenceNet(cfg.classes + 1, cfg.classes, cfg.d_model, cfg.n_layer, block)


def _slow_updates(kind: str, model: SequenceNet, x, L: int) -> float | None:
    """Slow-state updates per sequence: ceil(L / k) for MS-Mamba, where AC-Mamba's gate fired on ``x``."""
    block = model.backbone.layers[0]
    if kind == "mamba":
        return None
    if kind == "ac-mamba":
        with torch.no_grad():
            model(x)
        return float((block._last_gate.detach() > 0.5).float().sum(-1).mean())
    return float(block.slow_updates(L))


def run(ctx: Context) -> dict:
    cfg = QUICK if ctx.quick else Config()
    report = Report(ctx, cfg, keys=("model", "L"))
    report.note(f"task: key recall; the first {cfg.key_len} steps repeat a key (one of {cfg.classes} classes, "
                f"one-hot + a flag), the other L - {cfg.key_len} steps are blank"
                + (f" or, with probability {cfg.distract}, an unflagged random class" if cfg.distract else "")
                + f"; label = the key, read at the last step; chance {1 / cfg.classes:.2f}; data generated")
    report.note("why it is hard for a fast channel alone: its state decays by exp(dt * A) at every one of the "
                f"L - {cfg.key_len} blank steps, so it must learn dt close to 0 on blanks and large on the key; the "
                "key is the same length at every L, so the gap to bridge grows with L while the write stays the same")
    report.note(f"sized for a 2-core CPU: d_model={cfg.d_model}, d_state={cfg.d_state}, {cfg.n_layer} layer, "
                f"{cfg.steps} steps of batch {cfg.batch}, lr {cfg.lr} (the source: ~1M parameters, 400 steps)")
    curves: dict[str, dict[int, list]] = {}
    for seed in ctx.seeds:
        for L in cfg.lengths:
            g = torch.Generator().manual_seed(seed * 1000 + L)
            x_eval, y_eval = key_recall(cfg.eval_n, L, cfg.key_len, cfg.classes, g, cfg.distract)
            x_eval, y_eval = x_eval.to(ctx.device), y_eval.to(ctx.device)
            for kind in cfg.models:
                torch.manual_seed(seed)
                model = _model(kind, cfg, ctx.backend).to(ctx.device)
                data_g = torch.Generator().manual_seed(seed * 1000 + L + 1)

                def batches():
                    while True:
                        x, y = key_recall(cfg.batch, L, cfg.key_len, cfg.classes, data_g, cfg.distract)  # noqa: B023
                        yield x.to(ctx.device), y.to(ctx.device)

                def loss_fn(x, y):
                    return F.cross_entropy(model(x), y)  # noqa: B023

                def evaluate():
                    return float((model(x_eval).argmax(-1) == y_eval).float().mean())  # noqa: B023

                curve = train(model, batches(), loss_fn, lr=cfg.lr, steps=cfg.steps,
                              label=f"{kind} L={L} seed={seed}", evaluate=evaluate, eval_every=cfg.eval_every)
                curves.setdefault(f"{kind} L={L}", {})[seed] = curve
                model.eval()
                xt = x_eval[: cfg.timing_batch]
                with torch.no_grad():
                    fwd = median_ms(lambda: model(xt), device=ctx.device)  # noqa: B023
                updates = _slow_updates(kind, model, x_eval, L)
                report.row(model=kind, L=L, seed=seed, params=parameters(model), steps=cfg.steps,
                           accuracy=curve[-1][1], best_accuracy=max(a for _, a in curve), chance=1 / cfg.classes,
                           slow_updates="-" if updates is None else updates,
                           update_ratio="-" if updates is None else updates / L, forward_ms=fwd,
                           timing_batch=cfg.timing_batch)
    report.extra["curves"] = curves
    report.note("slow_updates: slow-state updates per sequence (MS-Mamba: ceil(L / k); AC-Mamba: where its gate "
                "fired on the test sequences; Mamba has no slow channel); forward_ms: median of 7 forwards of "
                f"batch {cfg.timing_batch} on {ctx.device}, measured in this run right after training")
    rows = report.summary()

    def draw_curves(ax):
        for label, per_seed in curves.items():
            if label.endswith(f"L={cfg.lengths[-1]}"):
                curve_band(ax, list(per_seed.values()), label=label)
        ax.axhline(1 / cfg.classes, color="gray", linewidth=0.8, label="chance")

    report.plot("accuracy_curves.png", draw_curves, title=f"key recall at L={cfg.lengths[-1]}: test accuracy "
                "during training (mean +- sd over seeds)", xlabel="step", ylabel="accuracy")

    def draw_length(ax):
        for kind in cfg.models:
            sub = [r for r in rows if r["model"] == kind]
            errorbar(ax, [r["L"] for r in sub], sub, "accuracy", marker="o", label=kind)
        ax.axhline(1 / cfg.classes, color="gray", linewidth=0.8, label="chance")
        ax.set_xscale("log", base=2)

    report.plot("accuracy_vs_length.png", draw_length, title="key recall: final accuracy vs L (mean +- sd over "
                "seeds)", xlabel="L", ylabel="accuracy")
    return report.finish()
