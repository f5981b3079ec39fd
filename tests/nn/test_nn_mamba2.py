"""nn.Mamba2: mamba-ssm's parameter names and shapes (its state_dict loads strictly), decoding token by token equals
the whole-sequence forward, and gradients reach every parameter."""

import pytest
import torch

from scanforge.nn import Mamba2
from scanforge.testing.accuracy import rel_error


def _mamba_ssm_state_dict(d_model=16, d_state=8, d_conv=4, expand=2, headdim=4, ngroups=2):
    """The keys and shapes of mamba-ssm's ``Mamba2`` (modules/mamba2.py, d_ssm = d_inner, no MLP half)."""
    d_inner = expand * d_model
    nheads = d_inner // headdim
    conv_dim = d_inner + 2 * ngroups * d_state
    shapes = {"dt_bias": (nheads,), "A_log": (nheads,), "D": (nheads,),
              "in_proj.weight": (2 * d_inner + 2 * ngroups * d_state + nheads, d_model),
              "conv1d.weight": (conv_dim, 1, d_conv), "conv1d.bias": (conv_dim,), "norm.weight": (d_inner,),
              "out_proj.weight": (d_model, d_inner)}
    gen = torch.Generator().manual_seed(0)
    return {k: torch.randn(s, generator=gen) * 0.3 for k, s in shapes.items()}


def test_loads_a_mamba_ssm_state_dict_strictly():
    block = Mamba2(16, d_state=8, headdim=4, ngroups=2)
    state = _mamba_ssm_state_dict()
    block.load_state_dict(state, strict=True)
    assert torch.equal(block.in_proj.weight, state["in_proj.weight"])


@pytest.mark.parametrize("rmsnorm", [True, False])
def test_step_by_step_equals_forward(rmsnorm):
    torch.manual_seed(0)
    block = Mamba2(16, d_state=8, headdim=4, ngroups=2, rmsnorm=rmsnorm)
    u = torch.randn(2, 11, 16)
    with torch.no_grad():
        y = block(u)
        cache = block.allocate_cache(2)
        steps = torch.stack([block.step(u[:, t], cache) for t in range(u.shape[1])], dim=1)
    assert rel_error(steps, y) < 1e-5


def test_gradients_reach_every_parameter():
    torch.manual_seed(0)
    block = Mamba2(16, d_state=8, headdim=4, ngroups=2)
    block(torch.randn(2, 9, 16)).square().sum().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in block.parameters())


def test_bad_geometry_names_the_argument():
    with pytest.raises(ValueError, match="headdim: expected a divisor of d_inner"):
        Mamba2(16, headdim=5)
    with pytest.raises(ValueError, match="ngroups: expected a divisor of nheads"):
        Mamba2(16, headdim=4, ngroups=3)
