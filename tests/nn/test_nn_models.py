"""The sequence blocks of scanforge.nn: mamba-ssm's parameter layout, decode == forward, the same forward on
every backend, save/load, clear errors."""

import io
import math

import pytest
import torch
import torch.nn.functional as F
from helpers import DEVICE, backend_param, device_of

import scanforge.nn as snn
from scanforge import backends
from scanforge.kernels.ir import ScanSpec

#: The kernel backends that run on the models' device (CUDA on a GPU machine: Triton, marked ``gpu``).
KERNELS = [backend_param(name) for name in ("numba_cpu", "triton")
           if name in backends.names() and backends.get(name).unavailable_reason() is None
           and device_of(name) == DEVICE and backends.get(name).unsupported_reason(ScanSpec(), DEVICE) is None]

BLOCKS = {
    "mamba": lambda be: snn.Mamba(16, d_state=4, backend=be),
    "bimamba-shared": lambda be: snn.BiMamba(16, d_state=4, shared=True, backend=be),
    "bimamba-v2": lambda be: snn.BiMamba(16, d_state=4, shared=False, backend=be),
    "msmamba": lambda be: snn.MSMamba(16, d_state=4, stride=4, backend=be),
    "msmamba-linear": lambda be: snn.MSMamba(16, d_state=4, stride=4, fuse="linear", backend=be),
    "acmamba": lambda be: snn.ACMamba(16, d_state=4, penalty=0.1, backend=be),
}
CAUSAL = ["mamba", "msmamba", "acmamba"]


def _build(name, backend=None, seed=0):
    torch.manual_seed(seed)
    return BLOCKS[name](backend).to(DEVICE)


def _x(batch=2, L=8, d=16, seed=1):
    return torch.randn(batch, L, d, generator=torch.Generator().manual_seed(seed)).to(DEVICE)


def _rel(a, b):
    return float((a.double() - b.double()).norm() / b.double().norm())


def test_a_mamba_ssm_state_dict_loads_strict():
    d_model, N, d_conv, expand = 32, 16, 4, 2
    d_inner, r = expand * d_model, math.ceil(d_model / 16)
    expected = {"in_proj.weight": (2 * d_inner, d_model), "conv1d.weight": (d_inner, 1, d_conv),
                "conv1d.bias": (d_inner,), "x_proj.weight": (r + 2 * N, d_inner), "dt_proj.weight": (d_inner, r),
                "dt_proj.bias": (d_inner,), "A_log": (d_inner, N), "D": (d_inner,),
                "out_proj.weight": (d_model, d_inner)}
    model = snn.Mamba(d_model, d_state=N, d_conv=d_conv, expand=expand)
    assert {k: tuple(v.shape) for k, v in model.state_dict().items()} == expected
    model.load_state_dict({k: torch.randn(s) for k, s in expected.items()}, strict=True)


def test_mamba_initialisation_follows_mamba_ssm():
    torch.manual_seed(0)
    m = snn.Mamba(32, d_state=8, dt_min=1e-3, dt_max=0.1)
    assert torch.equal(m.A_log, torch.log(torch.arange(1, 9.0)).repeat(64, 1))
    assert torch.equal(m.D, torch.ones(64))
    dt = F.softplus(m.dt_proj.bias)
    assert dt.min() >= 1e-3 * (1 - 1e-4) and dt.max() <= 0.1 * (1 + 1e-4)
    assert m.dt_proj.weight.abs().max() <= m.dt_rank ** -0.5
    assert m.conv1d.groups == m.d_inner and m.in_proj.bias is None


@pytest.mark.parametrize("name", CAUSAL)
def test_decode_token_by_token_equals_forward(name):
    # the reference backend: the model's bookkeeping is under test here (test_decode covers the kernels),
    # and it spares the suite the decode kernels' compile time
    model, x = _build(name, "reference"), _x(L=8)
    with torch.no_grad():
        full = model(x)
        cache = model.allocate_cache(x.shape[0])
        steps = torch.stack([model.step(x[:, t], cache) for t in range(x.shape[1])], dim=1)
    assert _rel(steps, full) < 1e-5


def test_lm_decode_equals_forward_and_msmamba_counts_slow_updates():
    torch.manual_seed(0)
    lm = snn.MambaLM(11, 16, 2, block=lambda: snn.MSMamba(16, d_state=4, stride=4, backend="reference")).to(DEVICE)
    ids = torch.randint(0, 11, (2, 8), generator=torch.Generator().manual_seed(0)).to(DEVICE)
    with torch.no_grad():
        full = lm(ids)
        caches = lm.allocate_cache(2)
        steps = torch.stack([lm.step(ids[:, t], caches) for t in range(8)], dim=1)
    assert _rel(steps, full) < 1e-5
    assert lm.backbone.layers[0].slow_updates(8) == 2 and lm.backbone.layers[0].slow_updates(9) == 3


@pytest.mark.parametrize("backend", KERNELS)
@pytest.mark.parametrize("name", list(BLOCKS))
def test_kernel_backends_equal_the_reference(name, backend):
    x = _x()
    with torch.no_grad():
        ref = _build(name, "reference")(x)
        out = _build(name, backend)(x)
    assert _rel(out, ref) < 1e-4


@pytest.mark.parametrize("name", ["mamba", "bimamba-v2", "acmamba"])
def test_save_load_round_trip(name):
    model, x = _build(name, seed=0), _x()
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    buffer.seek(0)
    other = _build(name, seed=1)
    other.load_state_dict(torch.load(buffer, weights_only=True))
    with torch.no_grad():
        assert torch.equal(other(x), model(x))


def test_acmamba_reports_rate_and_penalty():
    model, x = _build("acmamba"), _x(L=16)
    model(x)
    rate = model.update_rate()
    assert 0 <= rate <= 1 and model.slow_updates() == round(rate * 16)
    gate = model._last_gate
    assert torch.allclose(model.compute_penalty(), 0.1 * gate.mean())


def test_bad_input_is_named():
    m = snn.Mamba(16, d_state=4)
    with pytest.raises(ValueError, match="x: expected"):
        m(torch.randn(2, 8, 15))
    with pytest.raises(ValueError, match="x_t: expected"):
        m.step(torch.randn(2, 8, 16), m.allocate_cache(2))
    with pytest.raises(ValueError, match="d_model"):
        snn.Mamba(0)
    with pytest.raises(ValueError, match="dt_rank"):
        snn.Mamba(16, dt_rank=0)
    with pytest.raises(ValueError, match="stride"):
        snn.MSMamba(16, stride=0)
    with pytest.raises(ValueError, match="fuse"):
        snn.MSMamba(16, fuse="sum")
    with pytest.raises(ValueError, match="penalty"):
        snn.ACMamba(16, penalty=-1)
    with pytest.raises(NotImplementedError, match="decode"):
        snn.BiMamba(16).step(torch.randn(2, 16), None)
