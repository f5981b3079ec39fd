"""apply_scanforge_to_mamba: transformers' MambaForCausalLM gives the same logits, tokens and gradients
with and without the switch, uses scanforge's ops for prefill and decode, and compiles."""

import pytest
import torch

transformers = pytest.importorskip("transformers")
hf = pytest.importorskip("scanforge.integrations.transformers")

from transformers import MambaConfig, MambaForCausalLM  # noqa: E402
from transformers.models.mamba import modeling_mamba  # noqa: E402

import scanforge.decode  # noqa: E402
import scanforge.ops  # noqa: E402
from scanforge.testing.accuracy import rel_error  # noqa: E402

VOCAB = 48


def _model(seed=0, **overrides) -> MambaForCausalLM:
    torch.manual_seed(seed)
    config = MambaConfig(vocab_size=VOCAB, hidden_size=32, state_size=8, num_hidden_layers=2, expand=2,
                         conv_kernel=4, pad_token_id=0, eos_token_id=1, bos_token_id=1, **overrides)
    return MambaForCausalLM(config).eval()


def _ids(batch=2, L=13, seed=1):
    return torch.randint(2, VOCAB, (batch, L), generator=torch.Generator().manual_seed(seed))


@pytest.fixture
def calls(monkeypatch):
    """Counts the scanforge scan and decode calls made through the switch."""
    counts = {"scan": 0, "decode": 0}
    scan, step = scanforge.ops.selective_scan, scanforge.decode.selective_state_update

    def counting_scan(*args, **kwargs):
        counts["scan"] += 1
        return scan(*args, **kwargs)

    def counting_step(*args, **kwargs):
        counts["decode"] += 1
        return step(*args, **kwargs)

    monkeypatch.setattr(scanforge.ops, "selective_scan", counting_scan)
    monkeypatch.setattr(scanforge.decode, "selective_state_update", counting_step)
    return counts


@pytest.fixture
def class_switch():
    yield
    hf.revert_scanforge_to_mamba()


@torch.no_grad()
def test_logits_match(calls):
    model, ids = _model(), _ids()
    mask = torch.ones_like(ids)
    mask[0, :3] = 0  # left padding on one row
    want = [model(ids).logits, model(ids, attention_mask=mask).logits]
    assert hf.apply_scanforge_to_mamba(model) is model and hf.is_scanforge_applied(model)
    got = [model(ids).logits, model(ids, attention_mask=mask).logits]
    assert calls["scan"] == 2 * 2  # two calls, two layers
    for g, w in zip(got, want):
        assert rel_error(g, w) < 1e-4
    hf.revert_scanforge_to_mamba(model)
    assert not hf.is_scanforge_applied(model) and "forward" not in model.backbone.layers[0].mixer.__dict__


def test_generate_same_tokens(calls):
    model, ids = _model(), _ids(L=9)
    kwargs = dict(max_new_tokens=8, do_sample=False, output_scores=True, return_dict_in_generate=True,
                  attention_mask=torch.ones_like(ids))
    want = model.generate(ids, **kwargs)
    hf.apply_scanforge_to_mamba(model)
    got = model.generate(ids, **kwargs)
    assert torch.equal(got.sequences, want.sequences)
    assert rel_error(torch.stack(got.scores), torch.stack(want.scores)) < 1e-4
    assert calls["scan"] == 2 and calls["decode"] == 2 * 7  # prefill per layer, then 7 decode steps per layer


def test_training_gradients_match():
    ids = _ids(L=16)
    grads = []
    for switch in (False, True):
        model = _model().train()
        if switch:
            hf.apply_scanforge_to_mamba(model)
        model(ids, labels=ids).loss.backward()
        grads.append({name: p.grad for name, p in model.named_parameters() if p.grad is not None})
    assert grads[0].keys() == grads[1].keys() and len(grads[0]) > 10
    for name, want in grads[0].items():
        assert rel_error(grads[1][name], want) < 1e-4, name


def test_class_switch_covers_new_models_and_reverts(class_switch, calls):
    original = modeling_mamba.MambaMixer.forward
    hf.apply_scanforge_to_mamba()
    model = _model()
    assert hf.is_scanforge_applied(model)
    with torch.no_grad():
        model(_ids())
    assert calls["scan"] == 2
    hf.revert_scanforge_to_mamba()
    assert modeling_mamba.MambaMixer.forward is original and not hf.is_scanforge_applied(_model())


def test_survives_torch_compile():
    model, ids = _model(), _ids()
    with torch.no_grad():
        want = model(ids).logits
    hf.apply_scanforge_to_mamba(model)
    graphs = []

    def recording_backend(gm, example_inputs):
        graphs.append(gm)
        return gm.forward

    torch._dynamo.reset()
    compiled = torch.compile(model, backend=recording_backend)
    with torch.no_grad():
        got = compiled(ids).logits
    targets = {str(node.target) for gm in graphs for node in gm.graph.nodes if node.op == "call_function"}
    assert any("scanforge.selective_scan" in t for t in targets), sorted(targets)
    assert rel_error(got, want) < 1e-4

    mixer = model.backbone.layers[0].mixer
    x = torch.randn(2, 7, 32, generator=torch.Generator().manual_seed(3))
    cotangent = torch.randn(2, 7, 32, generator=torch.Generator().manual_seed(4))

    def grads(run):
        leaf = x.clone().requires_grad_()
        mixer.zero_grad()
        (run(leaf) * cotangent).sum().backward()
        return {"x": leaf.grad, **{n: p.grad.clone() for n, p in mixer.named_parameters() if p.grad is not None}}

    eager = grads(mixer)
    compiled = grads(torch.compile(mixer, backend="aot_eager", fullgraph=True))  # fwd and bwd, one graph
    assert eager.keys() == compiled.keys() and len(eager) > 5
    for name, want in eager.items():
        assert rel_error(compiled[name], want) < 1e-5, name


def test_bad_arguments():
    with pytest.raises(ValueError, match="MambaMixer"):
        hf.apply_scanforge_to_mamba(torch.nn.Linear(2, 2))
    with pytest.raises(TypeError, match="backend"):
        hf.apply_scanforge_to_mamba(_model(), backend=3)
    with pytest.raises(ValueError, match="backend: expected None or one of"):
        hf.apply_scanforge_to_mamba(_model(), backend="nonexistent")


@torch.no_grad()
def test_chunked_prefill_continues_the_cached_state():
    """A multi-token call on a cache continues from the cached state (scan with initial_state)."""
    model, ids = _model(), _ids(L=13)
    hf.apply_scanforge_to_mamba(model)
    full = model(ids).logits
    first = model(ids[:, :8], use_cache=True)
    rest = model(ids[:, 8:], cache=first.cache, use_cache=True)
    assert rel_error(rest.logits, full[:, 8:]) < 1e-4
    step = model(ids[:, 8:9], cache=model(ids[:, :8], use_cache=True).cache, use_cache=True)  # one decode step
    assert rel_error(step.logits, full[:, 8:9]) < 1e-4
