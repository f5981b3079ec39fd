"""Experiment tiny-vlm: the tiny VLM (ViT encoder -> projector -> [pruner] -> decoder) on generated visual
question answering, and what keeping k of its 64 visual tokens (full, 1/2, 1/4, 1/8; ranked by L2 norm or at
random) costs in answer accuracy, FLOPs and latency."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

import scanforge as sf
from scanforge.data import Vocab, synthetic_vqa
from scanforge.nn import TinyVLM, TopKTokenPruner

from .common import Context, Report, batched, curve_band, errorbar, median_ms, parameters, shuffled_batches, train


@dataclass(frozen=True)
class Config:
    keeps: tuple[float, ...] = (1.0, 0.5, 0.25, 0.125)
    methods: tuple[str, ...] = ("l2", "random")
    image_size: int = 32
    patch_size: int = 4
    grid: int = 2
    max_objects: int = 4
    decoder: str = "transformer"
    n_train: int = 5000
    n_test: int = 500
    epochs: int = 24
    batch: int = 32
    lr: float = 1e-3
    timing_batch: int = 64


QUICK = Config(keeps=(1.0, 0.25), image_size=16, n_train=16, n_test=8, epochs=1, batch=8, timing_batch=4)


class RandomTopK(TopKTokenPruner):
    """Keeps k tokens drawn uniformly (fresh draws on every call), in their original order: the baseline any
    ranking must beat."""

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        scores = torch.rand(x.shape[:2], device=x.device)
        return sf.topk_gather(x, self.kept(x.shape[1]), scores, backend=self.backend)


def _prune(model: TinyVLM, keep: float, method: str, backend: str | None) -> None:
    """Set the trained model's pruner: keep every token, or the top ``keep`` share by L2 norm, or at random."""
    if keep == 1.0:
        model.pruner = None
    elif method == "random":
        model.pruner = RandomTopK(keep, backend=backend)
    else:
        model.pruner = TopKTokenPruner(keep, "l2", backend=backend)


def run(ctx: Context) -> dict:
    cfg = QUICK if ctx.quick else Config()
    report = Report(ctx, cfg, keys=("keep", "method"), fixed=("majority_answer", "mflops_per_example", "flops_vs_full"))
    vocab = Vocab(cfg.grid, cfg.max_objects)
    report.note(f"data: scanforge.data.synthetic_vqa with a {cfg.grid}x{cfg.grid} board, 1-{cfg.max_objects} "
                "coloured squares on a noisy background; questions 'colour of cell (r, c)?' (or 'none') and 'how "
                "many squares of colour k?'; generated, nothing downloaded. Each square covers about 2x2 of the "
                "visual tokens, so dropping tokens can drop a square: the counting questions need every square.")
    tokens = (cfg.image_size // cfg.patch_size) ** 2
    report.note(f"{tokens} visual tokens per image; the model is trained once per seed on every token, then tested "
                f"keeping k of them (scanforge.nn.TopKTokenPruner by L2 norm, or a random k); decoder: "
                f"{cfg.decoder} (the Mamba decoder learned too slowly for this CPU budget); sized for a 2-core CPU: "
                f"{cfg.epochs} epochs of {cfg.n_train} examples, 88 k parameters (the source's VLM is far larger)")
    curves: dict[int, list] = {}
    for seed in ctx.seeds:
        train_set = synthetic_vqa(cfg.n_train, seed=seed * 1000 + 1, image_size=cfg.image_size, grid=cfg.grid,
                                  max_objects=cfg.max_objects)
        test_set = synthetic_vqa(cfg.n_test, seed=seed * 1000 + 2, image_size=cfg.image_size, grid=cfg.grid,
                                 max_objects=cfg.max_objects)
        answers = torch.bincount(test_set.answers, minlength=vocab.size)
        majority = float(answers.max() / answers.sum())
        is_count = test_set.questions[:, 0] == vocab.COUNT
        steps_per_epoch = len(batched(cfg.n_train, cfg.batch))
        torch.manual_seed(seed)
        model = TinyVLM(vocab.size, image_size=cfg.image_size, patch_size=cfg.patch_size, decoder=cfg.decoder,
                        backend=ctx.backend).to(ctx.device)
        train_tensors = (train_set.images, train_set.questions, train_set.answers)
        batches = shuffled_batches([t[:cfg.n_train] for t in train_tensors], cfg.batch, seed, ctx.device)

        def loss_fn(images, questions, answers):
            return F.cross_entropy(model(images, questions), answers)  # noqa: B023

        def predict():
            out = []
            for s in batched(cfg.n_test, 128):
                logits = model(test_set.images[s].to(ctx.device), test_set.questions[s].to(ctx.device))  # noqa: B023
                out.append(logits.argmax(-1).cpu())
            return torch.cat(out)

        def evaluate():
            return float((predict() == test_set.answers).float().mean())  # noqa: B023

        curve = train(model, batches, loss_fn, lr=cfg.lr, steps=cfg.epochs * steps_per_epoch,
                      label=f"tiny-vlm seed={seed}", evaluate=evaluate, eval_every=steps_per_epoch)
        curves[seed] = [(s / steps_per_epoch, a) for s, a in curve]
        model.eval()
        images = test_set.images[: cfg.timing_batch].to(ctx.device)
        questions = test_set.questions[: cfg.timing_batch].to(ctx.device)
        base = None
        for keep in cfg.keeps:
            for method in cfg.methods if keep < 1.0 else ("-",):
                _prune(model, keep, method, ctx.backend)
                torch.manual_seed(seed)  # the random pruner's draws
                with torch.no_grad():
                    hits = (predict() == test_set.answers).float()
                    ms = median_ms(lambda: model(images, questions), device=ctx.device)  # noqa: B023
                    flops = model.flops(images, questions)
                base = base or (flops, ms)
                report.row(keep=keep, method=method, seed=seed, visual_tokens=model.last_visual_tokens,
                           params=parameters(model), epochs=cfg.epochs, accuracy=float(hits.mean()),
                           acc_colour=float(hits[~is_count].mean()), acc_count=float(hits[is_count].mean()),
                           majority_answer=majority, mflops_per_example=flops / 1e6, flops_vs_full=flops / base[0],
                           latency_ms=ms, latency_vs_full=ms / base[1], timing_batch=cfg.timing_batch)
        model.pruner = None
    report.extra["curves"] = curves
    report.note("majority_answer: accuracy of always giving the test set's most common answer; acc_colour / "
                "acc_count: accuracy on each question type; latency: median of 7 forwards of batch "
                f"{cfg.timing_batch} on {ctx.device}")
    rows = report.summary()

    def draw_keep(ax):
        full = [r for r in rows if r["keep"] == 1.0]
        for method in cfg.methods:
            sub = full + [r for r in rows if r["method"] == method]
            for column, style in (("accuracy", "-"), ("acc_count", ":")):
                errorbar(ax, [r["visual_tokens"] for r in sub], sub, column, marker="o", linestyle=style,
                         label=f"{method}: {column}")
        ax.axhline(rows[0]["majority_answer"], color="gray", linewidth=0.8, label="majority answer")
        ax.set_xscale("log", base=2)

    report.plot("accuracy_vs_tokens.png", draw_keep, title="synthetic VQA: test accuracy vs visual tokens kept "
                "(mean +- sd over seeds)", xlabel="visual tokens kept", ylabel="answer accuracy")

    def draw_curves(ax):
        curve_band(ax, list(curves.values()), marker="o", label="full tokens")
        ax.axhline(rows[0]["majority_answer"], color="gray", linewidth=0.8, label="majority answer")

    report.plot("accuracy_curves.png", draw_curves, title="synthetic VQA: test accuracy per epoch (mean +- sd)",
                xlabel="epoch", ylabel="answer accuracy")
    return report.finish()
