"""The NaN rule of ``topk_gather`` on every backend (a NaN score ranks below every number, -inf
included; NaNs among themselves by index), a finite ``gate_threshold``, and integer-like values
(``np.int64``, 0-d integer tensors) where an int is expected."""

import numpy as np
import pytest
import torch
from helpers import kernel_backends

import scanforge as sf

NAN, INF = float("nan"), float("inf")


def _rows():
    """Two rows of 9 tokens: NaNs, -inf and ties, so that every part of the rule decides something."""
    scores = torch.tensor([[-2.0, -INF, -INF, 0.5, 0.5, NAN, 1.0, NAN, 0.1],
                           [NAN, 0.7, -1.0, NAN, 0.0, 0.7, -INF, -0.9, -0.3]])
    x = torch.randn(2, 9, 4, generator=torch.Generator().manual_seed(0))
    x[0, 2, 1] = NAN  # an L2-norm row: token 2's norm is NaN
    x[1, 0, 0] = x[1, 7, 3] = NAN
    return x, scores


# By hand: score descending, ties to the lower index, -inf above NaN, NaNs by index.
RANKED_SCORES = [[6, 3, 4, 8, 0, 1, 2, 5, 7], [1, 5, 4, 8, 7, 2, 6, 0, 3]]


@pytest.mark.parametrize("backend", kernel_backends())
def test_nan_scores_rank_last_on_every_backend(backend):
    x, scores = _rows()
    for k in (3, 6, 9):
        _, idx = sf.topk_gather(x, k, scores, keep_order=False, backend=backend)
        assert idx.tolist() == [r[:k] for r in RANKED_SCORES], (backend, k)
        _, ordered = sf.topk_gather(x, k, scores, backend=backend)
        assert ordered.tolist() == [sorted(r[:k]) for r in RANKED_SCORES]


@pytest.mark.parametrize("backend", kernel_backends())
def test_a_token_holding_a_nan_ranks_last_by_its_norm(backend):
    x, _ = _rows()
    _, idx = sf.topk_gather(x, 7, backend=backend)
    assert 2 not in idx[0].tolist() and not {0, 7} & set(idx[1].tolist())  # NaN norms are dropped first
    _, idx = sf.topk_gather(x, 8, backend=backend)
    assert 2 not in idx[0].tolist() and 0 in idx[1].tolist() and 7 not in idx[1].tolist()  # NaNs by index


def test_gate_threshold_must_be_finite():
    g = torch.Generator().manual_seed(0)
    args = dict(u=torch.randn(1, 2, 5, generator=g), delta=torch.rand(1, 2, 5, generator=g), A=-torch.rand(2, 3),
                B=torch.randn(1, 3, 5, generator=g), C=torch.randn(1, 3, 5, generator=g), gate=torch.rand(1, 5))
    for bad in (NAN, INF, -INF):
        with pytest.raises(ValueError, match=r"^gate_threshold: expected a finite float"):
            sf.selective_scan(**args, gate_threshold=bad, backend="reference")
    with pytest.raises(TypeError, match=r"^gate_threshold: expected a float"):
        sf.selective_scan(**args, gate_threshold="0.5", backend="reference")
    y = sf.selective_scan(**args, gate_threshold=np.float32(0.5), backend="reference")
    assert torch.equal(y, sf.selective_scan(**args, gate_threshold=0.5, backend="reference"))


def test_decode_gate_threshold_must_be_finite():
    state = torch.zeros(1, 2, 3)
    window = sf.DecodeWindow.zeros(1, 2, 3)
    with pytest.raises(ValueError, match=r"^gate_threshold: expected a finite float"):
        sf.selective_state_update(state, torch.randn(1, 2), torch.rand(1, 2), -torch.rand(2, 3), torch.randn(1, 3),
                                  torch.randn(1, 3), gate=torch.rand(1), gate_threshold=NAN, window=window,
                                  backend="reference")


@pytest.mark.parametrize("k", [np.int64(4), np.int32(4), torch.tensor(4), torch.tensor(4, dtype=torch.int32)])
def test_integer_like_k_is_accepted(k):
    x = torch.randn(2, 10, 3, generator=torch.Generator().manual_seed(1))
    out, idx = sf.topk_gather(x, k, backend="reference")
    ref_out, ref_idx = sf.topk_gather(x, 4, backend="reference")
    assert torch.equal(idx, ref_idx) and torch.equal(out, ref_out)


@pytest.mark.parametrize("k", [4.0, torch.tensor(4.0), torch.tensor([4]), True])
def test_not_integer_like_k_is_refused(k):
    with pytest.raises(ValueError, match=r"^k: expected an int"):
        sf.topk_gather(torch.randn(1, 10, 3), k, backend="reference")


@pytest.mark.parametrize("stride", [np.int64(3), torch.tensor(3)])
def test_integer_like_stride_is_accepted(stride):
    g = torch.Generator().manual_seed(2)
    args = dict(u=torch.randn(1, 2, 7, generator=g), delta=torch.rand(1, 2, 7, generator=g), A=-torch.rand(2, 3),
                B=torch.randn(1, 3, 7, generator=g), C=torch.randn(1, 3, 7, generator=g))
    y = sf.selective_scan(**args, stride=stride, backend="reference")
    assert torch.equal(y, sf.selective_scan(**args, stride=3, backend="reference"))
    state, window = torch.zeros(1, 2, 3), sf.DecodeWindow.zeros(1, 2, 3)
    sf.selective_state_update(state, args["u"][..., 0], args["delta"][..., 0], args["A"], args["B"][..., 0],
                              args["C"][..., 0], stride=stride, window=window, backend="reference")
    assert window.count.item() == 1
