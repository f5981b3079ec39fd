"""apply_scanforge_to_mamba2: transformers' Mamba2ForCausalLM gives the same logits, tokens and gradients with and
without the switch, and runs scanforge's SSD scan for prefill and its decode step for generation."""

import pytest
import torch

transformers = pytest.importorskip("transformers")
hf = pytest.importorskip("scanforge.integrations.transformers")

from transformers import Mamba2Config, Mamba2ForCausalLM  # noqa: E402

import scanforge.decode  # noqa: E402
import scanforge.ssd  # noqa: E402
from scanforge.testing.accuracy import rel_error  # noqa: E402

VOCAB = 48


def _model(seed=0) -> Mamba2ForCausalLM:
    torch.manual_seed(seed)
    config = Mamba2Config(vocab_size=VOCAB, hidden_size=32, state_size=8, num_hidden_layers=2, expand=2, head_dim=8,
                          num_heads=8, n_groups=2, conv_kernel=4, chunk_size=16, pad_token_id=0, eos_token_id=1,
                          bos_token_id=1)
    return Mamba2ForCausalLM(config).eval()


def _ids(batch=2, L=13, seed=1):
    return torch.randint(2, VOCAB, (batch, L), generator=torch.Generator().manual_seed(seed))


@pytest.fixture
def calls(monkeypatch):
    counts = {"scan": 0, "decode": 0}
    scan, step = scanforge.ssd.ssd_scan, scanforge.decode.selective_state_update

    def counting_scan(*args, **kwargs):
        counts["scan"] += 1
        return scan(*args, **kwargs)

    def counting_step(*args, **kwargs):
        counts["decode"] += 1
        return step(*args, **kwargs)

    monkeypatch.setattr(scanforge.ssd, "ssd_scan", counting_scan)
    monkeypatch.setattr(scanforge.decode, "selective_state_update", counting_step)
    return counts


@torch.no_grad()
def test_logits_match(calls):
    model, ids = _model(), _ids()
    mask = torch.ones_like(ids)
    mask[0, :3] = 0  # left padding on one row
    want = [model(ids).logits, model(ids, attention_mask=mask).logits]
    assert hf.apply_scanforge_to_mamba2(model) is model and hf.is_scanforge_applied_to_mamba2(model)
    got = [model(ids).logits, model(ids, attention_mask=mask).logits]
    assert calls["scan"] == 2 * 2
    for g, w in zip(got, want):
        assert rel_error(g, w) < 1e-4
    hf.revert_scanforge_to_mamba2(model)
    assert not hf.is_scanforge_applied_to_mamba2(model)


def test_generate_same_tokens(calls):
    model, ids = _model(), _ids(L=9)
    kwargs = dict(max_new_tokens=6, do_sample=False, output_scores=True, return_dict_in_generate=True,
                  attention_mask=torch.ones_like(ids))
    want = model.generate(ids, **kwargs)
    hf.apply_scanforge_to_mamba2(model)
    got = model.generate(ids, **kwargs)
    assert torch.equal(got.sequences, want.sequences)
    assert rel_error(torch.stack(got.scores), torch.stack(want.scores)) < 1e-4
    assert calls["scan"] == 2 and calls["decode"] == 2 * 5  # prefill per layer, then 5 decode steps per layer


def test_training_gradients_match():
    ids = _ids(L=16)
    grads = []
    for switch in (False, True):
        model = _model().train()
        if switch:
            hf.apply_scanforge_to_mamba2(model)
        model(ids, labels=ids).loss.backward()
        grads.append({name: p.grad for name, p in model.named_parameters() if p.grad is not None})
    assert grads[0].keys() == grads[1].keys() and len(grads[0]) > 10
    for name, want in grads[0].items():
        assert rel_error(grads[1][name], want) < 1e-4, name


def test_bad_arguments():
    with pytest.raises(ValueError, match="model: expected a model with transformers' Mamba2Mixer"):
        hf.apply_scanforge_to_mamba2(torch.nn.Linear(2, 2))
    with pytest.raises(ValueError, match="backend"):
        hf.apply_scanforge_to_mamba2(_model(), backend="nope")
