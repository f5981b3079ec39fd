"""Every model trains on CPU (the loss falls in a few steps) and compiles with ``fullgraph=True``, forward
and backward, to the eager result. Compile tests use the ``aot_eager`` backend by default (dynamo's full-graph
capture and AOT autograd through the ops' fake implementations; inductor only adds codegen for the
surrounding PyTorch ops and a minute of compile time): ``SCANFORGE_COMPILE_BACKEND=inductor`` for the full path."""

import itertools
import os

import pytest
import torch
import torch.nn.functional as F

import scanforge.nn as snn
from scanforge.data import Vocab, synthetic_vqa


def _lm(*kinds, **kwargs):
    makers = {"mamba": lambda: snn.Mamba(16, d_state=4), "ms": lambda: snn.MSMamba(16, d_state=4, stride=4),
              "ac": lambda: snn.ACMamba(16, d_state=4, penalty=0.01)}
    blocks = itertools.cycle(kinds)
    return snn.MambaLM(13, 16, len(kinds), block=lambda: makers[next(blocks)](), **kwargs)


def _ids(batch=4, L=16, seed=0):
    return torch.randint(0, 13, (batch, L), generator=torch.Generator().manual_seed(seed))


def _lm_loss(model, ids):
    logits = model(ids[:, :-1])
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), ids[:, 1:].reshape(-1)) + model.compute_penalty()


def _vit_loss(model, batch):
    return F.cross_entropy(model(batch.images), batch.answers % 10)


def _vlm_loss(model, batch):
    return F.cross_entropy(model(batch.images, batch.questions), batch.answers)


def _classifier_loss(model, x, y):
    return F.cross_entropy(model(x), y)


VQA = synthetic_vqa(8, seed=0, image_size=16, grid=2, max_objects=3)
SEQ = torch.randn(4, 12, 6, generator=torch.Generator().manual_seed(0))
CASES = {
    "lm-mamba": (lambda: _lm("mamba"), lambda m: _lm_loss(m, _ids())),
    "lm-ms-ac": (lambda: _lm("ms", "ac"), lambda m: _lm_loss(m, _ids())),
    "classifier-bimamba": (lambda: snn.MambaClassifier(6, 3, 16, 1, block=lambda: snn.BiMamba(16, d_state=4,
                                                                                                 shared=False)),
                           lambda m: _classifier_loss(m, SEQ, torch.tensor([0, 1, 2, 0]))),
    "ddvit": (lambda: snn.DynamicDepthViT(16, 4, num_classes=10, dim=16, depth=2, heads=2, keep_ratios=[0.5, 0.5],
                                          score="saliency"), lambda m: _vit_loss(m, VQA)),
    "vlm-mamba": (lambda: snn.TinyVLM(Vocab(2, 3).size, 16, 4, 16, 1, 16, 1, keep=6, score="saliency",
                                      summary="mean_dropped"), lambda m: _vlm_loss(m, VQA)),
    "vlm-transformer": (lambda: snn.TinyVLM(Vocab(2, 3).size, 16, 4, 16, 1, 16, 1, "transformer", keep=0.5),
                        lambda m: _vlm_loss(m, VQA)),
}


@pytest.mark.parametrize("case", list(CASES))
def test_training_lowers_the_loss(case):
    build, loss_fn = CASES[case]
    torch.manual_seed(0)
    model = build()
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(6):
        loss = loss_fn(model)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0] * 0.95, losses


def test_compute_penalty_buys_fewer_slow_updates():
    torch.manual_seed(0)
    block = snn.ACMamba(16, d_state=4, penalty=1.0)
    x = torch.randn(4, 32, 16, generator=torch.Generator().manual_seed(0))
    opt = torch.optim.SGD([block.tau], lr=5.0)
    block(x)
    start = block.update_rate()
    for _ in range(5):
        block(x)
        opt.zero_grad()
        block.compute_penalty().backward()
        opt.step()
    block(x)
    assert block.update_rate() < start


@pytest.mark.parametrize("case", ["lm-mamba", "lm-ms-ac", "classifier-bimamba", "ddvit", "vlm-mamba"])
def test_compile_fullgraph_forward_and_backward(case):
    build, loss_fn = CASES[case]
    torch.manual_seed(0)
    model = build()
    eager_loss = loss_fn(model)
    eager_loss.backward()
    eager_grads = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    torch._dynamo.reset()
    compiled = torch.compile(model, fullgraph=True, backend=os.environ.get("SCANFORGE_COMPILE_BACKEND", "aot_eager"))
    loss = loss_fn(compiled)
    loss.backward()
    assert torch.allclose(loss, eager_loss, rtol=1e-4, atol=1e-5)
    for p, g in zip(model.parameters(), eager_grads):
        assert torch.allclose(p.grad, g, rtol=1e-3, atol=1e-5)
