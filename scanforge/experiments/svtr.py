"""Experiment svtr: LLaVA-style selective visual token reduction of 196 x 768 encoder tokens with
``sf.topk_gather`` (L2-norm ranking, and a random k as the baseline), k from 196 down to 24 (the source's 128 and
64 also with a summary token), in two generated settings: the object louder than the background (L2 ranking
finds it) and the object as loud as the background (L2 ranking cannot).

Source figures: compression 1.53x / 3.06x, FLOPs -34.7% / -67.3%, cosine similarity of the pooled
representation 0.86 / 0.62 (k = 128 / 64)."""

from __future__ import annotations

from dataclasses import dataclass

import torch

import scanforge as sf
from scanforge.nn import flops as fl

from .common import Context, Report, batched, errorbar, median_ms
from .features import FeatureSpec, Probe, TokenFeatures

# Background tokens have norm ~sqrt(1 + noise^2) = 1.17; object tokens ~sqrt(object_norm^2 + noise^2): 1.52 when
# "loud" (L2 ranking keeps them first), 1.17 when "quiet" (L2 ranking cannot tell them from the background).
# Objects of 2-4 tokens a side (4-16 of 196) and classes sharing most of their prototype make the probe need them.
LOUD = FeatureSpec(object_side=(2, 4), class_share=0.35, part=1.2)
QUIET = FeatureSpec(object_side=(2, 4), class_share=0.35, part=1.2, object_norm=1.0)


@dataclass(frozen=True)
class Config:
    ks: tuple[int, ...] = (196, 128, 98, 64, 49, 24)
    summary_ks: tuple[int, ...] = (128, 64)  # also with a summary token (the source's k)
    settings: tuple[tuple[str, FeatureSpec], ...] = (("loud-object", LOUD), ("quiet-object", QUIET))
    n_train: int = 1000
    n_test: int = 500
    chunk: int = 100
    timing_batch: int = 64
    llm_mlp: int = 3072  # the downstream layer the tokens feed: a 768-wide transformer block, MLP 4x


QUICK = Config(ks=(36, 24, 12), summary_ks=(24,), settings=(("loud-object", FeatureSpec(side=6, dim=32,
                                                                                        object_side=(1, 3),
                                                                                        artifacts=2)),),
               n_train=40, n_test=20, chunk=20, timing_batch=4, llm_mlp=128)


def _unfused(x: torch.Tensor, k: int, summary: str | None) -> torch.Tensor:
    """The op chain the fused gather replaces: norms, top-k, sort, gather, (mean of the dropped tokens)."""
    idx = x.norm(dim=-1).topk(k, dim=1).indices.sort(dim=1).values
    out = x.gather(1, idx[..., None].expand(-1, -1, x.shape[-1]))
    if summary == "mean_dropped":
        dropped = (x.sum(1) - out.sum(1)) / max(x.shape[1] - k, 1)
        out = torch.cat([out, dropped[:, None]], dim=1)
    return out


def _pooled(x: torch.Tensor, k: int, summary: str | None, method: str, g: torch.Generator,
            backend: str | None) -> torch.Tensor:
    scores = torch.rand(x.shape[:2], generator=g).to(x.device) if method == "random" else None
    return sf.topk_gather(x, k, scores, summary=summary, backend=backend)[0].mean(1)


def run(ctx: Context) -> dict:
    cfg = QUICK if ctx.quick else Config()
    report = Report(ctx, cfg, keys=("setting", "k", "method", "summary"),
                    fixed=("chance", "compression", "flops_linear_reduction", "flops_block_reduction"))
    for name, spec in cfg.settings:
        report.note(f"setting {name!r}: structured synthetic {spec.side ** 2} x {spec.dim} tokens standing in for a "
                    f"ViT's output: background (norm ~{(1 + spec.noise ** 2) ** 0.5:.2f}), one object of "
                    f"{spec.object_side[0]}-{spec.object_side[1]} tokens a side carrying one of {spec.classes} class "
                    f"prototypes (norm ~{(spec.object_norm ** 2 + spec.noise ** 2) ** 0.5:.2f}), {spec.artifacts} "
                    f"artifact tokens of norm {spec.distractor_norm} that carry nothing; generated, no encoder weights")
    report.note("ranking: token L2 norm, or a random k (the baseline); summary = 'mean_dropped' (one token, the mean "
                "of the dropped ones); pooled representation = mean of the tokens kept (and the summary), compared "
                "with the mean of all")
    for seed in ctx.seeds:
        for setting, spec in cfg.settings:
            _one_setting(ctx, cfg, report, seed, setting, spec, timing=setting == cfg.settings[0][0])
    T = cfg.settings[0][1].side ** 2
    report.note(f"flops_linear_reduction: 1 - tokens/{T} (the share of any per-token layer, as the source counts); "
                "flops_block_reduction: one transformer block of the tokens' width (MLP "
                f"{cfg.llm_mlp}) incl. attention's quadratic term (scanforge.nn.flops)")
    report.note("cosine_pooled: raw pooled vectors; cosine_centred: after subtracting the test set's mean pooled "
                "vector (what distinguishes one image from another)")
    report.note("acc_probe_full: linear probe trained on full-token pooled features, tested on pruned ones; "
                "acc_probe_retrained: a probe trained on the pruned features themselves; chance "
                f"{1 / cfg.settings[0][1].classes:.2f}")
    report.note(f"latency (first setting, L2 ranking only): batch {cfg.timing_batch} x {T} tokens on {ctx.device}, "
                "fused sf.topk_gather vs norm -> topk -> sort -> gather (-> mean of dropped) in PyTorch, median of 7")
    rows = report.summary()

    def draw_probe(ax):
        for (setting, _), style in zip(cfg.settings, ("-", "--")):
            for method in ("l2", "random"):
                sub = [r for r in rows if r["setting"] == setting and r["summary"] == "-"
                       and (r["method"] == method or r["k"] == T)]
                errorbar(ax, [r["k"] for r in sub], sub, "acc_probe_retrained", marker="o", linestyle=style,
                         label=f"{setting}, {method}")
        ax.axhline(1 / cfg.settings[0][1].classes, color="gray", linewidth=0.8, label="chance")
        ax.set_xscale("log", base=2)

    report.plot("probe_vs_k.png", draw_probe, title="linear probe on the pooled kept tokens vs k (mean +- sd "
                "over seeds)", xlabel="k (tokens kept)", ylabel="probe accuracy (retrained)")

    def draw_cos(ax):
        for (setting, _), style in zip(cfg.settings, ("-", "--")):
            sub = [r for r in rows if r["setting"] == setting and r["summary"] == "-" and r["method"] in ("l2", "-")]
            for key in ("cosine_pooled", "cosine_centred"):
                errorbar(ax, [r["k"] for r in sub], sub, key, marker="o", linestyle=style,
                         label=f"{setting}, {key.split('_')[1]}")

    report.plot("cosine_vs_k.png", draw_cos, title="cosine similarity of pooled representation vs kept tokens (L2)",
                xlabel="k (tokens kept)", ylabel="cosine similarity to full")

    timed = [r for r in rows if "fused_ms" in r]

    def draw_latency(ax):
        labels_ = [f"k={r['k']}" + ("+s" if r["summary"] != "-" else "") for r in timed]
        pos = range(len(timed))
        ax.bar([p - 0.2 for p in pos], [r["fused_ms"] for r in timed], width=0.4,
               yerr=[r.get("fused_ms_sd", 0.0) for r in timed], label="fused topk_gather")
        ax.bar([p + 0.2 for p in pos], [r["unfused_ms"] for r in timed], width=0.4,
               yerr=[r.get("unfused_ms_sd", 0.0) for r in timed], label="unfused PyTorch chain")
        ax.set_xticks(list(pos), labels_)

    report.plot("latency.png", draw_latency, title=f"gather latency, batch {cfg.timing_batch} on {ctx.device}",
                xlabel="variant", ylabel="ms")
    return report.finish()


def _one_setting(ctx: Context, cfg: Config, report: Report, seed: int, setting: str, spec: FeatureSpec,
                 timing: bool) -> None:
    """Pool every variant's kept tokens for one seed and setting, fit the probes, and add the rows."""
    T = spec.side * spec.side
    gen = TokenFeatures(spec, seed)
    g = torch.Generator().manual_seed(seed * 1000 + 11)
    variants = [(k, s, m) for k in cfg.ks for m in (("-",) if k == T else ("l2", "random"))
                for s in ((None,) if k == T or m == "random" or k not in cfg.summary_ks else (None, "mean_dropped"))]
    pooled = {"train": {v: [] for v in variants}, "test": {v: [] for v in variants}}
    labels = {"train": [], "test": []}
    for split, n in (("train", cfg.n_train), ("test", cfg.n_test)):
        for s in batched(n, cfg.chunk):
            x, y = gen.sample(s.stop - s.start, g)
            x = x.to(ctx.device)
            labels[split].append(y)
            for k, summary, method in variants:
                pooled[split][(k, summary, method)].append(_pooled(x, k, summary, method, g, ctx.backend).cpu())
    feats = {split: {v: torch.cat(p) for v, p in d.items()} for split, d in pooled.items()}
    ys = {split: torch.cat(v) for split, v in labels.items()}
    full = (T, None, "-")
    torch.manual_seed(seed)
    probe_full = Probe(feats["train"][full], ys["train"], spec.classes)
    x_time, _ = gen.sample(cfg.timing_batch, g)
    x_time = x_time.to(ctx.device)
    base_flops = fl.attention_block(T, spec.dim, cfg.llm_mlp)
    centre = feats["test"][full].mean(0)  # the shared background direction dominates raw cosines
    for k, summary, method in variants:
        v = (k, summary, method)
        tokens = k + (summary is not None)
        cos = torch.nn.functional.cosine_similarity(feats["test"][v], feats["test"][full], dim=-1)
        cos_c = torch.nn.functional.cosine_similarity(feats["test"][v] - centre, feats["test"][full] - centre, dim=-1)
        torch.manual_seed(seed)
        probe = Probe(feats["train"][v], ys["train"], spec.classes)
        row = dict(setting=setting, k=k, method=method, summary=summary or "-", seed=seed, tokens=tokens,
                   compression=T / tokens, flops_linear_reduction=1 - tokens / T,
                   flops_block_reduction=1 - fl.attention_block(tokens, spec.dim, cfg.llm_mlp) / base_flops,
                   cosine_pooled=float(cos.mean()), cosine_centred=float(cos_c.mean()),
                   acc_probe_full=probe_full.accuracy(feats["test"][v], ys["test"]),
                   acc_probe_retrained=probe.accuracy(feats["test"][v], ys["test"]), chance=1 / spec.classes)
        if timing and method != "random":
            fused = median_ms(lambda: sf.topk_gather(x_time, k, summary=summary, backend=ctx.backend),  # noqa: B023
                              device=ctx.device)
            unfused = median_ms(lambda: _unfused(x_time, k, summary), device=ctx.device)  # noqa: B023
            row.update(fused_ms=fused, unfused_ms=unfused, speedup=unfused / fused)
        report.row(**row)
