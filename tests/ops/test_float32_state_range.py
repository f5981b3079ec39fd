"""A kernel's state is float32 whatever the input dtype (README "Non-finite values"): a half-precision scan
whose dt·B·u, state and output stay below float32's maximum matches the float64 reference; beyond it the state
overflows to inf and the inf rule takes over, so a bf16 u near bf16's maximum (within 0.4% of float32's)
overflows as soon as dt·|B| > 1."""

import pytest
import torch

import scanforge as sf
from scanforge.kernels.reference import selective_scan_ref

BF16_MAX = torch.finfo(torch.bfloat16).max


def _scan(backend, u_value, B_value, C_signs=(1.0, 1.0, 1.0)):
    u = torch.full((1, 2, 5), u_value, dtype=torch.bfloat16)
    delta = torch.ones(1, 2, 5, dtype=torch.bfloat16)
    A = -torch.ones(2, 3)
    B = torch.full((1, 3, 5), B_value, dtype=torch.bfloat16)
    C = torch.tensor(C_signs).view(1, 3, 1).expand(1, 3, 5).to(torch.bfloat16)
    x = dict(u=u, delta=delta, A=A, B=B, C=C)
    if backend == "float64":
        return selective_scan_ref(**{k: v.double() for k, v in x.items()})
    return sf.selective_scan(**x, backend=backend)


@pytest.mark.parametrize("backend", ["reference", "numba_cpu"])
def test_large_bf16_inputs_inside_float32_range_match_the_float64_reference(backend):
    # steady state h = dt·B·u / (1 - exp(dt·A)) = 1.6e37, y = 3·h = 4.7e37: below float32's 3.4e38
    y, expected = _scan(backend, 1e37, 1.0), _scan("float64", 1e37, 1.0)
    assert torch.isfinite(y).all()
    assert ((y.double() - expected).norm() / expected.norm()) < 1e-2


def test_dt_B_u_beyond_float32_range_overflows_to_inf_then_follows_the_inf_rule():
    # dt·B·u = 2·3.39e38 > 3.40e38: inf in every state element of a kernel; the float64 reference stays finite
    assert torch.isfinite(_scan("float64", BF16_MAX, 2.0)).all()
    assert (_scan("numba_cpu", BF16_MAX, 2.0) == float("inf")).all()
    assert (_scan("numba_cpu", BF16_MAX, 2.0, C_signs=(-1.0, -1.0, -1.0)) == -float("inf")).all()
    assert _scan("numba_cpu", BF16_MAX, 2.0, C_signs=(1.0, -1.0, 1.0)).isnan().all()  # Σ C·h = inf - inf
    # the reference backend computes in float64: only its output overflows, when cast back to bf16
    expected = _scan("float64", BF16_MAX, 2.0, C_signs=(1.0, -1.0, 1.0)).to(torch.bfloat16)
    assert torch.equal(_scan("reference", BF16_MAX, 2.0, C_signs=(1.0, -1.0, 1.0)), expected)
