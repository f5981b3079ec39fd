"""Host-side facts about a call's tensors that every kernel backend needs, computed in one place.

A kernel grid, its scratch buffers and its tuned config are all sized by the same few numbers (sequence
rows, B/C groups, the scan shape); each is defined here once, so that the backends cannot disagree.
"""

from __future__ import annotations

import torch

from ..kernels.ir import GatherSpec
from .base import ScanInputs


def sequence_rows(inputs: ScanInputs) -> int:
    """The sequences a scan runs: the batch rows, or the packed sequences that ``cu_seqlens`` cuts
    from a batch of one."""
    if inputs.cu_seqlens is None:
        return inputs.u.shape[0]
    return inputs.cu_seqlens.numel() - 1


def longest_sequence(inputs: ScanInputs) -> int:
    """The length of the longest sequence: L, or the longest packed sequence."""
    if inputs.cu_seqlens is None:
        return inputs.u.shape[2]
    return int(inputs.cu_seqlens.diff().max().item())


def group_count(bc: torch.Tensor) -> int:
    """The number of B/C groups of a scan's B or C: (batch, G, N, L) has G, shared (batch, N, L) one."""
    return bc.shape[1] if bc.dim() == 4 else 1


def scan_shape(inputs: ScanInputs) -> tuple[int, ...]:
    """The shape a scan's config is chosen for: (batch, dim, L, N)."""
    return (*inputs.u.shape, inputs.A.shape[1])


def no_last_state_cotangent(dh_last: torch.Tensor | None) -> bool:
    """Whether the gradient of the last state is absent (autograd hands an empty tensor for an unused output)."""
    return dh_last is None or dh_last.numel() == 0


def empty_last_state(u: torch.Tensor) -> torch.Tensor:
    """The h_last of a scan whose spec does not return its last state: an empty float32 tensor."""
    return u.new_empty((0,), dtype=torch.float32)


def scores_learn(spec: GatherSpec, scores: torch.Tensor | None) -> bool:
    """Whether a gather's scores receive a gradient: given scores that weight the kept tokens by sigmoid."""
    return scores is not None and spec.weight.value == "sigmoid"
