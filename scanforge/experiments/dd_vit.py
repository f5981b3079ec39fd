"""Experiment dd-vit: dynamic-depth ViT (progressive token pruning + confident early exit) vs the same-size
ViT on scikit-learn's bundled 8x8 digits (standing in for MNIST): test accuracy and FLOPs per image.
Presets follow the source's flags: s = --dim 32 --depth 4, m = --dim 64 --depth 8, deep = --dim 32 --depth 16."""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import torch
import torch.nn.functional as F

from scanforge.nn import DynamicDepthViT, ViT

from .common import Context, Report, batched, parameters, shuffled_batches, train

PRESETS: dict[str, tuple[int, int]] = {"s": (32, 4), "m": (64, 8), "deep": (32, 16)}


@dataclass(frozen=True)
class Config:
    presets: tuple[str, ...] = ("s", "m", "deep")
    patch_size: int = 2
    heads: int = 4
    keep: float = 0.85  # share of the tokens each block keeps, after the first quarter of the blocks
    exit_threshold: float = 0.9
    epochs: int = 15
    batch: int = 64
    lr: float = 2e-3
    test_share: float = 0.2
    limit: int = 0  # use only this many images (0: all 1797)


QUICK_PRESETS: dict[str, tuple[int, int]] = {"s": (16, 2), "m": (16, 2), "deep": (16, 2)}


def load_digits(seed: int, test_share: float, limit: int = 0):
    """scikit-learn's 1797 8x8 digit images (shipped with the package), scaled to [0, 1], split by seed."""
    try:
        from sklearn.datasets import load_digits as sk_digits
    except ImportError as e:  # pragma: no cover - a dependency
        raise RuntimeError("dd-vit needs scikit-learn (pip install scikit-learn) for its bundled digits") from e
    data = sk_digits()
    x = torch.tensor(data.images, dtype=torch.float32)[:, None] / 16.0
    y = torch.tensor(data.target, dtype=torch.int64)
    perm = torch.from_numpy(np.random.default_rng(seed).permutation(len(y)))
    if limit:
        perm = perm[:limit]
    n_test = max(1, int(len(perm) * test_share))
    return x[perm[n_test:]], y[perm[n_test:]], x[perm[:n_test]], y[perm[:n_test]]


def _keep_ratios(depth: int, keep: float) -> list[float]:
    return [1.0 if i < max(1, depth // 4) else keep for i in range(depth)]


def run(ctx: Context, preset: str | None = None) -> dict:
    cfg = Config(presets=("s",), epochs=1, batch=16, limit=80) if ctx.quick else Config()
    if preset is not None:
        if preset not in (*PRESETS, "all"):
            raise ValueError(f"--preset: expected one of {', '.join(PRESETS)} or 'all', got {preset!r}")
        cfg = replace(cfg, presets=tuple(PRESETS) if preset == "all" else (preset,))
    sizes = QUICK_PRESETS if ctx.quick else PRESETS
    report = Report(ctx, {"config": cfg, "presets": {p: sizes[p] for p in cfg.presets}}, keys=("preset", "model"))
    report.note("data: scikit-learn's bundled 8x8 digits (1797 images, standing in for MNIST), "
                f"{1 - cfg.test_share:.0%}/{cfg.test_share:.0%} train/test split by seed; nothing downloaded")
    report.note(f"DD-ViT: blocks after the first quarter keep {cfg.keep:.0%} of the tokens (L2 norm), exit heads on "
                f"every block, exit when max softmax >= {cfg.exit_threshold}; evaluated one image at a time so each "
                "image takes its own exit; FLOPs counted analytically (scanforge.nn.flops)")
    for seed in ctx.seeds:
        x_tr, y_tr, x_te, y_te = load_digits(seed, cfg.test_share, cfg.limit)
        steps = cfg.epochs * len(batched(len(y_tr), cfg.batch))
        for name in cfg.presets:
            dim, depth = sizes[name]
            for kind in ("vit", "dd-vit"):
                torch.manual_seed(seed)
                common = dict(image_size=8, patch_size=cfg.patch_size, in_chans=1, num_classes=10, dim=dim, depth=depth,
                              heads=cfg.heads)
                if kind == "vit":
                    model = ViT(**common)
                else:
                    model = DynamicDepthViT(**common, keep_ratios=_keep_ratios(depth, cfg.keep),
                                            exit_threshold=cfg.exit_threshold, backend=ctx.backend)
                model = model.to(ctx.device)
                batches = shuffled_batches((x_tr, y_tr), cfg.batch, seed, ctx.device)

                def loss_fn(x, y):
                    outs = model.forward_exits(x)  # noqa: B023
                    return sum(F.cross_entropy(o, y) for o in outs) / len(outs)

                train(model, batches, loss_fn, lr=cfg.lr, steps=steps,
                      label=f"{kind} {name} (dim {dim}, depth {depth}) seed={seed}")
                model.eval()
                hits, flops, depths = 0, [], []
                with torch.no_grad():
                    for i in range(len(y_te)):
                        img = x_te[i:i + 1].to(ctx.device)
                        hits += int(model(img).argmax(-1).item() == y_te[i].item())
                        depths.append(model.last_depth)
                        flops.append(model.flops(img))
                report.row(preset=name, model=kind, seed=seed, dim=dim, depth=depth, params=parameters(model),
                           epochs=cfg.epochs,
                           test_accuracy=hits / len(y_te), mflops_per_image=sum(flops) / len(flops) / 1e6,
                           mean_depth=sum(depths) / len(depths))
    for r in report.rows:
        base = next(b for b in report.rows if b["preset"] == r["preset"] and b["model"] == "vit"
                    and b["seed"] == r["seed"])
        r["flops_vs_vit"] = r["mflops_per_image"] / base["mflops_per_image"]

    rows = report.summary()

    def draw(ax):
        for kind, marker in (("vit", "s"), ("dd-vit", "o")):
            sub = [r for r in rows if r["model"] == kind]
            ax.errorbar([r["mflops_per_image"] for r in sub], [r["test_accuracy"] for r in sub],
                        xerr=[r.get("mflops_per_image_sd", 0.0) for r in sub],
                        yerr=[r.get("test_accuracy_sd", 0.0) for r in sub], fmt=marker, capsize=3, label=kind)
            for r in sub:
                ax.annotate(r["preset"], (r["mflops_per_image"], r["test_accuracy"]), fontsize=8, xytext=(4, 4),
                            textcoords="offset points")

    report.plot("accuracy_vs_flops.png", draw, title="digits: test accuracy vs FLOPs per image", xlabel="MFLOPs/image",
                ylabel="test accuracy")
    return report.finish()
