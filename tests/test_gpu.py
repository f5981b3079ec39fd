"""What only a machine with a CUDA device can show (marked ``gpu``: skipped without one; ``pytest -m gpu`` runs
them, with every backend test that runs on CUDA tensors there, before the whole suite).

On such a machine the backend tests of the other modules give Triton and Numba-CUDA CUDA tensors and keep Numba
CPU on CPU tensors (helpers.device_of); the tests here add what a CPU machine cannot check at all.
"""

import pytest
import torch

import scanforge as sf
from scanforge import backends
from scanforge.kernels.ir import GatherSpec, Phase, ScanSpec
from scanforge.testing import GatherExample, ScanExample, assert_matches_reference
from scanforge.tuning.trials import Task, TrialRunner

pytestmark = pytest.mark.gpu

MAMBA = ScanSpec(has_D=True, has_z=True, has_delta_bias=True, softplus=True, dtype="bfloat16")


def test_backend_none_runs_the_triton_kernel_on_cuda_tensors():
    x = ScanExample(MAMBA, 2, 64, 300, 16, seed=1, half=("B", "C")).inputs("cuda")
    assert backends.resolve(None, MAMBA, x.u.device) == "triton"
    y = sf.selective_scan(*x.tensors[:8], True)
    assert y.is_cuda and y.dtype == torch.bfloat16
    assert_matches_reference("triton", MAMBA, x)


@pytest.mark.parametrize("backend", ["triton", "numba_cuda"])
def test_compiled_kernels_match_the_reference_at_a_real_size(backend):
    spec = ScanSpec(direction="bidirectional", has_D=True, has_z=True, dtype="float32")
    example = ScanExample(spec, 2, 128, 1000, 16, seed=2, layout="strided")
    assert_matches_reference(backend, spec, example.inputs("cuda"))
    gather = GatherSpec(summary="mean_dropped", weight="sigmoid", scores_given=True, dtype="bfloat16")
    assert_matches_reference(backend, gather, GatherExample(gather, 4, 576, 256, 144, seed=3).inputs("cuda"))


@pytest.mark.parametrize("phase", [Phase.FORWARD, Phase.BACKWARD])
def test_a_triton_trial_is_checked_and_timed_with_cuda_events(phase):
    spec = ScanSpec(has_D=True, phase=phase)
    result = TrialRunner().run(Task("triton", spec, (2, 64, 512, 16)), {})
    assert result.ok and result.seconds > 0, result.reason


def test_only_the_atomically_summed_gradients_may_differ_run_to_run():
    """scanforge.tuning.hazards.ATOMICS: dB and dC are float32 atomic sums (any order); every other gradient is
    written once and is bit-identical between two runs."""
    spec = ScanSpec(has_D=True, has_z=True, dtype="float32")
    x = ScanExample(spec, 2, 256, 1000, 16, seed=4).inputs("cuda")
    leaves = [t.detach().requires_grad_(True) for t in x.tensors[:7]]
    runs = []
    for _ in range(2):
        y = sf.selective_scan(*leaves, backend="triton")
        runs.append(torch.autograd.grad(y, leaves, torch.ones_like(y)))
    names = ("u", "delta", "A", "B", "C", "D", "z")
    for name, first, second in zip(names, *runs):
        if name in ("B", "C"):
            torch.testing.assert_close(first, second, rtol=1e-5, atol=1e-6)
        else:
            assert torch.equal(first, second), name
