"""Experiment svtr: LLaVA-style selective visual token reduction of 196 x 768 encoder tokens with
``sf.topk_gather`` (L2-norm ranking), k in {196, 128, 64}, with and without a summary token.

Source figures: compression 1.53x / 3.06x, FLOPs -34.7% / -67.3%, cosine similarity of the pooled
representation 0.86 / 0.62 (k = 128 / 64)."""

from __future__ import annotations

from dataclasses import dataclass

import torch

import scanforge as sf
from scanforge.nn import flops as fl

from .common import Context, Report, batched, median_ms
from .features import FeatureSpec, Probe, TokenFeatures


@dataclass(frozen=True)
class Config:
    ks: tuple[int, ...] = (196, 128, 64)
    features: FeatureSpec = FeatureSpec()
    n_train: int = 1000
    n_test: int = 500
    chunk: int = 100
    timing_batch: int = 64
    llm_mlp: int = 3072  # the downstream layer the tokens feed: a 768-wide transformer block, MLP 4x


QUICK = Config(ks=(36, 24, 12), features=FeatureSpec(side=6, dim=32, object_side=(1, 3), artifacts=2), n_train=40,
               n_test=20, chunk=20, timing_batch=4, llm_mlp=128)


def _unfused(x: torch.Tensor, k: int, summary: str | None) -> torch.Tensor:
    """The op chain the fused gather replaces: norms, top-k, sort, gather, (mean of the dropped tokens)."""
    idx = x.norm(dim=-1).topk(k, dim=1).indices.sort(dim=1).values
    out = x.gather(1, idx[..., None].expand(-1, -1, x.shape[-1]))
    if summary == "mean_dropped":
        dropped = (x.sum(1) - out.sum(1)) / max(x.shape[1] - k, 1)
        out = torch.cat([out, dropped[:, None]], dim=1)
    return out


def _pooled(x: torch.Tensor, k: int, summary: str | None, backend: str | None) -> torch.Tensor:
    return sf.topk_gather(x, k, summary=summary, backend=backend)[0].mean(1)


def run(ctx: Context) -> dict:
    cfg = QUICK if ctx.quick else Config()
    spec = cfg.features
    T = spec.side * spec.side
    report = Report(ctx, cfg)
    report.note(f"features: structured synthetic {T} x {spec.dim} tokens standing in for a ViT's output (background, "
                f"one object carrying a class prototype, {spec.artifacts} high-norm artifact tokens), {spec.classes} "
                "classes; generated, no encoder weights downloaded")
    report.note("ranking by token L2 norm; summary = 'mean_dropped' (one token, the mean of the dropped ones); "
                "pooled representation = mean of the tokens kept (and the summary), compared with the mean of all")
    gen = TokenFeatures(spec, ctx.seed)
    g = torch.Generator().manual_seed(ctx.seed * 1000 + 11)
    variants = [(k, s) for k in cfg.ks for s in ((None,) if k == T else (None, "mean_dropped"))]
    pooled = {"train": {v: [] for v in variants}, "test": {v: [] for v in variants}}
    labels = {"train": [], "test": []}
    for split, n in (("train", cfg.n_train), ("test", cfg.n_test)):
        for s in batched(n, cfg.chunk):
            x, y = gen.sample(s.stop - s.start, g)
            x = x.to(ctx.device)
            labels[split].append(y)
            for k, summary in variants:
                pooled[split][(k, summary)].append(_pooled(x, k, summary, ctx.backend).cpu())
    feats = {split: {v: torch.cat(p) for v, p in d.items()} for split, d in pooled.items()}
    ys = {split: torch.cat(v) for split, v in labels.items()}
    full = (T, None)
    torch.manual_seed(ctx.seed)
    probe_full = Probe(feats["train"][full], ys["train"], spec.classes)
    x_time, _ = gen.sample(cfg.timing_batch, g)
    x_time = x_time.to(ctx.device)
    base_flops = fl.attention_block(T, spec.dim, cfg.llm_mlp)
    for k, summary in variants:
        tokens = k + (summary is not None)
        cos = torch.nn.functional.cosine_similarity(feats["test"][(k, summary)], feats["test"][full], dim=-1)
        centre = feats["test"][full].mean(0)  # the shared background direction dominates raw cosines
        cos_c = torch.nn.functional.cosine_similarity(feats["test"][(k, summary)] - centre,
                                                      feats["test"][full] - centre, dim=-1)
        probe = Probe(feats["train"][(k, summary)], ys["train"], spec.classes)
        fused = median_ms(lambda: sf.topk_gather(x_time, k, summary=summary, backend=ctx.backend),  # noqa: B023
                          device=ctx.device)
        unfused = median_ms(lambda: _unfused(x_time, k, summary), device=ctx.device)  # noqa: B023
        report.row(k=k, summary=summary or "-", tokens=tokens, compression=T / tokens,
                   flops_linear_reduction=1 - tokens / T,
                   flops_block_reduction=1 - fl.attention_block(tokens, spec.dim, cfg.llm_mlp) / base_flops,
                   cosine_pooled=float(cos.mean()), cosine_centred=float(cos_c.mean()),
                   acc_probe_full=probe_full.accuracy(feats["test"][(k, summary)], ys["test"]),
                   acc_probe_retrained=probe.accuracy(feats["test"][(k, summary)], ys["test"]),
                   fused_ms=fused, unfused_ms=unfused, speedup=unfused / fused)
    report.note(f"flops_linear_reduction: 1 - tokens/{T} (the share of any per-token layer, as the source counts); "
                f"flops_block_reduction: one {spec.dim}-wide transformer block (MLP {cfg.llm_mlp}) incl. attention's "
                "quadratic term (scanforge.nn.flops)")
    report.note("cosine_pooled: raw pooled vectors; cosine_centred: after subtracting the test set's mean pooled "
                "vector (what distinguishes one image from another)")
    report.note("acc_probe_full: linear probe trained on full-token pooled features, tested on pruned ones; "
                "acc_probe_retrained: a probe trained on the pruned features themselves; chance "
                f"{1 / spec.classes:.2f}")
    report.note(f"latency: batch {cfg.timing_batch} x {T} x {spec.dim} on {ctx.device}, fused sf.topk_gather vs "
                "norm -> topk -> sort -> gather (-> mean of dropped) in PyTorch, median of 7")
    rows = report.rows

    def draw_cos(ax):
        for summary in (None, "mean_dropped"):
            for key, style in (("cosine_pooled", "-"), ("cosine_centred", "--")):
                pts = [(r["k"], r[key]) for r in rows if (r["summary"] == "-") == (summary is None) or r["k"] == T]
                ax.plot(*zip(*sorted(pts)), marker="o", linestyle=style,
                        label=f"{key.split('_')[1]}, summary={summary or 'none'}")

    report.plot("cosine_vs_k.png", draw_cos, title="cosine similarity of pooled representation vs kept tokens",
                xlabel="k (tokens kept)", ylabel="cosine similarity to full")

    def draw_latency(ax):
        labels_ = [f"k={r['k']}" + ("+s" if r["summary"] != "-" else "") for r in rows]
        pos = range(len(rows))
        ax.bar([p - 0.2 for p in pos], [r["fused_ms"] for r in rows], width=0.4, label="fused topk_gather")
        ax.bar([p + 0.2 for p in pos], [r["unfused_ms"] for r in rows], width=0.4, label="unfused PyTorch chain")
        ax.set_xticks(list(pos), labels_)

    report.plot("latency.png", draw_latency, title=f"gather latency, batch {cfg.timing_batch} on {ctx.device}",
                xlabel="variant", ylabel="ms")
    return report.finish()
