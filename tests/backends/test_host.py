"""The host-side facts every backend sizes its launches by (scanforge.backends.host)."""

import torch

from scanforge.backends.base import ScanInputs
from scanforge.backends.host import (
    empty_last_state,
    group_count,
    longest_sequence,
    no_last_state_cotangent,
    scan_shape,
    scores_learn,
    sequence_rows,
)
from scanforge.kernels.ir import GatherSpec


def _inputs(batch=2, dim=4, L=10, N=3, groups=None, cu_seqlens=None) -> ScanInputs:
    bc = (batch, N, L) if groups is None else (batch, groups, N, L)
    u = torch.zeros(batch, dim, L)
    return ScanInputs(u, u, torch.zeros(dim, N), torch.zeros(bc), torch.zeros(bc), None, None, None, None, None,
                      0.5, cu_seqlens)


def test_rows_and_lengths_of_a_batch():
    x = _inputs(batch=3, L=7)
    assert sequence_rows(x) == 3
    assert longest_sequence(x) == 7
    assert scan_shape(x) == (3, 4, 7, 3)


def test_rows_and_lengths_of_packed_sequences():
    x = _inputs(batch=1, L=10, cu_seqlens=torch.tensor([0, 2, 8, 10], dtype=torch.int32))
    assert sequence_rows(x) == 3
    assert longest_sequence(x) == 6


def test_group_count():
    assert group_count(_inputs().B) == 1
    assert group_count(_inputs(groups=2).B) == 2


def test_absent_last_state():
    u = torch.zeros(2, 3, 4, dtype=torch.bfloat16)
    h = empty_last_state(u)
    assert h.shape == (0,) and h.dtype == torch.float32
    assert no_last_state_cotangent(None) and no_last_state_cotangent(torch.empty(0))
    assert not no_last_state_cotangent(torch.zeros(1, 2, 3))


def test_scores_learn_only_when_given_and_weighted():
    scores = torch.zeros(2, 5)
    assert scores_learn(GatherSpec(weight="sigmoid"), scores)
    assert not scores_learn(GatherSpec(weight="sigmoid"), None)
    assert not scores_learn(GatherSpec(), scores)
