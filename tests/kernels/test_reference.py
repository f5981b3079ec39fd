"""The reference's own properties: the variants agree with each other where DESIGN §3 says they must."""

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given
from hypothesis import strategies as st

from scanforge.kernels.reference import selective_scan_ref, selective_state_update_ref, topk_gather_ref


def _inputs(batch=2, dim=3, L=12, N=4, groups=None, seed=0):
    g = torch.Generator().manual_seed(seed)
    bc = (batch, groups, N, L) if groups else (batch, N, L)
    return dict(
        u=torch.randn(batch, dim, L, generator=g, dtype=torch.float64),
        delta=torch.rand(batch, dim, L, generator=g, dtype=torch.float64) * 0.5 + 0.05,
        A=-torch.rand(dim, N, generator=g, dtype=torch.float64) - 0.2,
        B=torch.randn(*bc, generator=g, dtype=torch.float64),
        C=torch.randn(*bc, generator=g, dtype=torch.float64),
        D=torch.randn(dim, generator=g, dtype=torch.float64),
    )


def _naive_causal(u, delta, A, B, C, D):
    """The recurrence written out once more, independently of the reference's pooling loop."""
    h = torch.zeros(u.shape[0], u.shape[1], A.shape[1], dtype=torch.float64)
    ys = []
    for t in range(u.shape[-1]):
        h = torch.exp(delta[..., t, None] * A) * h + delta[..., t, None] * B[:, None, :, t] * u[..., t, None]
        ys.append((h * C[:, None, :, t]).sum(-1) + D * u[..., t])
    return torch.stack(ys, -1)


def test_causal_matches_the_written_out_recurrence():
    x = _inputs()
    torch.testing.assert_close(selective_scan_ref(**x), _naive_causal(**x))


def test_softplus_bias_and_z():
    x = _inputs()
    bias, z = torch.randn(3, dtype=torch.float64), torch.randn(2, 3, 12, dtype=torch.float64)
    y = selective_scan_ref(**x, z=z, delta_bias=bias, delta_softplus=True)
    expected = _naive_causal(**{**x, "delta": F.softplus(x["delta"] + bias[:, None])}) * F.silu(z)
    torch.testing.assert_close(y, expected)


def test_stride_one_is_causal_and_stride_holds_the_state_between_updates():
    x = _inputs(L=13)
    torch.testing.assert_close(selective_scan_ref(**x, stride=1), selective_scan_ref(**x))
    y = selective_scan_ref(**{**x, "D": None}, stride=4)
    # Between updates (steps 0-2, 4-6, ...) y_t reads the held state: y_t / C_t is constant inside a window.
    assert torch.allclose(y[..., 0:3], torch.zeros_like(y[..., 0:3]))


def test_strided_window_update_is_pooled():
    x = _inputs(batch=1, dim=1, L=4, N=1)
    y, h = selective_scan_ref(**{**x, "D": None}, stride=4, return_last_state=True)
    dt_w = x["delta"].sum()
    expected = dt_w * x["B"].mean() * x["u"].mean()
    torch.testing.assert_close(h.flatten(), expected.reshape(1))


@pytest.mark.parametrize("mode", ["hard", "soft"])
def test_gate_always_firing_is_causal(mode):
    x = _inputs()
    gate = torch.ones(2, 12, dtype=torch.float64)
    torch.testing.assert_close(selective_scan_ref(**x, gate=gate, gate_mode=mode), selective_scan_ref(**x))


@pytest.mark.parametrize("k", [2, 3, 5])
def test_gate_firing_every_kth_step_is_stride_k(k):
    L = 4 * k
    x = _inputs(L=L)
    gate = torch.zeros(2, L, dtype=torch.float64)
    gate[:, k - 1 :: k] = 1.0
    torch.testing.assert_close(selective_scan_ref(**x, gate=gate), selective_scan_ref(**x, stride=k))


def test_soft_gate_of_zeros_and_ones_equals_hard_gate():
    x = _inputs()
    gate = (torch.rand(2, 12, generator=torch.Generator().manual_seed(3)) > 0.5).to(torch.float64)
    torch.testing.assert_close(selective_scan_ref(**x, gate=gate, gate_mode="soft"),
                               selective_scan_ref(**x, gate=gate, gate_mode="hard"))


def test_hard_gate_gradient_is_straight_through_the_soft_update():
    x = _inputs(batch=1, dim=1, L=3, N=2)
    gate = torch.tensor([[0.9, 0.2, 0.8]], dtype=torch.float64, requires_grad=True)
    y, h = selective_scan_ref(**{**x, "D": None}, gate=gate, return_last_state=True)
    h.sum().backward()
    # Step 2 fires; d h_2 / d g_2 = update_2 - h_1 (the soft update's slope), with h_1 = h_0 held at step 1.
    dt = x["delta"][0, 0]
    h0 = dt[0] * x["B"][0, :, 0] * x["u"][0, 0, 0]
    dt_w = dt[1] + dt[2]
    update = torch.exp(dt_w * x["A"][0]) * h0 + dt_w * x["B"][0, :, 1:].mean(-1) * x["u"][0, 0, 1:].mean()
    torch.testing.assert_close(gate.grad[0, 2], (update - h0).sum())


def test_reverse_is_causal_on_flipped_time_and_bidirectional_counts_skip_once():
    x = _inputs()
    flipped = {**x, "u": x["u"].flip(-1), "delta": x["delta"].flip(-1), "B": x["B"].flip(-1), "C": x["C"].flip(-1)}
    rev = selective_scan_ref(**x, direction="reverse")
    torch.testing.assert_close(rev, selective_scan_ref(**flipped).flip(-1))
    bi = selective_scan_ref(**x, direction="bidirectional")
    torch.testing.assert_close(bi, selective_scan_ref(**x) + rev - x["D"][:, None] * x["u"])


@given(split=st.integers(1, 11), stride=st.sampled_from([1, 3]))
def test_last_state_chains_into_initial_state(split, stride):
    x = _inputs()
    if stride > 1:
        split = (split // stride) * stride or stride  # chain at a window boundary
    whole = selective_scan_ref(**x, stride=stride)
    first = {k: (v[..., :split] if k in ("u", "delta", "B", "C") else v) for k, v in x.items()}
    second = {k: (v[..., split:] if k in ("u", "delta", "B", "C") else v) for k, v in x.items()}
    y1, h1 = selective_scan_ref(**first, stride=stride, return_last_state=True)
    y2 = selective_scan_ref(**second, stride=stride, initial_state=h1)
    torch.testing.assert_close(torch.cat([y1, y2], -1), whole)


def test_grouped_bc_equals_repeated_channels():
    x = _inputs(dim=4, groups=2)
    y = selective_scan_ref(**x)
    for d in range(4):
        single = {**x, "u": x["u"][:, d : d + 1], "delta": x["delta"][:, d : d + 1], "A": x["A"][d : d + 1],
                  "D": x["D"][d : d + 1], "B": x["B"][:, d // 2], "C": x["C"][:, d // 2]}
        torch.testing.assert_close(y[:, d : d + 1], selective_scan_ref(**single))


def test_state_update_is_one_step_of_the_scan():
    x = _inputs(L=1)
    h0 = torch.randn(2, 3, 4, dtype=torch.float64)
    y, h = selective_scan_ref(**x, initial_state=h0, return_last_state=True)
    out, new_state, _ = selective_state_update_ref(h0, x["u"][..., 0], x["delta"][..., 0], x["A"], x["B"][..., 0],
                                                   x["C"][..., 0], D=x["D"])
    torch.testing.assert_close(out, y[..., 0])
    torch.testing.assert_close(new_state, h)


def test_topk_gather_ties_order_summary_weight():
    x = torch.tensor([[[3.0, 4.0], [0.0, 1.0], [4.0, 3.0], [1.0, 0.0]]])  # norms 5, 1, 5, 1
    out, idx = topk_gather_ref(x, 3)
    assert idx.tolist() == [[0, 1, 2]]  # ties: lower index wins (1 before 3), kept in original order
    out, idx = topk_gather_ref(x, 3, keep_order=False)
    assert idx.tolist() == [[0, 2, 1]]
    out, _ = topk_gather_ref(x, 2, summary="mean_dropped")
    torch.testing.assert_close(out[0, -1], torch.tensor([0.5, 0.5], dtype=torch.float64))
    out, _ = topk_gather_ref(x, 4, summary="mean_dropped")
    assert out[0, -1].abs().sum() == 0
    out, _ = topk_gather_ref(x, 1, summary="mean", weight="sigmoid")
    torch.testing.assert_close(out[0, 0], x[0, 0].double() * torch.sigmoid(torch.tensor(5.0, dtype=torch.float64)))
    torch.testing.assert_close(out[0, 1], x[0].double().mean(0))


@pytest.mark.parametrize("variant", [dict(stride=4), dict(gate="every3"), dict(gate="random", gate_mode="soft")],
                         ids=["stride4", "gate-every3", "gate-soft"])
def test_pooled_decode_token_by_token_equals_full_scan(variant):
    L = 12  # a multiple of 4 and 3: the strided scan ends on a window boundary
    x = _inputs(L=L)
    gate = None
    if "gate" in variant:
        gate = (torch.arange(L) % 3 == 2).to(torch.float64).expand(2, L) if variant["gate"] == "every3" else \
            torch.rand(2, L, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    kwargs = dict(stride=variant.get("stride", 1), gate=gate, gate_mode=variant.get("gate_mode", "hard"))
    full = selective_scan_ref(**x, **kwargs)
    state = torch.zeros(2, 3, 4, dtype=torch.float64)
    window = (torch.zeros(2, 3), torch.zeros(2, 3), torch.zeros(2, 1, 4), torch.zeros(2))
    outs = []
    for t in range(L):
        out, state, window = selective_state_update_ref(
            state, x["u"][..., t], x["delta"][..., t], x["A"], x["B"][..., t], x["C"][..., t], D=x["D"],
            stride=kwargs["stride"], gate=None if gate is None else gate[:, t], gate_mode=kwargs["gate_mode"],
            window=window)
        outs.append(out)
    torch.testing.assert_close(torch.stack(outs, -1), full)


@pytest.mark.parametrize("variant", [dict(), dict(direction="reverse"), dict(direction="bidirectional"),
                                     dict(stride=3), dict(gate="soft")], ids=lambda v: str(v) or "causal")
def test_reference_gradients_pass_gradcheck(variant):
    """The reference's autograd is the definition of every kernel's gradients: check it in float64
    (the hard gate's straight-through gradient is deliberately not the true derivative)."""
    x = _inputs(batch=1, dim=2, L=7, N=2)
    kwargs = dict(variant)
    if kwargs.pop("gate", None):
        kwargs.update(gate=torch.rand(1, 7, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
                      .requires_grad_(), gate_mode="soft")
    leaves = {k: v.clone().requires_grad_() for k, v in x.items()}

    def fn(*tensors):
        return selective_scan_ref(**dict(zip(leaves, tensors)), delta_softplus=True, **kwargs)

    assert torch.autograd.gradcheck(fn, tuple(leaves.values()))
    if "gate" in kwargs:
        gate = kwargs.pop("gate")
        assert torch.autograd.gradcheck(lambda g: selective_scan_ref(**x, gate=g, **kwargs), (gate,))
