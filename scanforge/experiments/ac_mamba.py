"""Experiment ac-mamba: AC-Mamba (slow channel updates where a learned gate fires) vs MS-Mamba (every k-th
step) vs Mamba (no slow channel) on bursty sequences, and AC-Mamba's accuracy vs its compute penalty."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

import scanforge.nn as snn

from .common import Context, Report, curve_band, errorbar, parameters, train
from .sequences import SequenceNet, bursts


@dataclass(frozen=True)
class Config:
    L: int = 96
    n_bursts: int = 3
    burst_len: tuple[int, int] = (6, 12)
    steps: int = 200
    batch: int = 16
    d_model: int = 16
    d_state: int = 4
    stride: int = 8
    penalties: tuple[float, ...] = (0.0, 0.003, 0.01, 0.03, 0.1, 1.0)
    lr: float = 5e-3
    eval_every: int = 25
    eval_n: int = 256


QUICK = Config(L=32, n_bursts=3, burst_len=(2, 4), steps=3, batch=4, d_model=8, d_state=4, penalties=(0.0, 0.1),
               eval_every=3, eval_n=16)


def _block(kind: str, cfg: Config, penalty: float, backend: str | None):
    if kind == "mamba":
        return lambda: snn.Mamba(cfg.d_model, d_state=cfg.d_state, backend=backend)
    if kind == "ms-mamba":
        return lambda: snn.MSMamba(cfg.d_model, d_state=cfg.d_state, stride=cfg.stride, backend=backend)
    return lambda: snn.ACMamba(cfg.d_model, d_state=cfg.d_state, penalty=penalty, backend=backend)


def run(ctx: Context) -> dict:
    cfg = QUICK if ctx.quick else Config()
    report = Report(ctx, cfg, keys=("model",))
    report.note(f"task: {cfg.n_bursts} bursts of {cfg.burst_len[0]}-{cfg.burst_len[1]} steps in L={cfg.L}, each "
                "repeating one noisy +-1 bit; quiet stretches carry small noise; label = majority of the bursts' bits "
                "at the last step; chance 0.5; data generated")
    report.note(f"sized for a 2-core CPU: d_model={cfg.d_model}, 1 layer, {cfg.steps} steps of batch {cfg.batch}")
    runs = [("mamba", 0.0), ("ms-mamba", 0.0)] + [("ac-mamba", p) for p in cfg.penalties]
    curves: dict[str, dict[int, list]] = {}
    for seed in ctx.seeds:
        g = torch.Generator().manual_seed(seed * 1000 + 7)
        x_eval, y_eval, mask_eval = bursts(cfg.eval_n, cfg.L, cfg.n_bursts, cfg.burst_len, g)
        x_eval, y_eval = x_eval.to(ctx.device), y_eval.to(ctx.device)
        for kind, penalty in runs:
            label = kind if kind != "ac-mamba" else f"ac-mamba lambda={penalty:g}"
            torch.manual_seed(seed)
            model = SequenceNet(2, 2, cfg.d_model, 1, _block(kind, cfg, penalty, ctx.backend)).to(ctx.device)
            data_g = torch.Generator().manual_seed(seed * 1000 + 8)

            def batches():
                while True:
                    x, y, _ = bursts(cfg.batch, cfg.L, cfg.n_bursts, cfg.burst_len, data_g)  # noqa: B023
                    yield x.to(ctx.device), y.to(ctx.device)

            def loss_fn(x, y):
                return F.cross_entropy(model(x), y) + model.compute_penalty()  # noqa: B023

            def evaluate():
                return float((model(x_eval).argmax(-1) == y_eval).float().mean())  # noqa: B023

            curve = train(model, batches(), loss_fn, lr=cfg.lr, steps=cfg.steps, label=f"{label} seed={seed}",
                          evaluate=evaluate, eval_every=cfg.eval_every)
            curves.setdefault(label, {})[seed] = curve
            block = model.backbone.layers[0]
            model.eval()
            with torch.no_grad():
                acc = evaluate()
            rate, in_bursts = None, None
            if kind == "ms-mamba":
                rate = block.slow_updates(cfg.L) / cfg.L
            elif kind == "ac-mamba":
                rate = block.update_rate()
                fired = block._last_gate.detach().cpu() > 0.5  # the gate of the forward just run
                in_bursts = float((fired & mask_eval).sum() / fired.sum().clamp(min=1))
            report.row(model=label, seed=seed, kind=kind, penalty=penalty, params=parameters(model), steps=cfg.steps,
                       accuracy=acc, chance=0.5, slow_update_rate="-" if rate is None else float(rate),
                       updates_in_bursts="-" if in_bursts is None else in_bursts,
                       burst_fraction=float(mask_eval.float().mean()))
    report.extra["curves"] = curves
    report.note("slow_update_rate: fraction of steps whose slow state updated (Mamba has no slow channel); "
                "updates_in_bursts: share of AC-Mamba's updates that fell inside a burst; burst_fraction: share of "
                "steps inside bursts")

    rows = report.summary()

    def draw_pareto(ax):
        for r in rows:
            if r["slow_update_rate"] == "-":
                ax.axhline(r["accuracy"], color="gray", linestyle="--", label=f"{r['model']} (no slow channel)")
            else:
                ax.errorbar([r["slow_update_rate"]], [r["accuracy"]], xerr=[r.get("slow_update_rate_sd", 0.0)],
                            yerr=[r["accuracy_sd"]], marker="o" if r["kind"] == "ac-mamba" else "s", capsize=3,
                            label=r["model"])
        ax.axhline(0.5, color="lightgray", linewidth=0.8, label="chance")
        ax.set_xlim(-0.02, 1.02)

    report.plot("pareto.png", draw_pareto, xlabel="slow update rate (updates / step)", ylabel="accuracy",
                title="accuracy vs slow-channel update rate (AC-Mamba: one point per lambda)")

    def draw_lambda(ax):
        ac = [r for r in rows if r["kind"] == "ac-mamba"]
        xs = [max(r["penalty"], 1e-3) for r in ac]
        errorbar(ax, xs, ac, "accuracy", marker="o", label="accuracy")
        errorbar(ax, xs, ac, "slow_update_rate", marker="^", label="update rate")
        ax.set_xscale("log")

    report.plot("accuracy_vs_lambda.png", draw_lambda, title="AC-Mamba: accuracy and update rate vs penalty lambda "
                "(lambda=0 drawn at 1e-3)", xlabel="lambda", ylabel="value")

    def draw_curves(ax):
        for label, per_seed in curves.items():
            curve_band(ax, list(per_seed.values()), label=label)

    report.plot("accuracy_curves.png", draw_curves, title="bursty majority: eval accuracy during training",
                xlabel="step", ylabel="accuracy")
    return report.finish()
