"""Token pruning, the dynamic-depth ViT, the tiny VLM and its synthetic data."""

import pytest
import torch

import scanforge.nn as snn
from scanforge.data import Vocab, synthetic_vqa


def test_l2_pruner_keeps_the_largest_tokens_in_order_with_a_summary():
    x = torch.randn(2, 10, 8, generator=torch.Generator().manual_seed(0))
    out, idx = snn.TopKTokenPruner(0.3, summary="mean")(x)
    expected = x.norm(dim=-1).topk(3, dim=1).indices.sort(dim=1).values
    assert torch.equal(idx, expected) and out.shape == (2, 4, 8)
    assert torch.allclose(out[:, :3], x.gather(1, expected[..., None].expand(-1, -1, 8)))
    assert torch.allclose(out[:, 3], x.mean(1))


def test_saliency_pruner_trains_its_scorer():
    torch.manual_seed(0)
    pruner = snn.TopKTokenPruner(4, score="saliency", d_model=8)
    out, _ = pruner(torch.randn(2, 10, 8))
    out.sum().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in pruner.scorer.parameters())


@pytest.mark.parametrize("kwargs, match", [(dict(k=0), "k:"), (dict(k=1.5), "k:"), (dict(k=2, score="rand"), "score"),
                                           (dict(k=2, summary="max"), "summary"),
                                           (dict(k=2, score="saliency"), "d_model")])
def test_pruner_rejects_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        snn.TopKTokenPruner(**kwargs)


def test_dynamic_depth_vit_counts_fewer_flops_than_the_baseline():
    torch.manual_seed(0)
    images = torch.randn(2, 3, 16, 16)
    base = snn.ViT(16, 4, dim=16, depth=3, heads=2)
    pruned = snn.DynamicDepthViT(16, 4, dim=16, depth=3, heads=2, keep_ratios=[1.0, 0.5, 0.5])
    same = snn.DynamicDepthViT(16, 4, dim=16, depth=3, heads=2)
    assert pruned(images).shape == base(images).shape == (2, 10)
    assert same.flops(images) == base.flops(images)
    assert pruned.flops(images) < 0.7 * base.flops(images)


def test_dynamic_depth_vit_exits_early_when_confident():
    torch.manual_seed(0)
    images = torch.randn(2, 3, 16, 16)
    model = snn.DynamicDepthViT(16, 4, dim=16, depth=3, heads=2, exit_threshold=0.9).eval()
    full = model.flops(images)
    assert model.last_depth == 3
    with torch.no_grad():
        model.exits[0].bias.copy_(torch.tensor([100.0] + [0.0] * 9))
    assert model(images).argmax(-1).tolist() == [0, 0] and model.last_depth == 1
    assert model.flops(images) < full / 2
    assert len(model.train().forward_exits(images)) == 3


def test_synthetic_vqa_is_deterministic_and_consistent():
    a, b = synthetic_vqa(16, seed=3), synthetic_vqa(16, seed=3)
    assert torch.equal(a.images, b.images) and torch.equal(a.questions, b.questions)
    assert torch.equal(a.answers, b.answers) and not torch.equal(synthetic_vqa(16, seed=4).images, a.images)
    v = Vocab()
    assert ((a.answers >= v.color(0)) & (a.answers < v.size)).all()
    counting = a.questions[:, 0] == v.COUNT
    assert ((a.answers[counting] >= v.digit(0)) & (a.answers[counting] <= v.digit(5))).all()
    with pytest.raises(ValueError, match="grid"):
        synthetic_vqa(2, seed=0, image_size=30, grid=4)


def test_tiny_vlm_pruning_cuts_flops_and_visual_tokens():
    batch = synthetic_vqa(2, seed=0, image_size=16, grid=2, max_objects=3)
    vocab = Vocab(2, 3).size
    full = snn.TinyVLM(vocab, 16, 4, 16, 1, 16, 1)
    pruned = snn.TinyVLM(vocab, 16, 4, 16, 1, 16, 1, keep=4, summary="mean")
    assert full(batch.images, batch.questions).shape == (2, vocab) and full.last_visual_tokens == 16
    pruned(batch.images, batch.questions)
    assert pruned.last_visual_tokens == 5
    assert pruned.flops(batch.images, batch.questions) < full.flops(batch.images, batch.questions)
    with pytest.raises(ValueError, match="decoder"):
        snn.TinyVLM(vocab, decoder="rnn")
