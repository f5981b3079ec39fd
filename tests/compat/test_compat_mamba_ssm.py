"""scanforge.compat.mamba_ssm is a drop-in for mamba-ssm: same signatures, return conventions, dtype
mixes and results; what it does not cover raises a clear NotImplementedError."""

import inspect
import subprocess
import sys

import pytest
import torch
from helpers import DEVICE

import scanforge as sf
from scanforge.compat import mamba_ssm as mc
from scanforge.testing.accuracy import rel_error

SCAN_PARAMS = ["u", "delta", "A", "B", "C", "D", "z", "delta_bias", "delta_softplus", "return_last_state",
               "cu_seqlens"]
STEP_PARAMS = ["state", "x", "dt", "A", "B", "C", "D", "z", "dt_bias", "dt_softplus", "state_batch_indices"]


def _scan_inputs(batch=2, dim=6, L=19, N=4, dtype=torch.float32, groups=None, seed=0):
    g = torch.Generator().manual_seed(seed)
    bc = (batch, groups, N, L) if groups else (batch, N, L)
    return dict(u=torch.randn(batch, dim, L, generator=g).to(DEVICE, dtype),
                delta=(torch.randn(batch, dim, L, generator=g) * 0.5).to(DEVICE, dtype),
                A=(-torch.rand(dim, N, generator=g) - 0.2).to(DEVICE),
                B=torch.randn(*bc, generator=g).to(DEVICE, dtype), C=torch.randn(*bc, generator=g).to(DEVICE, dtype),
                D=torch.randn(dim, generator=g).to(DEVICE), z=torch.randn(batch, dim, L, generator=g).to(DEVICE, dtype),
                delta_bias=(torch.randn(dim, generator=g) * 0.1).to(DEVICE))


@pytest.mark.parametrize("fn, params", [(mc.selective_scan_fn, SCAN_PARAMS), (mc.selective_scan_ref, SCAN_PARAMS),
                                        (mc.selective_state_update, STEP_PARAMS),
                                        (mc.selective_state_update_ref, STEP_PARAMS)])
def test_signatures_match_mamba_ssm(fn, params):
    signature = inspect.signature(fn)
    assert list(signature.parameters) == params
    defaults = {k: p.default for k, p in signature.parameters.items() if p.default is not inspect.Parameter.empty}
    assert all(defaults[k] is None for k in ("D", "z") if k in defaults)
    assert defaults.get("delta_softplus", defaults.get("dt_softplus")) is False


def _scan_by_hand(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False, return_last_state=False):
    """mamba-ssm's documented selective scan written out in float64, a loop over time (independent of scanforge's
    reference): ``deltaA = exp(delta * A)``, ``deltaB_u = delta * B * u``, ``x = deltaA * x + deltaB_u``,
    ``y = sum_n x * C``, then ``+ D * u`` and ``* silu(z)``; grouped B/C are shared by dim / G channels."""
    u, delta, A, B, C = (t.double() for t in (u, delta, A, B, C))
    batch, dim, L = u.shape
    if delta_bias is not None:
        delta = delta + delta_bias.double()[:, None]
    if delta_softplus:
        delta = torch.nn.functional.softplus(delta)
    if B.dim() == 3:
        B, C = B[:, None], C[:, None]
    B, C = (t.repeat_interleave(dim // t.shape[1], dim=1) for t in (B, C))  # (batch, dim, N, L)
    x = u.new_zeros(batch, dim, A.shape[1])
    ys = []
    for t in range(L):
        x = torch.exp(delta[:, :, t, None] * A) * x + delta[:, :, t, None] * B[..., t] * u[:, :, t, None]
        ys.append((x * C[..., t]).sum(-1))
    y = torch.stack(ys, -1)
    if D is not None:
        y = y + D.double()[:, None] * u
    if z is not None:
        y = y * torch.nn.functional.silu(z.double())
    return (y, x) if return_last_state else y


@pytest.mark.parametrize("fn", [mc.selective_scan_fn, mc.selective_scan_ref], ids=["fn", "ref"])
def test_scan_return_conventions_and_values(fn):
    x = _scan_inputs()
    args = [x[k] for k in ("u", "delta", "A", "B", "C", "D", "z", "delta_bias")]
    out = fn(*args, True)  # mamba-ssm call style: everything positional
    assert isinstance(out, torch.Tensor) and out.shape == x["u"].shape and out.dtype == x["u"].dtype
    out2, last = fn(*args, delta_softplus=True, return_last_state=True)
    assert torch.equal(out, out2) and last.shape == (2, 6, 4) and last.dtype == torch.float32
    want, want_last = _scan_by_hand(*args, True, return_last_state=True)
    assert rel_error(out, want) < 1e-5 and rel_error(last, want_last) < 1e-5


def test_scan_half_inputs_with_float32_parameters():
    """mamba-ssm's mix: u, delta, z in half; A, D, delta_bias in float32; B, C half or float32."""
    x = _scan_inputs(dtype=torch.bfloat16)
    x["C"] = x["C"].float()
    out, last = mc.selective_scan_fn(**x, delta_softplus=True, return_last_state=True)
    assert out.dtype == torch.bfloat16 and last.dtype == torch.float32
    assert rel_error(out, _scan_by_hand(**x, delta_softplus=True)) < 2e-2


def test_scan_gradients_match_an_independent_reference():
    x = {k: v.requires_grad_() for k, v in _scan_inputs(L=9).items()}
    mc.selective_scan_fn(**x, delta_softplus=True).square().sum().backward()
    grads = {k: v.grad for k, v in x.items()}
    for fn in (mc.selective_scan_ref, _scan_by_hand):
        leaves = {k: v.detach().double().requires_grad_() for k, v in x.items()}
        fn(**leaves, delta_softplus=True).square().sum().backward()
        for k in x:
            assert rel_error(grads[k], leaves[k].grad) < 1e-4, (fn.__name__, k)


def test_grouped_bc_and_every_packed_sequence():
    x = _scan_inputs(groups=3)
    assert rel_error(mc.selective_scan_fn(**x), _scan_by_hand(**x)) < 1e-5
    x = _scan_inputs(batch=1, L=20)
    bounds = [0, 7, 8, 20]  # a segment of one step between two longer ones: every boundary resets the state
    packed = mc.selective_scan_fn(**x, delta_softplus=True, cu_seqlens=torch.tensor(bounds, device=DEVICE))
    for a, b in zip(bounds[:-1], bounds[1:]):
        segment = {k: v[..., a:b] if v.dim() == 3 else v for k, v in x.items()}
        assert rel_error(packed[..., a:b], _scan_by_hand(**segment, delta_softplus=True)) < 1e-5, (a, b)


def test_not_covered_raise_clear_errors():
    x = _scan_inputs()
    with pytest.raises(NotImplementedError, match="complex A"):
        mc.selective_scan_fn(**{**x, "A": torch.complex(x["A"], x["A"])})
    with pytest.raises(NotImplementedError, match=r"C: a constant \(time-invariant\) C"):
        mc.selective_scan_fn(**{**x, "C": torch.randn(6, 4, device=DEVICE)})
    with pytest.raises(NotImplementedError, match="cu_seqlens"):
        mc.selective_scan_fn(**x, return_last_state=True, cu_seqlens=torch.tensor([0, 19], device=DEVICE))
    with pytest.raises(TypeError, match="delta"):  # scanforge's own checks name the argument
        mc.selective_scan_fn(**{**x, "delta": x["delta"].half()})


def _step_inputs(batch=3, heads=None, headdim=5, N=4, groups=1, seed=1):
    g = torch.Generator().manual_seed(seed)
    lead = (heads,) if heads else ()
    bc = (batch, groups, N) if heads else (batch, N)
    return dict(state=torch.randn(batch, *lead, headdim, N, generator=g).to(DEVICE),
                x=torch.randn(batch, *lead, headdim, generator=g).to(DEVICE),
                dt=torch.randn(batch, *lead, headdim, generator=g).to(DEVICE),
                A=(-torch.rand(*lead, headdim, N, generator=g) - 0.2).to(DEVICE),
                B=torch.randn(*bc, generator=g).to(DEVICE), C=torch.randn(*bc, generator=g).to(DEVICE),
                D=torch.randn(*lead, headdim, generator=g).to(DEVICE),
                z=torch.randn(batch, *lead, headdim, generator=g).to(DEVICE),
                dt_bias=torch.randn(*lead, headdim, generator=g).to(DEVICE) * 0.1)


def _step_by_hand(s, dt_softplus=True):
    """mamba-ssm's documented step, written out (float64), per head and group."""
    d = {k: v.double() for k, v in s.items()}
    heads = d["state"].dim() == 4
    dt = d["dt"] + d["dt_bias"]
    dt = torch.nn.functional.softplus(dt) if dt_softplus else dt
    B, C = d["B"], d["C"]
    if heads:
        rep = d["state"].shape[1] // B.shape[1]
        B, C = B.repeat_interleave(rep, 1)[:, :, None, :], C.repeat_interleave(rep, 1)[:, :, None, :]
    else:
        B, C = B[:, None, :], C[:, None, :]
    state = torch.exp(dt[..., None] * d["A"]) * d["state"] + dt[..., None] * B * d["x"][..., None]
    out = (state * C).sum(-1) + d["D"] * d["x"]
    return out * torch.nn.functional.silu(d["z"]), state


@pytest.mark.parametrize("layout", ["plain", "heads", "heads-grouped"])
@pytest.mark.parametrize("fn", [mc.selective_state_update, mc.selective_state_update_ref], ids=["fn", "ref"])
def test_state_update_layouts(fn, layout):
    s = _step_inputs(heads=None if layout == "plain" else 4, groups=2 if layout == "heads-grouped" else 1)
    want_out, want_state = _step_by_hand(s)
    state = s["state"].clone()
    out = fn(state, *[s[k] for k in ("x", "dt", "A", "B", "C", "D")], z=s["z"], dt_bias=s["dt_bias"],
             dt_softplus=True)
    assert out.shape == s["x"].shape and out.dtype == s["x"].dtype
    assert rel_error(out, want_out) < 1e-5 and rel_error(state, want_state) < 1e-5


def test_state_update_strided_state_and_batch_indices():
    s = _step_inputs(heads=2, groups=1)
    want_out, want_state = _step_by_hand(s)
    pool = torch.randn(3, 5, 2, 4, device=DEVICE).permute(0, 2, 1, 3)  # heads and headdim not mergeable: a copy
    pool[1:] = s["state"][:2]
    pool[0] = s["state"][2]
    before = pool.clone()
    idx = torch.tensor([1, 2, 0], device=DEVICE)
    out = mc.selective_state_update(pool, *[s[k] for k in ("x", "dt", "A", "B", "C", "D", "z", "dt_bias")], True,
                                    state_batch_indices=idx)
    assert rel_error(out, want_out) < 1e-5
    assert rel_error(pool[idx], want_state) < 1e-5 and not torch.equal(pool, before)


def test_decode_continues_the_scan():
    """Prefill with selective_scan_fn(return_last_state=True), then step: equals one longer scan."""
    x = _scan_inputs(L=12)
    head = {k: v[..., :11] if v.dim() == 3 else v for k, v in x.items()}
    _, state = mc.selective_scan_fn(**head, delta_softplus=True, return_last_state=True)
    step = {k: x[k][..., 11] for k in ("u", "delta", "B", "C", "z")}
    out = mc.selective_state_update(state, step["u"], step["delta"], x["A"], step["B"], step["C"], x["D"], step["z"],
                                    x["delta_bias"], True)
    full = sf.selective_scan(**x, delta_softplus=True)
    assert rel_error(out, full[..., 11]) < 1e-5


def test_importing_scanforge_does_not_import_transformers():
    code = ("import sys, scanforge, scanforge.compat.mamba_ssm, scanforge.integrations; "
            "assert 'transformers' not in sys.modules, 'transformers imported'")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)
