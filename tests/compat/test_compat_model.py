"""Code scanforge did not write runs unmodified through the import hook: a Mamba language model written the way
mamba-ssm's modules are (tests/compat/mamba_style_model.py, which imports mamba-ssm's and causal-conv1d's op
modules and never scanforge) against a plain PyTorch float64 evaluation of the same parameters."""

import importlib
import sys

import pytest
import torch
import torch.nn.functional as F

import scanforge.compat
from scanforge.testing.accuracy import rel_error

MODEL_MODULE = "mamba_style_model"


@pytest.fixture
def model_module():
    """The model module imported with the hook installed; afterwards the hook and the module are gone."""
    sys.modules.pop(MODEL_MODULE, None)
    scanforge.compat.install()
    try:
        yield importlib.import_module(MODEL_MODULE)
    finally:
        sys.modules.pop(MODEL_MODULE, None)
        scanforge.compat.uninstall()
    assert "mamba_ssm.ops.selective_scan_interface" not in sys.modules and not scanforge.compat.installed()


def _model(module, **kw):
    torch.manual_seed(0)
    return module.MambaLM(vocab_size=32, d_model=16, n_layer=2, d_state=4, **kw)


def _mixer_ref(p, prefix, h):
    """One mixer in float64, written out: projections, per-tap causal convolution, a loop over time."""
    w = lambda name: p[f"{prefix}.{name}"]  # noqa: E731
    x, z = (h @ w("in_proj.weight").t()).chunk(2, dim=-1)  # (b, L, d_inner)
    kernel = w("conv1d.weight")[:, 0]  # (d_inner, width)
    width, L = kernel.shape[1], x.shape[1]
    padded = F.pad(x.transpose(1, 2), (width - 1, 0))
    x = F.silu(sum(kernel[:, k, None] * padded[..., k:k + L] for k in range(width)) + w("conv1d.bias")[:, None])
    rank = w("dt_proj.weight").shape[1]
    N = w("A_log").shape[1]
    dt, B, C = (x.transpose(1, 2) @ w("x_proj.weight").t()).split([rank, N, N], dim=-1)
    dt = F.softplus(dt @ w("dt_proj.weight").t() + w("dt_proj.bias"))  # (b, L, d_inner)
    A = -torch.exp(w("A_log"))
    state = x.new_zeros(x.shape[0], x.shape[1], N)
    ys = []
    for t in range(L):
        state = torch.exp(dt[:, t, :, None] * A) * state + dt[:, t, :, None] * B[:, t, None, :] * x[:, :, t, None]
        ys.append((state * C[:, t, None, :]).sum(-1) + w("D") * x[:, :, t])
    y = torch.stack(ys, dim=1) * F.silu(z)
    return y @ w("out_proj.weight").t()


def _rms(x, weight, eps=1e-5):
    return x * torch.rsqrt(x.square().mean(-1, keepdim=True) + eps) * weight


def _logits_ref(p, input_ids, n_layer=2):
    hidden, residual = p["embedding.weight"][input_ids], None
    for i in range(n_layer):
        residual = hidden if residual is None else hidden + residual
        hidden = _mixer_ref(p, f"layers.{i}.mixer", _rms(residual, p[f"layers.{i}.norm.weight"]))
    return _rms(hidden + residual, p["norm_f.weight"]) @ p["embedding.weight"].t()


def _float64_params(model):
    return {k: v.detach().double().requires_grad_() for k, v in model.named_parameters()}


@pytest.mark.parametrize("fast_path", [True, False], ids=["mamba_inner_fn", "conv+selective_scan_fn"])
def test_forward_and_gradients_match_a_float64_evaluation(model_module, fast_path):
    model = _model(model_module, use_fast_path=fast_path)
    ids = torch.randint(0, 32, (2, 12), generator=torch.Generator().manual_seed(1))
    probe = torch.randn(2, 12, 32, generator=torch.Generator().manual_seed(2))  # a fixed linear functional
    logits = model(ids)
    params = _float64_params(model)
    want = _logits_ref(params, ids)
    assert logits.dtype == torch.float32 and rel_error(logits, want) <= 1e-5
    if not fast_path:
        return  # the gradients of the two paths are the same autograd graph below the scan: once is enough
    (logits * probe).sum().backward()
    (want * probe.double()).sum().backward()
    names = [k for k, _ in model.named_parameters()]
    for name, param in zip(names, model.parameters()):
        assert rel_error(param.grad, params[name].grad) <= 1e-5, name


def test_greedy_generation_matches_a_step_by_step_reference(model_module):
    """Prefill (slow path, caches filled) then one causal_conv1d_update + selective_state_update per token: the
    same greedy tokens as the float64 model re-run on the whole sequence at every step."""
    model = _model(model_module).eval()
    prompt = torch.randint(0, 32, (2, 5), generator=torch.Generator().manual_seed(3))
    tokens = model.generate(prompt, max_new_tokens=6)
    params = {k: v.detach().double() for k, v in model.named_parameters()}
    seq, margins = prompt, []
    for _ in range(6):
        logits = _logits_ref(params, seq)[:, -1]
        top2 = logits.topk(2, dim=-1).values
        margins.append((top2[:, 0] - top2[:, 1]).min().item())
        seq = torch.cat([seq, logits.argmax(-1, keepdim=True)], dim=1)
    assert min(margins) > 1e-4, "a near tie would make the comparison depend on rounding"
    assert torch.equal(tokens, seq[:, prompt.shape[1]:])


def test_the_model_module_imports_nothing_of_scanforge():
    source = (importlib.util.find_spec(MODEL_MODULE).origin and open(importlib.util.find_spec(MODEL_MODULE).origin)
              .read())
    assert "scanforge" not in source.split('"""', 2)[2]
