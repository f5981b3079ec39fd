"""Experiment tiny-vlm: the tiny VLM (ViT encoder -> projector -> [pruner] -> Mamba decoder) with and without
visual token pruning on generated visual question answering: answer accuracy, FLOPs and latency."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from scanforge.data import Vocab, synthetic_vqa
from scanforge.nn import TinyVLM

from .common import Context, Report, batched, median_ms, parameters, train


@dataclass(frozen=True)
class Config:
    variants: tuple[tuple[str, int | None, str], ...] = (("full", None, "l2"), ("l2 k=16", 16, "l2"),
                                                         ("saliency k=16", 16, "saliency"))
    image_size: int = 32
    patch_size: int = 4
    n_train: int = 2000
    n_test: int = 500
    epochs: int = 10
    batch: int = 32
    lr: float = 3e-3
    timing_batch: int = 64


QUICK = Config(variants=(("full", None, "l2"), ("l2 k=4", 4, "l2")), image_size=16, n_train=16, n_test=8, epochs=1,
               batch=8, timing_batch=4)


def run(ctx: Context) -> dict:
    cfg = QUICK if ctx.quick else Config()
    report = Report(ctx, cfg)
    vocab = Vocab()
    report.note("data: scanforge.data.synthetic_vqa (generated boards of coloured squares; questions 'colour of "
                "cell (r, c)?' and 'how many of colour k?'), standing in for images + questions; nothing downloaded")
    tokens = (cfg.image_size // cfg.patch_size) ** 2
    report.note(f"{tokens} visual tokens per image; pruned variants keep k of them (scanforge.nn.TopKTokenPruner); "
                f"sized for a 2-core CPU: {cfg.epochs} epochs of {cfg.n_train} examples")
    train_set = synthetic_vqa(cfg.n_train, seed=ctx.seed * 1000 + 1, image_size=cfg.image_size)
    test_set = synthetic_vqa(cfg.n_test, seed=ctx.seed * 1000 + 2, image_size=cfg.image_size)
    answers = torch.bincount(test_set.answers, minlength=vocab.size)
    majority = float(answers.max() / answers.sum())
    steps = cfg.epochs * len(batched(cfg.n_train, cfg.batch))
    curves = {}
    for label, keep, score in cfg.variants:
        torch.manual_seed(ctx.seed)
        model = TinyVLM(vocab.size, image_size=cfg.image_size, patch_size=cfg.patch_size, keep=keep, score=score,
                        backend=ctx.backend).to(ctx.device)
        order_g = torch.Generator().manual_seed(ctx.seed)

        def batches():
            while True:
                perm = torch.randperm(cfg.n_train, generator=order_g)  # noqa: B023
                for s in batched(cfg.n_train, cfg.batch):
                    i = perm[s]
                    yield (train_set.images[i].to(ctx.device), train_set.questions[i].to(ctx.device),
                           train_set.answers[i].to(ctx.device))

        def loss_fn(images, questions, answers):
            return F.cross_entropy(model(images, questions), answers)  # noqa: B023

        def evaluate():
            hits = 0
            for s in batched(cfg.n_test, 128):
                logits = model(test_set.images[s].to(ctx.device), test_set.questions[s].to(ctx.device))  # noqa: B023
                hits += int((logits.argmax(-1).cpu() == test_set.answers[s]).sum())
            return hits / cfg.n_test

        steps_per_epoch = steps // cfg.epochs
        curve = train(model, batches(), loss_fn, lr=cfg.lr, steps=steps, label=label, evaluate=evaluate,
                      eval_every=steps_per_epoch)
        curves[label] = [(s / steps_per_epoch, a) for s, a in curve]
        model.eval()
        images, questions = test_set.images[: cfg.timing_batch].to(ctx.device), test_set.questions[: cfg.timing_batch]
        questions = questions.to(ctx.device)
        with torch.no_grad():
            ms = median_ms(lambda: model(images, questions), device=ctx.device)  # noqa: B023
            flops = model.flops(images, questions)
        report.row(model=label, visual_tokens=model.last_visual_tokens, params=parameters(model), epochs=cfg.epochs,
                   accuracy=curve[-1][1], majority_answer=majority, mflops_per_example=flops / 1e6,
                   latency_ms=ms, timing_batch=cfg.timing_batch)
    base = report.rows[0]
    for r in report.rows:
        r["flops_vs_full"] = r["mflops_per_example"] / base["mflops_per_example"]
        r["latency_vs_full"] = r["latency_ms"] / base["latency_ms"]
    report.extra["curves"] = curves
    report.note("majority_answer: accuracy of always giving the test set's most common answer")

    def draw(ax):
        for label, curve in curves.items():
            ax.plot(*zip(*curve), marker="o", label=label)
        ax.axhline(majority, color="gray", linewidth=0.8, label="majority answer")

    report.plot("accuracy_curves.png", draw, title="synthetic VQA: test accuracy per epoch", xlabel="epoch",
                ylabel="answer accuracy")
    return report.finish()
